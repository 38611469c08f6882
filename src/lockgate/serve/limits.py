"""Limits and protocol rules both HTTP layers apply to what clients send.

:class:`HTTPLimits` is the one description of them (each field is a ``serve_*`` setting);
:mod:`lockgate.serve.http` enforces it in its parser callbacks. On the uvicorn path
(``lockgate serve --http uvicorn``, ``lockgate server``, ``lockgate ui``) :func:`uvicorn_options`
runs uvicorn's h11 protocol, subclassed here (:class:`GuardedH11Protocol`) rather than
wrapped in middleware alone, because the limits on bytes and time must act before a request
exists:

- the head's size is checked as it arrives and bounded by h11's ``max_incomplete_event_size``
  (h11 holds at most that much of an unfinished head); an oversize head is answered 431, like
  lockgate's layer (a head that arrives while an answer is pending is checked by h11 alone);
- the head timeout runs from the first byte of a head to its end, the body deadline from the
  end of the head (each byte received buys ``1 / min_body_rate`` s), the keep-alive timeout
  between requests only, also for a connection that never sends anything: 408 and a close;
- beyond ``max_connections`` a new connection is closed at once;
- on the parsed head, a small ASGI guard refuses more than ``max_headers`` header fields (431),
  versions other than 1.0 and 1.1 (505) and a declared ``Content-Length`` over the app's
  ``max_request_bytes`` (413, before the app reads the body, so no ``100 Continue`` is sent),
  and routes an absolute-form target by its path with its authority as ``Host``;
- h11 itself refuses HTTP/1.1 without exactly one ``Host`` (400);
- with ``allowed_hosts``, a ``Host`` (its name, without the port) not in it: 421 (a page
  re-pointed by DNS to a loopback address cannot reach a local server).

The head's version, ``Host`` count, absolute-form target and declared ``Content-Length`` are
checked by the same helpers (:func:`check_head`, :func:`declared_length`, :func:`host_name`) on
both layers.

Differences from lockgate's layer: a 413 or a refusal by the ASGI guard closes at once (no
lingering read; a client still sending may see a reset), and a refusal of a head h11 could
not parse is answered 431 only when it was over the size limit (400 otherwise).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote

import h11
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from lockgate.errors import Error, InvalidInputError, MisdirectedRequestError
from lockgate.serve.inference import PayloadTooLargeError

__all__ = [
    "ECHO_CHARS",
    "GuardedH11Protocol",
    "HTTPLimits",
    "HTTPVersionError",
    "HeadTooLargeError",
    "RequestTimeoutError",
    "check_head",
    "declared_length",
    "host_name",
    "refusal_body",
    "shorten",
    "shorten_error",
    "uvicorn_options",
]

LINGER_S = 2.0
"""How long a refused connection keeps reading (and dropping) what the client still sends."""
ECHO_CHARS = 200
"""Longest run of request-derived characters an error body repeats; longer ones are cut."""
_LONG_RUN = re.compile(rf"[^\s'\"]{{{ECHO_CHARS + 1},}}")


class HeadTooLargeError(InvalidInputError):
    """A request line and headers over the server's limits (HTTP 431)."""

    http_status = 431


class RequestTimeoutError(InvalidInputError):
    """A request head or body that did not arrive in time (HTTP 408)."""

    http_status = 408


class HTTPVersionError(InvalidInputError):
    """A request in an HTTP version the server does not speak (HTTP 505)."""

    http_status = 505


def check_head(version: str, hosts: int, target: bytes) -> tuple[bytes, bytes] | None:
    """The rules on a parsed head both HTTP layers apply: the version (505 unless 1.0 or 1.1),
    exactly one ``Host`` in HTTP/1.1 (at most one in 1.0; 400), and an absolute-form
    ``target`` (RFC 9112 §3.2.2), returned as ``(path, authority)``: route by the path, the
    authority replaces ``Host`` (400 for another scheme or no usable authority). None for an
    origin-form target. Raises HTTPVersionError or InvalidInputError."""
    if version != "1.1" and version != "1.0":
        raise HTTPVersionError(f"HTTP/{shorten(version)} is not supported",
                               hint="send HTTP/1.1 or HTTP/1.0")
    if hosts > 1 or (hosts == 0 and version == "1.1"):
        raise InvalidInputError("an HTTP/1.1 request needs exactly one Host header"
                                if hosts == 0 else "more than one Host header")
    if target[:1] in (b"/", b"*") or b"://" not in target[:10]:
        return None
    scheme, _, rest = target.partition(b"://")
    if scheme.lower() not in (b"http", b"https"):
        raise InvalidInputError("the request target names an unknown scheme")
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority or b"@" in authority:
        raise InvalidInputError("the request target has no usable authority")
    return path if path.startswith(b"/") else b"/" + path, authority


def declared_length(value: bytes | None, max_body: int | None) -> int | None:
    """A declared ``Content-Length`` as a number (None when absent or not digits); raises
    PayloadTooLargeError (413) when it is over ``max_body`` (None: no limit)."""
    if value is None or not value.isdigit():
        return None
    length = int(value)
    if max_body is not None and length > max_body:
        raise PayloadTooLargeError(f"request body exceeds {max_body} bytes")
    return length


