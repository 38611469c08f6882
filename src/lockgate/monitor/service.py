"""The observability loop over one lockgate home: reference profiles, monitor runs, retraining
triggers with at-least-once delivery, and rollback on an SLO breach.

Each function takes the home as the narrow part it uses: :class:`MonitorStores` (settings and
stores) or, for a monitor run, :class:`MonitoredHome` (which also resolves versions, reads
deployments, rolls back and notifies). Everything written goes through the metadata store in one
transaction with its audit events.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lockgate.audit import AuditEvent, EventType, now
from lockgate.errors import Error, InvalidInputError, NotFoundError, ServeError
from lockgate.monitor.policy import MonitorPolicy
from lockgate.monitor.profile import (
    DEFAULT_SAMPLE,
    Profile,
    as_inputs,
    profile_for,
    read_reference_data,
)
from lockgate.monitor.webhooks import DRIFT_EVENT, cloud_event, post_webhook, run_command
from lockgate.monitor.window import drift_streak, evaluate
from lockgate.store.metadata import Change
from lockgate.store.metadata.interface import Delivery, Observation
from lockgate.types import Digest, ModelRef, Version

if TYPE_CHECKING:
    from lockgate.runtime.predictor import Predictor
    from lockgate.store.artifacts import ArtifactStore
    from lockgate.store.metadata import MetadataStore

__all__ = ["Deployed", "MonitorSettings", "MonitorStores", "MonitoredHome", "build_reference",
           "deliver_pending", "latest_monitor", "monitor_once", "reference_change",
           "reference_profile", "store_reference"]

log = logging.getLogger("lockgate.monitor")

MONITOR_ACTOR = "lockgate-monitor"


class MonitorSettings(Protocol):
    """The settings a monitor reads: the ``[monitor]`` table (see
    :class:`~lockgate.monitor.policy.MonitorPolicy`)."""

    @property
    def monitor(self) -> Mapping[str, Any]: ...


class MonitorStores(Protocol):
    """The settings and the stores that profiles, results and triggers are kept in."""

    @property
    def settings(self) -> MonitorSettings: ...

    @property
    def meta(self) -> MetadataStore: ...

    @property
    def artifacts(self) -> ArtifactStore: ...


class Deployed(Protocol):
    """A model's deployment, as far as a monitor reads it: the stable version serving."""

    @property
    def stable(self) -> int: ...


class MonitoredHome(MonitorStores, Protocol):
    """What a monitor run needs beyond the stores: resolve the watched version, read the
    deployments, roll one back and notify the operators of it."""

    def get(self, ref: ModelRef, /) -> Version: ...

    def deployments(self) -> Mapping[str, Deployed]: ...

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployed: ...

    def notify(self, kind: str, payload: Mapping[str, Any], /) -> None: ...


def build_reference(predictor: Predictor, data: Path | Mapping[str, Any], *,
                    sample: int = DEFAULT_SAMPLE) -> Profile:
    """Profile the reference data (a file, or arrays by input name) with the model's
    outputs on it."""
    inputs = predictor.signature.inputs
    if isinstance(data, Path):
        arrays = read_reference_data(data, inputs)
        source = data.name
    else:
        arrays = as_inputs({k: np.asarray(v) for k, v in data.items()}, inputs)
        source = "arrays"
    try:
        return profile_for(predictor, arrays, sample=sample, source=source)
    except Error:
        raise
    except Exception as exc:  # ONNX Runtime refusing the data
        raise InvalidInputError(f"the model cannot run on the reference data: {exc}") from None


def store_reference(lg: MonitorStores, v: Version, profile: Profile, *,
                    actor: str) -> dict[str, Any]:
    """Store the profile's blob and record it as the version's reference. The blob is
    written before the commit and again after it: a ``lockgate gc`` that ran in between may
    have removed it, and none after the commit can (see :mod:`lockgate.seal.integrity`)."""
    blob = profile.to_json()
    record, change = reference_change(v, profile, lg.artifacts.put(blob), actor=actor)
    lg.meta.apply(change)
    lg.artifacts.put(blob)
    return record


