"""One line that says what is wrong with a message or a line of input."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, limit: int = 5) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "(body)"
        parts.append(f"{where}: {item['msg']}")
    more = len(error.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
