"""End to end with a real `lockgate serve`: reference traffic → no trigger; shifted traffic → a
signed CloudEvent at a receiver on 127.0.0.1 (retried with the same id); an error burst → the
rollback plan runs and the audit log says why."""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from standardwebhooks.webhooks import Webhook

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx, one_row_onnx
from servers import http_get, http_post, lockgate_server

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
POLICY = '[gates]\n"*" = ["seeds_recorded"]\n'


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        failing = len(type(self).received) <= type(self).fail_first
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "fail_first": 1})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/retrain", handler
    finally:
        server.shutdown()
        server.server_close()


def _rows(conn: http.client.HTTPConnection, data: np.ndarray, batch: int = 10,
          width: int = 4) -> list[int]:
    codes = []
    for i in range(0, len(data), batch):
        part = data[i:i + batch]
        status, _ = http_post(conn, "/v2/models/m/infer", {"inputs": [{
            "name": "input", "shape": [len(part), width], "datatype": "FP32",
            "data": part.ravel().tolist()}]})
        codes.append(status)
    return codes


def test_drift_triggers_a_signed_retraining_webhook(home: Path, tmp_path: Path,
                                                    receiver: tuple[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = receiver
    monkeypatch.setenv("LOCKGATE_WEBHOOK_SECRET", SECRET)
    (home / "lockgate.toml").write_text(
        POLICY + "[monitor]\nmin_rows = 150\nconsecutive = 2\n"
        f"[monitor.trigger]\nwebhook = \"{url}\"\nattempts = 3\n")
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, size=(3000, 4)).astype(np.float32)
    np.save(tmp_path / "ref.npy", reference)
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=1,
                    reference=tmp_path / "ref.npy")
        lg.promote("m@1", "production")
        assert lg.reference_profile("m@1") is not None
    with lockgate_server(home) as (_, port), Lockgate.open(home) as lg:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        server = f"http://127.0.0.1:{port}"
        for _ in range(3):  # traffic from the reference distribution
            assert set(_rows(conn, rng.normal(0, 1, (200, 4)).astype(np.float32))) == {200}
            result = lg.monitor("m", url=server)
            assert result["state"] == "ok", result["drift"]
            assert result["drift"]["rows"] == 200  # each run reads only the new rows
        assert handler.received == []
        states = []
        for _ in range(2):  # shifted traffic: two windows of drift → one trigger
            shifted = rng.normal(1.5, 1.4, (200, 4)).astype(np.float32)
            assert set(_rows(conn, shifted)) == {200}
            result = lg.monitor("m", url=server)
            states.append(result["state"])
        assert states == ["drift", "drift"]
        event_id = result["triggered"]
        assert result["deliveries"] == [{"id": event_id, "target": "webhook", "attempts": 2,
                                         "delivered": True, "error": ""}]
        status, text = http_get(port, "/metrics")
        assert status == 200
        assert 'lockgate_dataset_drift_share{model="m",version="1"} 1.0' in text
        assert 'lockgate_feature_drifted{feature="input[0]",model="m",version="1"} 1.0' in text
        conn.close()
    assert len(handler.received) == 2  # the first answer was 500: delivered again, same id
    ids = {h["webhook-id"] for h, _ in handler.received}
    assert ids == {event_id}
    for headers, body in handler.received:
        assert headers["content-type"] == "application/cloudevents+json"
        event = Webhook(SECRET).verify(body, headers)  # the reference implementation
        assert event["type"] == "dev.lockgate.drift.detected.v1"
        assert event["specversion"] == "1.0"
        assert event["data"]["model"] == "m"
        assert event["data"]["version"] == 1
        assert event["data"]["consecutive"] == 2
        assert event["data"]["features"]["input[0]"]["drifted"] is True
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(
            handler.received[0][1], handler.received[0][0])
    with Lockgate.open(home) as lg:
        types = [r.type for r in lg.audit_log(model="m")]
        assert types.count("monitor.triggered") == 1
        assert "monitor.state_changed" in types
        changed = [r.payload for r in lg.audit_log(model="m")
                   if r.type == "monitor.state_changed"]
        assert [c["to"] for c in changed] == ["ok", "drift"]
        assert lg.meta.pending_deliveries() == []
        assert lg.audit_verify().ok


