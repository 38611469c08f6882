"""Supply-chain gates: the BOM validates, the signature verifies, no vulnerability above the
policy's severity, and every license allowed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from lockgate.errors import Error
from lockgate.gates.base import Configurable, Evidence, GateContext
from lockgate.seal.folder import BOM_FILE
from lockgate.types import GateResult, GateStatus

__all__ = ["LicensesGate", "SbomValidGate", "SignatureGate", "VulnerabilitiesGate"]


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
    name = "vulnerabilities"

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
        snapshot, records = ev.vulnerability_data(
            sorted({canonicalize_name(n) for n in packages}))
        report = assess_vulnerabilities(packages, snapshot, records, ctx.settings,
                                        today=datetime.now(UTC).date())
        measured = {"snapshot": report.snapshot.to_dict() if report.snapshot else None,
                    "age_days": report.age_days,
                    "findings": [d.to_dict() for d in report.decisions]}
        thresholds = {"max_severity": report.max_severity,
                      "max_age_days": report.max_age_days,
                      "allow": [a.id for a in ctx.settings.vuln_allow]}
        problems = report.problems()
        if problems:
            return GateResult(self.name, GateStatus.FAIL, "; ".join(problems), measured,
                              thresholds)
        allowed = sum(1 for d in report.decisions if d.outcome == "allowed")
        return GateResult(
            self.name, GateStatus.PASS,
            f"{len(packages)} packages, {len(report.decisions)} finding(s) at or below "
            f"{report.max_severity} or allow-listed ({allowed} allow-listed); data "
            f"{report.age_days} day(s) old", measured, thresholds)


class LicensesGate(Configurable):
    name = "licenses"

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.supplychain.licenses import (
            LicenseOutcome,
            assess,
            info_from_bom,
            policy_for,
        )

        ev = _evidence(ctx, self.name)
        if isinstance(ev, GateResult):
            return ev
        try:
            doc = json.loads(ev.file(BOM_FILE))
        except Error as exc:
            return GateResult(self.name, GateStatus.FAIL, exc.message)
        s = ctx.settings
        policy = policy_for(s.license_allow, s.license_deny)
        libraries = [c for c in doc.get("components", []) if c.get("type") == "library"]
        findings = [assess(info_from_bom(c), policy) for c in libraries]
        bad = sorted((f for f in findings if f.outcome is not LicenseOutcome.ALLOWED),
                     key=lambda f: (f.outcome is not LicenseOutcome.DENIED, f.info.name.lower()))
        measured = {"libraries": len(findings),
                    "not_allowed": [f.to_dict() for f in bad]}
        if bad:
            return GateResult(
                self.name, GateStatus.FAIL,
                f"{len(bad)} of {len(findings)} distributions not allowed: "
                + "; ".join(f"{f.info.name} {f.info.version}: {f.reason}" for f in bad[:10])
                + (" ..." if len(bad) > 10 else ""),
                measured)
        return GateResult(self.name, GateStatus.PASS,
                          f"{len(findings)} distributions, every license allowed", measured)
