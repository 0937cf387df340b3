"""Decodes the log's notifications for the read models, faster than the library's mapper.

The application's mapper parses a stored event with an ``object_hook`` that hands every
``{"_type_": ..., "_data_": ...}`` value to its transcoding, and our value types'
transcodings validate their data with pydantic. That is general and slow: at catch-up it
was about 40 % of the runner's Python time (a ``ComparisonsRequested`` holds ~30 pairs,
each validated on its own).

``NotificationDecoder`` gives the same events (equal, same types, tuples where the mapper
gives tuples) for what it knows, and asks the mapper for everything else:

* the state is parsed by plain ``json.loads``, then walked once: a wrapped value is
  rebuilt by its registered name (``datetime_iso``, ``uuid_hex``, ``decimal_str``, our
  enums and value dataclasses), a top-level list becomes a tuple, as the mapper does;
* a value dataclass is built from its field types, the way pydantic validates its JSON
  data (a float field takes an int as a float, a tuple field takes a list, a nested
  dataclass a dict, a missing field its default; ``__post_init__`` runs), but only for
  data of exactly the expected JSON types: anything else (a string for an int, an unknown
  key, a field type it cannot rebuild, such as a datetime inside a dataclass) is left to
  the mapper, which then validates or fails as it always did;
* only for topics it was given, events of their class's current ``class_version`` (older
  ones need upcasting: the mapper does it), and a mapper that neither encrypts nor
  compresses and whose transcodings are the ones it knows how to mirror.

Any surprise while decoding a notification sends that notification to the mapper: the
fast path never gives a different event, only the same one sooner.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import CanSnapshotAggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import get_topic, resolve_topic

__all__ = ["NotificationDecoder"]

#: the mapper whose decoding this module mirrors (named, not imported: projections do not
#: depend on the application layer)
MIRRORED_MAPPER = "application.serialization:TupleRestoringMapper"
DATACLASS_TRANSCODING = "application.serialization:DataclassTranscoding"
ENUM_TRANSCODING = "application.serialization:EnumTranscoding"


class Unexpected(Exception):
    """Something the fast path does not mirror: the mapper decodes this notification."""


Build = Callable[[Any], Any]


def _float(value: Any) -> float:
    """A float field's value, from a float or (as pydantic reads it) an int."""
    kind = type(value)
    if kind is float and -_EXACT_INTEGERS < value < _EXACT_INTEGERS:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    raise Unexpected(f"{kind.__name__} {value!r} for a float")


