"""`lockgate evidence` writes a pack that third-party tools check: the commands VERIFY.md lists
are run here, as an auditor would run them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from binaries import needs
from lockgate.api.facade import Lockgate
from lockgate.errors import InvalidInputError
from lockgate.types import Digest

BIN = Path(sys.executable).parent


def _commands(verify_md: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", verify_md, flags=re.S)
    return [line for block in blocks for line in block.strip().splitlines()]


def _run(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ORT_DISABLE_TELEMETRY": "1"}
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180, check=False)


@needs("sha256sum")
def test_evidence_pack_verifies_with_third_party_commands(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    out = tmp_path / "evidence"
    with Lockgate.open(home) as lg:
        v = lg.register(linear_model, name="m", metrics={"accuracy": 0.9})
        lg.export_evidence("m@1", out)
        assert lg.audit_log()[-1].type == "evidence.exported"
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"model/model.onnx", "model/bom.cdx.json", "model/model_card.md",
            "model/manifest.json", "model.sig", "signing.pub", "environment.json",
            "gate_runs.json", "audit_events.json", "SHA256SUMS", "VERIFY.md"} <= names
    assert Digest.of_bytes((out / "model/model.onnx").read_bytes()) == v.digest
    events = json.loads((out / "audit_events.json").read_text())
    assert events[0]["type"] == "model.registered"
    assert events[0]["hash"]

    commands = _commands((out / "VERIFY.md").read_text())
    assert any(c.startswith("sha256sum -c") for c in commands)
    assert any(c.startswith("model_signing verify key") for c in commands)
    assert any("JsonStrictValidator" in c for c in commands)
    for cmd in commands:
        done = _run(cmd, out)
        assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"

    # The same commands catch tampering: a changed model fails the sums and the signature.
    (out / "model/model.onnx").write_bytes(b"not the model")
    for cmd in commands:
        if not cmd.startswith("python"):
            assert _run(cmd, out).returncode != 0, cmd


def test_evidence_refuses_a_non_empty_folder(
    lg: Lockgate, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    lg.register(linear_model, name="m")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        lg.export_evidence("m@1", tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
