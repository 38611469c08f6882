"""`lockgate fsck` and `lockgate gc` on real homes: damage is named with exit 13, registrations
killed with SIGKILL leave no half-written version and only what gc removes, and gc racing a
registration or a reference set never removes a referenced blob (SQLite, PostgreSQL, the local
folder and S3)."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.audit import EventType
from lockgate.cli.main import main
from lockgate.errors import InvalidInputError
from lockgate.monitor.service import build_reference
from lockgate.runtime.predictor import Predictor
from lockgate.store.artifacts import LocalArtifactStore, S3ArtifactStore
from lockgate.types import Digest
from onnx_models import linear_onnx
from tamper import flip_byte


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "COLUMNS": "250", **(env or {})})
    return p.returncode, p.stdout, p.stderr


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process: exit code, stdout, stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fsck_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli(capsys, "fsck", "--json")
    assert out, err
    return rc, json.loads(out)


def referenced(lg: Lockgate) -> set[Digest]:
    """Every blob the home's versions reference, read through the public API."""
    refs: set[Digest] = set()
    for m in lg.models():
        for v in lg.versions(m.name):
            refs |= {v.digest, *v.files.values()}
            if v.signature_bundle is not None:
                refs.add(v.signature_bundle)
    return refs


def unreferenced_files(root: Path, refs: set[Digest]) -> set[str]:
    """What fsck must list, computed from the folder itself: temp files and stray blobs."""
    found = set()
    for p in (root / "sha256").glob("*/*"):
        name = f"sha256/{p.parent.name}/{p.name}"
        if p.name.startswith(".tmp-") or Digest(f"sha256:{p.parent.name}{p.name}") not in refs:
            found.add(name)
    return found


def test_a_clean_home_passes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m")
    rc, out, err = run("fsck")  # a real process, once
    assert rc == 0, err
    assert "checked 1 versions" in out
    assert "0 damaged, 0 warnings" in out
    rc, report = fsck_json(capsys)
    assert rc == 0
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["versions"] == 1


def _set_record(db: Path, name: str, number: int, **changes: Any) -> None:
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT record FROM versions WHERE name=? AND number=?",
                               (name, number)).fetchone()
        conn.execute("UPDATE versions SET record=? WHERE name=? AND number=?",
                     (json.dumps({**json.loads(text), **changes}), name, number))


def test_damage_is_named_one_line_each_and_exits_13(home: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with Lockgate.open(home) as lg:
        vs = [lg.register(linear_onnx(seed=i), name="m") for i in range(5)]
        flip_byte(lg, vs[0].digest)                              # m@1: a changed model byte
        assert vs[1].signature_bundle is not None
        lg.artifacts.path_for(vs[1].signature_bundle).unlink()  # type: ignore[attr-defined]
    db = home / "lockgate.db"
    _set_record(db, "m", 3, description="edited behind lockgate's back")   # m@3: the record
    _set_record(db, "m", 4, signature_bundle=None, signed_by="")           # m@4: unsigned now
    with sqlite3.connect(db) as conn:                                      # an audit row
        conn.execute("UPDATE audit_log SET actor='mallory' WHERE seq=2")
    rc, out, err = cli(capsys, "fsck")
    assert rc == 13, (out, err)
    lines = out.splitlines()
    damage = [ln for ln in lines if ln.startswith("damage")]
    assert any("corrupt_blob" in ln and "m@1 model.onnx" in ln for ln in damage), out
    assert any("missing_blob" in ln and "m@2 signature bundle" in ln for ln in damage), out
    assert any("manifest" in ln and "m@3 manifest.json" in ln for ln in damage), out
    assert any("signature" in ln and "m@4 signature" in ln and "not signed" in ln
               for ln in damage), out
    assert any("audit_chain" in ln and "audit row 2" in ln for ln in damage), out
    assert not any("m@5" in ln for ln in lines), out                # the untouched version
    assert len(damage) == 5, out
    # m@4's bundle is no longer referenced: a warning, not damage
    assert next(ln for ln in lines if ln.startswith("warning")).split()[1] == "orphan_blob"
    assert err.strip().startswith("error: fsck found 5 damaged entries")
    assert len(err.strip().splitlines()) == 1
    rc, report = fsck_json(capsys)
    assert rc == 13
    assert report["ok"] is False
    assert report["damage"] == 5


def _start_register(model: Path, name: str, tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lockgate", "register", str(model),
                             "--name", name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(tmp)})


