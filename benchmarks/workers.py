"""Throughput of ``lockgate serve --workers 2`` against ``--workers 1``, under wrk.

Both servers run the same registered model (an MLP 64-256-256-10, float32, built with
onnx.helper from seeded weights) from one temporary home, on lockgate's own HTTP layer. They
start once and stay up; ``wrk -t1 -c32`` (OIP JSON infer, keep-alive) then measures them in
alternating rounds (1, 2, 2, 1, 1, 2, ...), so a change in the machine's load falls on both.
Every answer must be a 2xx and the server's own ``lockgate_requests_total`` must count at
least what wrk reports.

Where the machine has more than 2 cores, wrk is pinned to core 0 with ``taskset`` and the
servers to the others (at most ``--server-cores``), so the load generator does not take the
workers' CPU. On a 2-core machine nothing is pinned: wrk shares the two cores with the
workers, and the ratio says how much a second worker gains when the client competes for the
same CPU (an underestimate of what a second core does for the server alone).

    .venv/bin/python benchmarks/workers.py [--rounds 3] [--seconds 5]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Not part of the test suite.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import contextlib
import itertools
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lockgate.api.facade import Lockgate

LUA = """
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local errors = 0
response = function(status, headers, body)
  if status >= 300 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"rps": %f, "requests": %d, "errors": %d, "p50_ms": %f}\\n',
    summary.requests / (summary.duration / 1e6), summary.requests,
    errors + summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000))
end
"""


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    dims = (64, 256, 256, 10)
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a))
                                    .astype(np.float32), f"w{i}")
        bias = numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")
        inits += [w, bias]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        prev = f"a{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


def _counted(port: int) -> float:
    found = re.search(r'^lockgate_requests_total\{model="mlp",version="1"\} (\S+)$',
                      _get(port, "/metrics")[1], re.M)
    return float(found.group(1)) if found else 0.0


@contextlib.contextmanager
def _server(home: Path, workers: int, pin: list[str]) -> Iterator[int]:
    proc = subprocess.Popen(
        [*pin, sys.executable, "-m", "lockgate", "--home", str(home), "serve", "--port", "0",
         "--workers", str(workers)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = proc.stderr.readline()
            if not line:
                raise SystemExit("the server exited before it listened")
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v2", line):
                port = int(m.group(1))
        streak, deadline = 0, time.monotonic() + 180
        while streak < 20:  # ready on 20 fresh connections in a row: every worker
            streak = streak + 1 if _get(port, "/v2/health/ready")[0] == 200 else 0
            if time.monotonic() > deadline:
                raise SystemExit("the server never became ready")
            time.sleep(0.02)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)


def _wrk(port: int, seconds: float, script: Path, body: Path, pin: list[str]) -> float:
    before = _counted(port)
    out = subprocess.run(
        [*pin, "wrk", "-t1", "-c32", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
         f"http://127.0.0.1:{port}/v2/models/mlp/infer"],
        capture_output=True, text=True, env={**os.environ, "BODY_FILE": str(body)},
        check=True).stdout
    m = re.search(r"RESULT (\{.*\})", out)
    if m is None:
        raise SystemExit(f"wrk printed no result: {out}")
    result = json.loads(m.group(1))
    if result["errors"]:
        raise SystemExit(f"wrk saw errors against port {port}: {out}")
    if _counted(port) - before < result["requests"]:
        raise SystemExit("the server counted fewer requests than wrk sent")
    return float(result["rps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--server-cores", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install -y wrk)")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = len(cores) > 2 and shutil.which("taskset") is not None
    wrk_pin = ["taskset", "-c", str(cores[0])] if pinned else []
    server_pin = (["taskset", "-c", ",".join(map(str, cores[1:1 + args.server_cores]))]
                  if pinned else [])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
        model = Path(tmp) / "mlp.onnx"
        onnx.save(_mlp(), model)
        with Lockgate.open(home) as lg:
            lg.register(str(model), name="mlp", seed=0)
            lg.promote("mlp@1", "production")
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, 64],
                                                "datatype": "FP32", "data": [0.1] * 64}]}))
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        rates: dict[int, list[float]] = {1: [], 2: []}
        with _server(home, 1, server_pin) as one, _server(home, 2, server_pin) as two:
            ports = {1: one, 2: two}
            for n in (1, 2):
                _wrk(ports[n], 1.0, script, body, wrk_pin)  # warm-up
            for r in range(args.rounds):
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                    rate = _wrk(ports[n], args.seconds, script, body, wrk_pin)
                    rates[n].append(rate)
                    print(f"round {r + 1}: --workers {n}: {rate:8.0f} req/s", flush=True)
    one_rate, two_rate = statistics.median(rates[1]), statistics.median(rates[2])
    where = (f"wrk pinned to core {cores[0]}, servers to {server_pin[-1]}" if pinned else
             f"{len(cores) or os.cpu_count()} cores, nothing pinned: wrk shares the CPU with "
             "the workers")
    print(f"\nwrk -t1 -c32, MLP 64-256-256-10 batch 1, {args.rounds} alternating rounds of "
          f"{args.seconds:g} s ({where})")
    print(f"--workers 1: {one_rate:.0f} req/s (median)   --workers 2: {two_rate:.0f} req/s "
          f"(median)   ratio {two_rate / one_rate:.2f}x")


if __name__ == "__main__":
    main()
