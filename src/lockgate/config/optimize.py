"""Parity tolerances of optimized versions (``lockgate optimize``), per transformation.

An optimized version is compared with its parent, and with the samples recorded when the
first version of its line was registered, within the tolerances of its transformation, from
``[optimize_tolerances]``::

    [optimize_tolerances.dynamic-int8]   # int8 weights: the loosest
    atol = 0.1
    rtol = 0.1
    [optimize_tolerances.fp16]           # float16 weights and arithmetic
    atol = 1e-2
    rtol = 1e-2
    [optimize_tolerances.ort-extended]   # ONNX Runtime's fusions: the same arithmetic, reordered
    atol = 1e-4
    rtol = 1e-3

A table given sets the keys it names; the others keep their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lockgate.config.kinds import Found, Kind
from lockgate.errors import ConfigError

__all__ = ["DEFAULT_OPTIMIZE_TOLERANCES", "OPTIMIZE_TOLERANCES", "TRANSFORMATIONS",
           "optimize_tolerance"]

DEFAULT_OPTIMIZE_TOLERANCES: Mapping[str, Mapping[str, float]] = {
    "dynamic-int8": {"atol": 0.1, "rtol": 0.1},
    "fp16": {"atol": 1e-2, "rtol": 1e-2},
    "ort-basic": {"atol": 1e-4, "rtol": 1e-3},
    "ort-extended": {"atol": 1e-4, "rtol": 1e-3},
}
TRANSFORMATIONS = tuple(DEFAULT_OPTIMIZE_TOLERANCES)


def optimize_tolerance(kind: str, table: Mapping[str, Mapping[str, float]]
                       ) -> tuple[float, float]:
    """``(atol, rtol)`` of transformation ``kind``: the policy's over the defaults."""
    row = {**DEFAULT_OPTIMIZE_TOLERANCES[kind], **table.get(kind, {})}
    return float(row["atol"]), float(row["rtol"])


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not value >= 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return float(value)


def _read(table: Any, at: Found) -> dict[str, dict[str, float]]:
    """``[optimize_tolerances.<transformation>]`` tables merged over the value so far."""
    hint = "write [optimize_tolerances.dynamic-int8] with atol = 0.1 and rtol = 0.1"
    if not isinstance(table, dict):
        raise ConfigError(f"{at.path}: [optimize_tolerances] must hold tables per "
                          "transformation", hint=hint)
    out = {k: dict(v) for k, v in at.current.items()}
    for kind, row in table.items():
        where = f"{at.path}: optimize_tolerances.{kind}"
        if kind not in DEFAULT_OPTIMIZE_TOLERANCES:
            raise ConfigError(f"{where}: unknown transformation",
                              hint=f"one of {list(TRANSFORMATIONS)}")
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a table of atol and rtol", hint=hint)
        unknown = sorted(set(row) - {"atol", "rtol"})
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}", hint="known: ['atol', 'rtol']")
        out[kind] = {**out.get(kind, {}),
                     **{k: _number(v, f"{where}.{k}") for k, v in row.items()}}
    return out


OPTIMIZE_TOLERANCES = Kind(
    "[optimize_tolerances.<dynamic-int8|fp16|ort-basic|ort-extended>] tables of atol and rtol",
    _read)
