"""Every write route of the registry API, allowed for the role that owns it and refused (403,
nothing changed, `access.denied` audited) for one that does not; 401 without a valid token;
the actor of every audit event is the token's user; tokens never reach logs or storage."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lockgate.registry import OPERATIONS
from registry_server import Registry

pytestmark = pytest.mark.slow

_seq = itertools.count(1)
OCTET = {"Content-Type": "application/octet-stream"}


def _register(reg: Registry, name: str, user: str = "dev") -> dict[str, Any]:
    with reg.client(user) as c:
        r = c.post(f"/api/v1/models/{name}/versions", content=reg.onnx.read_bytes(),
                   headers=OCTET)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _in_production(reg: Registry, prefix: str = "m") -> str:
    """A model with v1 in production and v2 in stabilized."""
    name = f"{prefix}-{next(_seq)}"
    _register(reg, name)
    _register(reg, name)
    with reg.open() as lg:
        lg.promote(f"{name}@1", "stabilized", actor="ops")
        lg.promote(f"{name}@1", "production", actor="ops")
        lg.promote(f"{name}@2", "stabilized", actor="ops")
    return name


def _with_canary(reg: Registry) -> str:
    name = _in_production(reg)
    with reg.open() as lg:
        lg.deploy(f"{name}@1", actor="ops")
        lg.deploy(f"{name}@2", canary=20, actor="ops")
    return name


@dataclass(frozen=True)
class Case:
    allowed: str
    refused: str
    prepare: Callable[[Registry], str]
    request: Callable[[Registry, str], tuple[str, str, dict[str, Any]]]
    event: str
    """The audit event type the allowed request appends."""


def _fresh(reg: Registry) -> str:
    name = f"m-{next(_seq)}"
    _register(reg, name)
    return name


def _aliased(reg: Registry) -> str:
    name = _fresh(reg)
    with reg.open() as lg:
        lg.set_alias(name, "champ", 1, actor="ops")
    return name


def _token_id(reg: Registry) -> str:
    with reg.open() as lg:
        row, _ = lg.create_token("view", actor="ops")
    return row.id


_SOON = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()

CASES: dict[str, Case] = {
    "registerVersion": Case("dev", "appr", lambda r: f"new-{next(_seq)}", lambda r, m: (
        "POST", f"/api/v1/models/{m}/versions",
        {"content": r.onnx.read_bytes(), "headers": OCTET}), "model.registered"),
    "setAlias": Case("dev", "view", _fresh, lambda r, m: (
        "PUT", f"/api/v1/models/{m}/aliases/champ", {"json": {"version": 1}}), "alias.set"),
    "removeAlias": Case("dev", "appr", _aliased, lambda r, m: (
        "DELETE", f"/api/v1/models/{m}/aliases/champ", {}), "alias.removed"),
    "promoteVersion": Case("dev", "view", _fresh, lambda r, m: (
        "POST", f"/api/v1/models/{m}/versions/1/promote", {"json": {"to": "stabilized"}}),
        "version.stage_changed"),
    "checkGates": Case("dev", "view", _fresh, lambda r, m: (
        "POST", f"/api/v1/models/{m}/versions/1/gates", {"json": {"to": "stabilized"}}), ""),
    "approveVersion": Case("appr", "dev", _fresh, lambda r, m: (
        "POST", f"/api/v1/models/{m}/versions/1/approve",
        {"json": {"stage": "production", "comment": "reviewed"}}), "version.approved"),
    "rejectVersion": Case("appr", "depl", _fresh, lambda r, m: (
        "POST", f"/api/v1/models/{m}/versions/1/reject",
        {"json": {"stage": "production", "comment": "bias"}}), "version.rejected"),
    "waiveGate": Case("appr", "dev", _fresh, lambda r, m: (
        "POST", f"/api/v1/models/{m}/versions/1/waive",
        {"json": {"stage": "production", "gate": "licenses", "reason": "vendor terms",
                  "expires": _SOON}}), "gate.waived"),
    "deploy": Case("depl", "dev", _in_production, lambda r, m: (
        "POST", f"/api/v1/deployments/{m}", {"json": {"version": 2, "canary": 10}}),
        "deployment.changed"),
    "setCanaryWeight": Case("depl", "appr", _with_canary, lambda r, m: (
        "POST", f"/api/v1/deployments/{m}/weight", {"json": {"weight": 50}}),
        "deployment.changed"),
    "promoteCandidate": Case("depl", "dev", _with_canary, lambda r, m: (
        "POST", f"/api/v1/deployments/{m}/promote-candidate", {}), "deployment.changed"),
    "setBatching": Case("depl", "view", _in_production, lambda r, m: (
        "PUT", f"/api/v1/deployments/{m}/batching",
        {"json": {"batching": {"max_batch_size": 8}}}), "deployment.changed"),
    "setProviders": Case("depl", "view", _in_production, lambda r, m: (
        "PUT", f"/api/v1/deployments/{m}/providers",
        {"json": {"providers": {"providers": [{"name": "CUDAExecutionProvider"},
                                              {"name": "CPUExecutionProvider"}],
                                "fallback": "cpu"}}}), "deployment.changed"),
    "rollback": Case("depl", "appr", _with_canary, lambda r, m: (
        "POST", f"/api/v1/deployments/{m}/rollback", {"json": {"reason": "errors"}}),
        "deployment.changed"),
    "putUser": Case("admin", "depl", lambda r: f"u-{next(_seq)}", lambda r, m: (
        "POST", "/api/v1/users", {"json": {"name": m, "roles": ["viewer"]}}), "user.changed"),
    "createToken": Case("admin", "dev", lambda r: "view", lambda r, m: (
        "POST", f"/api/v1/users/{m}/tokens", {"json": {"description": "ci", "days": 7}}),
        "token.created"),
    "revokeToken": Case("admin", "appr", _token_id, lambda r, m: (
        "DELETE", f"/api/v1/tokens/{m}", {}), "token.revoked"),
}


def test_every_write_route_has_a_role_case() -> None:
    writes = {op.op_id for op in OPERATIONS if op.method != "GET"}
    assert writes == set(CASES)


def _audit(reg: Registry) -> list[dict[str, Any]]:
    with reg.client("admin") as c:
        events: list[dict[str, Any]] = c.get("/api/v1/audit").json()["events"]
    return events


@pytest.mark.parametrize("op_id", sorted(CASES))
def test_write_route_refused_without_the_role(registry: Registry, op_id: str) -> None:
    case = CASES[op_id]
    target = case.prepare(registry)
    method, path, kwargs = case.request(registry, target)
    before = _audit(registry)
    with registry.client(case.refused) as c:
        r = c.request(method, path, **kwargs)
    assert r.status_code == 403, r.text
    assert r.json()["type"] == "AccessDeniedError"
    assert case.refused in r.json()["error"]
    after = _audit(registry)
    new = after[len(before):]
    assert [e["type"] for e in new] == ["access.denied"]  # nothing else happened
    assert new[0]["actor"] == case.refused
    assert new[0]["payload"]["action"] == op_id


@pytest.mark.parametrize("op_id", sorted(CASES))
def test_write_route_allowed_with_the_role(registry: Registry, op_id: str) -> None:
    case = CASES[op_id]
    target = case.prepare(registry)
    method, path, kwargs = case.request(registry, target)
    before = _audit(registry)
    with registry.client(case.allowed) as c:
        r = c.request(method, path, **kwargs)
    assert r.status_code in (200, 201), r.text
    new = _audit(registry)[len(before):]
    if case.event:
        assert case.event in [e["type"] for e in new]
    assert all(e["actor"] == case.allowed for e in new), new


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/audit", "/api/v1/whoami"])
@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Bearer lgt_000000000000_" + "a" * 64,
                                    "Basic YWRtaW46YWRtaW4="])
def test_no_valid_token_is_401(registry: Registry, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = httpx.get(registry.url + path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["type"] == "AuthenticationError"


def test_disabled_user_revoked_and_unprivileged_tokens(registry: Registry) -> None:
    with registry.client("off") as c:
        assert c.get("/api/v1/whoami").status_code == 401
    with registry.client("nobody") as c:  # a user with no role cannot even read
        assert c.get("/api/v1/models").status_code == 403
    with registry.open() as lg:
        row, token = lg.create_token("view", actor="ops")
    c = httpx.Client(base_url=registry.url, headers={"Authorization": f"Bearer {token}"})
    assert c.get("/api/v1/whoami").json()["name"] == "view"
    with registry.client("admin") as admin:
        assert admin.delete(f"/api/v1/tokens/{row.id}").json()["revoked_at"]
    r = c.get("/api/v1/whoami")
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]
    c.close()


def test_promotion_into_production_needs_the_deployer_role(registry: Registry) -> None:
    name = _fresh(registry)
    with registry.open() as lg:
        lg.promote(f"{name}@1", "stabilized", actor="ops")
    path = f"/api/v1/models/{name}/versions/1/promote"
    with registry.client("dev") as c:
        r = c.post(path, json={"to": "production"})
    assert r.status_code == 403
    assert "deployer" in r.json()["error"]
    with registry.client("depl") as c:
        r = c.post(path, json={"to": "production"})
    assert r.status_code == 200, r.text
    assert r.json()["to"] == "production"
    assert r.json()["version"]["stage"] == "production"


def test_per_model_grants(registry: Registry) -> None:
    granted = _in_production(registry, prefix="gm")
    other = _in_production(registry)
    with registry.client("gdep") as c:
        assert c.post(f"/api/v1/deployments/{granted}", json={"version": 2, "canary": 5}
                      ).status_code == 200
        assert c.post(f"/api/v1/deployments/{other}", json={"version": 2, "canary": 5}
                      ).status_code == 403
        ok = c.post(f"/api/v1/models/gm-new-{next(_seq)}/versions",
                    content=registry.onnx.read_bytes(), headers=OCTET)
        assert ok.status_code == 201
        assert ok.json()["creator"] == "gdep"
        assert c.post("/api/v1/models/other-new/versions", content=registry.onnx.read_bytes(),
                      headers=OCTET).status_code == 403
        assert c.get(f"/api/v1/models/{other}/versions/1").status_code == 200  # reads: all


def test_separation_of_duties_holds_over_http(registry: Registry) -> None:
    name = f"sod-{next(_seq)}"
    _register(registry, name, user="admin")  # admin holds every role, approver included
    with registry.client("admin") as c:
        r = c.post(f"/api/v1/models/{name}/versions/1/approve", json={"stage": "production"})
    assert r.status_code == 403
    assert "separation of duties" in r.json()["error"]


def test_tokens_never_reach_logs_or_storage(registry: Registry) -> None:
    # exercise success, refusal, error and bad-token paths with every token
    for user, token in registry.tokens.items():
        with registry.client(user) as c:
            c.get("/api/v1/whoami")
            c.post("/api/v1/models/x/versions/1/promote", json={"to": "nowhere"})
        httpx.get(registry.url + "/api/v1/models", headers={"Authorization": token})
    with registry.open() as lg:
        stored = repr([t.to_dict() for t in lg.tokens()]) + repr(
            [r.to_dict() for r in lg.audit_log()])
        hashes = {t.hash for t in lg.meta.list_tokens()}
    log = "".join(registry.log)
    assert "POST /api/v1/models/x/versions/1/promote" in log  # the access log is on
    for token in registry.tokens.values():
        secret = token.split("_", 2)[2]
        assert secret not in log
        assert secret not in stored
        assert token not in hashes
    db = b"".join(f.read_bytes() for p in registry.home.glob("lockgate.db*")  # .locks/ too
                  for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file())
    assert all(t.split("_", 2)[2].encode() not in db for t in registry.tokens.values())
