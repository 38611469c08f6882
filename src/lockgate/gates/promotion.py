"""Promotion: run the transition's gates, then move the version in one transaction with its audit
events — or record the refusal and move nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

from lockgate.audit import AuditEvent, EventType, now
from lockgate.config.settings import Settings
from lockgate.errors import GateFailedError, InvalidInputError
from lockgate.gates import AllOf, Evidence, GateContext, build
from lockgate.gates.release import unproven_approval_waiver
from lockgate.store.metadata import Change, Decision, GateRun, MetadataStore
from lockgate.types import GateResult, GateStatus, Version

__all__ = ["PromotionResult", "active_waiver", "check_transition", "evaluate", "promote"]


@dataclass(frozen=True)
class PromotionResult:
    version: Version
    from_stage: str
    to_stage: str
    results: tuple[GateResult, ...]
    retired: tuple[int, ...]
    alias: str | None


def check_transition(settings: Settings, from_stage: str, to_stage: str) -> None:
    """Versions move forward through the stages; the last stage (retirement) takes any version."""
    if to_stage not in settings.stages:
        raise InvalidInputError(
            f"unknown stage {to_stage!r}", hint=f"stages: {list(settings.stages)}"
        )
    if from_stage == to_stage:
        raise InvalidInputError(f"the version is already in stage {to_stage!r}")
    order = settings.stages
    retire = order[-1]
    if from_stage == retire:
        raise InvalidInputError(f"a version in {retire!r} is retired and cannot be promoted")
    if to_stage != retire and order.index(to_stage) < order.index(from_stage):
        raise InvalidInputError(
            f"cannot move back from {from_stage!r} to {to_stage!r}",
            hint="promote a newer version instead, or move an alias",
        )


def active_waiver(decisions: Sequence[Decision], stage: str, gate: str,
                  today: date) -> Decision | None:
    """The latest waiver of ``gate`` for ``stage`` that has not expired."""
    found = [d for d in decisions if d.kind == "waiver" and d.stage == stage and d.gate == gate
             and d.expires is not None and date.fromisoformat(d.expires) >= today]
    return found[-1] if found else None


def evaluate(
    settings: Settings,
    version: Version,
    to_stage: str,
    *,
    actor: str,
    champion: Version | None = None,
    previous: Version | None = None,
    evidence: Evidence | None = None,
    run_all: bool = False,
    on_result: Callable[[GateResult], None] | None = None,
) -> list[GateResult]:
    """Run the transition's gates in order (stopping at the first failure unless ``run_all``);
    a failure with an active waiver becomes WAIVED. Moves nothing, stores nothing."""
    from_stage = version.stage
    check_transition(settings, from_stage, to_stage)
    key = settings.gate_key(from_stage, to_stage)
    combinator = build(settings.gates_for(from_stage, to_stage),
                             f'gates."{key}"' if key else "gates")
    ctx = GateContext(version, from_stage, to_stage, actor, settings, champion, evidence,
                            previous)
    decisions = evidence.decisions() if evidence is not None else []
    today = datetime.now(UTC).date()

    def review(result: GateResult) -> GateResult:
        waiver = active_waiver(decisions, to_stage, result.gate, today)
        if waiver is None:
            return result
        refused = unproven_approval_waiver(result, waiver, settings)
        if refused is not None:
            return replace(result, message=f"{result.message}; {refused}",
                           measured={**result.measured, "refused_waiver": waiver.to_dict()})
        return replace(result, status=GateStatus.WAIVED,
                       message=f"WAIVED by {waiver.actor} until {waiver.expires}: "
                               f"{waiver.comment} (gate said: {result.message})",
                       measured={**result.measured, "waiver": waiver.to_dict()})

    return combinator.evaluate(ctx, stop_on_failure=not run_all, review=review,
                               on_result=on_result)


def promote(
    meta: MetadataStore,
    settings: Settings,
    version: Version,
    to_stage: str,
    *,
    actor: str,
    holders: Sequence[Version] = (),
    champion: Version | None = None,
    evidence: Evidence | None = None,
    run_all: bool = False,
    on_result: Callable[[GateResult], None] | None = None,
) -> PromotionResult:
    """Promote ``version`` to ``to_stage``. ``holders`` are the versions now in ``to_stage``
    (retired to the last stage when it is exclusive; the move fails if they changed meanwhile).
    Raises GateFailedError when a gate fails."""
    from_stage = version.stage
    transition = f"{from_stage}->{to_stage}"
    previous = max(holders, key=lambda h: h.number) if holders else None
    results = evaluate(settings, version, to_stage, actor=actor, champion=champion,
                       previous=previous, evidence=evidence, run_all=run_all,
                       on_result=on_result)
    passed = AllOf.passed(results)
    run = GateRun(
        name=version.name, number=version.number, from_stage=from_stage, to_stage=to_stage,
        passed=passed, results=[r.to_dict() for r in results], actor=actor, created_at=now(),
    )
    key = (version.name, version.number)
    if not passed:
        failed = [r for r in results if not r.ok and r.status is not GateStatus.SKIPPED]
        meta.apply(Change(
            gate_runs=[run],
            events=[AuditEvent(EventType.PROMOTION_REFUSED, actor, version.name, version.number,
                               {"transition": transition, "results": run.results})],
        ))
        raise GateFailedError(
            f"promotion of {version.ref} to {to_stage} refused: "
            + "; ".join(f"{r.gate} {r.status.value}: {r.message}" for r in failed),
            results=results,
        )
    retire = settings.stages[-1]
    retired = tuple(
        h.number for h in holders
        if to_stage in settings.exclusive_stages and h.number != version.number
    )
    alias = settings.stage_aliases.get(to_stage)
    events = [AuditEvent(EventType.STAGE_CHANGED, actor, version.name, version.number,
                         {"from": from_stage, "to": to_stage,
                          "gates": [r.gate for r in results]})]
    events += [AuditEvent(EventType.STAGE_CHANGED, actor, version.name, n,
                          {"from": to_stage, "to": retire, "reason": f"replaced by {version.ref}"})
               for n in retired]
    if alias:
        events.append(AuditEvent(EventType.ALIAS_SET, actor, version.name, version.number,
                                 {"alias": alias, "reason": f"entered {to_stage}"}))
    exclusive = to_stage in settings.exclusive_stages
    meta.apply(Change(
        expect={key: from_stage, **{(version.name, n): to_stage for n in retired}},
        expect_holders=({(version.name, to_stage): frozenset(h.number for h in holders)}
                        if exclusive else {}),
        stages={key: to_stage, **{(version.name, n): retire for n in retired}},
        aliases={(version.name, alias): version.number} if alias else {},
        gate_runs=[run],
        events=events,
    ))
    return PromotionResult(version, from_stage, to_stage, tuple(results), retired, alias)
