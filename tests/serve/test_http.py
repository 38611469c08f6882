"""lockgate's HTTP/1.1 layer (lockgate.serve.http): a real server on 127.0.0.1 (its own event
loop on a thread) driven over raw sockets, so every byte of the protocol is what is checked."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lockgate.errors import ServeError
from lockgate.runtime.predictor import Predictor
from lockgate.serve import ServedModel, create_app
from lockgate.serve.batching import BatchingConfig
from lockgate.serve.http import HTTPServer
from lockgate.serve.slots import RunCost

Response = tuple[int, dict[str, str], bytes]


class Running:
    """An HTTPServer serving ``app`` on a free port, on an event loop thread of its own."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = HTTPServer(app, app.state.inference,
                                 max_body=app.state.max_request_bytes, **options)
        _, self.port = self.call(self.server.start("127.0.0.1", 0))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@contextmanager
def running(app: Any, **options: Any) -> Iterator[Running]:
    server = Running(app, **options)
    try:
        wait_ready(server.port)
        yield server
    finally:
        server.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def read_response(f: Any) -> Response:
    status_line = f.readline()
    assert status_line, "connection closed before an answer"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return status, headers, f.read(length) if length else b""


def request(method: str, path: str, body: bytes = b"", headers: str = "",
            version: str = "1.1") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nhost: 127.0.0.1\r\n{headers}"
    if body:
        head += f"content-length: {len(body)}\r\ncontent-type: application/json\r\n"
    return head.encode() + b"\r\n" + body


def infer_body(x: np.ndarray, request_id: str | None = None) -> bytes:
    doc: dict[str, Any] = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}
    if request_id is not None:
        doc["id"] = request_id
    return json.dumps(doc).encode()


def exchange(port: int, raw: bytes, answers: int = 1) -> list[Response]:
    with connect(port) as sock:
        sock.sendall(raw)
        f = sock.makefile("rb")
        return [read_response(f) for _ in range(answers)]


def refused_and_closed(port: int, raw: bytes, status: int) -> str:
    """Send ``raw``; expect a JSON error with ``status``, then the server's close. Returns the
    error message."""
    with connect(port) as sock:
        sock.sendall(raw)
        f = sock.makefile("rb")
        got, headers, body = read_response(f)
        assert got == status
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert f.read() == b""  # the server closed its side
        error: str = json.loads(body)["error"]
        return error


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while exchange(port, request("GET", "/v2/health/ready"))[0][0] != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.02)


@pytest.fixture
def session(make_linear: Callable[[float], bytes]) -> ort.InferenceSession:
    return ort.InferenceSession(make_linear(1.0), providers=["CPUExecutionProvider"])


@pytest.fixture
def make_app(make_linear: Callable[[float], bytes]) -> Callable[..., Any]:
    model = make_linear(1.0)

    def make(batching: BatchingConfig | None = None, **options: Any) -> Any:
        return create_app([ServedModel("lin", 1, lambda: Predictor(model, intra_op_threads=1),
                                       batching=batching)], **options)

    return make


def expect_outputs(body: bytes, session: ort.InferenceSession, x: np.ndarray) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    y, z = session.run(["y", "z"], {"x": x})
    got = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
           for o in doc["outputs"]}
    np.testing.assert_allclose(got["y"], y, rtol=1e-6)
    np.testing.assert_allclose(got["z"], z, rtol=1e-6)
    return doc


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    [(status, _, body)] = exchange(port, request("GET", "/metrics"))
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def test_pipelined_requests_are_answered_in_order(make_app: Callable[..., Any],
                                                  session: ort.InferenceSession) -> None:
    rng = np.random.default_rng(1)
    x1, x2 = (rng.standard_normal((n, 4)).astype(np.float32) for n in (1, 3))
    with running(make_app()) as srv:
        raw = (request("POST", "/v2/models/lin/infer", infer_body(x1, "first"))
               + request("GET", "/v2/health/live")
               + request("POST", "/v2/models/lin/versions/1/infer", infer_body(x2, "second"))
               + request("GET", "/v2/models/lin"))
        answers = exchange(srv.port, raw, answers=4)
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert expect_outputs(answers[0][2], session, x1)["id"] == "first"
    assert json.loads(answers[1][2]) == {"live": True}
    assert expect_outputs(answers[2][2], session, x2)["id"] == "second"
    assert json.loads(answers[3][2])["name"] == "lin"
    for _, headers, _ in answers:
        assert headers["server"] == "lockgate"
        assert "date" in headers
        assert "connection" not in headers  # HTTP/1.1 keeps the connection


