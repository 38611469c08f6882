"""Validating a version the way production would run it: a child ``lockgate serve`` process,
the recorded sample requests over OIP, and a latency measurement.

    with ChildServer(home, "clf@3", max_loading_time_s=60, providers=cuda_set) as server:
        tol = provider_tolerance(settings, cuda_set)
        mismatches = check_samples(server.base_url, "clf", samples, atol=tol.atol,
                                   rtol=tol.rtol)
        stats = measure_latency(server.base_url, "clf", body, concurrency=4, requests=200)

The child is the production code path: it verifies the version's signature, loads it into ONNX
Runtime on the execution providers asked for (``lockgate serve --providers``) and answers over
HTTP exactly as ``lockgate serve`` does in production.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lockgate.config.providers import ProviderSet
from lockgate.config.settings import Settings
from lockgate.config.tolerances import Tolerance, tolerance_for
from lockgate.errors import ServeError

__all__ = ["ChildServer", "LatencyStats", "check_samples", "compare_recorded", "measure_latency",
           "provider_tolerance", "sample_document", "sample_feeds"]

_BANNER = re.compile(r"serving .* on (http://[^\s/]+)/v2")


def provider_tolerance(settings: Settings, providers: ProviderSet) -> Tolerance:
    """The tolerances answers computed on ``providers`` are held to (see
    :mod:`lockgate.config.tolerances`)."""
    return tolerance_for(providers, atol=settings.parity_atol, rtol=settings.parity_rtol,
                         table=settings.provider_tolerances)


class ChildServer:
    """``python -m lockgate serve REF --port 0`` for the home, started and stopped; with
    ``providers``, on that execution provider set (``--providers``, ``--provider-fallback``)."""

    def __init__(self, home: Path, ref: str, *, max_loading_time_s: float,
                 env: Mapping[str, str] | None = None,
                 providers: ProviderSet | None = None) -> None:
        self.home, self.ref, self.max_loading_time_s = home, ref, max_loading_time_s
        # The child measures a set the version is not yet validated on: a refusing drift
        # policy would refuse exactly what the gate is there to prove; the gate judges the
        # answers (and the child still audits the difference as a warning).
        self.env = {**(env if env is not None else os.environ), "ORT_DISABLE_TELEMETRY": "1",
                    **({"LOCKGATE_ENVIRONMENT_DRIFT": "warn"}
                       if providers is not None and not providers.is_cpu_only else {})}
        self.providers = providers
        self.base_url = ""
        self.load_seconds = 0.0
        self.providers_used: list[str] = []
        """What the child's session uses, as its model metadata says (empty when unsaid)."""
        self.fell_back = False
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._log: list[str] = []

    def start(self) -> ChildServer:
        started = time.monotonic()
        on = ([] if self.providers is None else
              ["--providers", str(self.providers), "--provider-fallback",
               self.providers.fallback])
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "lockgate", "--home", str(self.home), "serve", self.ref,
             "--port", "0", "--workers", "1", *on],  # one process: what is measured loads once
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=self.env)
        banner: list[str] = []
        reader = threading.Thread(target=self._read_stderr, args=(banner,), daemon=True)
        reader.start()
        self._reader = reader
        deadline = started + self.max_loading_time_s
        model = self.ref.split("@")[0]
        while True:
            if banner and not self.base_url:
                self.base_url = banner[0]
            if self.base_url:
                state = self._state(model)
                if state == "ready":
                    break
                if state == "failed":
                    raise ServeError(f"{self.ref} failed to load in the validation server: "
                                     f"{self._reason(model)}")
            if self._proc.poll() is not None:
                raise ServeError(f"the validation server exited ({self._proc.returncode}): "
                                 + " ".join(self._log[-3:]).strip())
            if time.monotonic() > deadline:
                raise ServeError(f"{self.ref} did not load within {self.max_loading_time_s:g} s")
            time.sleep(0.05)
        self.load_seconds = time.monotonic() - started
        self._read_placement(model)
        return self

    def _read_placement(self, model: str) -> None:
        """The providers the child's session uses, from its model metadata
        (``parameters.lockgate_providers``)."""
        try:
            _, body = request(self.base_url, "GET", f"/v2/models/{model}", None, 5)
        except OSError:
            return
        params = body.get("parameters") if isinstance(body, dict) else None
        placed = params.get("lockgate_providers") if isinstance(params, dict) else None
        if isinstance(placed, dict):
            self.providers_used = [str(p) for p in placed.get("used") or []]
            self.fell_back = bool(placed.get("fell_back"))

    def _read_stderr(self, banner: list[str]) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._log.append(line)
            if not banner and (m := _BANNER.search(line)):
                banner.append(m.group(1))

    def _state(self, model: str) -> str:
        try:
            _status, body = request(self.base_url, "GET", f"/v2/models/{model}/ready", None, 5)
        except OSError:
            return "starting"
        return str(body.get("state", "starting")) if isinstance(body, dict) else "starting"

    def _reason(self, model: str) -> str:
        try:
            _, body = request(self.base_url, "GET", f"/v2/models/{model}/ready", None, 5)
        except OSError as exc:
            return str(exc)
        return str(body.get("error", "")) if isinstance(body, dict) else ""

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        self._proc = None

    def __enter__(self) -> ChildServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def request(base_url: str, method: str, path: str, body: Any, timeout: float,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, Any]:
    """One JSON request; the status and the decoded body."""
    own = conn is None
    if conn is None:
        parts = urllib.parse.urlsplit(base_url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                          timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        if own:
            conn.close()


# -- samples ---------------------------------------------------------------------------------
def sample_document(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                    max_rows: int = 16) -> dict[str, Any]:
    """The recorded sample: an OIP request body and the outputs ONNX Runtime gave for it at
    registration (at most ``max_rows`` rows of the batch). JSON has no NaN or infinity, so rows
    with a non-finite float (a missing value in a tabular sample) are left out while others
    remain."""
    rows = _finite_rows([*inputs.values(), *outputs.values()], max_rows)

    def tensor(name: str, arr: np.ndarray) -> dict[str, Any]:
        arr = np.asarray(arr)
        if rows is not None and arr.ndim and arr.shape[0] == rows.batch:
            arr = arr[rows.index]
        elif arr.ndim and arr.shape[0] > max_rows:
            arr = arr[:max_rows]
        from lockgate.serve.oip import oip_datatype

        flat = arr.ravel().tolist()
        if arr.dtype.kind in "OSU":
            flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                    for x in flat]
        return {"name": name, "datatype": oip_datatype(arr.dtype), "shape": list(arr.shape),
                "data": flat}

    return {"request": {"inputs": [tensor(n, a) for n, a in inputs.items()]},
            "outputs": [tensor(n, a) for n, a in outputs.items()]}


