"""Dynamic batching with Triton's semantics, on a thread of its own.

    batcher = Batcher(predictor, BatchingConfig(max_batch_size=32, max_queue_delay_us=500))
    outputs = await batcher.submit(inputs, None)          # from the event loop

Requests queue; the batcher thread takes the oldest one and, for up to ``max_queue_delay_us``,
gathers later requests **with the same key** (input names, dtypes and every dimension but the
first, and the same requested outputs) until ``max_batch_size`` rows — or a preferred batch size —
are reached. It runs the model once on the concatenated inputs and splits every output back, in
order, by each request's row count. Requests of other shapes wait for their own batch; they are
never merged.

A request that would make the queue longer than ``max_queue_size`` is refused at once, and one
still queued after ``timeout_ms`` is dropped; both answer 503. The model runs on the batcher
thread, never on the event loop.

Per request, as Triton's request parameters say: ``timeout`` (microseconds) shortens how long
it may wait in the queue — past it the request is answered 503 "Request timeout expired"
without running; ``priority`` orders the queue, 1 first, then 2 and so on (0, the default,
ranks as 1); requests of one priority keep their arrival order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lockgate.errors import InvalidInputError, ServeError
from lockgate.runtime.predictor import Predictor

__all__ = ["DEFAULT_PRIORITY", "Batcher", "BatchingConfig", "Execution", "RequestTimeoutError",
           "queue_parameters"]


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue_delay_us < 0 or self.max_queue_size < 1 \
                or self.timeout_ms <= 0 or any(p < 1 for p in self.preferred_batch_sizes):
            raise InvalidInputError(f"invalid batching settings: {self}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_batch_size": self.max_batch_size,
                "max_queue_delay_us": self.max_queue_delay_us,
                "preferred_batch_sizes": list(self.preferred_batch_sizes),
                "max_queue_size": self.max_queue_size, "timeout_ms": self.timeout_ms}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BatchingConfig:
        known = {"max_batch_size", "max_queue_delay_us", "preferred_batch_sizes",
                 "max_queue_size", "timeout_ms"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInputError(f"batching: unknown keys {unknown}",
                                    hint=f"keys: {sorted(known)}")
        values: dict[str, Any] = {k: (tuple(int(x) for x in v) if k == "preferred_batch_sizes"
                                      else int(v)) for k, v in d.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError):
            raise InvalidInputError(f"batching: expected integers, got {dict(d)}") from None


class RequestTimeoutError(ServeError):
    """A request's own ``timeout`` passed while it waited in the batch queue (HTTP 503): the
    client's deadline, not the version's failure."""


DEFAULT_PRIORITY = 1
"""The rank of a request without a ``priority`` (or with 0): the highest level."""


def queue_parameters(parameters: Mapping[str, Any]) -> tuple[int, int | None]:
    """A request's ``priority`` (0 when absent) and ``timeout`` (microseconds, None when
    absent or 0) from its parameters; InvalidInputError unless each is a non-negative integer."""
    priority = parameters.get("priority", 0) if parameters else 0
    timeout = parameters.get("timeout") if parameters else None
    for name, value in (("priority", priority), ("timeout", timeout)):
        if value is not None and (type(value) is not int or value < 0):
            raise InvalidInputError(f"parameters.{name} must be a non-negative integer, got "
                                    f"{str(value)[:40]!r}",
                                    hint="timeout is in microseconds; priority 1 is the "
                                         "highest, 0 the default")
    return priority, timeout or None  # a timeout of 0 is none, as in Triton


@dataclass(slots=True)
class Execution:
    """One model run, shared by the requests it answered: its rows and the seconds the model
    took. ``counted`` is for the first of its requests to count it (on the event loop)."""

    size: int
    infer_s: float
    counted: bool = False


Executed = tuple[dict[str, np.ndarray], Execution, float]
"""A request's slice of the outputs, its execution and the seconds it waited in the queue."""


@dataclass(slots=True, eq=False)  # identity: removing one from the queue compares
class _Job:
    key: tuple[Any, ...]
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None
    rows: int
    deadline: float
    own_deadline: bool
    """The deadline is the request's ``timeout``, not the batcher's ``timeout_ms``."""
    rank: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Executed]
    enqueued: float = field(default_factory=time.perf_counter)


def _key(inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> tuple[Any, ...]:
    return (tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items())),
            tuple(outputs) if outputs else None)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _order(job: _Job) -> tuple[int, float]:
    return job.rank, job.enqueued


