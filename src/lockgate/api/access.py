"""Who may do what: roles from the policy and from registry users, the users themselves, and
their API tokens."""

from __future__ import annotations

from collections.abc import Sequence

from lockgate.access import identity
from lockgate.access.identity import Principal
from lockgate.api.home import Home
from lockgate.types import TokenRow, UserRow

__all__ = ["Access"]


class Access:
    """Registry users, their tokens and the roles they hold."""

    def __init__(self, home: Home) -> None:
        self._home = home

    def has_role(self, who: str, role: str, model: str | None = None) -> bool:
        """``who`` holds ``role`` through the policy's [roles] or as a registry user (a global
        role or a grant matching ``model``)."""
        if self._home.settings.has_role(who, role):
            return True
        principal = identity.principal_of(self._home.meta, who)
        return principal is not None and principal.can(role, model)

    def authenticate(self, token: str | None) -> Principal:
        """The principal an API token stands for; AuthenticationError otherwise."""
        return identity.authenticate(self._home.meta, token)

    def users(self) -> list[UserRow]:
        return self._home.meta.list_users()

    def add_user(self, name: str, roles: Sequence[str], *,
                 grants: Sequence[tuple[str, str]] = (), disabled: bool = False,
                 actor: str | None = None) -> UserRow:
        """Create a registry user, or replace its roles and grants (audited)."""
        return identity.add_user(self._home.meta, name, roles, grants=grants,
                                 disabled=disabled, actor=self._home.actor(actor))

    def create_token(self, user: str, *, description: str = "", days: int | None = None,
                     actor: str | None = None) -> tuple[TokenRow, str]:
        """A new API token for ``user``: the row and the token text, which is not stored and
        cannot be shown again."""
        return identity.create_token(self._home.meta, user, description=description,
                                     days=days, actor=self._home.actor(actor))

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> TokenRow:
        return identity.revoke_token(self._home.meta, token_id, actor=self._home.actor(actor))

    def tokens(self, user: str | None = None) -> list[TokenRow]:
        return self._home.meta.list_tokens(user)
