"""A real `lockgate serve` process on 127.0.0.1 for end-to-end tests, and small HTTP helpers."""

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def started_server(home: Path, *args: str) -> Iterator[int]:
    """`lockgate serve --port 0 --poll 0.1 ARGS`; yields its port as soon as it listens,
    ready or not."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "--port", "0",
         "--poll", "0.1", *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        port = None
        lines = []
        while port is None:
            line = proc.stderr.readline()
            lines.append(line)
            assert line, f"server exited: {''.join(lines)}"
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v2", line):
                port = int(m.group(1))
        threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                         daemon=True).start()
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


@contextmanager
def lockgate_server(home: Path, *args: str) -> Iterator[tuple[str, int]]:
    """Start `lockgate serve --port 0 --poll 0.1 ARGS` and yield its address once ready."""
    with started_server(home, *args) as port:
        deadline = time.monotonic() + 60
        while http_get(port, "/v2/health/ready")[0] != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.05)
        yield "127.0.0.1", port


def http_get(port: int, path: str) -> tuple[int, Any]:
    """GET a JSON document; (0, {}) when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body or b"{}")
        except ValueError:
            return r.status, body.decode()
    except OSError:
        return 0, {}
    finally:
        conn.close()


def http_post(conn: http.client.HTTPConnection, path: str, doc: Any) -> tuple[int, Any]:
    conn.request("POST", path, body=json.dumps(doc).encode(),
                 headers={"content-type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())
