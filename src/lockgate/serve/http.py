"""A lean HTTP/1.1 server for the inference data plane, on asyncio (uvloop when installed) and
httptools' parser.

Infer requests (``POST /v2/models/{model}[/versions/{version}]/infer``) go straight from the
parser to :class:`~lockgate.serve.inference.InferenceService`: no ASGI scope, no task, no
router, no request or response objects — for a small model the HTTP layer, not the model, is
the cost (see docs/performance.md). Every other request (health, metadata, ``/metrics``,
capture, the console) goes to the ASGI app through a small bridge, whole body in, whole body
out. The app's lifespan runs around the server, as under uvicorn.

HTTP/1.1 as clients expect it: keep-alive (HTTP/1.0 only when asked), pipelined requests
answered in order (reading pauses while an answer is pending, so memory per connection stays
bounded), chunked request bodies, ``Expect: 100-continue``, ``HEAD``. Answers carry
``date``, ``server`` and ``content-length``; every error body is JSON ``{"error": ...}``, and a
long name echoed in one is cut short (:func:`shorten_error`).

What one client may ask is bounded by :class:`HTTPLimits` (the ``serve_*`` settings):

- request line + headers over ``max_head_bytes``, or more than ``max_headers`` header lines:
  431 and a close. Bytes are counted as they arrive (httptools holds a header back until it
  ends), so memory stays bounded even for a header line that never ends;
- a head not received whole within ``head_timeout_s`` of its first byte: 408 and a close. A
  trickling head does not reset any clock: ``keep_alive_s`` is the idle time allowed between
  requests only;
- a body slower than ``body_timeout_s`` plus one second per ``min_body_rate`` bytes received
  (measured from the end of the head): 408 and a close;
- a declared ``Content-Length`` over ``max_body``: 413 as soon as the head is read (no
  ``100 Continue`` is sent); a chunked body that grows past it: 413;
- beyond ``max_connections`` open connections a new one is closed at once;
- an answer the client does not read: a connection whose pending output makes no progress
  for ``body_timeout_s`` is aborted (one still being read, however slowly, is never idle);
- HTTP/1.1 without exactly one ``Host``: 400; any version but 1.0 and 1.1: 505; an
  absolute-form target (``POST http://host/v2/... HTTP/1.1``) is routed by its path, and its
  authority replaces the ``Host`` header (RFC 9112 §3.2.2); a request the parser refuses: 400;
- with ``allowed_hosts``, a ``Host`` whose name (without the port) is not in it: 421 (a page
  re-pointed by DNS to a loopback address cannot reach a local server).

The head is checked once, when it ends: its size and header count (431), the rules above, the
infer target (decided once per request), the caller's token when the service checks tokens
(401/403, before any budget is taken), then the decode budget of a large infer body (503).

After a refusal the server half-closes: it sends its answer and a FIN, then reads and drops
what the client still sends for at most ``LINGER_S``, so the client sees the answer rather than
a reset.

On SIGINT or SIGTERM the server stops accepting, lets requests in progress finish (for at most
``shutdown_timeout_s``), closes idle connections, runs the lifespan shutdown and then re-raises
the signal, as uvicorn does: SIGINT surfaces as KeyboardInterrupt, SIGTERM ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp

from lockgate.errors import Error, InvalidInputError
from lockgate.serve.asgi import ASGI_VERSION, Lifespan, call_app
from lockgate.serve.inference import (
    INLINE_MAX_BODY,
    INTERNAL_ERROR,
    Answer,
    InferenceService,
    OverloadedError,
    PayloadTooLargeError,
    Reservation,
    error_answer,
)
from lockgate.serve.limits import (
    LINGER_S,
    HeadTooLargeError,
    HTTPLimits,
    RequestTimeoutError,
    check_head,
    declared_length,
    host_name,
    host_names,
    misdirected,
    refusal_body,
    shorten,
    shorten_error,
)
from lockgate.serve.oip import LEAN_COST

__all__ = ["HTTPServer"]

log = logging.getLogger("lockgate.serve")
access = logging.getLogger("lockgate.serve.access")

_INFER = re.compile(rb"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PICKED = frozenset((b"host", b"content-length", b"expect", b"authorization",
                     b"inference-header-content-length"))
_BEGINS = -1.0
"""``head_since`` / ``body_since`` from the start of a head or body to the end of the read it
began in (then the clock's time: one clock reading per read, not per callback)."""


@dataclass(slots=True)
class _Request:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    version: str
    too_large: bool
    refusal: Error | None = None
    reservation: Reservation | None = None
    """The request's share of the decode budget, taken when its head was read."""
    target: tuple[str, str | None] | None = None
    """``(model, version)`` of an infer request (decided once its head is read: POST to an
    infer path written without percent-escapes); None: the app answers it."""
    binary_header: str | None = None
    """``Inference-Header-Content-Length`` (a repeated one joined, as RFC 9110 combines
    fields; the service refuses the joined value)."""
    authorization: str | None = None
    authorized: bool = False
    """The service's ``authorize`` accepted the caller when the head was read."""


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


class HTTPServer:
    """Serves ``app`` (ASGI) with ``inference`` answering infer requests directly.

    ``run(host, port)`` blocks until a signal or :meth:`shutdown`; :meth:`start` /
    :meth:`stop` drive it from inside a running event loop (tests, embedding). ``limits``
    bounds what clients may ask (``keep_alive_s``, when given, overrides its keep-alive).
    ``allowed_hosts`` (None: any) names the hosts requests may address (``Host`` without its
    port; an IPv6 literal in brackets); any other is answered 421.
    """

    def __init__(self, app: ASGIApp, inference: InferenceService | None = None, *,
                 max_body: int = 64 << 20, limits: HTTPLimits | None = None,
                 keep_alive_s: float | None = None, shutdown_timeout_s: float = 30.0,
                 access_log: bool = False, server_name: bytes = b"lockgate",
                 allowed_hosts: frozenset[str] | None = None) -> None:
        limits = limits or HTTPLimits()
        if keep_alive_s is not None:
            limits = replace(limits, keep_alive_s=keep_alive_s)
        self.app = app
        self.inference = inference
        self.max_body = max_body
        self.inline_room = min(INLINE_MAX_BODY, max_body)
        self.allowed_hosts = host_names(allowed_hosts)
        self.hosts_seen: set[bytes] = set()
        """``Host`` values already found in ``allowed_hosts``."""
        # a Content-Length of at most this many digits is neither over max_body nor large
        self.short_length = min(len(str(max_body)), len(str(INLINE_MAX_BODY))) - 1
        self.limits = limits
        self.keep_alive_s = limits.keep_alive_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.access_log = access_log
        self.clock = _Clock()
        self.head = b"\r\nserver: " + server_name + b"\r\ndate: "
        self.connections: set[_Connection] = set()
        self.state: dict[str, Any] = {}
        self.address: tuple[str, int] | None = None
        """Where :meth:`run` listens, once it does."""
        self._server: asyncio.AbstractServer | None = None
        self._lifespan: Lifespan | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stop_soon: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Run the lifespan startup, then listen; returns the bound address."""
        self._lifespan = Lifespan(self.app, self.state)
        await self._lifespan.startup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                reuse_address=True, backlog=2048)
        self._sweeper = loop.create_task(self._sweep())
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish, close every connection, then run
        the lifespan shutdown."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + self.shutdown_timeout_s
        for conn in list(self.connections):
            conn.close_when_idle()
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    async def _sweep(self) -> None:
        """Close connections idle between requests past keep_alive_s, refuse heads and bodies
        that arrive too slowly, and end lingering closes. A connection whose answer is pending
        is never the client's delay: its clocks restart once it reads again. A connection with
        output still to flush is not idle; one whose output makes no progress for
        body_timeout_s (a client that does not read its answers) is aborted."""
        limits = self.limits
        tick = min(1.0, limits.keep_alive_s, limits.head_timeout_s, limits.body_timeout_s)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            idle_cutoff = now - limits.keep_alive_s
            head_cutoff = now - limits.head_timeout_s
            linger_cutoff = now - LINGER_S
            stall_cutoff = now - limits.body_timeout_s
            for conn in list(self.connections):
                pending = conn.transport.get_write_buffer_size()
                if pending != conn.write_pending:
                    conn.write_pending, conn.write_since = pending, now
                if conn.lingering_since is not None:
                    if conn.lingering_since < linger_cutoff:
                        conn.abort()
                elif pending:
                    if conn.write_since < stall_cutoff:
                        conn.abort()
                elif conn.busy or conn.queue:
                    continue
                elif conn.idle_since is not None:
                    if conn.idle_since < idle_cutoff:
                        conn.abort()
                elif conn.head_since is not None:
                    if conn.head_since < head_cutoff:
                        conn.refuse(RequestTimeoutError(
                            f"the request head did not arrive within "
                            f"{limits.head_timeout_s:g} s"))
                elif conn.body_since is not None and now > limits.body_deadline(
                        conn.body_since, conn.body_bytes):
                    conn.refuse(RequestTimeoutError(
                        f"the request body arrived too slowly (allowed: "
                        f"{limits.body_timeout_s:g} s plus 1 s per {limits.min_body_rate} "
                        f"bytes)"))

    def run(self, host: str, port: int,
            on_started: Callable[[str, int], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully and re-raise the signal."""
        received: list[int] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stopping = asyncio.Event()

            def on_signal(sig: int) -> None:
                received.append(sig)
                stopping.set()

            handled = []
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, on_signal, sig)
                    handled.append(sig)
            def stop_soon() -> None:
                loop.call_soon_threadsafe(stopping.set)

            self._stop_soon = stop_soon
            try:
                self.address = bound = await self.start(host, port)
                if on_started is not None:
                    on_started(*bound)
                await stopping.wait()
            finally:
                await self.stop()
                for sig in handled:
                    loop.remove_signal_handler(sig)

        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
        for sig in received[:1]:
            signal.raise_signal(sig)

    def shutdown(self) -> None:
        """Ask :meth:`run` to stop, gracefully, from any thread (no-op before it starts)."""
        if self._stop_soon is not None:
            self._stop_soon()

    # -- requests --------------------------------------------------------------------------------

    def respond(self, conn: _Connection, req: _Request, status: int, content_type: bytes,
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

    def answer(self, conn: _Connection, req: _Request, answer: Answer) -> None:
        extra = b"" if answer.binary_header is None else (
            b"inference-header-content-length: %d\r\n" % answer.binary_header)
        if answer.retry_after is not None:
            extra += b"retry-after: %d\r\n" % answer.retry_after
        self.respond(conn, req, answer.status, answer.content_type, answer.body, extra)

    def handle(self, conn: _Connection, req: _Request) -> Awaitable[None] | None:
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

    def _refuse(self, conn: _Connection, req: _Request) -> None:
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

    async def _later(self, conn: _Connection, req: _Request, pending: Awaitable[Answer]) -> None:
        answer = await pending
        if not conn.lost:
            self.answer(conn, req, answer)

    async def _bridge(self, conn: _Connection, req: _Request) -> None:
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


class _Halt(Exception):
    """Raised from a parser callback to stop parsing at a refusal."""


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them in order."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closing = False
        self.lost = False
        self.paused_writing = False
        self.paused_reading = False
        self.refused = False
        """A refusal is queued or answered: what the client sends next is dropped."""
        self.idle_since: float | None = time.monotonic()
        """Set between requests only (keep-alive); None while one is arriving or answered."""
        self.head_since: float | None = None
        """First byte of the head arriving now."""
        self.body_since: float | None = None
        self.body_bytes = 0
        self.lingering_since: float | None = None
        self.write_pending = 0
        """Output waiting in the transport at the last sweep, and since when it is that."""
        self.write_since = 0.0
        self.peer = "-"
        self.peer_address: tuple[str, int] | None = None
        self.local_address: tuple[str, int] | None = None
        self.disconnected: asyncio.Future[None] = None  # type: ignore[assignment]
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._read = 0  # the size of the read being parsed
        self._head_lead = 0  # the read the head began in, when that was an earlier one
        self._head_raw = 0  # whole reads that arrived inside the head
        self._room = 0  # body bytes that need no check: under what is reserved, or max_body
        self._req = _Request(b"GET", b"", [], b"", False, "1.1", False)  # the one arriving
        self._begun = 0  # messages begun (tells a head that ended and one that began apart)
        self._halt: _Request | None = None
        self._reservation: Reservation | None = None
        self._reserved_for = 0  # the body size self._reservation holds the budget for
        self._refused: Error | None = None  # the budget refused this body: it is dropped

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.disconnected = asyncio.get_running_loop().create_future()
        if len(self.server.connections) >= self.limits.max_connections:
            self.lost = self.closing = self.refused = True  # over the cap: closed at once
            self.idle_since = None
            self.transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self.peer_address = (str(peer[0]), int(peer[1]))
            self.peer = f"{peer[0]}:{peer[1]}"
        if isinstance(local, tuple):
            self.local_address = (str(local[0]), int(local[1]))
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        for req in self.queue:
            if req.reservation is not None:
                req.reservation.release()
        self.lost = self.closing = True
        self.idle_since = self.head_since = self.body_since = self.lingering_since = None
        self.server.connections.discard(self)
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering: dropped
        in_head = self.head_since is not None
        begun = self._begun
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refuse(InvalidInputError("protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            halt, self._halt = self._halt, None
            if halt is None:
                self.refuse(InvalidInputError(f"malformed HTTP request: {exc}"))
            else:
                self._queue_refusal(halt)
            return
        if self.head_since is not None:
            if in_head and begun == self._begun:
                self._head_raw += len(data)  # the whole read belongs to the same head
                if self._head_raw > self.limits.max_head_bytes:
                    self.refuse(HeadTooLargeError(self._head_message()))
                    return
            else:  # a head begun in this read: its clock starts now
                self._head_lead = len(data)
                self.head_since = time.monotonic()
        elif self.body_since is _BEGINS:  # a body still to come: its clock starts now
            self.body_since = time.monotonic()
        self.drain()

    def eof_received(self) -> bool | None:
        self.closing = True
        if self.lingering_since is not None or (not self.busy and not self.queue):
            return None  # close now
        return True  # half-close: finish the answers in progress

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self.drain()

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0
        self._too_large = False
        self._head_raw = self._head_lead = 0
        self._begun += 1
        self.idle_since = None
        self.head_since = _BEGINS

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        """Check the head, once: its size and header count, the protocol rules, the host;
        decide the infer target, check the caller's token and reserve the body's budget."""
        self.head_since = None
        self.body_since = _BEGINS
        self.body_bytes = 0
        headers, limits = self._headers, self.limits
        if len(headers) > limits.max_headers or \
                self._head_lead + self._head_raw + self._read > limits.max_head_bytes:
            self._check_size()
        host = length = expect = authorization = binary = None
        hosts = 0
        for name, value in headers:  # the one pass over the fields of a request
            if name in _PICKED:
                if name == b"host":
                    hosts += 1
                    host = value
                elif name == b"content-length":
                    length = value
                elif name == b"expect":
                    expect = value
                elif name == b"authorization":
                    authorization = value
                else:  # a repeated one is joined, as RFC 9110 combines fields
                    binary = value if binary is None else binary + b"," + value
        parser, server, url = self.parser, self.server, self._url
        version = parser.get_http_version()
        if hosts != 1 or version != "1.1" or url[:1] != b"/":
            try:
                absolute = check_head(version, hosts, url)
            except InvalidInputError as exc:
                self._stop(exc)
            if absolute is not None:
                url, host = absolute
                self._url = url
                headers = self._headers = [(n, v) for n, v in headers if n != b"host"]
                headers.append((b"host", host))
        if server.allowed_hosts is not None and host is not None and \
                host not in server.hosts_seen:  # HTTP/1.0 may name no host
            if host_name(host) not in server.allowed_hosts:
                self._stop(misdirected(host))
            if len(server.hosts_seen) < 64:
                server.hosts_seen.add(host)  # the raw values clients send, checked once
        inference = server.inference
        method = parser.get_method()
        target = None
        if inference is not None and method == b"POST":
            path = url.partition(b"?")[0]
            match = _INFER.fullmatch(path) if b"%" not in path else None
            if match is not None:
                model, v = match.group(1, 2)
                target = model.decode("latin-1"), None if v is None else v.decode("latin-1")
        self._req = req = _Request(
            method, url, headers, b"", True, version, False, None, None, target,
            None if binary is None else binary.decode("latin-1"),
            None if authorization is None else authorization.decode("latin-1"))
        size = None
        if length is not None and len(length) > server.short_length:
            try:
                size = declared_length(length, server.max_body)
            except PayloadTooLargeError:
                # Answered as soon as the head is read: no 100 Continue, and the body is not
                # awaited (the connection then closes).
                req.too_large = True
                self._halt_with(req)
        continues = expect is not None and expect.lower() == b"100-continue"
        if target is not None:
            if inference.authorize is not None:  # type: ignore[union-attr]
                try:
                    inference.authorize(req.authorization, target[0])  # type: ignore[union-attr]
                except Error as exc:
                    req.refusal = exc
                    self._halt_with(req)
                req.authorized = True
            if size is not None:
                self._grow(size, halt=continues)
            self._room = server.inline_room if self._reservation is None else self._reserved_for
        else:
            self._room = server.max_body
        if continues and version == "1.1" and not self.busy and not self.queue:
            self.transport.write(_CONTINUE)

    def _check_size(self) -> None:
        """431 for a head over max_headers fields or max_head_bytes (counted exactly: the
        reads it arrived in may hold more than the head)."""
        headers, limits = self._headers, self.limits
        if len(headers) > limits.max_headers:
            self._stop(HeadTooLargeError(f"more than {limits.max_headers} header fields"))
        if len(self._url) + sum(len(n) + len(v) + 4 for n, v in headers) > \
                limits.max_head_bytes:
            self._stop(HeadTooLargeError(self._head_message()))

    def _grow(self, size: int, halt: bool = False) -> None:
        """Hold the budget a body of ``size`` bytes needs, or refuse the request: at once
        (``halt``) or once its body, dropped, has arrived. A large infer body takes its share
        once its head is read (its declared length) or as it arrives (chunked): past the
        budget it is refused with 503 and never buffered (dropped as it arrives, so that the
        client, once it has sent it, reads the answer; with ``Expect: 100-continue`` refused
        at once), so bodies waiting to be decoded never pile up in memory."""
        try:
            if self._reservation is None:
                self._reservation = self.server.inference.reserve(size)  # type: ignore[union-attr]
            else:
                self._reservation.more((size - self._reserved_for) * LEAN_COST)
        except (OverloadedError, PayloadTooLargeError) as exc:
            self._release()
            if not halt:
                self._refused = exc
                self._body = []
                return
            self._req.refusal = exc
            self._halt_with(self._req)
        if self._reservation is not None:
            self._reserved_for = size

    def _release(self) -> None:
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        self._reserved_for = 0

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self._too_large or self._refused is not None:
            return
        self._size += len(body)
        if self._size > self._room and self._outgrown():
            return
        self._body.append(body)

    def _outgrown(self) -> bool:
        """The body grew past what needs no check: True when it is now dropped (over
        max_body, or refused by the budget)."""
        size, max_body = self._size, self.server.max_body
        if size > max_body:
            self._too_large = True
            self._body = []
            self._release()
            return True
        self._grow(size + (1 << 20))  # chunked: a MiB ahead of what arrived
        if self._refused is not None:
            return True
        self._room = min(self._reserved_for, max_body)
        return False

    def on_message_complete(self) -> None:
        req = self._req
        body = self._body
        self.body_since = None
        req.body = body[0] if len(body) == 1 else b"".join(body)
        req.keep_alive = self.parser.should_keep_alive()
        req.too_large = self._too_large
        if self._refused is not None:
            req.refusal, self._refused = self._refused, None
        if self._reservation is not None:
            req.reservation, self._reservation = self._reservation, None
            self._reserved_for = 0
        self.queue.append(req)
        self._body = []

    def _head_message(self) -> str:
        return f"the request line and headers exceed {self.limits.max_head_bytes} bytes"

    def _stop(self, exc: Error) -> NoReturn:
        """Stop parsing (from a callback) and refuse with ``exc``."""
        self._halt_with(_Request(b"GET", b"", [], b"", False, "1.1", False, exc))

    def _halt_with(self, req: _Request) -> NoReturn:
        """Stop parsing (from a callback) and answer ``req``, a refusal, then close."""
        req.keep_alive = False
        self._halt = req
        raise _Halt

    # -- answering -------------------------------------------------------------------------------

    def drain(self) -> None:
        """Answer queued requests in order while none is in progress."""
        queue = self.queue
        while queue and not self.busy and not self.paused_writing and not self.lost:
            req = queue.popleft()
            if req.too_large or req.refusal is not None:
                self.closing = True
            pending = self.server.handle(self, req)
            if pending is not None:
                self.busy = True
                asyncio.ensure_future(pending).add_done_callback(self._finished)
            if self.closing:
                for dropped in queue:
                    if dropped.reservation is not None:
                        dropped.reservation.release()
                        dropped.reservation = None
                queue.clear()
        if self.lost or self.lingering_since is not None:
            return
        if not self.busy and not queue:
            if self.closing:
                self.transport.close()
                return
            now = time.monotonic()
            if self.paused_reading:
                self.paused_reading = False
                self.transport.resume_reading()
                # the clocks of a request half read while the last answer was pending start now
                if self.head_since is not None:
                    self.head_since = now
                if self.body_since is not None:
                    self.body_since, self.body_bytes = now, 0
            if self.head_since is None and self.body_since is None and self.idle_since is None:
                self.idle_since = now
        elif not self.paused_reading and not self.closing:
            # While an answer is pending, read no further: what a pipelining client sends next
            # waits in the kernel's buffer, so a connection never holds more than one read's
            # worth of queued requests and one body being received.
            self.paused_reading = True
            self.transport.pause_reading()

    def _finished(self, task: asyncio.Future[None]) -> None:
        self.busy = False
        if not task.cancelled() and task.exception() is not None:
            log.error("unexpected error answering a request", exc_info=task.exception())
            self.abort()
            return
        self.drain()

    def refuse(self, exc: Error) -> None:
        """Answer ``exc`` (after the answers already due) and close: the input cannot be
        read any further."""
        self._queue_refusal(_Request(b"GET", b"", [], b"", False, "1.1", False, exc))

    def _queue_refusal(self, req: _Request) -> None:
        self.refused = True
        self.head_since = self.body_since = self.idle_since = None
        self.queue.append(req)
        self.drain()

    def close_after_write(self) -> None:
        self.closing = True
        if not self.refused or self.lost:
            self.transport.close()  # flushes what is buffered first
            return
        # Half-close: the answer and a FIN go out; what the client still sends is read and
        # dropped (for at most LINGER_S), so its kernel does not reset the connection before
        # it reads the answer.
        self.lingering_since = time.monotonic()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # pragma: no cover - TCP transports can
            self.transport.close()
            return
        if self.paused_reading:
            self.paused_reading = False
            self.transport.resume_reading()

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and not self.queue:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if not self.lost:
            self.transport.abort()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop
    return uvloop.new_event_loop
