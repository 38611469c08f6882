"""Triton's model repository extension over one server's set of models.

    POST /v2/repository/index                      {"ready": true} lists only ready versions
    POST /v2/repository/models/{model}/load
    POST /v2/repository/models/{model}/unload

The repository is what this server serves, never the registry itself: nothing here writes to
the store.

``unload`` takes a model out of this server's set: its requests, metadata and statistics answer
404 and readiness stops waiting for it; ``load`` puts it back. Its versions stay loaded meanwhile
(and a server following the store keeps following the model's deployment), so ``load`` is back
at once.

* A server of named versions (``lockgate serve NAME@V ...``): the index lists them.
* A server that follows the store: the index lists the deployments and their versions' states;
  only a model with a deployment can be loaded. Deploying, switching and rolling back stay the
  registry's.

Load and unload need the deployer role for the model when the home has users (``authorize``);
without users, only a client on a loopback address may call them. The index is open, as the
model metadata is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from lockgate.errors import AccessDeniedError, NotFoundError
from lockgate.serve.controller import Desired
from lockgate.serve.inference import InferenceService
from lockgate.serve.slots import ModelTable, SlotState

__all__ = ["Repository", "RepositoryAuthorize"]

RepositoryAuthorize = Callable[[str | None, str], object]
"""``authorize(authorization, model)``: raises AuthenticationError (401) or AccessDeniedError
(403) unless the caller may load and unload ``model``; returns None where the home has no
users (then only loopback clients may)."""

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_STATES = {SlotState.READY: "READY", SlotState.LOADING: "LOADING",
           SlotState.FAILED: "UNAVAILABLE"}


class Repository:
    """Load and unload on ``table``'s models; ``desired`` (None: named versions) is what the
    store says this server follows. The set of unloaded models lives on ``service``
    (``service.unloaded``), which refuses their requests."""

    def __init__(self, table: ModelTable, service: InferenceService, *,
                 desired: Callable[[], Mapping[str, Desired]] | None = None,
                 authorize: RepositoryAuthorize | None = None) -> None:
        self.table = table
        self.service = service
        self.desired = desired
        self.authorize = authorize
        self._lock = threading.Lock()  # load and unload run on worker threads

    def check(self, authorization: str | None, client: str | None, model: str) -> None:
        """Raise unless this caller may load and unload ``model``."""
        if self.authorize is not None and self.authorize(authorization, model) is not None:
            return
        if client not in _LOOPBACK:
            raise AccessDeniedError(
                "loading and unloading models is open to loopback clients only on a server "
                "without users", hint="call it on the server's machine, or add users and use "
                                      "a token with the deployer role")

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's index: ``name``, ``version``, ``state`` and ``reason`` per version (reads
        the store when following it: call it off the event loop)."""
        unloaded = self.service.unloaded
        if self.desired is None:
            versions = {name: self.table.versions(name) for name in self._names()}
        else:
            versions = {name: sorted(d.versions()) for name, d in self.desired().items()}
        out = []
        for name, numbers in sorted(versions.items()):
            for number in numbers:
                entry = self._entry(name, number, name in unloaded)
                if not ready_only or entry["state"] == "READY":
                    out.append(entry)
        return out

    def _names(self) -> list[str]:
        return sorted({s.spec.name for s in self.table.slots})

    def _entry(self, name: str, number: int, unloaded: bool) -> dict[str, Any]:
        slot = self.table.slot(name, number)
        if unloaded:
            state, reason = "UNAVAILABLE", "unloaded"
        elif slot is None:
            state, reason = "LOADING", "deployed, not loaded yet"
        else:
            state = _STATES.get(slot.state, "UNAVAILABLE")
            reason = slot.reason or "" if slot.state is SlotState.FAILED else ""
        return {"name": name, "version": str(number), "state": state, "reason": reason}

    def load(self, name: str) -> None:
        """Put ``name`` back in this server's set (reads the store when following it)."""
        self._known(name)
        with self._lock:
            self.service.unloaded = self.service.unloaded - {name}

    def unload(self, name: str) -> None:
        """Take ``name`` out of this server's set: its requests answer 404 from now on."""
        self._known(name)
        with self._lock:
            self.service.unloaded = self.service.unloaded | {name}

    def _known(self, name: str) -> None:
        if self.desired is None:
            if name not in self._names():
                raise NotFoundError(f"unknown model {name!r}",
                                    hint=f"this server serves: {self._names()}")
        elif name not in self.desired():
            raise NotFoundError(f"model {name!r} has no deployment this server follows",
                                hint="promote a version to the serving stage or "
                                     "`lockgate deploy NAME@V` first")