def host_name(value: bytes) -> bytes:
    """The name in a ``Host`` value, lowercase, without its port (an IPv6 literal keeps its
    brackets)."""
    value = value.strip().lower()
    if value.startswith(b"["):
        end = value.find(b"]")
        return value[:end + 1] if end > 0 else value
    return value.partition(b":")[0]


def host_names(allowed: frozenset[str] | None) -> frozenset[bytes] | None:
    """``allowed_hosts`` as the names :func:`host_name` yields."""
    if allowed is None:
        return None
    return frozenset(host_name(name.encode()) for name in allowed)


def misdirected(value: bytes) -> MisdirectedRequestError:
    """The refusal of a request whose ``Host`` names none of the server's names."""
    return MisdirectedRequestError(
        f"this server does not answer for the host {host_name(value).decode('latin-1')!r}",
        hint="address it by the name it is served on (127.0.0.1 or localhost)")


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """What one client may ask of the server; each field is a ``serve_*`` setting of the same
    name (docs/configuration.md). Raises InvalidInputError for a limit out of range."""

    max_head_bytes: int = 64 << 10
    max_headers: int = 100
    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    min_body_rate: int = 64 << 10
    keep_alive_s: float = 5.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if self.max_head_bytes < 1024 or self.max_headers < 1 or self.max_connections < 1:
            raise InvalidInputError("HTTP limits: max_head_bytes must be at least 1024, "
                                    "max_headers and max_connections at least 1")
        if min(self.head_timeout_s, self.body_timeout_s, self.keep_alive_s) <= 0 or \
                self.min_body_rate < 0:
            raise InvalidInputError("HTTP limits: timeouts must be positive and min_body_rate "
                                    "not negative")

    def body_deadline(self, started: float, received: int) -> float:
        """When a body begun at ``started`` with ``received`` bytes so far is late."""
        extra = received / self.min_body_rate if self.min_body_rate else 0.0
        return started + self.body_timeout_s + extra


def shorten(text: str) -> str:
    """``text`` with every run of over :data:`ECHO_CHARS` non-space characters cut short."""
    return _LONG_RUN.sub(lambda m: m[0][:ECHO_CHARS] + "…", text)


def shorten_error(body: bytes) -> bytes:
    """A JSON ``{"error": ...}`` body with the long names it echoes cut short; any other body
    as it is."""
    if len(body) <= ECHO_CHARS + 64:
        return body
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return body
    doc["error"] = shorten(doc["error"])
    return orjson.dumps(doc)


def refusal_body(exc: Error) -> bytes:
    """The JSON body of an answer refusing a request."""
    return orjson.dumps({"error": shorten(exc.diagnostics())})


def uvicorn_options(limits: HTTPLimits, max_body: int | None,
                    allowed_hosts: frozenset[str] | None = None) -> dict[str, Any]:
    """uvicorn.Config options that apply ``limits`` (and ``max_body``, a declared body
    length over which the answer is 413; None: the app decides; ``allowed_hosts``, the host
    names requests may address, 421 otherwise; None: any)."""
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,),
                    {"limits": limits, "max_body": max_body,
                     "allowed_hosts": host_names(allowed_hosts)})
    return {"http": protocol, "timeout_keep_alive": limits.keep_alive_s,
            "h11_max_incomplete_event_size": limits.max_head_bytes}


