"""Which execution provider sets a version is proven on: the ``infra_validation`` results it
passed, per provider set, read from its stored gate runs (passed or refused promotions alike:
the gate's own result is what counts).

    sets = validated_sets(lg.gate_runs("clf@3"))
    sets["cuda+cpu"]["validated_at"]

A result counts for the set it ran on (:attr:`ProviderSet.key
<lockgate.config.providers.ProviderSet.key>`) when the gate passed and the child server did not
fall back to the CPU (then it proved the CPU alone). Results stored before provider sets existed
ran on the CPU and count for ``cpu``.

A server following the deployments refuses to load a version on a set other than the CPU alone
that it never passed ``infra_validation`` on while ``[serve] unvalidated_providers = "refuse"``
(the default): see :meth:`Validations.check_serving`. A server named versions (``lockgate serve
NAME@V``, as the gate's own child server is) serves what it is told, as it does for stages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lockgate.api.home import Home
from lockgate.config.providers import ProviderSet
from lockgate.errors import ServeError
from lockgate.types import GateRun, Version

__all__ = ["GATE", "Validations", "validated_sets"]

GATE = "infra_validation"
_CPU_KEY = ProviderSet().key


def _record(run: GateRun, result: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The provider set a passed, not fallen-back infra_validation result proves, and what
    is shown of it; None for any other result."""
    if result.get("gate") != GATE or result.get("status") != "pass":
        return None
    measured = result.get("measured") or {}
    if not isinstance(measured, Mapping) or measured.get("fell_back"):
        return None
    key = str(measured.get("provider_set") or _CPU_KEY)
    found = measured.get("tolerance")
    tolerance: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return key, {
        "provider_set": key,
        "providers": measured.get("providers") or ProviderSet().to_dict(),
        "providers_used": list(measured.get("providers_used") or []),
        "precision": str(measured.get("precision") or "fp32"),
        "atol": tolerance.get("atol"), "rtol": tolerance.get("rtol"),
        "validated_at": run.created_at, "actor": run.actor,
        "transition": f"{run.from_stage}->{run.to_stage}",
    }


def validated_sets(runs: Iterable[GateRun]) -> dict[str, dict[str, Any]]:
    """Each provider set the gate runs prove the version on (its key → the latest passing
    result's record: providers, providers used, precision, tolerances, when and by whom)."""
    found: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r.created_at):
        for result in run.results:
            rec = _record(run, result)
            if rec is not None:
                found[rec[0]] = rec[1]
    return found


class Validations:
    """The provider sets the home's versions are proven on, and the serving check on them."""

    def __init__(self, home: Home) -> None:
        self._home = home

    def validated_sets(self, v: Version) -> dict[str, dict[str, Any]]:
        """The provider sets ``v`` passed infra_validation on (see :func:`validated_sets`)."""
        return validated_sets(self._home.meta.gate_runs(v.name, v.number))

    def check_serving(self, v: Version, providers: ProviderSet) -> None:
        """Refuse (ServeError) serving ``v`` on ``providers`` when the set is not the CPU
        alone, ``v`` never passed infra_validation on it and policy says
        ``unvalidated_providers = "refuse"``. Registration proves the CPU; nothing else is
        assumed."""
        if providers.is_cpu_only:
            return
        if self._home.settings.unvalidated_providers == "allow":
            return
        proven = self.validated_sets(v)
        if providers.key in proven:
            return
        on = ", ".join(sorted(proven)) or "none"
        raise ServeError(
            f"{v.ref} was never validated on the provider set {providers.key} (infra_validation "
            f"passed on: {on}); it is not served there",
            hint=f"promote it through a transition whose infra_validation gate runs with "
                 f"providers = \"{providers}\" on a machine that has them (a refused promotion "
                 "records the gate's result too), or set [serve] unvalidated_providers = "
                 "\"allow\"")
