"""The registry operations a local home (:class:`lockgate.Lockgate`) and a registry server's
client (:class:`lockgate.RemoteRegistry`) both offer, and the options of a registration,
defined once for :func:`lockgate.register`, ``Lockgate.register`` and
``RemoteRegistry.register``.

A face that works with either types its registry as :class:`Registry`::

    def describe(reg: Registry, ref: str) -> dict[str, Any]:
        return reg.get(ref).to_dict()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol, Self, TypedDict, Unpack

from lockgate.api.lookup import ModelSummary
from lockgate.audit import AuditRecord, ChainReport
from lockgate.config.providers import ProviderSet
from lockgate.gates.promotion import PromotionResult
from lockgate.progress import Progress
from lockgate.rollout.state import Deployment
from lockgate.types import Decision, GateResult, GateRun, ModelRef, TokenRow, UserRow, Version

__all__ = ["RegisterOptions", "Registry"]


class RegisterOptions(TypedDict, total=False):
    """The keyword options of a registration; each may be left out (its default in
    parentheses). A remote registration sends the ones an ONNX upload can use (``expect``
    as two ``.npz`` files) and refuses ``sample_input``, ``opset``, ``recipe`` and ``source``
    (they need the source framework or code run here)."""

    description: str
    """Free text shown with the version ("")."""
    tags: Mapping[str, str] | None
    """String labels; ``task`` and the architecture tags also shape the model card (none)."""
    metrics: Mapping[str, float] | None
    """Finite numbers the metrics gates compare (none)."""
    seed: int | None
    """The training seed; also seeds the parity check's random inputs (none)."""
    seeds: Mapping[str, int] | None
    """Every seed by name (none)."""
    opset: int | None
    """The ONNX opset to convert to (the converter's default)."""
    dynamic: Mapping[str, Mapping[int, str]] | None
    """Dimensions left free in the ONNX graph, by input name and axis:
    ``{"input_ids": {0: "batch", 1: "sequence"}}`` (dim 0 of every input as ``"batch"``)."""
    atol: float | None
    """Absolute parity tolerance (``parity.atol`` of the policy)."""
    rtol: float | None
    """Relative parity tolerance (``parity.rtol`` of the policy)."""
    creator: str | None
    """Who registers it (the configured user; on a server, the token's user)."""
    considerations: str
    """Model-card limitations, one per paragraph ("")."""
    datasets: Sequence[Mapping[str, str]]
    """Model-card datasets: ``name`` and optionally ``fingerprint``, ``url``,
    ``description`` (none)."""
    lock_file: Path | str | None
    """A ``pylock.toml`` or hashed ``requirements.txt``, signed with the version (none)."""
    recipe: Mapping[str, Any] | None
    """How ``lockgate reproduce`` rebuilds it: ``entry`` (``module:function``), ``args``
    (none)."""
    reference: Path | str | Mapping[str, Any] | None
    """Reference data for drift monitors: a data file or arrays by input name (none)."""
    source: Callable[[Mapping[str, Any]], Any] | str | None
    """For an ONNX file: the code it was made from, as a callable or ``"pkg.mod:fn"``
    (imported from the current directory). It takes the inputs by ONNX input name (numpy
    arrays) and returns the outputs in ONNX output order or by output name; parity compares
    ONNX Runtime with it on the sample and random inputs, as for a converted model. Refused
    for a model converted from a framework: the framework is the reference (none)."""
    expect: tuple[Path | str | Mapping[str, Any], Path | str | Mapping[str, Any]] | None
    """For an ONNX file: ``(inputs, outputs)`` the source model recorded, each a ``.npz``
    file or arrays by name (ONNX input names, ONNX output names); parity compares ONNX
    Runtime with the recorded outputs on those inputs alone, no random inputs. With
    ``source`` too, both are checked and the report covers both. Refused for a model
    converted from a framework (none)."""
    progress: Progress | None
    """Where the steps are reported (nowhere)."""


class Registry(Protocol):
    """The registry operations of a local home and of a registry server's client."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    # -- registration and reads --------------------------------------------------------------
    def register(self, model: object, sample_input: object = None, *, name: str,
                 **options: Unpack[RegisterOptions]) -> Version: ...

    def get(self, ref: str | ModelRef) -> Version: ...

    def versions(self, name: str) -> list[Version]: ...

    def models(self) -> list[ModelSummary]: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def gate_runs(self, ref: str | ModelRef) -> list[GateRun]: ...

    def decisions(self, ref: str | ModelRef) -> list[Decision]: ...

    def history(self, name: str) -> dict[str, list[dict[str, Any]]]: ...

    # -- promotion, decisions, aliases -------------------------------------------------------
    def promote(self, ref: str | ModelRef, to: str, *, actor: str | None = None,
                run_all: bool = False,
                on_result: Callable[[GateResult], None] | None = None) -> PromotionResult: ...

    def check_gates(self, ref: str | ModelRef, to: str, *, actor: str | None = None,
                    run_all: bool = True,
                    on_result: Callable[[GateResult], None] | None = None
                    ) -> list[GateResult]: ...

    def approve(self, ref: str | ModelRef, stage: str, *, comment: str = "",
                actor: str | None = None) -> Decision: ...

    def reject(self, ref: str | ModelRef, stage: str, *, comment: str,
               actor: str | None = None) -> Decision: ...

    def waive(self, ref: str | ModelRef, stage: str, gate: str, *, reason: str,
              expires: date, actor: str | None = None) -> Decision: ...

    def set_alias(self, name: str, alias: str, number: int | None, *,
                  actor: str | None = None) -> None: ...

    # -- deployments -------------------------------------------------------------------------
    def deployments(self) -> dict[str, Deployment]: ...

    def deploy(self, ref: str | ModelRef, *, canary: int | None = None, shadow: bool = False,
               analysis: Mapping[str, Any] | None = None,
               actor: str | None = None, providers: ProviderSet | None = None
               ) -> Deployment: ...

    def set_providers(self, name: str, providers: ProviderSet | None, *,
                      actor: str | None = None) -> Deployment: ...

    def set_canary_weight(self, name: str, weight: int, *,
                          actor: str | None = None) -> Deployment: ...

    def promote_candidate(self, name: str, *, actor: str | None = None) -> Deployment: ...

    def set_batching(self, name: str, batching: Mapping[str, Any] | None, *,
                     actor: str | None = None) -> Deployment: ...

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployment: ...

    # -- users and tokens --------------------------------------------------------------------
    def users(self) -> list[UserRow]: ...

    def add_user(self, name: str, roles: Sequence[str], *,
                 grants: Sequence[tuple[str, str]] = (), disabled: bool = False,
                 actor: str | None = None) -> UserRow: ...

    def create_token(self, user: str, *, description: str = "", days: int | None = None,
                     actor: str | None = None) -> tuple[TokenRow, str]: ...

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> TokenRow: ...

    def tokens(self, user: str | None = None) -> list[TokenRow]: ...

    # -- audit and evidence ------------------------------------------------------------------
    def audit_log(self, *, model: str | None = None) -> list[AuditRecord]: ...

    def audit_verify(self) -> ChainReport: ...

    def export_evidence(self, ref: str | ModelRef, out: Path | str, *,
                        actor: str | None = None) -> Path: ...
