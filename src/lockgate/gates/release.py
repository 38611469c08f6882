"""Release gates: human approval with separation of duties, and a verified rollback target."""

from __future__ import annotations

from lockgate.access.identity import IdentifiedBy
from lockgate.config.settings import Settings
from lockgate.errors import Error
from lockgate.gates.base import Configurable, GateContext
from lockgate.gates.params import Param
from lockgate.types import Decision, GateResult, GateStatus

__all__ = ["ApprovalGate", "RollbackReadyGate", "ShadowDivergenceGate", "identified_by",
           "unproven_approval_waiver"]


class ApprovalGate(Configurable):
    """``required`` approvals for the target stage from users holding ``role`` who did not
    register the version; any standing rejection blocks. Each user's latest word counts.

    Where ``[roles]`` are configured, an approval counts only when its actor was identified by
    an API token (given through the registry server): the OS user or ``LOCKGATE_USER`` of a
    local home is a claim anyone can make. ``allow_local_identity = true`` counts those too,
    and the result says so. Rejections block whoever made them."""

    name = "approval"
    PARAMS = {"required": Param(int, 1, "approvals needed", 1),
              "role": Param(str, "approver", "role an approver must hold"),
              "allow_local_identity": Param(
                  bool, False, "count approvals by local users (OS user or LOCKGATE_USER), "
                               "not only by API token users, where [roles] are configured")}

    def evaluate(self, ctx: GateContext) -> GateResult:
        if ctx.evidence is None:
            return GateResult(self.name, GateStatus.ERROR, "no evidence store")
        role, required = str(self.params["role"]), int(self.params["required"])
        allow_local = bool(self.params["allow_local_identity"]) or not ctx.settings.roles
        latest: dict[str, Decision] = {}
        for d in ctx.evidence.decisions():
            if d.kind in ("approval", "rejection") and d.stage == ctx.to_stage:
                latest[d.actor] = d
        creator = ctx.version.creator
        approvals = sorted(u for u, d in latest.items() if d.kind == "approval"
                           and u != creator and ctx.settings.has_role(u, role))
        counted = [u for u in approvals
                   if allow_local or identified_by(latest[u]) == IdentifiedBy.TOKEN]
        unproven = [u for u in approvals if u not in counted]
        rejected = sorted(u for u, d in latest.items() if d.kind == "rejection"
                          and ctx.settings.has_role(u, role))
        measured = {"approved_by": counted, "rejected_by": rejected, "registrant": creator,
                    "identified_by": {u: identified_by(latest[u]) for u in approvals + rejected},
                    "not_counted_local": unproven}
        thresholds = {"required": required, "role": role,
                      "allow_local_identity": bool(self.params["allow_local_identity"])}
        if rejected:
            return GateResult(self.name, GateStatus.FAIL, "rejected by " + "; ".join(
                f"{u} ({latest[u].comment})" for u in rejected), measured, thresholds)
        if len(counted) < required:
            ref = f"{ctx.version.name}@{ctx.version.number}"
            message = (f"{len(counted)} of {required} approval(s) for {ctx.to_stage} from users "
                       f"with role {role!r} other than the registrant {creator!r}")
            if unproven:
                message += (f"; not counted: {', '.join(unproven)} approved as a local user "
                            "(OS user or LOCKGATE_USER), which proves no identity: approve "
                            f"through the registry server with an API token (`lockgate approve "
                            f"{ref} --stage {ctx.to_stage} --server URL`, token in "
                            "$LOCKGATE_TOKEN), or set [gate.approval] allow_local_identity = "
                            "true in the policy")
            else:
                message += (f"; ask one to run `lockgate approve {ref} --stage {ctx.to_stage}`"
                            + ("" if allow_local else " through the registry server (--server "
                                                      "URL, with their API token)"))
            return GateResult(self.name, GateStatus.FAIL, message, measured, thresholds)
        message = "approved by " + ", ".join(
            f"{u} ({identified_by(latest[u])})" for u in counted)
        if bool(self.params["allow_local_identity"]) and ctx.settings.roles and any(
                identified_by(latest[u]) != IdentifiedBy.TOKEN for u in counted):
            message += "; local identities counted ([gate.approval] allow_local_identity = true)"
        return GateResult(self.name, GateStatus.PASS, message, measured, thresholds)


