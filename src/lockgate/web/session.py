"""The console's defences against forged requests: a per-home secret, form tokens bound to a
session, and the browser's own say on where a request came from.

- The secret is 32 random bytes in ``<home>/keys/console.secret`` (mode 0600), made on first
  use; two processes starting together agree on it (it is linked into place, never
  overwritten).
- A form token is ``HMAC-SHA256(secret, session)``: the session is the login cookie's API
  token with auth on, or a random per-browser cookie in no-login mode.
- Every state-changing request is refused when the browser says another site sent it
  (:func:`lockgate.registry.guard.foreign_origin`, shared with the registry API). Scripts
  that send neither ``Sec-Fetch-Site`` nor ``Origin`` still need the form token.
- Without login, every request whose ``Host`` is not a loopback name is refused (421), so a
  page re-pointed at 127.0.0.1 by DNS gets neither a session nor a form token
  (:func:`lockgate.registry.guard.check_loopback_host`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from lockgate.errors import StorageError
from lockgate.registry.guard import foreign_origin

__all__ = ["SECRET_FILE", "console_secret", "foreign_origin", "form_token", "new_session",
           "valid_session"]

SECRET_FILE = Path("keys") / "console.secret"
_SECRET_BYTES = 32
_SESSION_BYTES = 32


def console_secret(home: Path) -> bytes:
    """The home's console secret, made (atomically, mode 0600) when there is none yet."""
    path = home / SECRET_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(_SECRET_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return _read(path)
    except OSError as exc:
        raise StorageError(f"cannot create the console secret {path}: {exc}",
                           hint="the home's keys folder must be writable") from None


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot read the console secret {path}: {exc}") from None
    if len(data) != _SECRET_BYTES:
        raise StorageError(f"the console secret {path} is damaged ({len(data)} bytes, not "
                           f"{_SECRET_BYTES})",
                           hint="delete it: a new one is made on the next start (open "
                                "console pages then need a reload)")
    return data


def form_token(secret: bytes, session: str) -> str:
    """The form token of ``session`` (``"auth:" + API token`` or ``"local:" + cookie``)."""
    return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()


def new_session() -> str:
    """A random per-browser session id, for the no-login console's cookie."""
    return secrets.token_urlsafe(_SESSION_BYTES)


def valid_session(value: str | None) -> bool:
    """Whether a cookie holds a session id as :func:`new_session` makes them."""
    return (value is not None and 32 <= len(value) <= 64 and value.isascii()
            and all(c.isalnum() or c in "-_" for c in value))
