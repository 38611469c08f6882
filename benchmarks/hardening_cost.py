"""What a change to the data plane costs in throughput, measured with wrk (a C load generator).

Starts, each in its own process on 127.0.0.1, serving the MLP 64-256-256-10 (float32, batch-1
OIP JSON, ONNX Runtime with one intra-op thread):

* ``bare``:   uvicorn + Starlette + orjson + ONNX Runtime, a handler that parses OIP JSON, runs
              and answers (no validation, no metrics: the strongest baseline);
* ``before``: ``lockgate serve`` from a git revision (``--before``, checked out into a
              temporary worktree, run with this venv);
* ``after``:  ``lockgate serve`` from this checkout.

Then runs ``wrk`` against them in alternating rounds (``--rounds``; the order rotates each
round, as this shared machine drifts by tens of percent between minutes), at ``--connections``
(one wrk thread) and at 1 connection, ``--seconds`` each, after a warm-up. Prints requests/s
per round and the medians, ``after / before`` round by round and ``after / bare``.

    .venv/bin/python benchmarks/hardening_cost.py --before 3178bf7 [--rounds 3] [--seconds 10]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Not part of ``make test``.
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
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from serve_overhead import build_mlp  # noqa: E402

BARE = textwrap.dedent("""
    import sys
    import numpy as np, onnxruntime as ort, orjson, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
    async def infer(request):
        t = orjson.loads(await request.body())["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        y = sess.run(None, {"x": x})[0]
        out = {"model_name": "mlp", "outputs": [{"name": "y", "datatype": "FP32",
               "shape": list(y.shape), "data": y.ravel()}]}
        return Response(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")
    async def ready(request):
        return Response("{}", media_type="application/json")
    app = Starlette(routes=[Route("/v2/models/mlp/infer", infer, methods=["POST"]),
                           Route("/v2/health/ready", ready)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
""")

WRK_SCRIPT = textwrap.dedent("""
    local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
    wrk.method = "POST"
    wrk.body = f:read("*a")
    f:close()
    wrk.headers["Content-Type"] = "application/json"
    function done(summary, latency, requests)
      io.write(string.format('RESULT {"rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, '
        .. '"errors": %d}\\n', summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout))
    end
""")


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready",
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on {port} never became ready")


def _lockgate(name: str, src: Path, home: Path, model: Path) -> Server:
    env = {"PYTHONPATH": str(src / "src"), "LOCKGATE_USER": "bench"}
    base = {**os.environ, **env}
    subprocess.run([sys.executable, "-m", "lockgate", "--home", str(home), "register",
                    str(model), "--name", "mlp"], check=True, env=base,
                   stdout=subprocess.DEVNULL)
    return Server(name, [sys.executable, "-m", "lockgate", "--home", str(home), "serve",
                         "mlp@1", "--port", "{port}"], env)


def _start(server: Server) -> None:
    server.port = _free_port()
    argv = [a.replace("{port}", str(server.port)) for a in server.argv]
    server.proc = subprocess.Popen(argv, env={**os.environ, **server.env},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ready(server.port)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    args = p.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-hardening-"))
    tree = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                    args.before], check=True, capture_output=True)
    servers: list[Server] = []
    try:
        model = tmp / "mlp.onnx"
        model.write_bytes(build_mlp())
        x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
        body = tmp / "body.json"
        body.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, 64],
                                                "datatype": "FP32",
                                                "data": x.ravel().tolist()}]}))
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        bare = tmp / "bare.py"
        bare.write_text(BARE)
        servers = [Server("bare", [sys.executable, str(bare), str(model), "{port}"]),
                   _lockgate("before", tree, tmp / "home-before", model),
                   _lockgate("after", ROOT, tmp / "home-after", model)]
        for s in servers:
            _start(s)
            _wrk(s.port, args.connections, 3, script, body)  # warm-up
        figures: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            order = servers[r % 3:] + servers[:r % 3]
            for conns in (args.connections, 1):
                for s in order:
                    rps = _wrk(s.port, conns, args.seconds, script, body)
                    figures.setdefault((s.name, conns), []).append(rps)
                    print(f"round {r + 1} c={conns:<3} {s.name:<7} {rps:9.0f} req/s", flush=True)
        print(f"\nwrk -t1, {args.seconds:g} s per phase, {args.rounds} alternating rounds; "
              f"before = {args.before}, after = working tree")
        print("| connections | bare | before | after | after / before (rounds) | "
              "after / bare |")
        print("|---|---|---|---|---|---|")
        for conns in (args.connections, 1):
            b, a, base = (figures[(n, conns)] for n in ("before", "after", "bare"))
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            print(f"| {conns} | {statistics.median(base):,.0f} | {statistics.median(b):,.0f} | "
                  f"{statistics.median(a):,.0f} | **{statistics.median(ratios):.3f}** "
                  f"({', '.join(f'{q:.3f}' for q in ratios)}) | "
                  f"{statistics.median(a) / statistics.median(base):.2f} |")
    finally:
        for s in servers:
            if s.proc is not None:
                s.proc.send_signal(signal.SIGINT)
                try:
                    s.proc.wait(30)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
