"""The runtime closure: found from this venv's real installed metadata, recorded in the BOM as
CycloneDX scopes, and what the licenses and vulnerabilities gates judge by default."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.audit import now
from lockgate.config.settings import GateSpec, load_settings
from lockgate.environment.fingerprint import capture_environment
from lockgate.errors import ConfigError, GateFailedError
from lockgate.gates import Evidence, GateContext, build
from lockgate.runtime.onnxmeta import signature_of
from lockgate.supplychain.bom import build_bom, validate_bom
from lockgate.supplychain.closure import (
    closure_of,
    judged_components,
    runtime_closure,
)
from lockgate.types import Digest, GateStatus, Version
from onnx_models import linear_onnx

DEV_TOOLS = ("pytest", "mypy", "moto", "ruff")
SHIPPED = ("onnxruntime", "numpy", "protobuf", "lockgate")


@pytest.fixture(scope="module")
def bom() -> dict[str, Any]:
    data = linear_onnx().SerializeToString()
    model = onnx.load_from_string(data)
    env = capture_environment(seeds={"seed": 1}, providers=["CPUExecutionProvider"])
    version = Version(
        name="m", number=1, digest=Digest.of_bytes(data), framework="onnx",
        framework_version=onnx.__version__, opset=17, ir_version=8,
        signature=signature_of(model), parity=None, environment=env, creator="tester",
        created_at=now(), description="", tags={}, metrics={}, seeds={"seed": 1})
    return build_bom(version, onnx_bytes=data, producer="tests 1.0",
                     lock_hashes={"only-in-lock==1.2": [f"sha256:{'a' * 64}"]})


def _part(bom: dict[str, Any], name: str) -> tuple[str | None, str | None]:
    c = next(c for c in bom["components"] if c["name"].lower() == name)
    props = {p["name"]: p["value"] for p in c.get("properties", [])}
    return c.get("scope"), props.get("lockgate:closure")


def test_the_venv_closure_holds_what_serving_needs_and_no_dev_tool() -> None:
    closure = runtime_closure()
    assert closure.roots == ("onnxruntime", "lockgate")
    for name in SHIPPED:
        assert name in closure.members, name
    for name in (*DEV_TOOLS, "torch"):
        assert name not in closure.members, name
    # uvicorn[standard]: lockgate asks for the extra, so its extra-only requirements ship
    assert {"uvicorn", "websockets", "watchfiles"} <= closure.members


def test_extras_are_followed_only_when_asked_and_markers_are_evaluated() -> None:
    requires = {
        "app": ["lib[fast]", "old; python_version < '3'", "gone>=1"],
        "lib": ["core", "speedup; extra == 'fast'", "docs; extra == 'docs'"],
        "core": [], "speedup": [], "docs": [], "old": [], "devtool": ["lib"],
    }
    closure = closure_of(["app", "not-installed"], requires)
    assert closure.roots == ("app",)
    assert closure.members == {"app", "lib", "core", "speedup"}
    assert closure.unresolved == ("gone",)
    # the same distribution reached again with a new extra is expanded for that extra
    requires["app"].append("lib[docs]")
    assert "docs" in closure_of(["app"], requires).members


def test_the_bom_marks_each_library_runtime_or_training(bom: dict[str, Any]) -> None:
    validate_bom(bom)  # scope and properties are valid CycloneDX 1.6
    for name in SHIPPED:
        assert _part(bom, name) == ("required", "runtime"), name
    for name in DEV_TOOLS:
        assert _part(bom, name) == ("excluded", "training"), name
    # a package the lock file pins but the environment does not record: training environment
    assert _part(bom, "only-in-lock") == ("excluded", "training")
    meta = {p["name"]: p["value"] for p in bom["metadata"]["properties"]}
    libraries = [c for c in bom["components"] if c["type"] == "library"]
    runtime = [c for c in libraries if c.get("scope") == "required"]
    assert meta["lockgate:closure:roots"] == "onnxruntime,lockgate"
    assert meta["lockgate:closure:runtime_libraries"] == str(len(runtime))
    assert meta["lockgate:closure:libraries"] == str(len(libraries))
    assert 0 < len(runtime) < len(libraries)


def test_judged_components_by_scope(bom: dict[str, Any]) -> None:
    runtime = judged_components(bom, "runtime")
    everything = judged_components(bom, "all")
    names = {c["name"].lower() for c in runtime.components}
    assert runtime.scoped
    assert "onnxruntime" in names
    assert "pytest" not in names
    assert len(everything.components) == everything.total > len(runtime.components)
    assert f"{len(runtime.components)} of {runtime.total}" in runtime.note
    old = {"components": [{k: v for k, v in c.items() if k != "scope"}
                          | {"properties": [p for p in c.get("properties", [])
                                            if not p["name"].startswith("lockgate:closure")]}
                          for c in bom["components"]]}
    unscoped = judged_components(old, "runtime")
    assert not unscoped.scoped
    assert len(unscoped.components) == runtime.total
    assert "records no runtime closure" in unscoped.note
    with pytest.raises(ConfigError, match="scope"):
        judged_components(bom, "prod")


class _Evidence:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def file(self, name: str) -> bytes:
        return json.dumps(self.doc).encode()

    def verify_signature(self) -> str | None:
        return None

    def vulnerability_data(self, packages: Any) -> Any:
        return None, []


def _denied_only_in_training(bom: dict[str, Any]) -> dict[str, Any]:
    """The real BOM with one training-environment library given a denied license."""
    doc: dict[str, Any] = json.loads(json.dumps(bom))
    pytest_lib = next(c for c in doc["components"] if c["name"].lower() == "pytest")
    pytest_lib["licenses"] = [{"expression": "AGPL-3.0-only"}]
    return doc


def _licenses(home: Path, doc: dict[str, Any], params: dict[str, Any]) -> Any:
    ctx = GateContext(Version.__new__(Version), "prototype", "stabilized", "tester",
                      load_settings(home), None, cast("Evidence", _Evidence(doc)))
    return build([GateSpec("licenses", params)]).evaluate(ctx)[0]


def test_licenses_gate_judges_the_runtime_closure_unless_asked_for_all(
    home: Path, bom: dict[str, Any]
) -> None:
    (home / "lockgate.toml").write_text(
        '[licenses]\ndeny = ["AGPL-3.0-only"]\n', encoding="utf-8")
    doc = _denied_only_in_training(bom)
    runtime = _licenses(home, doc, {})
    assert runtime.measured["scope"]["scope"] == "runtime"
    assert "runtime closure" in runtime.message
    assert all(f["name"].lower() != "pytest" for f in runtime.measured["not_allowed"])
    everything = _licenses(home, doc, {"scope": "all"})
    assert everything.status is GateStatus.FAIL
    assert any(f["name"].lower() == "pytest" and f["outcome"] == "denied"
               for f in everything.measured["not_allowed"])
    with pytest.raises(ConfigError, match="one of"):
        _licenses(home, doc, {"scope": "production"})
    old = dict(doc, components=[{k: v for k, v in c.items() if k != "scope"}
                                | {"properties": [p for p in c.get("properties", [])
                                                  if p["name"] != "lockgate:closure"]}
                                for c in doc["components"]])
    unscoped = _licenses(home, old, {})
    assert unscoped.status is GateStatus.FAIL  # every library judged: pytest's denial counts
    assert "records no runtime closure" in unscoped.message
    assert unscoped.measured["scope"]["bom_records_closure"] is False


def _osv(folder: Path, package: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "id": "GHSA-clos-0001", "modified": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "summary": f"planted issue in {package}",
        "affected": [{"package": {"ecosystem": "PyPI", "name": package},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
        "database_specific": {"severity": "CRITICAL"},
    }
    (folder / "GHSA-clos-0001.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def _findings(lg: Lockgate, ref: str, to: str) -> tuple[list[str], dict[str, Any]]:
    with contextlib.suppress(GateFailedError):
        lg.promote(ref, to)
    result = lg.gate_runs(ref)[-1].results[0]
    return [f["package"] for f in result["measured"]["findings"]], result["measured"]["scope"]


def test_vulnerabilities_gate_skips_dev_tools_by_default_and_checks_them_with_all(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    (home / "lockgate.toml").write_text(
        '[gates]\n"prototype->stabilized" = ["vulnerabilities"]\n'
        '"stabilized->production" = ["vulnerabilities"]\n'
        '[gate.vulnerabilities]\nscope = "runtime"\n', encoding="utf-8")
    with Lockgate.open(home) as lg:
        lg.register(linear_model, name="m")
        lg.import_vulns(_osv(tmp_path / "osv", "pytest"))
        found, scope = _findings(lg, "m@1", "stabilized")
        assert "pytest" not in [f.lower() for f in found]
        assert scope["bom_records_closure"]
        assert scope["judged"] < scope["libraries"]
    (home / "lockgate.toml").write_text(
        '[gates]\n"prototype->stabilized" = ["vulnerabilities"]\n'
        '[gate.vulnerabilities]\nscope = "all"\n', encoding="utf-8")
    with Lockgate.open(home) as lg:
        found, scope = _findings(lg, "m@1", "stabilized")
        assert "pytest" in [f.lower() for f in found]
        assert scope["scope"] == "all"
