"""The geometry of the inline SVG charts: reference-vs-current histograms and score
sparklines. Templates draw them (``templates/charts.html``); this module only computes where
each bar and line goes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CUR_COLOR", "REF_COLOR", "Bar", "Histogram", "Spark", "histogram", "spark"]

REF_COLOR = "#4c78a8"
CUR_COLOR = "#f58518"


@dataclass(frozen=True)
class Bar:
    """One bar: its box, colour, and the tooltip's label and share."""

    x: float
    y: float
    width: float
    height: float
    color: str
    label: str
    share: float


@dataclass(frozen=True)
class Histogram:
    """Bars side by side per bin or category, a base line, and labels under it: the range
    (``lo``, ``hi``) for numbers, or one tick per category when few."""

    width: int
    height: int
    bars: Sequence[Bar]
    ticks: Sequence[tuple[float, str]]
    left: int
    base: int
    lo: str
    hi: str


@dataclass(frozen=True)
class Spark:
    """A score line over windows and its threshold as a dashed line."""

    windows: int
    width: int
    height: int
    points: str
    threshold_y: float


def _shares(ref: Mapping[str, Any], cur: Mapping[str, Any] | None
            ) -> tuple[list[str], list[float], list[float], str, str, bool] | None:
    """(labels, reference shares, current shares, lo, hi, ticks) of a feature summary."""
    if "histogram" in ref:
        edges = ref["histogram"]["edges"]
        counts = ref["histogram"]["counts"]
        total = sum(counts) or 1
        cur_shares: list[float] = []
        if cur and "histogram" in cur and len(cur["histogram"]["counts"]) == len(counts):
            ccounts = cur["histogram"]["counts"]
            ctotal = sum(ccounts) or 1
            cur_shares = [c / ctotal for c in ccounts]
        return ([f"{edges[i]:.3g}" for i in range(len(counts))], [c / total for c in counts],
                cur_shares, f"{edges[0]:.3g}", f"{edges[-1]:.3g}", False)
    if "categories" in ref:
        cats = dict(ref["categories"])
        ccats = dict(cur.get("categories", {})) if cur else {}
        labels = sorted(set(cats) | set(ccats), key=lambda k: -cats.get(k, 0))[:20]
        total = sum(cats.values()) or 1
        ctotal = sum(ccats.values()) or 1
        return (labels, [cats.get(k, 0) / total for k in labels],
                [ccats.get(k, 0) / ctotal for k in labels] if ccats else [], "", "",
                len(labels) <= 12)
    return None


def histogram(ref: Mapping[str, Any] | None, cur: Mapping[str, Any] | None,
              width: int = 320, height: int = 150) -> Histogram | None:
    """Reference and current shares per bin (numerical) or per category; None when the
    reference summary has neither."""
    found = _shares(ref, cur) if ref else None
    if found is None:
        return None
    labels, ref_shares, cur_shares, lo, hi, ticks = found
    n = max(len(ref_shares), 1)
    top = max([*ref_shares, *cur_shares, 1e-9])
    pad_l, pad_b, pad_t = 6, 20, 6
    plot_w, plot_h = width - 2 * pad_l, height - pad_b - pad_t
    slot = plot_w / n
    series = [(ref_shares, REF_COLOR, 0)]
    if cur_shares:
        series.append((cur_shares, CUR_COLOR, 1))
    bar_w = slot / (len(series) + 0.5)
    bars = []
    for shares, color, k in series:
        for i, share in enumerate(shares):
            h = plot_h * share / top
            bars.append(Bar(pad_l + i * slot + k * bar_w + bar_w * 0.25, pad_t + plot_h - h,
                            bar_w, h, color, labels[i] if i < len(labels) else "", share))
    return Histogram(width, height, bars,
                     [(pad_l + (i + 0.5) * slot, label) for i, label in enumerate(labels)]
                     if ticks else [], pad_l, pad_t + plot_h, lo, hi)


def spark(points: Sequence[float], threshold: float, width: int = 260,
          height: int = 60) -> Spark | None:
    """The line of ``points`` scaled to the box with ``threshold``; None without points."""
    if not points:
        return None
    top = max([*points, threshold, 1e-9]) * 1.1
    xs = [4 + i * (width - 8) / max(len(points) - 1, 1) for i in range(len(points))]
    ys = [height - 4 - (height - 8) * p / top for p in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return Spark(len(points), width, height, line, height - 4 - (height - 8) * threshold / top)
