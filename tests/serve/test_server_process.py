"""A real server process on 127.0.0.1 — lockgate's own HTTP layer and uvicorn — driven over
HTTP with httpx."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.slow

SERVER_SCRIPT = """
import json, sys, threading
from pathlib import Path

from lockgate.runtime.predictor import Predictor
from lockgate.serve import ServedModel, create_app, run_server

lock = threading.Lock()

def say(*parts):
    with lock:
        sys.stdout.write(" ".join(parts) + "\\n")
        sys.stdout.flush()

def on_event(name, payload):
    say("EVENT", json.dumps([name, payload]))

model = Path(sys.argv[1]).read_bytes()
app = create_app(
    [ServedModel("lin", 1, lambda: Predictor(model, intra_op_threads=1))], on_event=on_event
)
try:
    run_server(app, "127.0.0.1", 0, http=sys.argv[2],
               on_started=lambda host, port: say("LISTENING", host, str(port)))
except KeyboardInterrupt:
    say("INTERRUPTED")
"""

STARTUP_SECONDS = 120.0


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix: str) -> str:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                raise AssertionError(f"server exited before printing {prefix!r}: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def stop(self, sig: int) -> list[str]:
        """Signal the server, wait for it to exit, and return every line it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                self.seen.append(line)
        return self.seen

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [tuple(json.loads(x.split(" ", 1)[1])) for x in self.seen if x.startswith("EVENT ")]


@pytest.fixture
def model_file(tmp_path: Path, make_linear: Callable[[float], bytes]) -> Path:
    path = tmp_path / "lin.onnx"
    path.write_bytes(make_linear(1.0))
    return path


@pytest.fixture(params=["lockgate", "uvicorn"])
def start_server(request: pytest.FixtureRequest, tmp_path: Path,
                 model_file: Path) -> Iterator[Callable[[], ServerProcess]]:
    script = tmp_path / "serve_lin.py"
    script.write_text(SERVER_SCRIPT)
    started: list[ServerProcess] = []
    stderr = (tmp_path / "server.stderr").open("w")

    def start() -> ServerProcess:
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, str(script), str(model_file), request.param],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        server = ServerProcess(proc)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.returncode is None:
            server.stop(signal.SIGKILL)
    stderr.close()


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def infer(client: httpx.Client, x: np.ndarray, request_id: str) -> dict[str, Any]:
    body = {
        "id": request_id,
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ],
    }
    r = client.post("/v2/models/lin/infer", json=body)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    assert doc["id"] == request_id
    return doc


def check(doc: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    assert [o["name"] for o in doc["outputs"]] == list(expected)
    for out in doc["outputs"]:
        got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_array_equal(got, expected[out["name"]])


def test_a_real_server_serves_onnx_runtime_results(
    start_server: Callable[[], ServerProcess], model_file: Path
) -> None:
    session = ort.InferenceSession(model_file.read_bytes(), providers=["CPUExecutionProvider"])
    server = start_server()
    _, host, port = server.wait_line("LISTENING").split()
    assert host == "127.0.0.1"
    rng = np.random.default_rng(3)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        wait_ready(client)
        assert client.get("/v2/models/lin").json()["inputs"][0]["shape"] == [-1, 4]
        for batch in (5, 1):
            x = rng.standard_normal((batch, 4)).astype(np.float32)
            expected = dict(zip(["y", "z"], session.run(["y", "z"], {"x": x}), strict=True))
            check(infer(client, x, f"batch-{batch}"), expected)
        r = client.post("/v2/models/lin/infer", content=b"{oops")
        assert r.status_code == 400
        assert "not valid JSON" in r.json()["error"]

        # concurrent clients, each on its own keep-alive connection
        xs = [rng.standard_normal((i % 4 + 1, 4)).astype(np.float32) for i in range(48)]

        def one(i: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                for j in range(i, len(xs), 8):
                    ys = session.run(["y", "z"], {"x": xs[j]})
                    check(infer(c, xs[j], f"r{j}"), dict(zip(["y", "z"], ys, strict=True)))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(8)))

    lines = server.stop(signal.SIGINT)
    assert server.proc.returncode == 0, lines
    assert lines[-1] == "INTERRUPTED"
    names = [name for name, _ in server.events()]
    assert names == ["serve.start", "model.ready", "serve.stop"]
    assert server.events()[-1][1]["models"] == [{"model": "lin", "version": 1, "state": "ready"}]


def test_sigterm_shuts_down_gracefully(start_server: Callable[[], ServerProcess]) -> None:
    server = start_server()
    _, _, port = server.wait_line("LISTENING").split()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        wait_ready(client)
    server.stop(signal.SIGTERM)
    # both re-raise the signal after their graceful shutdown, as uvicorn's CLI does
    assert server.proc.returncode == -signal.SIGTERM
    assert [name for name, _ in server.events()][-1] == "serve.stop"
