"""Student data outside the immutable log: what the content store holds and how it is used.

Essays are minors' writing, and the ids a school gives them are often student numbers or
names. None of that may live in events, which are never deleted. The content store keeps
it in ordinary tables beside the events (same database), where it can be erased:

* per batch: a random secret (keys the content hashes in the log), the assignment
  instructions and the rubric;
* per essay: the opaque ref the log uses, the school's external id and the text;
* per comparison: the judge's justification and raw answer.

The application never writes these tables on its own: it hands *content writes* to the
event store together with the events they belong to (``save(..., content_writes=...)``),
and the store's recorder applies both in one transaction. A registration is therefore
stored with its texts or not at all, an answer with its ``ComparisonCompleted`` or not at
all, and an erasure with its ``EssayErased`` or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

ERASED = "[erased]"
"""What every output shows in place of an erased essay's external id."""

KEYED_HASH_SCHEME = "hmac-sha256"


class ContentStoreUnavailable(RuntimeError):
    """The event store was opened without its content tables (e.g. a bare test env)."""


class UnknownEssay(LookupError):
    code = "unknown_essay"


@dataclass(frozen=True)
class EssaySubmission:
    """One essay as a school hands it in: its own id, the text, and anchor facts."""

    external_id: str
    text: str
    is_anchor: bool = False
    known_grade: str | None = None


@dataclass(frozen=True)
class EssayContent:
    ref: str
    external_id: str
    text: str


# -- content writes: applied by the recorder in the transaction of the events ------------


@dataclass(frozen=True)
class RegisterContent:
    batch_id: str
    secret: str
    instructions: str
    rubric: str
    essays: tuple[EssayContent, ...]


@dataclass(frozen=True)
class StoreAnswer:
    """A judge's prose for one comparison; written once, keyed by comparison id."""

    batch_id: str
    comparison_id: str
    essay_a: str
    essay_b: str
    justification: str
    raw_answer: str | None


@dataclass(frozen=True)
class EraseEssay:
    """Delete an essay's text and external id, and every answer that involves it."""

    batch_id: str
    ref: str


ContentWrite = RegisterContent | StoreAnswer | EraseEssay
CONTENT_WRITES_KWARG = "content_writes"


@dataclass(frozen=True)
class BatchTexts:
    instructions: str
    rubric: str


@dataclass(frozen=True)
class StoredAnswer:
    comparison_id: str
    justification: str
    raw_answer: str | None


class ContentStore(Protocol):
    """Reads the content store (writes go through ``save(..., content_writes=...)``)."""

    def batch_texts(self, batch_id: str) -> BatchTexts | None:
        """Instructions and rubric; ``None`` for a batch registered without content."""

    def essay_texts(self, batch_id: str, refs: Sequence[str]) -> dict[str, str]:
        """Texts of the refs that are still stored (erased ones are missing)."""

    def external_ids(self, batch_id: str) -> dict[str, str] | None:
        """ref -> external id of every stored essay; ``None`` if the batch has no content."""

    def answers(self, batch_id: str) -> dict[str, StoredAnswer]:
        """comparison id -> stored justification and raw answer."""

    def secret(self, batch_id: str) -> str | None:
        """The key of the batch's content hashes (``None`` without content)."""


def new_secret() -> str:
    return secrets.token_hex(32)


def new_ref(rng: random.Random | None = None) -> str:
    """An opaque essay ref: random, so nothing about the essay can be read from it
    (``rng`` only for synthetic batches that must be reproducible)."""
    return f"e-{secrets.token_hex(8) if rng is None else rng.randbytes(8).hex()}"


def keyed_hash(secret: str, text: str) -> str:
    """The content hash the log carries: HMAC-SHA256 keyed with the batch's secret, so a
    guessed text cannot be matched against the log without the (erasable) secret."""
    digest = hmac.new(bytes.fromhex(secret), text.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{KEYED_HASH_SCHEME}:{digest}"


class ExternalIdResolver:
    """Turns the refs of one batch into the school's ids for display.

    A batch registered before the content store existed carries the school's ids in its
    events, and they are shown as they are; in a batch with content, a ref whose essay was
    erased shows as ``[erased]``.
    """

    def __init__(self, external_ids: Mapping[str, str] | None) -> None:
        self._ids = external_ids

    @classmethod
    def for_batch(cls, content: ContentStore | None, batch_id: str) -> ExternalIdResolver:
        return cls(None if content is None else content.external_ids(batch_id))

    def __call__(self, ref: str) -> str:
        if self._ids is None:
            return ref
        return self._ids.get(ref, ERASED)

    def ref_for(self, external_id: str) -> str | None:
        if self._ids is None:
            return None
        for ref, known in self._ids.items():
            if known == external_id:
                return ref
        return None
