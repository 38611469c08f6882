"""Deployments with real `lockgate serve` processes on 127.0.0.1: blue/green switches and
rollbacks under concurrent load with no failed request, a candidate that fails to load never
gets traffic, canary weights, and two servers converging on one store."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import onnx
import pytest

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx, one_row_onnx
from servers import http_get, lockgate_server
from tamper import flip_byte

pytestmark = pytest.mark.slow

POLICY = '[gates]\n"*" = ["seeds_recorded"]\n'
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                               "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
TWO_ROWS = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                   "data": [1.0, 2.0, 3.0, 4.0] * 2}]}).encode()


def _register(lg: Lockgate, tmp: Path, n: int) -> None:
    for seed in range(n):
        path = tmp / f"m{seed}.onnx"
        onnx.save(linear_onnx(seed=seed), path)
        lg.register(str(path), name="m", seed=seed)


_server = lockgate_server
_get = http_get


def _infer(conn: http.client.HTTPConnection, body: bytes = BODY) -> tuple[int, str]:
    conn.request("POST", "/v2/models/m/infer", body=body,
                 headers={"content-type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    return r.status, str(body.get("model_version", body.get("error", "")))


def _version_now(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return _infer(conn)[1]
    finally:
        conn.close()


def _wait_for(port: int, version: str, seconds: float = 20) -> float:
    start = time.monotonic()
    while _version_now(port) != version:
        assert time.monotonic() - start < seconds, f"server never switched to {version}"
        time.sleep(0.02)
    return time.monotonic() - start


def test_switch_and_rollback_under_load_without_a_failed_request(
    home: Path, tmp_path: Path
) -> None:
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        _register(lg, tmp_path, 2)
        lg.promote("m@1", "production")
        lg.deploy("m@1")
    with _server(home) as (_, port):
        stop = threading.Event()
        results: Counter[tuple[int, str]] = Counter()
        lock = threading.Lock()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(2000):  # bounded
                if stop.is_set():
                    break
                got = _infer(conn)
                with lock:
                    results[got] += 1
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        with Lockgate.open(home) as lg:
            time.sleep(0.3)
            lg.promote("m@2", "production")  # the deployment follows: a blue/green switch
            _wait_for(port, "2")
            time.sleep(0.3)
            lg.rollback("m", reason="test")
            took = _wait_for(port, "1")
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert took < 1.0  # the previous version was still loaded: rollback is a route swap
    statuses = Counter(status for status, _ in results.elements())
    assert statuses == {200: sum(results.values())}, results
    versions = {v for _, v in results}
    assert versions == {"1", "2"}
    with Lockgate.open(home) as lg:
        d = lg.deployments()["m"]
        assert (d.stable, d.previous, d.state) == (1, 2, "rolled-back")
        types = [r.type for r in lg.audit_log()]
        assert types.count("deploy.switched") == 2
        assert lg.audit_verify().ok


def test_failed_candidate_never_gets_traffic_and_canary_weight(
    home: Path, tmp_path: Path
) -> None:
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        _register(lg, tmp_path, 3)
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.promote("m@2", "stabilized")
        lg.promote("m@3", "stabilized")
        lg.deploy("m@3", canary=50)  # verified now; its file is damaged before a server loads it
        flip_byte(lg, lg.get("m@3").digest)
    with _server(home) as (_, port):
        deadline = time.monotonic() + 20
        while True:
            with Lockgate.open(home) as lg:
                if any(r.type == "deploy.failed" for r in lg.audit_log()):
                    break
            assert time.monotonic() < deadline, "the failed load was never reported"
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        seen = Counter(_infer(conn) for _ in range(200))
        assert seen == {(200, "1"): 200}
        with Lockgate.open(home) as lg:
            lg.deploy("m@2", canary=20)
        _wait_for(port, "2")  # the canary is routed once loaded
        seen = Counter(_infer(conn) for _ in range(2000))
        conn.close()
    assert set(seen) == {(200, "1"), (200, "2")}
    share = seen[(200, "2")] / 2000
    assert 0.15 <= share <= 0.25, share


def test_two_servers_converge_after_a_promotion(home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        _register(lg, tmp_path, 2)
        lg.promote("m@1", "production")
    with _server(home) as (_, a), _server(home) as (_, b):
        assert _version_now(a) == _version_now(b) == "1"
        with Lockgate.open(home) as lg:
            lg.promote("m@2", "production")
        _wait_for(a, "2")
        _wait_for(b, "2")
        status, meta = _get(a, "/v2/models/m")
        assert status == 200
        assert meta["name"] == "m"
        conn = http.client.HTTPConnection("127.0.0.1", b, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        assert 'lockgate_model_info{digest="sha256:' in text
        assert 'model="m",version="2"} 1.0' in text


def test_shadow_divergence_is_recorded_and_gated(home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(
        POLICY + '"stabilized->production" = [{ gate = "shadow_divergence", '
                 'min_requests = 50 }]\n')
    with Lockgate.open(home) as lg:
        _register(lg, tmp_path, 2)  # two different models: the shadow diverges
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.promote("m@2", "stabilized")
        lg.deploy("m@2", shadow=True)
    with _server(home) as (_, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            assert all(_infer(conn) == (200, "1") for _ in range(60))  # callers see stable
            with Lockgate.open(home) as lg:
                if any(d.kind == "shadow" for d in lg.decisions("m@2")):
                    break
            assert time.monotonic() < deadline, "no shadow report"
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    assert 'lockgate_shadow_divergence{model="m",version="2"}' in text
    with Lockgate.open(home) as lg:
        report = [d for d in lg.decisions("m@2") if d.kind == "shadow"][-1].detail
        assert report["compared"] > 0
        assert report["max_divergence"] > 0.01
        (gate,) = lg.check_gates("m@2", "production")
    assert gate.status.value == "fail"
    assert "max abs divergence" in gate.message or "mirrored requests" in gate.message


def test_automatic_rollback_on_an_injected_error_rate(home: Path, tmp_path: Path) -> None:
    incident = tmp_path / "incident.json"
    notify = [sys.executable, "-c",
              f"import sys; open({str(incident)!r}, 'w').write(sys.stdin.read())"]
    (home / "lockgate.toml").write_text(
        POLICY + f"[serve]\nnotify_command = {json.dumps(notify)}\n")
    with Lockgate.open(home) as lg:
        _register(lg, tmp_path, 1)
        odd = tmp_path / "one-row.onnx"
        onnx.save(one_row_onnx(seed=9), odd)  # ONNX Runtime fails on two rows: a 503
        lg.register(str(odd), name="m", seed=9)
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.promote("m@2", "stabilized")
        lg.deploy("m@2", canary=50, analysis={"metric": "error_rate", "max": 0.1,
                                              "interval_s": 0.5, "min_requests": 5})
    with _server(home) as (_, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            for _ in range(40):
                _infer(conn, TWO_ROWS)
            with Lockgate.open(home) as lg:
                if lg.deployments()["m"].state == "degraded":
                    break
            assert time.monotonic() < deadline, "the analysis never rolled back"
        time.sleep(0.5)  # one poll: the servers drop the candidate
        after = Counter(_infer(conn) for _ in range(100))
        conn.close()
    assert after == {(200, "1"): 100}
    with Lockgate.open(home) as lg:
        d = lg.deployments()["m"]
        assert (d.stable, d.candidate, d.weight) == (1, None, 0)
        event = [r for r in lg.audit_log() if r.type == "deploy.rolled_back"][-1]
        assert event.payload["last"]["metric"] == "error_rate"
        assert lg.audit_verify().ok
    sent = json.loads(incident.read_text())
    assert sent["event"] == "deploy.rolled_back"
    assert sent["model"] == "m"
    assert "automatic rollback: error_rate" in sent["reason"]


def test_client_errors_never_roll_a_canary_back(home: Path, tmp_path: Path) -> None:
    """A client that sends requests the candidate refuses (400) cannot fail it on purpose:
    4xx are counted apart, on /metrics and in the analysis' window, not as its error rate."""
    (home / "lockgate.toml").write_text(POLICY)
    with Lockgate.open(home) as lg:
        _register(lg, tmp_path, 1)
        wide = tmp_path / "wide.onnx"
        onnx.save(linear_onnx(n_in=5, seed=9), wide)  # answers 400 to 4-wide requests
        lg.register(str(wide), name="m", seed=9)
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.promote("m@2", "stabilized")
        lg.deploy("m@2", canary=50, analysis={"metric": "error_rate", "max": 0.1,
                                              "interval_s": 0.3, "min_requests": 5})
    with _server(home) as (_, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        seen = Counter(_infer(conn)[0] for _ in range(200))
        time.sleep(1.5)  # several analysis intervals
        seen.update(_infer(conn)[0] for _ in range(100))
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    assert seen[400] > 50  # both versions took traffic
    assert seen[200] > 50
    with Lockgate.open(home) as lg:
        d = lg.deployments()["m"]
        assert (d.stable, d.candidate, d.state) == (1, 2, "healthy")
        assert not [r for r in lg.audit_log() if r.type == "deploy.rolled_back"]
    assert 'reason="bad_request"' in text or 'reason="invalid' in text
