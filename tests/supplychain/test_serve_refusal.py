"""`lockgate serve` (a real process on 127.0.0.1) refuses tampered versions and keeps serving the
others; environment drift is exposed in model metadata, and refused when policy says so."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.api.facade import Lockgate
from lockgate.environment import fingerprint as environment
from onnx_models import linear_onnx
from tamper import flip_byte


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(url: str, body: object) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextmanager
def _serving(*refs: str) -> Iterator[str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "serve", "--port", "0", *refs],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        seen = []
        match = None
        while match is None:  # load failures may be logged before the banner
            line = proc.stderr.readline()
            assert line, "server exited: " + "".join(seen)
            seen.append(line)
            match = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)/v2", line)
        base = match.group(1)
        deadline = time.monotonic() + 60
        while True:  # wait until every model has finished loading, one way or the other
            try:
                statuses = [_get(f"{base}/v2/models/{r.split('@')[0]}/ready")[1] for r in refs]
                if all(s.get("state") in ("ready", "failed") for s in statuses):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "models never finished loading"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


def _infer(base: str, name: str) -> tuple[int, dict[str, Any]]:
    return _post(f"{base}/v2/models/{name}/infer", {"inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]})


@pytest.mark.slow
def test_serve_refuses_tampered_versions_and_serves_the_rest(home: Path) -> None:
    with Lockgate.open(home) as lg:
        for seed, name in enumerate(("good", "flipped", "extra")):
            lg.register(linear_onnx(seed=seed), name=name)  # distinct blobs
        flip_byte(lg, lg.get("flipped@1").digest, at=-5)
        planted = lg.artifacts.put(b"planted")
        engine = sa.create_engine(lg.settings.database_url)
        with engine.begin() as conn:
            rec = json.loads(conn.execute(sa.text(
                "SELECT record FROM versions WHERE name='extra'")).scalar_one())
            rec["files"]["payload.bin"] = str(planted)
            conn.execute(sa.text("UPDATE versions SET record=:r WHERE name='extra'"),
                         {"r": json.dumps(rec)})
        engine.dispose()

    with _serving("good@1", "flipped@1", "extra@1") as base:
        status, body = _infer(base, "good")
        assert status == 200, body
        assert body["model_name"] == "good"
        for name, reason in (("flipped", "corrupt"), ("extra", "payload.bin")):
            status, body = _get(f"{base}/v2/models/{name}/ready")
            assert status == 503
            assert body["ready"] is False
            status, body = _infer(base, name)
            assert status == 503
            assert "failed to load" in body["error"]
            assert reason in body["error"]
        status, meta = _get(f"{base}/v2/models/good")
        assert status == 200
        assert meta["parameters"]["lockgate_environment_drift"] == []
        assert meta["parameters"]["lockgate_signed_by"]

    with Lockgate.open(home) as lg:
        refusals = {(r.model, r.type) for r in lg.audit_log()
                    if r.type in ("artifact.refused", "signature.refused")}
        assert ("flipped", "artifact.refused") in refusals
        assert ("extra", "signature.refused") in refusals
        extra = next(r for r in lg.audit_log() if r.type == "signature.refused")
        assert "payload.bin" in extra.payload["reason"]
        assert lg.audit_verify().ok


def _register_from_older_runtime(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a version whose (signed) environment says ONNX Runtime 1.0.0, as if it had
    been registered on an older image."""
    real = environment.capture_environment

    def older(**kwargs: Any) -> dict[str, Any]:
        env = real(**kwargs)
        env["onnxruntime"] = {**env["onnxruntime"], "version": "1.0.0"}
        return env

    monkeypatch.setattr(environment, "capture_environment", older)
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="old")
    monkeypatch.setattr(environment, "capture_environment", real)


@pytest.mark.slow
def test_environment_drift_warns_in_metadata(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_from_older_runtime(home, monkeypatch)
    with _serving("old@1") as base:
        status, meta = _get(f"{base}/v2/models/old")
        assert status == 200
        drift = meta["parameters"]["lockgate_environment_drift"]
        assert drift[0]["what"] == "onnxruntime major.minor"
        assert drift[0]["registered"] == "1.0"
        assert _infer(base, "old")[0] == 200
    with Lockgate.open(home) as lg:
        event = next(r for r in lg.audit_log() if r.type == "environment.drift")
        assert event.payload["action"] == "warned"


@pytest.mark.slow
def test_environment_drift_refused_by_policy(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_from_older_runtime(home, monkeypatch)
    (home / "lockgate.toml").write_text('[serve]\nenvironment_drift = "refuse"\n',
                                        encoding="utf-8")
    with _serving("old@1") as base:
        status, body = _get(f"{base}/v2/models/old/ready")
        assert status == 503
        assert "onnxruntime major.minor" in body["error"]
    with Lockgate.open(home) as lg:
        event = next(r for r in lg.audit_log() if r.type == "environment.drift")
        assert event.payload["action"] == "refused"
