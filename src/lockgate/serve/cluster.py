"""What the workers of one ``lockgate serve --workers N`` share: ``/metrics``, readiness,
capture, statistics and the model repository extension's load and unload.

Each worker answers its peers on a Unix socket in the supervisor's folder (``w-PID.sock``; the
folder is the server user's alone): its own metrics text, readiness, statistics or capture
window of one version, or a load or unload to apply. The worker that answers a scrape asks
every peer and merges (:mod:`lockgate.serve.cluster_metrics`), so any worker reports the totals
of all; readiness is every worker's, statistics are summed, and load and unload are applied
on every worker. Each worker also leaves its latest text in ``last-PID.prom``
(every 2 s and whenever it answers), so the counts of a worker that died still add up.

Capture: the answering worker reads every worker's window after that worker's own cursors and
concatenates them (at most ``window`` rows and requests per worker). The cursors a monitor
gets back are merged positions, each mapped to the workers' own cursors in a small file, so a
monitor reading ``rows_since``/``requests_since`` sees each row once. The ``instance`` is the
supervisor's: a replaced worker does not make monitors start over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lockgate.serve.cluster_metrics import Exposition, merge, merge_statistics
from lockgate.serve.routes import mark_loaded, readiness
from lockgate.serve.supervisor import WorkerContext

__all__ = ["Cluster"]

log = logging.getLogger("lockgate")

_PEER_TIMEOUT_S = 5.0
_KEEP_CURSORS = 32


class Cluster:
    """This worker's side of the cluster: its peer socket, and the merged views."""

    def __init__(self, ctx: WorkerContext, state: Any) -> None:
        self.ctx = ctx
        self.instance = ctx.instance
        self.folder = Path(ctx.cluster_dir)
        self.pid = os.getpid()
        self.metrics = state.metrics
        self.table = state.models
        self.service = state.inference
        self.own_stats = state.inference.stats
        repository = getattr(state, "repository", None)
        self.own_repository: dict[str, Callable[[str], None]] = {} if repository is None else {
            "load": repository.load, "unload": repository.unload}

        def own_metrics() -> bytes:
            mark_loaded(self.table, self.metrics)
            rendered: bytes = self.metrics.render_own()
            return rendered

        self.own_metrics: Callable[[], bytes] = own_metrics
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen for peers, and watch for the supervisor going away."""
        path = self.folder / f"w-{self.pid}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, name="lockgate-peers", daemon=True).start()
        threading.Thread(target=self._keep, name="lockgate-keeper", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._leave_text()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            with contextlib.suppress(OSError):
                (self.folder / f"w-{self.pid}.sock").unlink()

    def _keep(self) -> None:
        """Every 2 s: leave this worker's text; end it when the supervisor is gone."""
        parent = os.getppid()
        while not self._stopping.wait(2.0):
            self._leave_text()
            if os.getppid() != parent:
                log.warning("the supervisor is gone: stopping")
                os.kill(self.pid, signal.SIGTERM)
                return

    def _leave_text(self) -> bytes:
        text = self.own_metrics()
        target = self.folder / f"last-{self.pid}.prom"
        temporary = target.with_suffix(f".{threading.get_ident()}.tmp")
        with contextlib.suppress(OSError):
            temporary.write_bytes(text)
            temporary.replace(target)
        return text

    # -- answering peers -------------------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(_PEER_TIMEOUT_S)
            try:
                request = json.loads(_read_line(conn))
                if request.get("op") == "metrics":
                    conn.sendall(self._leave_text())
                elif request.get("op") == "stats":
                    versions = [(str(n), str(v)) for n, v in request["versions"]]
                    conn.sendall(json.dumps(self.own_stats.snapshot(versions)).encode())
                elif request.get("op") == "repository":
                    action = self.own_repository[str(request["action"])]
                    action(str(request["model"]))
                    conn.sendall(b"{}")
                elif request.get("op") == "ready":
                    _, detail = readiness(self.table, self.service)
                    conn.sendall(json.dumps({"detail": detail}).encode())
                elif request.get("op") == "capture":
                    conn.sendall(json.dumps(self._own_capture(request)).encode())
            except Exception as exc:  # a peer's request never takes this worker down
                log.warning("a peer's request failed: %s", exc)

    def _own_capture(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            slot = self.table.resolve(str(request["model"]), str(request["version"]))
        except Exception:  # not served here (yet): nothing captured
            return {"instance": None}
        capture = slot.capture
        if capture is None:
            return {"instance": None}
        snap: dict[str, Any] = capture.snapshot(int(request["rows_since"]),
                                                int(request["requests_since"]))
        return {"instance": id(capture), **snap}

    # -- asking peers ----------------------------------------------------------------------------

    def _peers(self) -> Iterator[int]:
        pids = set()
        for path in self.folder.iterdir():
            stem = path.name.split(".")[0]
            for prefix in ("w-", "last-"):
                if stem.startswith(prefix) and stem[len(prefix):].isdigit():
                    pids.add(int(stem[len(prefix):]))
        pids.discard(self.pid)
        yield from sorted(pids)

    def _ask(self, pid: int, request: dict[str, Any]) -> bytes | None:
        path = self.folder / f"w-{pid}.sock"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(_PEER_TIMEOUT_S)
                conn.connect(str(path))
                conn.sendall(json.dumps(request).encode() + b"\n")
                conn.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := conn.recv(1 << 16):
                    chunks.append(chunk)
                return b"".join(chunks)
        except OSError:
            return None

    def peers_not_ready(self) -> str | None:
        """What the other workers still wait for; None once every one of them runs and is
        ready (a worker being replaced counts as not ready until its versions load)."""
        answered = 0
        for pid in self._peers():
            answer = self._ask(pid, {"op": "ready"})
            if answer is None:
                continue  # gone: a replacement has its own socket
            answered += 1
            detail = json.loads(answer).get("detail")
            if detail is not None:
                return f"worker {pid}: {detail}"
        if answered < self.ctx.workers - 1:
            return f"{answered + 1} of {self.ctx.workers} workers started"
        return None

    def repository(self, action: str, model: str) -> None:
        """The repository extension's ``load`` or ``unload`` here, then on every other worker
        (a worker that refuses it, not knowing the model yet, is logged)."""
        self.own_repository[action](model)
        for pid in self._peers():
            answer = self._ask(pid, {"op": "repository", "action": action, "model": model})
            if answer is None and _alive(pid):
                log.warning("worker %d did not %s %s", pid, action, model)

    def statistics(self, versions: list[tuple[str, str]], own: dict[str, Any]
                   ) -> dict[str, Any]:
        """The statistics extension's answer summed across the workers."""
        parts = [own]
        for pid in self._peers():
            answer = self._ask(pid, {"op": "stats", "versions": versions})
            if answer is not None:
                parts.append(json.loads(answer))
        return merge_statistics(parts)

    def render(self, own: bytes) -> bytes:
        """``/metrics`` across the workers: ``own`` text merged with every peer's."""
        parts = [Exposition(own.decode("utf-8"))]
        for pid in self._peers():
            text = self._ask(pid, {"op": "metrics"})
            live = text is not None or _alive(pid)
            if text is None:
                try:
                    text = (self.folder / f"last-{pid}.prom").read_bytes()
                except OSError:
                    continue
            parts.append(Exposition(text.decode("utf-8"), live=live))
        return merge(parts)

    def captured(self, model: str, version: str, own: Callable[[int, int], dict[str, Any]],
                 own_id: int, rows_since: int, requests_since: int) -> dict[str, Any]:
        """The merged capture window of ``model@version`` after the merged cursors. A cursor
        this server did not hand out counts rows and requests in worker order, as if the
        workers' windows were one after the other (past the end: from the start)."""
        key = hashlib.sha256(f"{model}\0{version}".encode()).hexdigest()[:16]
        cursors = self._cursors(key, rows_since, requests_since)
        parts = self._gather(model, version, own, own_id, cursors)
        base = (rows_since, requests_since) if cursors else (0, 0)
        if not cursors and (rows_since or requests_since):
            spread = _spread(parts, rows_since, requests_since)
            if spread is not None:
                parts = self._gather(model, version, own, own_id, spread)
                base = (rows_since, requests_since)
        body = _concatenate(parts, *base)
        self._remember(key, body, {pid: [p["rows"]["to"], p["requests"]["to"], p["instance"]]
                                   for pid, p in parts})
        return body

    def _gather(self, model: str, version: str, own: Callable[[int, int], dict[str, Any]],
                own_id: int, cursors: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Every worker's window after its own cursor in ``cursors`` (none: from its start)."""
        mine = str(self.pid)
        parts: list[tuple[str, dict[str, Any]]] = [
            (mine, {"instance": own_id, **own(*_since(cursors.get(mine), own_id))})]
        for pid in self._peers():
            known = cursors.get(str(pid))
            request = {"op": "capture", "model": model, "version": version,
                       "rows_since": int(known[0]) if known else 0,
                       "requests_since": int(known[1]) if known else 0}
            answer = self._ask(pid, request)
            if answer is None:
                continue
            part = json.loads(answer)
            if part.get("instance") is None:
                continue
            if known and part["instance"] != known[2]:  # the worker restarted: from its start
                part = json.loads(self._ask(pid, {**request, "rows_since": 0,
                                                  "requests_since": 0}) or b"{}")
                if part.get("instance") is None:
                    continue
            parts.append((str(pid), part))
        return parts

    def _cursors(self, key: str, rows: int, requests: int) -> dict[str, list[Any]]:
        if rows == 0 and requests == 0:
            return {}
        try:
            found: dict[str, list[Any]] = json.loads(
                (self.folder / f"cursor-{key}-{rows}-{requests}.json").read_text())
            return found
        except (OSError, ValueError):
            return {}

    def _remember(self, key: str, body: dict[str, Any], cursors: dict[str, list[Any]]) -> None:
        name = f"cursor-{key}-{body['rows']['to']}-{body['requests']['to']}.json"
        target = self.folder / name
        temporary = self.folder / f"{name}.{self.pid}.tmp"
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps(cursors))
            temporary.replace(target)
            older = sorted(self.folder.glob(f"cursor-{key}-*.json"),
                           key=lambda p: p.stat().st_mtime)
            for stale in older[:-_KEEP_CURSORS]:
                stale.unlink(missing_ok=True)


def _spread(parts: list[tuple[str, dict[str, Any]]], rows: int, requests: int
            ) -> dict[str, list[Any]] | None:
    """Each worker's own cursors for merged positions counted in worker order, from parts
    read from their start; None when the positions are past the end."""
    if rows > sum(int(p["rows"]["to"]) for _, p in parts) or \
            requests > sum(int(p["requests"]["to"]) for _, p in parts):
        return None
    out: dict[str, list[Any]] = {}
    for pid, part in parts:
        r, q = min(rows, int(part["rows"]["to"])), min(requests, int(part["requests"]["to"]))
        rows, requests = rows - r, requests - q
        out[pid] = [r, q, part["instance"]]
    return out


def _since(known: list[Any] | None, instance: int) -> tuple[int, int]:
    if not known or known[2] != instance:
        return 0, 0
    return int(known[0]), int(known[1])


def _concatenate(parts: list[tuple[str, dict[str, Any]]], rows_from: int,
                 requests_from: int) -> dict[str, Any]:
    """One capture body from the workers' parts, its cursors advanced by what they hold."""
    names: dict[str, str] = {}
    for _, part in parts:
        for name, feature in part["rows"]["features"].items():
            names.setdefault(name, feature["kind"])
    values: dict[str, list[Any]] = {name: [] for name in names}
    latencies: list[float] = []
    rows = count = errors = client_errors = 0
    for _, part in parts:
        n = int(part["rows"]["to"]) - int(part["rows"]["from"])
        for name in names:
            found = part["rows"]["features"].get(name)
            values[name].extend(found["values"] if found else [None] * n)
        rows += n
        r = part["requests"]
        latencies.extend(r["latencies"])
        count += int(r["count"])
        errors += int(r["errors"])
        client_errors += int(r["client_errors"])
    return {"rows": {"from": rows_from, "to": rows_from + rows,
                     "features": {name: {"kind": kind, "values": values[name]}
                                  for name, kind in names.items()}},
            "requests": {"from": requests_from, "to": requests_from + count, "count": count,
                         "errors": errors, "client_errors": client_errors,
                         "latencies": latencies}}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < 4096:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ONCE_PER_SERVER = frozenset({"serve.start", "serve.stop", "deploy.switched", "deploy.failed",
                             "deploy.unloaded", "model.ready", "model.load_failed"})
"""Events only the first worker passes on: every worker follows the same store, so the
others' would repeat its audit records and notifications. A worker's own canary and shadow
figures (``deploy.analysis_failed``, ``deploy.shadow_stats``, ...) still go out from each."""


def _first_worker_says(hook: Callable[[str, dict[str, Any]], None]
                       ) -> Callable[[str, dict[str, Any]], None]:
    def filtered(name: str, payload: dict[str, Any]) -> None:
        if name not in ONCE_PER_SERVER:
            hook(name, payload)

    return filtered


class _MergedStatistics:
    """The service's statistics with a :meth:`snapshot` summed across the workers; recording
    (``of``) is this worker's own, at the same cost."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.of = cluster.own_stats.of

    def snapshot(self, versions: Iterable[tuple[str, str]]) -> dict[str, Any]:
        keys = list(versions)
        own: dict[str, Any] = self.cluster.own_stats.snapshot(keys)
        return self.cluster.statistics(keys, own)


Serve = Callable[[socket.socket, Callable[[str, int], None], Callable[[str, int], None]], None]


def as_worker(app: Any, ctx: WorkerContext, serve: Serve) -> None:
    """Run ``serve(sock, on_started, on_grpc_started)`` as worker ``ctx``: on the inherited
    socket, telling the supervisor when it listens, with the merged views of an inference app
    attached."""
    sock = socket.socket(fileno=ctx.http_fd)
    state: Any = getattr(app, "state", None)
    cluster = None
    if getattr(state, "metrics", None) is not None and getattr(state, "models", None) is not None:
        cluster = Cluster(ctx, state)
        cluster.start()
        state.metrics.merged = cluster.render
        state.cluster = cluster
        state.inference.stats = _MergedStatistics(cluster)
        lifespan = getattr(state, "lifespan", None)
        if ctx.index != 0 and lifespan is not None and lifespan.hook is not None:
            lifespan.hook = _first_worker_says(lifespan.hook)
        if cluster.own_repository:  # load and unload reach every worker
            state.repository.load = lambda model: cluster.repository("load", model)
            state.repository.unload = lambda model: cluster.repository("unload", model)
    try:
        serve(sock, lambda host, port: ctx.notify(f"http {ctx.index}"),
              lambda host, port: ctx.notify(f"grpc {ctx.index} {host} {port}"))
    finally:
        if cluster is not None:
            cluster.stop()
