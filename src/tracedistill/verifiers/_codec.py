"""The value codec shared by the sandboxed child (encoding) and the verifier (decoding).

The child turns what the program returned into JSON-compatible tagged data; the parent rebuilds
*real* Python objects from it (a ``dict_keys`` view, a ``deque``, a ``range``, a numpy array,
an iterator over the items a generator yielded), built only from plain data, so that the
comparison in the parent has exactly the semantics evalplus's in-process comparison has, while
nothing the program defined ever reaches the parent. A value that cannot be rebuilt this way
(an instance of the program's own class) decodes as :class:`Opaque` and equals nothing.

Only stdlib imports at module level: the child imports this before any untrusted byte runs.
"""

from __future__ import annotations

import collections
import decimal
import fractions
import hashlib
import io
import math
import pickle
from typing import Any

__all__ = [
    "LARGE_OUTPUT_BYTES",
    "MAX_DEPTH",
    "Digest",
    "NotNone",
    "Opaque",
    "Yielded",
    "decode",
    "encode",
    "encode_output",
    "materialize",
]

MAX_DEPTH = 200
#: Outputs whose pickle is larger than this travel as a digest, not as a value.
LARGE_OUTPUT_BYTES = 256 * 1024


class Opaque:
    """A value the child could not encode (a custom object): it equals nothing."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<unencodable {self.type_name}>"


class Digest:
    """A large output, known by the sha256 of its memo-free pickle (never unpickled)."""

    __slots__ = ("hexdigest", "size")

    def __init__(self, hexdigest: str, size: int) -> None:
        self.hexdigest = hexdigest
        self.size = size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and other.hexdigest == self.hexdigest

    def __hash__(self) -> int:
        return hash(self.hexdigest)

    def __repr__(self) -> str:
        return f"<{self.size} bytes, sha256 {self.hexdigest[:12]}>"


class NotNone:
    """Encoded ``out is not None`` for evalplus's 'output is not None' oracle."""

    __slots__ = ("flag",)

    def __init__(self, flag: bool) -> None:
        self.flag = flag

    def __repr__(self) -> str:
        return f"<not-None: {self.flag}>"


class Yielded:
    """An iterator over what a returned iterator (generator, ``filter``, ``map`` ...) yielded.

    It behaves as the original did under evalplus's comparison: it equals nothing but itself
    (iterators compare by identity), its type is no list or tuple, and iterating it (``set(out)``)
    yields the items, once.
    """

    __slots__ = ("_iterator", "items", "type_name")

    def __init__(self, type_name: str, items: list[Any]) -> None:
        self.type_name = type_name
        self.items = items
        self._iterator = iter(items)

    def __iter__(self) -> Yielded:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def __repr__(self) -> str:
        return f"<{self.type_name} yielding {self.items!r}>"


# --- encoding (child side) -------------------------------------------------------------------

# Bound once, before the program runs, so that patching builtins cannot change the encoding.
_int, _float, _str, _bool, _bytes = int, float, str, bool, bytes
_list, _tuple, _dict, _set, _frozenset, _complex = list, tuple, dict, set, frozenset, complex
_type, _isinstance, _len, _iter = type, isinstance, len, iter
_range, _bytearray = range, bytearray
_deque = collections.deque
_Fraction, _Decimal = fractions.Fraction, decimal.Decimal
_keys_type: type = type({}.keys())
_values_type: type = type({}.values())
_items_type: type = type({}.items())
_PLAIN_BASES = (_bool, _int, _float, _str, _tuple, _list, _dict, _frozenset, _set, _complex)
#: numpy dtype kinds an array may have to travel as an array: bool, (u)int, float, complex, str.
_ARRAY_KINDS = "biufcU"


