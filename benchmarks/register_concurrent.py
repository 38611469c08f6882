"""Eight registrations at once into one SQLite home: how long until all are stored.

Starts ``--workers`` processes (default 8). Each imports lockgate and registers one warm-up model
into a home of its own (the schema validator and license metadata load once per process), then
all wait on a barrier and register a distinct ONNX file (a MatMul of ``--size`` x ``--size``
float32 weights, seeded) into the same shared home at the same moment. The wall time runs from
the barrier to the last registration stored. Two scenarios, ``--rounds`` times each (a fresh
home every round): every worker registering the same model name, and each its own name. Prints
each round's wall time, the median, and the numbers the shared home gave out.

    .venv/bin/python benchmarks/register_concurrent.py [--workers 8] [--rounds 3] [--size 512]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_model(path: Path, size: int, seed: int) -> Path:
    """An ONNX MatMul ``y = x @ W`` with seeded random weights."""
    w = np.random.default_rng(seed).normal(size=(size, size)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", size])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _worker(home: str, warm_home: str, model: str, warm_model: str, name: str,
            barrier: Any, results: Any) -> None:
    from lockgate.api.facade import Lockgate

    with Lockgate.open(Path(warm_home)) as lg:
        lg.register(warm_model, name="warm")
    with Lockgate.open(Path(home)) as lg:
        barrier.wait()
        start = time.perf_counter()
        v = lg.register(model, name=name)
        results.put((start, time.perf_counter(), v.name, v.number))


def one_round(ctx: Any, tmp: Path, workers: int, same_name: bool, models: list[Path],
              warm: Path) -> tuple[float, list[tuple[str, int]]]:
    home = tmp / f"home-{time.monotonic_ns()}"
    from lockgate.api.facade import Lockgate

    Lockgate.open(home).close()  # keys, config and database exist before the workers start
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(
        str(home), str(tmp / f"warm-{i}-{time.monotonic_ns()}"), str(models[i]), str(warm),
        "bench" if same_name else f"bench-{i}", barrier, results)) for i in range(workers)]
    for p in procs:
        p.start()
    found = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise SystemExit(f"a worker failed (exit code {p.exitcode})")
    wall = max(f[1] for f in found) - min(f[0] for f in found)
    return wall, sorted((f[2], f[3]) for f in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    print(f"{args.workers} processes, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, weights {args.size}x{args.size} float32")
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        models = [write_model(tmp / f"m{i}.onnx", args.size, seed=i)
                  for i in range(args.workers)]
        warm = write_model(tmp / "warm.onnx", 8, seed=99)
        print(f"{'scenario':<16} {'rounds (s)':<28} {'median s':>9}  numbers")
        for same_name in (True, False):
            walls: list[float] = []
            numbers: list[tuple[str, int]] = []
            for _ in range(args.rounds):
                wall, numbers = one_round(ctx, tmp, args.workers, same_name, models, warm)
                walls.append(wall)
            label = "same name" if same_name else "distinct names"
            shown = " ".join(f"{w:.2f}" for w in walls)
            given = sorted(n for _, n in numbers)
            print(f"{label:<16} {shown:<28} {statistics.median(walls):>9.2f}  {given}")


if __name__ == "__main__":
    main()
