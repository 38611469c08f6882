"""The CLI: tables by default, --json for CI, one readable line and a documented exit code on
error, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from lockgate.cli.main import main
from onnx_models import linear_onnx


def run(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_init_writes_commented_config(home: Path) -> None:
    code, out, _ = run("init")
    assert code == 0
    assert (home / "lockgate.toml").read_text().startswith("# lockgate configuration")
    assert (home / "lockgate.db").exists()
    assert str(home) in out


def test_register_list_show_alias_and_audit(home: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    main(["register", str(path), "--name", "lin", "--metric", "acc=0.5", "--tag", "t=1",
          "--json"])
    v = json.loads(capsys.readouterr().out)
    assert (v["name"], v["version"], v["stage"], v["metrics"]) == ("lin", 1, "prototype",
                                                                    {"acc": 0.5})
    main(["models", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["name"] == "lin"
    main(["versions", "lin", "--json"])
    assert [x["version"] for x in json.loads(capsys.readouterr().out)] == [1]
    main(["show", "lin@1"])
    shown = capsys.readouterr().out
    assert "lin@1" in shown
    assert "input  input: float32['batch', 4]" in shown
    main(["alias", "set", "lin", "best", "1"])
    assert "lin@best" in capsys.readouterr().out
    main(["alias", "ls", "lin", "--json"])
    assert json.loads(capsys.readouterr().out) == {"best": 1}
    main(["audit", "log", "--json"])
    events = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in events] == ["model.registered", "alias.set"]
    main(["audit", "verify", "--json"])
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [(["show", "nope"], 3, "no model named 'nope'"),
     (["show", "../x"], 2, "invalid name"),
     (["promote", "nope@1", "--to", "production"], 3, "no model named"),
     (["register", "--name", "x"], 2, "either an .onnx file"),
     (["register", "missing.onnx", "--name", "x"], 3, "no file at missing.onnx"),
     (["register", "--from", "no_such_module:fn", "--name", "x"], 2, "cannot import")],
)
def test_errors_are_one_line_with_documented_exit_code(home: Path, args: list[str], code: int,
                                                       fragment: str) -> None:
    rc, _, err = run(*args)
    assert rc == code, err
    assert fragment in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_audit_verify_names_the_edited_row(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    for _ in range(3):
        assert run("register", str(path), "--name", "lin")[0] == 0
    con = sqlite3.connect(home / "lockgate.db")
    con.execute("UPDATE audit_log SET payload = '{}' WHERE seq = 2")
    con.commit()
    con.close()
    rc, _, err = run("audit", "verify")
    assert rc == 8
    assert "row 2" in err


def test_promotion_refused_by_a_gate_exits_1(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(), path)
    assert run("register", str(path), "--name", "lin")[0] == 0
    rc, _, err = run("promote", "lin@1", "--to", "production")
    assert rc == 1
    assert "no parity report" in err
