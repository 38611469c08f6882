"""Live capture: the last rows each served version saw, for drift checks, in bounded memory.

A :class:`Capture` keeps, per feature, a ring of the last ``window`` row values and, per
request, a ring of the last ``window`` latencies and outcomes. Every row and every request gets
a sequence number, so a reader asks for what arrived after its cursor (``since``) and several
readers never interfere. Recording costs O(rows x features) per request, on the worker thread
that ran the model (with dynamic batching, once the batch answered).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lockgate.observe.features import columns

__all__ = ["DEFAULT_WINDOW", "Capture", "RequestLog"]

log = logging.getLogger("lockgate.serve")

DEFAULT_WINDOW = 5000


class _Ring:
    def __init__(self, size: int, kind: str, numeric: bool) -> None:
        self.kind = kind
        self.values: NDArray[Any] = (np.full(size, np.nan) if numeric
                                     else np.empty(size, dtype=object))


class Capture:
    """Rolling rows and request outcomes of one served version."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._rings: dict[str, _Ring] = {}
        self.rows = 0
        """Rows recorded since start (the row cursor)."""
        self.requests = 0
        self._latency = np.zeros(window)
        self._ok = np.ones(window, dtype=bool)

    def record(self, inputs: Mapping[str, NDArray[Any]],
               outputs: Mapping[str, NDArray[Any]]) -> None:
        cols = columns(inputs, outputs)
        if not cols:
            return
        n = min(len(v) for _, v in cols.values())
        if n == 0:
            return
        size = self.window
        take = min(n, size)
        with self._lock:
            start = self.rows + n - take
            idx = (np.arange(start, start + take)) % size
            for name, (kind, values) in cols.items():
                ring = self._rings.get(name)
                if ring is None:
                    ring = self._rings[name] = _Ring(size, kind, values.dtype != object)
                ring.values[idx] = values[n - take:]
            self.rows += n

    def record_request(self, seconds: float, ok: bool) -> None:
        with self._lock:
            i = self.requests % self.window
            self._latency[i] = seconds
            self._ok[i] = ok
            self.requests += 1

    def snapshot(self, since_rows: int = 0, since_requests: int = 0) -> dict[str, Any]:
        """Rows and requests after the cursors (at most the last ``window`` of each), and the
        new cursors. A cursor past the end (the server restarted) reads from the start."""
        with self._lock:
            rows, requests, size = self.rows, self.requests, self.window
            if since_rows > rows:
                since_rows = 0
            if since_requests > requests:
                since_requests = 0
            first = max(since_rows, rows - size)
            idx = np.arange(first, rows) % size
            features = {name: {"kind": r.kind,
                               "values": [_plain(x) for x in r.values[idx]]}
                        for name, r in self._rings.items()}
            rfirst = max(since_requests, requests - size)
            ridx = np.arange(rfirst, requests) % size
            lat = self._latency[ridx]
            ok = self._ok[ridx]
        return {"rows": {"from": first, "to": rows, "features": features},
                "requests": {"from": rfirst, "to": requests, "count": int(lat.size),
                             "errors": int((~ok).sum()),
                             "latencies": [float(x) for x in lat]}}


def _plain(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if np.isfinite(f) else None
    return None if x is None else str(x)


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