@dataclass(frozen=True)
class _Rows:
    batch: int
    index: np.ndarray


def _finite_rows(arrays: list[np.ndarray], max_rows: int) -> _Rows | None:
    """The first ``max_rows`` rows where every float array sharing the batch size is finite;
    None when every value is finite or no row is (nothing better to choose)."""
    arrays = [np.asarray(a) for a in arrays]
    batched = [a for a in arrays if a.ndim]
    if not batched:
        return None
    batch = int(batched[0].shape[0])
    floats = [a for a in batched if a.dtype.kind in "fc" and a.shape[0] == batch]
    if not floats or all(np.isfinite(a).all() for a in floats):
        return None
    ok = np.ones(batch, dtype=bool)
    for a in floats:
        ok &= np.isfinite(a.reshape(batch, -1)).all(axis=1)
    index = np.flatnonzero(ok)[:max_rows]
    return _Rows(batch, index) if index.size else None


def sample_feeds(samples: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The recorded request's inputs as arrays."""
    from lockgate.serve.oip import numpy_dtype

    return {t["name"]: np.asarray(t["data"], dtype=numpy_dtype(t["datatype"])).reshape(
        t["shape"]) for t in samples["request"]["inputs"]}


def compare_recorded(outputs: Mapping[str, Any], samples: Mapping[str, Any], *, atol: float,
                     rtol: float) -> list[str]:
    """What in ``outputs`` (arrays, by name) differs from the outputs recorded with the
    sample: floats within ``atol``/``rtol``, everything else exactly."""
    problems = []
    for want in samples["outputs"]:
        name = want["name"]
        if name not in outputs:
            problems.append(f"output {name!r} missing")
            continue
        a = np.asarray(outputs[name])
        b = np.asarray(want["data"]).reshape(want["shape"])
        if list(a.shape) != list(b.shape):
            problems.append(f"output {name!r}: shape {list(a.shape)} != {list(b.shape)}")
        elif a.dtype.kind in "fc" or b.dtype.kind in "fc":
            a, b = a.astype(np.float64), b.astype(np.float64)
            if not np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True):
                worst = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
                problems.append(f"output {name!r}: max abs error {worst:.3g} over "
                                f"atol {atol:g} / rtol {rtol:g}")
        elif not np.array_equal(a.astype(str) if b.dtype.kind in "OUS" else a, b):
            problems.append(f"output {name!r}: values differ")
    return problems


