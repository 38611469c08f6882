"""Small real models and policy files for the gate tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def sklearn_model(seed: int = 0, n: int = 120) -> tuple[Any, np.ndarray]:
    """A fitted LogisticRegression on fixed-seed data, and a sample batch."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return LogisticRegression().fit(x, y), x[:4]


def torch_model(seed: int = 0) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net.eval()
    return net, torch.randn(3, 4)


def write_policy(home: Path, text: str) -> Path:
    """Write ``text`` as the home's lockgate.toml (the policy, for these tests)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "lockgate.toml"
    path.write_text(text, encoding="utf-8")
    return path
