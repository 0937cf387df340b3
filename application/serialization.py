"""How domain values travel through the event store and come back unchanged.

The ``eventsourcing`` JSON transcoder knows UUIDs, decimals and datetimes. Our events also
carry frozen dataclasses and plain enums; pydantic's ``TypeAdapter`` already knows how to
turn a typed dataclass into JSON-native data and back (tuples, nested values, enums,
datetimes), so each type gets a small transcoding built on it instead of hand-written
converters. JSON has no tuples: the mapper turns top-level list fields of events back into
tuples, so an event read from the store equals the event that was saved.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, Generic, TypeVar

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoding
from pydantic import TypeAdapter

T = TypeVar("T")


class DataclassTranscoding(Transcoding, Generic[T]):
    def __init__(self, cls: type[T]) -> None:
        self.type = cls
        self.name = f"{cls.__module__}:{cls.__qualname__}"
        self._adapter: TypeAdapter[T] = TypeAdapter(cls)

    def encode(self, obj: Any) -> Any:
        return self._adapter.dump_python(obj, mode="json")

    def decode(self, data: Any) -> T:
        return self._adapter.validate_python(data)


class EnumTranscoding(Transcoding):
    def __init__(self, cls: type[Enum]) -> None:
        self.type = cls
        self.name = f"{cls.__module__}:{cls.__qualname__}"
        self._cls = cls

    def encode(self, obj: Any) -> Any:
        return obj.value

    def decode(self, data: Any) -> Enum:
        return self._cls(data)


def register_value_types(
    transcoder: JSONTranscoder, dataclasses: Iterable[type[Any]], enums: Iterable[type[Enum]]
) -> None:
    for cls in dataclasses:
        transcoder.register(DataclassTranscoding(cls))
    for enum_cls in enums:
        transcoder.register(EnumTranscoding(enum_cls))


class TupleRestoringMapper(Mapper[Any]):
    """Events are immutable: their sequence fields come back as tuples, as they were saved."""

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        domain_event = super().to_domain_event(stored_event)
        state = domain_event.__dict__
        for key, value in state.items():
            if isinstance(value, list):
                state[key] = tuple(value)
        return domain_event
