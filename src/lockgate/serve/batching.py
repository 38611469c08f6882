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

__all__ = ["Batcher", "BatchingConfig"]


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


@dataclass
class _Job:
    key: tuple[Any, ...]
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None
    rows: int
    deadline: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[dict[str, np.ndarray], int]]
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


class Batcher:
    def __init__(self, predictor: Predictor, config: BatchingConfig) -> None:
        self.predictor, self.config = predictor, config
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="lockgate-batcher", daemon=True)
        self._thread.start()

    async def submit(self, inputs: Mapping[str, np.ndarray],
                     outputs: Sequence[str] | None) -> tuple[dict[str, np.ndarray], int]:
        """The outputs for these inputs, run as part of a batch, and the batch's size."""
        rows = {int(a.shape[0]) for a in inputs.values() if a.ndim}
        if len(rows) != 1:
            raise InvalidInputError("batched models need every input to share dimension 0")
        (n,) = rows
        if n > self.config.max_batch_size:
            raise InvalidInputError(f"a request of {n} rows exceeds max_batch_size "
                                    f"{self.config.max_batch_size}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[dict[str, np.ndarray], int]] = loop.create_future()
        job = _Job(_key(inputs, outputs), inputs, tuple(outputs) if outputs else None, n,
                   time.perf_counter() + self.config.timeout_ms / 1000, loop, future)
        with self._cond:
            if self._stopped:
                raise ServeError("the model is being unloaded")
            if len(self._jobs) >= self.config.max_queue_size:
                raise ServeError(f"the batch queue is full ({self.config.max_queue_size} "
                                 "requests waiting)", hint="retry later, or add servers")
            self._jobs.append(job)
            self._cond.notify()
        return await future

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _take(self) -> list[_Job]:
        """The next batch: the oldest job and later ones of its key, within the delay."""
        cfg = self.config
        with self._cond:
            while not self._jobs and not self._stopped:
                self._cond.wait()
            if not self._jobs:
                return []
            first = self._jobs.popleft()
            batch, rows = [first], first.rows
            flush_at = first.enqueued + cfg.max_queue_delay_us / 1e6
            preferred = set(cfg.preferred_batch_sizes)
            while rows < cfg.max_batch_size and rows not in preferred:
                match = next((j for j in self._jobs
                              if j.key == first.key and rows + j.rows <= cfg.max_batch_size),
                             None)
                if match is not None:
                    self._jobs.remove(match)
                    batch.append(match)
                    rows += match.rows
                    continue
                wait = flush_at - time.perf_counter()
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
                    job.loop.call_soon_threadsafe(
                        _resolve, job.future, None,
                        ServeError(f"the request waited over {self.config.timeout_ms} ms in "
                                   "the batch queue"))
                else:
                    live.append(job)
            if live:
                self._execute(live)

    def _execute(self, batch: list[_Job]) -> None:
        names = list(batch[0].inputs)
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
        start = 0
        for job in batch:
            part = {k: v[start:start + job.rows] if v.ndim and v.shape[0] == size else v
                    for k, v in outputs.items()}
            start += job.rows
            job.loop.call_soon_threadsafe(_resolve, job.future, (part, size), None)
