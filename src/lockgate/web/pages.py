"""The web console's pages: server-rendered HTML, no script, every asset inline.

Each page function reads what one page shows and returns it as a :class:`Page` (a template
under ``templates/console/`` and its values); :func:`render` makes the HTML. Controls a
principal may not use are not rendered (the actions are refused server-side anyway).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.access.identity import Principal
from lockgate.audit import verify_chain
from lockgate.errors import Error, NotFoundError
from lockgate.web.actions import Plan
from lockgate.web.charts import spark
from lockgate.web.report import aliases_of, card_text, drift_cards, lineage_facts
from lockgate.web.templating import num
from lockgate.web.templating import render as render_template

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate
    from lockgate.audit import AuditRecord
    from lockgate.types import Decision, Version

__all__ = ["Page", "Viewer", "message", "render"]


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page, and the form token their POSTs must carry."""

    principal: Principal
    csrf: str
    auth: bool

    def can(self, role: str, model: str | None = None) -> bool:
        return self.principal.can(role, model)


@dataclass(frozen=True)
class Page:
    """One console page: its title, its template, the values the template reads, and a line
    to flash above the content (``error`` marks it as one)."""

    title: str
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    flash: str = ""
    error: bool = False


def render(page: Page, viewer: Viewer | None) -> str:
    """The HTML of ``page`` as ``viewer`` sees it (None: nobody logged in)."""
    return render_template(page.template, title=page.title, viewer=viewer, flash=page.flash,
                           error=page.error, **page.context)


def message(title: str, text: str, *, back: str | None = None, error: bool = True) -> Page:
    """A page saying only ``text`` (an error, a refusal), with a link ``back`` if given."""
    return Page(title, "console/message.html", {"back": back}, flash=text, error=error)


# -- models ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRow:
    """A model on the models page."""

    name: str
    production: int | None
    stages: str
    versions: int
    changed: str
    drift: str | None


def models_page(lg: Lockgate, viewer: Viewer) -> Page:
    last: dict[str, AuditRecord] = {}
    for r in lg.audit_log():
        if r.model:
            last[r.model] = r
    serving = lg.serving_stage
    rows = []
    for s in lg.models():
        prod = s.stages.get(serving, [])
        drift = None
        if prod:
            run = lg.latest_monitor_run(s.name, max(prod))
            if run:
                drift = str(run.get("drift", {}).get("status", "review"))
        change = last.get(s.name)
        rows.append(ModelRow(
            s.name, max(prod) if prod else None,
            ", ".join(f"{st}: {', '.join(map(str, ns))}" for st, ns in s.stages.items()),
            s.versions, f"{change.ts[:19]} {change.type} by {change.actor}" if change else "-",
            drift))
    return Page("Models", "console/models.html", {"rows": rows, "serving": serving})


def model_page(lg: Lockgate, viewer: Viewer, name: str) -> Page:
    versions = lg.versions(name)
    held: dict[int, list[str]] = {}
    for a, n in lg.aliases(name).items():
        held.setdefault(n, []).append(a)
    return Page(name, "console/model.html",
                {"name": name, "versions": list(reversed(versions)), "held": held})


# -- version -----------------------------------------------------------------------------------
def _signature(lg: Lockgate, v: Version) -> tuple[str, str | None]:
    """("ok", key id), ("review", None) when unsigned and allowed, or ("fail", why)."""
    try:
        key = lg.verify(v)
    except Error as exc:
        return "fail", exc.message
    if key is None:
        return "review", None
    return "ok", key


def _vulnerabilities(lg: Lockgate, v: Version) -> dict[str, Any]:
    try:
        report = lg.vulnerability_report(v.ref)
    except Error as exc:
        return {"error": exc.message}
    return {"findings": len(report.decisions), "max_severity": report.max_severity or "none",
            "snapshot": report.snapshot.snapshot_date[:10] if report.snapshot else "none",
            "passed": report.passed}