def reference_change(v: Version, profile: Profile, digest: Digest, *,
                     actor: str) -> tuple[dict[str, Any], Change]:
    """The record, and the writes that make it the version's reference, for ``profile``
    stored as blob ``digest``: one observation and its audit event, for the caller to commit
    (alone, or with the version itself at registration)."""
    record = {"profile": str(digest), "rows": profile.rows, "source": profile.source,
              "features": sorted(profile.features), "actor": actor}
    return record, Change(
        observations=[Observation("reference", v.name, v.number, now(), record)],
        events=[AuditEvent(EventType.REFERENCE_SET, actor, v.name, v.number,
                           {k: record[k] for k in ("profile", "rows", "source")}
                           | {"features": len(profile.features)})])


def reference_profile(lg: MonitorStores, v: Version) -> Profile | None:
    """The version's latest reference profile (digest-checked on read), or None."""
    found = lg.meta.observations(v.name, "reference", number=v.number, limit=1)
    if not found:
        return None
    return Profile.from_json(lg.artifacts.get(Digest.parse(str(found[0].record["profile"]))))


def latest_monitor(lg: MonitorStores, name: str, number: int) -> Mapping[str, Any] | None:
    found = lg.meta.observations(name, "monitor", number=number, limit=1)
    return found[0].record if found else None


