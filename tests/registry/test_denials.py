"""Repeated refusals do not grow the audit log without bound: against a real `lockgate server`,
a viewer hammering an admin route adds one row at once and one folded row carrying the count
(written when the server stops, by SIGINT or SIGTERM); distinct actors and operations stay
apart; the chain holds. In-process, a run's folded row is written when its window closes, what
the client chose is kept as the run's detail outside its key, and past 10,000 open runs the
oldest closes early."""

from __future__ import annotations

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

import httpx

from lockgate.api.facade import Lockgate
from lockgate.audit import (
    DENIAL_WINDOW_S,
    MAX_DETAIL,
    AuditEvent,
    DenialRecorder,
    EventType,
    verify_chain,
)
from lockgate.store.metadata import MemoryMetadataStore
from registry_server import make_home


@contextmanager
def _server(home: Path, stop: signal.Signals = signal.SIGINT) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update(ORT_DISABLE_TELEMETRY="1", LOCKGATE_USER="ops")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "server", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    try:
        while True:
            line = proc.stdout.readline()
            assert line, "the server exited"
            if m := re.search(r"registry API on (http://127\.0\.0\.1:\d+)/", line):
                break
        threading.Thread(target=lambda: [None for _ in proc.stdout],  # type: ignore[union-attr]
                         daemon=True).start()
        yield m.group(1)
    finally:
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == (0 if stop == signal.SIGINT else -stop)
        proc.stdout.close()


def _denied(lg: Lockgate, since: int) -> list[tuple[str, str, dict[str, object]]]:
    return [(r.actor, str(r.payload["action"]), dict(r.payload))
            for r in lg.audit_log()[since:] if r.type == "access.denied"]


def test_repeated_denials_fold_into_one_row_with_a_count(tmp_path: Path) -> None:
    home, tokens, _ = make_home(tmp_path)
    with Lockgate.open(home) as lg:
        before = len(lg.audit_log())
    with _server(home) as url:
        view = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['view']}"})
        dev = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['dev']}"})
        with view, dev:
            for _ in range(200):
                assert view.get("/api/v1/users").status_code == 403
            assert view.get("/api/v1/tokens").status_code == 403  # another operation
            for _ in range(3):
                assert dev.get("/api/v1/users").status_code == 403  # another actor
        with Lockgate.open(home) as lg:  # while it runs: only the first of each run
            running = _denied(lg, before)
        assert [(a, op) for a, op, _ in running] == [
            ("view", "listUsers"), ("view", "listTokens"), ("dev", "listUsers")]
    with Lockgate.open(home) as lg:  # stopped: the folded rows are flushed
        rows = _denied(lg, before)
        assert lg.audit_verify().ok
    assert len(rows) <= 6
    counts = {(a, op): p["count"] for a, op, p in rows if "count" in p}
    assert counts == {("view", "listUsers"): 199, ("dev", "listUsers"): 2}
    folded = next(p for a, op, p in rows if "count" in p and a == "view")
    assert folded["first"] <= folded["last"]  # type: ignore[operator]
    assert folded["window_s"] == DENIAL_WINDOW_S
    assert "'view' does not hold the 'admin' role" in str(folded["reason"])


def test_a_run_is_flushed_when_its_window_closes() -> None:
    meta = MemoryMetadataStore()
    recorder = DenialRecorder(meta.append_event, window=0.2)
    event = AuditEvent(EventType.ACCESS_DENIED, "eve", "m", None,
                       {"action": "deploy", "reason": "no role"})
    other = AuditEvent(EventType.ACCESS_DENIED, "eve", "m", None,
                       {"action": "rollback", "reason": "no role"})
    try:
        for _ in range(5):
            recorder.record(event)
        recorder.record(other)
        assert [r.payload.get("count") for r in meta.audit_records()] == [None, None]
        deadline = time.monotonic() + 30
        while len(meta.audit_records()) < 3:  # the sweeper writes the folded row
            assert time.monotonic() < deadline, "the window never closed"
            time.sleep(0.05)
        records = meta.audit_records()
        assert [(r.payload["action"], r.payload.get("count")) for r in records] == [
            ("deploy", None), ("rollback", None), ("deploy", 4)]
        recorder.record(event)  # a new window: written at once
        assert len(meta.audit_records()) == 4
        assert verify_chain(meta.audit_records()).ok
    finally:
        recorder.close()
    recorder.record(event)  # after close, every refusal is written at once
    assert len(meta.audit_records()) == 5


