"""Watching versions that serve: reference profiles, monitor runs against a server's capture,
the source framework compared with ONNX Runtime, and retraining triggers still to deliver."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.api.files import VersionFiles
from lockgate.api.home import Home, HomeView
from lockgate.api.lookup import Lookup
from lockgate.api.rollout import Rollout
from lockgate.audit import now
from lockgate.errors import InvalidInputError
from lockgate.gates.probe import sample_feeds
from lockgate.monitor import service
from lockgate.monitor.profile import DEFAULT_SAMPLE, Profile
from lockgate.parity.benchmark import load_factory, runtime_comparison
from lockgate.rollout.state import Deployment
from lockgate.runtime.predictor import Predictor
from lockgate.seal import folder as sealing
from lockgate.store.metadata import Change
from lockgate.types import ModelRef, Observation, Version, validate_name

__all__ = ["Monitoring"]


@dataclass(frozen=True)
class _Watched(HomeView):
    """The part of the home a monitor run uses (:class:`lockgate.monitor.service.MonitoredHome`):
    the stores, version lookup and the deployments it may roll back."""

    lookup: Lookup
    rollout: Rollout

    def get(self, ref: ModelRef, /) -> Version:
        return self.lookup.get(ref)

    def deployments(self) -> Mapping[str, Deployment]:
        return self.rollout.deployments()

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployment:
        return self.rollout.rollback(name, actor=actor, degraded=degraded, reason=reason)

    def notify(self, kind: str, payload: Mapping[str, Any], /) -> None:
        self.rollout.notify(kind, payload)


class Monitoring:
    """Reference profiles, monitor results and runtime comparisons of versions."""

    def __init__(self, home: Home, lookup: Lookup, files: VersionFiles,
                 rollout: Rollout) -> None:
        self._home = home
        self._lookup = lookup
        self._files = files
        self._watched = _Watched(home, lookup, rollout)

    def set_reference(self, ref: str | ModelRef, data: Path | str | Mapping[str, Any], *,
                      sample: int | None = None, actor: str | None = None) -> dict[str, Any]:
        """Profile reference data (``.npy``, ``.npz``, ``.csv``, ``.parquet``, or arrays by
        input name) with the verified model's outputs on it, and make it the version's
        reference for drift monitors. Returns the stored record."""
        v = self._lookup.get(ref)
        predictor = Predictor(self._files.model_bytes(v))
        profile = service.build_reference(
            predictor, Path(data) if isinstance(data, (str, Path)) else data,
            sample=sample or DEFAULT_SAMPLE)
        return service.store_reference(self._home, v, profile, actor=self._home.actor(actor))

    def reference_profile(self, ref: str | ModelRef) -> Profile | None:
        return service.reference_profile(self._home, self._lookup.get(ref))

    def monitor(self, name: str, *, url: str | None = None,
                token: str | None = None) -> dict[str, Any]:
        """One monitor run of the model's production version on the server at ``url``
        (default: the configured serve host and port), reading its capture with ``token`` (a
        user with the monitoring role; needed once the home has users); see
        :mod:`lockgate.monitor.service`."""
        s = self._home.settings
        target = url or f"http://{s.serve_host}:{s.serve_port}"
        return service.monitor_once(self._watched, validate_name(name), url=target,
                                    token=token)

    def monitor_runs(self, ref: str | ModelRef, *, limit: int = 50) -> list[dict[str, Any]]:
        """The version's latest monitor results, newest first."""
        return self._records(ref, "monitor", limit)

    def compare(self, ref: str | ModelRef, model: object | None = None, *, batch: int = 32,
                seconds: float = 1.0, compile_: bool = True, store: bool = True
                ) -> dict[str, Any]:
        """Measure the source framework's inference against ONNX Runtime for the version's
        recorded sample (see :mod:`lockgate.parity.benchmark`). ``model`` is the source model;
        without it, the version's recipe (``--from`` at registration) rebuilds it. The result,
        with the parity figures, is stored with the version unless ``store`` is False."""
        v = self._lookup.get(ref)
        if v.framework == "onnx":
            raise InvalidInputError(f"{v.ref} was registered from an ONNX file: there is no "
                                    "source framework to compare with")
        if model is None:
            model = self._rebuild(v)
        samples = json.loads(self._files.file_bytes(v, sealing.SAMPLES_FILE))
        result = runtime_comparison(model, v.framework, self._files.model_bytes(v),
                                    sample_feeds(samples), batch=batch, seconds=seconds,
                                    compile_=compile_)
        result.update(model=v.name, version=v.number, at=now(),
                      parity={o.name: o.max_abs_error for o in v.parity.outputs}
                      if v.parity else {})
        if store:
            self._home.meta.apply(Change(observations=[
                Observation("comparison", v.name, v.number, result["at"], result)]))
        return result

    def _rebuild(self, v: Version) -> object:
        if sealing.RECIPE_FILE not in v.files:
            raise InvalidInputError(
                f"{v.ref} has no recipe to rebuild its source model from",
                hint="pass the model: lockgate compare NAME@V --from module:function")
        recipe = json.loads(self._files.file_bytes(v, sealing.RECIPE_FILE))
        model, _ = load_factory(str(recipe["entry"]), [str(a) for a in recipe["args"]])
        return model

    def comparisons(self, ref: str | ModelRef, *, limit: int = 1) -> list[dict[str, Any]]:
        return self._records(ref, "comparison", limit)

    def deliver_pending(self) -> list[dict[str, Any]]:
        """Retry every undelivered retraining trigger."""
        return service.deliver_pending(self._home)

    def _records(self, ref: str | ModelRef, kind: str, limit: int) -> list[dict[str, Any]]:
        v = self._lookup.get(ref)
        return [dict(o.record) for o in self._home.meta.observations(
            v.name, kind, number=v.number, limit=limit)]
