"""Serving from the registry: the OIP v2 app for named versions or for the deployments in the
store, each version verified, warmed up on its recorded sample and compared with the
environment it was registered in before it takes traffic; the data plane's token checks;
server events turned into audit records, rollbacks and shadow figures."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette

from lockgate.access.identity import authenticate, is_token
from lockgate.api.files import VersionFiles
from lockgate.api.home import Home
from lockgate.api.lookup import Lookup
from lockgate.api.rollout import Rollout
from lockgate.api.validations import Validations
from lockgate.audit import AuditEvent, EventType
from lockgate.config.providers import ProviderSet
from lockgate.environment.drift import (
    Difference,
    compare,
    counted,
    reference_environment,
    serving_environment,
)
from lockgate.errors import (
    ConfigError,
    InvalidInputError,
    ServeError,
    SupplyChainError,
)
from lockgate.gates.probe import compare_recorded, provider_tolerance, sample_feeds
from lockgate.monitor.capture import RequestLog
from lockgate.monitor.service import latest_monitor
from lockgate.runtime.predictor import Predictor
from lockgate.seal import folder as sealing
from lockgate.serve import ServedModel, create_app
from lockgate.serve.auth import TokenCheck
from lockgate.serve.controller import Desired
from lockgate.types import ModelRef, Version

__all__ = ["Serving"]

log = logging.getLogger("lockgate")

_SERVE_EVENTS = {"serve.start": EventType.SERVE_STARTED, "serve.stop": EventType.SERVE_STOPPED,
                 "model.load_failed": EventType.MODEL_LOAD_FAILED,
                 "deploy.failed": EventType.DEPLOY_FAILED,
                 "deploy.switched": EventType.DEPLOY_SWITCHED}
_USERS_RECHECK_S = 5.0


class Serving:
    """Apps and predictors for the home's versions."""

    def __init__(self, home: Home, lookup: Lookup, files: VersionFiles,
                 rollout: Rollout) -> None:
        self._home = home
        self._lookup = lookup
        self._files = files
        self._rollout = rollout
        self._validations = Validations(home)

    def load(self, ref: str | ModelRef) -> Predictor:
        """An ONNX Runtime predictor for the version, after verifying its artifact digest."""
        return Predictor(self._files.model_bytes(self._lookup.get(ref)))

    def create_app(self, refs: Sequence[str] = (), *, poll_s: float = 0.5,
                   grace_s: float = 300.0, models: Sequence[str] = (),
                   inline_below_s: float | None = None) -> Starlette:
        """The OIP v2 ASGI app. With ``refs``, exactly those versions. Without, the app follows
        the deployments in the store (a model without one serves its production version),
        polling every ``poll_s``: switches, canaries and rollbacks need no restart; ``models``
        limits it to those model names. ``inline_below_s`` overrides the default threshold
        under which a version's requests run on the event loop (see
        :mod:`lockgate.serve.inference`)."""
        if refs:
            served = [self.served(v) for v in self._lookup.serve_refs(refs)]
            return create_app(served, on_event=self.on_event,
                              **self._observing(inline_below_s))
        wanted = frozenset(models)

        def desired() -> dict[str, Desired]:
            found = self._rollout.desired_state()
            return {n: d for n, d in found.items() if n in wanted} if wanted else found

        # nothing deployed yet is a start, not an error: the server answers live, not ready,
        # and picks models up as they are deployed

        def make_spec(name: str, number: int, providers: ProviderSet | None) -> ServedModel:
            return self.served(self._lookup.get(ModelRef(name, number)), providers,
                               governed=True)

        return create_app([], on_event=self.on_event, desired=desired,
                          make_spec=make_spec, poll_s=poll_s, grace_s=grace_s,
                          subscribe=self._subscriber(), **self._observing(inline_below_s))

    def served(self, v: Version, providers: ProviderSet | None = None, *,
               governed: bool = False) -> ServedModel:
        """The version as a server slot loads it: verified, on ``providers`` (None: the
        ``[serve] providers`` setting), warmed up, drift-checked. ``governed`` (what a server
        serves from the deployments, not a version it was named): a set other than the CPU
        alone that the version never passed infra_validation on is refused unless
        ``[serve] unvalidated_providers = "allow"``."""
        on = providers or self._home.settings.serve_provider_set
        return ServedModel(v.name, v.number, lambda: self._load_checked(v, on, governed),
                           _describe(v, self._differences), providers=providers)

    def _load_checked(self, v: Version, providers: ProviderSet | None = None,
                      governed: bool = False) -> Predictor:
        """Verify, load on ``providers`` (a provider that is missing refuses the load unless
        the set allows the CPU fallback, which is logged), then compare environments: drift is
        audited, and refused when policy says ``environment_drift = "refuse"``."""
        on = providers or self._home.settings.serve_provider_set
        if governed:
            self._validations.check_serving(v, on)
        predictor = Predictor(self._files.model_bytes(v), providers=on)
        if predictor.placement.fell_back:
            log.warning("%s: serving on the CPU, not on %s (provider_fallback = \"cpu\"): %s",
                        v.ref, ", ".join(predictor.placement.missing),
                        "; ".join(predictor.placement.reasons))
        self._warm(v, predictor, on)
        diffs = counted(self._differences(v, predictor),
                        self._home.settings.environment_drift_ignore)
        if not diffs:
            return predictor
        settings = self._home.settings
        refuse = settings.environment_drift == "refuse"
        self._home.meta.append_event(AuditEvent(
            EventType.ENVIRONMENT_DRIFT, settings.user, v.name, v.number,
            {"differences": [d.to_dict() for d in diffs],
             "action": "refused" if refuse else "warned"},
        ))
        text = "; ".join(str(d) for d in diffs)
        if refuse:
            raise SupplyChainError(
                f"{v.ref}: serving environment differs from the registered one: {text}",
                hint="serve it where it was registered, register it again here, or set "
                     "serve.environment_drift = \"warn\"",
            )
        log.warning("%s: serving environment differs from the registered one: %s",
                    v.ref, text)
        return predictor

    def _differences(self, v: Version, predictor: Predictor) -> list[Difference]:
        """How this environment differs from the one ``v`` is proven in: the registered one,
        on the providers of a set it passed infra_validation on when it is served there."""
        proven = self._validations.validated_sets(v)
        return compare(reference_environment(v.environment, proven, predictor.providers),
                       serving_environment(predictor.providers))

    def _warm(self, v: Version, predictor: Predictor, providers: ProviderSet) -> None:
        """Run the sample recorded at registration and compare with its recorded outputs,
        within the tolerances of ``providers``; a version that answers differently here never
        receives traffic."""
        if sealing.SAMPLES_FILE not in v.files:
            return
        samples = json.loads(self._files.file_bytes(v, sealing.SAMPLES_FILE))
        settings = self._home.settings
        tol = provider_tolerance(settings, providers)
        problems = compare_recorded(predictor(sample_feeds(samples)), samples,
                                    atol=tol.atol, rtol=tol.rtol)
        if problems:
            raise ServeError(f"{v.ref}: warm-up answers differ from the ones recorded at "
                             f"registration: {'; '.join(problems)}")

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """A server's event: audited, and for a failed analysis or shadow figures acted on."""
        if kind == "deploy.analysis_failed":
            self._rollout.auto_rollback(payload)
            return
        if kind == "deploy.shadow_stats":
            self._rollout.record_shadow(payload)
            return
        if kind == "deploy.failed":
            self._rollout.notify(kind, payload)
        et = _SERVE_EVENTS.get(kind)
        if et is None:
            return
        self._home.meta.append_event(AuditEvent(
            et, self._home.settings.user, payload.get("model"), payload.get("version"),
            payload))

    def _subscriber(self) -> Callable[[Callable[[], None]], Callable[[], None]] | None:
        subscribe = getattr(self._home.meta, "subscribe", None)
        if subscribe is None:
            return None

        def sub(callback: Callable[[], None]) -> Callable[[], None]:
            stop: Callable[[], None] | None = subscribe(callback)
            return stop if stop is not None else (lambda: None)

        return sub

    def _observing(self, inline_below_s: float | None = None) -> dict[str, Any]:
        s = self._home.settings
        request_log = None
        if s.request_log is not None:
            try:
                request_log = RequestLog(s.request_log, s.request_log_rate,
                                         s.request_log_format)
            except (ValueError, ImportError, OSError) as exc:
                raise InvalidInputError(f"request log: {exc}") from None
        options: dict[str, Any] = {
            "capture_window": s.capture_window, "request_log": request_log,
            "drift": lambda name, number: latest_monitor(self._home, name, number),
            "decode_budget": s.serve_decode_budget, "max_elements": s.serve_max_elements,
            **self._data_plane_auth()}
        if inline_below_s is not None:
            options["inline_below_s"] = inline_below_s
        return options

    def _data_plane_auth(self) -> dict[str, Any]:
        """The token checks of a server: on infer with ``serve.auth = "token"``, on capture
        whenever the home has users (its rows are production inputs and outputs)."""
        meta = self._home.meta
        has_users = bool(meta.list_users())
        token_auth = self._home.settings.serve_auth == "token"
        if token_auth and not has_users:
            raise ConfigError("serve.auth = \"token\" needs users with the inference role",
                              hint="lockgate user add NAME --role inference, then "
                                   "lockgate token create NAME")

        def check(token: str) -> Any:
            return authenticate(meta, token)

        monitoring = TokenCheck(check, "monitoring", well_formed=is_token)
        users_seen = {"at": time.monotonic(), "any": has_users}

        def capture_check(authorization: str | None, model: str) -> object:
            """Open while the home has no users (looked at every 5 s: users added while
            serving close it), else the monitoring role."""
            if not users_seen["any"] and time.monotonic() - users_seen["at"] > _USERS_RECHECK_S:
                users_seen.update(at=time.monotonic(), any=bool(meta.list_users()))
            return monitoring(authorization, model) if users_seen["any"] else None

        deployer = TokenCheck(check, "deployer", well_formed=is_token)

        def repository_check(authorization: str | None, model: str) -> object:
            """The repository extension's load and unload: the deployer role where the home
            has users, else None (the server then lets loopback clients only)."""
            if not users_seen["any"] and time.monotonic() - users_seen["at"] > _USERS_RECHECK_S:
                users_seen.update(at=time.monotonic(), any=bool(meta.list_users()))
            return deployer(authorization, model) if users_seen["any"] else None

        return {
            "repository_authorize": repository_check,
            "authorize": TokenCheck(check, "inference", well_formed=is_token)
            if token_auth else None,
            "capture_authorize": capture_check}


def _describe(v: Version, differences: Callable[[Version, Predictor], list[Difference]]
              ) -> Callable[[Predictor], Mapping[str, Any]]:
    """What a server reports of the version it loaded (metadata ``parameters``)."""
    def describe(predictor: Predictor) -> Mapping[str, Any]:
        diffs = differences(v, predictor)
        return {"lockgate_version_digest": str(v.digest),
                "lockgate_signed_by": v.signed_by or None,
                "lockgate_environment_drift": [d.to_dict() for d in diffs]}

    return describe
