"""The policy file: per-transition gates with parameters, validated on load with the key named,
shown and checked from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gate_models import write_policy

from lockgate.api.facade import Lockgate
from lockgate.config.settings import DEFAULT_CONFIG, load_settings
from lockgate.errors import ConfigError


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1",
                                       "COLUMNS": "200", **(env or {})}, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_default_policy_follows_the_seed(tmp_path: Path) -> None:
    home = tmp_path / "h"
    write_policy(home, DEFAULT_CONFIG)  # the commented default file changes nothing
    s = load_settings(home, env={})
    assert [g.name for g in s.gates_for("prototype", "stabilized")] == [
        "parity", "pinned_dependencies", "seeds_recorded", "reproducible"]
    assert [g.name for g in s.gates_for("stabilized", "production")] == [
        "parity", "sbom_valid", "signature", "vulnerabilities", "licenses", "metrics",
        "infra_validation", "latency_budget", "approval", "rollback_ready"]


def test_inline_parameters_override_gate_tables(tmp_path: Path) -> None:
    home = tmp_path / "h"
    write_policy(home, '[gates]\n"*" = ["parity"]\n'
                       '"stabilized->production" = [{ gate = "latency_budget", p99_ms = 20 }]\n'
                       '[gate.latency_budget]\np99_ms = 50\nconcurrency = 2\n')
    s = load_settings(home, env={})
    (spec,) = s.gates_for("stabilized", "production")
    assert spec.params == {"p99_ms": 20, "concurrency": 2}


@pytest.mark.parametrize(("policy", "message"), [
    ('[gates]\n"*" = []\n', 'gates."*": a promotion needs at least one gate'),
    ('[gates]\n"*" = ["nope"]\n', "gates.\"*\"[0]: unknown gate 'nope'"),
    ('[gates]\n"*" = [{ gate = "latency_budget", p99 = 3 }]\n',
     "gates.\"*\"[0] (latency_budget): unknown parameter(s) ['p99']"),
    ('[gates]\n"*" = [{ gate = "approval", required = "two" }]\n',
     "gates.\"*\"[0] (approval).required: expected int, got 'two'"),
    ('[gates]\n"*" = ["approval"]\n[gate.approval]\nrequired = 0\n',
     "(approval).required: must be at least 1"),
    ('[gates]\n"*" = ["metrics"]\n[gate.metrics]\nauc = { threshold = 0.8 }\n',
     "(metrics).auc: missing parameter 'greater_is_better'"),
    ('[gates]\n"*" = ["parity"]\n[gate.nope]\nx = 1\n', "[gate.nope]: unknown gate"),
])
def test_bad_policy_fails_on_load_naming_the_key(home: Path, policy: str, message: str) -> None:
    write_policy(home, policy)
    with pytest.raises(ConfigError) as info:
        Lockgate.open(home)
    assert message in info.value.message
    code, _, err = run("policy", "check")
    assert code == 2
    assert message in err


def test_policy_file_from_the_environment(home: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[gates]\n"*" = ["seeds_recorded"]\n[roles]\napprover = ["ann"]\n',
                      encoding="utf-8")
    code, out, _ = run("policy", "show", "--json", env={"LOCKGATE_POLICY": str(policy)})
    assert code == 0
    doc = json.loads(out)
    assert doc["source"] == str(policy.resolve())
    assert doc["effective"]["prototype->production"] == [{"gate": "seeds_recorded"}]
    assert doc["roles"] == {"approver": ["ann"]}
    assert "p99_ms" in doc["gates"]["latency_budget"]
    code, out, _ = run("policy", "check", str(policy))
    assert code == 0
    assert "policy OK" in out
    policy.write_text("[serve]\nport = 1\n", encoding="utf-8")
    code, _, err = run("policy", "check", str(policy))
    assert code == 2
    assert "serve.port is not a policy setting" in err
    assert "a policy file sets only provider_fallback, providers" in err
    policy.write_text("[storage]\nhome = \"x\"\n", encoding="utf-8")
    code, _, err = run("policy", "check", str(policy))
    assert code == 2
    assert "a policy file holds only" in err