def _bom(lg: Lockgate, v: Version) -> dict[str, Any] | None:
    """Components by kind, the commonest licenses and the vulnerability report; None
    without a stored BOM."""
    try:
        bom = json.loads(lg.file_bytes(v, "bom.cdx.json"))
    except (NotFoundError, ValueError):
        return None
    kinds: dict[str, int] = {}
    licenses: dict[str, int] = {}
    for c in bom.get("components", []):
        kinds[str(c.get("type", "?"))] = kinds.get(str(c.get("type", "?")), 0) + 1
        for lic in c.get("licenses", []) or [{}]:
            text = (lic.get("expression") or lic.get("license", {}).get("id")
                    or lic.get("license", {}).get("name") or "unknown")
            licenses[str(text)] = licenses.get(str(text), 0) + 1
    return {"components": ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
            "vulnerabilities": _vulnerabilities(lg, v), "spec": bom.get("specVersion", "?"),
            "licenses": sorted(licenses.items(), key=lambda kv_: -kv_[1])[:12]}


def _reproduction(lg: Lockgate, v: Version) -> tuple[Decision, bool] | None:
    """The latest reproduction decision and whether it matched; None when never reproduced."""
    found = [d for d in lg.decisions(v.ref) if d.kind == "reproduction"]
    if not found:
        return None
    d = found[-1]
    return d, bool(d.detail.get("match", d.detail.get("passed", False)))


def _actions(lg: Lockgate, viewer: Viewer, v: Version) -> dict[str, Any]:
    """The stages the viewer may approve for (None: may not approve) and promote to."""
    stages = list(lg.settings.stages)
    later = stages[stages.index(v.stage) + 1:] if v.stage in stages else []
    serving = lg.serving_stage
    allowed = [s for s in later if viewer.can(
        "deployer" if stages.index(s) >= stages.index(serving) else "developer", v.name)]
    return {"approve_stages": (later or stages) if viewer.can("approver", v.name) else None,
            "promote_to": allowed}


def version_page(lg: Lockgate, viewer: Viewer, name: str, number: int) -> Page:
    v = lg.get(f"{name}@{number}")
    datasets = v.environment.get("datasets", [])
    return Page(f"{name}@{number}", "console/version.html", {
        "v": v, "card": card_text(lg, v), "mine": aliases_of(v, lg.aliases(name)),
        "signature": _signature(lg, v), **_actions(lg, viewer, v), "runs": lg.gate_runs(v.ref),
        "found": lg.decisions(v.ref), "bom": _bom(lg, v), "reproduction": _reproduction(lg, v),
        "fingerprints": ", ".join(f"{d.get('name')}={d.get('fingerprint', '?')}"
                                  for d in datasets if isinstance(d, dict)) or "-",
        "tags": ", ".join(f"{k}={x}" for k, x in v.tags.items()) or "-",
        "facts": lineage_facts(v), "siblings": lg.versions(name)})


# -- deployments -------------------------------------------------------------------------------
def deployments_page(lg: Lockgate, viewer: Viewer) -> Page:
    return Page("Deployments", "console/deployments.html", {"deployments": lg.deployments()})


@dataclass(frozen=True)
class LiveCell:
    """What the server says of a slot's version: ``unmetered`` (no serving metrics),
    ``absent`` (not loaded) or ``loaded`` with its figures as ``text``."""

    kind: str
    text: str = ""


def _live(live: Mapping[str, Mapping[str, float]] | None, version: int | None
          ) -> LiveCell | None:
    if version is None:
        return None
    if live is None:
        return LiveCell("unmetered")
    m = live.get(str(version))
    if m is None:
        return LiveCell("absent")
    rate = m.get("rate")
    return LiveCell("loaded", f"loaded · {num(m.get('requests', 0), '.0f')} requests"
                    + (f" · {rate:.1f} req/s" if rate is not None else "")
                    + f" · error rate {m.get('error_rate', 0.0):.2%}"
                    + f" · client errors {m.get('client_error_rate', 0.0):.2%}"
                    + (f" · p50 {m['p50'] * 1000:.2f} ms · p99 {m['p99'] * 1000:.2f} ms"
                       if "p50" in m else "")
                    + (f" · shadow divergence {m['divergence']:.3g}"
                       if "divergence" in m else ""))


