"""The two modes that answer at once: ``per_request`` and ``serial_bundle``.

Both run the same retry loop over the bundle: each round calls the provider for the
requests still pending, keeps the successes and the final failures, and leaves only the
retryable failures with attempts left for the next round (after a backoff). A request
that expires while it waits for a retry gets an ``EXPIRED`` outcome.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from application.lps.ports import ItemResult, ProviderItem, ProviderVerdict, classify_error
from application.lps.runtime import Execution, Runtime, log, log_fields, provider_item
from domain.lps import QueuedRequest, QueueProcessingMode, RequestOutcome


class _RetryingRounds(ABC):
    mode: QueueProcessingMode

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @abstractmethod
    def call_round(self, pending: Sequence[QueuedRequest]) -> dict[str, ItemResult]:
        """One result per pending request id; never raises for a provider error."""

    def execute(self, bundle: tuple[QueuedRequest, ...]) -> Execution:
        runtime = self.runtime
        outcomes: list[RequestOutcome] = []
        pending = list(bundle)
        retry_number = 0
        while pending:
            results = self.call_round(pending)
            retry_later: list[QueuedRequest] = []
            retry_codes: list[str] = []
            for request in pending:
                attempts = request.attempt_count + 1
                outcome = runtime.outcome(request, self.mode, results[request.request_id])
                failure = outcome.failure
                if failure is not None and failure.retryable and attempts < runtime.max_attempts:
                    retry_later.append(request.with_attempts(attempts))
                    retry_codes.append(failure.error_code)
                else:
                    outcomes.append(outcome)
            if not retry_later:
                break
            retry_number += 1
            runtime.wait_before_retry(
                self.mode, retry_number, retry_codes, **log_fields(self.mode, retry_later)
            )
            now = runtime.clock()
            pending = []
            for request in retry_later:
                if request.is_expired(now):
                    log.warning("lps.request_expired", **log_fields(self.mode, [request]))
                    outcomes.append(
                        RequestOutcome.expired(request, self.mode, runtime.provider.name, now)
                    )
                else:
                    pending.append(request)
        return Execution(outcomes)


class PerRequestStrategy(_RetryingRounds):
    """One provider call per request; a failing call touches no other request."""

    mode = QueueProcessingMode.PER_REQUEST

    def call_round(self, pending: Sequence[QueuedRequest]) -> dict[str, ItemResult]:
        results: dict[str, ItemResult] = {}
        for request in pending:
            item = provider_item(request)
            try:
                verdict = self.runtime.call(
                    self.mode, "compare", self.runtime.provider.compare, item
                )
                if not isinstance(verdict, ProviderVerdict):
                    raise TypeError(f"compare returned {type(verdict).__name__}, not a verdict")
            except Exception as error:
                results[request.request_id] = ItemResult(
                    request.request_id, failure=classify_error(error)
                )
            else:
                results[request.request_id] = ItemResult(request.request_id, verdict=verdict)
        return results


class SerialBundleStrategy(_RetryingRounds):
    """One provider call for the whole bundle, results mapped back by custom id.

    If the call fails as a whole, every request shares that failure; if single items fail,
    only they do — their siblings' successes stand.
    """

    mode = QueueProcessingMode.SERIAL_BUNDLE

    def call_round(self, pending: Sequence[QueuedRequest]) -> dict[str, ItemResult]:
        items: list[ProviderItem] = [provider_item(r) for r in pending]
        try:
            raw = self.runtime.call(
                self.mode, "compare_bundle", self.runtime.provider.compare_bundle, items
            )
        except Exception as error:
            failure = classify_error(error)
            return {r.request_id: ItemResult(r.request_id, failure=failure) for r in pending}
        return self.runtime.map_results(self.mode, pending, raw)
