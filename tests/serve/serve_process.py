"""Small JSON helpers for the statistics, repository and batch-priority tests (the server
they start is tests/servers.py's started_server)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx

POLICY = '[gates]\n"*" = ["seeds_recorded"]\n'
ROW = [1.0, 2.0, 3.0, 4.0]


def call(port: int, method: str, path: str, doc: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request; the JSON answer (None for an empty body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = None if doc is None else json.dumps(doc).encode()
        conn.request(method, path, body=body,
                     headers={"content-type": "application/json", **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def infer_doc(rows: int = 1, **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [{"name": "input", "shape": [rows, 4],
                                       "datatype": "FP32", "data": ROW * rows}]}
    if parameters:
        doc["parameters"] = parameters
    return doc


def wait_until(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def register(home: Path, tmp: Path, name: str = "m", versions: int = 1) -> None:
    """``versions`` versions of a linear model under ``name``, none promoted."""
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        for seed in range(versions):
            path = tmp / f"{name}{seed}.onnx"
            onnx.save(linear_onnx(seed=seed), path)
            lg.register(str(path), name=name, seed=seed)