def encode(value: Any, depth: int = 0) -> Any:
    """Encode a value as JSON-compatible tagged data that keeps Python's types apart."""
    if depth > MAX_DEPTH:
        return ["o", "too deep"]
    kind = _type(value)
    if value is None or kind is _bool or kind is _str:
        return value
    if kind is _int:
        # hex: decimal str() of huge ints is capped by sys.set_int_max_str_digits
        return value if -(2**53) < value < 2**53 else ["i", _int.__format__(value, "x")]
    if kind is _float:
        return value if math.isfinite(value) else ["x", _float.__repr__(value)]
    if kind is _list:
        return ["l", [encode(v, depth + 1) for v in _list.__iter__(value)]]
    if kind is _tuple:
        return ["t", [encode(v, depth + 1) for v in _tuple.__iter__(value)]]
    if kind is _dict:
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in _dict.items(value)]]
    if kind is _set or kind is _frozenset:
        return ["s" if kind is _set else "f", [encode(v, depth + 1) for v in value]]
    if kind is _complex:
        return ["c", [encode(value.real), encode(value.imag)]]
    if kind is _bytes:
        return ["b", value.decode("latin-1")]
    return _encode_other(value, kind, depth)


def _encode_other(value: Any, kind: type, depth: int) -> Any:
    """Standard-library values with an equality of their own, subclasses, numpy values."""
    try:
        if kind is _keys_type or kind is _values_type or kind is _items_type:
            tag = "K" if kind is _keys_type else "V" if kind is _values_type else "I"
            return [tag, [encode(v, depth + 1) for v in value]]
        if kind is _range:
            return ["r", [encode(value.start), encode(value.stop), encode(value.step)]]
        if kind is _deque:
            return ["q", [encode(v, depth + 1) for v in value]]
        if kind is _bytearray:
            return ["B", _bytes(value).decode("latin-1")]
        if kind is _Fraction:
            return ["Q", [encode(value.numerator), encode(value.denominator)]]
        if kind is _Decimal:
            return ["D", _Decimal.__str__(value)]
    except Exception:
        return ["o", kind.__name__]
    if kind.__module__ == "numpy":  # before the subclasses: np.float64 is a float subclass
        return _encode_numpy(value, kind, depth)
    # Subclasses of the built-in types (namedtuple, OrderedDict, IntEnum ...) become their
    # plain values, as their == would treat them.
    for base in _PLAIN_BASES:
        if _isinstance(value, base):
            try:
                return encode(base(value), depth)
            except Exception:
                return ["o", kind.__name__]
    return ["o", f"{kind.__module__}.{kind.__qualname__}"]


def _encode_numpy(value: Any, kind: type, depth: int) -> Any:
    """Numpy scalars and arrays of numbers or strings travel as such (they decode as numpy
    objects again: ``np.float64`` is not ``float`` to evalplus's type check, a 0-d array is not
    iterable); other numpy values are opaque.
    """
    try:
        dtype = value.dtype
        if dtype.kind in _ARRAY_KINDS:
            if kind.__name__ == "ndarray":
                flat = [encode(v, depth + 1) for v in value.ravel().tolist()]
                return ["a", [_str(dtype.str), [_int(n) for n in value.shape], flat]]
            if getattr(value, "ndim", None) == 0:
                return ["g", [_str(dtype.str), encode(value.item(), depth + 1)]]
    except Exception:
        pass
    return ["o", f"{kind.__module__}.{kind.__qualname__}"]


def materialize(value: Any) -> Any:
    """Encode a value whose items a set comparison needs: an iterator becomes what it yielded.

    evalplus compares the outputs of some MBPP tasks as ``set(out) == set(exp)``, which consumes
    an iterator; here the items are collected in the child (the program's code runs only here)
    and travel as plain data. Anything iterable that :func:`encode` would not keep is collected.
    """
    encoded = encode(value)
    if not (_isinstance(encoded, _list) and encoded[0] == "o"):
        return encoded
    items = [encode(v, 1) for v in _iter(value)]  # raises for a non-iterable: like set(out)
    kind = _type(value)
    return ["y", [f"{kind.__module__}.{kind.__qualname__}", items]]


