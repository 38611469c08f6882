"""Converge a server on the deployments in the metadata store.

Every ``poll_s`` the controller asks for the desired state (per model: stable version, optional
candidate with a canary weight, optional shadow) and makes the server match it:

* a version not loaded yet is added to the table and loads (verify, session, warm-up) in the
  background; it receives no traffic until it is ready;
* a version whose deployment now names other execution providers is loaded again on them, in
  a new slot: the version's route keeps the slot loaded on the old set until the new one is
  ready (versioned requests for it answer 503 meanwhile), and stays on it if the new one fails;
* once every version the new state needs is ready, the model's route is replaced in one
  reference swap: requests already running finish on the version they started on;
* a version that fails to load or warm never receives traffic; the previous route stays and the
  failure is reported once (``deploy.failed``);
* versions no route needs stay loaded for ``grace_s`` (an instant rollback target) and are then
  dropped.

Several server processes polling one store converge on the same state within one interval; a
store that announces changes (PostgreSQL LISTEN/NOTIFY) wakes them at once, and polling remains
the fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lockgate.config.providers import ProviderSet
from lockgate.serve.batching import BatchingConfig
from lockgate.serve.slots import EventHook, ModelTable, Route, ServedModel, Slot, SlotState

__all__ = ["Controller", "Desired", "SpecMaker"]

SpecMaker = Callable[[str, int, ProviderSet | None], ServedModel]
"""``make_spec(name, version, providers)``: how to serve a version on a provider set (None: the
server's own setting)."""

log = logging.getLogger("lockgate.serve")


@dataclass(frozen=True)
class Desired:
    stable: int
    candidate: int | None = None
    weight: int = 0
    shadow: int | None = None
    batching: BatchingConfig | None = None
    analysis: Mapping[str, Any] | None = None
    """Automatic rollback rule (Argo Rollouts semantics): ``metric`` (``error_rate``,
    ``p99_latency`` in seconds, ``shadow_divergence``), ``max``, ``interval_s``, ``count``
    (measurements, 0 for no end), ``min_requests``, ``failure_limit``, ``inconclusive``
    (``ignore`` or ``fail``)."""
    providers: ProviderSet | None = None
    """The execution providers every version of the deployment loads on (None: the server's
    setting)."""

    def versions(self) -> list[int]:
        return [v for v in (self.stable, self.candidate, self.shadow) if v is not None]


class Controller:
    def __init__(
        self,
        table: ModelTable,
        desired: Callable[[], Mapping[str, Desired]],
        make_spec: SpecMaker,
        emit: EventHook,
        *,
        poll_s: float = 0.5,
        grace_s: float = 300.0,
        subscribe: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    ) -> None:
        self.table, self.desired, self.make_spec, self.emit = table, desired, make_spec, emit
        self.poll_s, self.grace_s = poll_s, grace_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[tuple[str, int]] = set()
        self._idle_since: dict[tuple[str, int], float] = {}
        self._wake = threading.Event()
        self._subscribe = subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self._analysis: dict[tuple[str, int], _Analysis] = {}
        self._shadow_sent: dict[tuple[str, int], tuple[float, float]] = {}

    def start(self) -> None:
        if self._subscribe is not None:
            # the store says when deployments change (PostgreSQL NOTIFY): look at once
            self._unsubscribe = self._subscribe(self._wake.set)
        self.reconcile()
        self._thread = threading.Thread(target=self._run, name="lockgate-controller",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
            except Exception:  # a bad poll must not stop convergence
                log.exception("deployment reconcile failed")

    def reconcile(self) -> None:
        try:
            wanted = dict(self.desired())
        except Exception as exc:
            log.warning("cannot read deployments: %s", exc)
            return
        loading = False
        for name, d in wanted.items():
            slots = {v: self._slot(name, v, d.providers) for v in d.versions()}
            for v, slot in slots.items():
                if v != d.shadow:
                    slot.set_batching(d.batching)
            loading = loading or any(s.state is SlotState.LOADING for s in slots.values())
            self._apply(name, d, slots)
            route = self.table.route(name)
            if route is not None:
                self._analyse(name, d, route)
                self._report_shadow(name, route)
        self._retire(wanted)
        if loading:
            self._wake.set()  # check again soon, not a whole interval later

    def _slot(self, name: str, version: int, providers: ProviderSet | None) -> Slot:
        """The version's slot on ``providers``: the loaded one, else a new one loading (make_spec
        reads the version from the store: only for versions not loaded on that set yet)."""
        slot = self.table.slot(name, version)
        if slot is not None and slot.spec.providers == providers:
            return slot
        if slot is not None:
            log.info("%s: execution providers changed to %s: loading it again", slot.label,
                     providers or "the server's setting")
            self._reported.discard((name, version))
        return self.table.ensure(self.make_spec(name, version, providers), self._emit_load,
                                 replace=slot is not None)

    def _emit_load(self, name: str, payload: dict[str, object]) -> None:
        self.emit(name, payload)
        self._wake.set()

    def _apply(self, name: str, d: Desired, slots: Mapping[int, Slot]) -> None:
        for v, slot in slots.items():
            if slot.state is SlotState.FAILED and (name, v) not in self._reported:
                self._reported.add((name, v))
                self.emit("deploy.failed", {"model": name, "version": v,
                                            "error": slot.error or "",
                                            "role": _role(d, v)})
        stable = slots[d.stable]
        current = self.table.route(name)
        if stable.state is not SlotState.READY:
            return  # keep whatever serves now (or nothing yet)
        candidate = slots.get(d.candidate) if d.candidate is not None else None
        if (candidate is not None and candidate.state is SlotState.LOADING
                and current is not None and current.stable is stable):
            return  # switch once the candidate is ready
        if candidate is not None and candidate.state is not SlotState.READY:
            candidate = None
        shadow = slots.get(d.shadow) if d.shadow is not None else None
        if shadow is not None and shadow.state is not SlotState.READY:
            shadow = None
        route = Route(stable, candidate, d.weight if candidate is not None else 0, shadow)
        if current is None or current.key() != route.key():
            self.table.set_route(name, route)
            kind = "deploy.switched" if current is not None else "deploy.routed"
            self.emit(kind, {
                "model": name, "stable": d.stable,
                "candidate": route.candidate.spec.version if route.candidate else None,
                "weight": route.weight,
                "shadow": route.shadow.spec.version if route.shadow else None,
            })

    def _analyse(self, name: str, d: Desired, route: Route) -> None:
        a = d.analysis
        if not a:
            return
        metric = str(a.get("metric", "error_rate"))
        target = route.shadow if metric == "shadow_divergence" else route.candidate
        if target is None:
            return
        key = (name, target.spec.version)
        now = time.monotonic()
        interval = float(a.get("interval_s", 10.0))
        st = self._analysis.get(key)
        if st is None:
            target.window.take()  # measure from when the analysis starts
            st = self._analysis[key] = _Analysis(next_at=now + interval)
            return
        if st.done or now < st.next_at:
            return
        st.next_at = now + interval
        stats = target.window.take()
        seen = stats["shadow_compared"] if metric == "shadow_divergence" else stats["requests"]
        value = stats.get(metric, 0.0)
        st.measurements += 1
        if seen < int(a.get("min_requests", 20)):
            st.inconclusive += 1
            if a.get("inconclusive", "ignore") == "fail":
                st.failed += 1
        elif value > float(a.get("max", 0.0)):
            st.failed += 1
        st.last = {"metric": metric, "value": value, "requests": seen,
                   "client_error_rate": stats["client_error_rate"]}
        if st.failed > int(a.get("failure_limit", 0)):
            st.done = True
            self.emit("deploy.analysis_failed", {
                "model": name, "version": target.spec.version,
                "role": "shadow" if target is route.shadow else "candidate",
                "measurements": st.measurements, "failed": st.failed,
                "inconclusive": st.inconclusive, "last": st.last, "rule": dict(a)})
        elif int(a.get("count", 0)) and st.measurements >= int(a["count"]):
            st.done = True
            self.emit("deploy.analysis_passed", {"model": name, "version": target.spec.version,
                                                 "measurements": st.measurements})

    def _report_shadow(self, name: str, route: Route) -> None:
        """Every ~10 s, the shadow's comparison totals, for the shadow_divergence gate."""
        shadow = route.shadow
        if shadow is None:
            return
        totals = shadow.window.shadow_totals()
        key = (name, shadow.spec.version)
        last_at, last_n = self._shadow_sent.get(key, (0.0, 0.0))
        now = time.monotonic()
        if totals["compared"] > last_n and now - last_at >= 10.0:
            self._shadow_sent[key] = (now, totals["compared"])
            self.emit("deploy.shadow_stats", {"model": name, "version": shadow.spec.version,
                                              "stable": route.stable.spec.version, **totals})

    def _retire(self, wanted: Mapping[str, Desired]) -> None:
        now = time.monotonic()
        used = {(n, s.spec.version) for n in wanted for r in [self.table.route(n)] if r
                for s in r.slots()}
        used |= {(n, v) for n, d in wanted.items() for v in d.versions()}
        for slot in self.table.slots:
            key = (slot.spec.name, slot.spec.version)
            if key in used:
                self._idle_since.pop(key, None)
                continue
            since = self._idle_since.setdefault(key, now)
            if now - since >= self.grace_s:
                self.table.drop(*key)
                self._idle_since.pop(key, None)
                self.emit("deploy.unloaded", {"model": key[0], "version": key[1]})


@dataclass
class _Analysis:
    next_at: float
    measurements: int = 0
    failed: int = 0
    inconclusive: int = 0
    done: bool = False
    last: dict[str, Any] = field(default_factory=dict)


def _role(d: Desired, v: int) -> str:
    return "stable" if v == d.stable else "candidate" if v == d.candidate else "shadow"
