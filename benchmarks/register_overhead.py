"""What sealing (ML-BOM, model card, manifest, signature) adds to a registration, and what
verification adds to a load.

Measures, in one run and on one machine, for a scikit-learn LogisticRegression (or an ONNX file
when scikit-learn is missing):

1. convert + parity: converter and parity check alone (the work a registration cannot skip);
2. register: the whole ``Lockgate.register`` on SQLite + local artifacts (warm: the second and
   later registrations, after the one-time schema and license reads);
3. raw load: an ONNX Runtime session from the stored bytes;
4. verified load: ``Lockgate.load`` (signature, manifest and digest checks, then the session);

and prints medians and each as a ratio of its baseline (1 for 2, 3 for 4).

    .venv/bin/python benchmarks/register_overhead.py [--runs 10]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _model() -> tuple[Any, Any]:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w])
        return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), None
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64)), x[:4]


def _median(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    from lockgate.api.facade import Lockgate
    from lockgate.convert import converter_for
    from lockgate.parity.check import check_parity
    from lockgate.progress import NullProgress
    from lockgate.runtime.predictor import Predictor

    model, sample = _model()
    with tempfile.TemporaryDirectory() as tmp, Lockgate.open(Path(tmp)) as lg:
        lg.register(model, sample, name="warm")  # schema, license metadata, BOM validator

        def convert_and_parity() -> None:
            c = converter_for(model).convert(model, sample, opset=None, progress=NullProgress())
            if c.reference is not None:
                check_parity(c, Predictor(c.model.SerializeToString()))

        base = _median(convert_and_parity, args.runs)
        reg = _median(lambda: lg.register(model, sample, name="bench"), args.runs)
        v = lg.get("bench")
        data = lg.artifacts.get(v.digest)
        raw = _median(lambda: Predictor(data), args.runs)
        verified = _median(lambda: lg.load(f"bench@{v.number}"), args.runs)

    print(f"lockgate register/load overhead — {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {type(model).__name__}, median of {args.runs}")
    print(f"{'step':<24}{'median ms':>12}{'ratio':>10}")
    print(f"{'convert + parity':<24}{base * 1e3:>12.1f}{1.0:>10.2f}")
    print(f"{'register (sealed)':<24}{reg * 1e3:>12.1f}{reg / base:>10.2f}")
    print(f"{'raw session load':<24}{raw * 1e3:>12.1f}{1.0:>10.2f}")
    print(f"{'verified load':<24}{verified * 1e3:>12.1f}{verified / raw:>10.2f}")


if __name__ == "__main__":
    main()
