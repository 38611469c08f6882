"""Several worker processes behind one port: ``lockgate serve --workers N``.

The supervisor binds the HTTP socket itself (so ``--port 0`` is resolved once, before any
worker starts), then starts N workers as fresh ``lockgate serve`` processes that inherit the
listening socket: the kernel hands each new connection to whichever worker accepts it first,
and a worker that stops closes only its own copy, so the port keeps answering as long as one
worker runs. Each worker is a whole server (its own app, controller following the store, ONNX
Runtime sessions); nothing is forked from a process that holds database connections or
runtime threads.

The supervisor prints the banner once (when the first worker listens), restarts a worker
that dies, and on SIGTERM or SIGINT stops the workers one at a time (each finishes its
requests in progress before the next is asked to stop), then re-raises the signal as a single
server does: SIGINT surfaces as KeyboardInterrupt, SIGTERM ends the process.

gRPC, when asked for, is served by the first worker only (restarted on the same port if it
dies, and stopped last).

A worker learns its part from the ``LOCKGATE_SERVE_WORKER_OF`` environment variable
(:func:`worker_context`); ``/metrics`` and the capture window are merged across workers by
:mod:`lockgate.serve.cluster`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lockgate.errors import InvalidInputError, ServeError

__all__ = ["WORKER_ENV", "Supervisor", "WorkerContext", "cgroup_cpu_limit", "default_workers",
           "worker_context"]

WORKER_ENV = "LOCKGATE_SERVE_WORKER_OF"
_STOP_TIMEOUT_S = 45.0  # a worker's own shutdown allows 30 s for requests in progress
_RESTART_LIMIT = 5  # workers that die before listening, in a row, before giving up


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a worker process inherits from its supervisor."""

    index: int
    workers: int
    http_fd: int
    ready_fd: int
    cluster_dir: str
    instance: str
    grpc_port: int | None = None

    def notify(self, line: str) -> None:
        """Tell the supervisor something (one short line: atomic on a pipe)."""
        with contextlib.suppress(OSError):  # the supervisor is gone: the worker notices
            os.write(self.ready_fd, (line + "\n").encode())


def worker_context(environ: dict[str, str] | None = None) -> WorkerContext | None:
    """This process's part when a supervisor started it, else None."""
    raw = (os.environ if environ is None else environ).get(WORKER_ENV)
    if not raw:
        return None
    try:
        return WorkerContext(**json.loads(raw))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{WORKER_ENV} is malformed: {exc}",
                                hint="it is set by `lockgate serve --workers`; unset it") from None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this container in cores (cgroup v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None when there is none or it is unreadable."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError, ZeroDivisionError):
        pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu", "."):
        try:
            quota_us = int((root / folder / "cpu.cfs_quota_us").read_text())
            period_us = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def default_workers(root: Path = Path("/sys/fs/cgroup"), cpus: int | None = None) -> int:
    """One worker per core this process may use: its CPU affinity (``cpus`` overrides it),
    bounded by the cgroup CPU quota rounded down; at least 1."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, int(limit))
    return max(1, cpus)


def _listen(host: str, port: int) -> socket.socket:
    """The shared listening socket, bound and listening before any worker starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="pick another --port, or 0 for any free one") from None
    sock.set_inheritable(True)
    return sock


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started_at: float
    listening: bool = False


