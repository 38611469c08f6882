"""The data plane against hostile clients, on real `lockgate serve` processes on 127.0.0.1:
tokens and roles on infer and capture, the bind rule off loopback, the decode budget under
concurrent huge bodies (memory bounded, small requests answered), and bad input that used to
answer 500 (deep JSON, too many dims, non-ASCII numbers in headers, paths and cursors)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx
from servers import lockgate_server

pytestmark = pytest.mark.slow

X = [[1.0, 2.0, 3.0, 4.0]]
GOOD = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                               "data": X}]}).encode()
_EXPECTED: dict[str, Any] = {}


def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
          timeout: float = 60) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body,
                     headers={"content-type": "application/json", **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = raw
        return r.status, {k.lower(): v for k, v in r.getheaders()}, doc
    finally:
        conn.close()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def _good_answer(port: int, headers: dict[str, str] | None = None) -> None:
    """A good infer request is answered, right, after whatever came before."""
    status, _, doc = _post(port, "/v2/models/m/versions/1/infer", GOOD, headers)
    assert status == 200, doc
    got = np.asarray(doc["outputs"][0]["data"], np.float32)
    np.testing.assert_allclose(got, _expected(), rtol=1e-6)


def _expected() -> np.ndarray:
    """What ONNX Runtime itself answers for X on the served model."""
    if "y" not in _EXPECTED:
        import onnxruntime as ort

        sess = ort.InferenceSession(linear_onnx().SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        _EXPECTED["y"] = sess.run(None, {"input": np.asarray(X, np.float32)})[0].ravel()
    return _EXPECTED["y"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("data-plane") / "home"
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m")
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[int]:
    with lockgate_server(home, "m@1") as (_, port):
        yield port


# -- bad input that used to answer 500 ---------------------------------------------------------

def _tensor(**over: Any) -> bytes:
    t = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": X, **over}
    return json.dumps({"inputs": [t]}).encode()


BAD_BODIES = {
    "json nested 3000 deep": b'{"inputs":' + b"[" * 3000 + b"]" * 3000 + b"}",
    "objects nested 3000 deep": b'{"parameters":' + b'{"a":' * 3000 + b"1" + b"}" * 3001,
    "data nested 900 deep": _tensor(data="@").replace(b'"@"', b"[" * 900 + b"1" + b"]" * 900),
    "65 dims": _tensor(shape=[1] * 65, data=[1.0]),
    "33 dims": _tensor(shape=[1] * 33, data=[1.0]),
    "a huge shape": _tensor(shape=[2**62, 2**62], data=[1.0]),
    "elements past the cap": _tensor(shape=[1 << 27], data=[1.0]),
    "a 5000-digit dim": b'{"inputs":[{"name":"input","shape":[' + b"9" * 5000
                        + b'],"datatype":"FP32","data":[1]}]}',
    "NaN nested deep": b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",'
                       b'"data":[NaN,1,2,3]}],"p":' + b"[" * 2000 + b"]" * 2000 + b"}",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_400_and_the_server_goes_on(server: int, body: bytes) -> None:
    status, _, doc = _post(server, "/v2/models/m/versions/1/infer", body)
    assert status == 400, doc
    assert isinstance(doc, dict)
    assert doc["error"]
    _good_answer(server)


BINARY_BODY = (json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 16}}]}).encode())


@pytest.mark.parametrize("value", [
    b"\xb2", "\u00b2".encode(), "\uff11\uff12".encode(), "\u0663".encode(), b"+5", b" ",
    b"9" * 5000, b"-1", b"5, 5"])
def test_header_numbers_take_ascii_digits_only(server: int, value: bytes) -> None:
    body = BINARY_BODY + np.asarray(X, np.float32).tobytes()
    status, _, doc = _post(server, "/v2/models/m/versions/1/infer", body,
                           {"inference-header-content-length": value.decode("latin-1"),
                            "content-type": "application/octet-stream"})
    assert status == 400, doc
    _good_answer(server)


def test_a_repeated_binary_header_is_refused(server: int) -> None:
    body = BINARY_BODY + np.asarray(X, np.float32).tobytes()
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    conn.putrequest("POST", "/v2/models/m/versions/1/infer")
    conn.putheader("content-length", str(len(body)))
    conn.putheader("inference-header-content-length", str(len(BINARY_BODY)))
    conn.putheader("inference-header-content-length", str(len(BINARY_BODY)))
    conn.endheaders(body)
    r = conn.getresponse()
    assert r.status == 400, r.read()
    conn.close()
    status, _, doc = _post(server, "/v2/models/m/versions/1/infer", body,
                           {"inference-header-content-length": str(len(BINARY_BODY))})
    assert status == 200, doc


def test_raw_non_ascii_in_a_path_is_a_4xx(server: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/m/versions/\xc2\xb2/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-length: %d\r\n\r\n" % len(GOOD) + GOOD)
        status = int(sock.recv(65536).split(b" ", 2)[1])
    assert status in (400, 404)
    _good_answer(server)


@pytest.mark.parametrize("path", [
    "/v2/models/m/versions/%C2%B2/infer",
    "/v2/models/m/versions/" + "9" * 5000 + "/infer", "/v2/models/" + "x" * 20000 + "/infer"])
def test_unicode_or_huge_numbers_in_paths_are_404(server: int, path: str) -> None:
    status, _, doc = _post(server, path, GOOD)
    assert status == 404, doc
    assert len(json.dumps(doc)) < 1000  # what the client sent is not echoed whole
    _good_answer(server)


@pytest.mark.parametrize("cursor", ["%C2%B2", "%EF%BC%91", "9" * 5000, "-1", "1.5"])
def test_capture_cursors_take_ascii_digits_only(server: int, cursor: str) -> None:
    status, doc = _get(server, f"/v2/models/m/versions/1/capture?rows_since={cursor}")
    assert status == 400, doc
    status, _ = _get(server, "/v2/models/m/versions/1/capture?rows_since=0")
    assert status == 200


# -- the decode budget ---------------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _server_pid(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    text = out.stdout
    if "pid=" not in text:  # no ss: find the listening process through /proc
        raise AssertionError(f"cannot find the server's pid: {out.stderr or text!r}")
    return int(text.split("pid=")[1].split(",")[0])


RSS_BOUND_MB = 1024  # docs/security.md: under 1 GiB with the default decode budget


@pytest.mark.parametrize("layer", ["lockgate", "uvicorn"])
def test_twelve_concurrent_60mb_bodies_stay_within_the_memory_bound(
        home: Path, layer: str) -> None:
    rows = 60_000_000 // 2 // 4  # "1," per element: 60 MB of JSON
    big = (b'{"inputs":[{"name":"input","shape":[%d,4],"datatype":"FP32","data":['
           % rows + b",".join([b"1"] * (rows * 4)) + b"]}]}")
    with lockgate_server(home, "m@1", "--http", layer) as (_, port):
        pid = _server_pid(port)
        peak = [_rss_mb(pid)]
        results: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(_rss_mb(pid))
                time.sleep(0.05)

        def send() -> None:
            try:
                status, headers, _ = _post(port, "/v2/models/m/versions/1/infer", big,
                                           timeout=300)
            except (ConnectionError, http.client.HTTPException) as exc:
                status, headers = -1, {"error": repr(exc)}
            results.append(status)
            if status == 503:
                assert headers.get("retry-after") == "1"

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        senders = [threading.Thread(target=send) for _ in range(12)]
        for t in senders:
            t.start()
        time.sleep(1.0)
        _good_answer(port)  # small requests keep being answered meanwhile
        for t in senders:
            t.join(600)
        done.set()
        watcher.join()
        _good_answer(port)
    assert len(results) == 12
    assert set(results) <= {200, 503}, results  # every client reads its answer
    assert results.count(200) >= 1, results
    assert results.count(503) >= 1, results
    assert max(peak) < RSS_BOUND_MB, f"peak RSS {max(peak):.0f} MB"


# -- tokens and roles ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("data-plane-auth") / "home"
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m", seed=1)
        found = {}
        for user, roles in {"caller": ["inference"], "watcher": ["monitoring"],
                            "reader": ["viewer"]}.items():
            lg.add_user(user, roles)
            found[user] = lg.create_token(user)[1]
    (home / "lockgate.toml").write_text(
        '[gates]\n"*" = ["seeds_recorded"]\n[serve]\nauth = "token"\n')
    return home, found


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("layer", ["lockgate", "uvicorn"])
def test_infer_and_capture_need_tokens_with_their_roles(
        tokens: tuple[Path, dict[str, str]], layer: str) -> None:
    home, t = tokens
    infer = "/v2/models/m/versions/1/infer"
    capture = "/v2/models/m/versions/1/capture"
    with lockgate_server(home, "m@1", "--http", layer) as (_, port):
        assert _post(port, infer, GOOD)[0] == 401
        assert _post(port, infer, GOOD, {"authorization": "Basic dXNlcjpwYXNz"})[0] == 401
        assert _post(port, infer, GOOD, _bearer("lgt_000000000000_" + "a" * 64))[0] == 401
        assert _post(port, infer, GOOD, _bearer(t["reader"]))[0] == 403
        assert _post(port, infer, GOOD, _bearer(t["watcher"]))[0] == 403
        _good_answer(port, _bearer(t["caller"]))
        assert _get(port, capture)[0] == 401
        assert _get(port, capture, _bearer(t["caller"]))[0] == 403
        status, snap = _get(port, capture, _bearer(t["watcher"]))
        assert status == 200
        assert snap["requests"]["count"] >= 1
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/m",
                     "/v2/models/m/versions/1/ready", "/v2", "/metrics"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status == 200, path  # probes and scrapers stay open
            conn.close()


def test_capture_is_open_on_a_home_without_users(server: int) -> None:
    assert _post(server, "/v2/models/m/versions/1/infer", GOOD)[0] == 200
    assert _get(server, "/v2/models/m/versions/1/capture")[0] == 200


def _serve(home: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lockgate", "--home", str(home), "serve",
                           "m@1", "--port", "0", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_a_bind_off_loopback_needs_users_or_an_explicit_flag(home: Path) -> None:
    done = _serve(home, "--host", "0.0.0.0")
    assert done.returncode == 2, done.stderr
    assert "no users" in done.stderr
    assert "--insecure-no-auth" in done.stderr
    assert "Traceback" not in done.stderr
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "--home", str(home), "serve",
                             "m@1", "--port", "0", "--host", "0.0.0.0", "--insecure-no-auth"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]
        assert any("without authentication" in line for line in lines), lines
        assert any("serving m@1 on http://0.0.0.0:" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_token_auth_on_a_home_without_users_is_refused(home: Path) -> None:
    done = _serve(home, env={"LOCKGATE_SERVE_AUTH": "token"})
    assert done.returncode != 0
    assert "needs users with the inference role" in done.stderr
    assert "Traceback" not in done.stderr


def test_monitor_sends_its_token(tokens: tuple[Path, dict[str, str]]) -> None:
    home, t = tokens
    with Lockgate.open(home) as lg:
        lg.promote("m@1", "production")
        lg.deploy("m@1")
    with lockgate_server(home) as (_, port):
        for _ in range(3):
            _good_answer(port, _bearer(t["caller"]))

        def monitor(**env: str) -> subprocess.CompletedProcess[str]:
            clean = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_TOKEN")}
            return subprocess.run(
                [sys.executable, "-m", "lockgate", "--home", str(home), "monitor", "m",
                 "--url", f"http://127.0.0.1:{port}", "--json"],
                capture_output=True, text=True, timeout=120, env={**clean, **env})

        refused = monitor()
        assert refused.returncode != 0
        assert "answered 401" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert "answered 403" in monitor(LOCKGATE_TOKEN=t["caller"]).stderr
        ok = monitor(LOCKGATE_TOKEN=t["watcher"])
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["slo"]["requests"] >= 3


@pytest.mark.parametrize("host", [b"evil.example", b"evil.example:8080", b"127.0.0.1.evil.example"])
def test_a_zero_config_server_answers_only_loopback_names(server: int, host: bytes) -> None:
    """A page re-pointed by DNS to 127.0.0.1 sends its own name as Host: refused (421)."""
    import socket

    for path in (b"/v2/models/m/versions/1/capture", b"/v2/health/ready"):
        with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (path, host))
            assert sock.recv(65536).split(b" ", 2)[1] == b"421"
    status, _, doc = _post(server, "/v2/models/m/versions/1/infer", GOOD,
                           {"host": host.decode()})
    assert status == 421, doc
    _good_answer(server, {"host": f"localhost:{server}"})
