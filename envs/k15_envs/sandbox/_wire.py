"""Value passing between the harness and the solution process (standard library only).

The code sandbox runs the problem's tests in the harness process and the untrusted
solution in a child process (``harness.py``). Arguments go to the child and return values
come back as JSON lines in a restricted, tagged encoding - never pickle - so what the
trusted side gets is plain data that it built itself: no object of the solution's
(``__eq__`` overrides, hostile ``__hash__`` or ``__str__``) can cross the boundary.

Encoded values (exact types only: subclasses such as enums, named tuples or
``OrderedDict`` are "unsupported"):

    None, bool, str, list      as JSON (a list is a JSON array)
    int                        as JSON when |x| < 2**53, else {"int": "<hex>"}
    float                      as JSON when finite, else {"float": "nan" | "inf" | "-inf"}
    tuple / set / frozenset    {"tuple": [...]}, {"set": [...]}, {"frozenset": [...]}
    dict                       {"dict": [[key, value], ...]} (keys keep their types)
    complex                    {"complex": [real, imag]}
    bytes / bytearray          {"bytes": "<hex>"}, {"bytearray": "<hex>"}

A message is one line ``{"<kind>": <value>}``. Values nest at most ``MAX_DEPTH`` levels
and a message is at most ``MAX_FRAME_BYTES`` (:class:`Unsupported` beyond that).
:func:`parse` accepts nothing else: any other JSON object, a bad tag body, an unhashable
set element or key, bare ``NaN``/``Infinity`` raise ``ValueError`` (or ``TypeError``).

JSON is parsed by the C scanner that ``json.loads`` uses (``_json``, imported directly:
``json`` itself imports ``re``, which costs both processes startup time on every run).

Also here, as both sandbox scripts load this module: :func:`guard_sockets`, the
Python-level network fallback for machines without network isolation.
"""

from __future__ import annotations

import math

try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner as _make_scanner
except ImportError:  # not CPython: the json package's own (slower to import) functions
    from json.encoder import py_encode_basestring_ascii as _quote

    _make_scanner = None

__all__ = [
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "Unsupported",
    "encode",
    "decode",
    "frame",
    "parse",
    "guard_sockets",
]

MAX_DEPTH = 100
MAX_FRAME_BYTES = 8 << 20
_SAFE_INT = 1 << 53
_FLOAT_SPECIALS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_HEX_TAGS = {"bytes": bytes.fromhex, "bytearray": bytearray.fromhex}
_SEQUENCE_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset}
_SEQUENCE_TYPES = (tuple, set, frozenset)


class Unsupported(Exception):
    """A value this encoding cannot carry (the message completes "unsupported <role> ...")."""


def _no_constants(name: str) -> object:
    raise ValueError(f"bare {name} is not part of the encoding")


class _ScannerOptions:
    """The attributes the C scanner reads (those of ``json.JSONDecoder``)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constants)


_scan = _make_scanner(_ScannerOptions()) if _make_scanner is not None else None


def _number(value: int | float) -> str:
    if type(value) is int:
        return int.__repr__(value) if -_SAFE_INT < value < _SAFE_INT else f'{{"int":"{value:#x}"}}'
    if math.isfinite(value):
        return float.__repr__(value)
    special = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f'{{"float":"{special}"}}'


def _type_name(kind: type) -> str:
    try:
        return str(kind.__name__)[:100]
    except Exception:  # noqa: BLE001 - a hostile metaclass
        return "?"


def encode(value: object, depth: int = 0) -> str:
    """``value`` as JSON text; raises :class:`Unsupported` for anything else."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is str:
        return _quote(value)
    if kind is int or kind is float:
        return _number(value)
    if depth >= MAX_DEPTH:
        raise Unsupported(f"value nested deeper than {MAX_DEPTH} levels")
    if kind is list:
        return "[" + ",".join([encode(item, depth + 1) for item in value]) + "]"
    if kind in _SEQUENCE_TYPES:
        items = ",".join([encode(item, depth + 1) for item in value])
        return f'{{"{kind.__name__}":[{items}]}}'
    if kind is dict:
        pairs = [f"[{encode(k, depth + 1)},{encode(v, depth + 1)}]" for k, v in value.items()]
        return '{"dict":[' + ",".join(pairs) + "]}"
    if kind is complex:
        return f'{{"complex":[{_number(value.real)},{_number(value.imag)}]}}'
    if kind is bytes or kind is bytearray:
        return f'{{"{kind.__name__}":"{value.hex()}"}}'
    raise Unsupported(f"type {_type_name(kind)}")


def _float(body: object) -> float:
    if type(body) in (int, float):
        return float(body)
    if type(body) is dict and len(body) == 1 and body.get("float") in _FLOAT_SPECIALS:
        return _FLOAT_SPECIALS[body["float"]]
    raise ValueError("malformed float")


def _pair(item: object) -> bool:
    return type(item) is list and len(item) == 2


def _tagged(tag: str, body: object, depth: int) -> object:
    if tag in _SEQUENCE_TAGS and type(body) is list:
        return _SEQUENCE_TAGS[tag](decode(item, depth + 1) for item in body)
    if tag == "dict" and type(body) is list and all(_pair(p) for p in body):
        return dict((decode(k, depth + 1), decode(v, depth + 1)) for k, v in body)
    if tag == "int" and type(body) is str and len(body) <= 1 << 20:
        return int(body, 16)
    if tag == "float":
        return _float({"float": body})
    if tag == "complex" and type(body) is list and len(body) == 2:
        return complex(_float(body[0]), _float(body[1]))
    if tag in _HEX_TAGS and type(body) is str:
        return _HEX_TAGS[tag](body)
    raise ValueError(f"malformed {tag!r} value")


def decode(data: object, depth: int = 0) -> object:
    """The value that ``data`` (parsed JSON) encodes; ``ValueError``/``TypeError`` if bad."""
    kind = type(data)
    if data is None or kind is bool or kind is int or kind is float or kind is str:
        return data
    if depth >= MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
    if kind is list:
        return [decode(item, depth + 1) for item in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        return _tagged(tag, body, depth)
    raise ValueError("malformed value")


def frame(kind: str, text: str = "null") -> bytes:
    """The message ``{kind: <text>}`` (``text``: an :func:`encode` result) as one line."""
    line = f'{{"{kind}":{text}}}\n'.encode("ascii")
    if len(line) > MAX_FRAME_BYTES:
        raise Unsupported(f"value larger than {MAX_FRAME_BYTES >> 20} MiB encoded")
    return line


def _loads(text: str) -> object:
    if _scan is None:
        import json

        return json.loads(text, parse_constant=_no_constants)
    try:
        data, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("trailing data after the message")
    return data


def parse(line: bytes) -> tuple[str, object]:
    """``(kind, value)`` of one message line; ``ValueError``/``TypeError`` if malformed."""
    if len(line) > MAX_FRAME_BYTES or not line.endswith(b"\n"):
        raise ValueError("truncated or oversized message")
    message = _loads(line[:-1].decode("ascii"))
    if type(message) is not dict or len(message) != 1:
        raise ValueError("malformed message")
    ((kind, body),) = message.items()
    return kind, decode(body)


def guard_sockets() -> None:
    """Best-effort fallback when the OS offers no network isolation (bypassable)."""
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    socket.socket = refuse  # type: ignore[assignment,misc]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socketpair = refuse  # type: ignore[assignment]
