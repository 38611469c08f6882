"""Remote mode: the CLI with --server / LOCKGATE_SERVER and `lockgate.connect` behave as local
mode does — same results, same exit codes — against a real `lockgate server`."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

import lockgate
from cli_in_process import run_cli
from lockgate.errors import (
    AccessDeniedError,
    AuthenticationError,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from registry_server import SIGNATURE_ONLY, Registry

pytestmark = pytest.mark.slow


def _journey(capsys: pytest.CaptureFixture[str], onnx: Path, out: Path) -> list[Any]:
    """The same commands, in either mode; what each returned, minus what must differ (time,
    actor, where the evidence went)."""
    seen: list[Any] = []

    def run(*args: str, as_json: bool = True) -> Any:
        code, text, err = run_cli(capsys, *args)
        assert "Traceback" not in err
        body = json.loads(text) if as_json and code == 0 else None
        seen.append((args[0], code))
        return body

    v = run("register", str(onnx), "--name", "lin", "--metric", "acc=0.9", "--tag", "team=risk",
            "--description", "linear", "--json")
    seen.append({k: v[k] for k in ("name", "version", "stage", "digest", "framework",
                                   "metrics", "tags", "description", "signature", "opset")})
    seen.append(sorted(v["files"]))
    run("register", str(onnx), "--name", "lin", "--json")
    seen.append([(x["version"], x["stage"]) for x in run("versions", "lin", "--json")])
    seen.append([(m["name"], m["versions"]) for m in run("models", "--json")
                 if m["name"] == "lin"])
    p = run("promote", "lin@1", "--to", "stabilized", "--json")
    seen.append((p["promoted"], [g["status"] for g in p["gates"]]))
    refused = run("promote", "lin@2", "--to", "archived", "--json", as_json=False)
    seen.append(refused)
    g = run("gates", "lin@1", "--to", "production", "--json")
    seen.append([gate["gate"] for gate in g["gates"]])
    run("alias", "set", "lin", "best", "1", as_json=False)
    seen.append(run("alias", "ls", "lin", "--json"))
    shown = run("show", "lin@best", "--json")
    seen.append((shown["version"], shown["stage"], len(shown["gate_runs"])))
    run("promote", "lin@9", "--to", "stabilized", as_json=False)   # 3: not found
    run("approve", "lin@1", "--stage", "production", as_json=False)  # 11: own version
    run("reject", "lin@1", "--stage", "production", "--comment", " ", as_json=False)  # 2
    run("promote", "lin@1", "--to", "production", "--json")
    d = run("deploy", "status", "--json")
    seen.append((d["lin"]["stable"], d["lin"]["candidate"]))
    run("promote", "lin@2", "--to", "stabilized", "--json")
    d = run("deploy", "lin@2", "--canary", "20", "--json")
    seen.append((d["stable"], d["candidate"], d["weight"]))
    run("deploy", "lin", "--weight", "40", "--json")
    d = run("deploy", "lin", "--providers", "cuda:device_id=0,cpu", "--fallback", "cpu",
            "--json")
    seen.append((d["candidate"], d["providers"]))
    d = run("deploy", "lin", "--providers", "default", "--json")
    seen.append(d["providers"])
    run("deploy", "lin", "--providers", "gpu", as_json=False)   # 2: unknown provider
    d = run("rollback", "lin", "--reason", "errors", as_json=False)
    h = run("history", "lin", "--json")
    seen.append([(r["kind"], r["name"], r["version"]) for r in h["holdings"]])
    events = run("audit", "log", "--model", "lin", "--json")
    seen.append([e["type"] for e in events])
    seen.append(run("audit", "verify", "--json")["ok"])
    run("evidence", "lin@1", str(out), as_json=False)
    seen.append(sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()))
    return seen


def test_cli_remote_mode_behaves_as_local_mode(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("LOCKGATE_")]:
        monkeypatch.delenv(key)
    local_home = tmp_path / "local"
    local_home.mkdir()
    (local_home / "lockgate.toml").write_text(SIGNATURE_ONLY, encoding="utf-8")
    monkeypatch.setenv("LOCKGATE_HOME", str(local_home))
    monkeypatch.setenv("LOCKGATE_USER", "admin")
    local = _journey(capsys, registry.onnx, tmp_path / "ev-local")

    monkeypatch.setenv("LOCKGATE_SERVER", registry.url)
    monkeypatch.setenv("LOCKGATE_TOKEN", registry.tokens["admin"])
    monkeypatch.setenv("LOCKGATE_HOME", str(tmp_path / "must-not-be-used"))
    remote = _journey(capsys, registry.onnx, tmp_path / "ev-remote")
    assert not (tmp_path / "must-not-be-used").exists()
    assert remote == local
    codes = [x for x in local if isinstance(x, tuple) and len(x) == 2
             and isinstance(x[1], int) and isinstance(x[0], str)]
    assert ("promote", 1) in codes   # gate refused
    assert ("promote", 3) in codes   # not found
    assert ("approve", 11) in codes  # separation of duties
    assert ("reject", 2) in codes    # invalid input
    assert (2, {"providers": [{"name": "CUDAExecutionProvider", "options": {"device_id": "0"}},
                              {"name": "CPUExecutionProvider"}], "fallback": "cpu"}) in local


def test_local_only_commands_refuse_remote_mode(
        registry: Registry, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOCKGATE_SERVER", registry.url)
    monkeypatch.setenv("LOCKGATE_TOKEN", registry.tokens["view"])
    code, _, err = run_cli(capsys, "reproduce", "lin@1")
    assert code == 2
    assert "not through --server" in err
    code, _, err = run_cli(capsys, "register", "--from", "x:y", "--name", "n")
    assert code == 2
    assert "uploads an .onnx file" in err
    monkeypatch.setenv("LOCKGATE_TOKEN", "lgt_nope")
    code, _, err = run_cli(capsys, "models")
    assert code == 12
    assert err.startswith("error: the API token is malformed")
    assert "lgt_nope" not in err


def test_python_connect(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "external"
    folder.mkdir()
    # an ONNX file with external data travels as a bundle with its data file
    import onnx

    from onnx_models import linear_onnx

    proto = linear_onnx()
    onnx.save_model(proto, folder / "ext.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").exists()
    with lockgate.connect(registry.url, registry.tokens["dev"]) as reg:
        v = reg.register(folder / "ext.onnx", name="py-ext", metrics={"auc": 0.8},
                         lock_file=None)
        assert v.creator == "dev"
        assert v.metrics == {"auc": 0.8}
        assert reg.get("py-ext").number == v.number
        assert reg.get(f"py-ext@{v.number}").digest == v.digest
        with pytest.raises(AccessDeniedError):  # archiving, like production, takes a deployer
            reg.promote(f"py-ext@{v.number}", "archived")
        with pytest.raises(AccessDeniedError):
            reg.approve(f"py-ext@{v.number}", "production")
        with pytest.raises(NotFoundError):
            reg.get("py-ext@99")
    with lockgate.connect(registry.url, registry.tokens["admin"]) as admin:
        with pytest.raises(InvalidInputError, match="unknown gate"):
            admin.waive(f"py-ext@{v.number}", "production", "nope", reason="x",
                        expires=date.today() + timedelta(days=3))
        seen: list[str] = []
        with pytest.raises(GateFailedError) as refused:
            admin.promote(f"py-ext@{v.number}", "archived", on_result=lambda r: seen.append(
                r.gate))
        assert [r.gate for r in refused.value.results] == ["parity"]
        assert seen == ["parity"]
        assert admin.get(f"py-ext@{v.number}").stage == "prototype"
    with lockgate.connect(registry.url, "lgt_000000000000_" + "x" * 64) as bad, \
            pytest.raises(AuthenticationError):
        bad.models()
    shutil.rmtree(folder)
