"""Parity and speed of lockgate's GPU execution providers against the CPU, on one machine.

Runs only where ONNX Runtime has the CUDA provider (the ``onnxruntime-gpu`` wheel, see
docs/serving.md, Hardware); elsewhere it says so and exits with status 2.

For a ResNet-18 (BasicBlock x [2, 2, 2, 2], built in benchmarks/register_overhead.py, nothing
downloaded) on [1, 3, 224, 224] and a BERT-base sized BertForSequenceClassification (12 layers,
hidden 768, built from a config, nothing downloaded) on 128 tokens:

1. registers it in a temporary lockgate home (conversion and parity on the CPU, as always);
2. for each provider set (``cuda,cpu`` and ``tensorrt:trt_fp16_enable=true,cuda,cpu``) opens a
   :class:`~lockgate.runtime.predictor.Predictor` with ``fallback = "none"`` (a provider that
   does not load is reported, not replaced by the CPU) and compares its answers to the sample
   recorded at registration within the tolerances of the set's precision, as the
   ``infra_validation`` gate does over HTTP;
3. measures batch-1 latency (median, p99) and batched throughput of every set and of the CPU
   in alternating rounds (CPU, CUDA, TensorRT, CPU, ...), after warm-up runs at both shapes
   (TensorRT builds its engines then);

and prints a Markdown table naming the GPU, driver, CPU and ONNX Runtime version.

    .venv/bin/python benchmarks/gpu.py [--rounds 3] [--runs 50] [--batch-runs 5]
        [--models resnet18,bert]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SETS = ("cuda,cpu", "tensorrt:trt_fp16_enable=true,cuda,cpu")


@dataclass
class Case:
    """One registered model: its ONNX bytes, the recorded sample and a batched feed."""

    name: str
    onnx: bytes
    samples: dict[str, Any]
    feeds: dict[str, np.ndarray]
    batch: dict[str, np.ndarray]


@dataclass
class Row:
    model: str
    providers: str
    used: str = ""
    parity: str = ""
    batch1_ms: list[float] = field(default_factory=list)
    batched_s: list[float] = field(default_factory=list)
    batch_size: int = 0
    io_binding: bool = False


def resnet18_case() -> tuple[str, Any, Any, Callable[[int], Any]]:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from register_overhead import resnet18

    torch.manual_seed(0)
    model = resnet18()

    def sample(n: int) -> Any:
        return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))

    return "resnet18", model, sample(1), sample


def bert_case() -> tuple[str, Any, Any, Callable[[int], Any]]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # BERT-base sizes

    def sample(n: int) -> Any:
        ids = torch.randint(1, 30522, (n, 128), generator=torch.Generator().manual_seed(n))
        return (ids, torch.ones_like(ids))

    return "bert-base", model, sample(1), sample


def register(lg: Any, build: Callable[..., Any], batch_size: int) -> Case:
    from lockgate.gates.probe import sample_feeds
    from lockgate.seal.folder import SAMPLES_FILE

    name, model, first, sample = build()
    t0 = time.perf_counter()
    version = lg.register(model, first, name=name.replace("-", "_"))
    print(f"registered {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    samples = json.loads(lg.file_bytes(version, SAMPLES_FILE))
    feeds = sample_feeds(samples)
    batched = sample(batch_size)
    batched = batched if isinstance(batched, tuple) else (batched,)
    batch = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(feeds, batched, strict=True)}
    return Case(name, lg.model_bytes(version), samples, feeds, batch)


def open_sets(lg: Any, case: Case, sets: list[str], tmp: Path
              ) -> tuple[dict[str, Any], list[Row]]:
    """The CPU predictor and one per provider set that loads (with its parity), and a row
    for every set."""
    from lockgate.config.providers import ProviderSet, parse_providers_text
    from lockgate.config.tolerances import tolerance_for
    from lockgate.gates.probe import compare_recorded
    from lockgate.runtime.predictor import Predictor
    from lockgate.runtime.providers import ProviderUnavailableError

    settings = lg.settings
    predictors: dict[str, Any] = {"cpu": Predictor(case.onnx)}
    rows = [Row(case.name, "cpu", "CPUExecutionProvider")]
    got = predictors["cpu"].run(case.feeds)
    rows[0].parity = _parity(compare_recorded(got, case.samples, atol=settings.parity_atol,
                                              rtol=settings.parity_rtol),
                             f"[parity] atol {settings.parity_atol:g} rtol "
                             f"{settings.parity_rtol:g}", _max_error(got, case.samples))
    for text in sets:
        if text.startswith("tensorrt"):
            text = text.replace(",", f":trt_engine_cache_enable=true:trt_engine_cache_path="
                                     f"{tmp / 'trt'},", 1)
        pset = ProviderSet(parse_providers_text(text, "providers"), "none")
        row = Row(case.name, pset.key)
        rows.append(row)
        try:
            predictor = Predictor(case.onnx, providers=pset)
        except ProviderUnavailableError as exc:
            row.parity = f"not available: {exc}"
            continue
        tol = tolerance_for(pset, atol=settings.parity_atol, rtol=settings.parity_rtol,
                            table=settings.provider_tolerances)
        got = predictor.run(case.feeds)
        row.used = "+".join(p.removesuffix("ExecutionProvider") for p in predictor.providers)
        row.io_binding = predictor.io_binding
        row.parity = _parity(compare_recorded(got, case.samples, atol=tol.atol, rtol=tol.rtol),
                             f"{tol.precision} atol {tol.atol:g} rtol {tol.rtol:g}",
                             _max_error(got, case.samples))
        predictors[pset.key] = predictor
    return predictors, rows


def _max_error(got: dict[str, np.ndarray], samples: dict[str, Any]) -> float:
    worst = 0.0
    for want in samples["outputs"]:
        a = np.asarray(got[want["name"]], dtype=np.float64)
        b = np.asarray(want["data"], dtype=np.float64).reshape(want["shape"])
        worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
    return worst


def _parity(problems: list[str], held_to: str, worst: float | None = None) -> str:
    err = f", max abs error {worst:.2g}" if worst is not None else ""
    return (f"passed ({held_to}{err})" if not problems
            else f"FAILED ({held_to}): {'; '.join(problems)}")


def measure(case: Case, predictors: dict[str, Any], rows: list[Row], *, rounds: int,
            runs: int, batch_runs: int) -> None:
    """Alternating rounds: every predictor's batch-1 runs, then every predictor's batched
    runs, ``rounds`` times; warm-up first at both shapes."""
    by_key = {r.providers: r for r in rows}
    for predictor in predictors.values():
        for _ in range(3):
            predictor.run(case.feeds)
            predictor.run(case.batch)
    n = next(iter(case.batch.values())).shape[0]
    for _ in range(rounds):
        for key, predictor in predictors.items():
            row = by_key[key]
            for _ in range(runs):
                t0 = time.perf_counter()
                predictor.run(case.feeds)
                row.batch1_ms.append((time.perf_counter() - t0) * 1e3)
        for key, predictor in predictors.items():
            row = by_key[key]
            row.batch_size = n
            t0 = time.perf_counter()
            for _ in range(batch_runs):
                predictor.run(case.batch)
            row.batched_s.append((time.perf_counter() - t0) / batch_runs)


def device() -> str:
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
            check=True).stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.SubprocessError):
        gpu = "GPU not named (nvidia-smi not found)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    return (f"GPU: {gpu}. CPU: {cpu}, {os.cpu_count()} logical CPUs. "
            f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})")


def table(rows: list[Row]) -> str:
    cpu = {r.model: r for r in rows if r.providers == "cpu"}
    lines = ["| model | providers (used) | parity against the recorded sample | IO binding | "
             "batch 1 p50 ms | p99 ms | vs CPU | batched rows/s | vs CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.batch1_ms:
            lines.append(f"| {r.model} | {r.providers} | {r.parity} | | | | | | |")
            continue
        base = cpu[r.model]
        p50 = statistics.median(r.batch1_ms)
        p99 = float(np.percentile(r.batch1_ms, 99))
        rps = r.batch_size / statistics.median(r.batched_s)
        base_rps = base.batch_size / statistics.median(base.batched_s)
        lines.append(
            f"| {r.model} | {r.providers} ({r.used}) | {r.parity} | "
            f"{'yes' if r.io_binding else 'no'} | {p50:.2f} | {p99:.2f} | "
            f"{statistics.median(base.batch1_ms) / p50:.1f}x | {rps:.0f} (batch "
            f"{r.batch_size}) | {rps / base_rps:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50, help="batch-1 runs per round")
    parser.add_argument("--batch-runs", type=int, default=5, help="batched runs per round")
    parser.add_argument("--models", default="resnet18,bert")
    parser.add_argument("--resnet-batch", type=int, default=32)
    parser.add_argument("--bert-batch", type=int, default=16)
    parser.add_argument("--sets", default=";".join(SETS),
                        help="provider sets to compare with the CPU, separated by ';'")
    args = parser.parse_args()
    sets = [s.strip() for s in args.sets.split(";") if s.strip()]

    import onnxruntime as ort

    gpu = any(s.startswith(("cuda", "tensorrt")) for s in sets)
    if gpu and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"benchmarks/gpu.py needs ONNX Runtime's CUDA provider: this onnxruntime "
              f"{ort.__version__} has {ort.get_available_providers()}. Install onnxruntime-gpu "
              "in place of onnxruntime on a machine with an NVIDIA GPU (docs/serving.md, "
              "Hardware).", file=sys.stderr)
        return 2
    from lockgate.api.facade import Lockgate

    builders = {"resnet18": (resnet18_case, args.resnet_batch),
                "bert": (bert_case, args.bert_batch)}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, Lockgate.open(Path(tmp) / "home") as lg:
        for wanted in args.models.split(","):
            build, batch_size = builders[wanted.strip()]
            case = register(lg, build, batch_size)
            predictors, case_rows = open_sets(lg, case, sets, Path(tmp))
            measure(case, predictors, case_rows, rounds=args.rounds, runs=args.runs,
                    batch_runs=args.batch_runs)
            rows.extend(case_rows)
            del predictors
    print(device())
    print(f"{args.rounds} alternating rounds of {args.runs} batch-1 runs and {args.batch_runs} "
          "batched runs per provider set, after warm-up")
    print()
    print(table(rows))
    failed = [r for r in rows if r.parity.startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
