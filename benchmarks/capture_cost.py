"""What live capture (the drift monitors' sliding window) costs the server.

Runs the serve_overhead benchmark's server (MLP 64-256-256-10, batch 1, real uvicorn on
127.0.0.1) with capture off (``capture_window=0``) and on (the default, 5000 rows), alternating
off/on for ``--rounds`` rounds so both see the same machine, and prints the median requests/s
at 1 and at ``--clients`` concurrent clients and the on/off ratio.

    .venv/bin/python benchmarks/capture_cost.py [--seconds 5] [--clients 32] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_overhead import (
    LAYERS,
    PATH,
    Conn,
    build_mlp,
    drive,
    http_request,
    infer_body,
    run_async,
    session,
    wait_ready,
)


async def _measure(port: int, raw: bytes, clients: int, seconds: float) -> tuple[float, float]:
    await wait_ready(port)
    conn = await Conn.open(port)
    status, answer = await conn.request(raw)
    await conn.close()
    assert status == 200, answer
    one = await drive(port, raw, 1, seconds, "1 client")
    many = await drive(port, raw, clients, seconds, f"{clients} clients")
    return one.rate, many.rate


def _round(path: Path, window: int, raw: bytes, clients: int, seconds: float
           ) -> tuple[float, float]:
    cmd = [sys.executable, str(Path(__file__).parent / "serve_overhead.py"), "--serve",
           str(path), "--intra-op-threads", "1", "--capture-window", str(window)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("LISTENING"):
            raise SystemExit(f"the server did not start: {line!r}")
        return run_async(_measure(int(line.split()[1]), raw, clients, seconds))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = build_mlp()
    x = np.random.default_rng(1).standard_normal((1, LAYERS[0])).astype(np.float32)
    session(model, 1).run(None, {"x": x})
    raw = http_request("POST", PATH, infer_body(x))
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        path.write_bytes(model)
        for _ in range(args.rounds):
            results["off"].append(_round(path, 0, raw, args.clients, args.seconds))
            results["on"].append(_round(path, 5000, raw, args.clients, args.seconds))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in results.items()}
    print(f"live capture cost: MLP {'-'.join(map(str, LAYERS))} float32, batch 1, "
          f"{args.rounds} rounds off/on, {args.seconds:g} s per phase, {os.cpu_count()} CPUs")
    print(f"{'capture':<10}{'1 client req/s':>16}{f'{args.clients} clients req/s':>22}")
    for k in ("off", "on"):
        print(f"{k:<10}{med[k][0]:>16.0f}{med[k][1]:>22.0f}")
    print(f"{'on / off':<10}{med['on'][0] / med['off'][0]:>16.3f}"
          f"{med['on'][1] / med['off'][1]:>22.3f}")


if __name__ == "__main__":
    main()
