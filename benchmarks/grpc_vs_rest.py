"""gRPC against REST on one `lockgate serve`: the same model, the same process, the same
inference service, two protocols.

Starts ``lockgate serve mlp@1 --grpc-port --workers 1`` (one process: ``--workers``) on
127.0.0.1, serving the MLP 64-256-256-10 (float32, batch 1, ONNX Runtime with one intra-op
thread), then measures in alternating rounds
(``--rounds``; this shared machine drifts by tens of percent between minutes), ``--seconds``
each, after a warm-up:

* REST: OIP JSON infer requests by ``wrk`` (a C load generator), ``--streams`` keep-alive
  connections on one wrk thread;
* gRPC: unary ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents`` (what
  tritonclient.grpc sends) by ``h2load`` (nghttp2's C HTTP/2 load generator), ``--streams``
  concurrent streams over ``--grpc-connections`` connections (default one, as a gRPC channel
  multiplexes), the request framed once, as gRPC frames it;
* live: unary ``ServerLive`` the same way — no inference at all, so what grpcio's own per-call
  work allows on this machine, the ceiling of the gRPC figure.

Both load generators are C, so neither protocol is measured through a Python client. h2load
does not read gRPC trailers: every answer is checked instead through the server's own
``/metrics`` (requests counted for the version, no failure) and one answer decoded and compared
with ONNX Runtime before the rounds. Prints requests/s per round, the medians and
``gRPC / REST`` round by round.

    .venv/bin/python benchmarks/grpc_vs_rest.py [--rounds 3] [--seconds 10] [--streams 32]

Needs ``wrk`` and ``h2load`` (Debian: ``apt-get install -y wrk nghttp2-client``). Not part of
``make test``.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hardening_cost import WRK_SCRIPT  # noqa: E402
from serve_overhead import build_mlp  # noqa: E402

from lockgate.serve.grpc.predict_v2_pb2 import ModelInferRequest, ModelInferResponse  # noqa: E402

METHOD = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


def _counted(port: int) -> tuple[float, float]:
    """Requests and failures the server counted for mlp@1."""
    text = _get(port, "/metrics")[1]
    found = [float(m) for m in re.findall(
        r'^lockgate_requests_total\{model="mlp",version="1"\} (\S+)$', text, re.M)]
    failed = sum(float(m) for m in re.findall(
        r'^lockgate_request_failures_total\{model="mlp",version="1"[^}]*\} (\S+)$', text, re.M))
    return (found[0] if found else 0.0), failed


def _grpc_request(x: np.ndarray) -> ModelInferRequest:
    req = ModelInferRequest(model_name="mlp", raw_input_contents=[x.tobytes()])
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    return req


def _check_grpc(port: int, model: Path, x: np.ndarray) -> None:
    """One gRPC answer, decoded and compared with ONNX Runtime."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD,
                                   request_serializer=ModelInferRequest.SerializeToString,
                                   response_deserializer=ModelInferResponse.FromString)
        resp = call(_grpc_request(x), timeout=30)
    got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(resp.outputs[0].shape)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def _wrk(port: int, connections: int, seconds: float, script: Path, body: Path) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s",
         str(script), f"http://127.0.0.1:{port}/v2/models/mlp/infer"],
        capture_output=True, text=True, env={**os.environ, "BODY_FILE": str(body)},
        check=True).stdout
    m = re.search(r"RESULT (\{.*\})", out)
    if m is None:
        raise SystemExit(f"wrk printed no result: {out}")
    result = json.loads(m.group(1))
    if result["errors"] or "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors against port {port}: {out}")
    return float(result["rps"])


def _h2load(port: int, connections: int, streams: int, seconds: float, frame: Path,
            method: str = METHOD) -> float:
    out = subprocess.run(
        ["h2load", "-t1", f"-c{connections}", f"-m{max(1, streams // connections)}",
         f"-D{seconds:g}", "-d", str(frame),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}{method}"],
        capture_output=True, text=True, check=True).stdout
    m = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    ok = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored", out)
    if m is None or ok is None:
        raise SystemExit(f"h2load printed no result: {out}")
    if int(ok.group(3)) or int(ok.group(4)):
        raise SystemExit(f"h2load saw failures against port {port}: {out}")
    return float(m.group(1))


def _serve(home: Path, model: Path, workers: int) -> tuple[subprocess.Popen[bytes], int, int]:
    env = {**os.environ, "LOCKGATE_USER": "bench"}
    subprocess.run([sys.executable, "-m", "lockgate", "--home", str(home), "register",
                    str(model), "--name", "mlp"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    rest, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "mlp@1", "--port",
         str(rest), "--grpc-port", str(grpc_port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _get(rest, "/v2/health/ready")[0] != 200:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the server never became ready")
        time.sleep(0.2)
    return proc, rest, grpc_port


def _run(args: argparse.Namespace, tmp: Path) -> None:
    model = tmp / "mlp.onnx"
    model.write_bytes(build_mlp())
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    body = tmp / "body.json"
    body.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                            "data": x.ravel().tolist()}]}))
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    message = _grpc_request(x).SerializeToString()
    frame = tmp / "frame.bin"
    frame.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    proc, rest, gport = _serve(tmp / "home", model, args.workers)
    try:
        _check_grpc(gport, model, x)
        empty = tmp / "empty.bin"
        empty.write_bytes(b"\0\0\0\0\0")  # ServerLiveRequest: no fields
        phases = {
            "REST": lambda s: _wrk(rest, args.streams, s, script, body),
            "gRPC": lambda s: _h2load(gport, args.grpc_connections, args.streams, s, frame),
            "live": lambda s: _h2load(gport, args.grpc_connections, args.streams, s, empty,
                                      LIVE),
        }
        for run in phases.values():
            run(3)  # warm-up
        figures: dict[str, list[float]] = {name: [] for name in phases}
        for r in range(args.rounds):
            order = list(phases)[r % 3:] + list(phases)[:r % 3]
            for name in order:
                before = _counted(rest)
                rps = phases[name](args.seconds)
                after = _counted(rest)
                if after[1] != before[1] or (after[0] <= before[0]) != (name == "live"):
                    raise SystemExit(f"{name}: the server counted {after[1] - before[1]:g} "
                                     "failures (or no request)")
                figures[name].append(rps)
                print(f"round {r + 1} {name:<4} {rps:9.0f} req/s", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    ratios = [g / r for g, r in zip(figures["gRPC"], figures["REST"], strict=True)]
    print(f"\n--workers {args.workers}; {args.streams} concurrent streams: "
          f"REST = wrk -t1 -c{args.streams} (OIP JSON), "
          f"gRPC = h2load -c{args.grpc_connections} (raw contents, unary ModelInfer); "
          f"{args.seconds:g} s per phase, {args.rounds} alternating rounds")
    print("(live: gRPC ServerLive, no inference: what grpcio itself answers per second)")
    print("| protocol | req/s (median) | rounds |")
    print("|---|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.0f} | "
              f"{', '.join(f'{v:.0f}' for v in values)} |")
    print(f"gRPC / REST: {statistics.median(ratios):.2f} (rounds: "
          f"{', '.join(f'{q:.2f}' for q in ratios)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--grpc-connections", type=int, default=1)
    p.add_argument("--workers", type=int, default=1,
                   help="lockgate serve --workers (with more than one, REST is spread over "
                        "them and gRPC is served by one)")
    args = p.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install -y {package})")
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-grpc-vs-rest-"))
    try:
        _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
