"""Supply-chain commands: keys generate, register with a lock file and datasets, vulndb import and
status, scan (exit 10 when the policy would block), evidence."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import onnx
import pytest

from lockgate.cli.main import main
from lockgate.supplychain.signing import key_id
from onnx_models import linear_onnx

FIXTURES = Path(__file__).parent / "fixtures" / "osv"


def run(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_keys_generate_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "k" / "team.key"
    code, out, _ = run("keys", "generate", str(key))
    assert code == 0
    pub = key.with_suffix(".pub")
    assert key_id(pub) in out
    assert key.stat().st_mode & 0o077 == 0
    before = key.read_bytes()
    code, _, err = run("keys", "generate", str(key))
    assert code == 2
    assert "refusing to overwrite" in err
    assert "Traceback" not in err
    assert key.read_bytes() == before


def test_register_with_lock_file_and_dataset(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    onnx_version = importlib.metadata.version("onnx")
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"onnx=={onnx_version} \\\n    --hash=sha256:{'ab' * 32}\n")
    main(["register", str(path), "--name", "lin", "--lock-file", str(lock),
          "--dataset", f"train=sha256:{'cd' * 32}", "--considerations", "Toy model."])
    assert "signed with key" in capsys.readouterr().out
    from lockgate.api.facade import Lockgate

    with Lockgate.open(home) as lg:
        v = lg.get("lin@1")
        bom = json.loads(lg.file_bytes(v, "bom.cdx.json"))
    comp = next(c for c in bom["components"] if c["name"] == "onnx")
    assert comp["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    data = next(c for c in bom["components"] if c["type"] == "data")
    assert data["name"] == "train"
    assert data["hashes"][0]["content"] == "cd" * 32


def test_bad_lock_file_is_one_line_and_stores_nothing(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    lock = tmp_path / "requirements.txt"
    lock.write_text("onnx==1.0 --hash=sha256:nothex\n")
    code, _, err = run("register", str(path), "--name", "lin", "--lock-file", str(lock))
    assert code == 2
    assert "Traceback" not in err
    assert err.count("\n") == 1
    code, out, _ = run("models", "--json")
    assert code == 0
    assert json.loads(out) == []


def test_vulndb_import_status_and_scan(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    assert run("register", str(path), "--name", "lin")[0] == 0
    code, _, err = run("scan", "lin@1")
    assert code == 10
    assert "no vulnerability data imported" in err
    code, out, _ = run("vulndb", "import", str(FIXTURES), "--json")
    assert code == 0
    snap = json.loads(out)
    assert snap["records"] > 0
    assert len(snap["sha256"]) == 64
    code, out, _ = run("vulndb", "status", "--json")
    status = json.loads(out)
    assert status["age_days"] == (datetime.now(UTC).date() - datetime.fromisoformat(
        snap["snapshot_date"][:10]).date()).days
    # The fixture set is from 2024: too old for the default 30-day limit, and scan says so.
    code, out, err = run("scan", "lin@1")
    assert code == 10
    assert f"{status['age_days']} days old" in out
    assert "limit 30" in out
    assert "days old" in err
    code, _, err = run("vulndb", "import", str(tmp_path / "missing.zip"))
    assert code == 3
    assert "no vulnerability snapshot" in err


def test_evidence_command(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    assert run("register", str(path), "--name", "lin")[0] == 0
    code, out, _ = run("evidence", "lin@1", str(tmp_path / "pack"))
    assert code == 0
    assert "VERIFY.md" in out
    assert (tmp_path / "pack" / "model.sig").is_file()
    code, _, err = run("evidence", "lin@1", str(tmp_path / "pack"))
    assert code == 2
    assert "not an empty folder" in err