class _DataclassBuilders:
    """Builders of value dataclasses (and their fields) from JSON data, by field type."""

    def __init__(self) -> None:
        self._built: dict[type, Build | None] = {}

    def for_dataclass(self, cls: type, renamed: dict[str, str] | None = None) -> Build | None:
        """A builder of ``cls`` from its JSON object, or ``None`` if a field's type is one
        this module does not rebuild. ``renamed`` maps former field names to today's (the
        transcoding renames before validating)."""
        if renamed:
            inner = self.for_dataclass(cls)
            if inner is None:
                return None

            def build_renamed(data: Any) -> Any:
                if type(data) is not dict:
                    raise Unexpected("not an object")
                return inner({renamed.get(key, key): value for key, value in data.items()})

            return build_renamed
        if cls in self._built:
            return self._built[cls]
        self._built[cls] = None  # a dataclass that contains itself is not rebuilt
        builder = self._make(cls)
        self._built[cls] = builder
        return builder

    def _make(self, cls: type) -> Build | None:
        if "__slots__" in vars(cls) or not dataclasses.is_dataclass(cls):
            return None
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            return None
        plan: list[tuple[str, str, Any]] = []
        defaults: dict[str, Callable[[], Any]] = {}
        for field in dataclasses.fields(cls):
            if not field.init:
                return None
            step = self._field(hints[field.name])
            if step is None:
                return None
            plan.append((field.name, *step))
            if field.default is not dataclasses.MISSING:
                defaults[field.name] = (lambda value: lambda: value)(field.default)
            elif field.default_factory is not dataclasses.MISSING:
                defaults[field.name] = field.default_factory
        post_init = getattr(cls, "__post_init__", None)
        builders = {name: self._builder(hints[name]) for name, _, _ in plan}
        new = object.__new__

        def build_partial(data: Any) -> Any:
            """Some fields left out (their defaults), or keys that are no fields."""
            if type(data) is not dict:
                raise Unexpected(f"not an object for {cls.__name__}")
            state: dict[str, Any] = {}
            found = 0
            for name, build_field in builders.items():
                if name in data:
                    found += 1
                    state[name] = build_field(data[name])  # type: ignore[misc]
                elif name in defaults:
                    state[name] = defaults[name]()
                else:
                    raise Unexpected(f"{cls.__name__} without {name}")
            if found != len(data):
                raise Unexpected(f"unknown keys for {cls.__name__}")
            obj = new(cls)
            object.__setattr__(obj, "__dict__", state)
            if post_init is not None:
                post_init(obj)
            return obj

        return _generated_builder(cls, plan, post_init, build_partial)

    def _field(self, hint: Any) -> tuple[str, Any] | None:
        """How a field of type ``hint`` is checked in a generated builder."""
        if hint is str or hint is int or hint is bool:
            return ("exact", hint)
        if hint is float:
            return ("float", None)
        arguments = typing.get_args(hint)
        union = typing.get_origin(hint) in (types.UnionType, typing.Union)
        if union and len(arguments) == 2 and arguments[1] is type(None):
            inner = arguments[0]
            if inner is str or inner is int or inner is bool:
                return ("optional exact", inner)
            if inner is float:
                return ("optional float", None)
            built = self._builder(inner)
            return None if built is None else ("optional call", built)
        builder = self._builder(hint)
        return None if builder is None else ("call", builder)

    def _builder(self, hint: Any) -> Build | None:
        """A function from JSON data to a value of type ``hint``, or ``None``."""
        if hint is str or hint is int or hint is bool:

            def exact(value: Any) -> Any:
                if type(value) is not hint:
                    raise Unexpected(f"{type(value).__name__} for {hint.__name__}")
                return value

            return exact
        if hint is float:
            return _float
        origin = typing.get_origin(hint)
        arguments = typing.get_args(hint)
        if origin is types.UnionType or origin is typing.Union:
            others = [a for a in arguments if a is not type(None)]
            if len(others) != 1 or len(arguments) != 2:
                return None
            inner = self._builder(others[0])
            if inner is None:
                return None

            def optional(value: Any) -> Any:
                return None if value is None else inner(value)

            return optional
        if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
            item = self._builder(arguments[0])
            if item is None:
                return None

            def sequence(value: Any) -> Any:
                if type(value) is not list:
                    raise Unexpected("not a list for a tuple")
                return tuple([item(v) for v in value])

            return sequence
        if isinstance(hint, type) and issubclass(hint, Enum):
            return _enum_builder(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.for_dataclass(hint)
        return None


_CHECKS = {
    # str, int, bool: exactly that JSON type, kept as it is
    "exact": "    if type({v}) is not {arg}: raise Unexpected({name!r})\n",
    "optional exact": (
        "    if {v} is not None and type({v}) is not {arg}: raise Unexpected({name!r})\n"
    ),
    # a float, or an int made a float (as pydantic does)
    "float": "    if type({v}) is not float or not -BIG < {v} < BIG: {v} = to_float({v})\n",
    "optional float": (
        "    if {v} is not None and (type({v}) is not float or not -BIG < {v} < BIG):"
        " {v} = to_float({v})\n"
    ),
    "call": "    {v} = {arg}({v})\n",
    "optional call": "    if {v} is not None: {v} = {arg}({v})\n",
}


def _generated_builder(
    cls: type, plan: list[tuple[str, str, Any]], post_init: Any, partial: Build
) -> Build:
    """A builder of ``cls`` written out for its fields (as ``dataclasses`` writes
    ``__init__``): about three times quicker than a loop over them. Data that does not
    hold exactly the fields goes to ``partial``."""
    namespace: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "set_attribute": object.__setattr__,
        "Unexpected": Unexpected,
        "to_float": _float,
        "BIG": _EXACT_INTEGERS,
        "partial": partial,
        "post_init": post_init,
    }
    lines = [
        "def build(data):\n",
        f"    if type(data) is not dict or len(data) != {len(plan)}: return partial(data)\n",
    ]
    for index, (name, how, arg) in enumerate(plan):
        v = f"f{index}"
        lines.append(f"    {v} = data[{name!r}]\n")
        if how in ("exact", "optional exact"):
            namespace[f"t{index}"] = arg
            arg = f"t{index}"
        elif how in ("call", "optional call"):
            namespace[f"b{index}"] = arg
            arg = f"b{index}"
        lines.append(_CHECKS[how].format(v=v, arg=arg, name=name))
    lines.append("    obj = new(cls)\n")
    fields = ", ".join(f"{name!r}: f{index}" for index, (name, _, _) in enumerate(plan))
    lines.append(f"    set_attribute(obj, '__dict__', {{{fields}}})\n")
    if post_init is not None:
        lines.append("    post_init(obj)\n")
    lines.append("    return obj\n")
    exec("".join(lines), namespace)  # code written from field names and types only
    return namespace["build"]  # type: ignore[no-any-return]