def test_a_window_without_repeats_closes_quietly() -> None:
    meta = MemoryMetadataStore()
    recorder = DenialRecorder(meta.append_event, window=0.1)
    event = AuditEvent(EventType.ACCESS_DENIED, "eve", None, None, {"action": "listUsers"})
    try:
        recorder.record(event)
        time.sleep(0.4)  # the window closes with nothing to fold: no row, no thread error
        assert len(meta.audit_records()) == 1
        recorder.record(event)  # the next window starts with a row written at once
        assert [r.payload for r in meta.audit_records()] == [{"action": "listUsers"}] * 2
    finally:
        recorder.close()


def test_folded_denials_are_written_when_the_server_gets_sigterm(tmp_path: Path) -> None:
    home, tokens, _ = make_home(tmp_path)
    with Lockgate.open(home) as lg:
        before = len(lg.audit_log())
    with _server(home, stop=signal.SIGTERM) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens['view']}"}) as view:
        for _ in range(50):
            assert view.get("/api/v1/users").status_code == 403
    with Lockgate.open(home) as lg:  # SIGTERM ends the process right after the lifespan
        rows = _denied(lg, before)
        assert lg.audit_verify().ok
    assert [(a, op, p.get("count")) for a, op, p in rows] == [
        ("view", "listUsers", None), ("view", "listUsers", 49)]


def test_detail_stays_out_of_the_key() -> None:
    meta = MemoryMetadataStore()
    recorder = DenialRecorder(meta.append_event)
    event = AuditEvent(EventType.ACCESS_DENIED, "eve", None, None,
                       {"action": "console.promote", "reason": "cross-site"})
    try:
        for i in range(100):
            recorder.record(event, detail=f"origin http://a{i}.example")
        recorder.record(event, detail="x" * 10_000)
        assert [dict(r.payload) for r in meta.audit_records()] == [
            {"action": "console.promote", "reason": "cross-site",
             "detail": "origin http://a0.example"}]
        recorder.flush()
        folded = meta.audit_records()[-1].payload
        assert (folded["count"], folded["last_detail"]) == (100, "x" * MAX_DETAIL)
        assert "detail" not in folded
    finally:
        recorder.close()


def test_past_the_limit_the_oldest_run_closes_first() -> None:
    rows: list[AuditEvent] = []
    recorder = DenialRecorder(rows.append)

    def event(actor: str) -> AuditEvent:
        return AuditEvent(EventType.ACCESS_DENIED, actor, None, None, {"action": "a"})

    try:
        recorder.record(event("first"))
        recorder.record(event("first"))  # a repeat, held in memory
        recorder.record(event("second"))
        recorder.record(event("second"))
        for i in range(10_000 - 2):
            recorder.record(event(f"u{i}"))
        assert len(rows) == 10_000  # 10,000 runs open, nothing folded yet
        recorder.record(event("one-too-many"))  # the oldest run ("first") closes early
        assert [(e.actor, e.payload.get("count")) for e in rows[-2:]] == [
            ("first", 1), ("one-too-many", None)]
        recorder.record(event("second"))  # still open: counted, not written
        assert rows[-1].actor == "one-too-many"
    finally:
        recorder.close()
    assert [(e.actor, e.payload.get("count")) for e in rows if e.actor == "second"] == [
        ("second", None), ("second", 2)]