def test_chunked_body_after_100_continue(make_app: Callable[..., Any],
                                         session: ort.InferenceSession) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = infer_body(x)
    with running(make_app()) as srv, connect(srv.port) as sock:
        sock.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nhost: x\r\n"
                     b"transfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n")
        f = sock.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        for start in range(0, len(body), 50):
            chunk = body[start:start + 50]
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        status, headers, answer = read_response(f)
    assert status == 200
    assert headers["content-type"] == "application/json"
    expect_outputs(answer, session, x)


def test_http10_and_connection_close_end_the_connection(make_app: Callable[..., Any]) -> None:
    with running(make_app()) as srv:
        for raw in (request("GET", "/v2/health/live", version="1.0"),
                    request("GET", "/v2/health/live", headers="connection: close\r\n")):
            with connect(srv.port) as sock:
                sock.sendall(raw)
                f = sock.makefile("rb")
                status, headers, _ = read_response(f)
                assert (status, headers["connection"]) == (200, "close")
                assert f.read() == b""  # the server closed its side
        with connect(srv.port) as sock:  # keep-alive: two answers on one connection
            f = sock.makefile("rb")
            for _ in range(2):
                sock.sendall(request("GET", "/v2/health/live"))
                assert read_response(f)[0] == 200


def test_body_over_the_limit_is_413_counted_and_closed(make_app: Callable[..., Any]) -> None:
    big = infer_body(np.zeros((64, 4), np.float32))
    with running(make_app(max_request_bytes=512)) as srv:
        assert len(big) > 512
        for raw in (request("POST", "/v2/models/lin/infer", big),
                    b"POST /v2/models/lin/infer HTTP/1.1\r\nhost: x\r\n"
                    b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)):
            assert "exceeds 512 bytes" in refused_and_closed(srv.port, raw, 413)
        seen = metrics(srv.port)
    key = ("lockgate_request_failures_total",
           (("model", "lin"), ("reason", "too_large"), ("version", "1")))
    assert seen[key] == 2.0
    assert seen[("lockgate_requests_total", (("model", "lin"), ("version", "1")))] == 2.0


def test_malformed_requests_get_a_json_400_and_a_close(make_app: Callable[..., Any]) -> None:
    with running(make_app()) as srv:
        for raw in (b"NOT HTTP AT ALL\r\n\r\n",
                    b"GET /v2 HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n"):
            assert "malformed HTTP request" in refused_and_closed(srv.port, raw, 400)
        # the server still serves
        assert exchange(srv.port, request("GET", "/v2/health/live"))[0][0] == 200


def test_head_errors_and_routing_through_the_app(make_app: Callable[..., Any]) -> None:
    with running(make_app()) as srv:
        [(status, headers, body)] = exchange(srv.port, request("HEAD", "/v2"))
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 0
        answers = exchange(srv.port, request("POST", "/v2/models/nope/infer", b"{}")
                           + request("GET", "/v2/models/lin/infer")
                           + request("POST", "/v2/models/lin/infer", b"{oops")
                           + request("GET", "/v2/nowhere"), answers=4)
    assert [a[0] for a in answers] == [404, 405, 400, 404]
    for _, headers, body in answers:
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"]


def test_idle_keep_alive_connections_are_closed(make_app: Callable[..., Any]) -> None:
    with running(make_app(), keep_alive_s=0.2) as srv, connect(srv.port) as sock:
        sock.sendall(request("GET", "/v2/health/live"))
        f = sock.makefile("rb")
        assert read_response(f)[0] == 200
        sock.settimeout(30)
        assert f.read() == b""  # closed by the server once idle