def _enum_builder(cls: type[Enum]) -> Build:
    members = dict(cls._value2member_map_)

    def member(value: Any) -> Any:
        if type(value) is not str and type(value) is not int:
            raise Unexpected(f"{type(value).__name__} for {cls.__name__}")
        try:
            return members[value]
        except KeyError:
            raise Unexpected(f"{value!r} is no {cls.__name__}") from None

    return member


def _datetime(data: Any) -> datetime:
    if type(data) is not str:
        raise Unexpected("a datetime that is not a string")
    return datetime.fromisoformat(data)


def _uuid(data: Any) -> UUID:
    if type(data) is not str:
        raise Unexpected("a UUID that is not a string")
    return UUID(data)


def _decimal(data: Any) -> Decimal:
    if type(data) is not str:
        raise Unexpected("a decimal that is not a string")
    return Decimal(data)


_LIBRARY_TRANSCODINGS: dict[type, Build] = {
    DatetimeAsISO: _datetime,
    UUIDAsHex: _uuid,
    DecimalAsStr: _decimal,
}


def wrapped_value_builders(transcoder: Any) -> dict[str, Build]:
    """By registered name, a builder of each wrapped value this module can mirror: the
    library's datetimes, UUIDs and decimals, and our enums and value dataclasses. A name
    left out (a transcoding of another kind) sends its events to the mapper."""
    builders: dict[str, Build] = {}
    dataclass_builders = _DataclassBuilders()
    for name, transcoding in transcoder.names.items():
        kind = type(transcoding)
        topic = get_topic(kind)
        built: Build | None = None
        if kind in _LIBRARY_TRANSCODINGS:
            built = _LIBRARY_TRANSCODINGS[kind]
        elif topic == ENUM_TRANSCODING and issubclass(transcoding.type, Enum):
            built = _enum_builder(transcoding.type)
        elif topic == DATACLASS_TRANSCODING:
            built = dataclass_builders.for_dataclass(
                transcoding.type, dict(getattr(transcoding, "_renamed", None) or {})
            )
        if built is not None:
            builders[name] = built
    return builders


