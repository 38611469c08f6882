"""The supply-chain gates on real registered versions: sbom_valid, signature, vulnerabilities
(severity, allow-list expiry, data age) and licenses."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.config.settings import load_settings
from lockgate.errors import GateFailedError
from lockgate.gates import GateContext, build
from lockgate.store.metadata import VulnSnapshot
from lockgate.types import GateStatus, Version

SUPPLY_GATES = '["sbom_valid", "signature", "vulnerabilities", "licenses"]'
ONNX_VERSION = importlib.metadata.version("onnx")


def _home(home: Path, extra: str = "", gates: str = SUPPLY_GATES) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "lockgate.toml").write_text(
        f'[gates]\n"prototype->stabilized" = {gates}\n{extra}', encoding="utf-8")
    return home


def _osv(folder: Path, vid: str, package: str, *, severity: str = "HIGH",
         modified: datetime | None = None, aliases: Sequence[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (modified or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {
        "id": vid, "modified": stamp, "aliases": list(aliases),
        "summary": f"planted issue in {package}",
        "affected": [{"package": {"ecosystem": "PyPI", "name": package},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
        "database_specific": {"severity": severity},
    }
    (folder / f"{vid}.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def _vuln_gate_only(home: Path, extra: str = "") -> Path:
    """The vulnerabilities gate alone, accepting the hand-made (partial) snapshots below."""
    partial = ('[gate.vulnerabilities]\nallow_partial = true\n'
               'reason = "hand-made records of the test"\n')
    return _home(home, partial + extra, '["vulnerabilities"]')


def test_sbom_and_signature_gates_pass_on_a_sealed_version(
    home: Path, linear_model: onnx.ModelProto
) -> None:
    with Lockgate.open(_home(home, gates='["sbom_valid", "signature"]')) as lg:
        lg.register(linear_model, name="m")
        result = lg.promote("m@1", "stabilized")
    assert [r.gate for r in result.results] == ["sbom_valid", "signature"]
    assert all(r.status is GateStatus.PASS for r in result.results)


def test_planted_vulnerability_blocks_promotion(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    with Lockgate.open(_vuln_gate_only(home)) as lg:
        lg.register(linear_model, name="m")
        lg.import_vulns(_osv(tmp_path / "osv", "GHSA-test-0001", "onnx"))
        with pytest.raises(GateFailedError) as info:
            lg.promote("m@1", "stabilized")
        assert "GHSA-test-0001" in info.value.message
        assert f"onnx {ONNX_VERSION}" in info.value.message
        assert lg.get("m@1").stage == "prototype"
        run = lg.gate_runs("m@1")[-1]
        assert not run.passed
        findings = run.results[0]["measured"]["findings"]
        assert findings[0]["id"] == "GHSA-test-0001"
        assert findings[0]["outcome"] == "blocks"


def test_severity_at_or_below_the_threshold_passes(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    with Lockgate.open(_vuln_gate_only(home)) as lg:
        lg.register(linear_model, name="m")
        lg.import_vulns(_osv(tmp_path / "osv", "GHSA-test-0002", "onnx", severity="MODERATE"))
        result = lg.promote("m@1", "stabilized")
    assert result.results[0].status is GateStatus.PASS


def test_allow_list_with_future_expiry_passes_and_expired_blocks(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    future = date.today() + timedelta(days=30)
    past = date.today() - timedelta(days=1)
    allow = ('[[vulnerabilities.allow]]\nid = "CVE-2099-0003"\nexpires = {when}\n'
             'reason = "not reachable: we never parse untrusted protobuf"\n')
    osv = _osv(tmp_path / "osv", "GHSA-test-0003", "onnx", aliases=["CVE-2099-0003"])
    with Lockgate.open(_vuln_gate_only(home, allow.format(when=future))) as lg:
        lg.register(linear_model, name="m")
        lg.register(linear_model, name="m")
        lg.import_vulns(osv)
        result = lg.promote("m@1", "stabilized")
        assert result.results[0].status is GateStatus.PASS
        finding = result.results[0].measured["findings"][0]
        assert finding["outcome"] == "allowed"
        assert "not reachable" in finding["note"]
    _vuln_gate_only(home, allow.format(when=past))
    with Lockgate.open(home) as lg, pytest.raises(GateFailedError, match=f"expired on {past}"):
        lg.promote("m@2", "stabilized")


def test_stale_or_missing_data_blocks(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    with Lockgate.open(_vuln_gate_only(home, "[vulnerabilities]\nmax_age_days = 7\n")) as lg:
        lg.register(linear_model, name="m")
        with pytest.raises(GateFailedError, match="no vulnerability data"):
            lg.promote("m@1", "stabilized")
        old = datetime.now(UTC) - timedelta(days=10)
        lg.import_vulns(_osv(tmp_path / "osv", "GHSA-test-0004", "not-installed-pkg",
                             modified=old))
        with pytest.raises(GateFailedError, match="10 days old"):
            lg.promote("m@1", "stabilized")


def test_licenses_gate_refuses_a_denied_license(
    home: Path, linear_model: onnx.ModelProto
) -> None:
    with Lockgate.open(_home(home, '[licenses]\ndeny = ["Apache-2.0"]\n',
                             '["licenses"]')) as lg:
        lg.register(linear_model, name="m")
        with pytest.raises(GateFailedError) as info:
            lg.promote("m@1", "stabilized")
        refused = lg.gate_runs("m@1")[-1].results[0]["measured"]["not_allowed"]
    assert "denied: Apache-2.0" in info.value.message
    onnx_row = next(r for r in refused if r["name"] == "onnx")
    assert onnx_row["version"] == ONNX_VERSION
    assert onnx_row["outcome"] == "denied"
    assert onnx_row["expression"] == "Apache-2.0"


class _Bom:
    """The gate's evidence interface over a hand-written BOM (the gate logic alone)."""

    def __init__(self, components: list[dict[str, Any]]) -> None:
        self.doc = {"components": components}

    def file(self, name: str) -> bytes:
        return json.dumps(self.doc).encode()

    def verify_signature(self) -> str | None:
        return None

    def vulnerability_data(self, packages: Sequence[str]) -> tuple[VulnSnapshot | None,
                                                                   list[str]]:
        return None, []