def _fetch(url: str, name: str, number: int, rows_since: int, requests_since: int,
           token: str | None) -> dict[str, Any]:
    query = urllib.parse.urlencode({"rows_since": rows_since, "requests_since": requests_since})
    target = (f"{url.rstrip('/')}/v2/models/{urllib.parse.quote(name)}/versions/{number}"
              f"/capture?{query}")
    request = urllib.request.Request(
        target, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise ServeError(f"the server at {url} answered {exc.code} for {name}@{number}: "
                         f"{detail}".rstrip(": ")) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ServeError(f"cannot reach the server at {url}: "
                         f"{getattr(exc, 'reason', exc)}",
                         hint="start it with `lockgate serve`, or pass --url") from None


def _snapshot(url: str, name: str, number: int, last: Mapping[str, Any] | None,
              token: str | None) -> dict[str, Any]:
    """The capture after the previous run's cursors; from the start when the server is a
    different instance (restarted) than the one the previous run read."""
    if last is not None and last.get("server") == url:
        window = last.get("window", {})
        snap = _fetch(url, name, number, int(window.get("rows", [0, 0])[1]),
                      int(window.get("requests", [0, 0])[1]), token)
        if snap.get("instance") == last.get("instance"):
            return snap
    return _fetch(url, name, number, 0, 0, token)


def monitor_once(lg: MonitoredHome, name: str, *, url: str,
                 token: str | None = None) -> dict[str, Any]:
    """Judge the production version's latest window on the server at ``url``: store the
    result, audit a state change, trigger retraining after K windows of drift, roll back on an
    SLO breach when the policy says so, and deliver pending triggers."""
    deployment = lg.deployments().get(name)
    if deployment is None:
        raise NotFoundError(f"{name} is not in production and not deployed",
                            hint="monitors watch the production version")
    v = lg.get(ModelRef(name, deployment.stable))
    policy = MonitorPolicy.for_model(lg.settings.monitor, name)
    history = lg.meta.observations(name, "monitor", number=v.number, limit=50)
    last = history[0].record if history else None
    snap = _snapshot(url, name, v.number, last, token)
    profile = reference_profile(lg, v)
    result = evaluate(profile, snap, policy)
    result.update(model=name, version=v.number, server=url, instance=snap.get("instance"),
                  at=now())
    streak = drift_streak([result["drift"]["status"],
                           *(h.record.get("drift", {}).get("status", "") for h in history)])
    result["drift_streak"] = streak
    events: list[AuditEvent] = []
    deliveries: list[Delivery] = []
    previous_state = last.get("state") if last else None
    if result["state"] != previous_state and result["state"] != "insufficient":
        events.append(AuditEvent(EventType.MONITOR_STATE_CHANGED, MONITOR_ACTOR, name,
                                 v.number, {"from": previous_state, "to": result["state"],
                                            "drift_share": result["drift"].get("share"),
                                            "slo": result["slo"].get("breached", [])}))
    if result["drift"]["status"] == "drift" and streak == policy.consecutive:
        event = _drift_event(v, result, policy)
        result["triggered"] = event["id"]
        if policy.webhook:
            deliveries.append(Delivery(event["id"], name, f"webhook:{policy.webhook}", event,
                                       now()))
        if policy.command:
            deliveries.append(Delivery(f"{event['id']}:command", name,
                                       "command:" + json.dumps(list(policy.command)), event,
                                       now()))
        events.append(AuditEvent(EventType.MONITOR_TRIGGERED, MONITOR_ACTOR, name, v.number,
                                 {"event_id": event["id"], "type": DRIFT_EVENT,
                                  "consecutive": streak,
                                  "drifted": [f["feature"] for f in result["drift"]["features"]
                                              if f["drifted"]],
                                  "targets": [d.target.split(":", 1)[0] for d in deliveries]}))
    lg.meta.apply(Change(observations=[Observation("monitor", name, v.number, result["at"],
                                                   dict(result))],
                         events=events, deliveries=deliveries))
    if result["slo"]["status"] == "breached" and policy.rollback_on_slo_breach:
        result["rollback"] = _rollback(lg, name, v, result)
    result["deliveries"] = deliver_pending(lg)
    return result


def _drift_event(v: Version, result: Mapping[str, Any], policy: MonitorPolicy
                 ) -> dict[str, Any]:
    drift = result["drift"]
    return cloud_event(DRIFT_EVENT, "/lockgate/monitor", str(v.ref), {
        "model": v.name, "version": v.number, "window": result["window"],
        "server": result["server"], "consecutive": result["drift_streak"],
        "drift_share": drift["share"], "drift_share_threshold": drift["drift_share"],
        "features": {f["feature"]: {k: f[k] for k in ("method", "score", "threshold",
                                                     "drifted")}
                     for f in drift["features"]}})


def _rollback(lg: MonitoredHome, name: str, v: Version, result: Mapping[str, Any]
              ) -> dict[str, Any]:
    reason = (f"SLO breach of {v.ref} ({'; '.join(result['slo']['breached'])} over "
              f"{result['slo']['requests']} requests): rollback plan says roll back")
    try:
        d = lg.rollback(name, actor=MONITOR_ACTOR, degraded=True, reason=reason)
    except Error as exc:
        lg.meta.append_event(AuditEvent(EventType.MONITOR_ROLLBACK_FAILED, MONITOR_ACTOR, name,
                                        v.number, {"reason": reason, "error": exc.message}))
        return {"done": False, "error": exc.message}
    lg.meta.append_event(AuditEvent(EventType.DEPLOY_ROLLED_BACK, MONITOR_ACTOR, name, v.number,
                                    {"reason": reason, "to": d.stable,
                                     "slo": result["slo"]}))
    lg.notify("deploy.rolled_back", {"model": name, "version": v.number, "reason": reason,
                                     "to": d.stable})
    return {"done": True, "to": d.stable, "reason": reason}


def deliver_pending(lg: MonitorStores, *, backoff_s: float = 0.5) -> list[dict[str, Any]]:
    """Try every undelivered trigger: up to the model's ``attempts`` times now, with
    exponential backoff; what still fails stays pending for the next run (at least once)."""
    out = []
    for d in lg.meta.pending_deliveries():
        policy = MonitorPolicy.for_model(lg.settings.monitor, d.name)
        kind, _, target = d.target.partition(":")
        attempts, error = d.attempts, "not attempted"
        for i in range(policy.attempts):
            attempts += 1
            error = _deliver_once(kind, target, d, policy) or ""
            if not error:
                break
            if i + 1 < policy.attempts:
                time.sleep(backoff_s * 2**i)
        delivered = now() if not error else None
        lg.meta.mark_delivery(d.id, attempts=attempts, delivered_at=delivered, last_error=error)
        if error:
            log.warning("trigger %s to %s not delivered yet: %s", d.id, kind, error)
        out.append({"id": d.id, "target": kind, "attempts": attempts,
                    "delivered": delivered is not None, "error": error})
    return out


def _deliver_once(kind: str, target: str, d: Delivery, policy: MonitorPolicy) -> str | None:
    if kind == "webhook":
        secret = os.environ.get(policy.secret_env, "")
        if not secret:
            return f"${policy.secret_env} is not set: triggers are never sent unsigned"
        try:
            return post_webhook(target, secret, d.event)
        except Error as exc:
            return exc.message
    if kind == "command":
        return run_command(json.loads(target), d.event)
    return f"unknown target {kind!r}"
