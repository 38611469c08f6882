"""The registry API's OpenAPI document: valid OpenAPI 3.1, a route for every registry
operation the CLI offers, and schemathesis (the stock CLI) fuzzing a real server against it —
no 5xx, every response matching the document, invalid data refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from lockgate.cli.main import cli
from lockgate.registry import OPERATIONS, openapi_document
from registry_server import Registry

# CLI command -> the API operations that carry it out
CLI_OPERATIONS = {
    "register": {"registerVersion"},
    "models": {"listModels"},
    "versions": {"listVersions"},
    "show": {"showVersion"},
    "promote": {"promoteVersion"},
    "gates": {"checkGates"},
    "approve": {"approveVersion"},
    "reject": {"rejectVersion"},
    "waive": {"waiveGate"},
    "history": {"modelHistory"},
    "deploy": {"deploy", "listDeployments", "setCanaryWeight", "promoteCandidate",
               "setBatching", "setProviders"},
    "rollback": {"rollback"},
    "alias set": {"setAlias"},
    "alias rm": {"removeAlias"},
    "alias ls": {"listAliases"},
    "evidence": {"downloadEvidence"},
    "audit log": {"auditLog"},
    "audit verify": {"auditVerify"},
    "user add": {"putUser", "createToken"},
    "user ls": {"listUsers"},
    "token create": {"createToken"},
    "token ls": {"listTokens"},
    "token revoke": {"revokeToken"},
    "whoami": {"whoami"},
}
# what runs models or reads local files, and so stays local
LOCAL_ONLY = {"init", "policy", "reproduce", "_rebuild", "serve", "server", "keys",
              "vulndb", "scan", "demo", "reference", "monitor", "compare", "report", "k8s",
              "docker", "ui", "fsck", "gc", "optimize"}


def test_document_is_valid_openapi_31() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    ids = [op.op_id for op in OPERATIONS]
    assert len(ids) == len(set(ids))


def test_every_registry_cli_command_has_an_api_operation() -> None:
    import click

    commands: set[str] = set()
    for name, command in cli.commands.items():
        if isinstance(command, click.Group) and name not in LOCAL_ONLY:
            commands |= {f"{name} {sub}" for sub in command.commands}
        else:
            commands.add(name)
    assert commands - LOCAL_ONLY == set(CLI_OPERATIONS)
    ids = {op.op_id for op in OPERATIONS}
    assert set().union(*CLI_OPERATIONS.values()) <= ids


def test_served_document_is_the_same(registry: Registry) -> None:
    served = httpx.get(registry.url + "/openapi.json").json()
    assert served == json.loads(json.dumps(openapi_document()))


def _schemathesis(registry: Registry, tmp_path: Path, token: str, *args: str) -> str:
    exe = Path(sys.executable).parent / "schemathesis"
    env = {**os.environ, "LG_TOKEN": token, "SCHEMATHESIS_HOOKS": ""}
    config = tmp_path / "schemathesis.toml"
    p = subprocess.run(
        [str(exe), "--config-file", str(config), "run", registry.url + "/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,negative_data_rejection",
         "--seed", "7", "--generation-database", "none", "--no-color", "--request-timeout",
         "120", *args],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert " passed" in p.stdout
    return p.stdout


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_or_schema_mismatch(
        registry: Registry, tmp_path: Path) -> None:
    with registry.client("dev") as c:
        r = c.post("/api/v1/models/fz/versions", content=registry.onnx.read_bytes(),
                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201
    with registry.open() as lg:
        lg.promote("fz@1", "stabilized", actor="ops")
        lg.promote("fz@1", "production", actor="ops")
        lg.set_alias("fz", "champ", 1, actor="ops")
        row, token = lg.create_token("admin", actor="ops")
    # pass 1: random identifiers (mostly 404s and 400s: the refusal paths)
    (tmp_path / "schemathesis.toml").write_text(
        'headers = { Authorization = "Bearer ${LG_TOKEN}" }\n'
        "[generation]\nmax-examples = 8\n", encoding="utf-8")
    identity = ("--exclude-operation-id", "putUser", "--exclude-operation-id", "revokeToken")
    _schemathesis(registry, tmp_path, token, *identity)
    # pass 2: the model that exists, so bodies reach the registry's own logic
    (tmp_path / "schemathesis.toml").write_text(
        'headers = { Authorization = "Bearer ${LG_TOKEN}" }\n'
        "[generation]\nmax-examples = 8\n"
        "[[operations]]\n"
        'include-path-regex = "^/api/v1/(models|deployments)/\\\\{name\\\\}"\n'
        'parameters = { name = "fz", ref = "1", alias = "champ" }\n', encoding="utf-8")
    _schemathesis(registry, tmp_path, token, *identity)
    # pass 3: user and token administration last (it may revoke the token it runs with)
    (tmp_path / "schemathesis.toml").write_text(
        'headers = { Authorization = "Bearer ${LG_TOKEN}" }\n'
        "[generation]\nmax-examples = 8\n", encoding="utf-8")
    _schemathesis(registry, tmp_path, token, "--include-operation-id", "putUser",
                  "--include-operation-id", "revokeToken", "--phases", "coverage,fuzzing")
    assert "Traceback" not in "".join(registry.log)
    assert row.id
