"""Field types for everything that enters from outside: messages, CLI files, HTTP bodies.

A value that passes these types can be stored in every store and every read model:

* identifiers and names (essay ids, comparison ids, provider, model, error codes) are
  printable text of sane length — no NUL, no control characters (PostgreSQL text cannot
  hold NUL; a NUL in one event once stopped the read models of every batch);
* free text (justifications, error messages) keeps newlines and tabs; any other control
  character (NUL included) is replaced by U+FFFD rather than refused — losing a verdict
  or a provider's error over one stray byte would be the worse failure — and messages are
  cut to a length limit;
* numbers are finite (``1e999`` parses as infinity, ``NaN`` compares with nothing) and
  inside the range a read-model column holds.

Each edge validates with these once, so nothing downstream has to.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

from infrastructure.limits import MAX_COUNT, MAX_SEED, MIN_SEED

IDENTIFIER_MAX_CHARS = 200
REFERENCE_MAX_CHARS = 500
NAME_MAX_CHARS = 200
MESSAGE_MAX_CHARS = 4000


#: exactly the characters of Unicode categories Cc (C0, DEL, C1) and Cs (surrogates)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _control_characters(value: str, allowed: str = "") -> list[str]:
    if _CONTROL.search(value) is None:
        return []  # the common case, without a Python-level loop over every character
    return sorted(
        {
            f"U+{ord(ch):04X}"
            for ch in value
            if ch not in allowed and unicodedata.category(ch) in ("Cc", "Cs")
        }
    )


def printable_identifier(value: str) -> str:
    """Refuse control characters (NUL included) and surrounding whitespace."""
    bad = _control_characters(value)
    if bad:
        raise ValueError(f"must not contain control characters ({', '.join(bad)})")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


def printable_text(value: str) -> str:
    """Replace NUL and control characters other than newline, return and tab by U+FFFD."""
    if not _control_characters(value, allowed="\n\r\t"):
        return value
    return "".join(
        "\ufffd" if ch not in "\n\r\t" and unicodedata.category(ch) in ("Cc", "Cs") else ch
        for ch in value
    )


def _cut(limit: int) -> AfterValidator:
    return AfterValidator(lambda value: value if len(value) <= limit else value[: limit - 1] + "…")


Identifier = Annotated[
    str,
    Field(min_length=1, max_length=IDENTIFIER_MAX_CHARS),
    AfterValidator(printable_identifier),
]
Name = Annotated[
    str, Field(min_length=1, max_length=NAME_MAX_CHARS), AfterValidator(printable_identifier)
]
#: a name that may be empty (a failure outcome's model when no provider was reached)
OptionalName = Annotated[
    str, Field(max_length=NAME_MAX_CHARS), AfterValidator(printable_identifier)
]
Message = Annotated[str, AfterValidator(printable_text), _cut(MESSAGE_MAX_CHARS)]
#: free text that is truncated elsewhere (justifications): only the characters are mended
Text = Annotated[str, AfterValidator(printable_text)]
FiniteNonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seed = Annotated[int, Field(ge=MIN_SEED, le=MAX_SEED)]


def no_nul(value: str) -> str:
    """Refuse NUL (a text column cannot hold it); other characters are the author's."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: a whole essay or document: any length, every character but NUL
Document = Annotated[str, Field(min_length=1), AfterValidator(no_nul)]
#: free text kept whole that may be empty (a batch's instructions, its rubric)
OptionalDocument = Annotated[str, AfterValidator(no_nul)]
#: a reference the caller chooses for a batch (its external ref): printable, one line
Reference = Annotated[
    str,
    Field(min_length=1, max_length=REFERENCE_MAX_CHARS),
    AfterValidator(printable_identifier),
]
