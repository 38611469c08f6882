"""The web console's pages: server-rendered HTML, no script, every asset inline.

Each function returns the ``<main>`` content of one page; :func:`page` wraps it. Controls a
principal may not use are not rendered (the actions are refused server-side anyway).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from lockgate.access.identity import Principal
from lockgate.audit import verify_chain
from lockgate.errors import Error, NotFoundError
from lockgate.seal.folder import CARD_FILE
from lockgate.web.report import (
    CSS,
    decisions_section,
    drift_section,
    esc,
    gates_section,
    kv,
    lineage_section,
    markdown,
    num,
    overview_section,
    parity_section,
    pill,
)

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate
    from lockgate.audit import AuditRecord
    from lockgate.types import Version

__all__ = ["Viewer", "page"]

_UI_CSS = """
a { color: #1f5fa8; }
a:focus, button:focus, input:focus, select:focus, textarea:focus {
  outline: 3px solid #f0b429; outline-offset: 2px; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px;
  background: #fff; padding: 6px; z-index: 10; }
header nav { display: inline; margin-left: 24px; background: none; padding: 0; }
header nav a { color: #d9e2ec; margin-right: 16px; }
header .who { float: right; color: #bcccdc; font-size: 14px; }
header .who form { display: inline; }
form.action { display: grid; grid-template-columns: 160px 1fr; gap: 8px 12px;
  align-items: center; max-width: 640px; margin: 8px 0 16px; }
form.action button, form.inline button, .confirm button { grid-column: 2; justify-self: start; }
button { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid #334e68;
  background: #334e68; color: #fff; cursor: pointer; }
button.secondary { background: #fff; color: #334e68; }
button.danger { background: #c53030; border-color: #c53030; }
input, select, textarea { font: inherit; padding: 5px 8px; border: 1px solid #9aa5b1;
  border-radius: 5px; }
.flash { padding: 10px 14px; border-radius: 6px; background: #e3f8ff; margin-bottom: 16px; }
.flash.error { background: #ffe3e3; }
.bar { display: flex; height: 26px; border-radius: 6px; overflow: hidden; font-size: 13px;
  color: #fff; }
.bar div { display: flex; align-items: center; padding: 0 8px; white-space: nowrap; }
.spark { width: 260px; height: 60px; }
tr.broken td { background: #ffe3e3; font-weight: 600; }
"""


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page, and the form token their POSTs must carry."""

    principal: Principal
    csrf: str
    auth: bool

    def can(self, role: str, model: str | None = None) -> bool:
        return self.principal.can(role, model)


def page(title: str, body: str, viewer: Viewer | None, *, flash: str = "",
         error: bool = False) -> str:
    who = ""
    nav = ""
    if viewer is not None:
        roles = ", ".join(sorted(viewer.principal.roles)) or "grants only"
        logout = (f'<form method="post" action="/ui/logout"><input type="hidden" name="csrf" '
                  f'value="{esc(viewer.csrf)}"><button class="secondary" type="submit">'
                  "Log out</button></form>" if viewer.auth else "")
        who = (f'<div class="who">{esc(viewer.principal.name)} ({esc(roles)}) {logout}</div>')
        nav = ('<nav aria-label="Main"><a href="/ui/">Models</a><a href="/ui/deployments">'
               'Deployments</a><a href="/ui/audit">Audit trail</a></nav>')
    note = (f'<div class="flash{" error" if error else ""}" role="status">{flash}</div>'
            if flash else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)} — lockgate</title><style>{CSS}{_UI_CSS}</style></head><body>"
            '<a class="skip" href="#content">Skip to content</a>'
            f"<header>{who}<strong>lockgate</strong>{nav}<h1>{esc(title)}</h1></header>"
            f'<main id="content">{note}{body}</main></body></html>\n')


def section(sid: str, title: str, content: str) -> str:
    return f'<section id="{sid}" aria-labelledby="{sid}-h"><h2 id="{sid}-h">{esc(title)}</h2>' \
           f"{content}</section>"


def _link(path: str, text: str) -> str:
    return f'<a href="{esc(path)}">{esc(text)}</a>'


def version_path(name: str, number: int) -> str:
    return f"/ui/models/{quote(name)}/versions/{number}"


def _form(viewer: Viewer, action: str, fields: str, button: str, hidden: Mapping[str, Any],
          *, danger: bool = False, label: str) -> str:
    hid = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                  for k, v in {**hidden, "csrf": viewer.csrf}.items())
    cls = ' class="danger"' if danger else ""
    return (f'<form class="action" method="post" action="/ui/actions/{esc(action)}" '
            f'aria-label="{esc(label)}">{hid}{fields}<button type="submit"{cls}>'
            f"{esc(button)}</button></form>")


def _field(fid: str, label: str, control: str) -> str:
    return f'<label for="{fid}">{esc(label)}</label>{control}'


def _stage_select(fid: str, stages: Sequence[str], selected: str = "") -> str:
    opts = "".join(f'<option value="{esc(s)}"{" selected" if s == selected else ""}>'
                   f"{esc(s)}</option>" for s in stages)
    return f'<select id="{fid}" name="stage" required>{opts}</select>'


# -- models ------------------------------------------------------------------------------------
def models_page(lg: Lockgate, viewer: Viewer) -> str:
    summaries = lg.models()
    last: dict[str, AuditRecord] = {}
    for r in lg.audit_log():
        if r.model:
            last[r.model] = r
    serving = lg.serving_stage
    rows = []
    for s in summaries:
        prod = s.stages.get(serving, [])
        drift = "-"
        if prod:
            run = lg.latest_monitor_run(s.name, max(prod))
            if run:
                drift = pill(str(run.get("drift", {}).get("status", "review")))
        stages = ", ".join(f"{esc(st)}: {', '.join(map(str, ns))}" for st, ns in
                           s.stages.items())
        change = last.get(s.name)
        changed = f"{change.ts[:19]} {change.type} by {change.actor}" if change else "-"
        rows.append(
            f"<tr><td>{_link(f'/ui/models/{quote(s.name)}', s.name)}</td>"
            f"<td>{_link(version_path(s.name, max(prod)), str(max(prod))) if prod else '-'}</td>"
            f"<td>{stages}</td><td class='num'>{s.versions}</td>"
            f"<td>{esc(changed)}</td><td>{drift}</td></tr>")
    if not rows:
        return section("models", "Models", '<p class="muted">No model registered yet.</p>')
    table = ("<table><caption class='muted'>Every registered model</caption><tr>"
             f"<th scope='col'>model</th><th scope='col'>{esc(serving)}</th>"
             "<th scope='col'>versions by stage</th><th scope='col'>versions</th>"
             "<th scope='col'>last change</th><th scope='col'>drift</th></tr>"
             + "".join(rows) + "</table>")
    return section("models", "Models", table)


def model_page(lg: Lockgate, viewer: Viewer, name: str) -> str:
    versions = lg.versions(name)
    aliases = lg.aliases(name)
    held: dict[int, list[str]] = {}
    for a, n in aliases.items():
        held.setdefault(n, []).append(a)
    rows = "".join(
        f"<tr><td>{_link(version_path(name, v.number), str(v.number))}</td>"
        f"<td>{pill(v.stage)}</td><td>{esc(', '.join(held.get(v.number, [])))}"
        f"</td><td>{esc(v.created_at[:19])}</td><td>{esc(v.creator)}</td>"
        f"<td>{esc(v.framework)} {esc(v.framework_version)}</td>"
        f"<td>{_link(version_path(name, v.number) + '/drift', 'drift')}</td></tr>"
        for v in reversed(versions))
    table = ("<table><tr><th scope='col'>version</th><th scope='col'>stage</th>"
             "<th scope='col'>aliases</th><th scope='col'>created</th><th scope='col'>by</th>"
             f"<th scope='col'>framework</th><th scope='col'>drift</th></tr>{rows}</table>")
    links = (f"<p>{_link('/ui/deployments/' + quote(name), 'Deployment')} · "
             f"{_link('/ui/audit?' + urlencode({'model': name}), 'Audit trail')}</p>")
    return section("versions", f"Versions of {name}", links + table)


# -- version -----------------------------------------------------------------------------------
def _signature(lg: Lockgate, v: Version) -> str:
    try:
        key = lg.verify(v)
    except Error as exc:
        return f"{pill('fail')} {esc(exc.message)}"
    if key is None:
        return f"{pill('review')} unsigned (the policy allows it)"
    return f"{pill('ok')} verified — key <code>{esc(key)}</code>"


def _bom(lg: Lockgate, v: Version) -> str:
    try:
        bom = json.loads(lg.file_bytes(v, "bom.cdx.json"))
    except (NotFoundError, ValueError):
        return '<p class="muted">No BOM stored.</p>'
    comps = bom.get("components", [])
    kinds: dict[str, int] = {}
    licenses: dict[str, int] = {}
    for c in comps:
        kinds[str(c.get("type", "?"))] = kinds.get(str(c.get("type", "?")), 0) + 1
        for lic in c.get("licenses", []) or [{}]:
            text = (lic.get("expression") or lic.get("license", {}).get("id")
                    or lic.get("license", {}).get("name") or "unknown")
            licenses[str(text)] = licenses.get(str(text), 0) + 1
    try:
        report = lg.vulnerability_report(v.ref)
        vulns = (f"{len(report.decisions)} finding(s), max severity "
                 f"{esc(report.max_severity or 'none')}, snapshot "
                 f"{esc(report.snapshot.snapshot_date[:10] if report.snapshot else 'none')} "
                 f"{pill('pass' if report.passed else 'fail')}")
    except Error as exc:
        vulns = f"{pill('review')} {esc(exc.message)}"
    top = sorted(licenses.items(), key=lambda kv_: -kv_[1])[:12]
    lic_rows = "".join(f"<tr><td>{esc(k)}</td><td class='num'>{n}</td></tr>" for k, n in top)
    download = _link(version_path(v.name, v.number) + "/files/bom.cdx.json",
                     "Download bom.cdx.json")
    return (kv([("components", esc(", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))),
                ("vulnerabilities", vulns), ("spec", esc(bom.get("specVersion", "?")))])
            + f"<h3>Licenses</h3><table><tr><th scope='col'>license</th>"
              f"<th scope='col'>components</th></tr>{lic_rows}</table><p>{download}</p>")


def _reproduction(lg: Lockgate, v: Version) -> str:
    found = [d for d in lg.decisions(v.ref) if d.kind == "reproduction"]
    if not found:
        return '<p class="muted">Not reproduced yet: <code>lockgate reproduce NAME@V</code>.</p>'
    d = found[-1]
    ok = bool(d.detail.get("match", d.detail.get("passed", False)))
    return (f"<p>{pill('pass' if ok else 'fail')} {esc(d.created_at[:19])} by {esc(d.actor)}: "
            f"{esc(d.comment)}</p>")


def _lineage_data(v: Version) -> str:
    datasets = v.environment.get("datasets", [])
    return kv([("data fingerprint", esc(", ".join(
        f"{d.get('name')}={d.get('fingerprint', '?')}" for d in datasets
        if isinstance(d, dict)) or "-")),
        ("tags", esc(", ".join(f"{k}={x}" for k, x in v.tags.items()) or "-"))])


def _version_actions(lg: Lockgate, viewer: Viewer, v: Version) -> str:
    parts = []
    stages = list(lg.settings.stages)
    later = stages[stages.index(v.stage) + 1:] if v.stage in stages else []
    hidden = {"model": v.name, "version": v.number}
    if viewer.can("approver", v.name):
        parts.append("<h3>Approve or reject</h3>" + _form(
            viewer, "approve",
            _field("ap-stage", "For stage", _stage_select("ap-stage", later or stages))
            + _field("ap-comment", "Comment",
                     '<textarea id="ap-comment" name="comment" rows="2" cols="50">'
                     "</textarea>")
            + '<label for="ap-decision">Decision</label><select id="ap-decision" '
              'name="decision"><option value="approve">approve</option>'
              '<option value="reject">reject</option></select>',
            "Approve or reject…", hidden, label="Approve or reject this version"))
    serving = lg.serving_stage
    allowed = [s for s in later if viewer.can(
        "deployer" if stages.index(s) >= stages.index(serving) else "developer", v.name)]
    if allowed:
        parts.append("<h3>Promote</h3>" + _form(
            viewer, "promote", _field("pr-to", "To stage", _stage_select(
                "pr-to", allowed).replace('name="stage"', 'name="to"')),
            "Promote…", hidden, label="Promote this version"))
    if not parts:
        return '<p class="muted">Your roles allow no action on this version.</p>'
    return "".join(parts)


def version_page(lg: Lockgate, viewer: Viewer, name: str, number: int) -> str:
    v = lg.get(f"{name}@{number}")
    try:
        card = lg.file_bytes(v, CARD_FILE).decode("utf-8")
    except NotFoundError:
        card = "_No model card._"
    nav = (f"<p>{_link('/ui/models/' + quote(name), 'All versions')} · "
           f"{_link(version_path(name, number) + '/drift', 'Drift')} · "
           f"{_link('/ui/deployments/' + quote(name), 'Deployment')}</p>")
    return nav + "".join([
        section("overview", "Overview", overview_section(v, lg.aliases(name))),
        section("signature", "Signature", f"<p>{_signature(lg, v)}</p>"),
        section("actions", "Actions", _version_actions(lg, viewer, v)),
        section("gates", "Gate results", gates_section(lg, v)),
        section("decisions", "Approvals, waivers and reproductions",
                decisions_section(lg, v)),
        section("parity", "Parity", parity_section(v)),
        section("bom", "Bill of materials", _bom(lg, v)),
        section("reproduction", "Reproduction", _reproduction(lg, v)),
        section("lineage", "Lineage and environment",
                _lineage_data(v) + lineage_section(v, lg.versions(name))),
        section("card", "Model card", f'<div class="card-md">{markdown(card)}</div>'),
    ])


# -- deployments -------------------------------------------------------------------------------
def deployments_page(lg: Lockgate, viewer: Viewer) -> str:
    deps = lg.deployments()
    if not deps:
        return section("deployments", "Deployments",
                       '<p class="muted">Nothing deployed: promote a version to production.</p>')
    rows = "".join(
        f"<tr><td>{_link('/ui/deployments/' + quote(n), n)}</td><td>{d.stable}</td>"
        f"<td>{d.candidate or '-'}</td><td>{d.weight}%</td><td>{d.shadow or '-'}</td>"
        f"<td>{pill(d.state)}</td><td>{d.generation}</td></tr>" for n, d in deps.items())
    return section("deployments", "Deployments", (
        "<table><tr><th scope='col'>model</th><th scope='col'>stable</th>"
        "<th scope='col'>candidate</th><th scope='col'>weight</th><th scope='col'>shadow</th>"
        f"<th scope='col'>state</th><th scope='col'>generation</th></tr>{rows}</table>"))


def _live(live: Mapping[str, Mapping[str, float]] | None, version: int | None) -> str:
    if version is None:
        return "-"
    if live is None:
        return '<span class="muted">no serving metrics (start with --serving-url)</span>'
    m = live.get(str(version))
    if m is None:
        return f"{pill('review')} not loaded by the server"
    rate = m.get("rate")
    return (f"{pill('ok')} loaded · {num(m.get('requests', 0), '.0f')} requests"
            + (f" · {rate:.1f} req/s" if rate is not None else "")
            + f" · error rate {m.get('error_rate', 0.0):.2%}"
            + f" · client errors {m.get('client_error_rate', 0.0):.2%}"
            + (f" · p50 {m['p50'] * 1000:.2f} ms · p99 {m['p99'] * 1000:.2f} ms"
               if "p50" in m else "")
            + (f" · shadow divergence {m['divergence']:.3g}" if "divergence" in m else ""))


def deployment_page(lg: Lockgate, viewer: Viewer, name: str,
                    live: Mapping[str, Mapping[str, float]] | None) -> str:
    d = lg.deployments().get(name)
    if d is None:
        raise NotFoundError(f"model {name!r} has no deployment",
                            hint="promote a version to production first")
    slots = [("stable (blue)", d.stable), ("candidate (green)", d.candidate),
             ("shadow", d.shadow), ("previous (kept for rollback)", d.previous)]
    slot_rows = "".join(
        f"<tr><th scope='row'>{esc(label)}</th><td>"
        f"{_link(version_path(name, n), f'{name}@{n}') if n else '-'}</td>"
        f"<td>{_live(live, n) if label != 'previous (kept for rollback)' or n else '-'}</td>"
        "</tr>" for label, n in slots)
    stable_share = 100 - (d.weight if d.candidate else 0)
    bar = (f'<div class="bar" role="img" aria-label="traffic: stable {stable_share}%'
           + (f', candidate {d.weight}%' if d.candidate else "") + '">'
           f'<div style="width:{max(stable_share, 8)}%;background:#4c78a8">stable '
           f"{d.stable}: {stable_share}%</div>"
           + (f'<div style="width:{max(d.weight, 8)}%;background:#f58518">candidate '
              f"{d.candidate}: {d.weight}%</div>" if d.candidate else "") + "</div>"
           + (f"<p class='muted'>Shadow {d.shadow} receives a mirror of every request.</p>"
              if d.shadow else ""))
    rule = d.analysis
    events = [r for r in lg.audit_log(model=name)
              if r.type in ("deploy.rolled_back", "deploy.failed", "deploy.switched")]
    last = events[-1] if events else None
    analysis = (kv([("rule", esc(f"{rule.get('metric')} <= {rule.get('max')}")),
                    ("interval", esc(f"{rule.get('interval_s', 10)} s")),
                    ("minimum requests", esc(rule.get("min_requests", 20))),
                    ("failure limit", esc(rule.get("failure_limit", 0))),
                    ("inconclusive", esc(rule.get("inconclusive", "ignore"))),
                    ("last evaluation", esc(f"{last.ts[:19]} {last.type}: "
                                            f"{json.dumps(dict(last.payload))[:160]}")
                     if last else "no failure recorded")])
                if rule else '<p class="muted">No automatic-rollback rule.</p>')
    state = kv([("state", pill(d.state)), ("generation", str(d.generation)),
                ("updated", esc(d.updated_at[:19] or "-"))])
    body = [section("slots", "Slots", f"{state}<table>{slot_rows}</table>"),
            section("traffic", "Traffic split", bar),
            section("analysis", "Automatic rollback", analysis)]
    if viewer.can("deployer", name):
        versions = [v for v in lg.versions(name) if v.stage not in (
            lg.settings.stages[0], lg.settings.stages[-1]) and v.number != d.stable]
        opts = "".join(f'<option value="{v.number}">{v.number} ({esc(v.stage)})</option>'
                       for v in reversed(versions))
        forms = []
        if opts:
            forms.append("<h3>Start a canary</h3>" + _form(
                viewer, "canary",
                _field("ca-version", "Version", f'<select id="ca-version" name="version">'
                                                f"{opts}</select>")
                + _field("ca-weight", "Weight (%)", '<input id="ca-weight" name="weight" '
                         'type="number" min="0" max="100" value="10" required>'),
                "Start canary…", {"model": name}, label="Start a canary"))
        if d.candidate:
            forms.append("<h3>Move the weight</h3>" + _form(
                viewer, "weight", _field("we-weight", "Weight (%)",
                                         f'<input id="we-weight" name="weight" type="number" '
                                         f'min="0" max="100" value="{d.weight}" required>'),
                "Set weight…", {"model": name}, label="Move the canary weight"))
            forms.append("<h3>Promote the candidate</h3>" + _form(
                viewer, "promote-candidate", "", "Promote candidate…", {"model": name},
                label="Make the candidate stable"))
        if d.candidate or d.previous:
            forms.append("<h3>Roll back</h3>" + _form(
                viewer, "rollback", _field("rb-reason", "Reason", '<input id="rb-reason" '
                                           'name="reason" type="text" size="40">'),
                "Roll back…", {"model": name}, danger=True, label="Roll back"))
        body.append(section("deploy-actions", "Actions", "".join(forms) or
                            '<p class="muted">No version to deploy.</p>'))
    return "".join(body)


# -- drift -------------------------------------------------------------------------------------
def _spark(points: Sequence[float], threshold: float) -> str:
    if not points:
        return "-"
    w, h = 260, 60
    top = max([*points, threshold, 1e-9]) * 1.1
    xs = [4 + i * (w - 8) / max(len(points) - 1, 1) for i in range(len(points))]
    ys = [h - 4 - (h - 8) * p / top for p in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    ty = h - 4 - (h - 8) * threshold / top
    return (f'<svg class="spark" role="img" aria-label="score over {len(points)} windows" '
            f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">'
            f'<line x1="0" x2="{w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#c53030" '
            f'stroke-dasharray="4 3"/><polyline points="{line}" fill="none" '
            f'stroke="#334e68" stroke-width="2"/></svg>')


def drift_page(lg: Lockgate, viewer: Viewer, name: str, number: int) -> str:
    v = lg.get(f"{name}@{number}")
    runs = lg.monitor_runs(v.ref, limit=50)
    latest = runs[0] if runs else None
    history: dict[str, list[tuple[float, float, bool]]] = {}
    for run in reversed(runs):
        for f in run.get("drift", {}).get("features", []):
            history.setdefault(f["feature"], []).append(
                (float(f["score"]), float(f["threshold"]), bool(f["drifted"])))
    rows = "".join(
        f"<tr><td>{esc(feat)}</td><td class='num'>{pts[-1][0]:.4g}</td>"
        f"<td class='num'>{pts[-1][1]:g}</td><td>{pill('drift' if pts[-1][2] else 'ok')}</td>"
        f"<td>{_spark([p[0] for p in pts], pts[-1][1])}</td></tr>"
        for feat, pts in history.items())
    over_time = (("<table><tr><th scope='col'>feature</th><th scope='col'>latest score</th>"
                  "<th scope='col'>threshold</th><th scope='col'>verdict</th>"
                  f"<th scope='col'>score over the last {len(runs)} windows</th></tr>{rows}"
                  "</table>") if rows else '<p class="muted">No monitor run yet.</p>')
    return (f"<p>{_link(version_path(name, number), f'{name}@{number}')}</p>"
            + section("over-time", "Scores over time", over_time)
            + section("histograms", "Reference and current window",
                      drift_section(lg.reference_profile(v.ref), latest)))


# -- audit -------------------------------------------------------------------------------------
def audit_page(lg: Lockgate, viewer: Viewer, filters: Mapping[str, str]) -> str:
    records = lg.audit_log()
    report = verify_chain(records)  # the records just read: one pass over the log
    model, kind, actor = (filters.get("model", ""), filters.get("type", ""),
                          filters.get("actor", ""))
    shown = [r for r in records if (not model or r.model == model)
             and (not kind or r.type == kind) and (not actor or r.actor == actor)]
    limit = 500
    rows = "".join(
        ('<tr class="broken">' if report.first_broken == r.seq else "<tr>")
        + f"<td class='num'>{r.seq}</td><td>{esc(r.ts[:19])}</td><td>{esc(r.type)}</td>"
        f"<td>{esc(r.actor)}</td><td>{esc(r.model or '-')}</td>"
        f"<td>{esc(r.version if r.version is not None else '-')}</td>"
        f"<td><code>{esc(json.dumps(dict(r.payload), default=str)[:200])}</code></td></tr>"
        for r in reversed(shown[-limit:]))
    status = (f"{pill('ok')} intact over {report.count} events" if report.ok else
              f"{pill('fail')} broken at row {report.first_broken}: {esc(report.reason)}")
    types = sorted({r.type for r in records})
    type_opts = '<option value="">any</option>' + "".join(
        f'<option value="{esc(t)}"{" selected" if t == kind else ""}>{esc(t)}</option>'
        for t in types)
    form = ('<form class="action" method="get" action="/ui/audit" aria-label="Filter events">'
            + _field("f-model", "Model", f'<input id="f-model" name="model" '
                     f'value="{esc(model)}">')
            + _field("f-type", "Event", f'<select id="f-type" name="type">{type_opts}</select>')
            + _field("f-actor", "Actor", f'<input id="f-actor" name="actor" '
                     f'value="{esc(actor)}">')
            + '<button type="submit">Filter</button></form>')
    table = ("<table><tr><th scope='col'>#</th><th scope='col'>time</th>"
             "<th scope='col'>event</th><th scope='col'>actor</th><th scope='col'>model</th>"
             "<th scope='col'>version</th><th scope='col'>detail</th></tr>"
             f"{rows}</table>")
    more = (f"<p class='muted'>Showing the newest {limit} of {len(shown)}.</p>"
            if len(shown) > limit else f"<p class='muted'>{len(shown)} event(s).</p>")
    return (section("chain", "Hash chain", f"<p>{status}</p>")
            + section("events", "Events", form + more + table))


# -- login, confirmation, result ---------------------------------------------------------------
def login_page(message: str = "") -> str:
    note = f'<p class="flash error" role="alert">{esc(message)}</p>' if message else ""
    return section("login", "Log in", note + (
        '<form class="action" method="post" action="/ui/login" aria-label="Log in">'
        '<label for="token">API token</label><input id="token" name="token" type="password" '
        'autocomplete="off" size="60" required autofocus>'
        '<button type="submit">Log in</button></form>'
        '<p class="muted">An administrator creates tokens with <code>lockgate user add</code> '
        "or <code>lockgate token create</code>.</p>"))


def confirm_page(viewer: Viewer, action: str, summary: str, fields: Mapping[str, str],
                 back: str) -> str:
    hid = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                  for k, v in {**fields, "csrf": viewer.csrf, "confirm": "yes"}.items())
    return section("confirm", "Confirm", (
        f"<p>{summary}</p><form class='confirm' method='post' "
        f"action='/ui/actions/{esc(action)}' aria-label='Confirm'>{hid}"
        "<button type='submit' autofocus>Confirm</button> "
        f"{_link(back, 'Cancel')}</form>"))


def result_page(summary: str, events: Sequence[AuditRecord], back: str) -> str:
    rows = "".join(
        f"<tr><td class='num'>{r.seq}</td><td>{esc(r.ts[:19])}</td><td>{esc(r.type)}</td>"
        f"<td>{esc(r.actor)}</td><td>{esc(r.model or '-')}</td>"
        f"<td>{esc(r.version if r.version is not None else '-')}</td>"
        f"<td><code>{esc(json.dumps(dict(r.payload), default=str)[:300])}</code></td></tr>"
        for r in events)
    return section("result", "Done", (
        f"<p>{summary}</p><h3>Audit events</h3><table><tr><th scope='col'>#</th>"
        "<th scope='col'>time</th><th scope='col'>event</th><th scope='col'>actor</th>"
        "<th scope='col'>model</th><th scope='col'>version</th><th scope='col'>detail</th>"
        f"</tr>{rows}</table><p>{_link(back, 'Back')}</p>"))
