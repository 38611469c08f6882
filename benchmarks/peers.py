"""lockgate against the servers teams use today, on the same model and the same box.

Servers, each on 127.0.0.1 in its own process, all serving the MLP 64-256-256-10 (float32,
batch 1, ONNX Runtime with 1 intra-op thread where the server lets us choose):

* bare:     uvicorn + Starlette + ONNX Runtime, a handler that parses OIP JSON, runs, answers;
* lockgate: ``lockgate.serve`` (OIP v2, signature-free ServedModel, its own HTTP layer,
            default settings);
* mlflow:   ``mlflow models serve`` on the model saved with ``mlflow.onnx`` (env-manager local);
* bentoml:  a ``@bentoml.service`` calling ONNX Runtime.

Peers install into their own venvs under ``benchmarks/.peers/`` (git-ignored) with
``--setup``; a peer whose venv is missing is skipped and said so. The load generator is the
bounded asyncio client of ``serve_overhead.py`` (one keep-alive connection per client); each
phase runs ``--seconds``. Prints requests/s, p50 and p99 at 1 and ``--clients`` connections,
and lockgate's throughput as a ratio of each other server's in the same run. The bare handler
and lockgate, the closest pair, are measured alternately ``--rounds`` times and compared round by
round (this shared 2-CPU machine drifts by tens of percent between minutes); medians are
reported.

    .venv/bin/python benchmarks/peers.py --setup          # once: create the peer venvs
    .venv/bin/python benchmarks/peers.py [--seconds 6] [--clients 32] [--rounds 3]

Not part of ``make test``.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import json
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
sys.path.insert(0, str(HERE))

from serve_overhead import Conn, Phase, build_mlp, drive, http_request, run_async  # noqa: E402

PEER_PACKAGES = {
    "mlflow": ["mlflow", "onnx", "onnxruntime"],
    "bentoml": ["bentoml", "onnxruntime"],
}

BARE = textwrap.dedent("""
    import json, sys
    import numpy as np, onnxruntime as ort, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
    async def infer(request):
        doc = json.loads(await request.body())
        t = doc["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        y = sess.run(None, {"x": x})[0]
        out = {"model_name": "mlp", "outputs": [{"name": "y", "datatype": "FP32",
               "shape": list(y.shape), "data": y.ravel().tolist()}]}
        return Response(json.dumps(out), media_type="application/json")
    async def ready(request):
        return Response("{}", media_type="application/json")
    app = Starlette(routes=[Route("/v2/models/mlp/infer", infer, methods=["POST"]),
                           Route("/v2/health/ready", ready)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")

LOCKGATE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lockgate.runtime.predictor import Predictor
    from lockgate.serve import ServedModel, create_app, run_server
    model = Path(sys.argv[1]).read_bytes()
    app = create_app([ServedModel("mlp", 1, lambda: Predictor(model, intra_op_threads=1))])
    run_server(app, "127.0.0.1", int(sys.argv[2]))
""")

MLFLOW = textwrap.dedent("""
    import os, subprocess, sys, tempfile
    import onnx, mlflow.onnx
    where = os.path.join(tempfile.mkdtemp(), "model")
    mlflow.onnx.save_model(onnx.load(sys.argv[1]), where)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "models", "serve", "-m", where,
             "--env-manager", "local", "--host", "127.0.0.1", "--port", sys.argv[2]])
""")

BENTO = textwrap.dedent("""
    import numpy as np, onnxruntime as ort, bentoml, os
    PATH = os.environ["PEER_MODEL"]
    @bentoml.service(workers=1)
    class MLP:
        def __init__(self) -> None:
            opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
            self.sess = ort.InferenceSession(PATH, opts, providers=["CPUExecutionProvider"])
        @bentoml.api
        def predict(self, x: list[list[float]]) -> list[list[float]]:
            return self.sess.run(None, {"x": np.asarray(x, np.float32)})[0].tolist()
""")


@dataclass
class Server:
    name: str
    python: Path
    ready_path: str
    infer_path: str
    body: Callable[[np.ndarray], bytes]
    argv: Callable[[Path, Path, int], list[str]]
    env: Callable[[Path], dict[str, str]] = lambda model: {}


def _oip(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def _script(text: str, folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def servers(tmp: Path) -> list[Server]:
    own = Path(sys.executable)
    bare = _script(BARE, tmp, "bare.py")
    lockgate = _script(LOCKGATE, tmp, "lockgate_server.py")
    mlflow = _script(MLFLOW, tmp, "mlflow_server.py")
    _script(BENTO, tmp, "service.py")  # bentoml imports it from the working folder
    return [
        Server("bare uvicorn+starlette+ort", own, "/v2/health/ready", "/v2/models/mlp/infer",
               _oip, lambda py, m, port: [str(py), str(bare), str(m), str(port)]),
        Server("lockgate", own, "/v2/health/ready", "/v2/models/mlp/infer", _oip,
               lambda py, m, port: [str(py), str(lockgate), str(m), str(port)]),
        Server("mlflow models serve", PEERS / "mlflow" / "bin" / "python", "/ping",
               "/invocations",
               lambda x: json.dumps({"inputs": {"x": x.tolist()}}).encode(),
               lambda py, m, port: [str(py), str(mlflow), str(m), str(port)],
               lambda m: {"PATH": f"{PEERS / 'mlflow' / 'bin'}{os.pathsep}"
                                  f"{os.environ.get('PATH', '')}"}),
        Server("bentoml", PEERS / "bentoml" / "bin" / "python", "/readyz", "/predict",
               lambda x: json.dumps({"x": x.tolist()}).encode(),
               lambda py, m, port: [str(py), "-m", "bentoml", "serve", "service:MLP",
                                    "--host", "127.0.0.1", "--port", str(port)],
               lambda m: {"PEER_MODEL": str(m)}),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup() -> None:
    for name, packages in PEER_PACKAGES.items():
        venv = PEERS / name
        if not venv.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"installing {name}: {' '.join(packages)}", flush=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *packages], check=True)


async def _ready(port: int, path: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            conn = await Conn.open(port)
            try:
                status, _ = await conn.request(http_request("GET", path))
            finally:
                await conn.close()
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError
        await __import__("asyncio").sleep(0.2)


def measure(server: Server, model: Path, x: np.ndarray, clients: int, seconds: float,
            workdir: Path) -> tuple[Phase, Phase] | str:
    if not server.python.exists():
        return f"skipped: {server.python.parent.parent} missing (run with --setup)"
    port = free_port()
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", **server.env(model)}
    proc = subprocess.Popen(server.argv(server.python, model, port), cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        try:
            run_async(_ready(port, server.ready_path, 180))
        except TimeoutError:
            return "did not become ready: " + (proc.stderr.read()[-300:] if proc.stderr and
                                               proc.poll() is not None else "timeout")
        raw = http_request("POST", server.infer_path, server.body(x))

        async def both() -> tuple[Phase, Phase]:
            one = await drive(port, raw, 1, seconds, f"{server.name}, 1")
            many = await drive(port, raw, clients, seconds, f"{server.name}, {clients}")
            return one, many

        return run_async(both())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="create the peer venvs and exit")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bare handler and lockgate measured alternately this many times "
                             "(the other peers once)")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    results: dict[str, list[tuple[Phase, Phase]] | str] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "mlp.onnx"
        model.write_bytes(build_mlp())
        every = servers(tmp)
        paired, others = every[:2], every[2:]
        for _ in range(args.rounds):
            for server in paired:
                got = measure(server, model, x, args.clients, args.seconds, tmp)
                found = results.setdefault(server.name, [])
                if isinstance(got, str) or isinstance(found, str):
                    results[server.name] = got if isinstance(got, str) else found
                else:
                    found.append(got)
        for server in others:
            got = measure(server, model, x, args.clients, args.seconds, tmp)
            results[server.name] = got if isinstance(got, str) else [got]
    print(f"peers: MLP 64-256-256-10, batch 1 JSON, {args.seconds:g} s per phase, "
          f"{args.rounds} alternating rounds of the first two; "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    if args.rounds > 1:
        print("per round (1 conn rps, p50 ms | 32 conn rps):")
        for name, r in results.items():
            if not isinstance(r, str) and len(r) > 1:
                print(f"  {name:<28}" + "  ".join(
                    f"{one.rate:6.0f} {one.pct(50):5.3f} | {many.rate:5.0f}" for one, many in r))
    print(f"{'server':<30}{'1 conn rps':>11}{'p50 ms':>8}{'p99 ms':>8}"
          f"{f'{args.clients} conn rps':>14}{'p50 ms':>8}{'p99 ms':>8}"
          "   (medians over rounds)")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:<30}{r}")
            continue
        print(f"{name:<30}{_median([o.rate for o, _ in r]):>11.0f}"
              f"{_median([o.pct(50) for o, _ in r]):>8.2f}"
              f"{_median([o.pct(99) for o, _ in r]):>8.2f}"
              f"{_median([m.rate for _, m in r]):>14.0f}"
              f"{_median([m.pct(50) for _, m in r]):>8.2f}"
              f"{_median([m.pct(99) for _, m in r]):>8.2f}")
    ours = results.get("lockgate")
    if isinstance(ours, str) or not ours:
        return
    bare = results.get(every[0].name)
    if isinstance(bare, list) and len(bare) == len(ours):
        ratios = [o[1].rate / b[1].rate for o, b in zip(ours, bare, strict=True)]
        deltas = [1000 * (o[0].pct(50) - b[0].pct(50)) for o, b in zip(ours, bare, strict=True)]
        print(f"lockgate vs the bare handler, per round: {args.clients} conn throughput "
              + " ".join(f"{r:.2f}x" for r in ratios) + f" (median {_median(ratios):.2f}x); "
              "1 conn p50 " + " ".join(f"{d:+.0f}" for d in deltas)
              + f" us (median {_median(deltas):+.0f} us)")
    print("lockgate throughput as a ratio of each server's median "
          f"(1 conn / {args.clients} conn):")
    mine = (_median([o.rate for o, _ in ours]), _median([m.rate for _, m in ours]))
    for name, r in results.items():
        if name != "lockgate" and not isinstance(r, str):
            print(f"  vs {name:<28}{mine[0] / _median([o.rate for o, _ in r]):>7.2f}"
                  f"{mine[1] / _median([m.rate for _, m in r]):>8.2f}")


if __name__ == "__main__":
    main()
