"""Users, roles, grants and API tokens in the metadata store — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from lockgate.access.identity import Principal, authenticate
from lockgate.api.facade import Lockgate
from lockgate.errors import AuthenticationError, InvalidInputError, NotFoundError


def test_users_tokens_and_roles_round_trip(sql_lg: Lockgate) -> None:
    lg = sql_lg
    lg.add_user("ana", ["developer"], grants=[("fraud-*", "deployer")], actor="root")
    user = lg.users()[0]
    assert (user.name, user.roles, user.grants) == ("ana", ("developer",),
                                                     (("fraud-*", "deployer"),))
    row, token = lg.create_token("ana", description="ci", days=30, actor="root")
    assert token.startswith(f"lgt_{row.id}_")
    assert row.hash not in token
    stored = lg.tokens("ana")[0]
    assert stored.hash == row.hash
    assert stored.expires_at is not None
    who = authenticate(lg.meta, token)
    assert who.name == "ana"
    assert who.can("developer")
    assert who.can("viewer")
    assert not who.can("deployer")
    assert who.can("deployer", "fraud-eu")
    assert not who.can("deployer", "churn")
    # roles from the store count for approvals, as [roles] in the policy does
    assert not lg.has_role("ana", "approver", "fraud-eu")
    lg.add_user("ana", ["approver"], actor="root")  # replace, keep the creation time
    assert lg.users()[0].created_at == user.created_at
    assert lg.has_role("ana", "approver", "churn")
    lg.revoke_token(row.id, actor="root")
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(lg.meta, token)
    types = [r.type for r in lg.audit_log()]
    assert types == ["user.changed", "token.created", "user.changed", "token.revoked"]
    assert all(r.actor == "root" for r in lg.audit_log())
    assert token.split("_", 2)[2] not in repr([r.to_dict() for r in lg.audit_log()])
    assert lg.audit_verify().ok


def test_bad_input_changes_nothing(sql_lg: Lockgate) -> None:
    lg = sql_lg
    with pytest.raises(InvalidInputError, match="unknown role"):
        lg.add_user("bo", ["superuser"])
    with pytest.raises(InvalidInputError, match="pattern"):
        lg.add_user("bo", ["viewer"], grants=[("../x", "viewer")])
    with pytest.raises(NotFoundError):
        lg.create_token("nobody")
    lg.add_user("bo", ["viewer"])
    with pytest.raises(InvalidInputError):
        lg.create_token("bo", days=0)
    with pytest.raises(NotFoundError):
        lg.revoke_token("000000000000")
    assert lg.tokens() == []
    assert [r.type for r in lg.audit_log()] == ["user.changed"]


@pytest.mark.parametrize("token", [None, "", "lgt_x", "Bearer lgt_000000000000_" + "a" * 64,
                                   "lgt_000000000000_" + "a" * 64])
def test_authenticate_refuses_without_echoing(mem_lg: Lockgate, token: str | None) -> None:
    with pytest.raises(AuthenticationError) as exc:
        authenticate(mem_lg.meta, token)
    if token:
        assert token not in exc.value.diagnostics()


def test_principal_roles_and_grants() -> None:
    admin = Principal("root", frozenset({"admin"}))
    assert all(admin.can(r, "m") for r in ("viewer", "developer", "approver", "deployer"))
    nobody = Principal("n", frozenset())
    assert not nobody.can("viewer")
    granted = Principal("g", frozenset(), (("m*", "admin"),))
    assert granted.can("deployer", "m1")
    assert not granted.can("deployer", "x")
