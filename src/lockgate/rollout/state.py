"""Deployments as state: what the servers of one model serve, changed only through these
transitions and stored with a generation number that every change bumps.

    stable      the version unversioned requests go to (blue)
    candidate   an optional second version (green) taking ``weight`` percent of them (canary)
    shadow      an optional version that sees mirrored requests and answers nobody
    providers   the execution providers its versions load on (a ProviderSet record); none:
                the server's ``[serve] providers``
    previous    the stable version before the last switch: ``rollback`` goes back to it
    state       ``healthy``, ``degraded`` (automatic rollback fired) or ``rolled-back``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lockgate.errors import InvalidInputError

__all__ = ["Deployment"]


@dataclass(frozen=True)
class Deployment:
    name: str
    stable: int
    candidate: int | None = None
    weight: int = 0
    shadow: int | None = None
    previous: int | None = None
    state: str = "healthy"
    analysis: Mapping[str, Any] | None = None
    batching: Mapping[str, Any] | None = None
    """Dynamic batching settings (see lockgate.serve.batching.BatchingConfig)."""
    providers: Mapping[str, Any] | None = None
    """Execution providers (``ProviderSet.to_dict()``); None: the server's setting."""
    generation: int = 0
    updated_at: str = ""

    def record(self) -> dict[str, Any]:
        return {"stable": self.stable, "candidate": self.candidate, "weight": self.weight,
                "shadow": self.shadow, "previous": self.previous, "state": self.state,
                "analysis": dict(self.analysis) if self.analysis else None,
                "batching": dict(self.batching) if self.batching else None,
                "providers": _providers_record(self.providers)}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, **self.record(), "generation": self.generation,
                "updated_at": self.updated_at}

    @classmethod
    def from_record(cls, name: str, generation: int, rec: Mapping[str, Any],
                    updated_at: str = "") -> Deployment:
        return cls(name=name, stable=int(rec["stable"]), candidate=rec.get("candidate"),
                   weight=int(rec.get("weight", 0)), shadow=rec.get("shadow"),
                   previous=rec.get("previous"), state=str(rec.get("state", "healthy")),
                   analysis=rec.get("analysis"), batching=rec.get("batching"),
                   providers=rec.get("providers"),
                   generation=generation, updated_at=updated_at)

    # -- transitions -----------------------------------------------------------------------
    def switch(self, version: int) -> Deployment:
        """Blue/green: ``version`` becomes stable; the old stable is kept as ``previous``."""
        if version == self.stable:
            raise InvalidInputError(f"{self.name}@{version} is already the stable version")
        return replace(self, stable=version, previous=self.stable, candidate=None, weight=0,
                       state="healthy")

    def canary(self, version: int, weight: int,
               analysis: Mapping[str, Any] | None = None) -> Deployment:
        _check_weight(weight)
        if version == self.stable:
            raise InvalidInputError(f"{self.name}@{version} is the stable version already")
        return replace(self, candidate=version, weight=weight, state="healthy",
                       analysis=check_analysis(analysis) if analysis else self.analysis)

    def set_weight(self, weight: int) -> Deployment:
        _check_weight(weight)
        if self.candidate is None:
            raise InvalidInputError(f"{self.name} has no candidate to weight",
                                    hint="deploy one with --canary WEIGHT")
        return replace(self, weight=weight)

    def promote_candidate(self) -> Deployment:
        if self.candidate is None:
            raise InvalidInputError(f"{self.name} has no candidate to promote")
        return replace(self, stable=self.candidate, previous=self.stable, candidate=None,
                       weight=0, state="healthy")

    def with_shadow(self, version: int | None,
                    analysis: Mapping[str, Any] | None = None) -> Deployment:
        return replace(self, shadow=version,
                       analysis=check_analysis(analysis) if analysis else self.analysis)

    def drop_shadow(self) -> Deployment:
        return replace(self, shadow=None, state="degraded")

    def rollback(self, *, degraded: bool = False) -> Deployment:
        """Drop the candidate (weight 0) if there is one, else go back to ``previous``."""
        state = "degraded" if degraded else "rolled-back"
        if self.candidate is not None:
            return replace(self, candidate=None, weight=0, state=state)
        if self.previous is None:
            raise InvalidInputError(f"{self.name} has nothing to roll back to",
                                    hint="no earlier stable version was deployed")
        return replace(self, stable=self.previous, previous=self.stable, state=state)


def _providers_record(providers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not providers:
        return None
    return {"providers": [dict(p) for p in providers.get("providers", ())],
            "fallback": providers.get("fallback", "none")}


def _check_weight(weight: int) -> None:
    if not 0 <= weight <= 100:
        raise InvalidInputError(f"canary weight must be 0-100, got {weight}")


ANALYSIS_KEYS = {"metric": str, "max": float, "interval_s": float, "count": int,
                 "min_requests": int, "failure_limit": int, "inconclusive": str}
METRICS = ("error_rate", "p99_latency", "shadow_divergence")


def check_analysis(rule: Mapping[str, Any]) -> dict[str, Any]:
    """An automatic-rollback rule, checked: ``metric`` and ``max`` required."""
    unknown = sorted(set(rule) - set(ANALYSIS_KEYS))
    if unknown:
        raise InvalidInputError(f"analysis: unknown keys {unknown}",
                                hint=f"keys: {sorted(ANALYSIS_KEYS)}")
    if rule.get("metric") not in METRICS:
        raise InvalidInputError(f"analysis: metric must be one of {list(METRICS)}")
    if "max" not in rule:
        raise InvalidInputError("analysis: give the max value the metric may reach")
    out: dict[str, Any] = {}
    for key, kind in ANALYSIS_KEYS.items():
        if key in rule:
            try:
                out[key] = kind(rule[key])
            except (TypeError, ValueError):
                raise InvalidInputError(f"analysis.{key}: expected {kind.__name__}") from None
    if out.get("inconclusive", "ignore") not in ("ignore", "fail"):
        raise InvalidInputError("analysis.inconclusive: 'ignore' or 'fail'")
    if out.get("interval_s", 10.0) <= 0:
        raise InvalidInputError("analysis.interval_s must be positive")
    return out
