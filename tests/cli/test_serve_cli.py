"""`lockgate serve` as a real process on 127.0.0.1: the production version, verified, over OIP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lockgate.api.facade import Lockgate


def _post(url: str, body: object) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.sklearn
def test_serve_command_serves_production_and_audits(home: Path) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    with Lockgate.open(home) as lg:
        lg.register(clf, x[:4], name="clf")
        lg.register(clf, x[:4], name="clf")
        lg.promote("clf@1", "production")
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"serving clf@1 on (http://127\.0\.0\.1:\d+)/v2", line)
        assert match, line
        base = match.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "server never became ready"
                time.sleep(0.1)
        out = _post(f"{base}/v2/models/clf/infer", {"id": "r1", "inputs": [
            {"name": "input", "shape": [5, 3], "datatype": "FP32",
             "data": x[:5].ravel().tolist()}]})
        assert out["id"] == "r1"
        assert out["model_version"] == "1"
        probs = next(o for o in out["outputs"] if o["name"] == "probabilities")
        np.testing.assert_allclose(np.asarray(probs["data"]).reshape(5, 2),
                                   clf.predict_proba(x[:5]), atol=1e-5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
    with Lockgate.open(home) as lg:
        types = [r.type for r in lg.audit_log()]
        assert types[-2:] == ["serve.started", "serve.stopped"]
        assert lg.audit_verify().ok
