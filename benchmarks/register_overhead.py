"""What sealing (ML-BOM, model card, manifest, signature) adds to a registration, what
verification adds to a load, and what a whole registration of a ResNet-18 costs against the
bare ``torch.onnx.export(model, (x,), dynamo=True)`` of the same model.

Measures, in one run and on one machine, for a scikit-learn LogisticRegression (or an ONNX file
when scikit-learn is missing):

1. convert + parity: converter and parity check alone (the work a registration cannot skip);
2. register: the whole ``Lockgate.register`` on SQLite + local artifacts (warm: the second and
   later registrations, after the one-time schema and license reads);
3. raw load: an ONNX Runtime session from the stored bytes;
4. verified load: ``Lockgate.load`` (signature, manifest and digest checks, then the session);

and prints medians and each as a ratio of its baseline (1 for 2, 3 for 4).

Then, when torch is installed, a ResNet-18 (BasicBlock x [2, 2, 2, 2], 11.7 M parameters,
defined here: torchvision is not needed) on a [1, 3, 224, 224] input, in alternating rounds
(bare export, register, bare export, register, ...) after one warm-up of each: the median of
each, their ratio (median of the per-round ratios too; the same in process CPU time), and
where a registration's time goes, phase by phase (times of the internal calls, summed over a
registration; a phase inside another is indented under it).

    .venv/bin/python benchmarks/register_overhead.py [--runs 10] [--rounds 5]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import functools
import importlib.util
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def sealing_overhead(runs: int) -> None:
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

        base = _median(convert_and_parity, runs)
        reg = _median(lambda: lg.register(model, sample, name="bench"), runs)
        v = lg.get("bench")
        data = lg.artifacts.get(v.digest)
        raw = _median(lambda: Predictor(data), runs)
        verified = _median(lambda: lg.load(f"bench@{v.number}"), runs)

    print(f"lockgate register/load overhead — {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {type(model).__name__}, median of {runs}")
    print(f"{'step':<24}{'median ms':>12}{'ratio':>10}")
    print(f"{'convert + parity':<24}{base * 1e3:>12.1f}{1.0:>10.2f}")
    print(f"{'register (sealed)':<24}{reg * 1e3:>12.1f}{reg / base:>10.2f}")
    print(f"{'raw session load':<24}{raw * 1e3:>12.1f}{1.0:>10.2f}")
    print(f"{'verified load':<24}{verified * 1e3:>12.1f}{verified / raw:>10.2f}")


# -- ResNet-18 against its bare export -----------------------------------------------------------
def resnet18() -> Any:
    """ResNet-18 as torchvision builds it: BasicBlock x [2, 2, 2, 2], 1000 classes."""
    from torch import flatten, nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout else None
            )

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout)]
                cin = cout
            self.layers = nn.Sequential(*blocks)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.fc(flatten(self.avgpool(self.layers(x)), 1))

    return ResNet18().eval()


class Phases:
    """Wall time spent in named internal calls, summed while :meth:`recording`."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.order: list[tuple[int, str]] = []
        self._on = False
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str, depth: int = 0) -> None:
        original = getattr(owner, attr)
        self.order.append((depth, label))

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self._on:
                return original(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0

        self._patched.append((owner, attr, vars(owner).get(attr)))
        setattr(owner, attr, timed)

    @contextmanager
    def recording(self) -> Iterator[dict[str, float]]:
        self.totals = {}
        self._on = True
        try:
            yield self.totals
        finally:
            self._on = False

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patched):
            if original is None:
                delattr(owner, attr)  # it was inherited
            else:
                setattr(owner, attr, original)


