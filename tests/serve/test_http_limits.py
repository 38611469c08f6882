"""HTTP limits and protocol rules, against real `lockgate serve` processes on 127.0.0.1 (both
HTTP layers: lockgate's own and uvicorn), over raw sockets."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx

pytestmark = pytest.mark.slow

LIMITS = """
[serve]
head_timeout_s = 1
body_timeout_s = 1
"""
LAYERS = ["lockgate", "uvicorn"]
CAP = 520
SERVER_ENV = {"LOCKGATE_SERVE_MAX_CONNECTIONS": str(CAP), "LOCKGATE_SERVE_KEEP_ALIVE_S": "3"}
X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]], np.float32)


@dataclass
class Server:
    port: int
    pid: int
    proc: subprocess.Popen[str]


def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with model m@1 and LIMITS, made once per test session (registering is slow)."""
    home = tmp_path_factory.getbasetemp() / "http-limits" / "home"
    if (home / "ready").exists():
        return home
    home.mkdir(parents=True)
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["parity"]\n' + LIMITS)
    env_user = os.environ.get("LOCKGATE_USER")
    os.environ["LOCKGATE_USER"] = "tester"
    try:
        with Lockgate.open(home) as lg:
            lg.register(linear_onnx(), name="m")
    finally:
        if env_user is None:
            os.environ.pop("LOCKGATE_USER", None)
        else:
            os.environ["LOCKGATE_USER"] = env_user
    (home / "ready").touch()
    return home


@contextmanager
def serving(home: Path, layer: str, **env: str) -> Iterator[Server]:
    """`lockgate serve m@1` with ``layer``; yields once it answers ready."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    # one process: the connection cap and the memory figures are one worker's
    full_env.update(ORT_DISABLE_TELEMETRY="1", LOCKGATE_USER="tester",
                    LOCKGATE_SERVE_WORKERS="1", **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "m@1", "--port", "0",
         "--http", layer], stderr=subprocess.PIPE, text=True, env=full_env)
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = proc.stderr.readline()
            assert line, "server exited"
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v2", line):
                port = int(m.group(1))
        threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                         daemon=True).start()
        deadline = time.monotonic() + 60
        while status_of(port, b"GET /v2/health/ready HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n") != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.05)
        yield Server(port, proc.pid, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


def connect(port: int, timeout: float = 15.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer (status, headers, body); (0, {}, b"") when the connection closed first."""
    f = sock.makefile("rb")
    try:
        status_line = f.readline()
    except ConnectionResetError:
        return 0, {}, b""
    if not status_line:
        return 0, {}, b""
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return int(status_line.split()[1]), headers, f.read(length) if length else b""


def status_of(port: int, raw: bytes) -> int:
    try:
        with connect(port, 5) as sock:
            sock.sendall(raw)
            return read_answer(sock)[0]
    except OSError:
        return 0


def closed(sock: socket.socket, within: float = 15.0) -> bytes:
    """Everything the server still sends until it closes (within ``within`` seconds)."""
    sock.settimeout(within)
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def send_in_background(sock: socket.socket, chunks: Iterator[bytes]) -> threading.Thread:
    def run() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped listening to us: what the test checks

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def infer_request(target: bytes = b"/v2/models/m/infer", host: bytes = b"127.0.0.1",
                  extra: bytes = b"") -> bytes:
    body = json.dumps({"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32",
                                   "data": X.ravel().tolist()}]}).encode()
    return (b"POST %s HTTP/1.1\r\nhost: %s\r\n%scontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (target, host, extra, len(body), body))


EXPECTED = ort.InferenceSession(linear_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]


def assert_infers(port: int, raw: bytes | None = None) -> None:
    """A good infer request is answered with the model's output."""
    with connect(port) as sock:
        sock.sendall(raw or infer_request())
        status, _, body = read_answer(sock)
    assert status == 200, body
    [out] = json.loads(body)["outputs"]
    np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]),
                               EXPECTED, rtol=1e-5)


def refused(sock: socket.socket, status: int) -> str:
    """The next answer is a JSON error with ``status`` and the server then closes."""
    got, headers, body = read_answer(sock)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    closed(sock)
    error: str = json.loads(body)["error"]
    return error


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text)[1])  # type: ignore[index]


@pytest.fixture(scope="module", params=LAYERS)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(shared_home(tmp_path_factory), request.param, **SERVER_ENV) as srv:
        yield srv


def test_a_header_line_that_never_ends_is_431_and_memory_stays_bounded(server: Server) -> None:
    before = rss_kib(server.pid)
    sock = connect(server.port)
    with sock:
        head = b"POST /v2/models/m/infer HTTP/1.1\r\nhost: 127.0.0.1\r\nx-endless: "
        sender = send_in_background(sock, iter([head] + [b"a" * 65536] * 512))  # 32 MiB
        assert_infers(server.port)  # another connection is served meanwhile
        assert "exceed 65536 bytes" in refused(sock, 431)
        sender.join(timeout=30)
    assert rss_kib(server.pid) - before < 16 * 1024  # half of what was sent
    assert_infers(server.port)


