"""Which versions serve: each model's deployment (stable, canary candidate and weight,
shadow, batching, analysis, execution providers), changed only through generation-checked,
audited writes that servers follow; automatic rollbacks and the operators' notify command."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lockgate.api.files import VersionFiles
from lockgate.api.home import Home
from lockgate.api.lookup import Lookup
from lockgate.audit import AuditEvent, EventType, now
from lockgate.config.providers import ProviderSet
from lockgate.errors import InvalidInputError, NotFoundError, PromotionError
from lockgate.rollout.state import Deployment
from lockgate.serve.batching import BatchingConfig
from lockgate.serve.controller import Desired
from lockgate.store.metadata import Change
from lockgate.types import Decision, ModelRef, Version, validate_name

__all__ = ["Rollout"]

log = logging.getLogger("lockgate")

ANALYSIS_ACTOR = "lockgate-analysis"


class Rollout:
    """Every model's deployment and the changes servers follow."""

    def __init__(self, home: Home, lookup: Lookup, files: VersionFiles) -> None:
        self._home = home
        self._lookup = lookup
        self._files = files

    def deployments(self) -> dict[str, Deployment]:
        """Every model's deployment: stored ones, and for models without one the implicit
        deployment of their serving-stage version."""
        meta = self._home.meta
        out = {r.name: Deployment.from_record(r.name, r.generation, r.record, r.updated_at)
               for r in meta.deployments()}
        for name, number in meta.stage_holders(self._home.serving_stage).items():
            out.setdefault(name, Deployment(name, number))
        return dict(sorted(out.items()))

    def desired_state(self) -> dict[str, Desired]:
        """What servers should load per model (see :mod:`lockgate.serve.controller`)."""
        return {n: Desired(d.stable, d.candidate, d.weight, d.shadow,
                           batching=BatchingConfig.from_dict(d.batching) if d.batching else None,
                           analysis=d.analysis,
                           providers=ProviderSet.from_dict(d.providers) if d.providers else None)
                for n, d in self.deployments().items()}

    def set_providers(self, name: str, providers: ProviderSet | None, *,
                      actor: str | None = None) -> Deployment:
        """The execution providers the model's versions load on (None: the servers' own
        ``[serve] providers``); servers reload its versions on the new set."""
        current = self.current(name)
        record = providers.to_dict() if providers is not None else None
        return self._write(current, replace(current, providers=record), "providers", actor)

    def set_batching(self, name: str, batching: Mapping[str, Any] | None, *,
                     actor: str | None = None) -> Deployment:
        """Dynamic batching for the model's servers (None turns it off)."""
        current = self.current(name)
        cfg = BatchingConfig.from_dict(batching).to_dict() if batching else None
        return self._write(current, replace(current, batching=cfg), "batching", actor)

    def deploy(self, ref: str | ModelRef, *, canary: int | None = None,
               shadow: bool = False, analysis: Mapping[str, Any] | None = None,
               actor: str | None = None, providers: ProviderSet | None = None) -> Deployment:
        """Make the version the stable one (blue/green), or the canary candidate taking
        ``canary`` percent of traffic, or the shadow. It must verify first; a stable version
        must be in the serving stage, a candidate or shadow past the first stage.
        ``providers`` (None: unchanged) become the deployment's execution providers, for all
        its versions."""
        v = self._lookup.get(ref)
        self._check_deployable(v, stable=canary is None and not shadow)
        self._files.verify(v)
        current = self.deployments().get(v.name)
        if canary is not None or shadow:
            if current is None:
                raise InvalidInputError(f"{v.name} has no stable version to canary against",
                                        hint="deploy a stable version first")
            new = (current.with_shadow(v.number, analysis) if shadow
                   else current.canary(v.number, canary or 0, analysis))
        elif current is None or (current.generation == 0 and current.stable == v.number):
            new = Deployment(v.name, v.number)  # store the implicit deployment: pin it
        elif providers is not None and current.stable == v.number:
            new = current  # the stable version stays: only its providers change
        else:
            new = current.switch(v.number)
        what = "shadow" if shadow else "canary" if canary is not None else "switch"
        if providers is not None:
            what = "providers" if new is current else what
            new = replace(new, providers=providers.to_dict())
        return self._write(current, new, what, actor)

    def _check_deployable(self, v: Version, *, stable: bool) -> None:
        stages = self._home.settings.stages
        serving = self._home.serving_stage
        if v.stage == stages[-1] or (v.stage == stages[0] and stable):
            raise InvalidInputError(f"{v.ref} is in stage {v.stage!r} and cannot be deployed")
        if stable and v.stage != serving:
            raise InvalidInputError(
                f"{v.ref} is in {v.stage!r}; only {serving!r} versions become "
                "stable", hint="promote it first, or deploy it as a canary (--canary W)")
        if v.stage == stages[0]:
            raise InvalidInputError(f"{v.ref} is still in {v.stage!r}",
                                    hint="promote it past the first stage first")

    def set_canary_weight(self, name: str, weight: int, *, actor: str | None = None
                          ) -> Deployment:
        current = self.current(name)
        return self._write(current, current.set_weight(weight), "weight", actor)

    def promote_candidate(self, name: str, *, actor: str | None = None) -> Deployment:
        current = self.current(name)
        return self._write(current, current.promote_candidate(), "promote", actor)

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployment:
        """Drop the canary, or go back to the previous stable version; servers switch within
        one poll interval (the previous version is still loaded during the grace period)."""
        current = self.current(name)
        return self._write(current, current.rollback(degraded=degraded), "rollback", actor,
                           reason)

    def follow_promotion(self, v: Version, to: str, actor: str | None) -> None:
        """A version promoted to the serving stage becomes the stable one of a stored
        deployment (blue/green): servers follow the promotion."""
        stored = {r.name for r in self._home.meta.deployments()}
        if to != self._home.serving_stage or v.name not in stored:
            return
        current = self.current(v.name)
        if current.stable != v.number:
            self._write(current, current.switch(v.number), "switch", actor,
                        reason=f"promoted to {to}")

    def auto_rollback(self, payload: Mapping[str, Any]) -> None:
        """An analysis failed on a server: drop that candidate (or shadow) if the deployment
        still has it — another server may have rolled back first — audit and notify."""
        name, version = str(payload["model"]), int(payload["version"])
        current = self.current(name)
        last, rule = payload.get("last", {}), payload.get("rule", {})
        reason = (f"automatic rollback: {last.get('metric')} = {last.get('value')} over "
                  f"{rule.get('max')} in {payload.get('failed')} of "
                  f"{payload.get('measurements')} measurement(s)")
        if payload.get("role") == "shadow" and current.shadow == version:
            new = current.drop_shadow()
        elif current.candidate == version:
            new = current.rollback(degraded=True)
        else:
            return
        try:
            self._write(current, new, "auto-rollback", ANALYSIS_ACTOR, reason)
        except PromotionError:
            return  # another server changed it first
        log.warning("lockgate: %s %s@%s: %s", "shadow dropped" if new.shadow is None and
                    payload.get("role") == "shadow" else "rolled back", name, version, reason)
        self._home.meta.append_event(AuditEvent(EventType.DEPLOY_ROLLED_BACK, ANALYSIS_ACTOR,
                                                name, version, dict(payload)))
        self.notify("deploy.rolled_back", {**payload, "reason": reason})

    def record_shadow(self, payload: Mapping[str, Any]) -> None:
        """Store a server's shadow comparison figures as a decision of the shadow version."""
        v = self._lookup.get(ModelRef(str(payload["model"]), int(payload["version"])))
        detail = {k: payload[k] for k in ("compared", "agreement", "max_divergence", "stable")
                  if k in payload}
        self._home.meta.apply(Change(decisions=[Decision(
            kind="shadow", name=v.name, number=v.number, stage=self._home.serving_stage,
            actor="lockgate-serve", created_at=now(), detail=detail)]))

    def notify(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Run the configured notify command with the incident as JSON on stdin; a failing
        command is logged, never raised (the rollback already happened)."""
        cmd = self._home.settings.notify_command
        if not cmd:
            return
        doc = json.dumps({"event": kind, **payload}, default=str)
        try:
            done = subprocess.run(list(cmd), input=doc, text=True, capture_output=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("notify command %s failed: %s", cmd[0], exc)
            return
        if done.returncode != 0:
            log.warning("notify command %s exited %s", cmd[0], done.returncode)

    def current(self, name: str) -> Deployment:
        """The model's deployment; NotFoundError when it has none."""
        found = self.deployments().get(validate_name(name))
        if found is None:
            raise NotFoundError(f"{name} is not deployed",
                                hint="lockgate deploy NAME@V, or promote to production")
        return found

    def _write(self, current: Deployment | None, new: Deployment, what: str,
               actor: str | None, reason: str = "") -> Deployment:
        stored = {r.name: r.generation for r in self._home.meta.deployments()}
        self._home.meta.apply(Change(
            deployments={new.name: (stored.get(new.name, 0), new.record())},
            events=[AuditEvent(EventType.DEPLOYMENT_CHANGED, self._home.actor(actor),
                               new.name, new.stable,
                               {"action": what, "before": current.record() if current else None,
                                "after": new.record(), "reason": reason})],
        ))
        return self.current(new.name)