def _lib(name: str, licenses: list[dict[str, Any]], source: str = "expression",
         problem: str | None = None) -> dict[str, Any]:
    props = [{"name": "lockgate:license:source", "value": source}]
    if problem:
        props.append({"name": "lockgate:license:problem", "value": problem})
    return {"type": "library", "name": name, "version": "1.0", "licenses": licenses,
            "properties": props}


def _licenses(home: Path, components: list[dict[str, Any]]) -> Any:
    settings = load_settings(home)
    v = Version.__new__(Version)
    ctx = GateContext(v, "prototype", "stabilized", "tester", settings, None, _Bom(components))
    return build(["licenses"]).evaluate(ctx)[0]


def test_license_outcomes_from_the_bom(home: Path) -> None:
    allowed = _lib("a", [{"expression": "MIT OR GPL-3.0-only"}])
    assert _licenses(home, [allowed]).status is GateStatus.PASS
    denied = _lib("b", [{"expression": "AGPL-3.0-only"}])
    result = _licenses(home, [allowed, denied])
    assert result.status is GateStatus.FAIL
    assert "b 1.0: denied: AGPL-3.0-only" in result.message
    named = _lib("c", [{"license": {"name": "Proprietary EULA"}}], "license-field",
                 "License field 'Proprietary EULA' is not a known license name")
    result = _licenses(home, [named])
    assert result.status is GateStatus.FAIL
    assert "needs review" in result.message
    missing = _lib("d", [], "none")
    result = _licenses(home, [missing])
    assert result.status is GateStatus.FAIL
    assert "needs review" in result.message
