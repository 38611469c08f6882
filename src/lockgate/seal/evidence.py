"""The evidence pack: everything an auditor needs to check a version without lockgate.

    out/
      model/               the signed folder: model.onnx, bom.cdx.json, model_card.md, manifest.json
      model.sig            the model-signing bundle (Sigstore bundle v0.3, DSSE, EC key)
      signing.pub          the public key the bundle verifies with (when configured here)
      environment.json     the registration environment fingerprint
      gate_runs.json       every gate evaluation of the version, passed or refused
      audit_events.json    the version's audit records with their chain hashes
      vulnerabilities.json the version against the current OSV snapshot (when one is imported)
      SHA256SUMS           sha256sum of every file above
      VERIFY.md            the third-party commands that check each piece
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lockgate.errors import InvalidInputError
from lockgate.seal.folder import BOM_FILE, materialize
from lockgate.types import ModelRef, Version

if TYPE_CHECKING:
    from lockgate.config.settings import Settings
    from lockgate.store.artifacts import ArtifactStore
    from lockgate.store.metadata import MetadataStore
    from lockgate.supplychain.vulns.policy import VulnReport

__all__ = ["EvidenceSource", "write_evidence"]

MODEL_FOLDER = "model"
SIGNATURE = "model.sig"
PUBLIC_KEY = "signing.pub"
SUMS = "SHA256SUMS"


class EvidenceSource(Protocol):
    """What a pack is read from: the home's settings (its trusted public keys), its stores,
    and the assessment of a version against the current vulnerability snapshot."""

    @property
    def settings(self) -> Settings: ...

    @property
    def meta(self) -> MetadataStore: ...

    @property
    def artifacts(self) -> ArtifactStore: ...

    def vulnerability_report(self, ref: ModelRef, /) -> VulnReport: ...


def write_evidence(lg: EvidenceSource, version: Version, out: Path) -> Path:
    """Write the pack for ``version`` (already verified by the caller) into ``out``, which must
    be missing or empty. Returns ``out``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(f"{out} exists and is not an empty folder",
                                hint="name a new folder for the evidence pack")
    out.mkdir(parents=True, exist_ok=True)
    try:
        _write(lg, version, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _write(lg: EvidenceSource, version: Version, out: Path) -> None:
    from lockgate.supplychain.signing import key_id

    bundle = materialize(version, lg.artifacts, out / MODEL_FOLDER)
    signed_key = None
    if bundle is not None:
        bundle.rename(out / SIGNATURE)
        for path in lg.settings.public_keys:
            if path.exists() and key_id(path) == version.signed_by:
                shutil.copyfile(path, out / PUBLIC_KEY)
                signed_key = path
                break
    _json(out / "environment.json", dict(version.environment))
    _json(out / "gate_runs.json", [
        {"from": r.from_stage, "to": r.to_stage, "passed": r.passed, "actor": r.actor,
         "at": r.created_at, "results": list(r.results)}
        for r in lg.meta.gate_runs(version.name, version.number)
    ])
    _json(out / "audit_events.json", [
        {**r.body(), "prev_hash": r.prev_hash, "hash": r.hash}
        for r in lg.meta.audit_records()
        if r.model == version.name and r.version == version.number
    ])
    has_vulns = lg.meta.vuln_snapshot() is not None
    if has_vulns:
        _json(out / "vulnerabilities.json", lg.vulnerability_report(version.ref).to_dict())
    (out / "VERIFY.md").write_text(_verify_md(version, bundle is not None, signed_key is not None,
                                              has_vulns), encoding="utf-8")
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {rel}\n")
    (out / SUMS).write_text("".join(lines), encoding="utf-8")


def _json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


_VALIDATE = (
    'python -c "import sys; from cyclonedx.schema import SchemaVersion; '
    "from cyclonedx.validation.json import JsonStrictValidator; "
    "e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open('model/"
    + BOM_FILE + "').read()); sys.exit(str(e) if e else 0)\""
)


def _verify_md(version: Version, signed: bool, have_key: bool, has_vulns: bool) -> str:
    ref = f"{version.name}@{version.number}"
    parts = [
        f"# Evidence for {ref}",
        "",
        f"Model digest: `{version.digest}`; registered {version.created_at} by "
        f"{version.creator}; framework {version.framework} {version.framework_version}.",
        "",
        "Run each command from this folder. Every one must succeed.",
        "",
        "## 1. Files are intact",
        "",
        "```sh",
        f"sha256sum -c {SUMS}",
        "```",
        "",
        "## 2. The signature covers exactly the model folder",
        "",
    ]
    if signed:
        key = PUBLIC_KEY if have_key else "<signer's public key>"
        parts += [
            f"Signed with key id `{version.signed_by}` (SHA-256 of the DER public key), in the "
            "OpenSSF model-signing format. Check it with the `model_signing` CLI "
            "(`pip install model-signing`):",
            "",
            "```sh",
            f"model_signing verify key {MODEL_FOLDER} --signature {SIGNATURE} "
            f"--public_key {key} --no-ignore-git-paths",
            "```",
            "",
            f"`{MODEL_FOLDER}/manifest.json` is the version record that was signed: parity "
            "report, environment, metrics, tags and seeds.",
        ]
    else:
        parts += ["The version is unsigned (registered with signing.require_signature = "
                  "false): there is no signature to check."]
    parts += [
        "",
        "## 3. The ML-BOM is valid CycloneDX 1.6",
        "",
        "With cyclonedx-python-lib (`pip install 'cyclonedx-python-lib[json-validation]'`):",
        "",
        "```sh",
        _VALIDATE,
        "```",
        "",
        "or with the CycloneDX CLI: `cyclonedx validate --input-file model/"
        f"{BOM_FILE} --input-version v1_6 --fail-on-errors`.",
        "",
        "## 4. What else is here",
        "",
        "- `environment.json`: the environment the version was registered (and its parity "
        "proven) in.",
        "- `gate_runs.json`: every promotion attempt and each gate's result.",
        "- `audit_events.json`: the version's audit records; each `hash` is "
        "sha256(prev_hash + canonical JSON of the record), so they can be checked against "
        "the registry's chain (`lockgate audit verify`).",
    ]
    if has_vulns:
        parts.append("- `vulnerabilities.json`: the version's packages against the OSV "
                     "snapshot named inside, with the policy's decision for each finding.")
    return "\n".join(parts) + "\n"