def test_a_client_that_leaves_mid_request_harms_no_one(make_app: Callable[..., Any],
                                                       session: ort.InferenceSession) -> None:
    x = np.ones((1, 4), np.float32)
    with running(make_app(inline_below_s=0)) as srv:  # every request on a worker
        for _ in range(5):
            with connect(srv.port) as sock:
                sock.sendall(request("POST", "/v2/models/lin/infer", infer_body(x)))
        [(status, _, body)] = exchange(srv.port,
                                       request("POST", "/v2/models/lin/infer", infer_body(x)))
        assert status == 200
        expect_outputs(body, session, x)
        # the abandoned requests may still be finishing on other workers: none stays pending
        key = ("lockgate_pending_requests", (("model", "lin"), ("version", "1")))
        deadline = time.monotonic() + 30
        while metrics(srv.port)[key] != 0.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metrics(srv.port)[key] == 0.0


def test_small_models_run_inline_once_measured(make_app: Callable[..., Any],
                                               session: ort.InferenceSession) -> None:
    x = np.ones((2, 4), np.float32)
    infer = request("POST", "/v2/models/lin/infer", infer_body(x))
    for threshold, inline in ((1.0, True), (0.0, False)):
        app = make_app(inline_below_s=threshold)
        with running(app) as srv:
            for _, _, body in exchange(srv.port, infer * 3, answers=3):
                expect_outputs(body, session, x)
        [slot] = app.state.models.slots
        assert slot.cost.worker_s is not None  # the first request always runs on a worker
        assert (slot.cost.inline_s is not None) is inline


def test_run_cost_decides_where_requests_run() -> None:
    cost = RunCost()
    assert not cost.inline(0.001)  # never inline before a measure
    cost.ran_on_worker(0.0001)
    assert cost.inline(0.001)
    cost.ran_inline(0.05)  # slower on the loop than the worker measured: back to workers
    assert not cost.inline(0.001)
    for _ in range(RunCost.REPROBE):
        cost.ran_on_worker(0.0001)
    assert cost.inline(0.001)  # tried inline again after a while


def test_stop_lets_requests_in_progress_finish(make_app: Callable[..., Any],
                                               session: ort.InferenceSession) -> None:
    # a batched request waits out the queue delay (0.8 s) in the batcher; stop arrives meanwhile
    app = make_app(batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=800_000))
    srv = Running(app)
    try:
        wait_ready(srv.port)
        x = np.ones((1, 4), np.float32)
        with connect(srv.port) as sock:
            sock.sendall(request("POST", "/v2/models/lin/infer", infer_body(x)))
            time.sleep(0.2)
            [conn] = [c for c in srv.server.connections if c.busy]
            assert conn.paused_reading  # nothing more is read while an answer is pending
            stopping = asyncio.run_coroutine_threadsafe(srv.server.stop(), srv.loop)
            status, headers, body = read_response(sock.makefile("rb"))
        stopping.result(timeout=60)
    finally:
        srv.loop.call_soon_threadsafe(srv.loop.stop)
        srv.thread.join(timeout=10)
    assert (status, headers["connection"]) == (200, "close")
    expect_outputs(body, session, x)
    with pytest.raises(ConnectionRefusedError):
        connect(srv.port).close()  # no longer listening


def test_a_failed_startup_never_listens(make_linear: Callable[[float], bytes]) -> None:
    def refuse(name: str, payload: dict[str, Any]) -> None:
        if name == "serve.start":
            raise RuntimeError("audit store unreachable")

    model = make_linear(1.0)
    app = create_app([ServedModel("lin", 1, lambda: Predictor(model))], on_event=refuse)
    loop = asyncio.new_event_loop()
    try:
        server = HTTPServer(app, app.state.inference)
        with pytest.raises(ServeError, match="audit store unreachable"):
            loop.run_until_complete(server.start("127.0.0.1", 0))
        assert server.connections == set()
    finally:
        loop.close()


def test_access_log_names_the_request_never_its_headers(
        make_app: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lockgate.serve.access"), \
            running(make_app(), access_log=True) as srv:
        exchange(srv.port, request("GET", "/v2/health/live?probe=1",
                                   headers="authorization: Bearer lgt_secret_value\r\n"))
    lines = [r.getMessage() for r in caplog.records if r.name == "lockgate.serve.access"]
    assert any('"GET /v2/health/live?probe=1 HTTP/1.1" 200' in line for line in lines)
    assert not any("lgt_secret_value" in line for line in lines)