class Supervisor:
    """Runs ``command`` (a ``lockgate serve`` command line) as ``workers`` processes on one
    HTTP socket bound to ``host:port``; see the module docstring. ``on_started(host, port)``
    and ``on_grpc_started(host, port)`` print the banners, once."""

    def __init__(self, command: Sequence[str], workers: int, host: str, port: int, *,
                 grpc_port: int | None = None,
                 on_started: Callable[[str, int], None] | None = None,
                 on_grpc_started: Callable[[str, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if workers < 2:
            raise InvalidInputError(f"a supervisor runs at least 2 workers, not {workers}",
                                    hint="--workers 1 serves in this process")
        self.command = list(command)
        self.workers = workers
        self.host, self.port, self.grpc_port = host, port, grpc_port
        self.on_started, self.on_grpc_started = on_started, on_grpc_started
        self.log = log or logging.getLogger("lockgate.serve").warning
        self.instance = uuid.uuid4().hex
        self._running: dict[int, _Worker] = {}
        self._signal: int | None = None
        self._announced = False
        self._grpc_address: tuple[str, int] | None = None
        self._early_deaths = 0
        self._buffer = b""

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM; blocks (see the module docstring)."""
        sock = _listen(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        ready_r, ready_w = os.pipe()
        cluster = tempfile.mkdtemp(prefix="lockgate-serve-")
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self.workers):
                self._spawn(index, sock, ready_w, cluster)
            while self._signal is None:
                self._watch(ready_r, sock, ready_w, cluster)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
            os.close(ready_r)
            os.close(ready_w)
            shutil.rmtree(cluster, ignore_errors=True)
        if self._signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self._signal is not None:
            signal.raise_signal(self._signal)

    def _on_signal(self, sig: int, frame: object) -> None:
        self._signal = self._signal or sig

    def _spawn(self, index: int, sock: socket.socket, ready_w: int, cluster: str) -> None:
        ctx = WorkerContext(index=index, workers=self.workers, http_fd=sock.fileno(),
                            ready_fd=ready_w, cluster_dir=cluster, instance=self.instance,
                            grpc_port=self._worker_grpc_port(index))
        env = {**os.environ, WORKER_ENV: json.dumps(asdict(ctx))}
        # its own process group: Ctrl-C reaches the supervisor, which stops workers in turn
        proc = subprocess.Popen(self.command, pass_fds=(sock.fileno(), ready_w), env=env,
                                process_group=0)
        self._running[index] = _Worker(index, proc, time.monotonic())

    def _worker_grpc_port(self, index: int) -> int | None:
        if index != 0 or self.grpc_port is None:
            return None
        return self._grpc_address[1] if self._grpc_address else self.grpc_port

    def _watch(self, ready_r: int, sock: socket.socket, ready_w: int, cluster: str) -> None:
        """One turn: read what workers said, replace any that died."""
        try:
            readable, _, _ = select.select([ready_r], [], [], 0.2)
        except InterruptedError:
            return
        if readable:
            self._buffer += os.read(ready_r, 4096)
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                self._heard(line.decode(errors="replace").split())
        for index, worker in list(self._running.items()):
            code = worker.proc.poll()
            if code is None or self._signal is not None:
                continue
            if not worker.listening:
                self._early_deaths += 1
                if not self._announced or self._early_deaths >= _RESTART_LIMIT:
                    raise ServeError(f"worker {index} exited with status {code} before it "
                                     "listened", hint="its error is printed above")
            self.log(f"worker {index} (pid {worker.proc.pid}) exited with status {code}; "
                     "starting another")
            self._spawn(index, sock, ready_w, cluster)

    def _heard(self, words: list[str]) -> None:
        if len(words) >= 2 and words[0] == "http":
            worker = self._running.get(int(words[1]))
            if worker is not None:
                worker.listening = True
                self._early_deaths = 0
        elif len(words) == 4 and words[0] == "grpc":
            first = self._grpc_address is None
            self._grpc_address = (words[2], int(words[3]))
            if first and self.on_grpc_started is not None:
                self.on_grpc_started(*self._grpc_address)
        if self._announced or not any(w.listening for w in self._running.values()):
            return
        if self.grpc_port is not None and self._grpc_address is None:
            return  # the gRPC banner comes first, as from a single server
        self._announced = True
        if self.on_started is not None:
            self.on_started(str(self.host), self.port)

    def _stop_all(self) -> None:
        """Stop the workers one at a time, the gRPC one (worker 0) last."""
        for index in sorted(self._running, reverse=True):
            proc = self._running[index].proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._running.clear()
