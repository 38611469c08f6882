"""The metrics gate: thresholds per metric, with MLflow's ``MetricThreshold`` semantics.

    [gate.metrics]
    accuracy = { threshold = 0.8, min_absolute_change = 0.01, greater_is_better = true }
    latency_ms = { threshold = 50, greater_is_better = false }

``threshold`` bounds the candidate's value; ``min_absolute_change`` and ``min_relative_change``
bound its improvement over the champion (the alias the target stage uses). Change thresholds are
skipped, and the result says so, when there is no champion yet.

``against = "parent"`` compares a version made by ``lockgate optimize`` with its parent instead:
the parent's metrics as recorded when it was optimized, plus two figures measured then for both
(``batch1_latency_ms``, ``model_bytes``), so a policy can ask an optimized version for a
speed-up without losing accuracy::

    [gate.metrics]
    against = "parent"
    accuracy = { min_absolute_change = 0, greater_is_better = true }
    batch1_latency_ms = { min_relative_change = 0.2, greater_is_better = false }

A version that was not optimized has no parent: its change thresholds are skipped, as without a
champion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lockgate.errors import ConfigError
from lockgate.gates.base import Configurable, GateContext
from lockgate.gates.params import Param, bind
from lockgate.types import GateResult, GateStatus

__all__ = ["MetricsGate"]

_AGAINST = ("champion", "parent")
_MEASURED = {"batch1_latency_ms": ("parent_latency_ms", "child_latency_ms"),
             "model_bytes": ("parent_bytes", "child_bytes")}
"""Figures of an optimized version's lineage the metrics gate compares, as (parent, child)."""

_THRESHOLD = {
    "threshold": Param(float, None, "bound on the candidate's value"),
    "min_absolute_change": Param(float, None, "least improvement over the champion", 0),
    "min_relative_change": Param(float, None,
                                 "least improvement over the champion, as a fraction", 0),
    "greater_is_better": Param(bool, help="whether higher values are better"),
}


class MetricsGate(Configurable):
    name = "metrics"

    @classmethod
    def configure(cls, params: Mapping[str, Any], where: str) -> Configurable:
        rules: dict[str, Any] = {}
        against = params.get("against", "champion")
        if against not in _AGAINST:
            raise ConfigError(f"{where}.against: must be one of {list(_AGAINST)}, got "
                              f"{against!r}")
        for metric, rule in params.items():
            if metric == "against":
                continue
            if not isinstance(rule, Mapping):
                raise ConfigError(f"{where}.{metric}: expected {{ threshold = ..., "
                                  "greater_is_better = ... }}")
            bound = bind(_THRESHOLD, rule, f"{where}.{metric}")
            if all(bound[k] is None for k in ("threshold", "min_absolute_change",
                                               "min_relative_change")):
                raise ConfigError(f"{where}.{metric}: give threshold, min_absolute_change or "
                                  "min_relative_change")
            rules[str(metric)] = bound
        gate = cls(**rules)
        gate.against = str(against)
        return gate

    against = "champion"

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"against": f"str, default 'champion' (one of {list(_AGAINST)}): what change "
                           "thresholds compare with",
                "<metric>": "table of " + "; ".join(f"{k} ({p.describe()})"
                                                    for k, p in _THRESHOLD.items())}

    def _compared(self, ctx: GateContext
                  ) -> tuple[Mapping[str, float], Mapping[str, float] | None, str, int]:
        """The candidate's values, the values change thresholds compare them with (None:
        nothing to compare with), what those are, in words, and their version number."""
        v = ctx.version
        if self.against == "parent":
            lineage = v.environment.get("lineage")
            if not isinstance(lineage, Mapping):
                return v.metrics, None, "no parent (not an optimized version)", 0
            measured = lineage.get("measured") or {}
            base = {str(k): float(x) for k, x in (lineage.get("parent_metrics") or {}).items()}
            values = dict(v.metrics)
            for name, (was, now) in _MEASURED.items():
                if isinstance(measured.get(was), int | float):
                    base.setdefault(name, float(measured[was]))
                if isinstance(measured.get(now), int | float):
                    values.setdefault(name, float(measured[now]))
            parent = str(lineage.get("parent", "?"))
            number = parent.rpartition("@")[2]
            return values, base, f"the parent {parent}", int(number) if number.isdigit() else 0
        champ = ctx.champion
        if champ is None or (champ.number == v.number and champ.name == v.name):
            return v.metrics, None, "no champion yet", 0
        return (v.metrics, champ.metrics, f"the champion {champ.name}@{champ.number}",
                champ.number)

    def evaluate(self, ctx: GateContext) -> GateResult:
        if not self.params:
            return GateResult(self.name, GateStatus.FAIL,
                              "no metric thresholds configured: add [gate.metrics] to the policy")
        v = ctx.version
        values, base_values, what, number = self._compared(ctx)
        label, _, ref = what.rpartition(" ")
        problems: list[str] = []
        notes: list[str] = []
        measured: dict[str, Any] = {}
        for metric, rule in self.params.items():
            value = values.get(metric)
            gib = bool(rule["greater_is_better"])
            row: dict[str, Any] = {"value": value}
            measured[metric] = row
            if value is None:
                problems.append(f"{metric}: not recorded on {v.name}@{v.number}")
                continue
            if rule["threshold"] is not None:
                ok = value >= rule["threshold"] if gib else value <= rule["threshold"]
                if not ok:
                    problems.append(f"{metric} = {value:g} is {'below' if gib else 'above'} "
                                    f"the threshold {rule['threshold']:g}")
            wants_change = rule["min_absolute_change"] is not None \
                or rule["min_relative_change"] is not None
            if not wants_change:
                continue
            if base_values is None:
                notes.append(f"{metric}: {what}, change thresholds skipped")
                continue
            base = base_values.get(metric)
            row[self.against] = base
            row[f"{self.against}_version"] = number
            if base is None:
                problems.append(f"{metric}: {what} has no value to compare with")
                continue
            gain = value - base if gib else base - value
            row["change"] = gain
            if rule["min_absolute_change"] is not None and gain < rule["min_absolute_change"]:
                problems.append(f"{metric} improves by {gain:g} on {label} "
                                f"({base:g} -> {value:g}); needs {rule['min_absolute_change']:g}")
            if rule["min_relative_change"] is not None:
                if base == 0:
                    problems.append(f"{metric}: relative change undefined, {label}'s "
                                    "value is 0")
                    continue
                rel = gain / abs(base)
                row["relative_change"] = rel
                if not math.isfinite(rel) or rel < rule["min_relative_change"]:
                    problems.append(f"{metric} improves by {rel:.2%} on {label}; needs "
                                    f"{rule['min_relative_change']:.2%}")
        thresholds = {m: {k: x for k, x in r.items() if x is not None}
                      for m, r in self.params.items()}
        if problems:
            return GateResult(self.name, GateStatus.FAIL, "; ".join(problems + notes), measured,
                              thresholds)
        against = f" against {self.against} {ref}" if base_values is not None else ""
        return GateResult(self.name, GateStatus.PASS,
                          f"{len(self.params)} metric(s) within thresholds{against}"
                          + (f" ({'; '.join(notes)})" if notes else ""), measured, thresholds)
