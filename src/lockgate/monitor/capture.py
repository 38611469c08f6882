"""Live capture: the last rows each served version saw, for drift checks, in bounded memory.

A :class:`Capture` keeps, per tensor, a ring of its last ``window`` rows (image-like and wide
tensors as their per-row feature summary) and, per request, a ring of the last ``window``
latencies and outcomes; features are named and split only when a monitor reads. Every row and
every request gets a sequence number, so a reader asks for what arrived after its cursor
(``since``) and several readers never interfere. Recording queues the request's arrays (on the
worker thread that ran the model; with dynamic batching, once the batch answered) and writes
them to the rings in batches, so a request costs about a microsecond.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lockgate.monitor.features import MAX_COLUMNS, columns

__all__ = ["DEFAULT_WINDOW", "Capture", "RequestLog"]

log = logging.getLogger("lockgate.serve")

DEFAULT_WINDOW = 5000


class _Ring:
    """The last ``size`` rows of one tensor: as sent (rank 1 and narrow rank 2), or as its
    per-row feature summary (image-like and wide tensors), written with one slice assignment
    per request; features are named and split only when a monitor reads."""

    def __init__(self, size: int, sample: NDArray[Any], first_row: int, output: bool,
                 names: list[str] | None, kinds: list[str] | None) -> None:
        self.output, self.names, self.kinds = output, names, kinds
        self.first_row = first_row
        self.rank1 = sample.ndim == 1
        width = 1 if self.rank1 else sample.shape[1]
        self.values: NDArray[Any] = np.zeros((size, width), dtype=sample.dtype)

    def fits(self, mat: NDArray[Any]) -> bool:
        return mat.shape[1] == self.values.shape[1] and mat.dtype == self.values.dtype

    def write(self, start: int, mat: NDArray[Any]) -> None:
        size = self.values.shape[0]
        n = mat.shape[0]
        if n >= size:
            mat, start, n = mat[n - size:], start + n - size, size
        pos = start % size
        head = min(n, size - pos)
        self.values[pos:pos + head] = mat[:head]
        if head < n:
            self.values[: n - head] = mat[head:]

    def features(self, first: int, last: int) -> dict[str, tuple[str, NDArray[Any]]]:
        lo = max(first, self.first_row)
        if lo >= last:
            return {}
        size = self.values.shape[0]
        mat = self.values[np.arange(lo, last) % size]
        if self.names is not None and self.kinds is not None:
            return {n: (k, mat[:, i]) for i, (n, k) in enumerate(zip(self.names, self.kinds,
                                                                     strict=True))}
        return {}


def _prepare(name: str, arr: NDArray[Any], output: bool
             ) -> tuple[NDArray[Any], list[str] | None, list[str] | None]:
    """The matrix to keep per row, and the feature names and kinds when it is a summary."""
    if arr.ndim == 1:
        return arr.reshape(-1, 1), None, None
    if arr.ndim == 2 and arr.shape[1] <= MAX_COLUMNS:
        return arr, None, None
    cols = columns({name: arr}) if not output else columns({}, {name: arr})
    if not cols:
        return np.empty((arr.shape[0], 0)), [], []
    names = list(cols)
    return (np.column_stack([v for _, v in cols.values()]), names,
            [k for k, _ in cols.values()])


class Capture:
    """Rolling rows and request outcomes of one served version."""

    def __init__(self, window: int = DEFAULT_WINDOW, *, flush_every: int = 128) -> None:
        self.window = window
        self.flush_every = flush_every
        self._lock = threading.Lock()
        self._rings: dict[str, _Ring] = {}
        self._pending: deque[tuple[Mapping[str, Any], Mapping[str, Any]]] = deque()
        self._rows = 0
        self.requests = 0
        self._latency = np.zeros(window)
        self._outcome = np.zeros(window, dtype=np.uint8)  # 0 ok, 1 client error, 2 server

    @property
    def rows(self) -> int:
        """Rows recorded since start (the row cursor)."""
        self.flush()
        return self._rows

    def record(self, inputs: Mapping[str, NDArray[Any]],
               outputs: Mapping[str, NDArray[Any]]) -> None:
        """Keep a request's rows. The arrays are queued (a deque append) and written to the
        rings ``flush_every`` requests at a time, concatenated: the per-request cost stays a
        few microseconds. The caller must not change the arrays afterwards."""
        self._pending.append((inputs, outputs))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write every queued request to the rings."""
        with self._lock:
            count = len(self._pending)
            if not count:
                return
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                joined = ({k: np.concatenate([np.asarray(b[0][k]) for b in batch])
                           for k in batch[0][0]},
                          {k: np.concatenate([np.asarray(b[1][k]) for b in batch])
                           for k in batch[0][1]})
            except (ValueError, KeyError):  # shapes or names differ: one request at a time
                for inputs, outputs in batch:
                    self._write(inputs, outputs)
                return
            self._write(*joined)

    def _write(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        prepared = []
        n = -1
        for output, tensors in ((False, inputs), (True, outputs)):
            for name, value in tensors.items():
                arr = np.asarray(value)
                if arr.ndim == 0 or (n >= 0 and arr.shape[0] != n):
                    continue
                n = arr.shape[0]
                prepared.append((name, output, arr, *_prepare(name, arr, output)))
        if n <= 0:
            return
        start = self._rows
        for name, output, arr, mat, names, kinds in prepared:
            ring = self._rings.get(name)
            if ring is None or not ring.fits(mat):  # new, or its width changed
                ring = self._rings[name] = _Ring(self.window, mat if names is not None
                                                 else arr, start, output, names, kinds)
            ring.write(start, mat)
        self._rows += n

    def record_request(self, seconds: float, status: int) -> None:
        """One answered request and its HTTP status: a 5xx is the version's own failure, a
        4xx the client's (counted apart: a client cannot fail a version on purpose).
        Called from one thread only (the server's event loop), so it takes no lock: the
        event loop must never wait for a worker thread holding one."""
        i = self.requests % self.window
        self._latency[i] = seconds
        self._outcome[i] = 2 if status >= 500 else 1 if status >= 400 else 0
        self.requests += 1

    def _features(self, first: int, last: int) -> dict[str, tuple[str, NDArray[Any]]]:
        out: dict[str, tuple[str, NDArray[Any]]] = {}
        for name, ring in self._rings.items():
            if ring.names is not None:
                out.update(ring.features(first, last))
                continue
            lo = max(first, ring.first_row)
            if lo >= last:
                continue
            mat = ring.values[np.arange(lo, last) % ring.values.shape[0]]
            arr = mat[:, 0] if ring.rank1 else mat
            out.update(columns({}, {name: arr}) if ring.output else columns({name: arr}))
        return out

    def snapshot(self, since_rows: int = 0, since_requests: int = 0) -> dict[str, Any]:
        """Rows and requests after the cursors (at most the last ``window`` of each), and the
        new cursors. A cursor past the end (the server restarted) reads from the start."""
        self.flush()
        with self._lock:
            rows, requests, size = self._rows, self.requests, self.window
            if since_rows > rows:
                since_rows = 0
            if since_requests > requests:
                since_requests = 0
            first = max(since_rows, rows - size)
            cols = self._features(first, rows)
            rfirst = max(since_requests, requests - size)
            ridx = np.arange(rfirst, requests) % size
            lat = self._latency[ridx]
            outcome = self._outcome[ridx]
        features = {name: {"kind": kind, "values": _plain(values)}
                    for name, (kind, values) in cols.items()}
        return {"rows": {"from": first, "to": rows, "features": features},
                "requests": {"from": rfirst, "to": requests, "count": int(lat.size),
                             "errors": int((outcome == 2).sum()),
                             "client_errors": int((outcome == 1).sum()),
                             "latencies": [float(x) for x in lat]}}


def _plain(values: NDArray[Any]) -> list[Any]:
    """JSON-ready values: floats (None for NaN and infinities) or strings."""
    if values.dtype.kind in "fiub":
        floats = values.astype(np.float64, copy=False)
        out: list[Any] = floats.tolist()
        for i in np.flatnonzero(~np.isfinite(floats)):
            out[i] = None
        return out
    return [None if x is None else str(x) for x in values]


class RequestLog:
    """Sampled request logs: a share ``rate`` of requests, with inputs and outputs, appended to
    ``requests.jsonl`` in ``folder`` or, with ``format="parquet"``, written in parquet files of
    ``batch`` rows (pyarrow needed). Write failures are logged, never raised."""

    def __init__(self, folder: Path, rate: float, fmt: str = "jsonl", batch: int = 1000) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError("the request log rate must be in (0, 1]")
        if fmt not in ("jsonl", "parquet"):
            raise ValueError("the request log format is jsonl or parquet")
        if fmt == "parquet":
            import pyarrow  # noqa: F401  (fail at start, not at the first sampled request)
        self.folder, self.rate, self.fmt, self.batch = folder, rate, fmt, batch
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._random = random.Random()
        self.written = 0

    def offer(self, model: str, version: str, inputs: Mapping[str, NDArray[Any]],
              outputs: Mapping[str, NDArray[Any]]) -> None:
        if self._random.random() >= self.rate:
            return
        row = {"id": uuid.uuid4().hex, "time": time.time(), "model": model, "version": version,
               "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()},
               "outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}}
        try:
            with self._lock:
                if self.fmt == "jsonl":
                    with (self.folder / "requests.jsonl").open("a", encoding="utf-8") as f:
                        f.write(json.dumps(row, default=str) + "\n")
                    self.written += 1
                else:
                    self._buffer.append(row)
                    if len(self._buffer) >= self.batch:
                        self._flush()
        except (OSError, TypeError, ValueError) as exc:
            log.warning("request log write failed: %s", exc)

    def _flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self._buffer = self._buffer, []
        table = pa.table({
            "id": [r["id"] for r in rows], "time": [r["time"] for r in rows],
            "model": [r["model"] for r in rows], "version": [r["version"] for r in rows],
            "inputs": [json.dumps(r["inputs"]) for r in rows],
            "outputs": [json.dumps(r["outputs"]) for r in rows]})
        name = f"requests-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        pq.write_table(table, self.folder / name)
        self.written += len(rows)

    def close(self) -> None:
        try:
            with self._lock:
                if self.fmt == "parquet":
                    self._flush()
        except OSError as exc:
            log.warning("request log write failed: %s", exc)