def encode_output(value: Any) -> Any:
    """Encode a test's output: the value itself, or a digest when it is large.

    The digest hashes a memo-free pickle, computed at C speed; equal plain values give equal
    bytes, and since the expected output never enters the child, a digest cannot be forged.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=4)
    pickler.fast = True  # no memo: the bytes depend on the value, not on object sharing
    try:
        pickler.dump(value)
    except Exception:
        return encode(value)
    if buffer.tell() <= LARGE_OUTPUT_BYTES:
        return encode(value)
    return ["h", [hashlib.sha256(buffer.getbuffer()).hexdigest(), buffer.tell()]]


# --- decoding (parent side) ------------------------------------------------------------------


def decode(data: Any) -> Any:
    """Rebuild a value from :func:`encode`'s output (plain data only: safe on any input)."""
    kind = type(data)
    if kind is not list:
        if kind in _SCALARS:  # the bulk of a batch's values: no further checks
            return data
        if isinstance(data, list):
            return decode(list(data))
        if isinstance(data, dict):
            raise ValueError("unexpected object in encoded value")
        return data
    if len(data) != 2 or not isinstance(data[0], str):
        raise ValueError("malformed encoded value")
    tag, body = data
    # Lists and tuples inline: a batch decodes tens of thousands of them.
    if tag == "l":
        return [decode(v) for v in body]
    if tag == "t":
        return tuple([decode(v) for v in body])
    simple = _SIMPLE.get(tag)
    if simple is not None:
        return simple(body)
    rebuild = _REBUILD.get(tag)
    if rebuild is None:
        raise ValueError(f"unknown tag {tag!r} in encoded value")
    try:
        return rebuild(body)
    except (TypeError, ValueError, ArithmeticError, decimal.InvalidOperation):
        return Opaque(f"malformed {tag!r} value")


def _decode_array(body: Any) -> Any:
    import numpy

    dtype_str, shape, flat = body
    dtype = numpy.dtype(str(dtype_str))
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"array of dtype {dtype_str!r}")
    shape = tuple(int(n) for n in shape)
    if math.prod(shape) != len(flat):
        raise ValueError("array shape does not match its items")
    return numpy.asarray([decode(v) for v in flat], dtype=dtype).reshape(shape)


def _decode_scalar(body: Any) -> Any:
    import numpy

    dtype_str, item = body
    dtype = numpy.dtype(str(dtype_str))
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"scalar of dtype {dtype_str!r}")
    return dtype.type(decode(item))


def _decode_range(body: Any) -> range:
    start, stop, step = (decode(v) for v in body)
    if not all(type(v) is int for v in (start, stop, step)):
        raise ValueError("range bounds must be integers")
    return range(start, stop, step)


_SCALARS = frozenset({str, int, float, bool, type(None)})
_SIMPLE: dict[str, Any] = {
    "i": lambda body: int(body, 16),
    "x": lambda body: float(body),
    "l": lambda body: [decode(v) for v in body],
    "t": lambda body: tuple(decode(v) for v in body),
    "d": lambda body: {decode(k): decode(v) for k, v in body},
    "s": lambda body: {decode(v) for v in body},
    "f": lambda body: frozenset(decode(v) for v in body),
    "c": lambda body: complex(decode(body[0]), decode(body[1])),
    "b": lambda body: str(body).encode("latin-1"),
    "n": lambda body: NotNone(bool(body)),
    "h": lambda body: Digest(str(body[0]), int(body[1])),
    "o": lambda body: Opaque(str(body)),
}
# Values rebuilt as real standard-library (or numpy) objects, so that == is theirs.
_REBUILD: dict[str, Any] = {
    "K": lambda body: dict.fromkeys(decode(v) for v in body).keys(),
    "V": lambda body: dict(enumerate(decode(v) for v in body)).values(),
    "I": lambda body: dict(_pair(decode(v)) for v in body).items(),
    "r": _decode_range,
    "q": lambda body: collections.deque(decode(v) for v in body),
    "B": lambda body: bytearray(str(body).encode("latin-1")),
    "Q": lambda body: fractions.Fraction(_integer(decode(body[0])), _integer(decode(body[1]))),
    "D": lambda body: decimal.Decimal(str(body)),
    "a": _decode_array,
    "g": _decode_scalar,
    "y": lambda body: Yielded(str(body[0]), [decode(v) for v in body[1]]),
}


def _pair(value: Any) -> tuple[Any, Any]:
    if type(value) is not tuple or len(value) != 2:
        raise ValueError("dict item is not a pair")
    return value[0], value[1]


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise ValueError("not an integer")
    return value
