"""Canonical encoding of every consensus object, and its strict, bounded decoder.

A record is a frozen dataclass whose fields each name a *codec*. It packs as a msgpack array in
field order — never a map — holding only integers, bytes and nested arrays: no floats, no
strings, no extension types. Text fields travel as UTF-8 bytes. Identity is
``hash_of(obj) = sha256(encode(obj))``.

Decoding first asks msgpack for bounded sizes (no maps, no str, no ext, no float survives the
codec checks), then each codec checks type and range, so every decoded object is exactly the
object whose encoding the bytes are: ``encode(decode(b)) == b`` for every accepted ``b``.

Memory is bounded before any codec runs: every codec knows the most msgpack objects its wire
form can hold (``objects``), a record's bound is the sum over its fields, and the decoder stops
as soon as an input holds more objects than its type allows or nests deeper than ``MAX_DEPTH``.
A 4 MB input of nested empty arrays is refused after a few hundred objects, not 4 million.
Public keys at points of small order are refused wherever one is decoded (``SmallOrderKey``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import field
from typing import Any, Self

import msgpack

from fedcoin.data.curve import is_small_order
from fedcoin.errors import DecodeError, SmallOrderKey, TooManyObjects

#: Upper bound of any single decoded byte string / array / whole message (DoS bounds).
MAX_BYTES = 64 * 1024 * 1024
MAX_ARRAY = 1_000_000
#: Default bound on the objects of one decoded input (a type's own bound is usually far lower).
MAX_OBJECTS = 1 << 24
#: Deepest nesting of arrays any FedCoin object has, with room to spare (a block is 7 deep).
MAX_DEPTH = 24
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class Codec:
    """Converts one field between its Python value and its wire value."""

    #: The most msgpack objects (this one included) the wire value can hold.
    objects: int = 1

    def pack(self, value: Any) -> Any:
        raise NotImplementedError

    def unpack(self, raw: Any) -> Any:
        raise NotImplementedError


class _Int(Codec):
    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def pack(self, value: Any) -> Any:
        # IntEnum members pack as their plain value; bool is refused.
        if not isinstance(value, int) or isinstance(value, bool) or not self.lo <= value <= self.hi:
            raise ValueError(f"integer out of range [{self.lo}, {self.hi}]: {value!r}")
        return int(value)

    def unpack(self, raw: Any) -> Any:
        if type(raw) is not int or not self.lo <= raw <= self.hi:
            raise DecodeError(f"expected integer in [{self.lo}, {self.hi}], got {_kind(raw)}")
        return raw


class _Bytes(Codec):
    def __init__(self, *, exact: int | None = None, max_len: int = MAX_BYTES) -> None:
        self.exact, self.max_len = exact, max_len

    def _ok(self, value: Any) -> bool:
        if type(value) is not bytes:
            return False
        if self.exact is not None:
            return len(value) == self.exact
        return len(value) <= self.max_len

    def pack(self, value: Any) -> Any:
        if not self._ok(value):
            raise ValueError(f"bad bytes field: {_kind(value)}")
        return value

    def unpack(self, raw: Any) -> Any:
        if not self._ok(raw):
            want = f"{self.exact} bytes" if self.exact is not None else f"≤{self.max_len} bytes"
            raise DecodeError(f"expected {want}, got {_kind(raw)}")
        return raw


class _Text(Codec):
    def __init__(self, max_len: int) -> None:
        self.inner = _Bytes(max_len=max_len)

    def pack(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"expected str, got {_kind(value)}")
        return self.inner.pack(value.encode("utf-8"))

    def unpack(self, raw: Any) -> Any:
        data = self.inner.unpack(raw)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("text field is not UTF-8") from exc


class _PubKey(_Bytes):
    """An Ed25519 public key: 32 bytes, never a point of small order.

    ``allow_zero`` admits the 32 zero bytes as "nobody" (the genesis block's proposer); such
    a key still verifies nothing (``keys.verify`` refuses every small-order key)."""

    def __init__(self, *, allow_zero: bool = False) -> None:
        super().__init__(exact=32)
        self.allow_zero = allow_zero

    def _small(self, value: bytes) -> bool:
        return is_small_order(value) and not (self.allow_zero and value == bytes(32))

    def pack(self, value: Any) -> Any:
        packed = super().pack(value)
        if self._small(packed):
            raise ValueError("public key is a point of small order")
        return packed

    def unpack(self, raw: Any) -> Any:
        key = super().unpack(raw)
        if self._small(key):
            raise SmallOrderKey(f"public key {key.hex()} is a point of small order")
        return key


class _List(Codec):
    def __init__(self, item: Codec, max_len: int) -> None:
        self.item, self.max_len = item, max_len
        self.objects = 1 + max_len * item.objects

    def pack(self, value: Any) -> Any:
        if not isinstance(value, tuple | list) or len(value) > self.max_len:
            raise ValueError(f"expected a sequence of at most {self.max_len} items")
        return [self.item.pack(v) for v in value]

    def unpack(self, raw: Any) -> Any:
        if type(raw) is not list or len(raw) > self.max_len:
            raise DecodeError(
                f"expected an array of at most {self.max_len} items, got {_kind(raw)}"
            )
        return tuple(self.item.unpack(v) for v in raw)


class _Tuple(Codec):
    def __init__(self, items: Sequence[Codec]) -> None:
        self.items = tuple(items)
        self.objects = 1 + sum(c.objects for c in self.items)

    def pack(self, value: Any) -> Any:
        if not isinstance(value, tuple | list) or len(value) != len(self.items):
            raise ValueError(f"expected a tuple of {len(self.items)} items")
        return [c.pack(v) for c, v in zip(self.items, value, strict=True)]

    def unpack(self, raw: Any) -> Any:
        if type(raw) is not list or len(raw) != len(self.items):
            raise DecodeError(f"expected an array of {len(self.items)} items, got {_kind(raw)}")
        return tuple(c.unpack(v) for c, v in zip(self.items, raw, strict=True))


class _Optional(Codec):
    """Absent packs as ``[]``, present as ``[value]`` (msgpack nil is not allowed)."""

    def __init__(self, item: Codec) -> None:
        self.item = item
        self.objects = 1 + item.objects

    def pack(self, value: Any) -> Any:
        return [] if value is None else [self.item.pack(value)]

    def unpack(self, raw: Any) -> Any:
        if type(raw) is not list or len(raw) > 1:
            raise DecodeError(f"expected an optional (array of 0 or 1), got {_kind(raw)}")
        return self.item.unpack(raw[0]) if raw else None


class _Nested(Codec):
    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls

    @property
    def objects(self) -> int:  # type: ignore[override]
        bound = getattr(self.cls, "max_objects", None)  # any type with from_wire may nest
        return MAX_OBJECTS if bound is None else int(bound())

    def pack(self, value: Any) -> Any:
        if not isinstance(value, self.cls):
            raise ValueError(f"expected {self.cls.__name__}, got {_kind(value)}")
        return value.to_wire()

    def unpack(self, raw: Any) -> Any:
        return self.cls.from_wire(raw)


def _kind(value: Any) -> str:
    if isinstance(value, bytes | list | tuple | str):
        return f"{type(value).__name__}[{len(value)}]"
    return type(value).__name__


# Codec constructors, the vocabulary record definitions use.
U8 = _Int(0, 255)
U16 = _Int(0, 2**16 - 1)
U32 = _Int(0, 2**32 - 1)
U64 = _Int(0, U64_MAX)
I64 = _Int(I64_MIN, I64_MAX)
HASH = _Bytes(exact=32)
PUBKEY = _PubKey()
#: A public key, or 32 zero bytes for "nobody" (only the genesis header's proposer).
PUBKEY_OR_ZERO = _PubKey(allow_zero=True)
SIGNATURE = _Bytes(exact=64)
ADDRESS = _Bytes(exact=20)


def blob(max_len: int = MAX_BYTES) -> Codec:
    return _Bytes(max_len=max_len)


def text(max_len: int) -> Codec:
    return _Text(max_len)


def list_of(item: Codec, max_len: int) -> Codec:
    return _List(item, max_len)


def tuple_of(*items: Codec) -> Codec:
    return _Tuple(items)


def optional(item: Codec) -> Codec:
    return _Optional(item)


def nested(cls: type[Record]) -> Codec:
    return _Nested(cls)


def wire(codec: Codec) -> Any:
    """Declare a record field and the codec it travels with."""
    return field(metadata={"codec": codec})


@functools.cache
def _codecs_of(cls: Any) -> tuple[Codec, ...]:
    return tuple(f.metadata["codec"] for f in dataclasses.fields(cls))


def _codecs(cls: type) -> tuple[Codec, ...]:
    return _codecs_of(cls)


class Record:
    """Mixin for frozen dataclasses whose fields are declared with :func:`wire`."""

    __slots__ = ()

    def to_wire(self) -> list[Any]:
        codecs = _codecs(type(self))
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        try:
            return [c.pack(v) for c, v in zip(codecs, values, strict=True)]
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from exc

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        codecs = _codecs(cls)
        if type(raw) is not list or len(raw) != len(codecs):
            raise DecodeError(f"{cls.__name__}: expected an array of {len(codecs)} fields")
        try:
            return cls(*(c.unpack(v) for c, v in zip(codecs, raw, strict=True)))
        except DecodeError as exc:
            raise type(exc)(f"{cls.__name__}: {exc}") from exc  # keeps SmallOrderKey etc.

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def max_objects(cls) -> int:
        """The most msgpack objects an encoding of this record can hold."""
        return _record_objects(cls)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls.from_wire(decode_raw(data, max_objects=cls.max_objects()))


@functools.cache
def _objects_of(cls: Any) -> int:
    return 1 + sum(c.objects for c in _codecs_of(cls))


def _record_objects(cls: type) -> int:
    return _objects_of(cls)


def encode(raw: Any) -> bytes:
    """Pack already-wire-shaped data (ints, bytes, lists) canonically."""
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def decode_raw(
    data: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_objects: int = MAX_OBJECTS,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Unpack bytes into wire-shaped data, refusing maps, strings, floats and extensions.

    At most ``max_objects`` objects are ever built: no array may be longer, and msgpack hands
    every finished array to a counter that stops the decoder once the total (each array plus
    its items) passes the bound, so hostile input costs memory in proportion to the bound, not
    to its own length. Nesting deeper than ``max_depth`` is refused too.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte bound")
    counter = _ObjectCounter(max_objects)
    try:
        raw = msgpack.unpackb(
            data,
            raw=True,
            use_list=True,
            strict_map_key=True,
            list_hook=counter,
            max_bin_len=min(max_bytes, MAX_BYTES),
            max_str_len=0,
            max_array_len=min(MAX_ARRAY, max_objects),
            max_map_len=0,
            max_ext_len=0,
        )
    except TooManyObjects:
        raise
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"malformed msgpack: {exc}") from exc
    except Exception as exc:  # msgpack raises assorted types on hostile input
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}") from exc
    _check_tree(raw, max_depth)
    # Canonical: the bytes must be exactly what we would produce (no alternative int widths).
    if encode(raw) != bytes(data):
        raise DecodeError("non-canonical encoding")
    return raw


class _ObjectCounter:
    """msgpack's ``list_hook``: counts each finished array and its items; stops past the bound."""

    __slots__ = ("left",)

    def __init__(self, max_objects: int) -> None:
        self.left = max_objects - 1  # the root is an object too

    def __call__(self, items: list[Any]) -> list[Any]:
        self.left -= len(items)
        if self.left < 0:
            raise TooManyObjects("input holds more objects than its type allows")
        return items


def _check_tree(raw: Any, max_depth: int) -> None:
    """Only ints, bytes and arrays, at most ``max_depth`` arrays nested in one another."""
    if type(raw) is not list:
        if type(raw) not in (int, bytes):
            raise DecodeError(f"unsupported wire type {type(raw).__name__}")
        return
    level, depth = [raw], 1
    while level:
        below: list[Any] = []
        for array in level:
            for item in array:
                if type(item) is list:
                    below.append(item)
                elif type(item) not in (int, bytes):
                    raise DecodeError(f"unsupported wire type {type(item).__name__}")
        if below:
            depth += 1
            if depth > max_depth:
                raise TooManyObjects(f"arrays nested deeper than {max_depth}")
        level = below


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_of(obj: Record) -> bytes:
    return sha256(obj.encode())
