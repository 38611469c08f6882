"""The model report: one self-contained HTML page per version.

Model card, lineage, parity, gate results, serving latency, drift per feature with reference
and current histograms (inline SVG), decisions and the audit trail. No script, no font, no
image is fetched: the page opens the same offline. The page is ``templates/report.html``;
this module reads what it shows. The facts the console's version and drift pages share with
it (:func:`lineage_facts`, :func:`drift_cards`, :func:`aliases_of`) are read here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockgate.errors import InvalidInputError, NotFoundError
from lockgate.seal.folder import CARD_FILE
from lockgate.web.charts import Histogram, histogram
from lockgate.web.templating import render

if TYPE_CHECKING:
    from lockgate.api.facade import Lockgate
    from lockgate.monitor.profile import Profile
    from lockgate.types import GateRun, Version

__all__ = [
    "DriftCard",
    "aliases_of",
    "card_text",
    "comparison",
    "drift_cards",
    "latency_rows",
    "lineage_facts",
    "render_report",
    "write_report",
]

NO_CARD = "_No model card._"


@dataclass(frozen=True)
class DriftCard:
    """One feature's card on a drift view: its verdict (None when not judged) and chart."""

    name: str
    result: Mapping[str, Any] | None
    chart: Histogram | None


def card_text(lg: Lockgate, v: Version) -> str:
    """The version's model card (Markdown), or a line saying it has none."""
    try:
        return lg.file_bytes(v, CARD_FILE).decode("utf-8")
    except NotFoundError:
        return NO_CARD


def aliases_of(v: Version, aliases: Mapping[str, int]) -> list[str]:
    """The aliases pointing at ``v``, sorted."""
    return sorted(a for a, n in aliases.items() if n == v.number)


def lineage_facts(v: Version) -> dict[str, Any]:
    """What the lineage section shows from the version's recorded environment."""
    env = v.environment
    packages = env.get("packages", {}) if isinstance(env.get("packages"), dict) else {}
    git = env.get("git", {}) if isinstance(env.get("git"), dict) else {}
    python = env.get("python")
    return {
        "converter": env.get("converter", "-"),
        "python": (python.get("version", "-") if isinstance(python, dict)
                   else env.get("python", "-")),
        "onnxruntime": packages.get("onnxruntime", "-"),
        "commit": git.get("commit", "-"),
        "dirty": bool(git.get("dirty")),
        "seeds": ", ".join(f"{k}={x}" for k, x in v.seeds.items()) or "-",
        "files": ", ".join(sorted(v.files)) or "-",
    }


def latency_rows(runs: Sequence[GateRun], monitor: Mapping[str, Any] | None
                 ) -> list[tuple[str, Mapping[str, Any]]]:
    """(where measured, figures) from latency_budget gate runs and the latest monitor window."""
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for run in runs:
        for r in run.results:
            m = r.get("measured", {})
            if r["gate"] == "latency_budget" and "p50_ms" in m:
                rows.append((f"latency_budget gate ({run.created_at})", m))
    if monitor and "p50_ms" in monitor.get("slo", {}):
        rows.append((f"live window ({monitor.get('at', '')})", monitor["slo"]))
    return rows


def comparison(found: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The latest runtime comparison arranged by runtime and batch size, or None."""
    if not found:
        return None
    c = found[0]
    cells: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in c.get("results", []):
        cells.setdefault(str(r["runtime"]), {})[int(r["batch"])] = r
    return {"at": c.get("at", ""), "machine": c.get("machine", {}),
            "sizes": c.get("batch_sizes", []), "cells": cells,
            "parity": ", ".join(f"{k}: max |Δ| {x:.2g}" for k, x in c.get("parity", {}).items())}


def drift_cards(profile: Profile | None, monitor: Mapping[str, Any] | None) -> list[DriftCard]:
    """A card per feature of the reference profile, with the latest window's verdict."""
    if profile is None:
        return []
    drift = (monitor or {}).get("drift", {})
    results = {f["feature"]: f for f in drift.get("features", [])}
    current = drift.get("current", {})
    return [DriftCard(name, results.get(name), histogram(summary, current.get(name)))
            for name, summary in profile.features.items()]


def render_report(lg: Lockgate, ref: str) -> str:
    """The report of ``ref`` as one HTML document."""
    v = lg.get(ref)
    profile = lg.reference_profile(v.ref)
    runs = lg.monitor_runs(v.ref, limit=1)
    monitor = runs[0] if runs else None
    gate_runs = lg.gate_runs(v.ref)
    return render(
        "report.html", v=v, card=card_text(lg, v), mine=aliases_of(v, lg.aliases(v.name)),
        facts=lineage_facts(v), siblings=lg.versions(v.name), runs=gate_runs,
        found=lg.decisions(v.ref), latency_rows=latency_rows(gate_runs, monitor),
        compared=comparison(lg.comparisons(v.ref)), profile=profile, monitor=monitor,
        cards=drift_cards(profile, monitor), records=lg.audit_log(model=v.name)[-200:],
        chain=lg.audit_verify())


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
