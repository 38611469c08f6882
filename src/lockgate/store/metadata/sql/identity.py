"""Registry users and API tokens: each written with its audit event by the caller."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lockgate.store.metadata.schema import tokens, users
from lockgate.types import TokenRow, UserRow

__all__ = ["get_token", "get_user", "list_tokens", "list_users", "put_token", "put_user"]


def put_user(conn: Connection, user: UserRow) -> None:
    values = {"roles": json.dumps(list(user.roles)),
              "grants": json.dumps([list(g) for g in user.grants]),
              "disabled": user.disabled, "created_at": user.created_at}
    done = conn.execute(users.update().where(users.c.name == user.name).values(**values))
    if done.rowcount == 0:
        conn.execute(users.insert().values(name=user.name, **values))


def get_user(conn: Connection, name: str) -> UserRow | None:
    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
    return _user(row) if row else None


def list_users(conn: Connection) -> list[UserRow]:
    return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.name))]


def put_token(conn: Connection, token: TokenRow) -> None:
    values = {"user": token.user, "hash": token.hash, "description": token.description,
              "created_at": token.created_at, "expires_at": token.expires_at,
              "revoked_at": token.revoked_at}
    done = conn.execute(tokens.update().where(tokens.c.id == token.id).values(**values))
    if done.rowcount == 0:
        conn.execute(tokens.insert().values(id=token.id, **values))


def get_token(conn: Connection, id: str) -> TokenRow | None:
    row = conn.execute(sa.select(tokens).where(tokens.c.id == id)).first()
    return _token(row) if row else None


def list_tokens(conn: Connection, user: str | None) -> list[TokenRow]:
    q = sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id)
    if user is not None:
        q = q.where(tokens.c.user == user)
    return [_token(r) for r in conn.execute(q)]


def _user(row: Any) -> UserRow:
    return UserRow(name=row.name, roles=tuple(json.loads(row.roles)),
                   grants=tuple((str(m), str(r)) for m, r in json.loads(row.grants)),
                   disabled=bool(row.disabled), created_at=row.created_at)


def _token(row: Any) -> TokenRow:
    return TokenRow(id=row.id, user=row.user, hash=row.hash, created_at=row.created_at,
                    description=row.description, expires_at=row.expires_at,
                    revoked_at=row.revoked_at)
