"""One monitor window: drift of the captured rows against the reference profile, and the
service-level objectives over the captured requests. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lockgate.errors import InvalidInputError
from lockgate.monitor.policy import MonitorPolicy
from lockgate.monitor.profile import Profile, summarise
from lockgate.monitor.stats import dataset_drift, feature_drift

__all__ = ["drift_streak", "evaluate"]


def _slo(requests: Mapping[str, Any], policy: MonitorPolicy) -> dict[str, Any]:
    count = int(requests.get("count", 0))
    errors = int(requests.get("errors", 0))
    client_errors = int(requests.get("client_errors", 0))
    lat = np.asarray(requests.get("latencies", []), dtype=np.float64)
    out: dict[str, Any] = {"requests": count, "errors": errors,
                           "error_rate": errors / count if count else 0.0,
                           "client_errors": client_errors,
                           "client_error_rate": client_errors / count if count else 0.0}
    if lat.size:
        p50, p95, p99 = np.quantile(lat, [0.5, 0.95, 0.99]) * 1000.0
        out.update(p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99))
    if count < policy.min_requests:
        out.update(status="insufficient", breached=[],
                   reason=f"{count} request(s) in the window, fewer than {policy.min_requests}")
        return out
    breached = []
    if policy.max_error_rate is not None and out["error_rate"] > policy.max_error_rate:
        breached.append(f"error rate {out['error_rate']:.3f} > {policy.max_error_rate}")
    if policy.max_p99_ms is not None and out.get("p99_ms", 0.0) > policy.max_p99_ms:
        breached.append(f"p99 {out['p99_ms']:.1f} ms > {policy.max_p99_ms} ms")
    out.update(status="breached" if breached else "ok", breached=breached)
    return out


def _drift(profile: Profile | None, rows: Mapping[str, Any], policy: MonitorPolicy
           ) -> dict[str, Any]:
    features = rows.get("features", {})
    count = int(rows.get("to", 0)) - int(rows.get("from", 0))
    if profile is None:
        return {"status": "no_reference", "rows": count,
                "reason": "no reference profile: lockgate reference set NAME@V DATA"}
    if count < policy.min_rows:
        return {"status": "insufficient", "rows": count,
                "reason": f"{count} row(s) in the window, fewer than {policy.min_rows}"}
    results = []
    current = {}
    for name, summary in profile.features.items():
        found = features.get(name)
        if found is None:
            continue
        kind = str(summary["kind"])
        values = [v for v in found["values"] if v is not None]
        cur = (np.asarray(values, dtype=np.float64) if all(isinstance(v, (int, float))
               for v in values) else np.asarray(values, dtype=object))
        ref = profile.samples[name]
        if cur.size == 0 or ref.size == 0:
            continue
        method = policy.method
        if method in ("ks", "wasserstein") and kind != "numerical":
            method = None  # numerical-only methods fall back to the default on categories
        try:
            results.append(feature_drift(name, ref, cur, kind=kind,  # type: ignore[arg-type]
                                         method=method, threshold=policy.threshold))
        except InvalidInputError:
            continue
        current[name] = summarise(kind, cur, edges=profile.edges(name))
    if not results:
        return {"status": "insufficient", "rows": count,
                "reason": "no captured feature matches the reference profile"}
    ds = dataset_drift(results, policy.drift_share)
    return {"status": "drift" if ds.drifted else "ok", "rows": count, **ds.to_dict(),
            "current": current}


def evaluate(profile: Profile | None, snapshot: Mapping[str, Any], policy: MonitorPolicy
             ) -> dict[str, Any]:
    """Judge one capture snapshot (as the server's capture endpoint returns it). The result's
    ``state`` is ``ok``, ``drift``, ``slo_breach``, ``drift+slo_breach`` or ``insufficient``
    (neither drift nor SLOs could be judged)."""
    drift = _drift(profile, snapshot.get("rows", {}), policy)
    slo = _slo(snapshot.get("requests", {}), policy)
    flags = [f for f, on in (("drift", drift["status"] == "drift"),
                             ("slo_breach", slo["status"] == "breached")) if on]
    judged = drift["status"] in ("ok", "drift") or slo["status"] in ("ok", "breached")
    state = "+".join(flags) if flags else ("ok" if judged else "insufficient")
    return {"state": state, "drift": drift, "slo": slo,
            "window": {"rows": [snapshot.get("rows", {}).get("from", 0),
                                snapshot.get("rows", {}).get("to", 0)],
                       "requests": [snapshot.get("requests", {}).get("from", 0),
                                    snapshot.get("requests", {}).get("to", 0)]}}


def drift_streak(statuses: Sequence[str]) -> int:
    """How many judged windows in a row, newest first, had dataset drift, from their drift
    statuses (windows whose drift could not be judged are skipped, not counted)."""
    streak = 0
    for status in statuses:
        if status == "drift":
            streak += 1
        elif status == "ok":
            break
    return streak
