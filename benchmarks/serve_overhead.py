"""What the OIP v2 server costs on top of a bare ONNX Runtime session.

Measures, in one run and on one machine:

1. raw: ``InferenceSession.run`` in this process, batch 1, back to back;
2. for reference, the HTTP floor: ``GET /v2/health/live`` on the server, 1 client;
3. the server (`lockgate.serve.run_server`: its own HTTP layer on 127.0.0.1, in a subprocess)
   with 1 keep-alive client;
4. the same server with ``--clients`` concurrent keep-alive clients;

and prints requests/s, latency percentiles and each rate as a ratio of the raw rate. The model
is an MLP 64-256-256-10 (float32, dynamic batch) built with onnx.helper from seeded random
weights, so only lockgate's core dependencies are needed. Clients are raw HTTP/1.1 over asyncio
streams in this process (one connection each), so the client side costs as little as possible.

    .venv/bin/python benchmarks/serve_overhead.py [--seconds 6] [--clients 32]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import contextlib
import itertools
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

T = TypeVar("T")

LAYERS = (64, 256, 256, 10)
MODEL = "mlp"
PATH = f"/v2/models/{MODEL}/infer"


def build_mlp(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    prev = "x"
    last = len(LAYERS) - 2
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(LAYERS)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        if i == last:
            nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], ["y"]))
        else:
            nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", LAYERS[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", LAYERS[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session(model: bytes, threads: int) -> ort.InferenceSession:
    # the same options lockgate.runtime.predictor.Predictor uses
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3 if self.latencies else float("nan")


def bench_raw(model: bytes, threads: int, x: np.ndarray, seconds: float) -> Phase:
    sess = session(model, threads)
    feeds = {"x": x}
    for _ in range(200):
        sess.run(None, feeds)
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    stop = start + seconds
    now = start
    while now < stop:
        sess.run(None, feeds)
        t = clock()
        lat.append(t - now)
        now = t
    return Phase("raw session.run (in-process)", len(lat), now - start, lat)


# --- the server side ----------------------------------------------------------------------------


def serve(model_path: str, threads: int, workers: int | None, capture_window: int = 5000
          ) -> None:
    from lockgate.runtime.predictor import Predictor
    from lockgate.serve import ServedModel, create_app, run_server

    model = Path(model_path).read_bytes()
    app = create_app([ServedModel(MODEL, 1, lambda: Predictor(model, intra_op_threads=threads))],
                     workers=workers, capture_window=capture_window)

    def started(host: str, port: int) -> None:
        print(f"LISTENING {port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):  # SIGINT ends the run
        run_server(app, "127.0.0.1", 0, on_started=started)


# --- the client side ----------------------------------------------------------------------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def wait_ready(port: int, limit: float = 60.0) -> None:
    conn = await Conn.open(port)
    deadline = time.monotonic() + limit
    try:
        while (await conn.request(http_request("GET", "/v2/health/ready")))[0] != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def drive(port: int, raw: bytes, clients: int, seconds: float, name: str) -> Phase:
    conns = [await Conn.open(port) for _ in range(clients)]

    async def warm(conn: Conn) -> None:
        for _ in range(20):
            assert (await conn.request(raw))[0] == 200

    # every connection (and the server's worker threads) at once, so none sits idle long
    # enough for the server's keep-alive timeout to close it
    await asyncio.gather(*(warm(c) for c in conns))
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    stop = start + seconds

    async def loop(conn: Conn) -> None:
        now = clock()
        while now < stop:
            status, body = await conn.request(raw)
            if status != 200:
                raise SystemExit(f"server answered {status}: {body[:200]!r}")
            t = clock()
            lat.append(t - now)
            now = t

    await asyncio.gather(*(loop(c) for c in conns))
    elapsed = clock() - start
    for conn in conns:
        await conn.close()
    return Phase(name, len(lat), elapsed, lat)


def infer_body(x: np.ndarray) -> bytes:
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


async def bench_server(
    port: int, x: np.ndarray, expected: np.ndarray, clients: int, seconds: float
) -> list[Phase]:
    await wait_ready(port)
    raw = http_request("POST", PATH, infer_body(x))
    conn = await Conn.open(port)
    status, answer = await conn.request(raw)
    await conn.close()
    assert status == 200, answer
    got = np.asarray(json.loads(answer)["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(got, expected.ravel(), rtol=1e-5, atol=1e-6)
    floor = http_request("GET", "/v2/health/live")
    return [
        await drive(port, floor, 1, seconds / 2, "  (GET /v2/health/live, 1 client)"),
        await drive(port, raw, 1, seconds, "server, 1 client"),
        await drive(port, raw, clients, seconds, f"server, {clients} clients"),
    ]


@contextlib.contextmanager
def spawn_server(path: Path, threads: int, workers: int | None = None,
                 capture_window: int = 5000) -> Iterator[tuple[int, int]]:
    """This script's server in a child process; yields its port and pid, stops it with SIGINT
    (a graceful shutdown) and kills it if that hangs."""
    cmd = [sys.executable, __file__, "--serve", str(path), "--intra-op-threads", str(threads),
           "--capture-window", str(capture_window)]
    if workers:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("LISTENING"):
            raise SystemExit(f"the server did not start: {line!r}")
        yield int(line.split()[1]), proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """uvloop when it is there (it comes with uvicorn[standard]), as in the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=32, help="clients in the last phase")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=1,
        help="ORT intra-op threads, raw and server alike (0: ORT's default, one per core)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server worker threads (default: CPUs + 4, at most 32)",
    )
    parser.add_argument("--capture-window", type=int, default=5000,
                        help="rows kept per version for drift monitors (0: capture off)")
    parser.add_argument("--serve", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.intra_op_threads, args.workers, args.capture_window)
        return

    model = build_mlp()
    x = np.random.default_rng(1).standard_normal((1, LAYERS[0])).astype(np.float32)
    expected = session(model, args.intra_op_threads).run(None, {"x": x})[0]
    raw = bench_raw(model, args.intra_op_threads, x, args.seconds)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        path.write_bytes(model)
        with spawn_server(path, args.intra_op_threads, args.workers,
                          args.capture_window) as (port, _pid):
            phases = run_async(bench_server(port, x, expected, args.clients, args.seconds))

    print(
        f"lockgate serve overhead: MLP {'-'.join(map(str, LAYERS))} float32, batch 1, "
        f"{args.seconds:g} s per phase, ORT intra-op threads {args.intra_op_threads or 'default'}"
    )
    print(
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, "
        f"starlette {version('starlette')}, uvicorn {version('uvicorn')}"
    )
    print(f"server: lockgate's HTTP layer on 127.0.0.1, {args.workers or 'default'} infer workers")
    print()
    print(f"{'phase':<36}{'requests/s':>12}{'vs raw':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for phase in [raw, *phases]:
        print(
            f"{phase.name:<36}{phase.rate:>12.0f}{phase.rate / raw.rate:>9.3f}"
            f"{phase.pct(50):>9.3f}{phase.pct(99):>9.3f}"
        )
    one = phases[1]
    print()
    print(
        f"server cost per request at 1 client: {(1 / one.rate - 1 / raw.rate) * 1e6:.0f} us "
        f"(HTTP floor, a no-op GET: {1e6 / phases[0].rate:.0f} us)"
    )


if __name__ == "__main__":
    main()
