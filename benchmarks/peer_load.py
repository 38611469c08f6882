"""Load for ``peers.py``: a probe that checks the answer, then wrk (or, without wrk, the
project's asyncio client) at a given number of connections.

wrk runs with one thread and ``benchmarks/wrk_post.lua``, which POSTs the server's body and
prints one JSON line (requests/s, latency percentiles in microseconds, socket errors and
non-2xx answers). The asyncio client of ``serve_overhead.py`` is a fallback only: in Python
it saturates before the faster servers do, so its figures cap them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serve_overhead import drive, run_async

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_post.lua"
WRK = shutil.which("wrk")


@dataclass(frozen=True)
class Load:
    """One load phase against one server."""

    connections: int
    requests: int
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    errors: int  # socket errors and non-2xx answers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(url: str, body: bytes, headers: dict[str, str], limit_s: float
          ) -> tuple[int, Any]:
    """POST until the server answers 200 (it may still be starting) or limit_s passes;
    returns the last status (0: no connection) and the decoded answer."""
    deadline = time.monotonic() + limit_s
    status, doc = 0, None
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            status, doc = exc.code, exc.read()[:300]
        except (OSError, ValueError):
            status = 0
        time.sleep(0.5)
    return status, doc


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5)


def wrk(url: str, body_file: Path, connections: int, seconds: float,
        authorization: str = "") -> Load:
    """One wrk run (one thread) with the Lua script; raises RuntimeError without a result."""
    assert WRK is not None
    env = {**os.environ, "BODY_FILE": str(body_file), "AUTHORIZATION": authorization}
    done = subprocess.run([WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                           "--timeout", "10s", "-s", str(LUA), url],
                          env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {(done.stdout + done.stderr)[-300:]}")
    r = json.loads(line.removeprefix("RESULT_JSON "))
    errors = sum(int(r[k]) for k in ("err_connect", "err_read", "err_write", "err_status",
                                     "err_timeout"))
    return Load(connections, int(r["requests"]), float(r["rps"]), float(r["p50_us"]),
                float(r["p90_us"]), float(r["p99_us"]), errors)


def asyncio_client(port: int, path: str, body: bytes, connections: int, seconds: float,
                   authorization: str = "") -> Load:
    """The fallback: serve_overhead's bounded asyncio client, one keep-alive connection per
    client (it stops at the first non-200 answer)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n")
    if authorization:
        head += f"Authorization: {authorization}\r\n"
    raw = head.encode() + b"\r\n" + body
    phase = run_async(drive(port, raw, connections, seconds, f"{path}, {connections}"))
    return Load(connections, phase.requests, phase.rate, 1000 * phase.pct(50),
                1000 * phase.pct(90), 1000 * phase.pct(99), 0)


def load(port: int, path: str, body_file: Path, connections: int, seconds: float,
         authorization: str = "") -> Load:
    if WRK is not None:
        return wrk(f"http://127.0.0.1:{port}{path}", body_file, connections, seconds,
                   authorization)
    return asyncio_client(port, path, body_file.read_bytes(), connections, seconds,
                          authorization)
