"""The Gate protocol and AllOf, the combinator that fails closed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from lockgate.config.providers import ProviderSet
from lockgate.config.settings import Settings
from lockgate.errors import ConfigError
from lockgate.gates.params import Param, bind
from lockgate.store.metadata import Decision, VulnSnapshot
from lockgate.types import GateResult, GateStatus, Version

__all__ = ["AllOf", "Configurable", "Evidence", "Gate", "GateContext", "ServerHandle"]


class ServerHandle(Protocol):
    """A child ``lockgate serve`` of the version, started for validation."""

    base_url: str
    load_seconds: float
    providers_used: list[str]
    """The execution providers the child's session uses (empty when it does not say)."""
    fell_back: bool
    """Whether the child fell back to the CPU from a requested provider."""


class Evidence(Protocol):
    """What gates may read beyond the version record, all verified on the way in."""

    def file(self, name: str) -> bytes:
        """One file of the version folder (``bom.cdx.json``, ...); NotFoundError if absent."""
        ...

    def verify_signature(self) -> str | None:
        """The key id the version verifies with, None when unsigned and allowed; raises when
        verification fails."""
        ...

    def vulnerability_data(self, packages: Sequence[str]) -> tuple[VulnSnapshot | None,
                                                                   list[str]]:
        """The current OSV snapshot and the record JSON affecting ``packages``."""
        ...

    def decisions(self) -> list[Decision]:
        """Approvals, rejections, waivers and reproductions recorded for the version."""
        ...

    def check_loadable(self, version: Version) -> str:
        """Verify and load another version (a rollback target); return what verified it."""
        ...

    def server(self, max_loading_time_s: float,
               providers: ProviderSet | None = None) -> ServerHandle:
        """The version served by a child ``lockgate serve`` (started once per provider set,
        shared by gates; None: the server's own settings); raises when it does not load in
        time."""
        ...


@dataclass(frozen=True)
class GateContext:
    """What a gate may look at: the version, the transition and who asks."""

    version: Version
    from_stage: str
    to_stage: str
    actor: str
    settings: Settings
    champion: Version | None = None
    evidence: Evidence | None = None
    previous: Version | None = None
    """The version now holding ``to_stage`` (the rollback target), if any."""


class Gate(Protocol):
    """One check on a promotion. ``evaluate`` returns a result; it never raises on failure."""

    name: str

    def evaluate(self, ctx: GateContext) -> GateResult: ...


class Configurable:
    """Base for gates whose parameters are declared in ``PARAMS``."""

    name: str = ""
    PARAMS: ClassVar[Mapping[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        self.params = params

    @classmethod
    def configure(cls, params: Mapping[str, Any], where: str) -> Configurable:
        return cls(**bind(cls.PARAMS, params, where))

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {k: p.describe() for k, p in cls.PARAMS.items()}

    def evaluate(self, ctx: GateContext) -> GateResult:
        raise NotImplementedError


class AllOf:
    """Every gate must pass. An empty list is refused; a gate that raises counts as an error."""

    def __init__(self, gates: Sequence[Gate]) -> None:
        if not gates:
            raise ConfigError(
                "a promotion needs at least one gate; an empty gate list would let anything "
                "through",
                hint="list gates for the transition in [gates] of lockgate.toml",
            )
        self.gates = tuple(gates)

    def evaluate(
        self,
        ctx: GateContext,
        *,
        stop_on_failure: bool = False,
        review: Callable[[GateResult], GateResult] | None = None,
        on_result: Callable[[GateResult], None] | None = None,
    ) -> list[GateResult]:
        """Run the gates in order. ``review`` may turn a failure into a waiver; with
        ``stop_on_failure`` the gates after the first failure are reported as skipped."""
        results: list[GateResult] = []
        failed = False
        for gate in self.gates:
            if failed and stop_on_failure:
                result = GateResult(gate.name, GateStatus.SKIPPED,
                                    "not run: an earlier gate failed (use --all to run every gate)")
            else:
                try:
                    result = gate.evaluate(ctx)
                except Exception as exc:  # a broken gate must not open the door
                    result = GateResult(
                        gate.name, GateStatus.ERROR, f"gate raised {type(exc).__name__}: {exc}"
                    )
                if not result.ok and review is not None:
                    result = review(result)
                failed = failed or not result.ok
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    @staticmethod
    def passed(results: Sequence[GateResult]) -> bool:
        return bool(results) and all(r.ok for r in results)
