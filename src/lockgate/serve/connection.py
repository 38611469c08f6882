"""One client connection of lockgate's HTTP layer (:mod:`lockgate.serve.http`): httptools'
callbacks parse each request into a :class:`ParsedRequest`, its head checked once when it ends
(size and header count, protocol rules, host, infer target, token, decode budget), and the
requests are answered in order through the server's :meth:`ServerSide.handle`, reading paused
while an answer is pending. The clocks the server's sweep reads (``idle_since``,
``head_since``, ``body_since``, ``lingering_since``) are kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import NoReturn, Protocol

import httptools

from lockgate.errors import Error, InvalidInputError
from lockgate.serve.inference import (
    InferenceService,
    OverloadedError,
    PayloadTooLargeError,
    Reservation,
)
from lockgate.serve.limits import (
    HeadTooLargeError,
    HTTPLimits,
    check_head,
    declared_length,
    host_name,
    misdirected,
)
from lockgate.serve.oip import LEAN_COST

__all__ = ["INFER_PATH", "Connection", "ParsedRequest", "ServerSide"]

log = logging.getLogger("lockgate.serve")

INFER_PATH = re.compile(rb"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
"""An infer request's path: ``(model, version)``; the version is None when not given."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PICKED = frozenset((b"host", b"content-length", b"expect", b"authorization",
                     b"inference-header-content-length"))
_BEGINS = -1.0
"""``head_since`` / ``body_since`` from the start of a head or body to the end of the read it
began in (then the clock's time: one clock reading per read, not per callback)."""


@dataclass(slots=True)
class ParsedRequest:
    """One request as its connection parsed it, or a refusal decided while parsing."""

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


class ServerSide(Protocol):
    """What a connection uses of its server (:class:`~lockgate.serve.http.HTTPServer`)."""

    limits: HTTPLimits
    inference: InferenceService | None
    max_body: int
    inline_room: int
    """Infer body bytes that need no reservation (at most ``max_body``)."""
    short_length: int
    """A ``Content-Length`` of at most this many digits is neither over max_body nor large."""
    allowed_hosts: frozenset[bytes] | None
    hosts_seen: set[bytes]
    connections: set[Connection]

    def handle(self, conn: Connection, req: ParsedRequest) -> Awaitable[None] | None:
        """Answer ``req``: now (None) or later (what to wait for)."""


class _Halt(Exception):
    """Raised from a parser callback to stop parsing at a refusal."""


class Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them in order."""

    def __init__(self, server: ServerSide) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.queue: deque[ParsedRequest] = deque()
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
        self._req = ParsedRequest(b"GET", b"", [], b"", False, "1.1", False)  # the one arriving
        self._begun = 0  # messages begun (tells a head that ended and one that began apart)
        self._halt: ParsedRequest | None = None
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
            self._check_host(host, server.allowed_hosts)
        inference = server.inference
        method = parser.get_method()
        target = None
        if inference is not None and method == b"POST":
            path = url.partition(b"?")[0]
            match = INFER_PATH.fullmatch(path) if b"%" not in path else None
            if match is not None:
                model, v = match.group(1, 2)
                target = model.decode("latin-1"), None if v is None else v.decode("latin-1")
        self._req = req = ParsedRequest(
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

    def _check_host(self, host: bytes, allowed: frozenset[bytes]) -> None:
        """421 for a ``Host`` not in ``allowed``; one that is, is not checked again."""
        if host_name(host) not in allowed:
            self._stop(misdirected(host))
        hosts_seen = self.server.hosts_seen
        if len(hosts_seen) < 64:
            hosts_seen.add(host)  # the raw values clients send, checked once

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
        self._halt_with(ParsedRequest(b"GET", b"", [], b"", False, "1.1", False, exc))

    def _halt_with(self, req: ParsedRequest) -> NoReturn:
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
        self._queue_refusal(ParsedRequest(b"GET", b"", [], b"", False, "1.1", False, exc))

    def _queue_refusal(self, req: ParsedRequest) -> None:
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
