"""What ``lockgate optimize --quantize dynamic-int8`` buys on the CPU, and what it costs.

Two torch models, each trained briefly on a synthetic classification task (so that accuracy
means something), registered with lockgate and optimized into a dynamic-int8 version:

- an MLP 256-1024-1024-10 (ReLU);
- a small transformer encoder: 2 layers, d_model 128, 4 heads, feed-forward 256, sequences of
  32, mean-pooled into 10 classes.

For each: the int8 version's parity against its fp32 parent (the worst absolute error of the
report ``lockgate optimize`` stored), the sizes, the batch-1 speed-up ``lockgate optimize``
measured (one thread, alternating runs) and the benchmark's own alternating rounds at batch 1
and batch 64 (ONNX Runtime's default threads, ``--rounds`` rounds of ``--seconds`` each, the
order swapped every round; the ratio of medians), and the accuracy of both versions on
held-out data (and how often their labels agree).

    .venv/bin/python benchmarks/optimize.py [--rounds 5] [--seconds 1] [--runs 300]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from lockgate.api.facade import Lockgate

CLASSES = 10


@dataclass
class Task:
    name: str
    model: torch.nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _labels(x: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(x @ teacher) @ torch.linspace(-1, 1, teacher.shape[1] * CLASSES)
            .reshape(teacher.shape[1], CLASSES)).argmax(dim=1)


def mlp_task(rng: torch.Generator) -> Task:
    x = torch.randn(24_000, 256, generator=rng)
    y = _labels(x, torch.randn(256, 32, generator=rng) / 256**0.5 * 2)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, CLASSES))
    return Task("MLP 256-1024-1024-10", model, x[:20_000], y[:20_000], x[20_000:], y[20_000:])


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(128, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def encoder_task(rng: torch.Generator) -> Task:
    x = torch.randn(6_000, 32, 128, generator=rng)
    y = _labels(x.mean(dim=1) * 32**0.5, torch.randn(128, 32, generator=rng) / 128**0.5 * 2)
    return Task("transformer encoder 2x128 (seq 32)", Encoder(), x[:5_000], y[:5_000],
                x[5_000:], y[5_000:])


def train(task: Task, *, epochs: int, batch: int = 128) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    task.model.train()
    for _ in range(epochs):
        order = torch.randperm(len(task.x_train))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss_fn(task.model(task.x_train[idx]), task.y_train[idx]).backward()
            opt.step()
    task.model.eval()


def alternating(runs: list[Callable[[], Any]], *, rounds: int, seconds: float) -> list[float]:
    """Median seconds per call of each runner over ``rounds`` rounds, the order swapped every
    round."""
    per: list[list[float]] = [[] for _ in runs]
    for r in range(rounds):
        order = list(range(len(runs)))[:: 1 if r % 2 == 0 else -1]
        for i in order:
            runs[i]()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                runs[i]()
                n += 1
            per[i].append((time.perf_counter() - start) / n)
    return [statistics.median(p) for p in per]


def _session(data: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def measure(lg: Lockgate, task: Task, args: argparse.Namespace) -> dict[str, Any]:
    sample = task.x_test[:8]
    parent = lg.register(task.model, sample, name=task.name.split()[0].lower(), seed=0)
    child = lg.optimize(f"{parent.name}@{parent.number}", quantize="dynamic-int8",
                        runs=args.runs)
    lineage = child.environment["lineage"]
    sessions = [_session(lg.model_bytes(v)) for v in (parent, child)]
    name = sessions[0].get_inputs()[0].name
    x = task.x_test.numpy()
    labels = [np.concatenate([s.run(None, {name: x[i:i + 256]})[0].argmax(axis=1)
                              for i in range(0, len(x), 256)]) for s in sessions]
    truth = task.y_test.numpy()
    speed = {}
    for batch in (1, 64):
        feeds = {name: np.ascontiguousarray(x[:batch])}
        fp32, int8 = alternating([lambda s=s, f=feeds: s.run(None, f) for s in sessions],
                                 rounds=args.rounds, seconds=args.seconds)
        speed[batch] = (fp32 * 1e3, int8 * 1e3, fp32 / int8)
    report = child.parity
    assert report is not None
    return {
        "model": task.name, "parity_max_abs": max(o.max_abs_error for o in report.outputs),
        "tolerance": lineage["tolerance"], "measured": lineage["measured"], "speed": speed,
        "accuracy_fp32": float((labels[0] == truth).mean()),
        "accuracy_int8": float((labels[1] == truth).mean()),
        "agreement": float((labels[0] == labels[1]).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    rng = torch.Generator().manual_seed(0)
    tasks = [mlp_task(rng), encoder_task(rng)]
    for task in tasks:
        train(task, epochs=args.epochs)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, onnxruntime "
          f"{ort.__version__}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp, Lockgate.open(Path(tmp) / "home") as lg:
        rows = [measure(lg, task, args) for task in tasks]
    print()
    print("| model | fp32 bytes | int8 bytes | size | parity max abs (tolerance) "
          "| batch-1 speed-up, optimize (1 thread) | batch 1 fp32 / int8 ms (ratio) "
          "| batch 64 fp32 / int8 ms (ratio) | accuracy fp32 / int8 | labels agree |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, s, t = r["measured"], r["speed"], r["tolerance"]
        print(f"| {r['model']} | {m['parent_bytes']:,} | {m['child_bytes']:,} "
              f"| {m['size_ratio']:.1%} | {r['parity_max_abs']:.3g} (atol {t['atol']:g}, "
              f"rtol {t['rtol']:g}) | {m['speedup']:.2f}x ({m['parent_latency_ms']:.3g} -> "
              f"{m['child_latency_ms']:.3g} ms) "
              f"| {s[1][0]:.3g} / {s[1][1]:.3g} ({s[1][2]:.2f}x) "
              f"| {s[64][0]:.3g} / {s[64][1]:.3g} ({s[64][2]:.2f}x) "
              f"| {r['accuracy_fp32']:.2%} / {r['accuracy_int8']:.2%} | {r['agreement']:.2%} |")


if __name__ == "__main__":
    main()
