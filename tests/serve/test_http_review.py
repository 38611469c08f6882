"""lockgate's HTTP layer: the decode budget is never leaked and never taken before the token is
checked, budget refusals are counted, a zero-config server answers loopback names only, and
the uvicorn layer answers a trickled head."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from test_http_limits import serving, shared_home  # type: ignore[import-not-found]

from lockgate.errors import AuthenticationError
from lockgate.runtime.predictor import Predictor
from lockgate.serve import ServedModel, create_app
from lockgate.serve.http import HTTPServer


class Running:
    """An HTTPServer on a free port, on an event loop thread of its own."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = HTTPServer(app, app.state.inference,
                                 max_body=app.state.max_request_bytes, **options)
        _, self.port = asyncio.run_coroutine_threadsafe(
            self.server.start("127.0.0.1", 0), self.loop).result(timeout=60)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    def settled(self) -> int:
        """The budget in use once every connection has closed (bounded wait)."""
        deadline = time.monotonic() + 15
        while self.server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.server.connections
        used: int = self.app.state.inference.budget.used
        return used


@pytest.fixture
def make_app(make_linear: Callable[[float], bytes]) -> Callable[..., Any]:
    model = make_linear(1.0)

    def make(**options: Any) -> Any:
        return create_app([ServedModel("lin", 1, lambda: Predictor(model, intra_op_threads=1))],
                          **options)

    return make


@contextmanager
def running(app: Any, **options: Any) -> Iterator[Running]:
    server = Running(app, **options)
    try:
        yield server
    finally:
        server.close()


def answers(port: int, raw: bytes, timeout: float = 30) -> bytes:
    """Everything the server sends for ``raw`` until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        try:
            while data := sock.recv(1 << 16):
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def post(path: bytes, body: bytes, method: bytes = b"POST", extra: bytes = b"") -> bytes:
    return (b"%s %s HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n%s"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (method, path, extra, len(body), body))


def chunked(path: bytes, chunks: list[bytes], close: bool = True) -> bytes:
    raw = b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\n%stransfer-encoding: chunked\r\n\r\n" % (
        path, b"connection: close\r\n" if close else b"")
    return raw + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


BIG = b"[" + b"1," * 35_000 + b"1]"  # over 64 KiB: a body that takes budget


def test_no_budget_is_left_held_by_requests_that_do_not_reach_the_service(
        make_app: Callable[..., Any]) -> None:
    with running(make_app(max_request_bytes=200_000)) as srv:
        # not POST, or a percent-escaped path: the app answers, nothing stays reserved
        assert status(answers(srv.port, post(b"/v2/models/lin/infer", BIG, b"PUT"))) == 405
        assert srv.settled() == 0
        got = answers(srv.port, post(b"/v2/models/l%69n/infer", BIG))
        assert status(got) == 400
        assert srv.settled() == 0
        # a chunked body that grows past max_body
        assert status(answers(srv.port, chunked(b"/v2/models/lin/infer",
                                                [BIG, BIG, BIG, BIG]))) == 413
        assert srv.settled() == 0
        # a refusal followed by pipelined requests that held budget: dropped and released
        raw = chunked(b"/v2/models/lin/infer", [BIG] * 4, close=False) + post(
            b"/v2/models/lin/infer", BIG) + post(b"/v2/models/lin/infer", BIG)
        assert status(answers(srv.port, raw)) == 413
        assert srv.settled() == 0


def test_the_token_is_checked_before_the_budget_and_refusals_are_counted(
        make_app: Callable[..., Any]) -> None:
    def authorize(header: str | None, model: str) -> None:
        if header != "Bearer good":
            raise AuthenticationError("a token is needed")

    app = make_app(authorize=authorize, decode_budget=1 << 20)
    with running(app) as srv:
        # without a token: 401 at once (no 100 Continue), however large the declared body
        raw = (b"POST /v2/models/lin/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
               b"expect: 100-continue\r\ncontent-length: 900000\r\n\r\n")
        got = answers(srv.port, raw)
        assert not got.startswith(b"HTTP/1.1 100")
        assert status(got) == 401
        assert srv.settled() == 0
        metrics = app.state.metrics.for_model("lin", "1")
        before = metrics.requests.value
        # with one: the budget refuses it (413: more than the whole budget), counted
        got = answers(srv.port, raw.replace(b"expect", b"authorization: Bearer good\r\nexpect"))
        assert status(got) == 413, got
        assert metrics.requests.value == before + 1
        assert srv.settled() == 0


def test_allowed_hosts_answer_other_names_421(make_app: Callable[..., Any]) -> None:
    names = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
    with running(make_app(), allowed_hosts=names) as srv:
        def get(host: bytes, target: bytes = b"/v2/health/ready") -> int:
            return status(answers(srv.port, b"GET %s HTTP/1.1\r\nhost: %s\r\n"
                                            b"connection: close\r\n\r\n" % (target, host)))

        assert get(b"evil.example") == 421
        assert get(b"evil.example:%d" % srv.port) == 421
        assert get(b"127.0.0.1:%d" % srv.port) == 200
        assert get(b"localhost") == 200
        assert get(b"[::1]:%d" % srv.port) == 200
        # an absolute-form target's authority is the host
        assert get(b"127.0.0.1", b"http://evil.example/v2/health/ready") == 421


@pytest.mark.slow
def test_a_trickled_head_is_answered_on_the_uvicorn_layer(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with serving(shared_home(tmp_path_factory), "uvicorn") as srv:
        head = (b"GET /v2/health/ready HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                + b"x-pad: %s\r\n" % (b"p" * 20_000) + b"connection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(head), 2000):
                sock.sendall(head[i:i + 2000])
                time.sleep(0.005)
            assert status(sock.recv(4096)) == 200


def _big_answer_app(size: int) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def big(request: Any) -> Response:
        return Response(b"x" * size, media_type="application/octet-stream")

    app = Starlette(routes=[Route("/big", big)])
    return app


@contextmanager
def _plain_server(app: Any, limits: Any) -> Iterator[tuple[HTTPServer, int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = HTTPServer(app, None, limits=limits)
    _, port = asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", 0), loop).result(60)
    try:
        yield server, port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _slow_reader(port: int, wait_s: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    time.sleep(wait_s)  # the answer waits in the server's buffers meanwhile
    return sock


def test_a_slow_reader_of_a_large_answer_gets_all_of_it() -> None:
    """Keep-alive counts idle time between requests only: an answer still being written is
    not idleness, however long the client takes to read it."""
    from lockgate.serve.limits import HTTPLimits

    size = 20 << 20
    with _plain_server(_big_answer_app(size), HTTPLimits(keep_alive_s=1.0)) as (_, port):
        sock = _slow_reader(port, 3.0)
        with sock:
            got = 0
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                if got >= size:
                    break
    assert got >= size  # the head plus the whole body arrived


def test_a_client_that_never_reads_is_dropped_after_the_write_stall_limit() -> None:
    from lockgate.serve.limits import HTTPLimits

    limits = HTTPLimits(keep_alive_s=1.0, body_timeout_s=1.5)
    with _plain_server(_big_answer_app(20 << 20), limits) as (server, port):
        sock = _slow_reader(port, 0.2)
        with sock:
            deadline = time.monotonic() + 15
            while server.connections and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not server.connections  # the stalled connection no longer holds a slot
