"""Release gates: human approval with separation of duties, and a verified rollback target."""

from __future__ import annotations

from lockgate.errors import Error
from lockgate.gates.base import Configurable, GateContext
from lockgate.gates.params import Param
from lockgate.types import GateResult, GateStatus

__all__ = ["ApprovalGate", "RollbackReadyGate", "ShadowDivergenceGate"]


class ApprovalGate(Configurable):
    """``required`` approvals for the target stage from users holding ``role`` who did not
    register the version; any standing rejection blocks. Each user's latest word counts."""

    name = "approval"
    PARAMS = {"required": Param(int, 1, "approvals needed", 1),
              "role": Param(str, "approver", "role an approver must hold")}

    def evaluate(self, ctx: GateContext) -> GateResult:
        if ctx.evidence is None:
            return GateResult(self.name, GateStatus.ERROR, "no evidence store")
        role, required = str(self.params["role"]), int(self.params["required"])
        latest: dict[str, str] = {}
        comments: dict[str, str] = {}
        for d in ctx.evidence.decisions():
            if d.kind in ("approval", "rejection") and d.stage == ctx.to_stage:
                latest[d.actor] = d.kind
                comments[d.actor] = d.comment
        creator = ctx.version.creator
        counted = sorted(u for u, k in latest.items() if k == "approval"
                         and u != creator and ctx.settings.has_role(u, role))
        rejected = sorted(u for u, k in latest.items() if k == "rejection"
                          and ctx.settings.has_role(u, role))
        measured = {"approved_by": counted, "rejected_by": rejected,
                    "registrant": creator}
        thresholds = {"required": required, "role": role}
        if rejected:
            return GateResult(self.name, GateStatus.FAIL,
                              "rejected by " + "; ".join(f"{u} ({comments[u]})" for u in rejected),
                              measured, thresholds)
        if len(counted) < required:
            return GateResult(
                self.name, GateStatus.FAIL,
                f"{len(counted)} of {required} approval(s) for {ctx.to_stage} from users with "
                f"role {role!r} other than the registrant {creator!r}; ask one to run "
                f"`lockgate approve {ctx.version.name}@{ctx.version.number} --stage "
                f"{ctx.to_stage}`", measured, thresholds)
        return GateResult(self.name, GateStatus.PASS, "approved by " + ", ".join(counted),
                          measured, thresholds)


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
