"""Known vulnerabilities: OSV snapshots imported into the metadata store, and a version's
packages assessed against the current one under the policy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from packaging.utils import canonicalize_name

from lockgate.api.home import Home
from lockgate.api.lookup import Lookup
from lockgate.audit import AuditEvent, EventType, canonical_json, now
from lockgate.errors import Error
from lockgate.progress import Progress
from lockgate.supplychain.vulns.download import DEFAULT_URL, Download, download_export
from lockgate.supplychain.vulns.policy import VulnReport, assess_vulnerabilities
from lockgate.supplychain.vulns.snapshots import load_snapshot
from lockgate.types import ModelRef, VulnSnapshot

__all__ = ["Vulnerabilities"]


class Vulnerabilities:
    """The vulnerability data a home holds and what it says about a version."""

    def __init__(self, home: Home, lookup: Lookup) -> None:
        self._home = home
        self._lookup = lookup

    def import_vulns(self, path: Path | str, *, actor: str | None = None,
                     source: str | None = None, checks: Sequence[str] = ()) -> VulnSnapshot:
        """Load an OSV snapshot (PyPI ``all.zip`` or a folder of OSV JSON) into the metadata
        store; it becomes the data the vulnerabilities gate and ``scan`` use. ``source``
        (default: the path) is what the snapshot records as its origin."""
        snap = load_snapshot(Path(path))
        rows = [(r.id, pkg, canonical_json(dict(r.raw))) for r in snap.records
                for pkg in r.packages]
        origin = source or snap.source
        stored = VulnSnapshot(0, snap.sha256, snap.date, now(), origin, len(snap.records),
                              snap.ecosystem, snap.export)
        return self._home.meta.import_vulns(stored, rows, AuditEvent(
            EventType.VULNDB_IMPORTED, self._home.actor(actor), None, None,
            {"sha256": snap.sha256, "snapshot_date": snap.date, "records": len(snap.records),
             "source": source or Path(snap.source).name, "skipped": snap.skipped,
             "withdrawn": snap.withdrawn, "ecosystem": snap.ecosystem, "export": snap.export,
             "checks": list(checks)},
        ))

    def update_vulns(self, url: str = DEFAULT_URL, *, sha256: str | None = None,
                     progress: Progress | None = None,
                     actor: str | None = None) -> tuple[VulnSnapshot, Download]:
        """Download the OSV export at ``url`` into the home (resumable, verified), import it,
        and only then swap it in as ``<home>/vulndb/all.zip``. A failed download or import
        leaves the snapshot in force as it was."""
        fetched = download_export(url, self._home.settings.home / "vulndb", sha256=sha256,
                                  progress=progress)
        try:
            snap = self.import_vulns(fetched.path, actor=actor, source=url,
                                     checks=fetched.checks)
        except Error:
            fetched.discard()
            raise
        fetched.install()
        return snap, fetched

    def vuln_snapshot(self) -> VulnSnapshot | None:
        """The imported vulnerability snapshot, or None before the first import."""
        return self._home.meta.vuln_snapshot()

    def vulnerability_data(self, packages: Sequence[str]) -> tuple[VulnSnapshot | None,
                                                                   list[str]]:
        """The current snapshot and the record JSON affecting any of ``packages``."""
        snapshot = self._home.meta.vuln_snapshot()
        if snapshot is None:
            return None, []
        wanted = sorted({canonicalize_name(p) for p in packages})
        return snapshot, list(dict.fromkeys(self._home.meta.vuln_records(wanted)))

    def vulnerability_report(self, ref: str | ModelRef) -> VulnReport:
        """The version's packages matched against the current OSV snapshot under the policy."""
        v = self._lookup.get(ref)
        raw = v.environment.get("packages")
        packages = {str(k): str(x) for k, x in raw.items()} if isinstance(raw, dict) else {}
        snapshot, records = self.vulnerability_data(sorted(packages))
        return assess_vulnerabilities(packages, snapshot, records, self._home.settings,
                                      today=datetime.now(UTC).date())
