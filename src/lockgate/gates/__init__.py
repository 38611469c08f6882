"""Promotion gates as policy code: each a small class behind the Gate protocol, configured from
the policy file and checked on load."""

from __future__ import annotations

from collections.abc import Sequence

from lockgate.config.names import unknown_name
from lockgate.config.settings import GateSpec, Settings
from lockgate.errors import ConfigError
from lockgate.gates.base import AllOf, Configurable, Evidence, Gate, GateContext, ServerHandle
from lockgate.gates.champion import MetricsGate
from lockgate.gates.parity import ParityGate, UnsafeAllowGate
from lockgate.gates.recorded import PinnedDependenciesGate, ReproducibleGate, SeedsRecordedGate
from lockgate.gates.release import ApprovalGate, RollbackReadyGate, ShadowDivergenceGate
from lockgate.gates.serving import InfraValidationGate, LatencyBudgetGate
from lockgate.gates.supplychain import (
    LicensesGate,
    SbomValidGate,
    SignatureGate,
    VulnerabilitiesGate,
)

__all__ = ["GATES", "AllOf", "Configurable", "Evidence", "Gate", "GateContext", "ServerHandle",
           "build", "check_policy"]

GATES: dict[str, type[Configurable]] = {
    g.name: g for g in (
        ParityGate, PinnedDependenciesGate, SeedsRecordedGate, ReproducibleGate,
        SbomValidGate, SignatureGate, VulnerabilitiesGate, LicensesGate, MetricsGate,
        InfraValidationGate, LatencyBudgetGate, ApprovalGate, RollbackReadyGate,
        ShadowDivergenceGate, UnsafeAllowGate,
    )
}


def build(specs: Sequence[GateSpec | str], where: str = "gates") -> AllOf:
    """The AllOf for the given gates; unknown names, bad parameters and an empty list are
    configuration errors naming the policy key."""
    gates: list[Gate] = []
    for i, spec in enumerate(specs):
        spec = GateSpec(spec) if isinstance(spec, str) else spec
        cls = GATES.get(spec.name)
        if cls is None:
            raise ConfigError(f"{where}[{i}]: unknown gate {spec.name!r}",
                              hint=f"known gates: {sorted(GATES)}")
        gates.append(cls.configure(spec.params, f"{where}[{i}] ({spec.name})"))
    return AllOf(gates)


def check_policy(settings: Settings) -> None:
    """Build every transition's gates once, so a bad policy fails on load, not at promotion."""
    if not settings.gates:
        raise ConfigError("the policy has no [gates]; every promotion would be refused",
                          hint='add at least "*" = ["parity"]')
    for key, specs in settings.gates.items():
        where = f'gates."{key}"'
        merged = [GateSpec(g.name, {**settings.gate_params.get(g.name, {}), **g.params})
                  for g in specs]
        try:
            build(merged, where)
        except ConfigError as exc:
            if "at least one gate" in exc.message:
                raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
            raise
    unknown = sorted(set(settings.gate_params) - set(GATES))
    if unknown:
        raise unknown_name(f"[gate.{unknown[0]}]: unknown gate", unknown[0], GATES)
