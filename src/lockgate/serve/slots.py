"""Runtime slots: one per served model version, loaded in the background.

A :class:`ServedModel` says what to serve; the :class:`ModelTable` owns one :class:`Slot` per
``(name, version)`` and moves it ``loading → ready`` or ``loading → failed``. Only a ready slot
hands out its :class:`~lockgate.runtime.predictor.Predictor`; asking any other slot raises
:class:`~lockgate.errors.ServeError` (HTTP 503). Unversioned lookups resolve to the highest served
version of the model, whatever its state — traffic never falls back to an older version silently.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockgate.config.providers import ProviderSet
from lockgate.errors import Error, InvalidInputError, NotFoundError, ServeError
from lockgate.monitor.capture import Capture
from lockgate.runtime.predictor import Predictor
from lockgate.serve.batching import Batcher, BatchingConfig
from lockgate.serve.oip import oip_datatype, oip_shape
from lockgate.types import TensorSpec, validate_name

__all__ = ["EventHook", "ModelTable", "Placed", "RunCost", "ServedModel", "Slot", "SlotState"]

log = logging.getLogger("lockgate.serve")

EventHook = Callable[[str, dict[str, Any]], None]
"""``on_event(name, payload)``: receives ``serve.start``, ``serve.stop``, ``model.ready`` and
``model.load_failed``. Model events arrive on the loader thread."""

Placed = Callable[[str, str, Mapping[str, Any] | None], None]
"""``placed(name, version, placement)``: a version loaded with that placement (which execution
providers it asked for and uses, :meth:`~lockgate.runtime.providers.Placement.to_dict`), or
was dropped (None)."""

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class ServedModel:
    """What to serve: a model name, its version number, and how to build its Predictor.

    ``load`` runs once, on a background thread, when the server starts.
    """

    name: str
    version: int
    load: Callable[[], Predictor]
    describe: Callable[[Predictor], Mapping[str, Any]] | None = None
    """Extra ``parameters`` for the model's metadata, computed once after loading."""
    batching: BatchingConfig | None = None
    """Dynamic batching for this version (None: every request runs alone)."""
    providers: ProviderSet | None = None
    """The execution provider set ``load`` was made for (None: the server's setting); a
    deployment naming another set loads the version again."""

    def __post_init__(self) -> None:
        validate_name(self.name)
        if type(self.version) is not int or self.version < 1:
            raise InvalidInputError(
                f"model {self.name!r}: version must be a positive integer, got {self.version!r}"
            )


class SlotState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


def _tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    try:
        datatype = oip_datatype(spec.dtype)
    except ServeError:
        datatype = spec.dtype  # e.g. "onnx:23": shown as is, cannot be sent over JSON
    return {"name": spec.name, "datatype": datatype, "shape": oip_shape(spec.shape)}


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, Error):
        return exc.diagnostics()
    return f"{type(exc).__name__}: {exc}"


class RunCost:
    """Exponentially weighted means of what one request's decode, run and encode costs: wall
    seconds when it ran on the event loop, thread CPU seconds when it ran on a worker (a
    worker's wall time counts its waits for the interpreter lock, which the loop would not
    pay). Which request runs where is decided from them by :meth:`inline`."""

    __slots__ = ("_worker_runs", "inline_s", "worker_s")
    REPROBE = 512
    """Worker runs after which a version measured too slow inline is tried inline again."""

    def __init__(self) -> None:
        self.inline_s: float | None = None
        self.worker_s: float | None = None
        self._worker_runs = 0

    def inline(self, threshold_s: float) -> bool:
        """Whether the next request should run on the event loop: never before one has run
        on a worker; then by the inline measure once there is one, else the worker's."""
        if self.inline_s is not None:
            return self.inline_s < threshold_s
        return self.worker_s is not None and self.worker_s < threshold_s

    def ran_inline(self, wall_s: float) -> None:
        self.inline_s = _ewma(self.inline_s, wall_s)

    def ran_on_worker(self, cpu_s: float) -> None:
        self.worker_s = _ewma(self.worker_s, cpu_s)
        self._worker_runs += 1
        if self._worker_runs % self.REPROBE == 0:
            self.inline_s = None