def test_undelivered_trigger_stays_pending_and_is_retried(home: Path, tmp_path: Path,
                                                          receiver: tuple[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    url, handler = receiver
    handler.fail_first = 10
    monkeypatch.setenv("LOCKGATE_WEBHOOK_SECRET", SECRET)
    (home / "lockgate.toml").write_text(
        POLICY + "[monitor]\nmin_rows = 50\nconsecutive = 1\n"
        f"[monitor.trigger]\nwebhook = \"{url}\"\nattempts = 2\n")
    rng = np.random.default_rng(1)
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=1,
                    reference={"input": rng.normal(0, 1, (1000, 4)).astype(np.float32)})
        lg.promote("m@1", "production")
    with lockgate_server(home) as (_, port), Lockgate.open(home) as lg:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _rows(conn, rng.normal(3, 1, (100, 4)).astype(np.float32))
        conn.close()
        result = lg.monitor("m", url=f"http://127.0.0.1:{port}")
    assert result["state"] == "drift"
    assert result["deliveries"][0]["delivered"] is False
    assert result["deliveries"][0]["error"] == "HTTP 500"
    handler.fail_first = 0
    with Lockgate.open(home) as lg:
        (pending,) = lg.meta.pending_deliveries()
        assert pending.attempts == 2
        done = lg.deliver_pending()
    assert done[0]["delivered"] is True
    assert done[0]["attempts"] == 3
    assert {h["webhook-id"] for h, _ in handler.received} == {result["triggered"]}
    assert len(handler.received) == 3


def test_error_burst_rolls_back_per_the_rollback_plan(home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(
        POLICY + "[monitor.slo]\nmax_error_rate = 0.1\nmin_requests = 10\n"
        "[monitor.rollback]\non_slo_breach = true\n")
    with Lockgate.open(home) as lg:
        onnx.save(linear_onnx(seed=1), tmp_path / "m1.onnx")
        onnx.save(one_row_onnx(seed=2), tmp_path / "m2.onnx")  # fails on 2+ rows: a 503
        for seed in (1, 2):
            lg.register(str(tmp_path / f"m{seed}.onnx"), name="m", seed=seed)
        lg.promote("m@1", "production")
        lg.deploy("m@1")
        lg.promote("m@2", "production")  # the deployment follows: 2 stable, 1 previous
        assert lg.deployments()["m"].previous == 1
    rng = np.random.default_rng(2)
    with lockgate_server(home) as (_, port), Lockgate.open(home) as lg:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert set(_rows(conn, rng.normal(size=(100, 4)).astype(np.float32), batch=1)) == {200}
        healthy = lg.monitor("m", url=f"http://127.0.0.1:{port}")
        assert healthy["state"] == "ok"
        assert healthy["version"] == 2
        # a burst of bad requests (5 columns for a 4-column input) is the clients' doing:
        # counted apart, no breach
        codes = _rows(conn, rng.normal(size=(200, 5)).astype(np.float32), batch=1, width=5)
        assert set(codes) == {400}
        clients = lg.monitor("m", url=f"http://127.0.0.1:{port}")
        assert clients["state"] == "ok"
        assert clients["slo"]["client_error_rate"] == 1.0
        assert clients["slo"]["error_rate"] == 0.0
        # the error burst: the version's own failures (ONNX Runtime fails on 10 rows)
        codes = _rows(conn, rng.normal(size=(200, 4)).astype(np.float32))
        assert set(codes) == {503}
        result = lg.monitor("m", url=f"http://127.0.0.1:{port}")
        conn.close()
        assert result["state"] == "slo_breach"
        assert result["rollback"]["done"] is True
        assert result["rollback"]["to"] == 1
        d = lg.deployments()["m"]
        assert (d.stable, d.state) == (1, "degraded")
        changed = [r for r in lg.audit_log(model="m") if r.type == "deployment.changed"][-1]
        assert changed.actor == "lockgate-monitor"
        assert "SLO breach of m@2" in changed.payload["reason"]
        assert "error rate 1.000 > 0.1" in changed.payload["reason"]
        rolled = [r for r in lg.audit_log(model="m") if r.type == "deploy.rolled_back"][-1]
        assert rolled.payload["to"] == 1
        assert lg.audit_verify().ok


def test_capture_endpoint_reads_after_a_cursor_and_refuses_bad_cursors(
        home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(POLICY + "[serve]\ncapture_window = 50\n")
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=1)
        lg.promote("m@1", "production")
    with lockgate_server(home) as (_, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _rows(conn, np.arange(120, dtype=np.float32).reshape(30, 4))
        conn.close()
        status, snap = http_get(port, "/v2/models/m/versions/1/capture")
        assert status == 200
        assert snap["rows"]["from"] == 0
        assert snap["rows"]["to"] == 30
        assert snap["rows"]["features"]["input[0]"]["values"][:3] == [0.0, 4.0, 8.0]
        assert set(snap["rows"]["features"]) >= {"input[3]", "output[2]", "output.argmax"}
        assert snap["requests"]["count"] == 3
        _, later = http_get(port, "/v2/models/m/versions/1/capture?rows_since=25")
        assert later["rows"]["from"] == 25
        assert len(later["rows"]["features"]["input[0]"]["values"]) == 5
        status, bad = http_get(port, "/v2/models/m/versions/1/capture?rows_since=-1")
        assert status == 400
        assert "rows_since" in bad["error"]
        status, _ = http_get(port, "/v2/models/m/versions/9/capture")
        assert status == 404


def test_monitor_without_a_server_is_one_readable_error(home: Path, tmp_path: Path) -> None:
    from lockgate.cli.main import main

    (home / "lockgate.toml").write_text(POLICY)
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=1)
        lg.promote("m@1", "production")
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "monitor", "m", "--url", "http://127.0.0.1:9"])
    assert exc.value.code == 9
    with Lockgate.open(home) as lg:
        assert lg.monitor_runs("m@1") == []
    assert os.environ.get("ORT_DISABLE_TELEMETRY") == "1"
