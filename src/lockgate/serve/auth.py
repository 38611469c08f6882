"""Bearer tokens on the data plane: the registry's tokens and roles, checked per request.

:class:`TokenCheck` turns an ``Authorization: Bearer lgt_...`` header into a principal through
the ``authenticate`` function it is given (the registry's, :func:`lockgate.access.identity.
authenticate`) and requires one role of it, for the model the request is for. Text that is not
shaped like a token (``well_formed``) is refused without a lookup. Verdicts are remembered for
``ttl_s`` seconds (a revoked token stops working within that time), keyed by the token's
SHA-256, so a request costs a hash and a dictionary lookup, not a database read; failures are
remembered too, so a client that repeats a bad token cannot make the server read the database
per request. The cache holds at most ``max_entries`` verdicts, the least recently used leaving
first. A cache miss reads the store on the calling thread (the event loop): at most one read per
distinct token every ``ttl_s``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from lockgate.errors import AccessDeniedError, AuthenticationError, Error

__all__ = ["DEFAULT_TTL_S", "TokenCheck", "bearer_token"]

DEFAULT_TTL_S = 5.0


class _Principal(Protocol):
    name: str

    def can(self, role: str, model: str | None = None) -> bool: ...


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header; AuthenticationError without one."""
    if not authorization:
        raise AuthenticationError("an API token is required",
                                  hint="send 'Authorization: Bearer lgt_...'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class TokenCheck:
    """``check(authorization, model)`` returns the principal's name when its token holds
    ``role`` for ``model``; raises AuthenticationError (401) or AccessDeniedError (403)."""

    def __init__(self, authenticate: Callable[[str], _Principal], role: str, *,
                 well_formed: Callable[[str], bool] = lambda token: len(token) <= 256,
                 ttl_s: float = DEFAULT_TTL_S, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.authenticate = authenticate
        self.role = role
        self.well_formed = well_formed
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, _Principal | Error]] = OrderedDict()

    def __call__(self, authorization: str | None, model: str) -> str:
        token = bearer_token(authorization)
        if not self.well_formed(token):
            raise AuthenticationError("the API token is malformed")
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        cache = self._cache
        hit = cache.get(key)
        if hit is None or hit[0] <= now:
            try:
                found: _Principal | Error = self.authenticate(token)
            except AuthenticationError as exc:
                found = exc
            hit = cache[key] = (now + self.ttl_s, found)
            if len(cache) > self.max_entries:
                cache.popitem(last=False)
        cache.move_to_end(key)
        principal = hit[1]
        if isinstance(principal, Error):
            raise AuthenticationError(principal.message, hint=principal.hint)
        if not principal.can(self.role, model):
            raise AccessDeniedError(f"{principal.name} lacks the {self.role} role for {model!r}",
                                    hint=f"grant it: lockgate user add {principal.name} "
                                         f"--role {self.role}")
        return principal.name
