"""Peak memory of registering a 512 MiB model, above the process's baseline.

Each case runs in a fresh subprocess: it imports lockgate and registers a tiny model of the
same kind first (so every library a registration imports is loaded), builds the big model,
reads its baseline (``ru_maxrss``, the peak resident set so far), registers the big model into
a fresh home and reads the peak again. The figure is the rise of the peak over the baseline,
in MiB and as a multiple of the model's size; the target is at most 2x.

Cases: ``torch`` (``nn.Sequential`` of 8 ``Linear(4096, 4096)``: 128 Mi float32 parameters,
512 MiB) and ``onnx`` (an ONNX file of the same 8 MatMuls, registered by path).

    .venv/bin/python benchmarks/register_memory.py [--case torch|onnx|all] [--layers 8]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_WIDTH = 4096
_MIB = 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB


def _torch_model(layers: int, width: int) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).eval()
    return model, torch.randn(1, width)


def _onnx_file(folder: Path, layers: int, width: int) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(
            np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        prev = out
        del w
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    path = folder / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def child(case: str, layers: int, onnx_path: Path | None) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import gc

    import numpy as np

    from lockgate.api.facade import Lockgate

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Lockgate.open(folder / "warm") as lg:  # imports and one-time reads
            if case == "torch":
                small, x = _torch_model(1, 8)
                lg.register(small, x, name="warm")
            else:
                lg.register(_onnx_file(folder, 1, 8), None, name="warm")
        del lg
        if case == "torch":
            model, sample = _torch_model(layers, _WIDTH)
            model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / _MIB
        else:
            assert onnx_path is not None
            model = onnx_path
            sample = np.zeros((1, _WIDTH), np.float32)
            model_mib = model.stat().st_size / _MIB
        gc.collect()
        baseline_peak, baseline_now = _peak_mib(), _current_mib()
        t0 = time.perf_counter()
        with Lockgate.open(folder / "home") as lg:
            lg.register(model, sample if case == "torch" else None, name="big")
        seconds = time.perf_counter() - t0
        peak = _peak_mib()
    return {"case": case, "model_mib": model_mib, "baseline_peak_mib": baseline_peak,
            "baseline_rss_mib": baseline_now, "peak_mib": peak, "seconds": seconds,
            "rise_mib": peak - baseline_peak, "rise_x": (peak - baseline_peak) / model_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("torch", "onnx", "all"), default="all")
    parser.add_argument("--layers", type=int, default=8, help="4096x4096 layers (8: 512 MiB)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--onnx-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.case, args.layers, args.onnx_path)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        measure(args.case, args.layers, Path(tmp))


def measure(which: str, layers: int, tmp: Path) -> None:
    cases = ("torch", "onnx") if which == "all" else (which,)
    print(f"{'case':<8}{'model MiB':>11}{'baseline MiB':>14}{'peak MiB':>10}"
          f"{'rise MiB':>10}{'rise / model':>14}{'register s':>12}")
    for case in cases:
        extra = []
        if case == "onnx":  # written in a process of its own, so as not to raise the baseline
            path = tmp / "big.onnx"
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from register_memory import _onnx_file; from pathlib import Path; "
                            "_onnx_file(Path(sys.argv[2]), int(sys.argv[3]), 4096)",
                            str(Path(__file__).parent), str(tmp), str(layers)], check=True)
            extra = ["--onnx-path", str(path)]
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--case", case, "--layers", str(layers),
             *extra], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{case:<8} failed:\n{done.stderr[-3000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{case:<8}{r['model_mib']:>11.0f}{r['baseline_peak_mib']:>14.0f}"
              f"{r['peak_mib']:>10.0f}{r['rise_mib']:>10.0f}{r['rise_x']:>14.2f}"
              f"{r['seconds']:>12.1f}")


if __name__ == "__main__":
    main()
