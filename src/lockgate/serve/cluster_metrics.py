"""Merging the Prometheus text of several worker processes into one exposition.

Rules, as prometheus-client's multiprocess mode applies them:

- counters and histograms (and any untyped series): summed over every worker that ever
  reported, a worker that died included (its last known figures), so a total never goes
  backwards when a worker is replaced; a ``_created`` sample takes the earliest;
- ``lockgate_pending_requests``: summed over the live workers;
- every other gauge (``lockgate_model_info``, ``lockgate_model_providers``, the drift and
  shadow divergence gauges): the largest value among the live workers. These say what is
  loaded or measured, the same on every worker that follows the same store; a version loaded
  on one worker only still shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

__all__ = ["SUMMED_GAUGES", "Exposition", "merge", "merge_statistics"]

SUMMED_GAUGES = frozenset({"lockgate_pending_requests"})


@dataclass(frozen=True, slots=True)
class Exposition:
    """One worker's ``/metrics`` text and whether that worker still runs."""

    text: str
    live: bool = True


def merge(parts: Iterable[Exposition]) -> bytes:
    """One exposition (text format 0.0.4) of the workers' ``parts``."""
    families: dict[str, tuple[str, str]] = {}  # name -> (type, help)
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for part in parts:
        for family in text_string_to_metric_families(part.text):
            kind = family.type
            families.setdefault(family.name, (kind, family.documentation))
            into = samples.setdefault(family.name, {})
            gauge = kind == "gauge"
            if gauge and not part.live:
                continue
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                value = float(sample.value)
                old = into.get(key)
                if old is None:
                    into[key] = value
                elif sample.name.endswith("_created"):
                    into[key] = min(old, value)
                elif gauge and family.name not in SUMMED_GAUGES:
                    into[key] = max(old, value)
                else:
                    into[key] = old + value
    return "".join(_render(name, kind, doc, samples[name])
                   for name, (kind, doc) in families.items()).encode("utf-8")


def _render(name: str, kind: str, doc: str,
            samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    shown = f"{name}_total" if kind == "counter" else name
    lines = [f"# HELP {shown} {_escape_help(doc)}\n", f"# TYPE {shown} {kind}\n"]
    for (sample, labels), value in samples.items():
        text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
        lines.append(f"{sample}{{{text}}} {_number(value)}\n" if text
                     else f"{sample} {_number(value)}\n")
    return "".join(lines)


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def merge_statistics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Triton statistics answers (``{"model_stats": [...]}``, the same versions in the same
    order) of several workers as one: counts and durations summed, ``last_inference`` the
    latest, batch statistics summed per batch size."""
    merged: list[dict[str, Any]] = []
    for entries in zip(*(p["model_stats"] for p in parts), strict=True):
        first = entries[0]
        batches: dict[int, dict[str, Any]] = {}
        for entry in entries:
            for b in entry["batch_stats"]:
                into = batches.setdefault(int(b["batch_size"]), {"batch_size": b["batch_size"]})
                for phase in ("compute_input", "compute_infer", "compute_output"):
                    into[phase] = _add(into.get(phase), b[phase])
        phases = first["inference_stats"].keys()
        merged.append({
            "name": first["name"], "version": first["version"],
            "last_inference": max(int(e["last_inference"]) for e in entries),
            "inference_count": sum(int(e["inference_count"]) for e in entries),
            "execution_count": sum(int(e["execution_count"]) for e in entries),
            "inference_stats": {k: _sum(e["inference_stats"][k] for e in entries)
                                for k in phases},
            "batch_stats": [batches[size] for size in sorted(batches)]})
    return {"model_stats": merged}


def _add(a: dict[str, int] | None, b: dict[str, int]) -> dict[str, int]:
    if a is None:
        return {"count": int(b["count"]), "ns": int(b["ns"])}
    return {"count": a["count"] + int(b["count"]), "ns": a["ns"] + int(b["ns"])}


def _sum(pairs: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] | None = None
    for pair in pairs:
        total = _add(total, pair)
    return total or {"count": 0, "ns": 0}
