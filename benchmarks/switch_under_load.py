"""Blue/green switches under load: failed requests and p99 while the stable version flips.

Registers two versions of the MLP 64-256-256-10 in a temporary home, deploys the first, starts
``lockgate serve`` (following deployments, 0.2 s poll), and drives ``--clients`` keep-alive
clients: first ``--steady`` seconds with no change, then ``--seconds`` seconds with a switch
(``lockgate deploy``/``rollback``) every ``--every`` seconds. Prints requests, non-200 answers,
p50/p99 for both phases and the p99 ratio.

    .venv/bin/python benchmarks/switch_under_load.py [--seconds 30] [--every 3] [--clients 32]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import json
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_overhead import Conn, build_mlp, http_request, run_async, wait_ready  # noqa: E402


async def load(port: int, raw: bytes, clients: int, seconds: float
               ) -> tuple[list[float], int, set[str]]:
    conns = [await Conn.open(port) for _ in range(clients)]
    lat: list[float] = []
    failures = 0
    versions: set[str] = set()
    stop = time.perf_counter() + seconds

    async def loop(conn: Conn) -> None:
        nonlocal failures
        while (now := time.perf_counter()) < stop:
            status, body = await conn.request(raw)
            lat.append(time.perf_counter() - now)
            if status != 200:
                failures += 1
            else:
                versions.add(json.loads(body)["model_version"])

    await asyncio.gather(*(loop(c) for c in conns))
    for c in conns:
        await c.close()
    return lat, failures, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--steady", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    from lockgate.api.facade import Lockgate

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
        with Lockgate.open(home) as lg:
            for seed in (0, 1):
                path = tmp / f"mlp{seed}.onnx"
                path.write_bytes(build_mlp(seed))
                lg.register(str(path), name="mlp", seed=seed)
            lg.promote("mlp@2", "stabilized")
            lg.promote("mlp@1", "production")
            lg.deploy("mlp@1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "--port", "0",
             "--poll", "0.2"], stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            port = 0
            while not port:
                line = proc.stderr.readline()
                if m := re.search(r":(\d+)/v2", line):
                    port = int(m.group(1))
            threading.Thread(target=lambda: proc.stderr and proc.stderr.read(),
                             daemon=True).start()
            x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
            body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}).encode()
            raw = http_request("POST", "/v2/models/mlp/infer", body)
            run_async(wait_ready(port))
            steady = run_async(load(port, raw, args.clients, args.steady))
            switches = [0]
            done = threading.Event()

            def flip() -> None:
                with Lockgate.open(home) as lg:
                    while not done.wait(args.every):
                        d = lg.deployments()["mlp"]
                        if d.stable == 1:
                            lg.promote("mlp@2", "production") if lg.get("mlp@2").stage != \
                                "production" else lg.rollback("mlp")
                        else:
                            lg.rollback("mlp")
                        switches[0] += 1

            flipper = threading.Thread(target=flip)
            flipper.start()
            switching = run_async(load(port, raw, args.clients, args.seconds))
            done.set()
            flipper.join()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    print(f"switch under load: MLP 64-256-256-10, {args.clients} clients, a switch every "
          f"{args.every:g} s; {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'phase':<26}{'requests':>10}{'non-200':>9}{'p50 ms':>9}{'p99 ms':>9}  versions")
    for name, (lat, failed, versions) in (("steady", steady),
                                          (f"{switches[0]} switches", switching)):
        ms = np.asarray(lat) * 1e3
        print(f"{name:<26}{len(lat):>10}{failed:>9}{np.percentile(ms, 50):>9.2f}"
              f"{np.percentile(ms, 99):>9.2f}  {sorted(versions)}")
    ratio = np.percentile(switching[0], 99) / np.percentile(steady[0], 99)
    print(f"p99 while switching / steady p99: {ratio:.2f}")


if __name__ == "__main__":
    main()
