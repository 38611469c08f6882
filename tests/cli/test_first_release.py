"""docs/first-release.md, executed: a new home under the default policy, a scikit-learn model
taken from `lockgate init` to production through real CLI processes, every default gate passing
on its own merits and rollback_ready waived only because nothing was in production before.

The vulnerability snapshot is a whole-export-shaped OSV zip served over HTTP on 127.0.0.1; the
approval comes from a second, token-identified person through a real `lockgate server`; a local
`LOCKGATE_USER=<approver>` approval is shown not to count."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lockgate.supplychain.vulns.snapshots import MIN_EXPORT_RECORDS
from registry_server import registry_process

pytestmark = [pytest.mark.slow, pytest.mark.sklearn]

TRAIN = '''
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 7


def data():
    rng = np.random.default_rng(SEED)
    centers = rng.normal(0.0, 2.0, size=(3, 8))
    y = rng.integers(0, 3, size=600)
    x = (centers[y] + rng.normal(size=(600, 8))).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=SEED)


def build():
    x_train, _, y_train, _ = data()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    return model.fit(x_train, y_train), x_train[:4]


def holdout_accuracy():
    model, _ = build()
    _, x_test, _, y_test = data()
    return float(model.score(x_test, y_test))
'''

POLICY = """
[gate.metrics]
accuracy = { threshold = 0.9, greater_is_better = true }
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update({"ORT_DISABLE_TELEMETRY": "1", "LOCKGATE_USER": "alice", "COLUMNS": "200", **extra})
    return env


