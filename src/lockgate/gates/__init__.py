"""Promotion gates as policy code: each a small class behind the Gate protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lockgate.errors import ConfigError
from lockgate.gates.base import AllOf, Evidence, Gate, GateContext
from lockgate.gates.parity import ParityGate, UnsafeAllowGate
from lockgate.gates.supplychain import (
    LicensesGate,
    SbomValidGate,
    SignatureGate,
    VulnerabilitiesGate,
)

__all__ = ["GATES", "AllOf", "Evidence", "Gate", "GateContext", "ParityGate", "UnsafeAllowGate",
           "build"]

GATES: dict[str, Callable[[], Gate]] = {
    "parity": ParityGate,
    "sbom_valid": SbomValidGate,
    "signature": SignatureGate,
    "vulnerabilities": VulnerabilitiesGate,
    "licenses": LicensesGate,
    "unsafe_allow": UnsafeAllowGate,
}


def build(names: Sequence[str]) -> AllOf:
    """The AllOf for the named gates; unknown names and an empty list are configuration errors."""
    unknown = [n for n in names if n not in GATES]
    if unknown:
        raise ConfigError(f"unknown gate(s) {unknown}", hint=f"known gates: {sorted(GATES)}")
    return AllOf([GATES[n]() for n in names])
