"""A lean HTTP/1.1 server for the inference data plane, on asyncio (uvloop when installed) and
httptools' parser.

Infer requests (``POST /v2/models/{model}[/versions/{version}]/infer``) go straight from the
parser to :class:`~lockgate.serve.inference.InferenceService`: no ASGI scope, no task, no
router, no request or response objects — for a small model the HTTP layer, not the model, is
the cost (see docs/performance.md). Every other request (health, metadata, ``/metrics``,
capture, the console) goes to the ASGI app through a small bridge, whole body in, whole body
out. The app's lifespan runs around the server, as under uvicorn.

This module runs the server: listening, the sweep of slow, idle and stalled connections, the
lifespan and signals. Each connection (:mod:`lockgate.serve.connection`) parses and checks its
requests; :mod:`lockgate.serve.answers` writes their answers.

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
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from starlette.types import ASGIApp

from lockgate.serve.answers import Responder
from lockgate.serve.asgi import Lifespan
from lockgate.serve.connection import Connection
from lockgate.serve.inference import INLINE_MAX_BODY, InferenceService
from lockgate.serve.limits import LINGER_S, HTTPLimits, RequestTimeoutError, host_names

__all__ = ["Companion", "HTTPServer"]

_Connection = Connection  # the name benchmarks/http_parse_cost.py drives, in every revision


class Companion(Protocol):
    """Another listener on the server's event loop (the gRPC one): started once the app's
    lifespan has started and the server listens, stopped before the lifespan shuts down."""

    async def start(self) -> object: ...

    async def stop(self) -> None: ...


class HTTPServer(Responder):
    """Serves ``app`` (ASGI) with ``inference`` answering infer requests directly.

    ``run(host, port)`` blocks until a signal or :meth:`shutdown`; :meth:`start` /
    :meth:`stop` drive it from inside a running event loop (tests, embedding). ``limits``
    bounds what clients may ask (``keep_alive_s``, when given, overrides its keep-alive).
    ``allowed_hosts`` (None: any) names the hosts requests may address (``Host`` without its
    port; an IPv6 literal in brackets); any other is answered 421. ``companions`` start after
    it listens and stop when it stops.
    """

    def __init__(self, app: ASGIApp, inference: InferenceService | None = None, *,
                 max_body: int = 64 << 20, limits: HTTPLimits | None = None,
                 keep_alive_s: float | None = None, shutdown_timeout_s: float = 30.0,
                 access_log: bool = False, server_name: bytes = b"lockgate",
                 allowed_hosts: frozenset[str] | None = None,
                 companions: Sequence[Companion] = ()) -> None:
        limits = limits or HTTPLimits()
        if keep_alive_s is not None:
            limits = replace(limits, keep_alive_s=keep_alive_s)
        super().__init__(app, inference, max_body=max_body, access_log=access_log,
                         server_name=server_name)
        self.inline_room = min(INLINE_MAX_BODY, max_body)
        self.allowed_hosts = host_names(allowed_hosts)
        self.hosts_seen: set[bytes] = set()
        """``Host`` values already found in ``allowed_hosts``."""
        # a Content-Length of at most this many digits is neither over max_body nor large
        self.short_length = min(len(str(max_body)), len(str(INLINE_MAX_BODY))) - 1
        self.limits = limits
        self.keep_alive_s = limits.keep_alive_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.connections: set[Connection] = set()
        self.address: tuple[str, int] | None = None
        """Where :meth:`run` listens, once it does."""
        self._server: asyncio.AbstractServer | None = None
        self._lifespan: Lifespan | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stop_soon: Callable[[], None] | None = None
        self.companions = tuple(companions)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str, port: int,
                    sock: socket.socket | None = None) -> tuple[str, int]:
        """Run the lifespan startup, then listen (on ``sock`` when given: a socket already
        listening, such as one a supervisor shares); returns the bound address."""
        self._lifespan = Lifespan(self.app, self.state)
        await self._lifespan.startup()
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: Connection(self), sock=sock,
                                                    backlog=2048)
        else:
            self._server = await loop.create_server(lambda: Connection(self), host, port,
                                                    reuse_address=True, backlog=2048)
        self._sweeper = loop.create_task(self._sweep())
        for companion in self.companions:
            await companion.start()
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish, close every connection, then run
        the lifespan shutdown."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for companion in self.companions:
            await companion.stop()
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
            on_started: Callable[[str, int], None] | None = None,
            sock: socket.socket | None = None) -> None:
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
                self.address = bound = await self.start(host, port, sock)
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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop
    return uvloop.new_event_loop
