"""What happened and whether it still holds: a model's history from the audit log, the log
itself and its chain check, evidence packs, and the integrity check and collection of the
artifact store."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.api.files import VersionFiles
from lockgate.api.home import Home, HomeView
from lockgate.api.lookup import Lookup
from lockgate.api.vulnerabilities import Vulnerabilities
from lockgate.audit import AuditEvent, AuditRecord, ChainReport, EventType, verify_chain
from lockgate.errors import InvalidInputError, NotFoundError
from lockgate.progress import Progress
from lockgate.seal.evidence import write_evidence
from lockgate.seal.integrity import CollectReport, FsckReport, collect, fsck
from lockgate.supplychain.vulns.policy import VulnReport
from lockgate.types import ModelRef, validate_name

__all__ = ["Records"]


@dataclass(frozen=True)
class _PackSource(HomeView):
    """What an evidence pack is read from (:class:`lockgate.seal.evidence.EvidenceSource`)."""

    vulns: Vulnerabilities

    def vulnerability_report(self, ref: ModelRef, /) -> VulnReport:
        return self.vulns.vulnerability_report(ref)


class Records:
    """The audit log read back, evidence packs, and the integrity of what is stored."""

    def __init__(self, home: Home, lookup: Lookup, files: VersionFiles,
                 vulns: Vulnerabilities) -> None:
        self._home = home
        self._lookup = lookup
        self._files = files
        self._pack_source = _PackSource(home, vulns)

    def history(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Which version held each stage and alias when, who moved it, and which gates passed,
        from the audit log: ``{"timeline": [...], "holdings": [...]}``."""
        validate_name(name)
        if not self._home.meta.list_versions(name):
            raise NotFoundError(f"no model named {name!r}")
        story = _Story(name, self._home.settings.stages[0])
        for r in self.audit_log(model=name):
            story.add(r)
        return {"timeline": story.timeline, "holdings": story.holdings}

    def audit_log(self, *, model: str | None = None) -> list[AuditRecord]:
        recs = self._home.meta.audit_records()
        return [r for r in recs if model is None or r.model == model]

    def audit_verify(self) -> ChainReport:
        return verify_chain(self._home.meta.audit_records())

    def audit_seq(self) -> int:
        """The sequence number of the audit log's last record (0 when empty)."""
        return self._home.meta.audit_tail()

    def audit_after(self, seq: int, *, model: str | None = None) -> list[AuditRecord]:
        """The audit records after ``seq``, of ``model`` when given."""
        return [r for r in self._home.meta.audit_records(seq)
                if model is None or r.model == model]

    def export_evidence(self, ref: str | ModelRef, out: Path | str, *,
                        actor: str | None = None) -> Path:
        """Write the version's evidence pack into the new or empty folder ``out``."""
        v = self._lookup.get(ref)
        self._files.verify(v)
        folder = write_evidence(self._pack_source, v, Path(out))
        self._home.meta.append_event(AuditEvent(
            EventType.EVIDENCE_EXPORTED, self._home.actor(actor), v.name, v.number,
            {"folder": folder.name},
        ))
        return folder

    def fsck(self, *, progress: Progress | None = None) -> FsckReport:
        """Check every version (each blob's digest, its signature and signed manifest against
        its record), the audit chain, and list orphan blobs and unfinished writes. Writes
        nothing; :attr:`FsckReport.damaged` says whether anything is broken."""
        return fsck(self._home.meta, self._home.artifacts, self._home.settings,
                    progress=progress)

    def gc(self, *, grace_s: float = 3600.0, dry_run: bool = False,
           actor: str | None = None) -> CollectReport:
        """Remove orphan blobs and unfinished writes older than ``grace_s`` seconds, never a
        blob a version references (see :mod:`lockgate.seal.integrity`); audited as one
        ``artifacts.collected`` event."""
        if not math.isfinite(grace_s) or grace_s < 0:
            raise InvalidInputError(f"the grace period must be 0 or more seconds, not {grace_s}")
        return collect(self._home.meta, self._home.artifacts, grace_s=grace_s,
                       dry_run=dry_run, actor=self._home.actor(actor))