class Batcher:
    def __init__(self, predictor: Predictor, config: BatchingConfig) -> None:
        self.predictor, self.config = predictor, config
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._ranked = 0  # queued jobs whose rank is not the default
        self._next_deadline = float("inf")  # no queued job expires before this
        self._thread = threading.Thread(target=self._run, name="lockgate-batcher", daemon=True)
        self._thread.start()

    async def submit(self, inputs: Mapping[str, np.ndarray],
                     outputs: Sequence[str] | None) -> tuple[dict[str, np.ndarray], int]:
        """The outputs for these inputs, run as part of a batch, and the batch's size."""
        part, execution, _ = await self.submit_detailed(inputs, outputs)
        return part, execution.size

    async def submit_detailed(self, inputs: Mapping[str, np.ndarray],
                              outputs: Sequence[str] | None, *, priority: int = 0,
                              timeout_us: int | None = None) -> Executed:
        """The outputs for these inputs, run as part of a batch, the batch's
        :class:`Execution` and the seconds this request waited for it. ``priority`` (0: the
        default) and ``timeout_us`` (None: the batcher's ``timeout_ms`` only) as Triton's
        request parameters mean them."""
        rows = {int(a.shape[0]) for a in inputs.values() if a.ndim}
        if len(rows) != 1:
            raise InvalidInputError("batched models need every input to share dimension 0")
        (n,) = rows
        if n > self.config.max_batch_size:
            raise InvalidInputError(f"a request of {n} rows exceeds max_batch_size "
                                    f"{self.config.max_batch_size}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Executed] = loop.create_future()
        now = time.perf_counter()
        limit = self.config.timeout_ms / 1000
        own = timeout_us is not None and timeout_us / 1e6 < limit
        job = _Job(_key(inputs, outputs), inputs, tuple(outputs) if outputs else None, n,
                   now + (timeout_us / 1e6 if own and timeout_us is not None else limit), own,
                   priority or DEFAULT_PRIORITY, loop, future, now)
        with self._cond:
            if self._stopped:
                raise ServeError("the model is being unloaded")
            if len(self._jobs) >= self.config.max_queue_size:
                raise ServeError(f"the batch queue is full ({self.config.max_queue_size} "
                                 "requests waiting)", hint="retry later, or add servers")
            self._jobs.append(job)
            if job.rank != DEFAULT_PRIORITY:
                self._ranked += 1
            self._next_deadline = min(self._next_deadline, job.deadline)
            self._cond.notify()
        return await future

    @property
    def queued(self) -> int:
        """Requests waiting in the queue now."""
        return len(self._jobs)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _remove(self, job: _Job) -> None:
        self._jobs.remove(job)
        if job.rank != DEFAULT_PRIORITY:
            self._ranked -= 1

    def _expire(self, now: float) -> None:
        """Answer every queued job whose deadline passed (holding the condition's lock)."""
        if now < self._next_deadline:
            return
        expired = [j for j in self._jobs if j.deadline < now]
        for job in expired:
            self._remove(job)
            self._timed_out(job)
        self._next_deadline = min((j.deadline for j in self._jobs), default=float("inf"))

    def _timed_out(self, job: _Job) -> None:
        error = (RequestTimeoutError("Request timeout expired") if job.own_deadline else
                 ServeError(f"the request waited over {self.config.timeout_ms} ms in the "
                            "batch queue"))
        job.loop.call_soon_threadsafe(_resolve, job.future, None, error)

    def _next(self) -> _Job:
        """The queued job to run first: the oldest of the best rank."""
        if not self._ranked:
            return self._jobs[0]
        return min(self._jobs, key=_order)

    def _match(self, first: _Job, room: int) -> _Job | None:
        """The next job to join ``first``'s batch: same key, fits in ``room`` rows."""
        jobs = sorted(self._jobs, key=_order) if self._ranked else self._jobs
        return next((j for j in jobs if j.key == first.key and j.rows <= room), None)

    def _take(self) -> list[_Job]:
        """The next batch: the first job by rank and age, and later ones of its key, within
        the delay; jobs whose deadline passed are answered and left out."""
        cfg = self.config
        with self._cond:
            while True:
                self._expire(time.perf_counter())
                if self._jobs or self._stopped:
                    break
                self._cond.wait(None if self._next_deadline == float("inf")
                                else max(0.0, self._next_deadline - time.perf_counter()))
            if not self._jobs:
                return []
            first = self._next()
            self._remove(first)
            batch, rows = [first], first.rows
            flush_at = first.enqueued + cfg.max_queue_delay_us / 1e6
            preferred = set(cfg.preferred_batch_sizes)
            while rows < cfg.max_batch_size and rows not in preferred:
                match = self._match(first, cfg.max_batch_size - rows)
                if match is not None:
                    self._remove(match)
                    batch.append(match)
                    rows += match.rows
                    continue
                # a first job whose deadline comes before the flush is answered at its deadline
                wait = min(flush_at, first.deadline) - time.perf_counter()
                if wait <= 0 or self._stopped:
                    break
                self._cond.wait(wait)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            now = time.perf_counter()
            live = []
            for job in batch:
                if now > job.deadline:
                    self._timed_out(job)
                else:
                    live.append(job)
            if live:
                self._execute(live)

    def _execute(self, batch: list[_Job]) -> None:
        names = list(batch[0].inputs)
        begun = time.perf_counter()
        try:
            merged = {n: (batch[0].inputs[n] if len(batch) == 1
                          else np.concatenate([j.inputs[n] for j in batch]))
                      for n in names}
            outputs = self.predictor.run(merged, batch[0].outputs)
        except BaseException as exc:
            for job in batch:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, exc)
            return
        size = sum(j.rows for j in batch)
        execution = Execution(size, time.perf_counter() - begun)
        start = 0
        for job in batch:
            part = {k: v[start:start + job.rows] if v.ndim and v.shape[0] == size else v
                    for k, v in outputs.items()}
            start += job.rows
            job.loop.call_soon_threadsafe(_resolve, job.future,
                                          (part, execution, begun - job.enqueued), None)