def deployment_page(lg: Lockgate, viewer: Viewer, name: str,
                    live: Mapping[str, Mapping[str, float]] | None) -> Page:
    d = lg.deployments().get(name)
    if d is None:
        raise NotFoundError(f"model {name!r} has no deployment",
                            hint="promote a version to production first")
    slots = [(label, n, _live(live, n)) for label, n in (
        ("stable (blue)", d.stable), ("candidate (green)", d.candidate), ("shadow", d.shadow),
        ("previous (kept for rollback)", d.previous))]
    last_evaluation = "no failure recorded"
    if d.analysis:
        events = [r for r in lg.audit_log(model=name)
                  if r.type in ("deploy.rolled_back", "deploy.failed", "deploy.switched")]
        if events:
            last = events[-1]
            last_evaluation = (f"{last.ts[:19]} {last.type}: "
                               f"{json.dumps(dict(last.payload))[:160]}")
    deployable = None
    if viewer.can("deployer", name):
        deployable = [v for v in reversed(lg.versions(name)) if v.stage not in (
            lg.settings.stages[0], lg.settings.stages[-1]) and v.number != d.stable]
    return Page(f"Deployment of {name}", "console/deployment.html", {
        "name": name, "d": d, "slots": slots, "last_evaluation": last_evaluation,
        "deployable": deployable})


# -- drift -------------------------------------------------------------------------------------
def drift_page(lg: Lockgate, viewer: Viewer, name: str, number: int) -> Page:
    v = lg.get(f"{name}@{number}")
    runs = lg.monitor_runs(v.ref, limit=50)
    latest = runs[0] if runs else None
    history: dict[str, list[tuple[float, float, bool]]] = {}
    for run in reversed(runs):
        for f in run.get("drift", {}).get("features", []):
            history.setdefault(f["feature"], []).append(
                (float(f["score"]), float(f["threshold"]), bool(f["drifted"])))
    rows = [(feat, pts[-1][0], pts[-1][1], pts[-1][2], spark([p[0] for p in pts], pts[-1][1]))
            for feat, pts in history.items()]
    profile = lg.reference_profile(v.ref)
    return Page(f"Drift of {name}@{number}", "console/drift.html", {
        "v": v, "history": rows, "windows": len(runs), "profile": profile, "latest": latest,
        "cards": drift_cards(profile, latest)})


# -- audit -------------------------------------------------------------------------------------
_AUDIT_LIMIT = 500


def audit_page(lg: Lockgate, viewer: Viewer, filters: Mapping[str, str]) -> Page:
    records = lg.audit_log()
    chain = verify_chain(records)  # the records just read: one pass over the log
    model, kind, actor = (filters.get("model", ""), filters.get("type", ""),
                          filters.get("actor", ""))
    shown = [r for r in records if (not model or r.model == model)
             and (not kind or r.type == kind) and (not actor or r.actor == actor)]
    return Page("Audit trail", "console/audit.html", {
        "chain": chain, "model": model, "kind": kind, "actor": actor,
        "types": sorted({r.type for r in records}), "matched": len(shown),
        "limit": _AUDIT_LIMIT, "shown": list(reversed(shown[-_AUDIT_LIMIT:]))})


# -- login, confirmation, result ---------------------------------------------------------------
def login_page(problem: str = "") -> Page:
    """The login form, saying above it why the last try failed (if it did)."""
    return Page("lockgate", "console/login.html", {"problem": problem})


def confirm_page(plan: Plan, fields: Mapping[str, str], back: str) -> Page:
    """Asks to confirm ``plan``, posting ``fields`` again with ``confirm=yes``."""
    return Page("Confirm", "console/confirm.html",
                {"plan": plan, "fields": dict(fields), "back": back})


def result_page(plan: Plan, events: Sequence[AuditRecord], back: str) -> Page:
    """What ``plan`` did: the audit events it appended."""
    return Page("Done", "console/result.html", {"plan": plan, "events": events, "back": back})