def _cli(cwd: Path, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "lockgate", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, f"lockgate {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _osv_export(installed: str) -> bytes:
    """A zip shaped as osv.dev's PyPI/all.zip, current, of a whole export's size: records about
    packages that are not installed, and one about an installed one, fixed long ago."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(1, MIN_EXPORT_RECORDS + 2):
            name, fixed = (installed, "0.0.1") if i == 1 else (f"absent-pkg-{i}", None)
            events: list[dict[str, str]] = [{"introduced": "0"}]
            if fixed:
                events.append({"fixed": fixed})
            rec = {"id": f"PYSEC-2099-{i}", "modified": stamp, "summary": f"issue {i}",
                   "affected": [{"package": {"ecosystem": "PyPI", "name": name},
                                 "ranges": [{"type": "ECOSYSTEM", "events": events}]}],
                   "database_specific": {"severity": "HIGH"}}
            z.writestr(f"{rec['id']}.json", json.dumps(rec))
    return buf.getvalue()


@contextmanager
def _osv_site(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/PyPI/all.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/PyPI/all.zip"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@contextmanager
def _registry_server(cwd: Path, home: Path) -> Iterator[str]:
    with registry_process(home, _env(), cwd) as (port, _lines):
        yield f"http://127.0.0.1:{port}"


def _gates(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    doc = json.loads(proc.stdout)
    return {g["gate"]: g for g in doc.get("gates", doc.get("results", []))}


def _lock(cwd: Path) -> Path:
    """The training environment pinned: this interpreter's distributions, one exact version
    each (a hashed lock from uv or pip-tools passes the same gate)."""
    from importlib.metadata import distributions

    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()
                   if d.metadata["Name"] and d.metadata["Name"].lower() != "lockgate"},
                  key=str.lower)
    path = cwd / "requirements.txt"
    path.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return path


def _policy(home: Path) -> None:
    """[roles] and [gate.metrics] added to the file `init` wrote; a decision for each license
    finding in the runtime closure that a person has to take."""
    path = home / "lockgate.toml"
    text = path.read_text(encoding="utf-8")
    assert text.count("\n[roles]\n") == 1
    text = text.replace("\n[roles]\n", '\n[roles]\napprover = ["bob"]\n')
    expires = (date.today() + timedelta(days=180)).isoformat()
    path.write_text(text + POLICY + f"""
[[licenses.decisions]]
package = "cvss"
accept = true
reason = "LGPL-3.0-or-later, used unmodified as a library"
expires = {expires}
by = "bob"
""", encoding="utf-8")


def test_a_first_release_reaches_production_under_the_default_policy(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    home = tmp_path / "home"
    (tmp_path / "train.py").write_text(TRAIN, encoding="utf-8")
    h = ("--home", str(home))

    _cli(tmp_path, *h, "init")
    _policy(home)
    _cli(tmp_path, *h, "policy", "check")

    accuracy = float(subprocess.run(
        [sys.executable, "-c", "import train; print(train.holdout_accuracy())"], cwd=tmp_path,
        env=_env(), capture_output=True, text=True, check=True, timeout=300).stdout)
    assert accuracy >= 0.9
    reg = _cli(tmp_path, *h, "register", "--from", "train:build", "--name", "churn",
               "--seed", "7", "--metric", f"accuracy={accuracy}",
               "--lock-file", str(_lock(tmp_path)))
    assert "registered churn@1" in reg.stdout

    body = _osv_export("numpy")
    with _osv_site(body) as url:
        _cli(tmp_path, *h, "vulndb", "update", "--url", url,
             "--sha256", hashlib.sha256(body).hexdigest())

    rep = _cli(tmp_path, *h, "reproduce", "churn@1", "--env", "current")
    assert "bit-identical" in rep.stdout + rep.stderr
    stab = _gates(_cli(tmp_path, *h, "promote", "churn@1", "--to", "stabilized", "--json"))
    assert list(stab) == ["parity", "pinned_dependencies", "seeds_recorded", "reproducible"]
    assert {g["status"] for g in stab.values()} == {"pass"}

    # bob, an approver in [roles], approving in alice's home: a claim, not an identity
    _cli(tmp_path, *h, "approve", "churn@1", "--stage", "production", "--comment", "looks good",
         LOCKGATE_USER="bob")
    before = _gates(_cli(tmp_path, *h, "gates", "churn@1", "--to", "production", "--json",
                         ok=False))
    refused = {n for n, g in before.items() if g["status"] != "pass"}
    assert refused == {"approval", "rollback_ready"}, {n: before[n]["message"] for n in refused}
    assert before["approval"]["measured"]["approved_by"] == []

    out = _cli(tmp_path, *h, "user", "add", "bob", "--role", "approver")
    (token,) = re.findall(r"lgt_[A-Za-z0-9_-]+", out.stdout + out.stderr)
    with _registry_server(tmp_path, home) as server:
        remote = ("--server", server)
        who = _cli(tmp_path, *remote, "whoami", LOCKGATE_TOKEN=token)
        assert "bob" in who.stdout
        assert "approver" in who.stdout
        _cli(tmp_path, *remote, "approve", "churn@1", "--stage", "production", "--comment",
             f"held-out accuracy {accuracy:.3f} reviewed", LOCKGATE_TOKEN=token)
        _cli(tmp_path, *remote, "waive", "churn@1", "--stage", "production", "--gate",
             "rollback_ready", "--reason", "first release: nothing in production to roll back to",
             "--expires", (date.today() + timedelta(days=7)).isoformat(), LOCKGATE_TOKEN=token)

    prod = _gates(_cli(tmp_path, *h, "promote", "churn@1", "--to", "production", "--json"))
    assert list(prod) == ["parity", "sbom_valid", "signature", "vulnerabilities", "licenses",
                          "metrics", "infra_validation", "latency_budget", "approval",
                          "rollback_ready"]
    waived = {n for n, g in prod.items() if g["status"] != "pass"}
    assert waived == {"rollback_ready"}, {n: prod[n]["message"] for n in waived}
    assert prod["rollback_ready"]["status"] == "waived"
    assert prod["approval"]["measured"]["approved_by"] == ["bob"]
    assert "cvss" in json.dumps(prod["licenses"]["measured"])
    shown = json.loads(_cli(tmp_path, *h, "show", "churn@1", "--json").stdout)
    assert shown["stage"] == "production"

    pack = tmp_path / "evidence"
    _cli(tmp_path, *h, "evidence", "churn@1", str(pack))
    assert "cvss" in "".join(p.read_text(encoding="utf-8", errors="replace")
                             for p in pack.iterdir() if p.suffix == ".json")
