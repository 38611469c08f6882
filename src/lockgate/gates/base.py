"""The Gate protocol and AllOf, the combinator that fails closed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lockgate.config import Settings
from lockgate.errors import ConfigError
from lockgate.store.metadata import VulnSnapshot
from lockgate.types import GateResult, GateStatus, Version

__all__ = ["AllOf", "Evidence", "Gate", "GateContext"]


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


class Gate(Protocol):
    """One check on a promotion. ``evaluate`` returns a result; it never raises on failure."""

    name: str

    def evaluate(self, ctx: GateContext) -> GateResult: ...


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

    def evaluate(self, ctx: GateContext) -> list[GateResult]:
        results: list[GateResult] = []
        for gate in self.gates:
            try:
                result = gate.evaluate(ctx)
            except Exception as exc:  # a broken gate must not open the door
                result = GateResult(
                    gate.name, GateStatus.ERROR, f"gate raised {type(exc).__name__}: {exc}"
                )
            results.append(result)
        return results

    @staticmethod
    def passed(results: Sequence[GateResult]) -> bool:
        return bool(results) and all(r.ok for r in results)
