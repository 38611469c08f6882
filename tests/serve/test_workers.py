"""The worker pool that runs the blocking part of inference off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lockgate.errors import InvalidInputError
from lockgate.serve.workers import WorkerPool


def test_runs_off_the_loop_thread_and_returns_results() -> None:
    pool = WorkerPool(2, name="t")

    async def main() -> list[str]:
        return list(
            await asyncio.gather(
                *(pool.run(lambda: threading.current_thread().name) for _ in range(8))
            )
        )

    try:
        names = asyncio.run(main())
    finally:
        pool.stop()
    assert all(n.startswith("t-") for n in names)
    assert threading.current_thread().name not in names


def test_exceptions_reach_the_caller() -> None:
    pool = WorkerPool(1)

    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    async def main() -> None:
        with pytest.raises(ValueError, match="bad 3"):
            await pool.run(boom, 3)
        assert await pool.run(divmod, 7, 2) == (3, 1)

    try:
        asyncio.run(main())
    finally:
        pool.stop()


def test_cancelled_caller_does_not_break_the_pool() -> None:
    pool = WorkerPool(1)
    release = threading.Event()

    async def main() -> int:
        waiting = asyncio.ensure_future(pool.run(release.wait, 60))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        return await pool.run(int, "5")

    try:
        assert asyncio.run(main()) == 5
    finally:
        pool.stop()


def test_stop_then_restart() -> None:
    pool = WorkerPool(2)

    async def one() -> int:
        return await pool.run(len, "abc")

    assert asyncio.run(one()) == 3
    pool.stop()
    pool.stop()  # twice is fine
    assert asyncio.run(one()) == 3
    pool.stop()


def test_needs_a_thread() -> None:
    with pytest.raises(InvalidInputError, match="at least one thread"):
        WorkerPool(0)
