"""A registry API without login (`lockgate server --no-auth`, a real process) against the pages
of other sites a browser on the same machine opens: a request whose Host is not a loopback name
(DNS rebinding) is a 421, reads nothing and changes nothing; a JSON body sent as text/plain (a
`no-cors` fetch) is a 415; a request the browser marks cross-site is a 403; lockgate's own
client and loopback requests still work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from lockgate.api.facade import Lockgate
from lockgate.registry.client import RemoteRegistry
from onnx_models import linear_onnx
from registry_server import SIGNATURE_ONLY

USER = "ops"


@contextmanager
def _server(home: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update(ORT_DISABLE_TELEMETRY="1", LOCKGATE_USER=USER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "server", "--port", "0",
         "--no-auth"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    try:
        while True:
            line = proc.stdout.readline()
            assert line, "the server exited"
            if m := re.search(r"registry API on (http://127\.0\.0\.1:\d+)/.*no auth", line):
                break
        threading.Thread(target=lambda: [None for _ in proc.stdout],  # type: ignore[union-attr]
                         daemon=True).start()
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()


def _state(home: Path) -> tuple[str, int]:
    with Lockgate.open(home, user=USER) as lg:
        return lg.get("m@1").stage, len(lg.audit_log())


def test_no_auth_registry_refuses_other_sites(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "lockgate.toml").write_text(SIGNATURE_ONLY, encoding="utf-8")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(linear_onnx().SerializeToString())
    with Lockgate.open(home, user=USER) as lg:
        lg.register(str(onnx), name="m", creator="dev")
    promote = "/api/v1/models/m/versions/1/promote"
    with _server(home) as url:
        port = int(url.rsplit(":", 1)[1])
        start = _state(home)
        rebound = {"Host": f"evil.example:{port}"}
        for method, path in (("GET", "/api/v1/whoami"), ("GET", "/api/v1/audit"),
                             ("GET", "/openapi.json"), ("GET", "/api/v1/health"),
                             ("POST", promote), ("POST", "/api/v1/deployments/m/rollback")):
            r = httpx.request(method, url + path, json={"to": "stabilized"}, headers=rebound)
            assert r.status_code == 421, (method, path)
            assert r.json()["type"] == "MisdirectedRequestError"
            assert "events" not in r.text
        # a cross-site `fetch(url, {method: "POST", mode: "no-cors", body: JSON})`
        r = httpx.post(url + promote, content=b'{"to": "stabilized"}',
                       headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert r.status_code == 415
        r = httpx.post(url + promote, json={"to": "stabilized"},
                       headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"})
        assert r.status_code == 403
        assert "other sites' pages" in r.json()["error"]
        stage, rows = _state(home)
        assert (stage, rows) == (start[0], start[1] + 1)  # the cross-site refusal is audited

        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            r = httpx.get(url + "/api/v1/whoami", headers={"Host": host})
            assert r.status_code == 200, host
            assert r.json()["name"] == USER
        with RemoteRegistry(url) as remote:  # lockgate's own client sends application/json
            remote.promote("m@1", "stabilized")
        assert _state(home)[0] == "stabilized"
