"""The metrics gate: thresholds per metric, with MLflow's ``MetricThreshold`` semantics.

    [gate.metrics]
    accuracy = { threshold = 0.8, min_absolute_change = 0.01, greater_is_better = true }
    latency_ms = { threshold = 50, greater_is_better = false }

``threshold`` bounds the candidate's value; ``min_absolute_change`` and ``min_relative_change``
bound its improvement over the champion (the alias the target stage uses). Change thresholds are
skipped, and the result says so, when there is no champion yet.
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
        rules = {}
        for metric, rule in params.items():
            if not isinstance(rule, Mapping):
                raise ConfigError(f"{where}.{metric}: expected {{ threshold = ..., "
                                  "greater_is_better = ... }}")
            bound = bind(_THRESHOLD, rule, f"{where}.{metric}")
            if all(bound[k] is None for k in ("threshold", "min_absolute_change",
                                               "min_relative_change")):
                raise ConfigError(f"{where}.{metric}: give threshold, min_absolute_change or "
                                  "min_relative_change")
            rules[str(metric)] = bound
        return cls(**rules)

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"<metric>": "table of " + "; ".join(f"{k} ({p.describe()})"
                                                    for k, p in _THRESHOLD.items())}

    def evaluate(self, ctx: GateContext) -> GateResult:
        if not self.params:
            return GateResult(self.name, GateStatus.FAIL,
                              "no metric thresholds configured: add [gate.metrics] to the policy")
        v, champ = ctx.version, ctx.champion
        if champ is not None and champ.number == v.number and champ.name == v.name:
            champ = None
        problems: list[str] = []
        notes: list[str] = []
        measured: dict[str, Any] = {}
        for metric, rule in self.params.items():
            value = v.metrics.get(metric)
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
            if champ is None:
                notes.append(f"{metric}: no champion yet, change thresholds skipped")
                continue
            base = champ.metrics.get(metric)
            row["champion"] = base
            row["champion_version"] = champ.number
            if base is None:
                problems.append(f"{metric}: the champion {champ.name}@{champ.number} has no "
                                "value to compare with")
                continue
            gain = value - base if gib else base - value
            row["change"] = gain
            if rule["min_absolute_change"] is not None and gain < rule["min_absolute_change"]:
                problems.append(f"{metric} improves by {gain:g} on the champion "
                                f"({base:g} -> {value:g}); needs {rule['min_absolute_change']:g}")
            if rule["min_relative_change"] is not None:
                if base == 0:
                    problems.append(f"{metric}: relative change undefined, the champion's "
                                    "value is 0")
                    continue
                rel = gain / abs(base)
                row["relative_change"] = rel
                if not math.isfinite(rel) or rel < rule["min_relative_change"]:
                    problems.append(f"{metric} improves by {rel:.2%} on the champion; needs "
                                    f"{rule['min_relative_change']:.2%}")
        thresholds = {m: {k: x for k, x in r.items() if x is not None}
                      for m, r in self.params.items()}
        if problems:
            return GateResult(self.name, GateStatus.FAIL, "; ".join(problems + notes), measured,
                              thresholds)
        against = f" against champion {champ.name}@{champ.number}" if champ else ""
        return GateResult(self.name, GateStatus.PASS,
                          f"{len(self.params)} metric(s) within thresholds{against}"
                          + (f" ({'; '.join(notes)})" if notes else ""), measured, thresholds)
