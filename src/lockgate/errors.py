"""The one error tree of lockgate.

Every failure the library reports is an :class:`Error`. Library errors (onnxruntime, SQLAlchemy,
torch, skl2onnx) are caught where they enter and re-raised as one of these, with a diagnostic that
says what to do. Only the CLI turns them into exit codes; the server turns them into JSON.

    Error
    ├── ConfigError                bad lockgate.toml, environment variable or flag
    ├── NotFoundError              unknown model, version, alias or stage
    ├── InvalidInputError          a request or argument that cannot be used as given
    ├── StorageError               metadata or artifact store failure
    │   └── IntegrityError         a stored artifact does not match its digest
    │       └── SignatureError     a signature is missing, unknown or does not verify
    ├── ConversionError            a model could not be turned into ONNX
    │   ├── UnsupportedModelError  no converter accepts the object
    │   └── UnsafePathError        a path escapes the folder it must stay in
    ├── ParityError                ONNX Runtime disagrees with the source framework
    ├── PromotionError             a promotion was refused
    │   └── GateFailedError        a gate failed, errored, or the gate list is empty
    ├── AuditChainError            the audit log's hash chain is broken
    ├── DamageFoundError           `lockgate fsck` found a version that does not verify, or a
    │                              broken audit chain
    ├── SupplyChainError           a BOM, vulnerability or license check could not be made
    ├── ServeError                 a model could not be served
    ├── AuthenticationError        no valid API token (HTTP 401)
    ├── AccessDeniedError          the actor lacks the role, or separation of duties (HTTP 403)
    │   └── MisdirectedRequestError  a request for a host name the server does not answer for (421)
    └── ReproductionError          a version did not rebuild to the same model
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

__all__ = [
    "AccessDeniedError",
    "AuditChainError",
    "AuthenticationError",
    "ConfigError",
    "ConversionError",
    "DamageFoundError",
    "Error",
    "GateFailedError",
    "IntegrityError",
    "InvalidInputError",
    "MisdirectedRequestError",
    "NotFoundError",
    "ParityError",
    "PromotionError",
    "ReproductionError",
    "ServeError",
    "SignatureError",
    "StorageError",
    "SupplyChainError",
    "UnsafePathError",
    "UnsupportedModelError",
]


class Error(Exception):
    """Root of every lockgate error.

    ``exit_code`` is the CLI's exit status for this kind of failure (documented in README.md);
    ``http_status`` is the status the server answers with.
    """

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """One readable paragraph: what went wrong and, when known, what to do about it."""
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ConfigError(Error):
    exit_code = 2
    http_status = 500


class InvalidInputError(Error):
    exit_code = 2
    http_status = 400


class NotFoundError(Error):
    exit_code = 3
    http_status = 404


class StorageError(Error):
    exit_code = 4


class IntegrityError(StorageError):
    exit_code = 4


class SignatureError(IntegrityError):
    """A version's signature is missing where policy requires one, made by a key that is not
    trusted, or does not match the files."""


class ConversionError(Error):
    exit_code = 5
    http_status = 400


class UnsupportedModelError(ConversionError):
    pass


class UnsafePathError(ConversionError):
    pass


class ParityError(Error):
    """ONNX Runtime's outputs are outside tolerance of the source framework's.

    ``report`` is the :class:`lockgate.types.ParityReport` that failed.
    """

    exit_code = 6
    http_status = 422

    def __init__(self, message: str, *, report: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class PromotionError(Error):
    exit_code = 7
    http_status = 409


class GateFailedError(PromotionError):
    """A promotion's gates did not all pass. ``results`` holds every gate's result. Exit code 1,
    as CI systems expect of a failed check."""

    exit_code = 1

    def __init__(
        self, message: str, *, results: Sequence[Any] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.results = tuple(results)


class AuditChainError(Error):
    exit_code = 8


class DamageFoundError(Error):
    """``lockgate fsck`` found damage: a blob that is missing or changed, a signature or
    manifest that does not verify, or a broken audit chain. Orphans alone are not damage."""

    exit_code = 13
    http_status = 422


class ServeError(Error):
    exit_code = 9
    http_status = 503


class SupplyChainError(Error):
    exit_code = 10
    http_status = 422


class AuthenticationError(Error):
    """No token, or one that is unknown, revoked, expired or belongs to a disabled user."""

    exit_code = 12
    http_status = 401


class AccessDeniedError(Error):
    """The acting user may not do this: a missing role, or separation of duties."""

    exit_code = 11
    http_status = 403


class MisdirectedRequestError(AccessDeniedError):
    """A request for a host name the server does not answer for (HTTP 421): without login a
    server answers loopback names only, so a page re-pointed by DNS to 127.0.0.1 is refused."""

    http_status = 421


class ReproductionError(Error):
    """A version did not rebuild to the same model. Exit code 1, like a failed check."""

    exit_code = 1
    http_status = 422