def _entries(root: Path) -> set[Path]:
    return set((root / "sha256").glob("*/*"))


def _kill_at_first_write(procs: list[subprocess.Popen[bytes]], root: Path,
                         delays: list[float]) -> None:
    """SIGKILL process i ``delays[i]`` seconds after the first new file appears in the store."""
    before = _entries(root)
    deadline = time.monotonic() + 240
    while (time.monotonic() < deadline and any(p.poll() is None for p in procs)
           and not _entries(root) - before):
        time.sleep(0.002)
    start = time.monotonic()
    for proc, delay in sorted(zip(procs, delays, strict=True), key=lambda pd: pd[1]):
        time.sleep(max(0.0, start + delay - time.monotonic()))
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=60)


def test_registrations_killed_at_random_leave_nothing_half_written(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    models = []
    for i in range(5):  # 8 MB each, distinct, so every registration writes new blobs
        models.append(tmp_path / f"big{i}.onnx")
        onnx.save(linear_onnx(1024, 2048, seed=i), models[-1])
    with Lockgate.open(home) as lg:  # keys and database exist before the first kill
        root = lg.settings.artifact_root
    # Four registrations at once, killed at random points of their writes (some waiting for
    # the write lock, some inside it); then one killed the moment it first writes, which
    # always leaves an unfinished write or an orphan blob.
    delays = [random.uniform(0.0, 2.0) for _ in models[:4]]
    _kill_at_first_write([_start_register(m, "big", tmp) for m in models[:4]], root, delays)
    _kill_at_first_write([_start_register(models[4], "big", tmp)], root, [0.0])
    rc, out, err = cli(capsys, "register", str(models[0]), "--name", "big")  # still works
    assert rc == 0, err

    rc, report = fsck_json(capsys)
    assert rc == 0, (report, delays)
    assert report["damage"] == 0, (report, delays)
    with Lockgate.open(home) as lg:
        expected = unreferenced_files(root, referenced(lg))
    assert expected, "the kill at the first write always leaves something"
    listed = {p["subject"] for p in report["problems"]}
    assert listed == expected, delays
    assert {p["kind"] for p in report["problems"]} <= {"orphan_blob", "temp_file"}

    rc, out, err = cli(capsys, "gc", "--grace", "1h")  # everything is younger than that
    assert rc == 0, err
    assert "removed 0 entries" in out
    rc, out, err = cli(capsys, "gc", "--grace", "0", "--dry-run")
    assert rc == 0, err
    assert f"would remove {len(expected)} entries" in out
    rc, out, err = run("gc", "--grace", "0")  # a real process
    assert rc == 0, err
    assert f"removed {len(expected)} entries" in out
    rc, report = fsck_json(capsys)
    assert rc == 0
    assert report["problems"] == [], report
    with Lockgate.open(home) as lg:
        survivors = lg.versions("big")
        assert survivors, "the last registration ran to the end"
        assert [v.number for v in survivors] == list(range(1, len(survivors) + 1))
        for v in survivors:
            assert lg.verify(v) is not None
            assert lg.load(f"big@{v.number}").signature.inputs
        events = [r for r in lg.audit_log() if r.type == EventType.ARTIFACTS_COLLECTED]
        assert len(events) == 1  # the dry run and the empty run recorded nothing
        assert events[0].payload["blobs"] + events[0].payload["temp_files"] == len(expected)
        assert lg.audit_verify().ok


def _register_all(home: Path, n: int, errors: list[str], done: threading.Event) -> None:
    try:
        with Lockgate.open(home) as lg:
            for i in range(n):
                lg.register(linear_onnx(64, 32, seed=100 + i), name="r")
    except Exception as exc:  # reported by the test
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        done.set()


def test_gc_racing_registrations_never_removes_a_referenced_blob(db_home: Path) -> None:
    with Lockgate.open(db_home) as lg:
        lg.register(linear_onnx(seed=1), name="r")  # warm up: imports, keys, schema
        errors: list[str] = []
        done = threading.Event()
        writer = threading.Thread(target=_register_all, args=(db_home, 6, errors, done))
        writer.start()
        passes = removed = 0
        while not done.is_set():
            removed += len(lg.gc(grace_s=0).removed)
            passes += 1
        writer.join()
        assert errors == []
        lg.gc(grace_s=0)
        report = lg.fsck()
        assert report.problems == (), report.problems
        versions = lg.versions("r")
        assert [v.number for v in versions] == list(range(1, 8))
        for v in versions:
            assert lg.verify(v) is not None
            lg.load(f"r@{v.number}")
        assert passes > 1
        assert lg.audit_verify().ok


def _reference_data(seed: int) -> dict[str, Any]:
    return {"input": np.random.default_rng(seed).normal(size=(64, 4)).astype(np.float32)}


def test_a_reference_whose_profile_is_an_old_orphan_survives_gc(lg: Lockgate) -> None:
    v = lg.register(linear_onnx(), name="m")
    data = _reference_data(7)
    # What a failed `reference set` left: the profile's blob, stored but never recorded.
    profile = build_reference(Predictor(lg.model_bytes(v)), data)
    orphan = lg.artifacts.put(profile.to_json())
    assert isinstance(lg.artifacts, LocalArtifactStore)
    path = lg.artifacts.path_for(orphan)
    os.utime(path, (time.time() - 7200,) * 2)
    assert [e.digest for e in lg.gc(grace_s=60, dry_run=True).removed] == [orphan]
    record = lg.set_reference("m@1", data)  # the retry: the same bytes
    assert record["profile"] == str(orphan)
    assert path.stat().st_mtime > time.time() - 60
    assert lg.gc(grace_s=60).removed == ()
    assert path.exists()
    assert lg.fsck().problems == ()
    found = lg.reference_profile("m@1")
    assert found is not None
    assert found.to_json() == profile.to_json()


def _set_references(home: Path, n: int, errors: list[str], done: threading.Event) -> None:
    try:
        with Lockgate.open(home) as lg:
            for i in range(n):
                lg.set_reference("m@1", _reference_data(100 + i))
    except Exception as exc:  # reported by the test
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        done.set()


def test_reference_sets_racing_gc_at_grace_0_never_end_on_a_missing_blob(
        lg: Lockgate) -> None:
    lg.register(linear_onnx(), name="m")
    lg.set_reference("m@1", _reference_data(1))  # warm up: imports, the runtime
    errors: list[str] = []
    done = threading.Event()
    writer = threading.Thread(target=_set_references, args=(lg.settings.home, 25, errors, done))
    writer.start()
    passes = 0
    while not done.is_set():
        lg.gc(grace_s=0)
        passes += 1
    writer.join()
    assert errors == []
    assert passes > 1
    report = lg.fsck()
    assert report.problems == (), report.problems
    profiles = [o.record["profile"]
                for o in lg.meta.observations("m", "reference", number=1, limit=100)]
    assert len(profiles) == 26
    for digest in profiles:
        assert lg.artifacts.exists(Digest.parse(str(digest))), digest
    assert lg.gc(grace_s=0).removed == ()
    assert lg.audit_verify().ok


def test_a_temp_file_a_live_writer_holds_is_kept(lg: Lockgate) -> None:
    lg.register(linear_onnx(), name="m")
    folder = lg.settings.artifact_root / "sha256" / "00"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".tmp-writing"
    with open(tmp, "wb") as f:
        f.write(b"half a model")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        report = lg.gc(grace_s=0)
        assert report.removed == ()
        assert report.kept == 1
        assert tmp.exists()
    report = lg.gc(grace_s=0)  # the writer is gone (closed, or killed)
    assert [e.name for e in report.removed] == ["sha256/00/.tmp-writing"]
    assert not tmp.exists()
    assert lg.fsck().problems == ()


def test_bad_grace_is_refused_and_changes_nothing(lg: Lockgate,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    orphan = lg.artifacts.put(b"nobody's")
    for bad in ("-1h", "soon", ""):
        rc, _, err = cli(capsys, "gc", "--grace", bad)
        assert rc == 2, err
        assert err.startswith("error: --grace")
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(InvalidInputError):
        lg.gc(grace_s=float("nan"))
    assert lg.artifacts.exists(orphan)
    assert not [r for r in lg.audit_log() if r.type == EventType.ARTIFACTS_COLLECTED]


def test_gc_and_fsck_on_the_memory_stores(mem_lg: Lockgate) -> None:
    v = mem_lg.register(linear_onnx(), name="m")
    orphan = mem_lg.artifacts.put(b"left behind")
    warnings = mem_lg.fsck().warnings
    assert [w.kind for w in warnings] == ["orphan_blob"]
    assert mem_lg.gc(grace_s=3600).removed == ()
    report = mem_lg.gc(grace_s=0)
    assert [e.digest for e in report.removed] == [orphan]
    assert not mem_lg.artifacts.exists(orphan)
    assert mem_lg.artifacts.exists(v.digest)
    last = mem_lg.audit_log()[-1]
    assert last.type == EventType.ARTIFACTS_COLLECTED
    assert last.payload == {"blobs": 1, "temp_files": 0, "bytes": len(b"left behind"),
                            "grace_s": 0.0}


def test_fsck_and_gc_on_s3(home: Path, s3_server: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    bucket = "b-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    store = S3ArtifactStore(f"s3://{bucket}/team", client=client)
    with Lockgate.open(home) as opened:
        settings = opened.settings
    lg = Lockgate(settings, artifacts=store)
    try:
        v = lg.register(linear_onnx(), name="m")
        orphan = store.put(b"orphan")
        temp = "tmp/" + uuid.uuid4().hex
        client.put_object(Bucket=bucket, Key="team/" + temp, Body=b"partial")
        upload = client.create_multipart_upload(Bucket=bucket, Key="team/tmp/" + uuid.uuid4().hex)
        client.upload_part(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"],
                           PartNumber=1, Body=b"x" * 1024)
        report = lg.fsck()
        assert not report.damaged
        assert sorted((p.kind, p.size) for p in report.warnings) == [
            ("orphan_blob", 6), ("temp_file", 7), ("temp_file", 1024)]
        # (moto dates every multipart upload in 2010, so the grace cannot keep that one)
        young = {e.name for e in lg.gc(grace_s=3600).removed}
        assert temp not in young
        assert f"sha256/{orphan.hex[:2]}/{orphan.hex[2:]}" not in young
        removed = lg.gc(grace_s=0)
        assert len(young) + len(removed.removed) == 3
        assert temp in {e.name for e in removed.removed}
        assert not store.exists(orphan)
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert lg.fsck().problems == ()
        assert lg.verify(v) is not None
        client.put_object(Bucket=bucket, Key=store.key_for(v.digest), Body=b"tampered")
        damaged = lg.fsck()
        assert [(p.kind, p.subject) for p in damaged.damage] == [("corrupt_blob",
                                                                  "m@1 model.onnx")]
    finally:
        lg.close()

