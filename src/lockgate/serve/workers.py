"""A fixed pool of worker threads for the blocking part of inference.

Why not ``starlette.concurrency.run_in_threadpool``: on the serving hot path its hop (anyio's
capacity limiter, worker bookkeeping and a ``concurrent.futures`` round trip) costs about 90 µs on
a 2-core machine, against about 35 µs for a plain queue plus ``call_soon_threadsafe`` (see
docs/performance.md). The pool also bounds how many ONNX Runtime calls run at once, separately
from any other thread-pool use in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from lockgate.errors import InvalidInputError

__all__ = ["WorkerPool"]

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class WorkerPool:
    """``await pool.run(fn, *args)`` runs ``fn(*args)`` on one of ``threads`` daemon threads.

    Threads start on first use and end after :meth:`stop`. Exceptions from ``fn`` propagate to
    the awaiting coroutine; a caller that is cancelled stops waiting but the call still finishes.
    """

    def __init__(self, threads: int, *, name: str = "lockgate-worker") -> None:
        if threads < 1:
            raise InvalidInputError(f"a worker pool needs at least one thread, got {threads}")
        self.threads = threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _start(self) -> None:
        with self._lock:
            if self._workers:
                return
            for i in range(self.threads):
                worker = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                ok, value = True, fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                ok, value = False, exc
            # RuntimeError: the loop closed while we worked, so nobody is waiting
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, ok, value)
            del job, future, value

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Schedule ``fn(*args)``; await the returned future for its result."""
        if not self._workers:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def stop(self, *, wait: bool = True) -> None:
        """End the threads once the calls already queued have run; ``wait`` joins them.

        A later :meth:`run` starts a fresh set of threads.
        """
        with self._lock:
            workers, self._workers = self._workers, []
            for _ in workers:
                self._jobs.put(None)
        if wait:
            for worker in workers:
                worker.join()
