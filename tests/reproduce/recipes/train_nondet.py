"""A deliberately nondeterministic training script: the data come from the OS's entropy."""

from __future__ import annotations

import os

import numpy as np


def train(*args: str):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x @ rng.normal(size=5) > 0).astype(np.int64)
    return LogisticRegression(max_iter=200).fit(x, y), x[:4]
