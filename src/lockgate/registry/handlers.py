"""What each registry operation does: one function per operation of
:data:`lockgate.registry.operations.OPERATIONS`, from a decoded :class:`Call` to a JSON-ready
value (or a ready response for the downloads).

Handlers call only the facade's public methods; the role of the operation was checked before
they run, except for a promotion, whose role depends on its target stage (:func:`promote`).
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from starlette.responses import Response

from lockgate.config.providers import ProviderSet
from lockgate.errors import ConfigError, InvalidInputError, NotFoundError
from lockgate.registry.bundle import ONNX_MEDIA
from lockgate.registry.call import Call
from lockgate.types import ModelRef, validate_name


def whoami(c: Call) -> dict[str, Any]:
    return {**c.principal.to_dict(), "auth": c.auth}


def models(c: Call) -> list[dict[str, Any]]:
    return [s.to_dict() for s in c.lg.models()]


def versions(c: Call) -> list[dict[str, Any]]:
    found = c.lg.versions(c.model)
    if not found:
        raise NotFoundError(f"no model named {c.model!r}")
    offset, limit = c.query.get("offset", 0), c.query.get("limit", 1000)
    return [v.to_dict() for v in found[offset:offset + limit]]


def show(c: Call) -> dict[str, Any]:
    v = c.lg.get(c.ref())
    runs, decisions = c.lg.version_runs(v)  # v is resolved: no second look-up
    return {**v.to_dict(), "gate_runs": [dict(r.__dict__) for r in runs],
            "decisions": [d.to_dict() for d in decisions]}


def register(c: Call) -> dict[str, Any]:
    assert c.upload is not None
    opts = {**c.upload.options, **c.query}
    v = c.lg.register(
        str(c.upload.model), None, name=c.model, creator=c.actor,
        description=str(opts.get("description", "")), tags=opts.get("tags"),
        metrics=opts.get("metrics"), seed=opts.get("seed"), seeds=opts.get("seeds"),
        atol=opts.get("atol"), rtol=opts.get("rtol"),
        considerations=str(opts.get("considerations", "")),
        datasets=opts.get("datasets", ()), lock_file=c.upload.lock_file,
        reference=c.upload.reference, expect=c.upload.expect,
    )
    return v.to_dict()


def history(c: Call) -> dict[str, Any]:
    return c.lg.history(c.model)


def aliases(c: Call) -> dict[str, int]:
    if not c.lg.versions(c.model):
        raise NotFoundError(f"no model named {c.model!r}")
    return c.lg.aliases(c.model)


def set_alias(c: Call) -> dict[str, Any]:
    alias = validate_name(c.path["alias"])
    c.lg.set_alias(c.model, alias, int(c.body["version"]), actor=c.actor)
    return {"model": c.model, "alias": alias, "version": int(c.body["version"])}


def remove_alias(c: Call) -> dict[str, Any]:
    alias = validate_name(c.path["alias"])
    c.lg.set_alias(c.model, alias, None, actor=c.actor)
    return {"model": c.model, "alias": alias, "version": None}


def _promote_role(c: Call, to: str) -> None:
    """Developers promote up to the serving stage; into it and beyond takes a deployer."""
    stages = list(c.lg.settings.stages)
    serving = c.lg.serving_stage
    late = to in stages and stages.index(to) >= stages.index(serving)
    c.require("deployer" if late else "developer", c.model, action="promoteVersion")


def promote(c: Call) -> dict[str, Any]:
    to = str(c.body["to"])
    _promote_role(c, to)
    r = c.lg.promote(c.ref(), to, actor=c.actor, run_all=bool(c.body.get("run_all", False)))
    moved = replace(r.version, stage=r.to_stage)
    return {"model": moved.name, "version": moved.to_dict(), "from": r.from_stage,
            "to": r.to_stage, "gates": [g.to_dict() for g in r.results],
            "retired": list(r.retired), "alias": r.alias}


def gates(c: Call) -> dict[str, Any]:
    to = str(c.body["to"])
    v = c.lg.get(c.ref())
    results = c.lg.check_gates(v.ref, to, actor=c.actor,
                               run_all=bool(c.body.get("run_all", True)))
    return {"model": f"{v.name}@{v.number}", "to": to, "passed": all(r.ok for r in results),
            "gates": [r.to_dict() for r in results]}


def approve(c: Call) -> dict[str, Any]:
    return c.lg.approve(c.ref(), str(c.body["stage"]), comment=str(c.body.get("comment", "")),
                        actor=c.actor, identified_by=c.principal.identified_by).to_dict()


def reject(c: Call) -> dict[str, Any]:
    return c.lg.reject(c.ref(), str(c.body["stage"]), comment=str(c.body["comment"]),
                       actor=c.actor, identified_by=c.principal.identified_by).to_dict()


def waive(c: Call) -> dict[str, Any]:
    try:
        until = date.fromisoformat(str(c.body["expires"]))
    except ValueError:
        raise InvalidInputError(f"expires {c.body['expires']!r} is not a date") from None
    return c.lg.waive(c.ref(), str(c.body["stage"]), str(c.body["gate"]),
                      reason=str(c.body["reason"]), expires=until, actor=c.actor,
                      identified_by=c.principal.identified_by).to_dict()


def evidence(c: Call) -> Response:
    with tempfile.TemporaryDirectory(prefix="lockgate-evidence-") as tmp:
        folder = c.lg.export_evidence(c.ref(), Path(tmp) / "evidence", actor=c.actor)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
    v = c.lg.get(c.ref())
    return Response(buf.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{v.name}-{v.number}-evidence.zip"'})


def model_file(c: Call) -> Response:
    v = c.lg.get(c.ref())
    return Response(c.lg.model_bytes(v), media_type=ONNX_MEDIA, headers={
        "Content-Disposition": f'attachment; filename="{v.name}-{v.number}.onnx"',
        "Digest-SHA256": str(v.digest)})


def vulnerabilities(c: Call) -> dict[str, Any]:
    return c.lg.vulnerability_report(c.ref()).to_dict()


def deployments(c: Call) -> dict[str, Any]:
    return {n: d.to_dict() for n, d in c.lg.deployments().items()}


def deployment(c: Call) -> dict[str, Any]:
    found = c.lg.deployments().get(c.model)
    if found is None:
        raise NotFoundError(f"model {c.model!r} has no deployment",
                            hint="it has no version in the serving stage and none deployed")
    return found.to_dict()


def deploy(c: Call) -> dict[str, Any]:
    target = ModelRef(c.model, int(c.body["version"]))
    providers = c.body.get("providers")
    return c.lg.deploy(target, canary=c.body.get("canary"),
                       shadow=bool(c.body.get("shadow", False)),
                       analysis=c.body.get("analysis"), actor=c.actor,
                       providers=_provider_set(providers)).to_dict()


def _provider_set(record: Any) -> ProviderSet | None:
    """A provider set from a request body, checked as the CLI checks it (400 when bad)."""
    if record is None:
        return None
    try:
        return ProviderSet.from_dict(record)
    except ConfigError as exc:
        raise InvalidInputError(exc.message, hint=exc.hint) from None


def providers(c: Call) -> dict[str, Any]:
    return c.lg.set_providers(c.model, _provider_set(c.body["providers"]),
                              actor=c.actor).to_dict()


def weight(c: Call) -> dict[str, Any]:
    return c.lg.set_canary_weight(c.model, int(c.body["weight"]), actor=c.actor).to_dict()


def promote_candidate(c: Call) -> dict[str, Any]:
    return c.lg.promote_candidate(c.model, actor=c.actor).to_dict()


def batching(c: Call) -> dict[str, Any]:
    return c.lg.set_batching(c.model, c.body["batching"], actor=c.actor).to_dict()


def rollback(c: Call) -> dict[str, Any]:
    return c.lg.rollback(c.model, actor=c.actor,
                         reason=str(c.body.get("reason", ""))).to_dict()


def audit(c: Call) -> dict[str, Any]:
    model = c.query.get("model")
    if model is not None:
        validate_name(model)
    after, limit = c.query.get("after", 0), c.query.get("limit", 1000)
    records = [r for r in c.lg.audit_log(model=model) if r.seq > after]
    page = records[:limit]
    return {"events": [r.to_dict() for r in page],
            "next_after": page[-1].seq if len(records) > limit else None}


def audit_verify(c: Call) -> dict[str, Any]:
    return c.lg.audit_verify().to_dict()


def users(c: Call) -> list[dict[str, Any]]:
    return [u.to_dict() for u in c.lg.users()]


def put_user(c: Call) -> dict[str, Any]:
    grants = [(str(g["model"]), str(g["role"])) for g in c.body.get("grants", [])]
    return c.lg.add_user(str(c.body["name"]), list(c.body["roles"]), grants=grants,
                         disabled=bool(c.body.get("disabled", False)),
                         actor=c.actor).to_dict()


def new_token(c: Call) -> dict[str, Any]:
    user = validate_name(c.path["user"])
    row, token = c.lg.create_token(user, description=str(c.body.get("description", "")),
                                   days=c.body.get("days"), actor=c.actor)
    return {**row.to_dict(), "token": token}


def tokens(c: Call) -> list[dict[str, Any]]:
    user = c.query.get("user")
    return [t.to_dict() for t in c.lg.tokens(validate_name(user) if user else None)]


def revoke_token(c: Call) -> dict[str, Any]:
    token_id = c.path["token_id"]
    if not re.fullmatch(r"[0-9a-f]{12}", token_id):
        raise NotFoundError(f"no token {token_id!r}")
    return c.lg.revoke_token(token_id, actor=c.actor).to_dict()
