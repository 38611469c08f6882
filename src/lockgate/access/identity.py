"""Users, roles and API tokens of a shared registry.

Roles: ``viewer`` (read), ``developer`` (register, aliases, references), ``approver`` (approve,
reject, waive), ``deployer`` (deploy, roll back, promote into the serving stage and beyond),
``inference`` (send infer requests to a server that requires tokens), ``monitoring`` (read a
server's captured production inputs and outputs) and ``admin`` (everything, users and tokens).
Every role can read the registry. A user holds roles globally or,
through grants, for the models matching a pattern (``fraud-*``).

A token is ``lgt_<id>_<secret>``: 48 random bytes of secret, shown once; the store keeps its id
and the SHA-256 of the secret (a fast hash is enough for a 256-bit random secret; it cannot be
guessed, only stolen). Tokens never reach logs, audit payloads or error messages.

How a principal was identified travels with it (:class:`IdentifiedBy`): ``token`` for the user
of a valid API token, ``local`` for the OS user or ``LOCKGATE_USER`` of a local home, which
nothing proves. Approvals, rejections and waivers record it; the approval gate counts only
token-identified approvers where ``[roles]`` are configured.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase

from lockgate.audit import AuditEvent, EventType, now
from lockgate.errors import AuthenticationError, InvalidInputError, NotFoundError
from lockgate.store.metadata import MetadataStore, TokenRow, UserRow
from lockgate.types import validate_name

__all__ = [
    "ROLES",
    "IdentifiedBy",
    "Principal",
    "add_user",
    "authenticate",
    "create_token",
    "is_token",
    "principal_of",
    "revoke_token",
]

ROLES = ("viewer", "developer", "approver", "deployer", "inference", "monitoring", "admin")
_TOKEN = re.compile(r"lgt_([0-9a-f]{12})_([A-Za-z0-9_-]{43,128})")
_MAX_DAYS = 3650


class IdentifiedBy(StrEnum):
    """How the actor of a request or decision was identified."""

    TOKEN = "token"
    """The user of a valid API token, checked by the registry server."""
    LOCAL = "local"
    """The OS user or ``LOCKGATE_USER`` of a local home (or a server without tokens): claimed,
    not proven."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, what they may do, and how that was established."""

    name: str
    roles: frozenset[str]
    grants: tuple[tuple[str, str], ...] = ()
    identified_by: IdentifiedBy = IdentifiedBy.LOCAL

    def can(self, role: str, model: str | None = None) -> bool:
        """Whether the principal holds ``role`` (for ``model``, when the action is on one)."""
        if "admin" in self.roles or role in self.roles:
            return True
        if role == "viewer" and (self.roles or self.grants):
            return True
        if model is None:
            return False
        return any(fnmatchcase(model, pattern) and r in (role, "admin")
                   for pattern, r in self.grants)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "roles": sorted(self.roles),
                "grants": [{"model": m, "role": r} for m, r in self.grants]}


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    out = []
    for role in roles:
        if role not in ROLES:
            raise InvalidInputError(f"unknown role {role!r}", hint=f"roles: {', '.join(ROLES)}")
        if role not in out:
            out.append(role)
    return tuple(out)


def _check_grants(grants: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out = []
    for pattern, role in grants:
        _check_roles([role])
        if not pattern or len(pattern) > 128 or not re.fullmatch(r"[A-Za-z0-9._*?\[\]-]+",
                                                                 pattern):
            raise InvalidInputError(f"grant pattern {pattern!r} is not a model name pattern")
        out.append((pattern, role))
    return tuple(out)


def add_user(meta: MetadataStore, name: str, roles: Sequence[str], *,
             grants: Sequence[tuple[str, str]] = (), disabled: bool = False,
             actor: str) -> UserRow:
    """Create the user, or replace its roles, grants and disabled flag."""
    validate_name(name)
    current = meta.get_user(name)
    user = UserRow(name=name, roles=_check_roles(roles), grants=_check_grants(grants),
                   disabled=disabled, created_at=current.created_at if current else now())
    meta.put_user(user, AuditEvent(EventType.USER_CHANGED, actor, None, None, {
        "user": name, "roles": list(user.roles),
        "grants": [{"model": m, "role": r} for m, r in user.grants],
        "disabled": disabled, "created": current is None}))
    return user


def create_token(meta: MetadataStore, user: str, *, description: str = "",
                 days: int | None = None, actor: str) -> tuple[TokenRow, str]:
    """A new token for ``user``: the stored row and the token text (shown once)."""
    if meta.get_user(user) is None:
        raise NotFoundError(f"no user {user!r}", hint="create it with `lockgate user add`")
    if days is not None and not 0 < days <= _MAX_DAYS:
        raise InvalidInputError(f"a token lasts 1 to {_MAX_DAYS} days, not {days}")
    if len(description) > 200:
        raise InvalidInputError("a token description is 200 characters at most")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(48)
    created = datetime.now(UTC)
    row = TokenRow(id=token_id, user=user, hash=_digest(secret),
                   created_at=created.isoformat(timespec="seconds"), description=description,
                   expires_at=(created + timedelta(days=days)).isoformat(timespec="seconds")
                   if days else None)
    meta.put_token(row, AuditEvent(EventType.TOKEN_CREATED, actor, None, None, {
        "user": user, "token_id": token_id, "expires_at": row.expires_at}))
    return row, f"lgt_{token_id}_{secret}"


def revoke_token(meta: MetadataStore, token_id: str, *, actor: str) -> TokenRow:
    row = meta.get_token(token_id)
    if row is None:
        raise NotFoundError(f"no token {token_id!r}")
    if row.revoked_at is None:
        row = replace(row, revoked_at=now())
        meta.put_token(row, AuditEvent(EventType.TOKEN_REVOKED, actor, None, None, {
            "user": row.user, "token_id": token_id}))
    return row


def is_token(text: str) -> bool:
    """Whether ``text`` has the shape of a lockgate API token (says nothing of its validity)."""
    return _TOKEN.fullmatch(text.strip()) is not None


def authenticate(meta: MetadataStore, token: str | None) -> Principal:
    """The principal a bearer token stands for; AuthenticationError otherwise (the message
    never repeats the token)."""
    if not token:
        raise AuthenticationError("an API token is required",
                                  hint="send 'Authorization: Bearer lgt_...'")
    m = _TOKEN.fullmatch(token.strip())
    if m is None:
        raise AuthenticationError("the API token is malformed")
    row = meta.get_token(m.group(1))
    if row is None or not hmac.compare_digest(row.hash, _digest(m.group(2))):
        raise AuthenticationError("the API token is not valid")
    if row.revoked_at is not None:
        raise AuthenticationError(f"token {row.id} was revoked")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC).isoformat():
        raise AuthenticationError(f"token {row.id} expired at {row.expires_at}")
    principal = principal_of(meta, row.user)
    if principal is None:
        raise AuthenticationError(f"the user of token {row.id} is disabled or gone")
    return replace(principal, identified_by=IdentifiedBy.TOKEN)


def principal_of(meta: MetadataStore, name: str) -> Principal | None:
    user = meta.get_user(name)
    if user is None or user.disabled:
        return None
    return Principal(user.name, frozenset(user.roles), tuple(user.grants))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
