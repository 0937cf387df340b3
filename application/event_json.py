"""Events and batch state as plain JSON values, for auditors (CLI ``--json``, HTTP).

Everything an event carries is kept: nested value objects become objects, enums their
values, times ISO 8601 strings, ids strings. Nothing is summarised away.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from domain.batch import CJBatch


def to_json_value(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (dataclasses, enums, times, ids, tuples)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    return value


def event_document(event: Any) -> dict[str, Any]:
    """One stored event with its full payload."""
    payload = {
        key: to_json_value(value)
        for key, value in vars(event).items()
        if key not in ("originator_id", "originator_version", "timestamp")
    }
    return {
        "version": event.originator_version,
        "timestamp": event.timestamp.isoformat(),
        "type": type(event).__name__,
        "class_version": getattr(type(event), "class_version", 1),
        "payload": payload,
    }


def state_summary(batch: CJBatch) -> dict[str, Any]:
    """What a batch's state says at its version: phase, counts, the last decision."""
    return {
        "batch_id": str(batch.id),
        "version": batch.version,
        "external_ref": batch.external_ref,
        "phase": batch.phase.value,
        "mode": batch.mode.value if batch.mode else None,
        "mode_source": batch.mode_source,
        "essays": len(batch.essays),
        "waves": len(batch.waves),
        "pairs_submitted": batch.pairs_submitted,
        "open_comparisons": batch.open_comparisons,
        "successes": batch.successes,
        "failures": batch.failures,
        "resampling_passes_used": batch.resampling_passes_used,
        "decisions": batch.decision_count,
        "last_decision": batch.last_decision.value if batch.last_decision else None,
        "final_status": batch.final_status.value if batch.final_status else None,
        "failure_reason": batch.failure_reason,
    }
