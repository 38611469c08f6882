"""What moves a version: promotions through the transition's gates (and their dry runs),
people's approvals, rejections and waivers, recorded reproductions, and aliases."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from lockgate.access.identity import IdentifiedBy
from lockgate.api.access import Access
from lockgate.api.files import VersionFiles
from lockgate.api.gate_evidence import VersionEvidence
from lockgate.api.home import Home
from lockgate.api.lookup import Lookup
from lockgate.api.rollout import Rollout
from lockgate.api.vulnerabilities import Vulnerabilities
from lockgate.audit import AuditEvent, EventType, now
from lockgate.errors import AccessDeniedError, InvalidInputError, NotFoundError
from lockgate.gates import GATES, promotion
from lockgate.store.metadata import Change
from lockgate.types import Decision, GateResult, ModelRef, Version, validate_name

__all__ = ["Promotion"]

_MAX_WAIVER_DAYS = 366
_DECISION_EVENTS = {"approval": EventType.APPROVED, "rejection": EventType.REJECTED,
                    "waiver": EventType.WAIVED}


class Promotion:
    """Promotions, decisions by people, and aliases."""

    def __init__(self, home: Home, lookup: Lookup, files: VersionFiles,
                 vulns: Vulnerabilities, access: Access, rollout: Rollout) -> None:
        self._home = home
        self._lookup = lookup
        self._files = files
        self._vulns = vulns
        self._access = access
        self._rollout = rollout

    def evidence(self, v: Version) -> VersionEvidence:
        """What the gates of ``v`` read beyond its record; close it when done."""
        return VersionEvidence(self._home, self._files, self._vulns, v)

    def promote(
        self,
        ref: str | ModelRef,
        to: str,
        *,
        actor: str | None = None,
        run_all: bool = False,
        on_result: Callable[[GateResult], None] | None = None,
    ) -> promotion.PromotionResult:
        """Run the gates configured for the transition, in order, and move the version, or
        raise GateFailedError and move nothing (the refusal is stored and audited). Gates after
        the first failure are skipped unless ``run_all``."""
        v = self._lookup.get(ref)
        with self.evidence(v) as evidence:
            result = promotion.promote(
                self._home.meta, self._home.settings, v, to, actor=self._home.actor(actor),
                holders=self._lookup.holders(v.name, to),
                champion=self._lookup.champion(v.name, to), evidence=evidence,
                run_all=run_all, on_result=on_result,
            )
        self._rollout.follow_promotion(v, to, actor)
        return result

    def check_gates(
        self,
        ref: str | ModelRef,
        to: str,
        *,
        actor: str | None = None,
        run_all: bool = True,
        on_result: Callable[[GateResult], None] | None = None,
    ) -> list[GateResult]:
        """Evaluate the transition's gates without moving or storing anything (a dry run)."""
        v = self._lookup.get(ref)
        holders = self._lookup.holders(v.name, to)
        with self.evidence(v) as evidence:
            return promotion.evaluate(
                self._home.settings, v, to, actor=self._home.actor(actor),
                champion=self._lookup.champion(v.name, to),
                previous=max(holders, key=lambda h: h.number) if holders else None,
                evidence=evidence, run_all=run_all, on_result=on_result,
            )

    # -- decisions by people -----------------------------------------------------------------
    def approve(self, ref: str | ModelRef, stage: str, *, comment: str = "",
                actor: str | None = None,
                identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        """Approve the version for ``stage``: the actor needs the approver role and must not
        be its registrant (separation of duties). ``identified_by`` says how the actor was
        established (the registry server passes ``token`` for a token's user)."""
        return self._decide("approval", ref, stage, comment=comment, actor=actor,
                            identified_by=identified_by)

    def reject(self, ref: str | ModelRef, stage: str, *, comment: str,
               actor: str | None = None,
               identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        """Reject the version for ``stage``; it blocks the approval gate until the same
        approver approves again."""
        if not comment.strip():
            raise InvalidInputError("a rejection needs a comment saying why")
        return self._decide("rejection", ref, stage, comment=comment, actor=actor,
                            identified_by=identified_by)

    def waive(self, ref: str | ModelRef, stage: str, gate: str, *, reason: str,
              expires: date, actor: str | None = None,
              identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        """Waive ``gate`` for the version's promotion to ``stage`` until ``expires``: the
        gate still runs, and its failure is shown as waived, with who, why and until when."""
        if gate not in GATES:
            raise InvalidInputError(f"unknown gate {gate!r}", hint=f"gates: {sorted(GATES)}")
        if not reason.strip():
            raise InvalidInputError("a waiver needs a reason")
        today = datetime.now(UTC).date()
        if expires < today:
            raise InvalidInputError(f"the waiver would expire in the past ({expires})")
        if (expires - today).days > _MAX_WAIVER_DAYS:
            raise InvalidInputError("a waiver may last a year at most",
                                    hint="waivers are exceptions; fix the cause instead")
        return self._decide("waiver", ref, stage, comment=reason, actor=actor, gate=gate,
                            expires=expires.isoformat(), identified_by=identified_by)

    def _decide(self, kind: str, ref: str | ModelRef, stage: str, *, comment: str,
                actor: str | None, gate: str = "", expires: str | None = None,
                identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        v = self._lookup.get(ref)
        who = self._home.actor(actor)
        if stage not in self._home.settings.stages:
            raise InvalidInputError(f"unknown stage {stage!r}",
                                    hint=f"stages: {list(self._home.settings.stages)}")
        self._check_decider(kind, v, stage, who, gate)
        how = IdentifiedBy(identified_by).value
        decision = Decision(kind=kind, name=v.name, number=v.number, stage=stage, actor=who,
                            created_at=now(), comment=comment, gate=gate, expires=expires,
                            detail={"identified_by": how})
        self._home.meta.apply(Change(decisions=[decision], events=[AuditEvent(
            _DECISION_EVENTS[kind], who, v.name, v.number,
            {"stage": stage, "comment": comment, "gate": gate, "expires": expires,
             "identified_by": how})]))
        return decision

    def _check_decider(self, kind: str, v: Version, stage: str, who: str, gate: str) -> None:
        """AccessDeniedError (recorded as a denial) unless ``who`` may decide this."""
        role = self._approver_role(v, stage)
        problem = None
        if not self._access.has_role(who, role, v.name):
            problem = f"{who!r} does not hold the {role!r} role"
        elif kind == "approval" and who == v.creator:
            problem = (f"{who!r} registered {v.ref}; separation of duties forbids approving "
                       "one's own version")
        if problem is None:
            return
        self._home.denials.record(AuditEvent(
            EventType.ACCESS_DENIED, who, v.name, v.number,
            {"action": kind, "stage": stage, "gate": gate, "reason": problem}))
        raise AccessDeniedError(problem, hint=f"approvers are listed in [roles] {role} = "
                                              "[...] of the policy")

    def _approver_role(self, v: Version, stage: str) -> str:
        for spec in self._home.settings.gates_for(v.stage, stage):
            if spec.name == "approval" and isinstance(spec.params.get("role"), str):
                return str(spec.params["role"])
        return "approver"

    def record_reproduction(self, v: Version, detail: Mapping[str, Any],
                            *, actor: str | None = None) -> Decision:
        """Store the result of rebuilding ``v`` from its recipe (see :mod:`lockgate.reproduce`)."""
        who = self._home.actor(actor)
        decision = Decision(kind="reproduction", name=v.name, number=v.number, stage="",
                            actor=who, created_at=now(), comment=str(detail.get("message", "")),
                            detail=dict(detail))
        self._home.meta.apply(Change(decisions=[decision], events=[AuditEvent(
            EventType.REPRODUCED, who, v.name, v.number, dict(detail))]))
        return decision

    # -- aliases -----------------------------------------------------------------------------
    def set_alias(
        self, name: str, alias: str, number: int | None, *, actor: str | None = None
    ) -> None:
        """Point ``alias`` at version ``number`` of ``name``, or remove it when None."""
        validate_name(alias)
        if alias in self._home.settings.stages:
            raise InvalidInputError(f"{alias!r} is a stage name; aliases must differ from stages")
        if alias.isdigit():
            raise InvalidInputError("an alias cannot be a number")
        who = self._home.actor(actor)
        if number is None:
            if alias not in self._home.meta.aliases(name):
                raise NotFoundError(f"model {name} has no alias {alias!r}")
            event = AuditEvent(EventType.ALIAS_REMOVED, who, name, None, {"alias": alias})
        else:
            self._lookup.get(ModelRef(name, number))
            event = AuditEvent(EventType.ALIAS_SET, who, name, number, {"alias": alias})
        self._home.meta.apply(Change(aliases={(name, alias): number}, events=[event]))
