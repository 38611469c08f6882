"""Reading a registry request: its query parameters, its JSON body, its upload, its token.

Each refusal is an :class:`~lockgate.errors.InvalidInputError`: 400 for a value that does not
parse or is out of range, 413 for a body past its limit (refused before it is all read), 415
for a body not sent as the content type the operation takes. JSON bodies are read by
:func:`lockgate.registry.bundle.load_json` and validated against the operation's request
schema of :mod:`lockgate.registry.schemas`. The class names of the 413 and 415 errors are the
``type`` of their JSON answers.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from lockgate.errors import InvalidInputError
from lockgate.registry.bundle import BUNDLE_MEDIA, MAX_JSON_BYTES, ONNX_MEDIA, load_json
from lockgate.registry.call import Param
from lockgate.registry.schemas import SCHEMAS
from lockgate.types import whole_number

if TYPE_CHECKING:
    import jsonschema

__all__ = ["bearer", "json_body", "query_values", "require_json_media", "small_body", "spool",
           "upload_media"]



@cache
def _validator(schema: str) -> jsonschema.Draft202012Validator:
    """The request schema's validator, built on first use: importing jsonschema (and the
    format checkers it loads) costs about a second, which every CLI start would pay."""
    import jsonschema

    if not schema.endswith("Request"):
        raise KeyError(schema)
    return jsonschema.Draft202012Validator(SCHEMAS[schema])


class _PayloadTooLargeError(InvalidInputError):
    """A body or upload past its limit (HTTP 413)."""

    http_status = 413


class _UnsupportedMediaError(InvalidInputError):
    """A body sent as a content type the operation does not take (HTTP 415)."""

    http_status = 415


def query_values(request: Request, params: tuple[Param, ...]) -> dict[str, Any]:
    """The request's query parameters, each parsed and range-checked; an unknown one is a 400."""
    known = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for key in request.query_params:
        if key not in known:
            raise InvalidInputError(f"unknown query parameter {key!r}",
                                    hint=f"parameters: {sorted(known) or 'none'}")
    for p in params:
        text = request.query_params.get(p.name)
        if text is None:
            continue
        value = _query_value(p, text)
        if (p.minimum is not None and value < p.minimum) or (
                p.maximum is not None and value > p.maximum):
            raise InvalidInputError(f"query parameter {p.name!r} is out of range")
        out[p.name] = value
    return out


def _query_value(p: Param, text: str) -> Any:
    """A query parameter's value: integers are ASCII digits only, numbers finite."""
    value: Any = None
    if p.kind is int:
        negative = text.startswith("-") and (p.minimum is None or p.minimum < 0)
        value = whole_number(text[1:] if negative else text)
        if negative and value is not None:
            value = -value
    elif p.kind is float:
        try:
            value = float(text) if text.isascii() else None
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):
            raise InvalidInputError(f"query parameter {p.name!r} is not a finite number")
    else:
        value = p.kind(text)
    if value is None:
        raise InvalidInputError(f"query parameter {p.name!r}: expected "
                                f"{p.kind.__name__}, got {text[:64]!r}")
    return value


def json_body(raw: bytes, schema: str) -> dict[str, Any]:
    """``raw`` read as JSON (empty: ``{}``) and validated against the request ``schema``."""
    if not raw.strip():
        body: Any = {}
    else:
        body = load_json(raw, "the body")
    errors = sorted(_validator(schema).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "body"
        raise InvalidInputError(f"{where}: {errors[0].message}",
                                hint=f"see components.schemas.{schema} in /openapi.json")
    assert isinstance(body, dict)
    return body


async def small_body(request: Request) -> bytes:
    """A JSON body, refused (413) past ``MAX_JSON_BYTES`` before it is all read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise _PayloadTooLargeError(f"the body is over {MAX_JSON_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def spool(request: Request, path: Path, limit: int) -> None:
    """The upload written to ``path``: refused (413) past ``limit`` bytes, and when empty."""
    size = 0
    with path.open("wb") as fh:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _PayloadTooLargeError(f"the upload is over {limit} bytes")
            fh.write(chunk)
    if size == 0:
        raise InvalidInputError("the upload is empty",
                                hint="send an ONNX file or a tar bundle as the body")


def require_json_media(request: Request) -> None:
    """415 unless the request says its body is JSON (``application/json``, any parameters)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise _UnsupportedMediaError(
            f"content type {media[:64] or 'none'!r} is not accepted: the body must be JSON",
            hint="send the body with Content-Type: application/json")


def upload_media(request: Request) -> str:
    """The upload's content type: an ONNX file or a bundle (415 otherwise)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (ONNX_MEDIA, *BUNDLE_MEDIA):
        raise _UnsupportedMediaError(
            f"upload content type {media or 'none'!r} is not accepted",
            hint=f"send {ONNX_MEDIA} (an ONNX file) or application/x-tar or "
                 "application/gzip (a bundle)")
    return media


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
