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

from lockgate.config.tolerances import tolerance_tables

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


OPTIMIZE_TOLERANCES = tolerance_tables(
    "optimize_tolerances", "transformation", TRANSFORMATIONS,
    "write [optimize_tolerances.dynamic-int8] with atol = 0.1 and rtol = 0.1")
