"""A small PyTorch MLP for `lockgate compare` tests, registered with --from."""

from __future__ import annotations

import numpy as np


def build(*args: str):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    return model.eval(), np.random.default_rng(0).random((2, 8)).astype(np.float32)