def _instrument(phases: Phases) -> None:
    import onnx

    from lockgate.api import registration
    from lockgate.convert import torch as torch_convert
    from lockgate.environment import fingerprint
    from lockgate.parity import check
    from lockgate.runtime import predictor
    from lockgate.seal import folder
    from lockgate.store.artifacts import local
    from lockgate.supplychain import bom, modelcard, signing

    phases.wrap(torch_convert.TorchConverter, "convert", "convert (sample run + export)")
    phases.wrap(torch_convert, "_export_once", "torch.onnx.export", 1)
    phases.wrap(onnx.ModelProto, "SerializeToString", "ModelProto.SerializeToString")
    phases.wrap(predictor.Predictor, "__init__", "ORT session (Predictor)")
    phases.wrap(registration, "check_parity", "parity")
    phases.wrap(check, "_inputs", "random inputs", 1)
    phases.wrap(torch_convert._Reference, "__call__", "torch reference runs", 1)
    phases.wrap(predictor.Predictor, "run", "ORT runs (parity, samples)")
    phases.wrap(fingerprint, "capture_environment", "environment capture")
    phases.wrap(local.LocalArtifactStore, "put", "artifact store writes")
    phases.wrap(folder, "seal", "seal (BOM, card, manifest, signature)")
    phases.wrap(bom, "build_bom", "BOM (built and validated)", 1)
    phases.wrap(bom, "validate_bom", "BOM validation", 2)
    phases.wrap(modelcard, "model_card_markdown", "model card", 1)
    phases.wrap(signing, "sign_folder", "signing", 1)


def resnet_ratio(rounds: int) -> None:
    import torch

    from lockgate.api.facade import Lockgate

    model = resnet18()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    export = torch.onnx.export

    def bare() -> None:
        export(model, (x,), dynamo=True)

    phases = Phases()
    _instrument(phases)
    bares: list[float] = []
    regs: list[float] = []
    bares_cpu: list[float] = []
    regs_cpu: list[float] = []
    per_phase: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, Lockgate.open(Path(tmp)) as lg:
            bare()  # warm-up: imports, dispatch caches, the BOM's one-time reads
            lg.register(model, x, name="warm")
            for _ in range(rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                bare()
                bares.append(time.perf_counter() - t0)
                bares_cpu.append(time.process_time() - c0)
                with phases.recording() as totals:
                    t0, c0 = time.perf_counter(), time.process_time()
                    lg.register(model, x, name="resnet18")
                    regs.append(time.perf_counter() - t0)
                    regs_cpu.append(time.process_time() - c0)
                per_phase.append(dict(totals))
    finally:
        phases.restore()
    ratios = [r / b for r, b in zip(regs, bares, strict=True)]
    b, r = statistics.median(bares), statistics.median(regs)
    print()
    print(f"ResNet-18 ({params / 1e6:.1f} M params, input [1, 3, 224, 224]) — "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{rounds} alternating rounds")
    print("per round (bare s, register s, ratio): " + "  ".join(
        f"{bb:.2f} {rr:.2f} {rr / bb:.2f}" for bb, rr in zip(bares, regs, strict=True)))
    print(f"{'step':<44}{'median s':>10}{'ratio':>8}")
    print(f"{'bare torch.onnx.export(dynamo=True)':<44}{b:>10.2f}{1.0:>8.2f}")
    print(f"{'lockgate.register':<44}{r:>10.2f}{r / b:>8.2f}")
    print(f"median of the per-round ratios: {statistics.median(ratios):.2f}")
    cpu = [r / b for r, b in zip(regs_cpu, bares_cpu, strict=True)]
    print(f"process CPU time (all threads), median s: bare {statistics.median(bares_cpu):.2f}, "
          f"register {statistics.median(regs_cpu):.2f}; median of the per-round ratios "
          f"{statistics.median(cpu):.2f} (less sensitive to other processes than wall time)")
    print("where a registration's time goes (median over rounds, s):")
    accounted = 0.0
    for depth, label in phases.order:
        value = statistics.median(p.get(label, 0.0) for p in per_phase)
        if depth == 0 and label not in ("ORT runs (parity, samples)", "artifact store writes",
                                        "ModelProto.SerializeToString"):
            accounted += value
        print(f"  {'  ' * depth}{label:<{42 - 2 * depth}}{value:>10.3f}")
    print(f"  {'everything else (metadata, profile, ...)':<42}{max(r - accounted, 0.0):>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10,
                        help="registrations per figure for the LogisticRegression")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating ResNet-18 rounds (0: skip)")
    parser.add_argument("--resnet-only", action="store_true")
    args = parser.parse_args()
    if not args.resnet_only:
        sealing_overhead(args.runs)
    if args.rounds and importlib.util.find_spec("torch") is not None:
        resnet_ratio(args.rounds)


if __name__ == "__main__":
    main()
