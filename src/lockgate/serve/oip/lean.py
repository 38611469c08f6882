"""The lean way to read a large body: its flat numeric ``data`` arrays cut out before orjson
reads the rest, then parsed a slice at a time into one preallocated array each, so no Python
object is made per element. :data:`LEAN_COST` and :data:`PLAIN_COST` say what either way costs
in memory."""

from __future__ import annotations

import re
import secrets
from typing import Any

import numpy as np

from lockgate.errors import InvalidInputError
from lockgate.serve.oip.elements import loads, numeric

__all__ = ["LEAN_COST", "LEAN_FROM", "PLAIN_COST", "Lifted", "chunked"]

LEAN_FROM = 1 << 20
"""Bodies of at least this many bytes have their flat numeric data parsed without lists."""
PLAIN_COST = 24
"""Bytes of memory per byte of JSON read the plain way (Python objects per element), at most."""
LEAN_COST = 4
"""Bytes of memory per byte of body read the lean way (flat numeric data, binary data)."""


_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_NUMBER_BYTES = b"0123456789 \t\r\n,.eE+-"
_CHUNK = 1 << 20


class Lifted:
    """Flat numeric ``data`` arrays cut out of a large body before orjson reads the rest: each
    is replaced by a string token (with a per-request nonce) and parsed by numpy once the
    tensor's datatype is known, so no Python object is made per element."""

    def __init__(self) -> None:
        self.prefix = f"\0lg{secrets.token_hex(8)}:"
        self.spans: dict[str, bytes] = {}

    def lift(self, body: bytes) -> bytes:
        pieces: list[bytes] = []
        pos = 0
        for m in _DATA_KEY.finditer(body):
            start = m.end()
            if start <= pos:
                continue
            end = body.find(b"]", start)
            if end < 0:
                break
            inner = body[start:end]
            if inner.translate(None, _NUMBER_BYTES):
                continue  # nested, booleans, strings, NaN: orjson reads it
            key = f"{self.prefix}{len(self.spans)}"
            self.spans[key] = inner
            pieces += (body[pos:start - 1], b'"\\u0000', key[1:].encode(), b'"')
            pos = end + 1
        if not self.spans:
            return body
        pieces.append(body[pos:])
        return b"".join(pieces)

    def take(self, data: object) -> bytes | None:
        """The lifted text of a tensor's data (once), or None when it was not lifted."""
        if type(data) is str and data.startswith(self.prefix):
            return self.spans.pop(data, None)
        return None


def chunked(name: str, datatype: str, text: bytes, dt: np.dtype[Any],
             want: int) -> np.ndarray[Any, Any]:
    """Flat numeric data (the text between a ``data`` array's brackets) read a slice of about
    :data:`_CHUNK` bytes at a time into one preallocated array of the ``want`` elements the
    shape needs: the same checks as the plain way, but never more than a slice's elements as
    Python objects (and the GIL free between slices)."""
    if not text.strip():
        return np.empty(0, dtype=dt)
    found = text.count(b",") + 1
    if found != want:
        raise InvalidInputError(
            f"input {name!r}: the shape needs {want} elements, data has {found}")
    out = np.empty(found, dtype=dt)
    pos = filled = 0
    while pos < len(text):
        end = text.find(b",", pos + _CHUNK)
        if end < 0:
            end = len(text)
        part = numeric(name, datatype, loads(b"[" + text[pos:end] + b"]"), dt)
        if part.ndim != 1 or filled + part.size > out.size:
            raise InvalidInputError(f"input {name!r}: data is not a flat list of numbers")
        out[filled:filled + part.size] = part
        filled += part.size
        pos = end + 1
    if filled != out.size:
        raise InvalidInputError(f"input {name!r}: data is not a flat list of numbers")
    return out