def _raw_answer(status: int, exc: Error, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = refusal_body(exc)
    head = [b"HTTP/1.1 %d %s\r\n" % (status, STATUS_PHRASES.get(status, b""))]
    head += [b"%s: %s\r\n" % pair for pair in default_headers]
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(body))
    return b"".join(head) + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with :class:`HTTPLimits` (set as class attributes by
    :func:`uvicorn_options`)."""

    limits: ClassVar[HTTPLimits] = HTTPLimits()
    max_body: ClassVar[int | None] = None
    allowed_hosts: ClassVar[frozenset[bytes] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = _Guard(self.app, self.limits, self.max_body, self.allowed_hosts)
        self._scanned = -1  # bytes of h11's buffer scanned for the end of the head (-1: none)
        self._head_end = False  # the end of the head is within the bytes scanned
        self._tail = b""  # the last 3 bytes scanned (an end that spans two reads)
        self._over_cap = False
        self._lingering = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_since = 0.0
        self._body_bytes = 0

    def connection_made(  # type: ignore[override]
            self, transport: asyncio.Transport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self._over_cap = True
            transport.close()
            return
        super().connection_made(transport)
        # a connection that never sends a byte is idle too
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._over_cap:
            return
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._over_cap or self._lingering or self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            # h11 bounds an unfinished head only: a whole one over the limit in one read
            # would pass. Only the new bytes are scanned (a trickled head costs O(n)).
            buffer = self.conn._receive_buffer
            if len(buffer) != self._scanned:  # bytes left from the last request: once
                self._scanned, self._head_end, self._tail = 0, False, b""
                self._scan(bytes(buffer))
            self._scan(data)
            if self._scanned > self.limits.max_head_bytes and not self._head_end:
                self._refuse(HeadTooLargeError(
                    f"the request line and headers exceed {self.limits.max_head_bytes} bytes"))
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._scanned = -1
        self._watch(len(data))

    def _scan(self, chunk: bytes) -> None:
        """Count ``chunk`` into the head and look for its end within the first
        ``max_head_bytes + 4`` bytes."""
        room = self.limits.max_head_bytes + 4 - self._scanned
        if not self._head_end and room > 0:
            window = self._tail + chunk[:room]
            self._head_end = b"\r\n\r\n" in window
            self._tail = window[-3:]
        self._scanned += len(chunk)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()  # the client read the refusal and left

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch(0)

    def send_400_response(self, msg: str) -> None:
        buffered = len(self.conn.trailing_data[0])
        if buffered > self.limits.max_head_bytes:
            exc: InvalidInputError = HeadTooLargeError(
                f"the request line and headers exceed {self.limits.max_head_bytes} bytes")
        else:
            exc = InvalidInputError(f"malformed HTTP request: {msg}")
        self._refuse(exc)

    def _refuse(self, exc: InvalidInputError) -> None:
        """Answer ``exc``, then half-close and drop what still arrives for LINGER_S, so the
        client reads the answer rather than a reset."""
        self._cancel_timers()
        if self.transport.is_closing() or self._lingering:
            return
        self._lingering = True
        self.transport.write(_raw_answer(exc.http_status, exc,
                                         self.server_state.default_headers))
        if not self.transport.can_write_eof():  # pragma: no cover - TCP transports can
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _watch(self, received: int) -> None:
        """Start or stop the head and body clocks after h11 has seen more input."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        loop = self.loop
        if state is h11.IDLE:
            if self._head_timer is None and (received or self.conn.trailing_data[0]):
                self._unset_keepalive_if_required()
                self._head_timer = loop.call_later(self.limits.head_timeout_s, self._head_late)
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if state is h11.SEND_BODY:
            if self._body_timer is None:
                self._body_since, self._body_bytes = loop.time(), 0
                self._body_timer = loop.call_later(self.limits.body_timeout_s, self._body_late)
            else:
                self._body_bytes += received
        elif self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE:
            self._refuse(RequestTimeoutError(
                f"the request head did not arrive within {self.limits.head_timeout_s:g} s"))

    def _body_late(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY:
            return
        now = self.loop.time()
        deadline = self.limits.body_deadline(self._body_since, self._body_bytes)
        if self.flow.read_paused:  # the app is not reading: not the client's delay
            self._body_since, self._body_bytes = now, 0
            deadline = now + self.limits.body_timeout_s
        if now < deadline:
            self._body_timer = self.loop.call_later(deadline - now, self._body_late)
            return
        self._refuse(RequestTimeoutError(
            f"the request body arrived too slowly (allowed: {self.limits.body_timeout_s:g} s "
            f"plus 1 s per {self.limits.min_body_rate} bytes)"))

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


class _Guard:
    """The rules that need a parsed head, as ASGI in front of the app."""

    def __init__(self, app: ASGIApp, limits: HTTPLimits, max_body: int | None,
                 allowed_hosts: frozenset[bytes] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.max_body = max_body
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is not None:
            body = refusal_body(refusal)
            await send({"type": "http.response.start", "status": refusal.http_status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", b"%d" % len(body)),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, _shortening(send))

    def _check(self, scope: Scope) -> Error | None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        try:
            version = scope["http_version"]
            if version in ("1.0", "1.1") and len(headers) > self.limits.max_headers:
                return HeadTooLargeError(f"more than {self.limits.max_headers} header fields")
            hosts = 0
            host = length = None
            for name, value in headers:
                if name == b"host":
                    hosts += 1
                    host = value
                elif name == b"content-length":
                    length = value
            absolute = check_head(version, hosts, scope["raw_path"])
            if absolute is not None:
                path, host = absolute
                scope["raw_path"] = path
                scope["path"] = scope.get("root_path", "") + unquote(path.decode("latin-1"))
                scope["headers"] = [(n, v) for n, v in headers if n != b"host"] + [
                    (b"host", host)]
            if self.allowed_hosts is not None and host is not None and \
                    host_name(host) not in self.allowed_hosts:  # HTTP/1.0 may name no host
                return misdirected(host)
            declared_length(length, self.max_body)
        except InvalidInputError as exc:
            return exc
        return None


def _shortening(send: Send) -> Send:
    """``send`` with the long names in JSON error bodies cut short."""
    shorten_next = False

    async def wrapped(message: Message) -> None:
        nonlocal shorten_next
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            shorten_next = message["status"] >= 400 and any(
                n.lower() == b"content-type" and v.startswith(b"application/json")
                for n, v in headers)
            if shorten_next:
                message = {**message, "headers": [
                    (n, v) for n, v in headers if n.lower() != b"content-length"]}
                pending.append(message)
                return
        elif shorten_next and message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = shorten_error(b"".join(chunks))
            start = pending.pop()
            await send({**start, "headers": [*start["headers"],
                                             (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    pending: list[Message] = []
    chunks: list[bytes] = []
    return wrapped

