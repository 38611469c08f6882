"""Features, live capture, profiles, reference data, monitor policy and evaluation, webhook
signatures and request logs."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from standardwebhooks.webhooks import Webhook

from lockgate.api.facade import Lockgate
from lockgate.cli.main import main
from lockgate.config.settings import load_settings
from lockgate.errors import ConfigError, InvalidInputError
from lockgate.monitor.capture import Capture, RequestLog
from lockgate.monitor.features import columns
from lockgate.monitor.policy import MonitorPolicy
from lockgate.monitor.profile import Profile, build_profile, read_reference_data
from lockgate.monitor.webhooks import cloud_event, run_command, sign, verify_signature
from lockgate.monitor.window import drift_streak, evaluate
from lockgate.types import TensorSpec
from onnx_models import linear_onnx

SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
X = TensorSpec("x", "float32", ("batch", 3))


def test_features_follow_the_rank_rules() -> None:
    cols = columns(
        {"x": np.ones((2, 3), np.float32), "ids": np.array([1, 2]),
         "img": np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4),
         "wide": np.ones((2, 100), np.float32), "names": np.array(["a", "b"])},
        {"y": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)})
    assert list(cols)[:3] == ["x[0]", "x[1]", "x[2]"]
    assert cols["ids"][0] == "categorical"
    assert cols["names"][0] == "categorical"
    assert "img.mean[2]" in cols
    assert "img.std[0]" in cols
    assert not any(k.startswith("img[") for k in cols)  # never per pixel
    assert {"wide.mean", "wide.std"} <= set(cols)
    assert cols["y.argmax"][1].tolist() == [1.0, 0.0]
    assert cols["img.mean[0]"][1][0] == pytest.approx(7.5)


def test_capture_ring_keeps_the_last_window_and_reads_after_a_cursor() -> None:
    cap = Capture(window=10)
    for start in range(0, 25, 5):
        x = np.arange(start, start + 5, dtype=np.float32).reshape(5, 1)
        cap.record({"x": x}, {"y": x * 2})
    snap = cap.snapshot()
    assert snap["rows"]["from"] == 15  # only the last 10 of 25 rows are kept
    assert snap["rows"]["to"] == 25
    assert snap["rows"]["features"]["x[0]"]["values"] == [float(v) for v in range(15, 25)]
    later = cap.snapshot(since_rows=22)
    assert later["rows"]["features"]["y[0]"]["values"] == [44.0, 46.0, 48.0]
    restarted = cap.snapshot(since_rows=1000)  # a cursor from a previous server instance
    assert restarted["rows"]["from"] == 15
    for i in range(12):  # 0, 4, 8: the server failed; 1, 5, 9: the client's request was bad
        cap.record_request(0.001 * i, status=500 if i % 4 == 0 else 400 if i % 4 == 1 else 200)
    req = cap.snapshot(since_requests=4)["requests"]
    assert (req["from"], req["to"], req["count"], req["errors"], req["client_errors"]) == (
        4, 12, 8, 2, 2)


def test_profile_is_deterministic_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    cols = columns({"x": rng.normal(size=(9000, 3)).astype(np.float32)})
    a = build_profile(cols, sample=1000)
    b = build_profile(cols, sample=1000)
    assert a.to_json() == b.to_json()
    back = Profile.from_json(a.to_json())
    assert back.rows == 9000
    assert back.samples["x[1]"].size == 1000
    assert back.features["x[0]"]["count"] == 9000
    assert sum(back.features["x[0]"]["histogram"]["counts"]) == 9000
    with pytest.raises(InvalidInputError, match="not a lockgate profile"):
        Profile.from_json(b"{}")


def test_reference_data_files(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "d.npy", data)
    np.savez(tmp_path / "d.npz", x=data)
    (tmp_path / "d.csv").write_text("a,b,c\n" + "\n".join(",".join(map(str, r)) for r in data))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": data[:, 0], "b": data[:, 1], "c": data[:, 2]}),
                   tmp_path / "d.parquet")
    for name in ("d.npy", "d.npz", "d.csv", "d.parquet"):
        got = read_reference_data(tmp_path / name, (X,))
        assert got["x"].dtype == np.float32
        np.testing.assert_array_equal(got["x"], data)
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,oops\n")
    with pytest.raises(InvalidInputError, match="numeric"):
        read_reference_data(tmp_path / "bad.csv", (X,))
    np.save(tmp_path / "rank1.npy", np.ones(4, np.float32))
    with pytest.raises(InvalidInputError, match="expects rank 2"):
        read_reference_data(tmp_path / "rank1.npy", (X,))
    np.savez(tmp_path / "other.npz", z=data)
    with pytest.raises(InvalidInputError, match="no input 'x'"):
        read_reference_data(tmp_path / "other.npz", (X,))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="unsupported"):
        read_reference_data(tmp_path / "d.txt", (X,))
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="cannot read"):  # never unpickled
        read_reference_data(tmp_path / "obj.npy", (X,))


def test_reference_set_by_cli_and_bad_data_changes_nothing(home: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m")
    rows = np.random.default_rng(0).normal(size=(50, 4))
    (tmp_path / "ref.csv").write_text("a,b,c,d\n" + "\n".join(
        ",".join(f"{v:.5f}" for v in r) for r in rows))
    np.save(tmp_path / "wrong.npy", np.ones((5, 7), np.float32))
    events_before = len(Lockgate.open(home).audit_log())
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "reference", "set", "m@1", str(tmp_path / "wrong.npy")])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    with Lockgate.open(home) as lg:
        assert lg.reference_profile("m@1") is None
        assert len(lg.audit_log()) == events_before
    main(["--home", str(home), "reference", "set", "m@1", str(tmp_path / "ref.csv")])
    assert "reference profile of 50 rows, 8 features" in capsys.readouterr().out
    main(["--home", str(home), "reference", "show", "m@1", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["rows"] == 50
    assert shown["features"]["output.argmax"]["kind"] == "categorical"
    with Lockgate.open(home) as lg:
        assert [r.type for r in lg.audit_log()][-1] == "reference.set"


def test_monitor_policy_merges_model_overrides_and_names_bad_keys(home: Path) -> None:
    config = {"min_rows": 50, "slo": {"max_error_rate": 0.01, "min_requests": 5},
              "models": {"fraud": {"consecutive": 5, "slo": {"max_p99_ms": 20.0}}}}
    p = MonitorPolicy.for_model(config, "fraud")
    assert (p.min_rows, p.consecutive, p.max_error_rate, p.max_p99_ms) == (50, 5, 0.01, 20.0)
    assert MonitorPolicy.for_model(config, "other").consecutive == 3
    for text, where in [("[monitor]\nconsecutiv = 2\n", "unknown key 'consecutiv'"),
                        ("[monitor]\nmethod = \"cosine\"\n", "unknown drift method"),
                        ("[monitor.slo]\nmax_error_rate = \"high\"\n", "expected float"),
                        ("[monitor.models.m.trigger]\nwebhook = \"ftp://x\"\n",
                         "monitor.models.m.trigger.webhook")]:
        (home / "lockgate.toml").write_text(text)
        with pytest.raises(ConfigError, match=where):
            load_settings(home)


def test_evaluate_says_why_a_window_is_not_judged() -> None:
    rng = np.random.default_rng(0)
    profile = build_profile(columns({"x": rng.normal(size=(500, 1)).astype(np.float32)}))
    few = {"rows": {"from": 0, "to": 10, "features": {"x[0]": {
        "kind": "numerical", "values": [0.0] * 10}}}, "requests": {"count": 3, "errors": 0,
                                                                    "latencies": [0.01] * 3}}
    r = evaluate(profile, few, MonitorPolicy())
    assert r["state"] == "insufficient"
    assert "fewer than 100" in r["drift"]["reason"]
    assert r["slo"]["status"] == "insufficient"
    assert evaluate(None, few, MonitorPolicy())["drift"]["status"] == "no_reference"
    slow = dict(few, requests={"count": 40, "errors": 0, "latencies": [0.5] * 40})
    r = evaluate(profile, slow, MonitorPolicy(max_p99_ms=100.0))
    assert r["state"] == "slo_breach"
    assert r["slo"]["breached"] == ["p99 500.0 ms > 100.0 ms"]
    assert drift_streak(["drift", "insufficient", "no_reference", "drift", "ok", "drift"]) == 2


def test_webhook_signatures_match_the_reference_implementation() -> None:
    event = cloud_event("dev.lockgate.drift.detected.v1", "/t", "m@1", {"a": 1})
    body = json.dumps(event).encode()
    stamp = int(time.time())
    headers = {"webhook-id": event["id"], "webhook-timestamp": str(stamp),
               "webhook-signature": sign(SECRET, event["id"], stamp, body)}
    assert Webhook(SECRET).verify(body, headers)["id"] == event["id"]
    assert verify_signature(SECRET, headers, body)
    assert not verify_signature(SECRET, headers, body + b" ")
    assert not verify_signature(SECRET, headers, body, now=stamp + 3600)  # replayed later
    other = "whsec_" + base64.b64encode(b"o" * 24).decode()
    assert not verify_signature(other, headers, body)
    with pytest.raises(ConfigError, match="whsec_"):
        sign("whsec_not base64!", "id", stamp, body)


def test_command_target_gets_the_event_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "event.json"
    cmd = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"]
    event = cloud_event("dev.lockgate.drift.detected.v1", "/t", "m@1", {"a": 1})
    assert run_command(cmd, event) is None
    assert json.loads(out.read_text())["id"] == event["id"]
    assert run_command([sys.executable, "-c", "raise SystemExit(3)"], event) == \
        "exit status 3"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_request_log_writes_a_sample(tmp_path: Path, fmt: str) -> None:
    log = RequestLog(tmp_path / "logs", rate=1.0, fmt=fmt, batch=3)
    for i in range(4):
        log.offer("m", "1", {"x": np.array([[float(i)]])}, {"y": np.array([[2.0 * i]])})
    log.close()
    if fmt == "jsonl":
        lines = (tmp_path / "logs" / "requests.jsonl").read_text().splitlines()
        assert [json.loads(x)["inputs"]["x"] for x in lines] == [[[0.0]], [[1.0]], [[2.0]],
                                                                  [[3.0]]]
    else:
        import pyarrow.parquet as pq

        files = sorted((tmp_path / "logs").glob("*.parquet"))
        rows = sum(pq.read_table(f).num_rows for f in files)
        assert (len(files), rows) == (2, 4)
    sampled = RequestLog(tmp_path / "sampled", rate=0.1)
    for _ in range(2000):
        sampled.offer("m", "1", {"x": np.zeros((1, 1))}, {"y": np.zeros((1, 1))})
    assert 100 < sampled.written < 320
    with pytest.raises(ValueError, match="rate"):
        RequestLog(tmp_path / "x", rate=0.0)
