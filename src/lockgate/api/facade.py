"""The facade that the CLI, the server and the Python API call; nothing else reaches into storage.

    lg = Lockgate.open()                       # LOCKGATE_HOME or ./.lockgate
    v = lg.register(model, sample, name="clf")  # convert, check parity, store
    lg.promote(f"clf@{v.number}", "production")
    predictor = lg.load("clf@production")

:class:`Lockgate` composes one service per concern, each in its own module of this package and
each reachable as an attribute; its methods are theirs:

    lg.registration   registration: convert, prove, seal, store        (registration.py)
    lg.optimization   optimized versions with lineage                  (optimize.py)
    lg.lookup         versions, models, aliases, gate runs             (lookup.py)
    lg.files          verified reads of a version's folder             (files.py)
    lg.promotion      promotions, gates, approvals, waivers, aliases   (promotion.py)
    lg.rollout        deployments, canaries, rollbacks, batching       (rollout.py)
    lg.serving        the OIP v2 app and predictors                    (serving.py)
    lg.validations    provider sets a version passed infra_validation on (validations.py)
    lg.access         roles, users, tokens                             (access.py)
    lg.monitoring     reference profiles, monitor runs, comparisons    (monitoring.py)
    lg.vulnerabilities  OSV snapshots and a version's assessment       (vulnerabilities.py)
    lg.records        history, the audit log, evidence, fsck and gc    (records.py)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Unpack

from starlette.applications import Starlette

from lockgate.access.identity import IdentifiedBy, Principal
from lockgate.api.access import Access
from lockgate.api.files import VersionFiles
from lockgate.api.home import Home
from lockgate.api.lookup import Lookup, ModelSummary
from lockgate.api.monitoring import Monitoring
from lockgate.api.optimize import Optimization
from lockgate.api.promotion import Promotion
from lockgate.api.protocol import RegisterOptions, Registry
from lockgate.api.records import Records
from lockgate.api.registration import Registration
from lockgate.api.rollout import Rollout
from lockgate.api.serving import Serving
from lockgate.api.validations import Validations
from lockgate.api.vulnerabilities import Vulnerabilities
from lockgate.audit import AuditRecord, ChainReport, DenialRecorder
from lockgate.config.providers import ProviderSet
from lockgate.config.settings import Settings, load_settings, write_default_config
from lockgate.gates import check_policy
from lockgate.gates.promotion import PromotionResult
from lockgate.monitor.profile import Profile
from lockgate.progress import Progress
from lockgate.rollout.state import Deployment
from lockgate.runtime.predictor import Predictor
from lockgate.seal import folder as sealing
from lockgate.seal.integrity import CollectReport, FsckReport
from lockgate.serve.controller import Desired
from lockgate.store.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from lockgate.store.metadata import MetadataStore, SqlMetadataStore
from lockgate.supplychain.vulns.policy import VulnReport
from lockgate.types import (
    Decision,
    GateResult,
    GateRun,
    ModelRef,
    TokenRow,
    UserRow,
    Version,
    VulnSnapshot,
)

__all__ = ["Lockgate", "ModelSummary", "init_home"]

MODEL_FILE = sealing.MODEL_FILE


class Lockgate:
    """One lockgate home: settings, a metadata store and an artifact store, and the services
    over them (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        metadata: MetadataStore | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        check_policy(settings)
        meta = metadata or SqlMetadataStore(settings.database_url)
        self.denials = DenialRecorder(lambda event: self.meta.append_event(event))
        """Where refusals are recorded: repeats fold into one audit row per window."""
        home = Home(settings, meta, artifacts or _artifact_store(settings), self.denials)
        self._home = home
        self.lookup = Lookup(home)
        self.files = VersionFiles(home)
        self.access = Access(home)
        self.vulnerabilities = Vulnerabilities(home, self.lookup)
        self.rollout = Rollout(home, self.lookup, self.files)
        self.registration = Registration(home)
        self.optimization = Optimization(home, self.lookup.get, self.files.model_bytes,
                                         self.files.file_bytes, self.registration)
        self.promotion = Promotion(home, self.lookup, self.files, self.vulnerabilities,
                                   self.access, self.rollout)
        self.serving = Serving(home, self.lookup, self.files, self.rollout)
        self.validations = Validations(home)
        self.monitoring = Monitoring(home, self.lookup, self.files, self.rollout)
        self.records = Records(home, self.lookup, self.files, self.vulnerabilities)

    @property
    def settings(self) -> Settings:
        return self._home.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._home.settings = settings

    @property
    def meta(self) -> MetadataStore:
        return self._home.meta

    @meta.setter
    def meta(self, meta: MetadataStore) -> None:
        self._home.meta = meta

    @property
    def artifacts(self) -> ArtifactStore:
        return self._home.artifacts

    @artifacts.setter
    def artifacts(self, artifacts: ArtifactStore) -> None:
        self._home.artifacts = artifacts

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

    # -- registration (lg.registration) ------------------------------------------------------
    def register(self, model: object, sample_input: object = None, *, name: str,
                 **options: Unpack[RegisterOptions]) -> Version:
        """Convert, prove parity, seal and store a new version of ``name``; see
        :meth:`Registration.register <lockgate.api.registration.Registration.register>` and
        :class:`~lockgate.api.protocol.RegisterOptions`."""
        return self.registration.register(model, sample_input, name=name, **options)

    def optimize(self, ref: str | ModelRef, *, quantize: str | None = None, fp16: bool = False,
                 ort_level: str | None = None, runs: int = 300, description: str | None = None,
                 metrics: Mapping[str, float] | None = None,
                 creator: str | None = None) -> Version:
        """A new version of ``ref``'s model, quantized (``quantize="dynamic-int8"``), in
        float16 (``fp16=True``) or optimized by ONNX Runtime (``ort_level="basic"`` or
        ``"extended"``), proven against its parent and naming it; see
        :meth:`Optimization.optimize <lockgate.api.optimize.Optimization.optimize>`."""
        return self.optimization.optimize(ref, quantize=quantize, fp16=fp16,
                                          ort_level=ort_level, runs=runs,
                                          description=description, metrics=metrics,
                                          creator=creator)

    # -- lookup (lg.lookup) ------------------------------------------------------------------
    def get(self, ref: str | ModelRef) -> Version:
        """Resolve ``name``, ``name@3``, ``name@<stage>`` or ``name@<alias>`` to a version."""
        return self.lookup.get(ref)

    def versions(self, name: str) -> list[Version]:
        return self.lookup.versions(name)

    def models(self) -> list[ModelSummary]:
        """Every model: version count, latest, versions per stage, aliases."""
        return self.lookup.models()

    def aliases(self, name: str) -> dict[str, int]:
        return self.lookup.aliases(name)

    def gate_runs(self, ref: str | ModelRef) -> list[GateRun]:
        return self.lookup.gate_runs(ref)

    def decisions(self, ref: str | ModelRef) -> list[Decision]:
        return self.lookup.decisions(ref)

    def validated_sets(self, ref: str | ModelRef) -> dict[str, dict[str, Any]]:
        """The execution provider sets the version passed infra_validation on, by key
        (``cpu``, ``cuda+cpu``, ...); see :mod:`lockgate.api.validations`."""
        return self.validations.validated_sets(self.lookup.get(ref))

    def version_runs(self, v: Version) -> tuple[list[GateRun], list[Decision]]:
        """The gate runs and decisions of a version already looked up."""
        return self.lookup.version_runs(v)

    def latest_monitor_run(self, name: str, number: int) -> dict[str, Any] | None:
        """The newest monitor result of ``name@number``, or None."""
        return self.lookup.latest_monitor_run(name, number)

    def serve_refs(self, refs: Sequence[str] = ()) -> list[Version]:
        """The versions ``serve`` would load: ``refs``, or every model's serving-stage version."""
        return self.lookup.serve_refs(refs)

    @property
    def serving_stage(self) -> str:
        return self._home.serving_stage

    # -- verified files (lg.files) -----------------------------------------------------------
    def verify(self, version: Version) -> str | None:
        """Check the version's signature and signed manifest; the key id, or None for an
        allowed unsigned version. Refusals raise and are audited."""
        return self.files.verify(version)

    def model_bytes(self, version: Version) -> bytes:
        """The version's ONNX bytes after :meth:`verify`, checked against their digest."""
        return self.files.model_bytes(version)

    def file_bytes(self, version: Version, name: str) -> bytes:
        """One file of the version's folder, checked against its digest."""
        return self.files.file_bytes(version, name)

    # -- promotion and decisions (lg.promotion) ----------------------------------------------
    def promote(self, ref: str | ModelRef, to: str, *, actor: str | None = None,
                run_all: bool = False,
                on_result: Callable[[GateResult], None] | None = None) -> PromotionResult:
        """Run the transition's gates and move the version, or raise GateFailedError and move
        nothing (the refusal is stored and audited)."""
        return self.promotion.promote(ref, to, actor=actor, run_all=run_all,
                                      on_result=on_result)

    def check_gates(self, ref: str | ModelRef, to: str, *, actor: str | None = None,
                    run_all: bool = True,
                    on_result: Callable[[GateResult], None] | None = None
                    ) -> list[GateResult]:
        """Evaluate the transition's gates without moving or storing anything (a dry run)."""
        return self.promotion.check_gates(ref, to, actor=actor, run_all=run_all,
                                          on_result=on_result)

    def approve(self, ref: str | ModelRef, stage: str, *, comment: str = "",
                actor: str | None = None,
                identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        """Approve the version for ``stage`` (approver role, not its registrant);
        ``identified_by`` records how the actor was established."""
        return self.promotion.approve(ref, stage, comment=comment, actor=actor,
                                      identified_by=identified_by)

    def reject(self, ref: str | ModelRef, stage: str, *, comment: str,
               actor: str | None = None,
               identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        """Reject the version for ``stage``, saying why."""
        return self.promotion.reject(ref, stage, comment=comment, actor=actor,
                                     identified_by=identified_by)

    def waive(self, ref: str | ModelRef, stage: str, gate: str, *, reason: str,
              expires: date, actor: str | None = None,
              identified_by: IdentifiedBy = IdentifiedBy.LOCAL) -> Decision:
        """Waive ``gate`` for the version's promotion to ``stage`` until ``expires``."""
        return self.promotion.waive(ref, stage, gate, reason=reason, expires=expires,
                                    actor=actor, identified_by=identified_by)

    def record_reproduction(self, v: Version, detail: Mapping[str, Any],
                            *, actor: str | None = None) -> Decision:
        return self.promotion.record_reproduction(v, detail, actor=actor)

    def set_alias(self, name: str, alias: str, number: int | None, *,
                  actor: str | None = None) -> None:
        """Point ``alias`` at version ``number`` of ``name``, or remove it when None."""
        self.promotion.set_alias(name, alias, number, actor=actor)

    # -- users and tokens (lg.access) --------------------------------------------------------
    def has_role(self, who: str, role: str, model: str | None = None) -> bool:
        """``who`` holds ``role`` through the policy or as a registry user."""
        return self.access.has_role(who, role, model)

    def authenticate(self, token: str | None) -> Principal:
        """The principal an API token stands for; AuthenticationError otherwise."""
        return self.access.authenticate(token)

    def users(self) -> list[UserRow]:
        return self.access.users()

    def add_user(self, name: str, roles: Sequence[str], *,
                 grants: Sequence[tuple[str, str]] = (), disabled: bool = False,
                 actor: str | None = None) -> UserRow:
        """Create a registry user, or replace its roles and grants (audited)."""
        return self.access.add_user(name, roles, grants=grants, disabled=disabled, actor=actor)

    def create_token(self, user: str, *, description: str = "", days: int | None = None,
                     actor: str | None = None) -> tuple[TokenRow, str]:
        """A new API token for ``user``: the row and the text, shown this once."""
        return self.access.create_token(user, description=description, days=days, actor=actor)

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> TokenRow:
        return self.access.revoke_token(token_id, actor=actor)

    def tokens(self, user: str | None = None) -> list[TokenRow]:
        return self.access.tokens(user)

    # -- serving (lg.serving) ----------------------------------------------------------------
    def load(self, ref: str | ModelRef) -> Predictor:
        """An ONNX Runtime predictor for the version, after verifying it."""
        return self.serving.load(ref)

    def create_app(self, refs: Sequence[str] = (), *, poll_s: float = 0.5,
                   grace_s: float = 300.0, models: Sequence[str] = (),
                   inline_below_s: float | None = None) -> Starlette:
        """The OIP v2 ASGI app: exactly ``refs``, or following the stored deployments."""
        return self.serving.create_app(refs, poll_s=poll_s, grace_s=grace_s, models=models,
                                       inline_below_s=inline_below_s)

    # -- deployments (lg.rollout) ------------------------------------------------------------
    def deployments(self) -> dict[str, Deployment]:
        """Every model's deployment, stored or implied by its serving-stage version."""
        return self.rollout.deployments()

    def desired_state(self) -> dict[str, Desired]:
        return self.rollout.desired_state()

    def set_batching(self, name: str, batching: Mapping[str, Any] | None, *,
                     actor: str | None = None) -> Deployment:
        """Dynamic batching for the model's servers (None turns it off)."""
        return self.rollout.set_batching(name, batching, actor=actor)

    def deploy(self, ref: str | ModelRef, *, canary: int | None = None,
               shadow: bool = False, analysis: Mapping[str, Any] | None = None,
               actor: str | None = None, providers: ProviderSet | None = None
               ) -> Deployment:
        """Make the version the stable one, a canary candidate, or the shadow; ``providers``
        (None: unchanged) become the deployment's execution providers."""
        return self.rollout.deploy(ref, canary=canary, shadow=shadow, analysis=analysis,
                                   actor=actor, providers=providers)

    def set_providers(self, name: str, providers: ProviderSet | None, *,
                      actor: str | None = None) -> Deployment:
        """The execution providers the model's versions load on (None: the servers' own)."""
        return self.rollout.set_providers(name, providers, actor=actor)

    def set_canary_weight(self, name: str, weight: int, *, actor: str | None = None
                          ) -> Deployment:
        return self.rollout.set_canary_weight(name, weight, actor=actor)

    def promote_candidate(self, name: str, *, actor: str | None = None) -> Deployment:
        return self.rollout.promote_candidate(name, actor=actor)

    def rollback(self, name: str, *, actor: str | None = None, degraded: bool = False,
                 reason: str = "") -> Deployment:
        """Drop the canary, or go back to the previous stable version."""
        return self.rollout.rollback(name, actor=actor, degraded=degraded, reason=reason)

    def notify(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Run the configured notify command with the incident as JSON on stdin."""
        self.rollout.notify(kind, payload)

    # -- monitoring (lg.monitoring) ----------------------------------------------------------
    def set_reference(self, ref: str | ModelRef, data: Path | str | Mapping[str, Any], *,
                      sample: int | None = None, actor: str | None = None) -> dict[str, Any]:
        """Profile reference data with the verified model and make it the version's
        reference for drift monitors."""
        return self.monitoring.set_reference(ref, data, sample=sample, actor=actor)

    def reference_profile(self, ref: str | ModelRef) -> Profile | None:
        return self.monitoring.reference_profile(ref)

    def monitor(self, name: str, *, url: str | None = None,
                token: str | None = None) -> dict[str, Any]:
        """One monitor run of the model's production version on the server at ``url``."""
        return self.monitoring.monitor(name, url=url, token=token)

    def monitor_runs(self, ref: str | ModelRef, *, limit: int = 50) -> list[dict[str, Any]]:
        """The version's latest monitor results, newest first."""
        return self.monitoring.monitor_runs(ref, limit=limit)

    def compare(self, ref: str | ModelRef, model: object | None = None, *, batch: int = 32,
                seconds: float = 1.0, compile_: bool = True, store: bool = True
                ) -> dict[str, Any]:
        """The source framework's inference measured against ONNX Runtime's."""
        return self.monitoring.compare(ref, model, batch=batch, seconds=seconds,
                                       compile_=compile_, store=store)

    def comparisons(self, ref: str | ModelRef, *, limit: int = 1) -> list[dict[str, Any]]:
        return self.monitoring.comparisons(ref, limit=limit)

    def deliver_pending(self) -> list[dict[str, Any]]:
        """Retry every undelivered retraining trigger."""
        return self.monitoring.deliver_pending()

    # -- vulnerabilities (lg.vulnerabilities) ------------------------------------------------
    def import_vulns(self, path: Path | str, *, actor: str | None = None) -> VulnSnapshot:
        """Load an OSV snapshot; it becomes the data the vulnerabilities gate uses."""
        return self.vulnerabilities.import_vulns(path, actor=actor)

    def vuln_snapshot(self) -> VulnSnapshot | None:
        """The imported vulnerability snapshot, or None before the first import."""
        return self.vulnerabilities.vuln_snapshot()

    def vulnerability_report(self, ref: str | ModelRef) -> VulnReport:
        """The version's packages against the current OSV snapshot under the policy."""
        return self.vulnerabilities.vulnerability_report(ref)

    # -- history, audit, evidence, integrity (lg.records) ------------------------------------
    def history(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Which version held each stage and alias when, who moved it, which gates passed."""
        return self.records.history(name)

    def audit_log(self, *, model: str | None = None) -> list[AuditRecord]:
        return self.records.audit_log(model=model)

    def audit_verify(self) -> ChainReport:
        return self.records.audit_verify()

    def audit_seq(self) -> int:
        """The sequence number of the audit log's last record (0 when empty)."""
        return self.records.audit_seq()

    def audit_after(self, seq: int, *, model: str | None = None) -> list[AuditRecord]:
        """The audit records after ``seq``, of ``model`` when given."""
        return self.records.audit_after(seq, model=model)

    def export_evidence(self, ref: str | ModelRef, out: Path | str, *,
                        actor: str | None = None) -> Path:
        """Write the version's evidence pack into the new or empty folder ``out``."""
        return self.records.export_evidence(ref, out, actor=actor)

    def fsck(self, *, progress: Progress | None = None) -> FsckReport:
        """Check every version, the audit chain, orphan blobs and unfinished writes."""
        return self.records.fsck(progress=progress)

    def gc(self, *, grace_s: float = 3600.0, dry_run: bool = False,
           actor: str | None = None) -> CollectReport:
        """Remove orphan blobs and unfinished writes older than ``grace_s`` seconds."""
        return self.records.gc(grace_s=grace_s, dry_run=dry_run, actor=actor)


_registry: type[Registry] = Lockgate  # mypy checks that a home offers every registry operation


def _artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_url:
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
