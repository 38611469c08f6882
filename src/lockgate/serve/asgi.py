"""ASGI glue for lockgate's own HTTP layer: the lifespan protocol around the server (the app's
startup before it listens, its shutdown after it stops) and one request handed to the app with
its whole body, its answer collected whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

from lockgate.errors import ServeError

__all__ = ["ASGI_VERSION", "AppAnswer", "Lifespan", "call_app"]

log = logging.getLogger("lockgate.serve")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


@dataclass
class AppAnswer:
    """What the app answered: ``status`` 0 when it answered nothing; ``broken`` when it failed
    after its answer began (the connection cannot carry a clean one any more)."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    broken: bool = False


async def call_app(app: ASGIApp, scope: dict[str, Any], body: bytes,
                   disconnected: Awaitable[None]) -> AppAnswer:
    """Run ``app`` for one request whose whole ``body`` is at hand; failures are logged."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected
        return {"type": "http.disconnect"}

    answer = AppAnswer()
    chunks: list[bytes] = []
    done = False

    async def send(message: Message) -> None:
        nonlocal done
        if message["type"] == "http.response.start":
            answer.status = int(message["status"])
            answer.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body" and not done:
            chunks.append(message.get("body", b""))
            done = not message.get("more_body", False)

    try:
        await app(scope, receive, send)
    except Exception:
        log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
        answer.broken = answer.status != 0
    else:
        if not answer.status:
            log.error("the app answered %s %s with nothing", scope["method"], scope["path"])
    answer.body = b"".join(chunks)
    return answer


class Lifespan:
    """The ASGI lifespan protocol around the server: startup before listening, shutdown after.
    A failed startup raises ServeError (the server does not start)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        """Create it inside the running loop."""
        self.app = app
        self.state = state
        loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[str | None] = loop.create_future()
        self._stopped: asyncio.Future[str | None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def startup(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._events.put({"type": "lifespan.startup"})
        failure = await self._started
        if failure is not None:
            raise ServeError(f"the server did not start: {failure}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        self._stopping = True
        await self._events.put({"type": "lifespan.shutdown"})
        failure = await self._stopped
        if failure is not None:
            raise ServeError(f"the server did not shut down cleanly: {failure}")

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        started, stopped = self._started, self._stopped
        try:
            await self.app(scope, self._events.get, self._send)
        except BaseException as exc:
            if not started.done():
                log.error("lifespan startup failed", exc_info=exc)
                started.set_result(f"{type(exc).__name__}: {exc}")
            elif self._stopping and not stopped.done():
                log.error("lifespan shutdown failed", exc_info=exc)
                stopped.set_result(f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
        finally:
            for future in (started, stopped):
                if not future.done():
                    future.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self._started.set_result(str(message.get("message", "startup failed")))
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self._stopped.set_result(str(message.get("message", "shutdown failed")))
