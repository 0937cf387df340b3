"""``cjledger serve`` that dies by SIGKILL in the middle of dispatching a wave.

Used by the process tests: the dispatcher's transport publishes the first N requests of
the first wave it sends (each confirmed by RabbitMQ), then the process kills itself —
after the publish, before the dispatcher could record its position. Usage:
``python -m tests.e2e.crashing_serve N`` with the usual ``CJLEDGER_*`` environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from application.ports import ComparisonRequest, RequestTransport
from infrastructure.logging import configure_logging
from infrastructure.messaging.processes import build_serve
from infrastructure.messaging.service import run_service
from infrastructure.settings import Settings


class DieMidWave:
    def __init__(self, inner: RequestTransport, publish_before_dying: int) -> None:
        self.inner = inner
        self.publish_before_dying = publish_before_dying

    def send(self, requests: Sequence[ComparisonRequest]) -> None:
        self.inner.send(list(requests)[: self.publish_before_dying])
        print(f"crashing after {self.publish_before_dying} of {len(requests)}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


async def main(publish_before_dying: int) -> None:
    settings = Settings()
    configure_logging(json_logs=True, level=settings.log_level)
    process = build_serve(settings)
    dispatcher = process.dispatcher_loop.dispatcher
    dispatcher.transport = DieMidWave(dispatcher.transport, publish_before_dying)
    await run_service("serve", process.components)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
