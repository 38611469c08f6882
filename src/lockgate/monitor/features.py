"""Which features a model's tensors have, and their per-row values.

The same rules apply to the reference data at registration and to live requests, so the two
sides always describe the same features:

* a rank-1 tensor ``x`` (one value per row) is the feature ``x``;
* a rank-2 tensor with up to :data:`MAX_COLUMNS` columns gives one feature per column,
  ``x[0]``, ``x[1]`` …; a wider one is summarised per row as ``x.mean`` and ``x.std``;
* a tensor of rank 3 or more is image-like: per channel (axis 1, up to :data:`MAX_CHANNELS`)
  the row's mean and standard deviation, ``x.mean[c]`` and ``x.std[c]`` — never per pixel;
* a rank-2 float output with several columns also gives ``y.argmax`` (the predicted class).

Floats are numerical features; integers, booleans and strings are categorical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_CHANNELS", "MAX_COLUMNS", "Column", "columns"]

MAX_COLUMNS = 64
MAX_CHANNELS = 16

Kind = Literal["numerical", "categorical"]
Column = tuple[Kind, NDArray[Any]]
"""A feature's kind and its values, one per row."""


def _kind(arr: NDArray[Any]) -> Kind:
    return "numerical" if arr.dtype.kind in "fc" else "categorical"


def _values(arr: NDArray[Any]) -> NDArray[Any]:
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    return arr.astype(str).astype(object)


def _tensor(name: str, arr: NDArray[Any], out: dict[str, Column], *, output: bool) -> None:
    if arr.ndim == 0:
        return
    n = arr.shape[0]
    kind = _kind(arr)
    if arr.ndim == 1:
        out[name] = (kind, _values(arr))
        return
    if arr.ndim == 2:
        width = arr.shape[1]
        if width <= MAX_COLUMNS:
            values = _values(arr)
            for i in range(width):
                out[f"{name}[{i}]"] = (kind, values[:, i])
        elif kind == "numerical":
            flat = arr.astype(np.float64, copy=False)
            out[f"{name}.mean"] = ("numerical", flat.mean(axis=1))
            out[f"{name}.std"] = ("numerical", flat.std(axis=1))
        if output and kind == "numerical" and width > 1:
            out[f"{name}.argmax"] = ("categorical", arr.argmax(axis=1).astype(np.float64))
        return
    if kind != "numerical" or n == 0:
        return
    flat = arr.astype(np.float64, copy=False)
    channels = arr.shape[1]
    if channels <= MAX_CHANNELS:
        by_channel = flat.reshape(n, channels, -1)
        means, stds = by_channel.mean(axis=2), by_channel.std(axis=2)
        for c in range(channels):
            out[f"{name}.mean[{c}]"] = ("numerical", means[:, c])
            out[f"{name}.std[{c}]"] = ("numerical", stds[:, c])
    else:
        per = flat.reshape(n, -1)
        out[f"{name}.mean"] = ("numerical", per.mean(axis=1))
        out[f"{name}.std"] = ("numerical", per.std(axis=1))


def columns(inputs: Mapping[str, NDArray[Any]],
            outputs: Mapping[str, NDArray[Any]] | None = None) -> dict[str, Column]:
    """Every feature of one request (or one data set) and its values, one per row; inputs
    first, in the order given, then outputs."""
    out: dict[str, Column] = {}
    for name, arr in inputs.items():
        _tensor(name, np.asarray(arr), out, output=False)
    for name, arr in (outputs or {}).items():
        _tensor(name, np.asarray(arr), out, output=True)
    return out
