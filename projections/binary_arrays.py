"""A page's columns as PostgreSQL arrays, encoded here in the server's binary format.

The PostgreSQL store sends a page's rows as one array per column (``unnest`` turns them
back into rows). psycopg can dump a Python list as an array, but it does so with a Python
loop over the elements; the columns a page holds are plain ``str``/``int``/``float``
values (or ``None``), whose binary array form is a small header and, per element, its
length and bytes. Building that with ``bytes.join`` and ``struct`` over whole columns costs
a fraction of psycopg's loop or of a JSON document (which the server must also parse), and
binary floats are exact, ±Infinity and NaN included.

A column with any other value (or an integer beyond 64 bits) goes through psycopg's own
list dumper instead, so nothing is refused here that psycopg would accept.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from typing import Any, ClassVar

from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = ["column_array", "register_dumpers"]

_HEAD = struct.Struct("!iiiii")  # dimensions, has nulls, element type, length, lower bound
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)
_INT8 = struct.Struct("!iq")  # length (8), value
_FLOAT8 = struct.Struct("!id")
_TEXT_OID, _INT8_OID, _FLOAT8_OID = 25, 20, 701


class _BinaryArray:
    """One column, already in PostgreSQL's binary array form: its dumper sends it as is."""

    __slots__ = ("data",)
    oid: ClassVar[int]

    def __init__(self, data: bytes) -> None:
        self.data = data


class _TextArray(_BinaryArray):
    __slots__ = ()
    oid = 1009  # text[]


class _Int8Array(_BinaryArray):
    __slots__ = ()
    oid = 1016  # bigint[]


class _Float8Array(_BinaryArray):
    __slots__ = ()
    oid = 1022  # double precision[]


def _dumper(kind: type[_BinaryArray]) -> type[Dumper]:
    class _Dumper(Dumper):
        format = Format.BINARY
        oid = kind.oid

        def dump(self, obj: _BinaryArray) -> bytes:
            return obj.data

    return _Dumper


_DUMPERS = [(kind, _dumper(kind)) for kind in (_TextArray, _Int8Array, _Float8Array)]


def register_dumpers(cursor: Any) -> None:
    """Let ``cursor`` send the arrays ``column_array`` makes (registered per cursor: the
    store does not own the connections' configuration)."""
    for kind, dumper in _DUMPERS:
        cursor.adapters.register_dumper(kind, dumper)


def _text(column: Sequence[Any]) -> bytes:
    size = len(column)
    if None in column:
        encoded = [b"" if v is None else v.encode() for v in column]
        lengths: Any = [-1 if v is None else len(e) for v, e in zip(column, encoded, strict=True)]
        head = _HEAD.pack(1, 1, _TEXT_OID, size, 1)
    else:
        encoded = [v.encode() for v in column]
        lengths = map(len, encoded)
        head = _HEAD.pack(1, 0, _TEXT_OID, size, 1)
    pairs = zip(map(_LENGTH.pack, lengths), encoded, strict=True)
    return head + b"".join(chain.from_iterable(pairs))


def _fixed(item: struct.Struct, oid: int, column: Sequence[Any]) -> bytes:
    size = len(column)
    if None in column:
        pack = item.pack
        body = b"".join([_NULL if v is None else pack(8, v) for v in column])
        return _HEAD.pack(1, 1, oid, size, 1) + body
    return _HEAD.pack(1, 0, oid, size, 1) + b"".join(map(item.pack, repeat(8, size), column))


def _int8(column: Sequence[Any]) -> bytes:
    return _fixed(_INT8, _INT8_OID, column)


def _float8(column: Sequence[Any]) -> bytes:
    return _fixed(_FLOAT8, _FLOAT8_OID, column)


_ENCODERS: dict[str, tuple[type[_BinaryArray], Callable[[Sequence[Any]], bytes]]] = {
    "TEXT": (_TextArray, _text),
    "INTEGER": (_Int8Array, _int8),
    "BIGINT": (_Int8Array, _int8),
    "DOUBLE PRECISION": (_Float8Array, _float8),
}

_NOT_PLAIN = (AttributeError, TypeError, struct.error, OverflowError, UnicodeEncodeError)


def column_array(kind: str, column: Sequence[Any]) -> Any:
    """``column`` (values of SQL type ``kind``) as a parameter to bind with ``%b`` and
    ``CAST(... AS kind[])``: prebuilt binary, or a list for psycopg when a value is not
    plain (a ``str`` in a text column, an ``int`` in an integer one, ...)."""
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        array, encode = encoder
        try:
            return array(encode(column))
        except _NOT_PLAIN:
            pass
    return list(column)