def _ewma(mean: float | None, sample: float) -> float:
    return sample if mean is None else mean + 0.1 * (sample - mean)


class WindowStats:
    """Requests, errors and latencies since the last ``take()``: what automatic rollback
    analyses. Written from the event loop thread, read and reset by the controller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.client_errors = 0
        self.latencies: list[float] = []
        self.divergence = 0.0
        self.compared = 0
        self.agreed = 0
        self.total_compared = 0
        self.total_agreed = 0
        self.total_divergence = 0.0

    def record(self, seconds: float, status: int) -> None:
        """One answered request: a 5xx counts as the version's error; a 4xx is the client's,
        counted apart (``client_error_rate``) and never towards a rollback."""
        with self._lock:
            self.requests += 1
            if status >= 500:
                self.errors += 1
            elif status >= 400:
                self.client_errors += 1
            if len(self.latencies) < 100_000:
                self.latencies.append(seconds)

    def record_shadow(self, divergence: float, agreed: bool) -> None:
        with self._lock:
            self.compared += 1
            self.agreed += 1 if agreed else 0
            self.divergence = max(self.divergence, divergence)
            self.total_compared += 1
            self.total_agreed += 1 if agreed else 0
            self.total_divergence = max(self.total_divergence, divergence)

    def shadow_totals(self) -> dict[str, float]:
        """Shadow comparisons since the slot loaded (never reset)."""
        with self._lock:
            return {"compared": float(self.total_compared),
                    "agreement": (self.total_agreed / self.total_compared
                                  if self.total_compared else 1.0),
                    "max_divergence": self.total_divergence}

    def take(self) -> dict[str, float]:
        with self._lock:
            lat = sorted(self.latencies)
            out = {
                "requests": float(self.requests),
                "error_rate": self.errors / self.requests if self.requests else 0.0,
                "client_error_rate": (self.client_errors / self.requests if self.requests
                                      else 0.0),
                "p99_latency": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0,
                "shadow_divergence": self.divergence,
                "shadow_compared": float(self.compared),
                "shadow_agreement": self.agreed / self.compared if self.compared else 1.0,
            }
            self.requests = self.errors = self.client_errors = self.compared = 0
            self.agreed = 0
            self.latencies = []
            self.divergence = 0.0
            return out


class Slot:
    """One served model version and its load state.

    State changes happen on the loader thread; readers see either the old state or the new one
    (the predictor is published before the state flips to ready).
    """

    def __init__(self, spec: ServedModel) -> None:
        self.spec = spec
        self.state = SlotState.LOADING
        self.error: str | None = None
        self.reason: str | None = None
        """The failure's message without hints (which may name server paths): for clients."""
        self.load_seconds: float | None = None
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.parameters: dict[str, Any] = {}
        self.window = WindowStats()
        self.batching = spec.batching
        self.batcher: Batcher | None = None
        self._predictor: Predictor | None = None
        self.version_text = str(spec.version)
        self.capture: Capture | None = None
        """The last rows and requests, for drift monitors (None: capture off)."""
        self.cost = RunCost()
        """What one request costs: whether its requests may run on the event loop."""
        self.placement: dict[str, Any] | None = None
        """The execution providers asked for and used (None until loaded)."""

    def set_batching(self, config: BatchingConfig | None) -> None:
        """Switch batching on, off or to new settings; queued requests finish first."""
        if config == self.batching:
            return
        self.batching = config
        predictor, old = self._predictor, self.batcher
        self.batcher = Batcher(predictor, config) if (config and predictor) else None
        if old is not None:
            old.stop()

    @property
    def label(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"

    def load(self, emit: EventHook) -> None:
        """Build the predictor; never raises (a failure is kept and reported)."""
        started = time.perf_counter()
        try:
            predictor = self.spec.load()
            signature = predictor.signature
            self.inputs = [_tensor_meta(t) for t in signature.inputs]
            self.outputs = [_tensor_meta(t) for t in signature.outputs]
            if self.spec.describe is not None:
                self.parameters = dict(self.spec.describe(predictor))
            placement = getattr(predictor, "placement", None)
            if placement is not None:
                self.placement = placement.to_dict()
                self.parameters["lockgate_providers"] = self.placement
        except BaseException as exc:  # a failed load must not take the server down
            self.error = _describe_error(exc)
            self.reason = exc.message if isinstance(exc, Error) else type(exc).__name__
            self.state = SlotState.FAILED
            log.error("model %s failed to load: %s", self.label, self.error)
            emit(
                "model.load_failed",
                {
                    "model": self.spec.name,
                    "version": self.spec.version,
                    "error": self.error,
                    "error_type": type(exc).__name__,
                },
            )
            if not isinstance(exc, Exception):
                raise
            return
        self.load_seconds = time.perf_counter() - started
        if self.batching is not None:
            self.batcher = Batcher(predictor, self.batching)
        self._predictor = predictor
        self.state = SlotState.READY
        emit(
            "model.ready",
            {
                "model": self.spec.name,
                "version": self.spec.version,
                "seconds": round(self.load_seconds, 6),
                **({"providers": self.placement} if self.placement else {}),
            },
        )

    def predictor(self) -> Predictor:
        """The predictor of a ready slot; ServeError (503) otherwise."""
        predictor = self._predictor
        if predictor is not None:
            return predictor
        if self.state is SlotState.FAILED:
            raise ServeError(
                f"model {self.spec.name!r} version {self.spec.version} failed to load: "
                f"{self.reason}",
                hint="see the server log; fix the model and restart the server",
            )
        raise ServeError(
            f"model {self.spec.name!r} version {self.spec.version} is not ready ({self.state})",
            hint="retry once GET /v2/health/ready answers 200",
        )


@dataclass(frozen=True)
class Route:
    """Where a model's unversioned requests go: the stable slot, and a candidate taking
    ``weight`` percent of them. Replaced whole (an atomic reference swap), never mutated."""

    stable: Slot
    candidate: Slot | None = None
    weight: int = 0
    shadow: Slot | None = None

    def pick(self) -> Slot:
        if self.candidate is not None and self.weight > 0 and random.random() * 100 < self.weight:
            return self.candidate
        return self.stable

    def slots(self) -> list[Slot]:
        return [s for s in (self.stable, self.candidate, self.shadow) if s is not None]

    def key(self) -> tuple[int, int | None, int, int | None, tuple[int, ...]]:
        """What makes two routes the same: versions, weight, and the slots themselves (a
        version loaded again, on other execution providers, is another slot)."""
        return (self.stable.spec.version,
                self.candidate.spec.version if self.candidate else None, self.weight,
                self.shadow.spec.version if self.shadow else None,
                tuple(id(s) for s in self.slots()))


class ModelTable:
    """Every slot, by name then version, and the routes of deployed models. Rejects an empty
    list (unless ``dynamic``: a controller adds slots as deployments ask) and duplicate
    versions."""

    def __init__(self, models: Sequence[ServedModel], *, dynamic: bool = False) -> None:
        if not models and not dynamic:
            raise InvalidInputError("nothing to serve: the model list is empty")
        self.dynamic = dynamic
        self._routes: dict[str, Route] = {}
        self._slots: list[Slot] = []
        self._by_name: dict[str, dict[int, Slot]] = {}
        for spec in models:
            versions = self._by_name.setdefault(spec.name, {})
            if spec.version in versions:
                raise InvalidInputError(
                    f"model {spec.name!r} version {spec.version} is listed twice"
                )
            slot = Slot(spec)
            versions[spec.version] = slot
            self._slots.append(slot)
        self._latest = {name: versions[max(versions)] for name, versions in self._by_name.items()}
        self._started = False
        self._lock = threading.Lock()
        self.placed: Placed | None = None
        """Told of each version's placement once it loads, and of each dropped one."""

    @property
    def slots(self) -> list[Slot]:
        return list(self._slots)

    def slot(self, name: str, version: int) -> Slot | None:
        return self._by_name.get(name, {}).get(version)

    def ensure(self, spec: ServedModel, emit: EventHook, *, replace: bool = False) -> Slot:
        """The slot for ``spec``, added and loading in the background when it is new; with
        ``replace``, a new slot in place of the version's present one (routes holding the old
        slot keep it until they are replaced)."""
        with self._lock:
            versions = self._by_name.setdefault(spec.name, {})
            found = versions.get(spec.version)
            if found is not None and not replace:
                return found
            slot = Slot(spec)
            versions[spec.version] = slot
            self._slots = [*(s for s in self._slots if s is not found), slot]
        threading.Thread(target=self._load, args=(slot, emit), daemon=True,
                         name=f"lockgate-load-{slot.label}").start()
        return slot

    def _load(self, slot: Slot, emit: EventHook) -> None:
        slot.load(emit)
        placed = self.placed
        if placed is not None and slot.placement is not None:
            try:
                placed(slot.spec.name, slot.version_text, slot.placement)
            except Exception:  # the figures must not fail a load
                log.exception("placement of %s not recorded", slot.label)

    def drop(self, name: str, version: int) -> None:
        """Forget a slot no route uses; requests already running on it finish."""
        with self._lock:
            versions = self._by_name.get(name, {})
            slot = versions.pop(version, None)
            if not versions:
                self._by_name.pop(name, None)
            if slot is not None:
                self._slots = [s for s in self._slots if s is not slot]
        if slot is not None and self.placed is not None:
            self.placed(name, slot.version_text, None)

    def route(self, name: str) -> Route | None:
        return self._routes.get(name)

    def set_route(self, name: str, route: Route) -> None:
        self._routes = {**self._routes, name: route}  # readers see the old or the new dict

    def versions(self, name: str) -> list[int]:
        return sorted(self._by_name.get(name, {}))

    def resolve(self, name: str, version: str | None = None) -> Slot:
        """The slot for ``name`` at ``version``; without a version, the route's pick (stable or
        canary), else the highest version served. NotFoundError (404) when unknown; ServeError
        (503) for a model this server follows but has not routed yet."""
        if version is None:
            route = self._routes.get(name)
            if route is not None:
                return route.pick()
            if self.dynamic and name in self._by_name:
                raise ServeError(f"model {name!r} is not deployed here yet",
                                 hint="retry once GET /v2/health/ready answers 200")
            slot = self._latest.get(name)
            if slot is None:
                raise NotFoundError(
                    f"unknown model {name!r}", hint=f"served models: {self._names()}"
                )
            return slot
        versions = self._by_name.get(name)
        if versions is None:
            raise NotFoundError(
                f"unknown model {name!r}", hint=f"served models: {self._names()}"
            )
        digits = version.isdigit() and version.isascii() and len(version) <= 18
        slot = versions.get(int(version)) if digits else None
        if slot is None:
            raise NotFoundError(
                f"model {name!r} has no version {version!r}",
                hint=f"served versions: {sorted(versions)}",
            )
        return slot

    def _names(self) -> list[str]:
        names = sorted(self._by_name)
        return names if len(names) <= 20 else [*names[:20], f"... {len(names) - 20} more"]

    def not_ready(self) -> list[Slot]:
        """Slots that should serve and cannot yet: a routed model's stable slot unless ready,
        or, for a model without a route (yet), each of its slots."""
        routes = self._routes
        if self.dynamic:
            # a model whose versions loaded but whose route the controller has not set yet is
            # not ready either: its unversioned requests would still be refused
            pending = [s for name, vs in self._by_name.items() if name not in routes
                       for s in vs.values()]
            return pending + [r.stable for r in routes.values()
                              if r.stable.state is not SlotState.READY]
        return [s for s in self._slots if s.state is not SlotState.READY]

    def start_loading(self, emit: EventHook) -> None:
        """Start one daemon loader thread per slot; later calls do nothing."""
        with self._lock:
            if self._started:
                return
            self._started = True
        for slot in self._slots:
            threading.Thread(
                target=self._load,
                args=(slot, emit),
                name=f"lockgate-load-{slot.label}",
                daemon=True,
            ).start()
