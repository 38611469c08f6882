"""What live capture (the drift monitors' sliding window) costs the server.

Runs the serve_overhead benchmark's server (MLP 64-256-256-10, batch 1, real server on
127.0.0.1) with capture off (``capture_window=0``) and on (the default, 5000 rows), alternating
off/on for ``--rounds`` rounds so both see the same machine, and prints the median requests/s
at 1 and at ``--clients`` concurrent clients and the on/off ratio (of the medians, and the
median of the per-round ratios; rounds alternate which setting runs first).

    .venv/bin/python benchmarks/capture_cost.py [--seconds 5] [--clients 32] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
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
    spawn_server,
    wait_ready,
)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(port: int, pid: int, raw: bytes, clients: int, seconds: float
                   ) -> tuple[float, float, float]:
    await wait_ready(port)
    conn = await Conn.open(port)
    status, answer = await conn.request(raw)
    await conn.close()
    assert status == 200, answer
    one = await drive(port, raw, 1, seconds, "1 client")
    cpu = _cpu_seconds(pid)
    many = await drive(port, raw, clients, seconds, f"{clients} clients")
    cpu = _cpu_seconds(pid) - cpu
    return one.rate, many.rate, cpu / max(many.requests, 1) * 1e6


def _round(path: Path, window: int, raw: bytes, clients: int, seconds: float
           ) -> tuple[float, float, float]:
    with spawn_server(path, 1, capture_window=window) as (port, pid):
        return run_async(_measure(port, pid, raw, clients, seconds))


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
    results: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        path.write_bytes(model)
        for i in range(args.rounds):  # off/on, then on/off: neither always runs first
            for key in (("off", "on") if i % 2 == 0 else ("on", "off")):
                window = 0 if key == "off" else 5000
                results[key].append(_round(path, window, raw, args.clients, args.seconds))
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3))
           for k, v in results.items()}
    pairs = [(on[0] / off[0], on[1] / off[1])
             for off, on in zip(results["off"], results["on"], strict=True)]
    print(f"live capture cost: MLP {'-'.join(map(str, LAYERS))} float32, batch 1, "
          f"{args.rounds} rounds off/on, {args.seconds:g} s per phase, {os.cpu_count()} CPUs")
    print(f"{'capture':<10}{'1 client req/s':>16}{f'{args.clients} clients req/s':>22}"
          f"{'server CPU us/request':>24}")
    for k in ("off", "on"):
        print(f"{k:<10}{med[k][0]:>16.0f}{med[k][1]:>22.0f}{med[k][2]:>24.1f}")
    print(f"{'on / off':<10}{med['on'][0] / med['off'][0]:>16.3f}"
          f"{med['on'][1] / med['off'][1]:>22.3f}   (ratio of the medians)")
    print(f"{'':<10}{statistics.median(p[0] for p in pairs):>16.3f}"
          f"{statistics.median(p[1] for p in pairs):>22.3f}   (median of the per-round ratios)")
    print(f"server CPU per request at {args.clients} clients, on / off: "
          f"{med['on'][2] / med['off'][2]:.3f} (+{med['on'][2] - med['off'][2]:.1f} us)")


if __name__ == "__main__":
    main()
