"""Supply-chain gates: the BOM validates, the signature verifies, no vulnerability above the
policy's severity, and every license allowed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lockgate.errors import ConfigError, Error
from lockgate.gates.base import Configurable, Evidence, GateContext
from lockgate.gates.params import Param
from lockgate.seal.folder import BOM_FILE
from lockgate.supplychain.vulns.snapshots import MIN_EXPORT_RECORDS
from lockgate.types import GateResult, GateStatus, VulnSnapshot

__all__ = ["LicensesGate", "SbomValidGate", "SignatureGate", "VulnerabilitiesGate"]


_WHOLE_EXPORT = {
    "min_records": Param(int, MIN_EXPORT_RECORDS, "fewest current records a whole ecosystem "
                         "export holds (osv.dev's PyPI export has well over 10,000)", 1),
    "allow_partial": Param(bool, False, "accept vulnerability data that is not a whole "
                           "ecosystem export (a folder, a hand-made or filtered file)"),
    "reason": Param(str, "", "why partial vulnerability data is enough (needed with "
                    "allow_partial)"),
}

_SCOPE = Param(str, "runtime", "what is judged: the runtime closure, or the training "
               "environment too", choices=("runtime", "all"))


def _evidence(ctx: GateContext, gate: str) -> Evidence | GateResult:
    if ctx.evidence is None:
        return GateResult(gate, GateStatus.ERROR, "no evidence store was given to the gate")
    return ctx.evidence


class SbomValidGate(Configurable):
    name = "sbom_valid"

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.supplychain.bom import validate_bom

        ev = _evidence(ctx, self.name)
        if isinstance(ev, GateResult):
            return ev
        try:
            doc = json.loads(ev.file(BOM_FILE))
            validate_bom(doc)
        except Error as exc:
            return GateResult(self.name, GateStatus.FAIL, exc.message)
        except ValueError as exc:
            return GateResult(self.name, GateStatus.FAIL, f"{BOM_FILE} is not JSON: {exc}")
        digest = str(ctx.version.digest).removeprefix("sha256:")
        model = doc.get("metadata", {}).get("component", {})
        hashes = {h.get("content") for h in model.get("hashes", [])}
        if model.get("type") != "machine-learning-model" or digest not in hashes:
            return GateResult(self.name, GateStatus.FAIL,
                              "the BOM does not describe this version's model file")
        return GateResult(self.name, GateStatus.PASS,
                          f"CycloneDX {doc.get('specVersion')} BOM valid, "
                          f"{len(doc.get('components', []))} components",
                          {"components": len(doc.get("components", []))})


class SignatureGate(Configurable):
    name = "signature"

    def evaluate(self, ctx: GateContext) -> GateResult:
        ev = _evidence(ctx, self.name)
        if isinstance(ev, GateResult):
            return ev
        try:
            key = ev.verify_signature()
        except Error as exc:
            return GateResult(self.name, GateStatus.FAIL, exc.message)
        if key is None:
            return GateResult(self.name, GateStatus.FAIL,
                              "the version is unsigned; the signature gate needs a signature")
        return GateResult(self.name, GateStatus.PASS, f"signature verified with key {key[:16]}",
                          {"key_id": key})


class VulnerabilitiesGate(Configurable):
    """Also fails on a snapshot that is not a whole ecosystem export (osv.dev's all.zip of at
    least ``min_records`` current records), unless ``allow_partial`` is set with a reason."""

    name = "vulnerabilities"
    PARAMS = {"scope": _SCOPE, **_WHOLE_EXPORT}

    @classmethod
    def configure(cls, params: Mapping[str, Any], where: str) -> Configurable:
        gate = super().configure(params, where)
        if gate.params["allow_partial"] and not str(gate.params["reason"]).strip():
            raise ConfigError(f"{where}: allow_partial = true needs a reason",
                              hint='add reason = "..." saying why partial data is enough')
        return gate

    def evaluate(self, ctx: GateContext) -> GateResult:
        from packaging.utils import canonicalize_name

        from lockgate.supplychain.vulns.policy import assess_vulnerabilities

        ev = _evidence(ctx, self.name)
        if isinstance(ev, GateResult):
            return ev
        raw = ctx.version.environment.get("packages")
        if not isinstance(raw, dict) or not raw:
            return GateResult(self.name, GateStatus.FAIL,
                              "the version's environment lists no packages to check")
        packages = {str(k): str(v) for k, v in raw.items()}
        packages, judged = _scoped_packages(ev, packages, str(self.params["scope"]))
        snapshot, records = ev.vulnerability_data(
            sorted({canonicalize_name(n) for n in packages}))
        report = assess_vulnerabilities(packages, snapshot, records, ctx.settings,
                                        today=datetime.now(UTC).date())
        measured = {"scope": judged,
                    "snapshot": report.snapshot.to_dict() if report.snapshot else None,
                    "age_days": report.age_days,
                    "findings": [d.to_dict() for d in report.decisions]}
        thresholds = {"max_severity": report.max_severity,
                      "max_age_days": report.max_age_days,
                      "allow": [a.id for a in ctx.settings.vuln_allow]}
        problems, accepted = _whole_export(report.snapshot, self.params, measured, thresholds)
        problems += report.problems()
        if problems:
            return GateResult(self.name, GateStatus.FAIL, "; ".join(problems), measured,
                              thresholds)
        allowed = sum(1 for d in report.decisions if d.outcome == "allowed")
        return GateResult(
            self.name, GateStatus.PASS,
            f"{len(packages)} packages ({judged['note']}), {len(report.decisions)} finding(s) "
            "at or below "
            f"{report.max_severity} or allow-listed ({allowed} allow-listed); data "
            f"{report.age_days} day(s) old{accepted}", measured, thresholds)


def _whole_export(snapshot: VulnSnapshot | None, params: Mapping[str, Any],
                  measured: dict[str, Any], thresholds: dict[str, Any]) -> tuple[list[str], str]:
    """The problem a partial snapshot makes (none when the policy accepts it, said in the
    second value), recorded in ``measured`` and ``thresholds``."""
    from lockgate.supplychain.vulns.snapshots import partial_reason

    floor = int(params.get("min_records", MIN_EXPORT_RECORDS))
    allow = bool(params.get("allow_partial", False))
    why = partial_reason(snapshot, floor)
    measured["whole_export"] = snapshot is not None and why is None
    thresholds.update(min_records=floor, allow_partial=allow)
    if why is None:
        return [], ""
    if allow:
        measured["partial"] = why
        return [], f"; partial data accepted by the policy: {params.get('reason')}"
    return [why + " (run `lockgate vulndb update`, or set allow_partial = true with a reason "
                  "under [gate.vulnerabilities])"], ""


def _scoped_packages(ev: Evidence, packages: dict[str, str], scope: str
                     ) -> tuple[dict[str, str], dict[str, object]]:
    """The environment's packages a scope judges, read from the BOM's runtime closure; every
    package when the BOM cannot be read or records no closure (said in the note)."""
    from packaging.utils import canonicalize_name

    from lockgate.supplychain.closure import judged_components

    try:
        judged = judged_components(json.loads(ev.file(BOM_FILE)), scope)
    except (Error, ValueError) as exc:
        note = f"all {len(packages)} packages judged: the BOM could not be read ({exc})"
        return packages, {"scope": scope, "note": note}
    names = {canonicalize_name(str(c.get("name", ""))) for c in judged.components}
    chosen = packages if not judged.scoped or scope == "all" else \
        {n: v for n, v in packages.items() if canonicalize_name(n) in names}
    return chosen, {**judged.to_dict(), "note": judged.note}


class LicensesGate(Configurable):
    name = "licenses"
    PARAMS = {"scope": _SCOPE}

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.supplychain.closure import judged_components
        from lockgate.supplychain.license_decisions import judge_libraries
        from lockgate.supplychain.licenses import policy_for

        ev = _evidence(ctx, self.name)
        if isinstance(ev, GateResult):
            return ev
        try:
            doc = json.loads(ev.file(BOM_FILE))
        except Error as exc:
            return GateResult(self.name, GateStatus.FAIL, exc.message)
        s = ctx.settings
        policy = policy_for(s.license_allow, s.license_deny)
        judged = judged_components(doc, str(self.params["scope"]))
        libraries = judged.components
        verdict = judge_libraries(libraries, policy, s.license_decisions,
                                  today=datetime.now(UTC).date())
        measured = {"scope": {**judged.to_dict(), "note": judged.note}, **verdict.measured()}
        status = GateStatus.FAIL if verdict.not_allowed else GateStatus.PASS
        return GateResult(self.name, status, verdict.message(judged.note), measured)
