"""The model report: one self-contained HTML page per version.

Model card, lineage, parity, gate results, serving latency, drift per feature with reference
and current histograms (inline SVG, drawn here), decisions and the audit trail. No script, no
font, no image is fetched: the page opens the same offline.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockgate.errors import InvalidInputError, NotFoundError
from lockgate.seal.folder import CARD_FILE

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate
    from lockgate.monitor.profile import Profile
    from lockgate.types import Version

__all__ = [
    "CSS",
    "audit_section",
    "decisions_section",
    "drift_section",
    "esc",
    "gates_section",
    "histogram_svg",
    "kv",
    "latency_section",
    "lineage_section",
    "markdown",
    "num",
    "overview_section",
    "parity_section",
    "pill",
    "render_report",
    "write_report",
]

_REF_COLOR = "#4c78a8"
_CUR_COLOR = "#f58518"

CSS = """
:root { --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa; --ok: #2f855a;
        --bad: #c53030; --warn: #b7791f; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #102a43; color: #fff; padding: 24px 40px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header .sub { color: #bcccdc; font-size: 14px; }
nav { background: #243b53; padding: 8px 40px; }
nav a { color: #d9e2ec; margin-right: 18px; text-decoration: none; font-size: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 40px 60px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 20px 24px; margin-bottom: 20px; }
h2 { margin: 0 0 12px; font-size: 19px; }
h3 { font-size: 16px; margin: 16px 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
td.num { font-variant-numeric: tabular-nums; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px;
        font-weight: 600; color: #fff; background: #486581; }
svg.hist { width: 100%; height: auto; display: block; }
.pass, .ok { background: var(--ok); } .fail, .drift, .breached { background: var(--bad); }
.waived, .skipped, .insufficient, .no_reference, .review { background: var(--warn); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card h4 { margin: 0 0 6px; font-size: 14px; }
.muted { color: var(--muted); font-size: 13px; }
.kv { display: grid; grid-template-columns: 220px 1fr; gap: 4px 16px; font-size: 14px; }
.kv div:nth-child(odd) { color: var(--muted); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: 13px; }
pre { background: #f0f4f8; padding: 10px; border-radius: 6px; overflow-x: auto;
      white-space: pre-wrap; }
.card-md h1 { font-size: 20px; } .card-md h2 { font-size: 17px; margin-top: 16px; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px;
               vertical-align: middle; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pill(status: str) -> str:
    css = re.sub(r"[^a-z_]", "", status.lower().split("+")[0]) or "review"
    return f'<span class="pill {css}">{esc(status)}</span>'


def num(value: Any, fmt: str = ".4g") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return esc(value)


def markdown(text: str) -> str:
    """The subset of Markdown the model card uses: headings, lists, tables, paragraphs,
    inline code and bold."""

    def inline(s: str) -> str:
        s = esc(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)

    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        if m := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = min(len(m.group(1)) + 1, 6)
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                               for r in rows[1:])
                out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                items.append(f"<li>{inline(item)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(
                    r"^(#{1,6}\s|\s*[-*]\s|\s*\|)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(out)


def histogram_svg(title: str, ref: Mapping[str, Any] | None, cur: Mapping[str, Any] | None,
                   width: int = 320, height: int = 150) -> str:
    """Reference and current shares per bin (numerical) or per category, side by side."""
    labels: list[str] = []
    ref_shares: list[float] = []
    cur_shares: list[float] = []
    if ref and "histogram" in ref:
        edges = ref["histogram"]["edges"]
        counts = ref["histogram"]["counts"]
        total = sum(counts) or 1
        ref_shares = [c / total for c in counts]
        labels = [f"{edges[i]:.3g}" for i in range(len(counts))]
        if cur and "histogram" in cur and len(cur["histogram"]["counts"]) == len(counts):
            ccounts = cur["histogram"]["counts"]
            ctotal = sum(ccounts) or 1
            cur_shares = [c / ctotal for c in ccounts]
        lo, hi = f"{edges[0]:.3g}", f"{edges[-1]:.3g}"
        ticks = False
    elif ref and "categories" in ref:
        cats = dict(ref["categories"])
        ccats = dict(cur.get("categories", {})) if cur else {}
        labels = sorted(set(cats) | set(ccats), key=lambda k: -cats.get(k, 0))[:20]
        total = sum(cats.values()) or 1
        ctotal = sum(ccats.values()) or 1
        ref_shares = [cats.get(k, 0) / total for k in labels]
        cur_shares = [ccats.get(k, 0) / ctotal for k in labels] if ccats else []
        lo, hi = "", ""
        ticks = len(labels) <= 12
    else:
        return f'<p class="muted">{esc(title)}: no histogram</p>'
    n = max(len(ref_shares), 1)
    top = max([*ref_shares, *cur_shares, 1e-9])
    pad_l, pad_b, pad_t = 6, 20, 6
    plot_w, plot_h = width - 2 * pad_l, height - pad_b - pad_t
    slot = plot_w / n
    bars = []
    series = [(ref_shares, _REF_COLOR, 0)]
    if cur_shares:
        series.append((cur_shares, _CUR_COLOR, 1))
    bar_w = slot / (len(series) + 0.5)
    for shares, color, k in series:
        for i, share in enumerate(shares):
            h = plot_h * share / top
            x = pad_l + i * slot + k * bar_w + bar_w * 0.25
            y = pad_t + plot_h - h
            label = labels[i] if i < len(labels) else ""
            bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                        f'fill="{color}" opacity="0.85"><title>{esc(label)}: '
                        f'{share:.1%}</title></rect>')
    if ticks:
        bars.extend(f'<text x="{pad_l + (i + 0.5) * slot:.1f}" y="{height - 5}" font-size="10" '
                     f'fill="#616e7c" text-anchor="middle">{esc(label)}</text>'
                     for i, label in enumerate(labels))
    axis = (f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - pad_l}" '
            f'y2="{pad_t + plot_h}" stroke="#9aa5b1"/>'
            f'<text x="{pad_l}" y="{height - 5}" font-size="10" fill="#616e7c">{esc(lo)}</text>'
            f'<text x="{width - pad_l}" y="{height - 5}" font-size="10" fill="#616e7c" '
            f'text-anchor="end">{esc(hi)}</text>')
    return (f'<svg class="hist" role="img" aria-label="{esc(title)}" width="{width}" '
            f'height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(bars) + axis + "</svg>")


def kv(pairs: Sequence[tuple[str, Any]]) -> str:
    return '<div class="kv">' + "".join(f"<div>{esc(k)}</div><div>{v}</div>"
                                         for k, v in pairs) + "</div>"


def overview_section(v: Version, aliases: Mapping[str, int]) -> str:
    mine = sorted(a for a, n in aliases.items() if n == v.number)
    return kv([
        ("stage", pill(v.stage)), ("digest", f"<code>{esc(v.digest)}</code>"),
        ("created", f"{esc(v.created_at)} by {esc(v.creator)}"),
        ("signed by key", f"<code>{esc(v.signed_by[:16] or 'unsigned')}</code>"),
        ("aliases", esc(", ".join(mine) or "none")),
        ("description", esc(v.description or "-")),
        ("metrics", esc(", ".join(f"{k} = {x:g}" for k, x in v.metrics.items()) or "-")),
    ])


def lineage_section(v: Version, siblings: Sequence[Version]) -> str:
    env = v.environment
    packages = env.get("packages", {}) if isinstance(env.get("packages"), dict) else {}
    git = env.get("git", {}) if isinstance(env.get("git"), dict) else {}
    rows = [
        ("source framework", esc(f"{v.framework} {v.framework_version}")),
        ("converter", esc(env.get("converter", "-"))),
        ("ONNX opset / IR", esc(f"{v.opset} / {v.ir_version}")),
        ("python", esc(env.get("python", {}).get("version", "-")
                      if isinstance(env.get("python"), dict) else env.get("python", "-"))),
        ("onnxruntime", esc(packages.get("onnxruntime", "-"))),
        ("git commit", f"<code>{esc(git.get('commit', '-'))}</code>"
         + (" (dirty)" if git.get("dirty") else "")),
        ("seeds", esc(", ".join(f"{k}={x}" for k, x in v.seeds.items()) or "-")),
        ("files", esc(", ".join(sorted(v.files)) or "-")),
    ]
    table = ("<h3>Versions of this model</h3><table><tr><th>version</th><th>stage</th>"
             "<th>created</th><th>creator</th><th>digest</th></tr>"
             + "".join(f"<tr><td>{'<strong>' if s.number == v.number else ''}{s.number}"
                       f"{'</strong>' if s.number == v.number else ''}</td>"
                       f"<td>{pill(s.stage)}</td><td>{esc(s.created_at)}</td>"
                       f"<td>{esc(s.creator)}</td><td><code>{esc(str(s.digest)[:23])}</code></td>"
                       "</tr>" for s in siblings)
             + "</table>")
    return kv(rows) + table


def parity_section(v: Version) -> str:
    if v.parity is None:
        return '<p class="muted">Not checked: registered from an ONNX file.</p>'
    p = v.parity
    rows = "".join(
        f"<tr><td>{esc(o.name)}</td><td class='num'>{o.max_abs_error:.3g}</td>"
        f"<td class='num'>{o.max_rel_error:.3g}</td><td class='num'>{o.atol:g}</td>"
        f"<td class='num'>{o.rtol:g}</td><td class='num'>{o.elements}</td>"
        f"<td>{pill('pass' if o.passed else 'fail')}</td></tr>" for o in p.outputs)
    return (f"<p>Batch sizes {esc(list(p.batch_sizes))}, seed {p.seed}.</p><table><tr>"
            "<th>output</th><th>max abs error</th><th>max rel error</th><th>atol</th>"
            f"<th>rtol</th><th>elements</th><th>result</th></tr>{rows}</table>")


def gates_section(lg: Lockgate, v: Version) -> str:
    runs = lg.gate_runs(v.ref)
    if not runs:
        return '<p class="muted">No promotion attempted yet.</p>'
    parts = []
    for run in reversed(runs[-5:]):
        rows = "".join(
            f"<tr><td>{esc(r['gate'])}</td><td>{pill(str(r['status']))}</td>"
            f"<td>{esc(r['message'])}</td></tr>" for r in run.results)
        parts.append(f"<h3>{esc(run.from_stage)} → {esc(run.to_stage)} "
                     f"{pill('pass' if run.passed else 'fail')} "
                     f"<span class='muted'>{esc(run.created_at)} by {esc(run.actor)}</span></h3>"
                     f"<table><tr><th>gate</th><th>status</th><th>message</th></tr>{rows}"
                     "</table>")
    return "".join(parts)


def latency_section(lg: Lockgate, v: Version, monitor: Mapping[str, Any] | None) -> str:
    rows = []
    for run in lg.gate_runs(v.ref):
        for r in run.results:
            m = r.get("measured", {})
            if r["gate"] == "latency_budget" and "p50_ms" in m:
                rows.append((f"latency_budget gate ({run.created_at})", m))
    if monitor and "p50_ms" in monitor.get("slo", {}):
        rows.append((f"live window ({monitor.get('at', '')})", monitor["slo"]))
    if not rows:
        return '<p class="muted">No latency measured yet (latency_budget gate or monitor).</p>'
    body = "".join(
        f"<tr><td>{esc(where)}</td>"
        + "".join(f"<td class='num'>{num(m.get(k), '.2f')}</td>"
                  for k in ("p50_ms", "p95_ms", "p99_ms"))
        + f"<td class='num'>{num(m.get('throughput_rps', m.get('requests', '-')), '.1f')}</td>"
        "</tr>" for where, m in rows)
    return ("<table><tr><th>measured by</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
            f"<th>throughput (req/s) / requests</th></tr>{body}</table>")


def _comparison(found: Sequence[Mapping[str, Any]]) -> str:
    if not found:
        return ('<p class="muted">Not measured: <code>lockgate compare NAME@V</code> measures '
                'the source framework against ONNX Runtime on a machine.</p>')
    c = found[0]
    sizes = c.get("batch_sizes", [])
    cells: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in c.get("results", []):
        cells.setdefault(str(r["runtime"]), {})[int(r["batch"])] = r
    head = "".join(f"<th>batch {n} p50 ms</th><th>batch {n} rows/s</th>" for n in sizes)
    body = ""
    for name, by_batch in cells.items():
        body += f"<tr><td>{esc(name)}</td>"
        for n in sizes:
            r = by_batch.get(n, {})
            body += (f"<td class='num'>{num(r['p50_ms'], '.3f')}</td>"
                     f"<td class='num'>{num(r['rows_per_s'], '.0f')}</td>" if "p50_ms" in r
                     else f"<td colspan='2' class='muted'>{esc(r.get('error', '-'))}</td>")
        body += "</tr>"
    m = c.get("machine", {})
    parity = ", ".join(f"{k}: max |Δ| {x:.2g}" for k, x in c.get("parity", {}).items())
    return (f"<p>Measured {esc(c.get('at', ''))} on {esc(m.get('system'))} "
            f"{esc(m.get('machine'))}, {esc(m.get('cpus'))} CPUs. Parity: {esc(parity or '-')}.</p>"
            f"<table><tr><th>runtime</th>{head}</tr>{body}</table>")


def drift_section(profile: Profile | None, monitor: Mapping[str, Any] | None) -> str:
    if profile is None:
        return ('<p class="muted">No reference profile: <code>lockgate reference set '
                'NAME@V DATA</code>.</p>')
    drift = (monitor or {}).get("drift", {})
    results = {f["feature"]: f for f in drift.get("features", [])}
    current = drift.get("current", {})
    if monitor is None:
        head = (f"<p>Reference: {profile.rows} rows from {esc(profile.source)}. "
                "No monitor run yet.</p>")
    elif "features" in drift:
        head = (f"<p>Latest window ({esc(monitor.get('at', ''))}, {drift.get('rows')} rows): "
                f"{pill(str(drift.get('status')))} — {drift['share']:.0%} of features drifted "
                f"(dataset drift at {drift['drift_share']:.0%}). Reference: {profile.rows} "
                f"rows from {esc(profile.source)}.</p>")
    else:
        head = (f"<p>Latest window: {pill(str(drift.get('status')))} "
                f"{esc(drift.get('reason', ''))}</p>")
    legend = (f'<p class="legend muted"><span style="background:{_REF_COLOR}"></span>reference'
              f'<span style="background:{_CUR_COLOR}"></span>current window</p>')
    cards = []
    for name, summary in profile.features.items():
        r = results.get(name)
        verdict = (f"{pill('drift' if r['drifted'] else 'ok')} {esc(r['method'])} "
                   f"{r['score']:.4g} (threshold {r['threshold']:g})" if r else
                   '<span class="muted">not judged</span>')
        cards.append(f'<div class="card"><h4>{esc(name)}</h4><div class="muted">{verdict}</div>'
                     f"{histogram_svg(name, summary, current.get(name))}</div>")
    return head + legend + '<div class="grid">' + "".join(cards) + "</div>"


def audit_section(lg: Lockgate, v: Version) -> str:
    records = [r for r in lg.audit_log(model=v.name)][-200:]
    rows = "".join(
        f"<tr><td class='num'>{r.seq}</td><td>{esc(r.ts)}</td><td>{esc(r.type)}</td>"
        f"<td>{esc(r.actor)}</td><td>{esc(r.version if r.version is not None else '-')}</td>"
        f"<td><code>{esc(_short(r.payload))}</code></td></tr>" for r in reversed(records))
    report = lg.audit_verify()
    state = pill("ok" if report.ok else "fail")
    return (f"<p>Hash chain {state} over {report.count} records.</p>"
            "<table><tr><th>#</th><th>time</th><th>event</th><th>actor</th><th>version</th>"
            f"<th>detail</th></tr>{rows}</table>")


def _short(payload: Mapping[str, Any], limit: int = 220) -> str:
    keep = {k: x for k, x in payload.items()
            if k not in ("signature_bundle", "files", "before", "after", "rule")}
    text = json.dumps(keep, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decisions_section(lg: Lockgate, v: Version) -> str:
    found = lg.decisions(v.ref)
    if not found:
        return '<p class="muted">None recorded.</p>'
    rows = "".join(
        f"<tr><td>{esc(d.kind)}</td><td>{esc(d.stage)}</td><td>{esc(d.gate or '-')}</td>"
        f"<td>{esc(d.actor)}</td><td>{esc(d.created_at)}</td><td>{esc(d.comment)}</td></tr>"
        for d in found)
    return ("<table><tr><th>kind</th><th>stage</th><th>gate</th><th>by</th><th>at</th>"
            f"<th>comment</th></tr>{rows}</table>")


def render_report(lg: Lockgate, ref: str) -> str:
    """The report of ``ref`` as one HTML document."""
    v = lg.get(ref)
    try:
        card = lg.file_bytes(v, CARD_FILE).decode("utf-8")
    except NotFoundError:
        card = "_No model card._"
    profile = lg.reference_profile(v.ref)
    runs = lg.monitor_runs(v.ref, limit=1)
    monitor = runs[0] if runs else None
    siblings = lg.versions(v.name)
    sections = [
        ("overview", "Overview", overview_section(v, lg.aliases(v.name))),
        ("card", "Model card", f'<div class="card-md">{markdown(card)}</div>'),
        ("lineage", "Lineage and environment", lineage_section(v, siblings)),
        ("parity", "Parity with the source framework", parity_section(v)),
        ("gates", "Gate results", gates_section(lg, v)),
        ("decisions", "Approvals, waivers and other decisions", decisions_section(lg, v)),
        ("latency", "Serving latency", latency_section(lg, v, monitor)),
        ("compare", "Runtime comparison", _comparison(lg.comparisons(v.ref))),
        ("drift", "Drift against the reference", drift_section(profile, monitor)),
        ("audit", "Audit trail", audit_section(lg, v)),
    ]
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{esc(v.ref)} — lockgate report</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(v.ref)}</h1><div class=\"sub\">lockgate model report · stage "
            f"{esc(v.stage)} · {esc(v.framework)} {esc(v.framework_version)}</div></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")


def write_report(lg: Lockgate, ref: str, out: Path) -> Path:
    """Write the report to ``out`` (a file path ending in .html)."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"{out}: the report is an .html file")
    text = render_report(lg, ref)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {out}: {exc.strerror}") from None
    return out
