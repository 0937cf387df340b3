"""The faults ``make chaos`` injects: duplicated deliveries, a broker that goes silent, and
a throwaway PostgreSQL server the suite can restart.

Each is a small honest object with ``start``/``stop`` (or a context manager) that acts on
the real servers; none of them knows anything about cjledger's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika

from infrastructure.messaging.topology import OUTCOME_ROUTING_KEY, REQUEST_ROUTING_KEY, Topology

COPY_HEADER = "x-chaos-copy"


class Duplicator:
    """Every request and outcome is delivered twice.

    A tap queue bound to the exchange with both routing keys receives a copy of every
    message; each copy is published again with the same key, so the worker and the
    consumer see each message twice (not always back to back). Copies carry a header so
    the tap does not copy its own copies.
    """

    def __init__(self, broker_url: str, prefix: str) -> None:
        self.broker_url = broker_url
        self.topology = Topology(prefix)
        self.tap = f"{prefix}.chaos-tap"
        self.copies = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Duplicator:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the duplicating tap did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        connection = await aio_pika.connect(self.broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(self.topology.exchange_name)
            queue = await channel.declare_queue(self.tap, auto_delete=True)
            for key in (REQUEST_ROUTING_KEY, OUTCOME_ROUTING_KEY):
                await queue.bind(exchange, routing_key=key)
            self._ready.set()
            while not self._stop.is_set():
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                    continue
                if not message.headers.get(COPY_HEADER):
                    await exchange.publish(
                        aio_pika.Message(
                            message.body,
                            headers={**message.headers, COPY_HEADER: True},
                            message_id=message.message_id,
                            correlation_id=message.correlation_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=message.routing_key or "",
                    )
                    self.copies += 1
                await message.ack()
            await queue.delete(if_unused=False, if_empty=False)


class SilentProxy:
    """A TCP proxy to RabbitMQ that can play dead: while ``silent``, it accepts
    connections and never answers; once ``forwarding``, new connections reach the broker."""

    def __init__(self, target_port: int = 5672) -> None:
        self.target_port = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.silent = True
        self.held: list[socket.socket] = []
        self.silent_connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def forward(self) -> None:
        self.silent = False
        for connection in self.held:
            with contextlib.suppress(OSError):
                connection.close()
        self.held.clear()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                if self.silent:
                    self.held.append(client)
                    self.silent_connections += 1
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server of its own (initdb + pg_ctl in a temporary directory, on a free
    port), run as the ``postgres`` user when the suite runs as root."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="cjledger-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            record = pwd.getpwnam(self.user)
            os.chown(self.dir, record.pw_uid, record.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> ThrowawayPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._ctl("start")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-o", options, "-w", "-t", "60",
            "-l", str(self.dir / "server.log"), *extra,
        )  # fmt: skip

    def restart(self) -> None:
        """Stop at once (no checkpoint: crash recovery on start), then start again."""
        self._ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres().start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port)):
                break
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def _postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not candidates:
        found = shutil.which("initdb")
        if found is None:
            raise RuntimeError("no PostgreSQL binaries (initdb) found")
        return Path(found).parent
    return candidates[0].parent
