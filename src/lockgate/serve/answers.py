"""How lockgate's HTTP layer (:mod:`lockgate.serve.http`) answers a parsed request: an infer
request by the inference service, directly; a refusal decided while parsing, as a JSON error;
anything else by the ASGI app through a small bridge, whole body in, whole body out. Every
answer is written whole, with ``date``, ``server`` and ``content-length``, and ``connection:
close`` when the connection closes after it; an error body that echoes a long name is cut
short.
"""

from __future__ import annotations

import email.utils
import http
import logging
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp

from lockgate.serve.asgi import ASGI_VERSION, call_app
from lockgate.serve.connection import Connection, ParsedRequest
from lockgate.serve.inference import (
    INTERNAL_ERROR,
    Answer,
    InferenceService,
    OverloadedError,
    PayloadTooLargeError,
    error_answer,
)
from lockgate.serve.limits import refusal_body, shorten, shorten_error

__all__ = ["Responder"]

access = logging.getLogger("lockgate.serve.access")

_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}


class _Clock:
    """The ``date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


class Responder:
    """Answers the requests of a server's connections (the base of
    :class:`~lockgate.serve.http.HTTPServer`): ``inference`` answers infer requests, ``app``
    (ASGI) the others; ``state`` is the lifespan's state, handed to each of the app's
    requests."""

    def __init__(self, app: ASGIApp, inference: InferenceService | None, *, max_body: int,
                 access_log: bool, server_name: bytes) -> None:
        self.app = app
        self.inference = inference
        self.max_body = max_body
        self.access_log = access_log
        self.clock = _Clock()
        self.head = b"\r\nserver: " + server_name + b"\r\ndate: "
        self.state: dict[str, Any] = {}

    def respond(self, conn: Connection, req: ParsedRequest, status: int, content_type: bytes,
                body: bytes, extra: bytes = b"") -> None:
        """Write one complete answer (``extra``: further ``name: value\\r\\n`` header lines)."""
        close = not req.keep_alive or conn.closing
        if status >= 400 and content_type.startswith(b"application/json"):
            body = shorten_error(body)
        head = b"HTTP/1.1 %d %s%s%s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
            status, _PHRASES.get(status, b"Unknown"), self.head, self.clock.header(),
            content_type, len(body), extra, b"connection: close\r\n" if close else b"")
        transport = conn.transport
        if req.method == b"HEAD":
            transport.write(head)
        elif len(body) > 1 << 16:
            transport.write(head)  # a large body is not copied to join its head
            transport.write(body)
        else:
            transport.write(head + body)
        if self.access_log:
            access.info('%s - "%s %s HTTP/%s" %d', conn.peer,
                        shorten(req.method.decode("latin-1")),
                        shorten(req.url.decode("latin-1")), req.version, status)
        if close:
            conn.close_after_write()

    def answer(self, conn: Connection, req: ParsedRequest, answer: Answer) -> None:
        extra = b"" if answer.binary_header is None else (
            b"inference-header-content-length: %d\r\n" % answer.binary_header)
        if answer.retry_after is not None:
            extra += b"retry-after: %d\r\n" % answer.retry_after
        self.respond(conn, req, answer.status, answer.content_type, answer.body, extra)

    def handle(self, conn: Connection, req: ParsedRequest) -> Awaitable[None] | None:
        """Answer ``req``: now (returns None) or later (returns what to wait for). Whatever
        does not hand the request's reservation to the service releases it."""
        if req.refusal is not None or req.too_large:
            self._refuse(conn, req)
            return None
        target = req.target
        if target is None:
            if req.reservation is not None:  # pragma: no cover - only infer targets reserve
                req.reservation.release()
                req.reservation = None
            return self._bridge(conn, req)
        inference = self.inference
        assert inference is not None  # a target is decided only with a service
        reservation, req.reservation = req.reservation, None
        result = inference.infer(target[0], target[1], req.body, req.binary_header,
                                 authorization=req.authorization, reservation=reservation,
                                 authorized=req.authorized)
        if isinstance(result, Answer):
            self.answer(conn, req, result)
            return None
        return self._later(conn, req, result)

    def _refuse(self, conn: Connection, req: ParsedRequest) -> None:
        """Answer a request refused before the service saw it, and close. A refusal of the
        body's size or of the budget counts as a request of the version it was for."""
        req.keep_alive = False
        if req.reservation is not None:
            req.reservation.release()
            req.reservation = None
        exc = req.refusal
        inference, target = self.inference, req.target
        if exc is None:
            exc = PayloadTooLargeError(f"request body exceeds {self.max_body} bytes")
        if inference is not None and target is not None and isinstance(
                exc, (OverloadedError, PayloadTooLargeError)):
            self.answer(conn, req, inference.refuse(target[0], target[1], exc))
        elif req.refusal is None:
            self.answer(conn, req, error_answer(exc))
        else:
            self.respond(conn, req, exc.http_status, b"application/json", refusal_body(exc),
                         b"retry-after: %d\r\n" % exc.retry_after_s
                         if isinstance(exc, OverloadedError) else b"")

    async def _later(self, conn: Connection, req: ParsedRequest,
                     pending: Awaitable[Answer]) -> None:
        answer = await pending
        if not conn.lost:
            self.answer(conn, req, answer)

    async def _bridge(self, conn: Connection, req: ParsedRequest) -> None:
        """Run the ASGI app for one request, its whole body at once, and write its answer."""
        path, _, query = req.url.partition(b"?")
        scope = {
            "type": "http", "asgi": ASGI_VERSION, "http_version": req.version,
            "method": req.method.decode("ascii"), "scheme": "http",
            "path": unquote(path.decode("latin-1")), "raw_path": path, "query_string": query,
            "root_path": "", "headers": req.headers, "client": conn.peer_address,
            "server": conn.local_address, "state": dict(self.state),
        }
        answer = await call_app(self.app, scope, req.body, conn.disconnected)
        if answer.broken:
            conn.abort()
            return
        if conn.lost:
            return
        if not answer.status:
            self.answer(conn, req, INTERNAL_ERROR)
            return
        content_type = b"text/plain; charset=utf-8"
        extra = []
        for name, value in answer.headers:
            key = name.lower()
            if key == b"content-type":
                content_type = value
            elif key not in (b"content-length", b"connection", b"transfer-encoding", b"date",
                             b"server"):
                extra.append(b"%s: %s\r\n" % (name, value))
        self.respond(conn, req, answer.status, content_type, answer.body, b"".join(extra))