_DECIDED: dict[str, str] = {EventType.APPROVED: "approved", EventType.REJECTED: "rejected"}


@dataclass
class _Story:
    """A model's timeline and stage/alias holdings, built one audit record at a time."""

    name: str
    first_stage: str
    timeline: list[dict[str, Any]] = field(default_factory=list)
    holdings: list[dict[str, Any]] = field(default_factory=list)
    open_: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, r: AuditRecord) -> None:
        handlers: dict[str, Callable[[AuditRecord], None]] = {
            EventType.MODEL_REGISTERED: self._registered,
            EventType.STAGE_CHANGED: self._stage_changed,
            EventType.PROMOTION_REFUSED: self._refused,
            EventType.ALIAS_SET: self._alias_set,
            EventType.ALIAS_REMOVED: self._alias_removed,
            EventType.APPROVED: self._decided,
            EventType.REJECTED: self._decided,
            EventType.WAIVED: self._decided,
        }  # keyed by text: an EventType member hashes and compares as its value
        handler = handlers.get(r.type)
        if handler is not None:
            handler(r)

    def _event(self, r: AuditRecord, event: str, detail: str, version: int | None,
               gates: list[Any] | None = None) -> None:
        self.timeline.append({"at": r.ts, "event": event, "version": version,
                              "detail": detail, "actor": r.actor, "gates": gates or []})

    def _enter(self, kind: str, what: str, version: int | None, at: str, actor: str) -> None:
        row = {"kind": kind, "name": what, "version": version, "from": at, "until": None,
               "by": actor}
        if kind == "alias":
            self._leave(kind, what, None, at)
        self.open_[(kind, f"{what}@{version}" if kind == "stage" else what)] = row
        self.holdings.append(row)

    def _leave(self, kind: str, what: str, version: int | None, at: str) -> None:
        row = self.open_.pop((kind, f"{what}@{version}" if kind == "stage" else what), None)
        if row is not None:
            row["until"] = at

    def _registered(self, r: AuditRecord) -> None:
        self._enter("stage", self.first_stage, r.version, r.ts, r.actor)
        self._event(r, "registered", f"in {self.first_stage}", r.version)

    def _stage_changed(self, r: AuditRecord) -> None:
        p = r.payload
        self._leave("stage", str(p.get("from")), r.version, r.ts)
        self._enter("stage", str(p.get("to")), r.version, r.ts, r.actor)
        reason = f" ({p['reason']})" if p.get("reason") else ""
        self._event(r, "stage", f"{p.get('from')} -> {p.get('to')}{reason}", r.version,
                    list(p.get("gates", [])))

    def _refused(self, r: AuditRecord) -> None:
        p = r.payload
        failed = [x.get("gate") for x in p.get("results", [])
                  if x.get("status") in ("fail", "error")]
        self._event(r, "refused", f"{p.get('transition')}: failed {', '.join(failed)}",
                    r.version, failed)

    def _alias_set(self, r: AuditRecord) -> None:
        alias = r.payload.get("alias")
        self._enter("alias", str(alias), r.version, r.ts, r.actor)
        self._event(r, "alias", f"{alias} -> {self.name}@{r.version}", r.version)

    def _alias_removed(self, r: AuditRecord) -> None:
        alias = r.payload.get("alias")
        self._leave("alias", str(alias), None, r.ts)
        self._event(r, "alias", f"{alias} removed", None)

    def _decided(self, r: AuditRecord) -> None:
        p = r.payload
        what = _DECIDED.get(r.type) or f"waived {p.get('gate')} until {p.get('expires')}"
        comment = f": {p['comment']}" if p.get("comment") else ""
        self._event(r, "decision", f"{what} for {p.get('stage')}{comment}", r.version)