def unproven_approval_waiver(result: GateResult, waiver: Decision,
                             settings: Settings) -> str | None:
    """Why ``waiver`` may not turn the approval gate's failure into a pass, or None: waiving
    the approval gate is approving, so where ``[roles]`` are configured it takes a
    token-identified approver too, unless the gate allows local identities."""
    if result.gate != ApprovalGate.name or not settings.roles:
        return None
    if result.thresholds.get("allow_local_identity") is True:
        return None
    if identified_by(waiver) == IdentifiedBy.TOKEN:
        return None
    return (f"the waiver by {waiver.actor} does not count: it was given as a local user (OS "
            "user or LOCKGATE_USER); waive through the registry server with an API token, or "
            "set [gate.approval] allow_local_identity = true")


def identified_by(d: Decision) -> str:
    """How the actor of ``d`` was identified; ``local`` for decisions recorded before this was
    kept (nothing proved them)."""
    how = d.detail.get("identified_by")
    return str(how) if how in set(IdentifiedBy) else IdentifiedBy.LOCAL.value


class RollbackReadyGate(Configurable):
    """The version now in the target stage, which a rollback would restore, still verifies and
    loads. A first release has nothing to roll back to and needs an explicit waiver."""

    name = "rollback_ready"

    def evaluate(self, ctx: GateContext) -> GateResult:
        target = ctx.previous or ctx.champion
        if target is not None and (target.name, target.number) == (ctx.version.name,
                                                                    ctx.version.number):
            target = None
        if target is None:
            return GateResult(
                self.name, GateStatus.FAIL,
                f"no version in {ctx.to_stage} to roll back to; a first release needs a waiver: "
                f"`lockgate waive {ctx.version.name}@{ctx.version.number} --stage "
                f"{ctx.to_stage} --gate rollback_ready --reason ... --expires YYYY-MM-DD`")
        if ctx.evidence is None:
            return GateResult(self.name, GateStatus.ERROR, "no evidence store")
        ref = f"{target.name}@{target.number}"
        try:
            how = ctx.evidence.check_loadable(target)
        except Error as exc:
            return GateResult(self.name, GateStatus.FAIL,
                              f"rollback target {ref} does not load: {exc.message}",
                              {"rollback_target": ref})
        return GateResult(self.name, GateStatus.PASS,
                          f"rollback target {ref} verified ({how}) and loads",
                          {"rollback_target": ref})


class ShadowDivergenceGate(Configurable):
    """How the version answered shadowed live traffic (``lockgate deploy NAME@V --shadow``):
    enough mirrored requests, argmax agreement and max abs divergence within bounds. Servers
    report their comparisons to the store; the latest report counts."""

    name = "shadow_divergence"
    PARAMS = {"max_divergence": Param(float, 1e-3, "largest tolerated max abs difference", 0),
              "min_agreement": Param(float, 0.99, "least argmax agreement (0-1)", 0),
              "min_requests": Param(int, 100, "least mirrored requests", 1)}

    def evaluate(self, ctx: GateContext) -> GateResult:
        if ctx.evidence is None:
            return GateResult(self.name, GateStatus.ERROR, "no evidence store")
        reports = [d for d in ctx.evidence.decisions() if d.kind == "shadow"]
        thresholds = dict(self.params)
        ref = f"{ctx.version.name}@{ctx.version.number}"
        if not reports:
            return GateResult(self.name, GateStatus.FAIL,
                              f"no shadow traffic recorded for {ref}; deploy it with "
                              f"`lockgate deploy {ref} --shadow` and let traffic flow",
                              {}, thresholds)
        last = dict(reports[-1].detail)
        problems = []
        if last.get("compared", 0) < self.params["min_requests"]:
            problems.append(f"{int(last.get('compared', 0))} mirrored requests, needs "
                            f"{self.params['min_requests']}")
        if last.get("agreement", 0.0) < self.params["min_agreement"]:
            problems.append(f"argmax agreement {last.get('agreement', 0.0):.2%} < "
                            f"{self.params['min_agreement']:.2%}")
        if last.get("max_divergence", float("inf")) > self.params["max_divergence"]:
            problems.append(f"max abs divergence {last.get('max_divergence')} > "
                            f"{self.params['max_divergence']:g}")
        if problems:
            return GateResult(self.name, GateStatus.FAIL, "; ".join(problems), last,
                              thresholds)
        return GateResult(self.name, GateStatus.PASS,
                          f"{int(last['compared'])} mirrored requests, agreement "
                          f"{last['agreement']:.2%}, max divergence {last['max_divergence']:.3g}",
                          last, thresholds)