def check_samples(base_url: str, model: str, samples: Mapping[str, Any], *, atol: float,
                  rtol: float, timeout: float) -> list[str]:
    """Send the recorded request over OIP; return what differs from the recorded outputs."""
    status, body = request(base_url, "POST", f"/v2/models/{model}/infer", samples["request"],
                           timeout)
    if status != 200:
        return [f"the server answered {status}: {body.get('error') if body else ''}"]
    got = {o["name"]: np.asarray(o["data"]).reshape(o["shape"])
           for o in body.get("outputs", [])}
    return compare_recorded(got, samples, atol=atol, rtol=rtol)


def batch_request(samples: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """The recorded request re-shaped to ``batch_size`` rows (rows repeat as needed)."""
    inputs = []
    for t in samples["request"]["inputs"]:
        shape = list(t["shape"])
        if not shape or shape[0] == 0:
            inputs.append(t)
            continue
        row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        rows = [t["data"][i * row:(i + 1) * row] for i in range(shape[0])]
        data = [x for i in range(batch_size) for x in rows[i % len(rows)]]
        inputs.append({**t, "shape": [batch_size, *shape[1:]], "data": data})
    return {"inputs": inputs}


# -- latency ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyStats:
    requests: int
    errors: int
    concurrency: int
    batch_size: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "concurrency": self.concurrency, "batch_size": self.batch_size,
                "seconds": round(self.seconds, 4), "p50_ms": round(self.p50_ms, 3),
                "p95_ms": round(self.p95_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "throughput_rps": round(self.throughput_rps, 2)}


def measure_latency(base_url: str, model: str, body: Mapping[str, Any], *, concurrency: int,
                    requests: int, warmup: int, batch_size: int,
                    timeout: float) -> LatencyStats:
    """``requests`` requests from ``concurrency`` keep-alive clients, after ``warmup``."""
    path = f"/v2/models/{model}/infer"
    payload = dict(body)
    parts = urllib.parse.urlsplit(base_url)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))
    ready = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                          timeout=timeout)
        try:
            try:
                for _ in range(max(1, warmup // max(1, concurrency))):
                    request(base_url, "POST", path, payload, timeout, conn)
            finally:
                ready.wait()
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    status, _ = request(base_url, "POST", path, payload, timeout, conn)
                except OSError:
                    status = 0
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if status != 200:
                        errors[0] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()  # every client warmed up
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t_start
    ms = np.asarray(latencies, dtype=np.float64) * 1000.0 if latencies else np.zeros(1)
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return LatencyStats(len(latencies), errors[0], concurrency, batch_size, seconds, p50, p95,
                        p99)