def test_200000_headers_are_431(server: Server) -> None:
    with connect(server.port) as sock:
        raw = (b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"a: b\r\n" * 200_000
               + b"\r\n")
        sender = send_in_background(sock, iter([raw[i:i + 65536]
                                                for i in range(0, len(raw), 65536)]))
        refused(sock, 431)
        sender.join(timeout=30)
    with connect(server.port) as sock:  # under the byte limit, over the count
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"a: b\r\n" * 101
                     + b"\r\n")
        assert "more than 100 header fields" in refused(sock, 431)
    assert_infers(server.port)


def test_a_long_request_line_is_never_echoed(server: Server) -> None:
    with connect(server.port) as sock:
        sender = send_in_background(sock, iter([b"GET /" + b"a" * 100_000 +
                                                b" HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"]))
        status, _, body = read_answer(sock)
        sender.join(timeout=30)
    assert status == 431
    assert len(body) < 1024
    name = b"b" * 3000  # under the head limit: the answer names it, cut short
    for raw in (infer_request(b"/v2/models/%s/infer" % name),
                b"GET /v2/models/%s HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n" % name):
        with connect(server.port) as sock:
            sock.sendall(raw)
            status, _, body = read_answer(sock)
        assert status == 404
        assert len(body) < 1024
        assert "b" * 200 + "…" in json.loads(body)["error"]


def test_slowloris_connections_are_closed_after_the_head_timeout(server: Server) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: " + b"z" * 100
    socks = [connect(server.port) for _ in range(500)]
    sel = selectors.DefaultSelector()
    answers: dict[socket.socket, bytes] = {}
    try:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        sent = 0
        while len(answers) < len(socks):
            assert time.monotonic() < deadline, f"{len(socks) - len(answers)} still open"
            for s in socks:  # one byte a second on each connection
                if s not in answers and sent < len(head):
                    with suppress(OSError):
                        s.send(head[sent:sent + 1])
            sent += 1
            end = time.monotonic() + 1.0
            while (left := end - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    s = key.fileobj  # type: ignore[assignment]
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    answers[s] = answers.get(s, b"") + data
                    if not data:
                        sel.unregister(s)
        assert sent <= 12  # closed after about the head timeout (1 s), not after the head
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers.values())
    finally:
        for s in socks:
            s.close()
    assert_infers(server.port)


def test_100_continue_only_within_the_body_limit(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nexpect: 100-continue\r\n"
                     b"host: 127.0.0.1\r\ncontent-length: 1000000000\r\n"
                     b"content-type: application/json\r\n\r\n")
        assert "exceeds" in refused(sock, 413)  # and no 100 Continue before it
    raw = infer_request(extra=b"expect: 100-continue\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    with connect(server.port) as sock:
        sock.sendall(head + b"\r\n\r\n")
        f = sock.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        sock.sendall(body)
        assert read_answer(sock)[0] == 200


def test_http11_without_host_is_400_and_other_versions_505(server: Server) -> None:
    for raw, status in ((b"GET /v2/health/live HTTP/1.1\r\n\r\n", 400),
                        (b"GET /v2/health/live HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400),
                        (b"GET /v2/health/live HTTP/2.0\r\nhost: 127.0.0.1\r\n\r\n", 505)):
        with connect(server.port) as sock:
            sock.sendall(raw)
            assert refused(sock, status)
    with connect(server.port) as sock:  # HTTP/1.0 needs no Host
        sock.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        assert read_answer(sock)[0] == 200


def test_absolute_form_targets_are_routed_by_their_path(server: Server) -> None:
    assert_infers(server.port, infer_request(b"http://127.0.0.1:8080/v2/models/m/infer",
                                             host=b"ignored.example"))
    with connect(server.port) as sock:
        sock.sendall(b"GET http://localhost/v2/health/live?x=1 HTTP/1.1\r\nhost: y\r\n\r\n")
        status, _, body = read_answer(sock)
    assert (status, json.loads(body)) == (200, {"live": True})


def test_a_body_that_stops_arriving_is_408(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"inp")
        started = time.monotonic()
        assert "too slowly" in refused(sock, 408)
    assert time.monotonic() - started < 15  # bounded wait: the server gave up on its own
    assert_infers(server.port)


def test_connections_beyond_the_cap_are_closed_at_once(server: Server) -> None:
    time.sleep(0.5)  # connections of earlier checks are gone
    socks = [connect(server.port) for _ in range(CAP + 10)]
    try:
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        shut = set()
        end = time.monotonic() + 1.0  # well within the keep-alive time (3 s)
        while (left := end - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                shut.add(key.fileobj)
                sel.unregister(key.fileobj)
        # those beyond the cap (and only they) were closed at once, without an answer
        assert 10 <= len(shut) <= 10 + 5
        assert all(closed(s, 1) == b"" for s in shut)  # type: ignore[arg-type]
        kept = [s for s in socks if s not in shut]
        kept[0].sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert read_answer(kept[0])[0] == 200
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while status_of(server.port, b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n") != 200:
        assert time.monotonic() < deadline, "no connection accepted below the cap"
        time.sleep(0.05)
    assert_infers(server.port)


def test_a_connection_that_sends_nothing_is_closed_after_keep_alive(server: Server) -> None:
    with connect(server.port) as sock:
        assert closed(sock, 15) == b""  # closed by the server once idle (keep_alive_s = 3)
