"""The facade that the CLI, the server and the Python API call; nothing else reaches into storage.

    lg = Lockgate.open()                       # LOCKGATE_HOME or ./.lockgate
    v = lg.register(model, sample, name="clf")  # convert, check parity, store
    lg.promote(f"clf@{v.number}", "production")
    predictor = lg.load("clf@production")
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockgate.audit import (
    AuditEvent,
    AuditRecord,
    ChainReport,
    DenialRecorder,
    EventType,
    canonical_json,
    now,
    verify_chain,
)
from lockgate.config.settings import Settings, load_settings, write_default_config
from lockgate.errors import (
    AccessDeniedError,
    ConfigError,
    ConversionError,
    Error,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PromotionError,
    ServeError,
    SignatureError,
    SupplyChainError,
)
from lockgate.gates import promotion
from lockgate.progress import NullProgress, Progress
from lockgate.runtime.onnxmeta import default_opset
from lockgate.runtime.predictor import Predictor
from lockgate.seal import folder as sealing
from lockgate.store.artifacts import ArtifactStore, LocalArtifactStore
from lockgate.store.metadata import (
    Change,
    Decision,
    GateRun,
    MetadataStore,
    SqlMetadataStore,
    TokenRow,
    UserRow,
    VersionRow,
    VulnSnapshot,
)
from lockgate.types import GateResult, ModelRef, Version, validate_name

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from lockgate.access.identity import Principal
    from lockgate.gates import ServerHandle
    from lockgate.monitor.profile import Profile
    from lockgate.rollout.state import Deployment
    from lockgate.seal.integrity import CollectReport, FsckReport
    from lockgate.serve.controller import Desired
    from lockgate.supplychain.vulns.policy import VulnReport

__all__ = ["Lockgate", "ModelSummary", "init_home"]

log = logging.getLogger("lockgate")

_MAX_ONNX_BYTES = 2**31 - 1
MODEL_FILE = sealing.MODEL_FILE


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int
    stages: Mapping[str, list[int]]
    aliases: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "versions": self.versions, "latest": self.latest,
                "stages": dict(self.stages), "aliases": dict(self.aliases)}


class Lockgate:
    """One lockgate home: settings, a metadata store and an artifact store."""

    def __init__(
        self,
        settings: Settings,
        *,
        metadata: MetadataStore | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        from lockgate.gates import check_policy

        check_policy(settings)
        self.settings = settings
        self.meta: MetadataStore = metadata or SqlMetadataStore(settings.database_url)
        self.artifacts: ArtifactStore = artifacts or _artifact_store(settings)
        self.denials = DenialRecorder(lambda event: self.meta.append_event(event))
        """Where refusals are recorded: repeats fold into one audit row per window."""

    @classmethod
    def open(cls, home: Path | str | None = None, **flags: Any) -> Lockgate:
        """Open (and create if needed) the home at ``home``, ``$LOCKGATE_HOME`` or ./.lockgate."""
        settings = load_settings(home, **flags)
        write_default_config(settings.home)
        sealing.ensure_default_keys(settings)
        return cls(settings)

    def close(self) -> None:
        self.denials.close()
        self.meta.close()

    def __enter__(self) -> Lockgate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registration ------------------------------------------------------------------------
    def register(
        self,
        model: object,
        sample_input: object = None,
        *,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        seed: int | None = None,
        seeds: Mapping[str, int] | None = None,
        opset: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        creator: str | None = None,
        considerations: str = "",
        datasets: Sequence[Mapping[str, str]] = (),
        lock_file: Path | str | None = None,
        recipe: Mapping[str, Any] | None = None,
        reference: Path | str | Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Convert ``model`` to ONNX, prove parity with its framework on ``sample_input`` plus
        random inputs, capture the environment, write the ML-BOM, model card and manifest, sign
        them and store a new immutable version.

        ``considerations`` (free text, one limitation per paragraph) and ``datasets`` (mappings
        with ``name`` and optionally ``fingerprint``, ``url``, ``description``) go into the
        model card; ``lock_file`` (``pylock.toml`` or a ``requirements.txt`` with ``--hash``)
        puts its hashes on the BOM's library components and is kept, signed, with the version
        (the ``pinned_dependencies`` gate reads it); ``recipe`` (``entry``: ``module:function``,
        ``args``) says how ``lockgate reproduce`` rebuilds the model. ``reference`` (a data
        file or arrays by input name) becomes the version's reference profile for drift
        monitors.

        Nothing is stored unless every step succeeds. Raises ParityError when ONNX Runtime
        disagrees with the source framework and SupplyChainError when the BOM does not validate.
        """
        from lockgate.convert import converter_for
        from lockgate.environment.fingerprint import capture_environment
        from lockgate.parity.check import assert_parity, check_parity
        from lockgate.supplychain.sbom import parse_lock_hashes

        validate_name(name)
        clean_metrics = _check_metrics(metrics or {})
        clean_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        all_seeds = {str(k): int(v) for k, v in (seeds or {}).items()}
        if seed is not None:
            all_seeds.setdefault("seed", int(seed))
        progress = progress or NullProgress()
        extra: dict[str, bytes] = {}
        lock_hashes = None
        if lock_file is not None:
            lock_path = Path(lock_file)
            lock_hashes = parse_lock_hashes(lock_path)
            lock_name = "pylock.toml" if lock_path.suffix == ".toml" else "requirements.txt"
            extra[lock_name] = lock_path.read_bytes()
        if recipe is not None:
            extra[sealing.RECIPE_FILE] = (canonical_json(_check_recipe(recipe)) + "\n").encode()
        dataset_specs = [{str(k): str(x) for k, x in d.items()} for d in datasets]

        converter = converter_for(model)
        converted = converter.convert(model, sample_input, opset=opset, progress=progress)
        self._check_framework(name, converted.framework, converted.framework_version)
        onnx_bytes = converted.model.SerializeToString()
        if len(onnx_bytes) > _MAX_ONNX_BYTES:
            raise ConversionError("the ONNX model is over 2 GB; lockgate stores one-file models")
        predictor = Predictor(onnx_bytes)
        report = None
        if converted.reference is not None:
            report = check_parity(
                converted,
                predictor,
                n_random=self.settings.parity_samples,
                atol=self.settings.parity_atol if atol is None else atol,
                rtol=self.settings.parity_rtol if rtol is None else rtol,
                seed=all_seeds.get("seed", 0),
                progress=progress,
            )
            assert_parity(report)
        environment = capture_environment(
            seeds=all_seeds, providers=predictor.providers, cwd=Path.cwd()
        )
        environment["converter"] = converted.converter
        from lockgate.gates.probe import sample_document

        profile = None
        if reference is not None:
            from lockgate.monitor.service import build_reference

            profile = build_reference(predictor, Path(reference) if isinstance(
                reference, (str, Path)) else reference)
        sample_out = predictor(converted.sample)
        extra[sealing.SAMPLES_FILE] = (canonical_json(
            sample_document(converted.sample, sample_out)) + "\n").encode()
        digest = self.artifacts.put(onnx_bytes)
        actor = creator or self.settings.user
        draft = Version(
            name=name,
            number=0,
            digest=digest,
            framework=converted.framework,
            framework_version=converted.framework_version,
            opset=default_opset(converted.model),
            ir_version=int(converted.model.ir_version),
            signature=predictor.signature,
            parity=report,
            environment=environment,
            creator=actor,
            created_at=now(),
            description=description,
            tags=clean_tags,
            metrics=clean_metrics,
            seeds=all_seeds,
            stage=self.settings.stages[0],
        )
        sealed: list[Version] = []
        proto = converted.model
        producer = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown"

        def build(number: int) -> dict[str, Any]:
            sealed[:] = [sealing.seal(
                replace(draft, number=number), onnx_bytes, self.artifacts, self.settings,
                producer=producer, lock_hashes=lock_hashes, considerations=considerations,
                datasets=dataset_specs, extra_files=extra,
            )]
            return sealed[0].record()

        def event(record: Mapping[str, Any]) -> AuditEvent:
            return AuditEvent(EventType.MODEL_REGISTERED, actor, name, None, {
                "digest": str(digest), "framework": converted.framework,
                "parity_passed": report.passed if report else None,
                "files": record.get("files", {}), "signed_by": record.get("signed_by", ""),
                "signature_bundle": record.get("signature_bundle"),
            })

        self.meta.create_version(name, build, draft.stage, event)
        v = sealed[0]
        if profile is not None:
            from lockgate.monitor.service import store_reference

            store_reference(self, v, profile, actor=actor)
        return v

    def _check_framework(self, name: str, framework: str, version: str) -> None:
        from lockgate.convert.frameworks import FrameworkPolicyError, check_framework

        try:
            check_framework(self.settings.frameworks, framework, version)
        except FrameworkPolicyError as exc:
            self.meta.append_event(AuditEvent(
                EventType.REGISTRATION_REFUSED, self.settings.user, name, None,
                {"framework": framework, "framework_version": version, "reason": exc.message}))
            raise

    # -- lookup ------------------------------------------------------------------------------
    def get(self, ref: str | ModelRef) -> Version:
        """Resolve ``name``, ``name@3``, ``name@<stage>`` or ``name@<alias>`` to a version."""
        r = ModelRef.parse(ref) if isinstance(ref, str) else ref
        row = self._resolve(r)
        return Version.from_record(row.name, row.number, row.stage, row.record)

    def _resolve(self, r: ModelRef) -> VersionRow:
        if isinstance(r.selector, int):
            if not 0 < r.selector < 2**31:
                raise NotFoundError(f"model {r.name} has no version {r.selector}")
            row = self.meta.get_version(r.name, r.selector)
            if row is not None:
                return row
            if not self.meta.list_versions(r.name):
                raise NotFoundError(f"no model named {r.name!r}",
                                    hint="`lockgate models` lists registered models")
            raise NotFoundError(f"model {r.name} has no version {r.selector}")
        rows = self.meta.list_versions(r.name)
        if not rows:
            raise NotFoundError(f"no model named {r.name!r}",
                                hint="`lockgate models` lists registered models")
        if r.selector is None:
            return rows[-1]
        if r.selector in self.settings.stages:
            in_stage = [v for v in rows if v.stage == r.selector]
            if not in_stage:
                raise NotFoundError(f"model {r.name} has no version in stage {r.selector!r}")
            return in_stage[-1]
        number = self.meta.aliases(r.name).get(r.selector)
        if number is None:
            raise NotFoundError(
                f"{r.selector!r} is neither a stage nor an alias of model {r.name}",
                hint=f"stages: {list(self.settings.stages)}",
            )
        row = self.meta.get_version(r.name, number)
        if row is None:
            raise NotFoundError(f"alias {r.name}@{r.selector} points at a missing version")
        return row

    def versions(self, name: str) -> list[Version]:
        rows = self.meta.list_versions(validate_name(name))
        if not rows:
            raise NotFoundError(f"no model named {name!r}")
        return [Version.from_record(r.name, r.number, r.stage, r.record) for r in rows]

    def models(self) -> list[ModelSummary]:
        """Every model: version count, latest, versions per stage, aliases (two queries, no
        version record read)."""
        index: dict[str, dict[str, list[int]]] = {}
        counts: dict[str, tuple[int, int]] = {}
        for name, number, stage in self.meta.version_index():
            index.setdefault(name, {}).setdefault(stage, []).append(number)
            seen, top = counts.get(name, (0, 0))
            counts[name] = (seen + 1, max(top, number))
        all_aliases = self.meta.all_aliases()
        return [ModelSummary(name, counts[name][0], counts[name][1], stages,
                             all_aliases.get(name, {})) for name, stages in index.items()]

    def aliases(self, name: str) -> dict[str, int]:
        return self.meta.aliases(validate_name(name))

    def gate_runs(self, ref: str | ModelRef) -> list[GateRun]:
        v = self.get(ref)
        return self.meta.gate_runs(v.name, v.number)

    def version_runs(self, v: Version) -> tuple[list[GateRun], list[Decision]]:
        """The gate runs and decisions of a version already looked up."""
        return self.meta.gate_runs(v.name, v.number), self.meta.decisions(v.name, v.number)

    def latest_monitor_run(self, name: str, number: int) -> dict[str, Any] | None:
        """The newest monitor result of ``name@number``, or None."""
        runs = self.meta.observations(name, "monitor", number=number, limit=1)
        return dict(runs[0].record) if runs else None

    def vuln_snapshot(self) -> VulnSnapshot | None:
        """The imported vulnerability snapshot, or None before the first import."""
        return self.meta.vuln_snapshot()

    def authenticate(self, token: str | None) -> Principal:
        """The principal an API token stands for; AuthenticationError otherwise."""
        from lockgate.access.identity import authenticate

        return authenticate(self.meta, token)

    def audit_seq(self) -> int:
        """The sequence number of the audit log's last record (0 when empty)."""
        return self.meta.audit_tail()

    def audit_after(self, seq: int, *, model: str | None = None) -> list[AuditRecord]:
        """The audit records after ``seq``, of ``model`` when given."""
        return [r for r in self.meta.audit_records(seq) if model is None or r.model == model]

    # -- state changes -----------------------------------------------------------------------
    def promote(
        self,
        ref: str | ModelRef,
        to: str,
        *,
        actor: str | None = None,
        run_all: bool = False,
        on_result: Callable[[GateResult], None] | None = None,
    ) -> promotion.PromotionResult:
        """Run the gates configured for the transition, in order, and move the version, or
        raise GateFailedError and move nothing (the refusal is stored and audited). Gates after
        the first failure are skipped unless ``run_all``."""
        v = self.get(ref)
        holders = self._holders(v.name, to)
        with _VersionEvidence(self, v) as evidence:
            result = promotion.promote(
                self.meta, self.settings, v, to, actor=actor or self.settings.user,
                holders=holders, champion=self._champion(v.name, to), evidence=evidence,
                run_all=run_all, on_result=on_result,
            )
        stored = {r.name for r in self.meta.deployments()}
        if to == self.serving_stage and v.name in stored:
            current = self._deployment(v.name)
            if current.stable != v.number:  # servers follow the promotion (blue/green)
                self._write_deployment(current, current.switch(v.number), "switch",
                                       actor, reason=f"promoted to {to}")
        return result

    def check_gates(
        self,
        ref: str | ModelRef,
        to: str,
        *,
        actor: str | None = None,
        run_all: bool = True,
        on_result: Callable[[GateResult], None] | None = None,
    ) -> list[GateResult]:
        """Evaluate the transition's gates without moving or storing anything (a dry run)."""
        v = self.get(ref)
        holders = self._holders(v.name, to)
        with _VersionEvidence(self, v) as evidence:
            return promotion.evaluate(
                self.settings, v, to, actor=actor or self.settings.user,
                champion=self._champion(v.name, to),
                previous=max(holders, key=lambda h: h.number) if holders else None,
                evidence=evidence, run_all=run_all, on_result=on_result,
            )

    def _holders(self, name: str, stage: str) -> list[Version]:
        return [Version.from_record(r.name, r.number, r.stage, r.record)
                for r in self.meta.versions_in_stage(name, stage)]

    def _champion(self, name: str, stage: str) -> Version | None:
        alias = self.settings.stage_aliases.get(stage)
        if alias and alias in self.meta.aliases(name):
            return self.get(ModelRef(name, alias))
        return None

    # -- decisions ---------------------------------------------------------------------------
    def approve(self, ref: str | ModelRef, stage: str, *, comment: str = "",
                actor: str | None = None) -> Decision:
        """Approve the version for ``stage``: the actor needs the approver role and must not
        be its registrant (separation of duties)."""
        return self._decide("approval", ref, stage, comment=comment, actor=actor)

    def reject(self, ref: str | ModelRef, stage: str, *, comment: str,
               actor: str | None = None) -> Decision:
        """Reject the version for ``stage``; it blocks the approval gate until the same
        approver approves again."""
        if not comment.strip():
            raise InvalidInputError("a rejection needs a comment saying why")
        return self._decide("rejection", ref, stage, comment=comment, actor=actor)

    def waive(self, ref: str | ModelRef, stage: str, gate: str, *, reason: str,
              expires: date, actor: str | None = None) -> Decision:
        """Waive ``gate`` for the version's promotion to ``stage`` until ``expires``: the
        gate still runs, and its failure is shown as waived, with who, why and until when."""
        from lockgate.gates import GATES

        if gate not in GATES:
            raise InvalidInputError(f"unknown gate {gate!r}", hint=f"gates: {sorted(GATES)}")
        if not reason.strip():
            raise InvalidInputError("a waiver needs a reason")
        today = datetime.now(UTC).date()
        if expires < today:
            raise InvalidInputError(f"the waiver would expire in the past ({expires})")
        if (expires - today).days > 366:
            raise InvalidInputError("a waiver may last a year at most",
                                    hint="waivers are exceptions; fix the cause instead")
        return self._decide("waiver", ref, stage, comment=reason, actor=actor, gate=gate,
                            expires=expires.isoformat())

    def _decide(self, kind: str, ref: str | ModelRef, stage: str, *, comment: str,
                actor: str | None, gate: str = "", expires: str | None = None) -> Decision:
        v = self.get(ref)
        who = actor or self.settings.user
        if stage not in self.settings.stages:
            raise InvalidInputError(f"unknown stage {stage!r}",
                                    hint=f"stages: {list(self.settings.stages)}")
        role = self._approver_role(v, stage)
        problem = None
        if not self.has_role(who, role, v.name):
            problem = f"{who!r} does not hold the {role!r} role"
        elif kind == "approval" and who == v.creator:
            problem = (f"{who!r} registered {v.ref}; separation of duties forbids approving "
                       "one's own version")
        if problem is not None:
            self.denials.record(AuditEvent(
                EventType.ACCESS_DENIED, who, v.name, v.number,
                {"action": kind, "stage": stage, "gate": gate, "reason": problem}))
            raise AccessDeniedError(problem, hint=f"approvers are listed in [roles] {role} = "
                                                  "[...] of the policy")
        decision = Decision(kind=kind, name=v.name, number=v.number, stage=stage, actor=who,
                            created_at=now(), comment=comment, gate=gate, expires=expires)
        event = {"approval": EventType.APPROVED, "rejection": EventType.REJECTED,
                 "waiver": EventType.WAIVED}[kind]
        self.meta.apply(Change(decisions=[decision], events=[AuditEvent(
            event, who, v.name, v.number,
            {"stage": stage, "comment": comment, "gate": gate, "expires": expires})]))
        return decision

    # -- identity ----------------------------------------------------------------------------
    def has_role(self, who: str, role: str, model: str | None = None) -> bool:
        """``who`` holds ``role`` through the policy's [roles] or as a registry user (a global
        role or a grant matching ``model``)."""
        from lockgate.access import identity

        if self.settings.has_role(who, role):
            return True
        principal = identity.principal_of(self.meta, who)
        return principal is not None and principal.can(role, model)

    def users(self) -> list[UserRow]:
        return self.meta.list_users()

    def add_user(self, name: str, roles: Sequence[str], *,
                 grants: Sequence[tuple[str, str]] = (), disabled: bool = False,
                 actor: str | None = None) -> UserRow:
        """Create a registry user, or replace its roles and grants (audited)."""
        from lockgate.access import identity

        return identity.add_user(self.meta, name, roles, grants=grants, disabled=disabled,
                                 actor=actor or self.settings.user)

    def create_token(self, user: str, *, description: str = "", days: int | None = None,
                     actor: str | None = None) -> tuple[TokenRow, str]:
        """A new API token for ``user``: the row and the token text, which is not stored and
        cannot be shown again."""
        from lockgate.access import identity

        return identity.create_token(self.meta, user, description=description, days=days,
                                     actor=actor or self.settings.user)

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> TokenRow:
        from lockgate.access import identity

        return identity.revoke_token(self.meta, token_id, actor=actor or self.settings.user)

    def tokens(self, user: str | None = None) -> list[TokenRow]:
        return self.meta.list_tokens(user)

    def _approver_role(self, v: Version, stage: str) -> str:
        for spec in self.settings.gates_for(v.stage, stage):
            if spec.name == "approval" and isinstance(spec.params.get("role"), str):
                return str(spec.params["role"])
        return "approver"

    def decisions(self, ref: str | ModelRef) -> list[Decision]:
        v = self.get(ref)
        return self.meta.decisions(v.name, v.number)

    def record_reproduction(self, v: Version, detail: Mapping[str, Any],
                            *, actor: str | None = None) -> Decision:
        who = actor or self.settings.user
        decision = Decision(kind="reproduction", name=v.name, number=v.number, stage="",
                            actor=who, created_at=now(), comment=str(detail.get("message", "")),
                            detail=dict(detail))
        self.meta.apply(Change(decisions=[decision], events=[AuditEvent(
            EventType.REPRODUCED, who, v.name, v.number, dict(detail))]))
        return decision

    def set_alias(
        self, name: str, alias: str, number: int | None, *, actor: str | None = None
    ) -> None:
        """Point ``alias`` at version ``number`` of ``name``, or remove it when None."""
        validate_name(alias)
        if alias in self.settings.stages:
            raise InvalidInputError(f"{alias!r} is a stage name; aliases must differ from stages")
        if alias.isdigit():
            raise InvalidInputError("an alias cannot be a number")
        who = actor or self.settings.user
        if number is None:
            if alias not in self.meta.aliases(name):
                raise NotFoundError(f"model {name} has no alias {alias!r}")
            event = AuditEvent(EventType.ALIAS_REMOVED, who, name, None, {"alias": alias})
        else:
            self.get(ModelRef(name, number))
            event = AuditEvent(EventType.ALIAS_SET, who, name, number, {"alias": alias})
        self.meta.apply(Change(aliases={(name, alias): number}, events=[event]))

    # -- loading and serving -----------------------------------------------------------------
    def verify(self, version: Version) -> str | None:
        """Check the version's signature (every file, no extra file, a trusted key) and that
        the signed manifest is its record; return the key id, or None for an unsigned version
        that policy allows. Refusals raise SignatureError or IntegrityError and are audited."""
        try:
            return sealing.verify(version, self.artifacts, self.settings)
        except SignatureError as exc:
            self._refused(EventType.SIGNATURE_REFUSED, version, exc)
            raise
        except (IntegrityError, NotFoundError) as exc:
            self._refused(EventType.ARTIFACT_REFUSED, version, exc)
            raise

    def _refused(self, kind: EventType, version: Version, exc: Error) -> None:
        self.meta.append_event(AuditEvent(
            kind, self.settings.user, version.name, version.number,
            {"digest": str(version.digest), "reason": exc.message},
        ))

    def model_bytes(self, version: Version) -> bytes:
        """The version's ONNX bytes after :meth:`verify`, checked against their digest."""
        self.verify(version)
        try:
            return self.artifacts.get(version.digest)
        except (IntegrityError, NotFoundError) as exc:
            self._refused(EventType.ARTIFACT_REFUSED, version, exc)
            raise

    def file_bytes(self, version: Version, name: str) -> bytes:
        """One file of the version's folder (``bom.cdx.json``, ...), checked against its
        digest. NotFoundError when the version has no such file."""
        digest = version.files.get(name)
        if digest is None:
            raise NotFoundError(f"{version.ref} has no file {name!r}",
                                hint=f"files: {sorted(version.files)}")
        return self.artifacts.get(digest)

    def load(self, ref: str | ModelRef) -> Predictor:
        """An ONNX Runtime predictor for the version, after verifying its artifact digest."""
        return Predictor(self.model_bytes(self.get(ref)))

    def serve_refs(self, refs: Sequence[str] = ()) -> list[Version]:
        """The versions ``serve`` would load: ``refs``, or every model's serving-stage version."""
        if refs:
            return [self.get(r) for r in refs]
        stage = self.serving_stage
        out = []
        for name in self.meta.list_models():
            in_stage = [r for r in self.meta.list_versions(name) if r.stage == stage]
            if in_stage:
                r = in_stage[-1]
                out.append(Version.from_record(r.name, r.number, r.stage, r.record))
        return out

    @property
    def serving_stage(self) -> str:
        st = self.settings.stages
        return "production" if "production" in st else st[-2]

    def create_app(self, refs: Sequence[str] = (), *, poll_s: float = 0.5,
                   grace_s: float = 300.0, models: Sequence[str] = (),
                   inline_below_s: float | None = None) -> Starlette:
        """The OIP v2 ASGI app. With ``refs``, exactly those versions. Without, the app follows
        the deployments in the store (a model without one serves its production version),
        polling every ``poll_s``: switches, canaries and rollbacks need no restart; ``models``
        limits it to those model names. ``inline_below_s`` overrides the default threshold
        under which a version's requests run on the event loop (see
        :mod:`lockgate.serve.inference`)."""
        from lockgate.serve import ServedModel, create_app

        if refs:
            versions = self.serve_refs(refs)
            served = [ServedModel(v.name, v.number, _loader(self, v), _describe(v))
                      for v in versions]
            return create_app(served, on_event=self._serve_event,
                              **self._observing(inline_below_s))
        wanted = frozenset(models)

        def desired() -> dict[str, Desired]:
            found = self.desired_state()
            return {n: d for n, d in found.items() if n in wanted} if wanted else found

        if not desired():
            raise NotFoundError(
                f"nothing to serve: no deployment and no version in stage "
                f"{self.serving_stage!r}",
                hint="promote a version, `lockgate deploy NAME@V`, or name versions: "
                     "lockgate serve NAME@V",
            )

        def make_spec(name: str, number: int) -> ServedModel:
            v = self.get(ModelRef(name, number))
            return ServedModel(name, number, _loader(self, v), _describe(v))

        return create_app([], on_event=self._serve_event, desired=desired,
                          make_spec=make_spec, poll_s=poll_s, grace_s=grace_s,
                          subscribe=self._subscriber(), **self._observing(inline_below_s))

    def _subscriber(self) -> Callable[[Callable[[], None]], Callable[[], None]] | None:
        subscribe = getattr(self.meta, "subscribe", None)
        if subscribe is None:
            return None

        def sub(callback: Callable[[], None]) -> Callable[[], None]:
            stop: Callable[[], None] | None = subscribe(callback)
            return stop if stop is not None else (lambda: None)

        return sub

    def _observing(self, inline_below_s: float | None = None) -> dict[str, Any]:
        from lockgate.monitor.capture import RequestLog
        from lockgate.monitor.service import latest_monitor

        s = self.settings
        log_ = None
        if s.request_log is not None:
            try:
                log_ = RequestLog(s.request_log, s.request_log_rate, s.request_log_format)
            except (ValueError, ImportError, OSError) as exc:
                raise InvalidInputError(f"request log: {exc}") from None
        options: dict[str, Any] = {
            "capture_window": s.capture_window, "request_log": log_,
            "drift": lambda name, number: latest_monitor(self, name, number),
            "decode_budget": s.serve_decode_budget, "max_elements": s.serve_max_elements,
            **self._data_plane_auth()}
        if inline_below_s is not None:
            options["inline_below_s"] = inline_below_s
        return options

    def _data_plane_auth(self) -> dict[str, Any]:
        """The token checks of a server: on infer with ``serve.auth = "token"``, on capture
        whenever the home has users (its rows are production inputs and outputs)."""
        from lockgate.access.identity import authenticate, is_token
        from lockgate.serve.auth import TokenCheck

        has_users = bool(self.users())
        if self.settings.serve_auth == "token" and not has_users:
            raise ConfigError("serve.auth = \"token\" needs users with the inference role",
                              hint="lockgate user add NAME --role inference, then "
                                   "lockgate token create NAME")

        def check(token: str) -> Any:
            return authenticate(self.meta, token)

        monitoring = TokenCheck(check, "monitoring", well_formed=is_token)
        users_seen = {"at": time.monotonic(), "any": has_users}

        def capture_check(authorization: str | None, model: str) -> object:
            """Open while the home has no users (looked at every 5 s: users added while
            serving close it), else the monitoring role."""
            if not users_seen["any"] and time.monotonic() - users_seen["at"] > 5.0:
                users_seen.update(at=time.monotonic(), any=bool(self.users()))
            return monitoring(authorization, model) if users_seen["any"] else None

        return {
            "authorize": TokenCheck(check, "inference", well_formed=is_token)
            if self.settings.serve_auth == "token" else None,
            "capture_authorize": capture_check}

    # -- deployments -------------------------------------------------------------------------
    def deployments(self) -> dict[str, Deployment]:
        """Every model's deployment: stored ones, and for models without one the implicit
        deployment of their serving-stage version."""
        from lockgate.rollout.state import Deployment

        out = {r.name: Deployment.from_record(r.name, r.generation, r.record, r.updated_at)
               for r in self.meta.deployments()}
        for name, number in self.meta.stage_holders(self.serving_stage).items():
            out.setdefault(name, Deployment(name, number))
        return dict(sorted(out.items()))

    def desired_state(self) -> dict[str, Desired]:
        from lockgate.serve.batching import BatchingConfig
        from lockgate.serve.controller import Desired

        return {n: Desired(d.stable, d.candidate, d.weight, d.shadow,
                           batching=BatchingConfig.from_dict(d.batching) if d.batching else None,
                           analysis=d.analysis)
                for n, d in self.deployments().items()}

    def set_batching(self, name: str, batching: Mapping[str, Any] | None, *,
                     actor: str | None = None) -> Deployment:
        """Dynamic batching for the model's servers (None turns it off)."""
        from lockgate.serve.batching import BatchingConfig

        current = self._deployment(name)
        cfg = BatchingConfig.from_dict(batching).to_dict() if batching else None
        return self._write_deployment(current, replace(current, batching=cfg), "batching",
                                      actor)

    def deploy(self, ref: str | ModelRef, *, canary: int | None = None,
               shadow: bool = False, analysis: Mapping[str, Any] | None = None,
               actor: str | None = None) -> Deployment:
        """Make the version the stable one (blue/green), or the canary candidate taking
        ``canary`` percent of traffic, or the shadow. It must verify first; a stable version
        must be in the serving stage, a candidate or shadow past the first stage."""
        v = self.get(ref)
        if v.stage == self.settings.stages[-1] or (
                v.stage == self.settings.stages[0] and (canary is None and not shadow)):
            raise InvalidInputError(f"{v.ref} is in stage {v.stage!r} and cannot be deployed")
        if canary is None and not shadow and v.stage != self.serving_stage:
            raise InvalidInputError(
                f"{v.ref} is in {v.stage!r}; only {self.serving_stage!r} versions become "
                "stable", hint="promote it first, or deploy it as a canary (--canary W)")
        if v.stage == self.settings.stages[0]:
            raise InvalidInputError(f"{v.ref} is still in {v.stage!r}",
                                    hint="promote it past the first stage first")
        self.verify(v)
        current = self.deployments().get(v.name)
        if canary is not None or shadow:
            if current is None:
                raise InvalidInputError(f"{v.name} has no stable version to canary against",
                                        hint="deploy a stable version first")
            new = (current.with_shadow(v.number, analysis) if shadow
                   else current.canary(v.number, canary or 0, analysis))
        elif current is None or (current.generation == 0 and current.stable == v.number):
            new = _first(v)  # store the implicit deployment: pin what serves now
        else:
            new = current.switch(v.number)
        what = "shadow" if shadow else "canary" if canary is not None else "switch"
        return self._write_deployment(current, new, what, actor)

    def set_canary_weight(self, name: str, weight: int, *, actor: str | None = None
                          ) -> Deployment:
        current = self._deployment(name)
        return self._write_deployment(current, current.set_weight(weight), "weight", actor)

    def promote_candidate(self, name: str, *, actor: str | None = None) -> Deployment:
        current = self._deployment(name)
        return self._write_deployment(current, current.promote_candidate(), "promote", actor)

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployment:
        """Drop the canary, or go back to the previous stable version; servers switch within
        one poll interval (the previous version is still loaded during the grace period)."""
        current = self._deployment(name)
        return self._write_deployment(current, current.rollback(degraded=degraded),
                                      "rollback", actor, reason)

    def _auto_rollback(self, payload: Mapping[str, Any]) -> None:
        """An analysis failed on a server: drop that candidate (or shadow) if the deployment
        still has it — another server may have rolled back first — audit and notify."""
        name, version = str(payload["model"]), int(payload["version"])
        current = self._deployment(name)
        reason = (f"automatic rollback: {payload.get('last', {}).get('metric')} = "
                  f"{payload.get('last', {}).get('value')} over "
                  f"{payload.get('rule', {}).get('max')} in {payload.get('failed')} of "
                  f"{payload.get('measurements')} measurement(s)")
        if payload.get("role") == "shadow" and current.shadow == version:
            new = current.drop_shadow()
        elif current.candidate == version:
            new = current.rollback(degraded=True)
        else:
            return
        try:
            self._write_deployment(current, new, "auto-rollback", "lockgate-analysis", reason)
        except PromotionError:
            return  # another server changed it first
        log.warning("lockgate: %s %s@%s: %s", "shadow dropped" if new.shadow is None and
                    payload.get("role") == "shadow" else "rolled back", name, version, reason)
        self.meta.append_event(AuditEvent(EventType.DEPLOY_ROLLED_BACK, "lockgate-analysis",
                                          name, version, dict(payload)))
        self.notify("deploy.rolled_back", {**payload, "reason": reason})

    def notify(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Run the configured notify command with the incident as JSON on stdin; a failing
        command is logged, never raised (the rollback already happened)."""
        cmd = self.settings.notify_command
        if not cmd:
            return
        import json
        import subprocess

        doc = json.dumps({"event": kind, **payload}, default=str)
        try:
            done = subprocess.run(list(cmd), input=doc, text=True, capture_output=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("notify command %s failed: %s", cmd[0], exc)
            return
        if done.returncode != 0:
            log.warning("notify command %s exited %s", cmd[0], done.returncode)

    def _record_shadow(self, payload: Mapping[str, Any]) -> None:
        v = self.get(ModelRef(str(payload["model"]), int(payload["version"])))
        detail = {k: payload[k] for k in ("compared", "agreement", "max_divergence", "stable")
                  if k in payload}
        self.meta.apply(Change(decisions=[Decision(
            kind="shadow", name=v.name, number=v.number, stage=self.serving_stage,
            actor="lockgate-serve", created_at=now(), detail=detail)]))

    def _deployment(self, name: str) -> Deployment:
        found = self.deployments().get(validate_name(name))
        if found is None:
            raise NotFoundError(f"{name} is not deployed",
                                hint="lockgate deploy NAME@V, or promote to production")
        return found

    def _write_deployment(self, current: Deployment | None, new: Deployment, what: str,
                          actor: str | None, reason: str = "") -> Deployment:
        who = actor or self.settings.user
        stored = {r.name: r.generation for r in self.meta.deployments()}
        expected = stored.get(new.name, 0)
        self.meta.apply(Change(
            deployments={new.name: (expected, new.record())},
            events=[AuditEvent(EventType.DEPLOYMENT_CHANGED, who, new.name, new.stable,
                               {"action": what, "before": current.record() if current else None,
                                "after": new.record(), "reason": reason})],
        ))
        return self._deployment(new.name)
    def _serve_event(self, kind: str, payload: dict[str, Any]) -> None:
        types = {"serve.start": EventType.SERVE_STARTED, "serve.stop": EventType.SERVE_STOPPED,
                 "model.load_failed": EventType.MODEL_LOAD_FAILED,
                 "deploy.failed": EventType.DEPLOY_FAILED,
                 "deploy.switched": EventType.DEPLOY_SWITCHED}
        if kind == "deploy.analysis_failed":
            self._auto_rollback(payload)
            return
        if kind == "deploy.shadow_stats":
            self._record_shadow(payload)
            return
        if kind == "deploy.failed":
            self.notify(kind, payload)
        et = types.get(kind)
        if et is None:
            return
        self.meta.append_event(AuditEvent(
            et, self.settings.user, payload.get("model"), payload.get("version"), payload
        ))

    # -- observability -----------------------------------------------------------------------
    def set_reference(self, ref: str | ModelRef, data: Path | str | Mapping[str, Any], *,
                      sample: int | None = None, actor: str | None = None) -> dict[str, Any]:
        """Profile reference data (``.npy``, ``.npz``, ``.csv``, ``.parquet``, or arrays by
        input name) with the verified model's outputs on it, and make it the version's
        reference for drift monitors. Returns the stored record."""
        from lockgate.monitor.profile import DEFAULT_SAMPLE
        from lockgate.monitor.service import build_reference, store_reference

        v = self.get(ref)
        predictor = Predictor(self.model_bytes(v))
        profile = build_reference(predictor, Path(data) if isinstance(data, (str, Path))
                                  else data, sample=sample or DEFAULT_SAMPLE)
        return store_reference(self, v, profile, actor=actor or self.settings.user)

    def reference_profile(self, ref: str | ModelRef) -> Profile | None:
        from lockgate.monitor.service import reference_profile

        return reference_profile(self, self.get(ref))

    def monitor(self, name: str, *, url: str | None = None,
                token: str | None = None) -> dict[str, Any]:
        """One monitor run of the model's production version on the server at ``url``
        (default: the configured serve host and port), reading its capture with ``token`` (a
        user with the monitoring role; needed once the home has users); see
        :mod:`lockgate.monitor.service`."""
        from lockgate.monitor.service import monitor_once

        target = url or f"http://{self.settings.serve_host}:{self.settings.serve_port}"
        return monitor_once(self, validate_name(name), url=target, token=token)

    def monitor_runs(self, ref: str | ModelRef, *, limit: int = 50) -> list[dict[str, Any]]:
        """The version's latest monitor results, newest first."""
        v = self.get(ref)
        return [dict(o.record) for o in self.meta.observations(v.name, "monitor",
                                                                number=v.number, limit=limit)]

    def compare(self, ref: str | ModelRef, model: object | None = None, *, batch: int = 32,
                seconds: float = 1.0, compile_: bool = True, store: bool = True
                ) -> dict[str, Any]:
        """Measure the source framework's inference against ONNX Runtime for the version's
        recorded sample (see :mod:`lockgate.parity.benchmark`). ``model`` is the source model;
        without it, the version's recipe (``--from`` at registration) rebuilds it. The result, with
        the parity figures, is stored with the version unless ``store`` is False."""
        import json

        from lockgate.gates.probe import sample_feeds
        from lockgate.parity.benchmark import load_factory, runtime_comparison

        v = self.get(ref)
        if v.framework == "onnx":
            raise InvalidInputError(f"{v.ref} was registered from an ONNX file: there is no "
                                    "source framework to compare with")
        if model is None:
            if sealing.RECIPE_FILE not in v.files:
                raise InvalidInputError(
                    f"{v.ref} has no recipe to rebuild its source model from",
                    hint="pass the model: lockgate compare NAME@V --from module:function")
            recipe = json.loads(self.file_bytes(v, sealing.RECIPE_FILE))
            model, _ = load_factory(str(recipe["entry"]), [str(a) for a in recipe["args"]])
        samples = json.loads(self.file_bytes(v, sealing.SAMPLES_FILE))
        result = runtime_comparison(model, v.framework, self.model_bytes(v),
                                    sample_feeds(samples), batch=batch, seconds=seconds,
                                    compile_=compile_)
        result.update(model=v.name, version=v.number, at=now(),
                      parity={o.name: o.max_abs_error for o in v.parity.outputs}
                      if v.parity else {})
        if store:
            from lockgate.store.metadata.interface import Observation

            self.meta.apply(Change(observations=[Observation("comparison", v.name, v.number,
                                                             result["at"], result)]))
        return result

    def comparisons(self, ref: str | ModelRef, *, limit: int = 1) -> list[dict[str, Any]]:
        v = self.get(ref)
        return [dict(o.record) for o in self.meta.observations(
            v.name, "comparison", number=v.number, limit=limit)]

    def deliver_pending(self) -> list[dict[str, Any]]:
        """Retry every undelivered retraining trigger."""
        from lockgate.monitor.service import deliver_pending

        return deliver_pending(self)

    # -- supply chain ------------------------------------------------------------------------
    def import_vulns(self, path: Path | str, *, actor: str | None = None) -> VulnSnapshot:
        """Load an OSV snapshot (PyPI ``all.zip`` or a folder of OSV JSON) into the metadata
        store; it becomes the data the vulnerabilities gate and ``scan`` use."""
        from lockgate.supplychain.vulns.osv import load_snapshot

        snap = load_snapshot(Path(path))
        rows = [(r.id, pkg, canonical_json(dict(r.raw))) for r in snap.records
                for pkg in r.packages]
        who = actor or self.settings.user
        stored = VulnSnapshot(0, snap.sha256, snap.date, now(), snap.source, len(snap.records))
        return self.meta.import_vulns(stored, rows, AuditEvent(
            EventType.VULNDB_IMPORTED, who, None, None,
            {"sha256": snap.sha256, "snapshot_date": snap.date, "records": len(snap.records),
             "source": Path(snap.source).name, "skipped": snap.skipped,
             "withdrawn": snap.withdrawn},
        ))

    def vulnerability_report(self, ref: str | ModelRef) -> VulnReport:
        """The version's packages matched against the current OSV snapshot under the policy."""
        from lockgate.supplychain.vulns.policy import assess_vulnerabilities

        v = self.get(ref)
        raw = v.environment.get("packages")
        packages = {str(k): str(x) for k, x in raw.items()} if isinstance(raw, dict) else {}
        snapshot, records = _VersionEvidence(self, v).vulnerability_data(sorted(packages))
        return assess_vulnerabilities(packages, snapshot, records, self.settings,
                                      today=datetime.now(UTC).date())

    def export_evidence(self, ref: str | ModelRef, out: Path | str, *,
                        actor: str | None = None) -> Path:
        """Write the version's evidence pack into the new or empty folder ``out``."""
        from lockgate.seal.evidence import write_evidence

        v = self.get(ref)
        self.verify(v)
        folder = write_evidence(self, v, Path(out))
        self.meta.append_event(AuditEvent(
            EventType.EVIDENCE_EXPORTED, actor or self.settings.user, v.name, v.number,
            {"folder": folder.name},
        ))
        return folder

    # -- history -----------------------------------------------------------------------------
    def history(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Which version held each stage and alias when, who moved it, and which gates passed,
        from the audit log: ``{"timeline": [...], "holdings": [...]}``."""
        validate_name(name)
        if not self.meta.list_versions(name):
            raise NotFoundError(f"no model named {name!r}")
        timeline: list[dict[str, Any]] = []
        holdings: list[dict[str, Any]] = []
        open_: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, stage or alias) -> row

        def enter(kind: str, what: str, version: int | None, at: str, actor: str) -> None:
            row = {"kind": kind, "name": what, "version": version, "from": at, "until": None,
                   "by": actor}
            if kind == "alias":
                leave(kind, what, None, at)
            open_[(kind, f"{what}@{version}" if kind == "stage" else what)] = row
            holdings.append(row)

        def leave(kind: str, what: str, version: int | None, at: str) -> None:
            key = (kind, f"{what}@{version}" if kind == "stage" else what)
            row = open_.pop(key, None)
            if row is not None:
                row["until"] = at

        for r in self.audit_log(model=name):
            p = r.payload
            if r.type == EventType.MODEL_REGISTERED:
                enter("stage", self.settings.stages[0], r.version, r.ts, r.actor)
                timeline.append({"at": r.ts, "event": "registered", "version": r.version,
                                 "detail": f"in {self.settings.stages[0]}", "actor": r.actor,
                                 "gates": []})
            elif r.type == EventType.STAGE_CHANGED:
                leave("stage", str(p.get("from")), r.version, r.ts)
                enter("stage", str(p.get("to")), r.version, r.ts, r.actor)
                timeline.append({"at": r.ts, "event": "stage", "version": r.version,
                                 "detail": f"{p.get('from')} -> {p.get('to')}"
                                           + (f" ({p['reason']})" if p.get("reason") else ""),
                                 "actor": r.actor, "gates": list(p.get("gates", []))})
            elif r.type == EventType.PROMOTION_REFUSED:
                failed = [x.get("gate") for x in p.get("results", [])
                          if x.get("status") in ("fail", "error")]
                timeline.append({"at": r.ts, "event": "refused", "version": r.version,
                                 "detail": f"{p.get('transition')}: failed {', '.join(failed)}",
                                 "actor": r.actor, "gates": failed})
            elif r.type == EventType.ALIAS_SET:
                enter("alias", str(p.get("alias")), r.version, r.ts, r.actor)
                timeline.append({"at": r.ts, "event": "alias", "version": r.version,
                                 "detail": f"{p.get('alias')} -> {name}@{r.version}",
                                 "actor": r.actor, "gates": []})
            elif r.type == EventType.ALIAS_REMOVED:
                leave("alias", str(p.get("alias")), None, r.ts)
                timeline.append({"at": r.ts, "event": "alias", "version": None,
                                 "detail": f"{p.get('alias')} removed", "actor": r.actor,
                                 "gates": []})
            elif r.type in (EventType.APPROVED, EventType.REJECTED, EventType.WAIVED):
                what = {EventType.APPROVED: "approved", EventType.REJECTED: "rejected",
                        EventType.WAIVED: f"waived {p.get('gate')} until {p.get('expires')}"}
                timeline.append({"at": r.ts, "event": "decision", "version": r.version,
                                 "detail": f"{what[EventType(r.type)]} for {p.get('stage')}"
                                           + (f": {p['comment']}" if p.get("comment") else ""),
                                 "actor": r.actor, "gates": []})
        return {"timeline": timeline, "holdings": holdings}

    # -- audit -------------------------------------------------------------------------------
    def audit_log(self, *, model: str | None = None) -> list[AuditRecord]:
        recs = self.meta.audit_records()
        return [r for r in recs if model is None or r.model == model]

    def audit_verify(self) -> ChainReport:
        return verify_chain(self.meta.audit_records())

    # -- integrity ---------------------------------------------------------------------------
    def fsck(self, *, progress: Progress | None = None) -> FsckReport:
        """Check every version (each blob's digest, its signature and signed manifest against
        its record), the audit chain, and list orphan blobs and unfinished writes. Writes
        nothing; :attr:`FsckReport.damaged` says whether anything is broken."""
        from lockgate.seal.integrity import fsck

        return fsck(self.meta, self.artifacts, self.settings, progress=progress)

    def gc(self, *, grace_s: float = 3600.0, dry_run: bool = False,
           actor: str | None = None) -> CollectReport:
        """Remove orphan blobs and unfinished writes older than ``grace_s`` seconds, never a
        blob a version references (see :mod:`lockgate.seal.integrity`); audited as one
        ``artifacts.collected`` event."""
        from lockgate.seal.integrity import collect

        if not math.isfinite(grace_s) or grace_s < 0:
            raise InvalidInputError(f"the grace period must be 0 or more seconds, not {grace_s}")
        return collect(self.meta, self.artifacts, grace_s=grace_s, dry_run=dry_run,
                       actor=actor or self.settings.user)


class _VersionEvidence:
    """What gates read beyond the record (see :class:`lockgate.gates.Evidence`)."""

    def __init__(self, lg: Lockgate, version: Version) -> None:
        from lockgate.gates.probe import ChildServer

        self._lg = lg
        self._version = version
        self._server: ChildServer | Error | None = None
        self._children: list[ChildServer] = []

    def file(self, name: str) -> bytes:
        return self._lg.file_bytes(self._version, name)

    def verify_signature(self) -> str | None:
        return self._lg.verify(self._version)

    def decisions(self) -> list[Decision]:
        return self._lg.meta.decisions(self._version.name, self._version.number)

    def check_loadable(self, version: Version) -> str:
        key = self._lg.verify(version)
        Predictor(self._lg.model_bytes(version))
        return f"signed by {key[:16]}" if key else "unsigned, allowed by policy"

    def server(self, max_loading_time_s: float) -> ServerHandle:
        from lockgate.gates.probe import ChildServer

        if isinstance(self._server, Error):
            raise self._server
        if self._server is None:
            child = ChildServer(self._lg.settings.home, str(self._version.ref),
                                max_loading_time_s=max_loading_time_s)
            self._children.append(child)
            try:
                self._server = child.start()
            except Error as exc:
                self._server = exc
                raise
        return self._server

    def close(self) -> None:
        for child in self._children:
            child.stop()
        self._children.clear()

    def __enter__(self) -> _VersionEvidence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vulnerability_data(self, packages: Sequence[str]) -> tuple[VulnSnapshot | None,
                                                                   list[str]]:
        from packaging.utils import canonicalize_name

        snapshot = self._lg.meta.vuln_snapshot()
        if snapshot is None:
            return None, []
        wanted = sorted({canonicalize_name(p) for p in packages})
        return snapshot, list(dict.fromkeys(self._lg.meta.vuln_records(wanted)))


def _loader(lg: Lockgate, v: Version) -> Callable[[], Predictor]:
    """Verify, load, then compare environments: drift is audited, and refused when policy
    says ``environment_drift = "refuse"``."""
    from lockgate.environment.drift import compare, serving_environment

    def load() -> Predictor:
        predictor = Predictor(lg.model_bytes(v))
        _warm(lg, v, predictor)
        diffs = compare(v.environment, serving_environment(predictor.providers))
        if diffs:
            refuse = lg.settings.environment_drift == "refuse"
            lg.meta.append_event(AuditEvent(
                EventType.ENVIRONMENT_DRIFT, lg.settings.user, v.name, v.number,
                {"differences": [d.to_dict() for d in diffs],
                 "action": "refused" if refuse else "warned"},
            ))
            text = "; ".join(str(d) for d in diffs)
            if refuse:
                raise SupplyChainError(
                    f"{v.ref}: serving environment differs from the registered one: {text}",
                    hint="serve it where it was registered, register it again here, or set "
                         "serve.environment_drift = \"warn\"",
                )
            log.warning("%s: serving environment differs from the registered one: %s",
                        v.ref, text)
        return predictor

    return load


def _first(v: Version) -> Deployment:
    from lockgate.rollout.state import Deployment

    return Deployment(v.name, v.number)


def _warm(lg: Lockgate, v: Version, predictor: Predictor) -> None:
    """Run the sample recorded at registration and compare with its recorded outputs; a
    version that answers differently here never receives traffic."""
    import json

    from lockgate.gates.probe import compare_recorded, sample_feeds

    if sealing.SAMPLES_FILE not in v.files:
        return
    samples = json.loads(lg.file_bytes(v, sealing.SAMPLES_FILE))
    problems = compare_recorded(predictor(sample_feeds(samples)), samples,
                                atol=lg.settings.parity_atol, rtol=lg.settings.parity_rtol)
    if problems:
        raise ServeError(f"{v.ref}: warm-up answers differ from the ones recorded at "
                         f"registration: {'; '.join(problems)}")


def _describe(v: Version) -> Callable[[Predictor], Mapping[str, Any]]:
    from lockgate.environment.drift import compare, serving_environment

    def describe(predictor: Predictor) -> Mapping[str, Any]:
        diffs = compare(v.environment, serving_environment(predictor.providers))
        return {"lockgate_version_digest": str(v.digest),
                "lockgate_signed_by": v.signed_by or None,
                "lockgate_environment_drift": [d.to_dict() for d in diffs]}

    return describe


def _check_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    entry = recipe.get("entry")
    if not isinstance(entry, str) or ":" not in entry:
        raise InvalidInputError("recipe: entry must be 'module:function'")
    args = recipe.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise InvalidInputError("recipe: args must be a list of strings")
    unknown = sorted(set(recipe) - {"entry", "args", "git_commit", "workdir", "root"})
    if unknown:
        raise InvalidInputError(f"recipe: unknown keys {unknown}")
    return {str(k): v for k, v in recipe.items()}


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InvalidInputError(f"metric {k!r} is not a number: {v!r}") from None
        if not math.isfinite(f):
            raise InvalidInputError(f"metric {k!r} is not finite: {v!r}")
        out[str(k)] = f
    return out


def _artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_url:
        from lockgate.store.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore(settings.artifact_url, endpoint_url=settings.s3_endpoint_url)
    return LocalArtifactStore(settings.artifact_root)


def init_home(home: Path | str | None = None) -> Settings:
    """Create the home folder with a commented lockgate.toml and an upgraded database."""
    settings = load_settings(home)
    write_default_config(settings.home)
    sealing.ensure_default_keys(settings)
    store = SqlMetadataStore(settings.database_url)
    store.close()
    return settings

