"""A registry reached over HTTP (``lockgate --server URL``, :func:`lockgate.connect`), with the
same methods and return types as :class:`lockgate.Lockgate` for the registry operations.

    reg = lockgate.connect("https://lockgate.internal", token=os.environ["LOCKGATE_TOKEN"])
    v = reg.register("model.onnx", name="fraud")
    reg.promote(f"fraud@{v.number}", "stabilized")

Errors come back as the same lockgate errors, with the server's message: a refused promotion
raises GateFailedError with every gate's result, a missing role AccessDeniedError, a bad token
AuthenticationError. Registration uploads an ONNX file (with its external data) as a bundle;
converting a framework model needs the framework, so that happens where it lives (export to
ONNX first, or register against the database directly).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any, Unpack
from urllib.parse import quote

import httpx

import lockgate.errors as errors
from lockgate.api.lookup import ModelSummary
from lockgate.api.protocol import RegisterOptions, Registry
from lockgate.audit import AuditRecord, ChainReport
from lockgate.config.providers import ProviderSet
from lockgate.errors import Error, InvalidInputError, StorageError, UnsafePathError
from lockgate.gates.promotion import PromotionResult
from lockgate.registry.bundle import make_bundle
from lockgate.rollout.state import Deployment
from lockgate.types import Decision, GateResult, GateRun, ModelRef, TokenRow, UserRow, Version

__all__ = ["RemoteRegistry", "connect"]

_API = "/api/v1"
_PAGE = 1000


def connect(url: str, token: str | None = None, *, timeout: float = 600.0,
            transport: httpx.BaseTransport | None = None) -> RemoteRegistry:
    """A client of the registry server at ``url``; ``token`` defaults to ``$LOCKGATE_TOKEN``
    (or the file named by ``$LOCKGATE_TOKEN_FILE``)."""
    return RemoteRegistry(url, token if token is not None else token_from_env(),
                          timeout=timeout, transport=transport)


def token_from_env() -> str | None:
    token = os.environ.get("LOCKGATE_TOKEN")
    if token:
        return token.strip()
    path = os.environ.get("LOCKGATE_TOKEN_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidInputError(f"cannot read LOCKGATE_TOKEN_FILE: {exc.strerror}") from None
    return None


def _error(response: httpx.Response) -> Error:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("error") or f"HTTP {response.status_code}")
    hint = body.get("hint")
    if hint and message.endswith(f" (hint: {hint})"):
        message = message[: -len(f" (hint: {hint})")]
    kind = getattr(errors, str(body.get("type", "")), None)
    if kind is errors.GateFailedError:
        results = [GateResult.from_dict(r) for r in body.get("results", [])]
        return errors.GateFailedError(message, results=results, hint=hint)
    if isinstance(kind, type) and issubclass(kind, Error):
        return kind(message, hint=hint)
    by_status: dict[int, type[Error]] = {
        400: InvalidInputError, 401: errors.AuthenticationError, 403: errors.AccessDeniedError,
        404: errors.NotFoundError, 409: errors.PromotionError, 413: InvalidInputError,
        415: InvalidInputError, 422: InvalidInputError, 503: errors.ServeError}
    return by_status.get(response.status_code, StorageError)(f"server: {message}", hint=hint)


def _path(ref: str | ModelRef) -> str:
    r = ModelRef.parse(ref) if isinstance(ref, str) else ref
    sel = "latest" if r.selector is None else str(r.selector)
    return f"{_API}/models/{quote(r.name)}/versions/{quote(sel)}"


def _version(d: Mapping[str, Any]) -> Version:
    return Version.from_record(str(d["name"]), int(d["version"]), str(d["stage"]), d)


def _decision(d: Mapping[str, Any]) -> Decision:
    return Decision(kind=d["kind"], name=d["model"], number=int(d["version"]),
                    stage=d["stage"], actor=d["actor"], created_at=d["at"],
                    comment=d.get("comment", ""), gate=d.get("gate", ""),
                    expires=d.get("expires"), detail=dict(d.get("detail") or {}))


def _deployment(d: Mapping[str, Any]) -> Deployment:
    return Deployment.from_record(str(d["model"]), int(d["generation"]), d,
                                  str(d.get("updated_at", "")))


def _token(d: Mapping[str, Any]) -> TokenRow:
    return TokenRow(id=d["id"], user=d["user"], hash="", created_at=d["created_at"],
                    description=d.get("description", ""), expires_at=d.get("expires_at"),
                    revoked_at=d.get("revoked_at"))


def _user(d: Mapping[str, Any]) -> UserRow:
    return UserRow(name=d["name"], roles=tuple(d["roles"]),
                   grants=tuple((g["model"], g["role"]) for g in d.get("grants", [])),
                   disabled=bool(d.get("disabled", False)), created_at=d.get("created_at", ""))


def _upload_options(options: RegisterOptions) -> dict[str, Any]:
    """The options a registration bundle carries to the server (the creator is the token's
    user; files travel in the bundle itself)."""
    out: dict[str, Any] = {
        "description": options.get("description", ""),
        "considerations": options.get("considerations", ""),
        "tags": dict(options.get("tags") or {}), "metrics": dict(options.get("metrics") or {}),
        "seeds": dict(options.get("seeds") or {}),
        "datasets": [dict(d) for d in options.get("datasets", ())]}
    for key in ("seed", "atol", "rtol"):
        value = options.get(key)
        if value is not None:
            out[key] = value
    return out


class RemoteRegistry:
    """The registry operations of :class:`lockgate.Lockgate`, over the HTTP API."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 600.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"server URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        headers = {"User-Agent": "lockgate-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StorageError(f"cannot reach the lockgate server at {self.url}: "
                               f"{type(exc).__name__}: {exc}",
                               hint="check --server / LOCKGATE_SERVER") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise StorageError(f"the server at {self.url} did not answer JSON") from None

    # -- identity ----------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"{_API}/whoami")
        return result

    def users(self) -> list[UserRow]:
        return [_user(u) for u in self._json("GET", f"{_API}/users")]

    def add_user(self, name: str, roles: Sequence[str], *,
                 grants: Sequence[tuple[str, str]] = (), disabled: bool = False,
                 actor: str | None = None) -> UserRow:
        return _user(self._json("POST", f"{_API}/users", json={
            "name": name, "roles": list(roles), "disabled": disabled,
            "grants": [{"model": m, "role": r} for m, r in grants]}))

    def create_token(self, user: str, *, description: str = "", days: int | None = None,
                     actor: str | None = None) -> tuple[TokenRow, str]:
        d = self._json("POST", f"{_API}/users/{quote(user)}/tokens",
                       json={"description": description, "days": days})
        return _token(d), str(d["token"])

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> TokenRow:
        return _token(self._json("DELETE", f"{_API}/tokens/{quote(token_id)}"))

    def tokens(self, user: str | None = None) -> list[TokenRow]:
        params = {"user": user} if user else None
        return [_token(t) for t in self._json("GET", f"{_API}/tokens", params=params)]

    # -- registration and reads --------------------------------------------------------------
    def register(self, model: object, sample_input: object = None, *, name: str,
                 **options: Unpack[RegisterOptions]) -> Version:
        """Upload an ONNX file (and its external data, lock file, reference data and recorded
        outputs) as a bundle; the server checks, signs and stores it as ``creator`` = the
        token's user."""
        reference = options.get("reference")
        if not isinstance(model, str | os.PathLike) or not os.fspath(model).endswith(".onnx"):
            raise InvalidInputError(
                "a remote registration uploads an .onnx file",
                hint="export the model to ONNX first, or register against the database "
                     "directly (LOCKGATE_DATABASE_URL) to convert and check parity here")
        if sample_input is not None or any(options.get(k) is not None
                                           for k in ("recipe", "opset", "dynamic")):
            raise InvalidInputError("sample inputs, recipes, opset conversion and dynamic "
                                    "dimensions need the source framework; they are not sent "
                                    "to a server",
                                    hint="export the model with the dimensions it needs free")
        if options.get("source") is not None:
            raise InvalidInputError(
                "source proves an ONNX file by running your code, which a server does not do",
                hint="send recorded outputs instead (expect=(inputs.npz, outputs.npz), "
                     "--expect), or register against the database directly "
                     "(LOCKGATE_DATABASE_URL) to run it here")
        recorded = options.get("expect")
        expect: tuple[Path, Path] | None = None
        if recorded is not None:
            files = [Path(os.fspath(p)) for p in recorded if isinstance(p, str | os.PathLike)]
            if len(files) != 2 or len(recorded) != 2:
                raise InvalidInputError("a remote registration takes recorded outputs as two "
                                        ".npz files", hint="save them with numpy.savez")
            expect = (files[0], files[1])
        if reference is not None and not isinstance(reference, str | os.PathLike):
            raise InvalidInputError("a remote registration takes reference data as a file")
        path = Path(os.fspath(model))
        if not path.is_file():
            raise errors.NotFoundError(f"no file at {path}")
        lock_file = options.get("lock_file")
        body = make_bundle(path, options=_upload_options(options),
                           lock_file=Path(lock_file) if lock_file is not None else None,
                           reference=Path(os.fspath(reference)) if reference is not None
                           else None,
                           expect=expect)
        return _version(self._json("POST", f"{_API}/models/{quote(name)}/versions",
                                   content=body,
                                   headers={"Content-Type": "application/gzip"}))

    def get(self, ref: str | ModelRef) -> Version:
        return _version(self._json("GET", _path(ref)))

    def versions(self, name: str) -> list[Version]:
        out: list[Version] = []
        while True:
            page = self._json("GET", f"{_API}/models/{quote(name)}/versions",
                              params={"offset": len(out), "limit": _PAGE})
            out.extend(_version(d) for d in page)
            if len(page) < _PAGE:
                return out

    def models(self) -> list[ModelSummary]:
        return [ModelSummary(d["name"], int(d["versions"]), int(d["latest"]),
                             {k: list(v) for k, v in d["stages"].items()}, dict(d["aliases"]))
                for d in self._json("GET", f"{_API}/models")]

    def aliases(self, name: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in
                self._json("GET", f"{_API}/models/{quote(name)}/aliases").items()}

    def gate_runs(self, ref: str | ModelRef) -> list[GateRun]:
        return [GateRun(**r) for r in self._json("GET", _path(ref))["gate_runs"]]

    def decisions(self, ref: str | ModelRef) -> list[Decision]:
        return [_decision(d) for d in self._json("GET", _path(ref))["decisions"]]

    def history(self, name: str) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = self._json(
            "GET", f"{_API}/models/{quote(name)}/history")
        return result

    # -- promotion ---------------------------------------------------------------------------
    def promote(self, ref: str | ModelRef, to: str, *, actor: str | None = None,
                run_all: bool = False,
                on_result: Callable[[GateResult], None] | None = None) -> PromotionResult:
        try:
            d = self._json("POST", _path(ref) + "/promote", json={"to": to, "run_all": run_all})
        except errors.GateFailedError as exc:
            for r in exc.results:
                if on_result is not None:
                    on_result(r)
            raise
        results = tuple(GateResult.from_dict(r) for r in d["gates"])
        for r in results:
            if on_result is not None:
                on_result(r)
        return PromotionResult(version=_version(d["version"]), from_stage=d["from"],
                               to_stage=d["to"], results=results,
                               retired=tuple(int(n) for n in d["retired"]), alias=d["alias"])

    def check_gates(self, ref: str | ModelRef, to: str, *, actor: str | None = None,
                    run_all: bool = True,
                    on_result: Callable[[GateResult], None] | None = None) -> list[GateResult]:
        d = self._json("POST", _path(ref) + "/gates", json={"to": to, "run_all": run_all})
        results = [GateResult.from_dict(r) for r in d["gates"]]
        for r in results:
            if on_result is not None:
                on_result(r)
        return results

    def approve(self, ref: str | ModelRef, stage: str, *, comment: str = "",
                actor: str | None = None) -> Decision:
        return _decision(self._json("POST", _path(ref) + "/approve",
                                    json={"stage": stage, "comment": comment}))

    def reject(self, ref: str | ModelRef, stage: str, *, comment: str,
               actor: str | None = None) -> Decision:
        if not comment.strip():
            raise InvalidInputError("a rejection needs a comment saying why")
        return _decision(self._json("POST", _path(ref) + "/reject",
                                    json={"stage": stage, "comment": comment}))

    def waive(self, ref: str | ModelRef, stage: str, gate: str, *, reason: str,
              expires: date, actor: str | None = None) -> Decision:
        return _decision(self._json("POST", _path(ref) + "/waive", json={
            "stage": stage, "gate": gate, "reason": reason, "expires": expires.isoformat()}))

    def set_alias(self, name: str, alias: str, number: int | None, *,
                  actor: str | None = None) -> None:
        path = f"{_API}/models/{quote(name)}/aliases/{quote(alias)}"
        if number is None:
            self._call("DELETE", path)
        else:
            self._call("PUT", path, json={"version": number})

    # -- deployments -------------------------------------------------------------------------
    def deployments(self) -> dict[str, Deployment]:
        return {n: _deployment(d) for n, d in self._json("GET", f"{_API}/deployments").items()}

    def deploy(self, ref: str | ModelRef, *, canary: int | None = None, shadow: bool = False,
               analysis: Mapping[str, Any] | None = None,
               actor: str | None = None, providers: ProviderSet | None = None
               ) -> Deployment:
        r = ModelRef.parse(ref) if isinstance(ref, str) else ref
        number = r.selector if isinstance(r.selector, int) else self.get(r).number
        body: dict[str, Any] = {"version": number, "canary": canary, "shadow": shadow}
        if analysis is not None:
            body["analysis"] = dict(analysis)
        if providers is not None:
            body["providers"] = providers.to_dict()
        return _deployment(self._json("POST", f"{_API}/deployments/{quote(r.name)}",
                                      json=body))

    def set_canary_weight(self, name: str, weight: int, *,
                          actor: str | None = None) -> Deployment:
        return _deployment(self._json("POST", f"{_API}/deployments/{quote(name)}/weight",
                                      json={"weight": weight}))

    def promote_candidate(self, name: str, *, actor: str | None = None) -> Deployment:
        return _deployment(self._json(
            "POST", f"{_API}/deployments/{quote(name)}/promote-candidate"))

    def set_providers(self, name: str, providers: ProviderSet | None, *,
                      actor: str | None = None) -> Deployment:
        return _deployment(self._json(
            "PUT", f"{_API}/deployments/{quote(name)}/providers",
            json={"providers": providers.to_dict() if providers is not None else None}))

    def set_batching(self, name: str, batching: Mapping[str, Any] | None, *,
                     actor: str | None = None) -> Deployment:
        return _deployment(self._json(
            "PUT", f"{_API}/deployments/{quote(name)}/batching",
            json={"batching": dict(batching) if batching is not None else None}))

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployment:
        return _deployment(self._json("POST", f"{_API}/deployments/{quote(name)}/rollback",
                                      json={"reason": reason}))

    # -- audit and evidence ------------------------------------------------------------------
    def audit_log(self, *, model: str | None = None) -> list[AuditRecord]:
        out: list[AuditRecord] = []
        after: int | None = 0
        while after is not None:
            params: dict[str, Any] = {"after": after, "limit": _PAGE}
            if model is not None:
                params["model"] = model
            page = self._json("GET", f"{_API}/audit", params=params)
            out.extend(AuditRecord(**r) for r in page["events"])
            after = page["next_after"]
        return out

    def audit_verify(self) -> ChainReport:
        return ChainReport(**self._json("GET", f"{_API}/audit/verify"))

    def export_evidence(self, ref: str | ModelRef, out: Path | str, *,
                        actor: str | None = None) -> Path:
        """Download the evidence pack and unpack it into the new or empty folder ``out``."""
        folder = Path(out)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InvalidInputError(f"{folder} exists and is not an empty folder",
                                    hint="name a new folder for the evidence pack")
        data = self._call("GET", _path(ref) + "/evidence").content
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
                for n in names:
                    p = PurePosixPath(n)
                    if p.is_absolute() or ".." in p.parts or "\\" in n:
                        raise UnsafePathError(f"evidence member {n!r} escapes the folder")
                folder.mkdir(parents=True, exist_ok=True)
                zf.extractall(folder)
        except zipfile.BadZipFile:
            raise StorageError("the server's evidence pack is not a valid zip") from None
        return folder


_registry: type[Registry] = RemoteRegistry  # mypy checks it offers every registry operation
