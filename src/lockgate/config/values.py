"""The settings as typed values: :class:`Settings`, the gates of a transition (:class:`GateSpec`),
accepted vulnerabilities (:class:`VulnAllow`) and the default gate policy.

Nothing here reads a file or the environment; :mod:`lockgate.config.load` builds a
:class:`Settings` from the rows of :data:`lockgate.config.table.SETTINGS`.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from lockgate.config.providers import CPU, ProviderSet, ProviderSpec
from lockgate.config.tolerances import DEFAULT_PROVIDER_TOLERANCES

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_STAGES",
    "SEED_POLICY",
    "SEVERITIES",
    "GateSpec",
    "LicenseDecision",
    "Settings",
    "VulnAllow",
    "default_gates",
]

CONFIG_FILE = "lockgate.toml"
DEFAULT_STAGES = ("prototype", "stabilized", "production", "archived")
SEVERITIES = ("NONE", "LOW", "MODERATE", "HIGH", "CRITICAL")


@dataclass(frozen=True)
class VulnAllow:
    """An accepted vulnerability: its id, until when, and why."""

    id: str
    expires: date
    reason: str


@dataclass(frozen=True)
class LicenseDecision:
    """A per-package license decision of the policy: the license it is under (``license``, an
    SPDX expression the metadata does not say) or accepted as it is (``accept``), why, until
    when (None: no end), who decided, and the versions it covers (a PEP 440 specifier; empty:
    every version)."""

    package: str
    reason: str
    license: str | None = None
    accept: bool = False
    expires: date | None = None
    by: str = ""
    version: str = ""


@dataclass(frozen=True)
class GateSpec:
    """One gate in a transition's list, with the parameters given there."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.name, **dict(self.params)}


def _specs(*names: str) -> tuple[GateSpec, ...]:
    return tuple(GateSpec(n) for n in names)


SEED_POLICY: Mapping[str, tuple[GateSpec, ...]] = {
    "prototype->stabilized": _specs("parity", "pinned_dependencies", "seeds_recorded",
                                    "reproducible"),
    "*->production": _specs("parity", "sbom_valid", "signature", "vulnerabilities", "licenses",
                            "metrics", "infra_validation", "latency_budget", "approval",
                            "rollback_ready"),
    "*": _specs("parity"),
}
"""The default policy, after the seed article: Stabilization needs pinned dependencies, recorded
seeds and reproducibility; Production needs the supply chain, metrics against the champion,
infrastructure validation, a latency budget, approval and a rollback plan."""


def default_gates(stages: Sequence[str]) -> dict[str, tuple[GateSpec, ...]]:
    """:data:`SEED_POLICY` less the keys naming stages that are not configured."""
    out = {}
    for key, specs in SEED_POLICY.items():
        src, _, dst = key.partition("->")
        if all(st in ("*", "") or st in stages for st in (src, dst)):
            out[key] = specs
    return out


@dataclass(frozen=True)
class Settings:
    """Every setting of one home, read once at the edge. Each field is a row of
    :data:`lockgate.config.table.SETTINGS`, which says where it is read from."""

    home: Path
    database_url: str
    artifact_root: Path
    user: str
    artifact_url: str | None = None
    s3_endpoint_url: str | None = None
    stages: tuple[str, ...] = DEFAULT_STAGES
    exclusive_stages: tuple[str, ...] = ("production",)
    stage_aliases: Mapping[str, str] = field(default_factory=lambda: {"production": "champion"})
    gates: Mapping[str, tuple[GateSpec, ...]] = field(
        default_factory=lambda: default_gates(DEFAULT_STAGES))
    gate_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    policy_file: Path | None = None
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-3
    parity_samples: int = 8
    provider_tolerances: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PROVIDER_TOLERANCES.items()})
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    serve_grpc_port: int = -1
    serve_workers: int = 0
    serve_max_head_bytes: int = 65536
    serve_max_headers: int = 100
    serve_head_timeout_s: float = 10.0
    serve_body_timeout_s: float = 30.0
    serve_min_body_rate: int = 65536
    serve_keep_alive_s: float = 5.0
    serve_max_connections: int = 1024
    serve_decode_budget: int = 256 << 20
    serve_max_elements: int = 1 << 26
    serve_auth: str = "none"
    serve_providers: tuple[ProviderSpec, ...] = (ProviderSpec(CPU.ort_name),)
    serve_provider_fallback: str = "none"
    unvalidated_providers: str = "refuse"
    signing_key: Path | None = None
    public_keys: tuple[Path, ...] = ()
    require_signature: bool = True
    vuln_max_severity: str = "MODERATE"
    vuln_max_age_days: int = 30
    vuln_allow: tuple[VulnAllow, ...] = ()
    license_allow: frozenset[str] | None = None
    license_deny: frozenset[str] | None = None
    license_decisions: tuple[LicenseDecision, ...] = ()
    environment_drift: str = "warn"
    environment_drift_ignore: tuple[str, ...] = ()
    notify_command: tuple[str, ...] = ()
    capture_window: int = 5000
    request_log: Path | None = None
    request_log_rate: float = 0.01
    request_log_format: str = "jsonl"
    monitor: Mapping[str, Any] = field(default_factory=dict)
    frameworks: Mapping[str, str] = field(default_factory=dict)
    optimize_tolerances: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def for_home(cls, home: Path, **overrides: Any) -> Settings:
        home = home.resolve()
        base = cls(
            home=home,
            database_url=f"sqlite:///{home / 'lockgate.db'}",
            artifact_root=home / "artifacts",
            user=_default_user(),
            signing_key=home / "keys" / "signing.key",
            public_keys=(home / "keys" / "signing.pub",),
        )
        return replace(base, **overrides)

    @property
    def serve_provider_set(self) -> ProviderSet:
        """The execution providers servers load a version on when its deployment names none."""
        return ProviderSet(self.serve_providers, self.serve_provider_fallback)

    def gates_for(self, from_stage: str, to_stage: str) -> tuple[GateSpec, ...]:
        """The gates configured for a transition (most specific key wins), each with its
        [gate.<name>] parameters under the ones given inline."""
        key = self.gate_key(from_stage, to_stage)
        if key is None:
            return ()
        return tuple(GateSpec(g.name, {**self.gate_params.get(g.name, {}), **g.params})
                     for g in self.gates[key])

    def gate_key(self, from_stage: str, to_stage: str) -> str | None:
        for key in (f"{from_stage}->{to_stage}", f"*->{to_stage}", f"{from_stage}->*", "*"):
            if key in self.gates:
                return key
        return None

    def has_role(self, user: str, role: str) -> bool:
        return user in self.roles.get(role, frozenset())


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"
