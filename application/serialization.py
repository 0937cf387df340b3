"""How domain values travel through the event store and come back unchanged.

The ``eventsourcing`` JSON transcoder knows UUIDs, decimals and datetimes. Our events also
carry frozen dataclasses and plain enums; pydantic's ``TypeAdapter`` already knows how to
turn a typed dataclass into JSON-native data and back (tuples, nested values, enums,
datetimes), so each type gets a small transcoding built on it instead of hand-written
converters. JSON has no tuples: the mapper turns top-level list fields of events back into
tuples, so an event read from the store equals the event that was saved.

Snapshots carry an aggregate's ``__dict__``, where lists and tuples live side by side
(``CJBatch.waves`` is a list that grows, ``CJBatch.essays`` a tuple), so "every list back to a
tuple" would be wrong there. A snapshot row therefore also names the state fields that were
tuples, and reading it restores exactly those: a batch restored from a snapshot equals the
batch replayed from its events, field by field and type by type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Generic, TypeVar

from eventsourcing.domain import CanSnapshotAggregate, DomainEventProtocol
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoding
from pydantic import TypeAdapter

T = TypeVar("T")

SNAPSHOT_TUPLE_FIELDS = "state_tuple_fields"  # stored beside a snapshot's "state"


def type_name(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class DataclassTranscoding(Transcoding, Generic[T]):
    """``renamed_fields`` maps field names older events used to today's names."""

    def __init__(
        self,
        cls: type[T],
        name: str | None = None,
        renamed_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.type = cls
        self.name = name or type_name(cls)
        self._adapter: TypeAdapter[T] = TypeAdapter(cls)
        self._renamed = dict(renamed_fields or {})

    def encode(self, obj: Any) -> Any:
        return self._adapter.dump_python(obj, mode="json")

    def decode(self, data: Any) -> T:
        if self._renamed and isinstance(data, dict):
            data = {self._renamed.get(key, key): value for key, value in data.items()}
        return self._adapter.validate_python(data)


class EnumTranscoding(Transcoding):
    def __init__(self, cls: type[Enum], name: str | None = None) -> None:
        self.type = cls
        self.name = name or type_name(cls)
        self._cls = cls

    def encode(self, obj: Any) -> Any:
        return obj.value

    def decode(self, data: Any) -> Enum:
        return self._cls(data)


def register_value_types(
    transcoder: JSONTranscoder,
    dataclasses: Iterable[type[Any]],
    enums: Iterable[type[Enum]],
    *,
    former_names: Mapping[str, type[Any]] | None = None,
    renamed_fields: Mapping[type[Any], Mapping[str, str]] | None = None,
) -> None:
    """Register one transcoding per value type, under its current import path.

    Stored values name their type by import path. A type that moved keeps decoding under
    each of its ``former_names`` (decode only: new events use the current name), and a
    type whose fields were renamed reads old field names through ``renamed_fields``.
    """
    renamed_fields = renamed_fields or {}
    dataclasses, enums = list(dataclasses), list(enums)
    for former, cls in (former_names or {}).items():
        if cls in enums:
            transcoder.register(EnumTranscoding(cls, name=former))
        else:
            transcoder.register(DataclassTranscoding(cls, former, renamed_fields.get(cls)))
    # Registered last, so encoding by type picks today's name.
    for cls in dataclasses:
        transcoder.register(DataclassTranscoding(cls, renamed_fields=renamed_fields.get(cls)))
    for enum_cls in enums:
        transcoder.register(EnumTranscoding(enum_cls))


class TupleRestoringMapper(Mapper[Any]):
    """Reads back exactly what was saved, where JSON alone would turn tuples into lists.

    Events are immutable, so their sequence fields are tuples: every top-level list of an
    event comes back as a tuple. A snapshot's state comes back with the fields that were
    tuples when it was taken as tuples, and its lists as lists. (Nested values are rebuilt
    by their own transcodings, which know their field types.)
    """

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        if isinstance(domain_event, CanSnapshotAggregate):
            tuple_fields = sorted(k for k, v in domain_event.state.items() if isinstance(v, tuple))
            marked = object.__new__(type(domain_event))
            object.__setattr__(
                marked, "__dict__", {**vars(domain_event), SNAPSHOT_TUPLE_FIELDS: tuple_fields}
            )
            domain_event = marked
        return super().to_stored_event(domain_event)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        domain_event = super().to_domain_event(stored_event)
        attributes = domain_event.__dict__
        if isinstance(domain_event, CanSnapshotAggregate):
            state = domain_event.state
            for key in attributes.pop(SNAPSHOT_TUPLE_FIELDS, ()):
                if key in state:
                    state[key] = tuple(state[key])
            return domain_event
        for key, value in attributes.items():
            if isinstance(value, list):
                attributes[key] = tuple(value)
        return domain_event