class NotificationDecoder:
    """Notification -> domain event, equal to ``mapper.to_domain_event`` (see the module
    docstring); ``fast`` and ``slow`` count how many took each path."""

    def __init__(self, mapper: Any, topics: Iterable[str]) -> None:
        self.mapper = mapper
        self.slow_decode: Callable[[Any], Any] = mapper.to_domain_event
        self.fast = 0
        self.slow = 0
        self._classes: dict[str, tuple[type, int]] = {}
        self._wrapped: dict[str, Build] = {}
        self._ids: dict[tuple[type, type], Callable[[Any], Any]] = {}
        if not self.mirrors(mapper):
            return
        self._wrapped = wrapped_value_builders(mapper.transcoder)
        for topic in topics:
            try:
                cls = resolve_topic(topic)
            except Exception:
                continue
            if isinstance(cls, type) and not issubclass(cls, CanSnapshotAggregate):
                self._classes[topic] = (cls, getattr(cls, "class_version", 1))

    @staticmethod
    def mirrors(mapper: Any) -> bool:
        """Whether this mapper decodes the way this module mirrors: plain JSON (no cipher,
        no compressor) through the library's JSON transcoder and our tuple-restoring
        mapper."""
        return (
            get_topic(type(mapper)) == MIRRORED_MAPPER
            and getattr(mapper, "cipher", None) is None
            and getattr(mapper, "compressor", None) is None
            and type(getattr(mapper, "transcoder", None)) is JSONTranscoder
        )

    @property
    def topics(self) -> frozenset[str]:
        """The topics decoded without the mapper (when nothing unexpected turns up)."""
        return frozenset(self._classes)

    def __call__(self, notification: Any) -> Any:
        known = self._classes.get(notification.topic)
        if known is not None:
            try:
                event = self._decode(notification, *known)
            except Exception:
                pass
            else:
                self.fast += 1
                return event
        self.slow += 1
        return self.slow_decode(notification)

    def _decode(self, notification: Any, cls: type, class_version: int) -> Any:
        state = parse(notification.state)
        if type(state) is not dict or _is_wrapped(state):
            raise Unexpected("the state is not an event's attributes")
        if state.pop("class_version", 1) != class_version:
            raise Unexpected("an older class version: the mapper upcasts it")
        for key, value in state.items():
            kind = type(value)
            if kind is list:
                state[key] = tuple([self._value(item) for item in value])
            elif kind is dict or kind is float:
                state[key] = self._value(value)
        originator_id = notification.originator_id
        id_type: Any = type(originator_id)
        convert = self._ids.get((cls, id_type))
        if convert is None:
            convert = self._ids[cls, id_type] = find_id_convertor(cls, id_type)
        state["originator_id"] = convert(originator_id)
        state["originator_version"] = notification.originator_version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def _value(self, value: Any) -> Any:
        """What the transcoder's ``object_hook`` makes of a parsed JSON value."""
        kind = type(value)
        if kind is dict:
            if _is_wrapped(value):
                return self._wrapped[value["_type_"]](value["_data_"])
            return {k: self._value(v) for k, v in value.items()}
        if kind is list:
            return [self._value(v) for v in value]
        if kind is float and not -_EXACT_INTEGERS < value < _EXACT_INTEGERS:
            raise Unexpected("a float that may be an integer orjson cannot read")
        return value


def _is_wrapped(value: dict[str, Any]) -> bool:
    return len(value) == 2 and "_type_" in value and "_data_" in value


#: orjson reads integers within these bounds exactly; one beyond them it reads as a float
#: (``json.loads`` as an int), so a float this large is not trusted where no field type
#: says it must be a float
_EXACT_INTEGERS = 2.0**63


def parse(state: bytes) -> Any:
    """``json.loads`` of the stored state, as the transcoder parses it (without its
    ``object_hook``). orjson reads the same documents two to three times as fast; what
    it reads differently it refuses (NaN and Infinity, numbers beyond a float's range,
    lone surrogates, a byte order mark), and those go to ``json.loads``; the one thing it
    reads differently without refusing, an integer beyond 64 bits, comes out as a float
    too large to be trusted (see ``_EXACT_INTEGERS``)."""
    try:
        return orjson.loads(state)
    except orjson.JSONDecodeError:
        return json.loads(state.decode("utf8"))
