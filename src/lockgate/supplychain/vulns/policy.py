"""Judge a version's distributions against the imported OSV snapshot and the vulnerability policy.

    report = assess_vulnerabilities(packages, snapshot, records, settings, today=date.today())
    report.passed, report.blocking, report.age_days

A finding blocks when its severity ranks above ``max_severity`` (UNKNOWN ranks with CRITICAL)
and no allow-list entry naming its id or one of its aliases is still in force. An expired entry
does not allow anything, and says so. Missing data or data older than ``max_age_days`` fails.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from lockgate.config.settings import Settings, VulnAllow
from lockgate.store.metadata import VulnSnapshot
from lockgate.supplychain.vulns.matching import Finding, VulnIndex
from lockgate.supplychain.vulns.records import parse_record
from lockgate.supplychain.vulns.severity import severity_rank

__all__ = ["VulnDecision", "VulnReport", "assess_vulnerabilities", "snapshot_age_days"]


@dataclass(frozen=True)
class VulnDecision:
    """A finding and what the policy makes of it: ``blocks``, ``allowed`` or ``below``."""

    finding: Finding
    outcome: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "outcome": self.outcome, "note": self.note}


@dataclass(frozen=True)
class VulnReport:
    snapshot: VulnSnapshot | None
    age_days: int | None
    max_age_days: int
    max_severity: str
    decisions: tuple[VulnDecision, ...]

    @property
    def stale(self) -> bool:
        return self.age_days is None or self.age_days > self.max_age_days

    @property
    def blocking(self) -> list[VulnDecision]:
        return [d for d in self.decisions if d.outcome == "blocks"]

    @property
    def passed(self) -> bool:
        return self.snapshot is not None and not self.stale and not self.blocking

    def problems(self) -> list[str]:
        out = []
        if self.snapshot is None:
            out.append("no vulnerability data imported (lockgate vulndb update, or vulndb "
                       "import FILE offline)")
        elif self.stale:
            out.append(f"vulnerability data is {self.age_days} days old "
                       f"(snapshot {self.snapshot.snapshot_date}); the limit is "
                       f"{self.max_age_days}")
        for d in self.blocking:
            f = d.finding
            fix = f", fixed in {', '.join(f.fixed_versions)}" if f.fixed_versions else ""
            out.append(f"{f.vuln_id} ({f.severity.value}) in {f.package} {f.version}{fix}"
                       + (f" [{d.note}]" if d.note else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot.to_dict() if self.snapshot else None,
            "age_days": self.age_days,
            "max_age_days": self.max_age_days,
            "max_severity": self.max_severity,
            "passed": self.passed,
            "findings": [d.to_dict() for d in self.decisions],
        }


def snapshot_age_days(snapshot: VulnSnapshot, today: date) -> int:
    """Days from the snapshot's newest record to ``today``."""
    return (today - date.fromisoformat(snapshot.snapshot_date[:10])).days


def assess_vulnerabilities(
    packages: Mapping[str, str],
    snapshot: VulnSnapshot | None,
    records: Sequence[str],
    settings: Settings,
    *,
    today: date,
) -> VulnReport:
    """Match ``packages`` (name -> version) against ``records`` (OSV JSON of ``snapshot``)."""
    threshold = severity_rank(settings.vuln_max_severity)
    index = VulnIndex(parse_record(json.loads(r)) for r in records)
    decisions = tuple(_decide(f, threshold, settings.vuln_allow, today)
                      for f in index.scan(packages))
    return VulnReport(
        snapshot=snapshot,
        age_days=snapshot_age_days(snapshot, today) if snapshot else None,
        max_age_days=settings.vuln_max_age_days,
        max_severity=settings.vuln_max_severity,
        decisions=decisions,
    )


def _decide(f: Finding, threshold: int, allow: Sequence[VulnAllow], today: date) -> VulnDecision:
    if severity_rank(f.severity.value) <= threshold:
        return VulnDecision(f, "below", "")
    ids = {f.vuln_id, *f.aliases}
    entries = [a for a in allow if a.id in ids]
    current = [a for a in entries if a.expires >= today]
    if current:
        a = max(current, key=lambda x: x.expires)
        return VulnDecision(f, "allowed", f"allow-listed until {a.expires}: {a.reason}")
    if entries:
        a = max(entries, key=lambda x: x.expires)
        return VulnDecision(f, "blocks", f"allow-list entry expired on {a.expires}")
    return VulnDecision(f, "blocks", "")
