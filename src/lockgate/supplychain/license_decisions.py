"""Per-package license decisions (``[[licenses.decisions]]``) applied over license findings.

A decision names a distribution and either the license it is under (``license``: an SPDX
expression, for metadata that does not say, judged by the policy like a declared one) or
accepts it as it is (``accept = true``: allowed whatever its license, a person having reviewed
it). Each has a reason, optionally ``expires`` (after that day it is not applied, and the finding
says so), ``by``, and ``version`` (a PEP 440 specifier: another version of the distribution,
whose license may have changed, is not covered). A decision for a distribution the BOM does
not hold is reported as unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from packaging.utils import canonicalize_name

from lockgate.config.values import LicenseDecision
from lockgate.supplychain.licenses import (
    LicenseFinding,
    LicenseOutcome,
    LicensePolicy,
    LicenseSource,
    assess,
    info_from_bom,
)

__all__ = ["DecisionReport", "LicenseVerdict", "apply_decisions", "describe",
           "judge_libraries"]


def describe(decision: LicenseDecision) -> str:
    """One line: what was decided, by whom, why, until when."""
    what = f"license {decision.license}" if decision.license else "accepted"
    what += f" for {decision.version}" if decision.version else ""
    by = f" by {decision.by}" if decision.by else ""
    until = f", until {decision.expires.isoformat()}" if decision.expires else ""
    return f"{what}{by}{until}: {decision.reason}"


@dataclass(frozen=True)
class DecisionReport:
    """One decision of the policy and what became of it: ``applied``, ``expired``, ``other
    version`` (the distribution's version is not one it covers) or ``unused`` (no
    distribution of that name)."""

    decision: LicenseDecision
    status: str

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {"package": d.package, "license": d.license, "accept": d.accept,
                "reason": d.reason, "expires": d.expires.isoformat() if d.expires else None,
                "by": d.by, "version": d.version or None, "status": self.status}


def _covers(specifier: str, version: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(specifier)
    except InvalidVersion:
        return False


def _apply(finding: LicenseFinding, decision: LicenseDecision,
           policy: LicensePolicy) -> LicenseFinding:
    said = describe(decision)
    if decision.license is not None:
        info = replace(finding.info, expression=decision.license, source=LicenseSource.DECISION,
                       problem=None,
                       evidence=(*finding.info.evidence, f"decision: {said}"))
        judged = assess(info, policy)
        return replace(judged, decision=said)
    if finding.outcome is LicenseOutcome.ALLOWED:
        return replace(finding, decision=said)
    return LicenseFinding(finding.info, LicenseOutcome.ALLOWED,
                          f"accepted by decision ({finding.reason})", said)


def apply_decisions(
    findings: Sequence[LicenseFinding],
    decisions: Sequence[LicenseDecision],
    policy: LicensePolicy,
    *,
    today: date,
) -> tuple[list[LicenseFinding], list[DecisionReport]]:
    """``findings`` with each distribution's decision applied (an expired one is not, and the
    finding says so), and what became of every decision."""
    by_name = {canonicalize_name(d.package): d for d in decisions}
    used: dict[str, str] = {}
    out: list[LicenseFinding] = []
    for finding in findings:
        key = canonicalize_name(finding.info.name)
        decision = by_name.get(key)
        if decision is None:
            out.append(finding)
        elif decision.version and not _covers(decision.version, finding.info.version):
            used.setdefault(key, "other version")
            note = (f"decision covers {finding.info.name} {decision.version}, not "
                    f"{finding.info.version}: not applied")
            out.append(replace(finding, reason=f"{finding.reason} ({note})", decision=note))
        elif decision.expires is not None and decision.expires < today:
            used[key] = "expired"
            note = f"decision expired on {decision.expires.isoformat()}, not applied"
            out.append(replace(finding, reason=f"{finding.reason} ({note})", decision=note))
        else:
            used.setdefault(key, "applied")
            out.append(_apply(finding, decision, policy))
    reports = [DecisionReport(d, used.get(canonicalize_name(d.package), "unused"))
               for d in decisions]
    return out, reports


@dataclass(frozen=True)
class LicenseVerdict:
    """The licenses gate's reading of a BOM's libraries: every finding (decisions applied), the
    ones not allowed (denied first), and what became of each decision."""

    findings: list[LicenseFinding]
    decisions: list[DecisionReport]

    @property
    def not_allowed(self) -> list[LicenseFinding]:
        return sorted((f for f in self.findings if f.outcome is not LicenseOutcome.ALLOWED),
                      key=lambda f: (f.outcome is not LicenseOutcome.DENIED,
                                     f.info.name.lower()))

    def measured(self) -> dict[str, Any]:
        """Every finding and decision, none left out, for the gate result."""
        return {"libraries": len(self.findings),
                "not_allowed": [f.to_dict() for f in self.not_allowed],
                "findings": [f.to_dict() for f in self.findings],
                "decisions": [d.to_dict() for d in self.decisions]}

    def message(self, scope_note: str) -> str:
        """The gate's message: every library not allowed, with its reason, and the decisions."""
        bad = self.not_allowed
        applied = [f for f in self.findings
                   if f.decision is not None and not f.decision.endswith("not applied")]
        notes = [f"{len(applied)} by decision ("
                 + "; ".join(f"{f.info.name}: {f.decision}" for f in applied) + ")"
                 ] if applied else []
        unused = [d.decision.package for d in self.decisions if d.status == "unused"]
        notes += [f"decisions for {', '.join(unused)} match no distribution"] if unused else []
        tail = f"; {'; '.join(notes)}" if notes else ""
        if not bad:
            return (f"{len(self.findings)} distributions ({scope_note}), every license "
                    f"allowed{tail}")
        return (f"{len(bad)} of {len(self.findings)} distributions ({scope_note}) not allowed: "
                + "; ".join(f"{f.info.name} {f.info.version}: {f.reason}" for f in bad) + tail)


def judge_libraries(components: Sequence[Any], policy: LicensePolicy,
                    decisions: Sequence[LicenseDecision], *, today: date) -> LicenseVerdict:
    """The verdict on a BOM's library components under ``policy`` and ``decisions``."""
    findings = [assess(info_from_bom(c), policy) for c in components]
    applied, reports = apply_decisions(findings, decisions, policy, today=today)
    return LicenseVerdict(applied, reports)
