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
bounded), chunked request bodies, ``Expect: 100-continue``, ``HEAD``. A body over
``max_body`` bytes is answered 413 and the connection closed; a request the parser refuses
gets 400 and a close; an idle connection is closed after ``keep_alive_s``. Answers carry
``date``, ``server`` and ``content-length``; every error body is JSON ``{"error": ...}``.

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
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp, Message

from lockgate.errors import InvalidInputError, ServeError
from lockgate.serve.inference import (
    INTERNAL_ERROR,
    Answer,
    InferenceService,
    PayloadTooLargeError,
    error_answer,
)

__all__ = ["HTTPServer"]

log = logging.getLogger("lockgate.serve")
access = logging.getLogger("lockgate.serve.access")

_INFER = re.compile(rb"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(slots=True)
class _Request:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    version: str
    too_large: bool


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
    :meth:`stop` drive it from inside a running event loop (tests, embedding).
    """

    def __init__(self, app: ASGIApp, inference: InferenceService | None = None, *,
                 max_body: int = 64 << 20, keep_alive_s: float = 5.0,
                 shutdown_timeout_s: float = 30.0, access_log: bool = False,
                 server_name: bytes = b"lockgate") -> None:
        self.app = app
        self.inference = inference
        self.max_body = max_body
        self.keep_alive_s = keep_alive_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.access_log = access_log
        self.clock = _Clock()
        self.head = b"\r\nserver: " + server_name + b"\r\ndate: "
        self.connections: set[_Connection] = set()
        self.state: dict[str, Any] = {}
        self.address: tuple[str, int] | None = None
        """Where :meth:`run` listens, once it does."""
        self._server: asyncio.AbstractServer | None = None
        self._lifespan: _Lifespan | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stop_soon: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Run the lifespan startup, then listen; returns the bound address."""
        self._lifespan = _Lifespan(self.app, self.state)
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
        """Close connections idle (no request in progress or arriving) past keep_alive_s."""
        while True:
            await asyncio.sleep(min(1.0, self.keep_alive_s))
            cutoff = time.monotonic() - self.keep_alive_s
            for conn in list(self.connections):
                if conn.idle_since is not None and conn.idle_since < cutoff:
                    conn.abort()

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
        head = b"HTTP/1.1 %d %s%s%s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
            status, _PHRASES.get(status, b"Unknown"), self.head, self.clock.header(),
            content_type, len(body), extra, b"connection: close\r\n" if close else b"")
        transport = conn.transport
        if req.method == b"HEAD":
            transport.write(head)
        else:
            transport.write(head + body)
        if self.access_log:
            access.info('%s - "%s %s HTTP/%s" %d', conn.peer, req.method.decode(),
                        req.url.decode("latin-1"), req.version, status)
        if close:
            conn.close_after_write()

    def answer(self, conn: _Connection, req: _Request, answer: Answer) -> None:
        extra = b"" if answer.binary_header is None else (
            b"inference-header-content-length: %d\r\n" % answer.binary_header)
        self.respond(conn, req, answer.status, answer.content_type, answer.body, extra)

    def handle(self, conn: _Connection, req: _Request) -> Awaitable[None] | None:
        """Answer ``req``: now (returns None) or later (returns what to wait for)."""
        inference = self.inference
        target = _infer_target(req) if inference is not None else None
        if req.too_large:
            error = PayloadTooLargeError(f"request body exceeds {self.max_body} bytes")
            req.keep_alive = False
            self.answer(conn, req, error_answer(error) if inference is None or target is None
                        else inference.refuse(*target, error))
            return None
        if inference is None or target is None:
            return self._bridge(conn, req)
        header = authorization = None
        for name, value in req.headers:
            if name == b"inference-header-content-length":
                header = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        result = inference.infer(*target, req.body, header, authorization=authorization)
        if isinstance(result, Answer):
            self.answer(conn, req, result)
            return None
        return self._later(conn, req, result)

    async def _later(self, conn: _Connection, req: _Request, pending: Awaitable[Answer]) -> None:
        answer = await pending
        if not conn.lost:
            self.answer(conn, req, answer)

    async def _bridge(self, conn: _Connection, req: _Request) -> None:
        """Run the ASGI app for one request, its whole body at once, and write its answer."""
        path, _, query = req.url.partition(b"?")
        scope = {
            "type": "http", "asgi": _ASGI, "http_version": req.version,
            "method": req.method.decode("ascii"), "scheme": "http",
            "path": unquote(path.decode("latin-1")), "raw_path": path, "query_string": query,
            "root_path": "", "headers": req.headers, "client": conn.peer_address,
            "server": conn.local_address, "state": dict(self.state),
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await conn.disconnected
            return {"type": "http.disconnect"}

        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        done = False

        async def send(message: Message) -> None:
            nonlocal status, headers, done
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body" and not done:
                chunks.append(message.get("body", b""))
                done = not message.get("more_body", False)

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if status:  # the answer began: the connection cannot carry a clean one any more
                conn.abort()
                return
        else:
            if not status:
                log.error("the app answered %s %s with nothing", scope["method"],
                          scope["path"])
        if conn.lost:
            return
        if not status:
            self.answer(conn, req, INTERNAL_ERROR)
            return
        content_type = b"text/plain; charset=utf-8"
        extra = []
        for name, value in headers:
            key = name.lower()
            if key == b"content-type":
                content_type = value
            elif key not in (b"content-length", b"connection", b"transfer-encoding", b"date",
                             b"server"):
                extra.append(b"%s: %s\r\n" % (name, value))
        self.respond(conn, req, status, content_type, b"".join(chunks), b"".join(extra))


def _infer_target(req: _Request) -> tuple[str, str | None] | None:
    """``(model, version)`` when ``req`` is an infer request (POST to an infer path written
    without percent-escapes; anything else goes through the app, which decodes them)."""
    if req.method != b"POST":
        return None
    path = req.url.partition(b"?")[0]
    match = _INFER.fullmatch(path) if b"%" not in path else None
    if match is None:
        return None
    version = match.group(2)
    return match.group(1).decode("latin-1"), None if version is None else version.decode(
        "latin-1")


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them in order."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closing = False
        self.lost = False
        self.paused_writing = False
        self.paused_reading = False
        self.idle_since: float | None = time.monotonic()
        self.peer = "-"
        self.peer_address: tuple[str, int] | None = None
        self.local_address: tuple[str, int] | None = None
        self.disconnected: asyncio.Future[None] = None  # type: ignore[assignment]
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.disconnected = asyncio.get_running_loop().create_future()
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
        self.lost = self.closing = True
        self.idle_since = None
        self.server.connections.discard(self)
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse("protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            self._refuse(f"malformed HTTP request: {exc}")
            return
        self.drain()

    def eof_received(self) -> bool | None:
        self.closing = True
        if not self.busy and not self.queue:
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

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.server.max_body:
                self._too_large = True
            elif (name == b"expect" and value.lower() == b"100-continue" and not self.busy
                  and not self.queue and not self._too_large):
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.server.max_body:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        body = self._body
        self.queue.append(_Request(
            parser.get_method(), self._url, self._headers,
            body[0] if len(body) == 1 else b"".join(body), parser.should_keep_alive(),
            parser.get_http_version(), self._too_large))
        self._body = []

    # -- answering -------------------------------------------------------------------------------

    def drain(self) -> None:
        """Answer queued requests in order while none is in progress."""
        queue = self.queue
        while queue and not self.busy and not self.paused_writing and not self.lost:
            req = queue.popleft()
            if req.too_large:
                self.closing = True
            pending = self.server.handle(self, req)
            if pending is not None:
                self.busy = True
                asyncio.ensure_future(pending).add_done_callback(self._finished)
            if self.closing:
                queue.clear()
        if self.lost:
            return
        if not self.busy and not queue:
            if self.closing:
                self.transport.close()
                return
            if self.paused_reading:
                self.paused_reading = False
                self.transport.resume_reading()
            self.idle_since = time.monotonic()
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

    def _refuse(self, message: str) -> None:
        """Answer 400 and close: the input cannot be parsed any further."""
        self.closing = True
        self.queue.clear()
        if not self.busy:
            req = _Request(b"GET", b"", [], b"", False, "1.1", False)
            self.server.answer(self, req, error_answer(InvalidInputError(message)))
        else:
            self.transport.close()

    def close_after_write(self) -> None:
        self.closing = True
        self.transport.close()  # flushes what is buffered first

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and not self.queue:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if not self.lost:
            self.transport.abort()


class _Lifespan:
    """The ASGI lifespan protocol around the server: startup before listening, shutdown after.
    A failed startup raises ServeError (the server does not start)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        """Create it inside the running loop."""
        self.app = app
        self.state = state
        loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[str | None] = loop.create_future()
        self._stopped: asyncio.Future[str | None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def startup(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._events.put({"type": "lifespan.startup"})
        failure = await self._started
        if failure is not None:
            raise ServeError(f"the server did not start: {failure}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        self._stopping = True
        await self._events.put({"type": "lifespan.shutdown"})
        failure = await self._stopped
        if failure is not None:
            raise ServeError(f"the server did not shut down cleanly: {failure}")

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        started, stopped = self._started, self._stopped
        try:
            await self.app(scope, self._events.get, self._send)
        except BaseException as exc:
            if not started.done():
                log.error("lifespan startup failed", exc_info=exc)
                started.set_result(f"{type(exc).__name__}: {exc}")
            elif self._stopping and not stopped.done():
                log.error("lifespan shutdown failed", exc_info=exc)
                stopped.set_result(f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
        finally:
            for future in (started, stopped):
                if not future.done():
                    future.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self._started.set_result(str(message.get("message", "startup failed")))
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self._stopped.set_result(str(message.get("message", "shutdown failed")))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop
    return uvloop.new_event_loop
