"""Parity tolerances per provider set: which tolerances the answers of a version served on an
execution provider set are compared with, against the outputs recorded at registration.

A set of the CPU alone is held to ``[parity] atol``/``rtol``, as at registration. Any other set
is held to the tolerances of its precision (:attr:`ProviderSet.precision
<lockgate.config.providers.ProviderSet.precision>`), from ``[provider_tolerances]``::

    [provider_tolerances.fp32]   # an accelerator computing in fp32 (CUDA may use TF32)
    atol = 1e-4
    rtol = 1e-3
    [provider_tolerances.fp16]   # TensorRT fp16, MIGraphX fp16, OpenVINO FP16
    atol = 1e-2
    rtol = 1e-2
    [provider_tolerances.int8]   # TensorRT or MIGraphX int8
    atol = 5e-2
    rtol = 5e-2

An accelerated set is never held tighter than the CPU: each tolerance is the larger of the
precision's and ``[parity]``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockgate.config.kinds import Found, Kind
from lockgate.config.providers import ProviderSet
from lockgate.errors import ConfigError

__all__ = ["DEFAULT_PROVIDER_TOLERANCES", "PRECISIONS", "PROVIDER_TOLERANCES", "Tolerance",
           "tolerance_for"]

PRECISIONS = ("fp32", "fp16", "int8")

DEFAULT_PROVIDER_TOLERANCES: Mapping[str, Mapping[str, float]] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-3},
    "fp16": {"atol": 1e-2, "rtol": 1e-2},
    "int8": {"atol": 5e-2, "rtol": 5e-2},
}
"""The tolerances of an accelerated provider set, by the precision it may compute in."""


@dataclass(frozen=True)
class Tolerance:
    """The tolerances one provider set is held to, and why: ``source`` is ``parity`` (the
    CPU alone: ``[parity]``) or ``provider_tolerances.<precision>``."""

    atol: float
    rtol: float
    precision: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol, "precision": self.precision,
                "source": self.source}


def tolerance_for(providers: ProviderSet, *, atol: float, rtol: float,
                  table: Mapping[str, Mapping[str, float]] = DEFAULT_PROVIDER_TOLERANCES
                  ) -> Tolerance:
    """The tolerances ``providers`` is held to, given ``[parity]``'s ``atol``/``rtol`` and
    the ``[provider_tolerances]`` table."""
    prec = providers.precision
    if providers.is_cpu_only:
        return Tolerance(atol, rtol, prec, "parity")
    row = {**DEFAULT_PROVIDER_TOLERANCES[prec], **table.get(prec, {})}
    return Tolerance(max(atol, float(row["atol"])), max(rtol, float(row["rtol"])), prec,
                     f"provider_tolerances.{prec}")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not value >= 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return float(value)


def tolerance_tables(section: str, what: str, names: tuple[str, ...], hint: str) -> Kind:
    """The Kind of ``[<section>.<name>]`` tables of atol and rtol, one per ``what`` in
    ``names``, each merged over the value so far; ``hint`` shows one written out."""

    def read(table: Any, at: Found) -> dict[str, dict[str, float]]:
        if not isinstance(table, dict):
            raise ConfigError(f"{at.path}: [{section}] must hold tables per {what}", hint=hint)
        out = {k: dict(v) for k, v in at.current.items()}
        for name, row in table.items():
            where = f"{at.path}: {section}.{name}"
            if name not in names:
                raise ConfigError(f"{where}: unknown {what}", hint=f"one of {list(names)}")
            if not isinstance(row, dict):
                raise ConfigError(f"{where}: expected a table of atol and rtol", hint=hint)
            unknown = sorted(set(row) - {"atol", "rtol"})
            if unknown:
                raise ConfigError(f"{where}: unknown keys {unknown}",
                                  hint="known: ['atol', 'rtol']")
            out[name] = {**out.get(name, {}),
                         **{k: _number(v, f"{where}.{k}") for k, v in row.items()}}
        return out

    return Kind(f"[{section}.<{'|'.join(names)}>] tables of atol and rtol", read)


PROVIDER_TOLERANCES = tolerance_tables(
    "provider_tolerances", "precision", PRECISIONS,
    "write [provider_tolerances.fp16] with atol = 1e-2 and rtol = 1e-2")
