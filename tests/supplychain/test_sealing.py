"""Every version is sealed at registration (BOM, card, manifest, signature) and verified before
it is loaded; tampering with a blob or with the database record is refused and audited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
import sqlalchemy as sa

from lockgate.api.facade import Lockgate
from lockgate.errors import ConfigError, IntegrityError, SignatureError, SupplyChainError
from lockgate.seal.folder import FOLDER_FILES, materialize
from lockgate.supplychain import bom as bom_module
from lockgate.supplychain.bom import validate_bom
from lockgate.supplychain.signing import generate_keypair, key_id
from tamper import flip_byte

CLI = Path(sys.executable).parent / "model_signing"


def _edit_record(lg: Lockgate, name: str, number: int, edit: Any) -> None:
    """Rewrite a version's stored record behind lockgate's back, as an attacker with database
    access would."""
    engine = sa.create_engine(lg.settings.database_url)
    with engine.begin() as conn:
        row = conn.execute(sa.text("SELECT record FROM versions WHERE name=:n AND number=:v"),
                           {"n": name, "v": number}).one()
        record = json.loads(row[0])
        edit(record)
        conn.execute(sa.text("UPDATE versions SET record=:r WHERE name=:n AND number=:v"),
                     {"r": json.dumps(record), "n": name, "v": number})
    engine.dispose()


def _audit_types(lg: Lockgate) -> list[str]:
    return [r.type for r in lg.audit_log()]


def test_registration_writes_a_valid_bom_card_manifest_and_signature(
    lg: Lockgate, linear_model: onnx.ModelProto
) -> None:
    v = lg.register(linear_model, name="m", considerations="Only linear inputs.",
                    datasets=[{"name": "train", "fingerprint": "sha256:" + "a" * 64}])
    assert set(v.files) == set(FOLDER_FILES)
    assert v.files["model.onnx"] == v.digest
    assert v.signature_bundle is not None
    assert v.signed_by == key_id(lg.settings.public_keys[0])
    bom = json.loads(lg.file_bytes(v, "bom.cdx.json"))
    validate_bom(bom)
    assert bom["specVersion"] == "1.6"
    card = bom["metadata"]["component"]["modelCard"]
    assert card["considerations"]["technicalLimitations"] == ["Only linear inputs."]
    assert any(c["type"] == "data" and c["name"] == "train" for c in bom["components"])
    assert "# " in lg.file_bytes(v, "model_card.md").decode()
    manifest = json.loads(lg.file_bytes(v, "manifest.json"))
    assert manifest["name"] == "m"
    assert manifest["version"] == 1
    assert manifest["digest"] == str(v.digest)
    stored = lg.get("m@1")
    assert stored == v
    assert lg.verify(stored) == v.signed_by
    registered = lg.audit_log()[-1]
    assert registered.type == "model.registered"
    assert registered.payload["signed_by"] == v.signed_by


def test_signature_verifies_with_the_stock_cli(
    lg: Lockgate, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    v = lg.register(linear_model, name="m")
    folder = tmp_path / "m-1"
    bundle = materialize(v, lg.artifacts, folder)
    assert bundle is not None
    ok = subprocess.run(
        [str(CLI), "verify", "key", str(folder), "--signature", str(bundle),
         "--public_key", str(lg.settings.public_keys[0]), "--no-ignore-git-paths"],
        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    (folder / "model.onnx").write_bytes(b"changed")
    bad = subprocess.run(
        [str(CLI), "verify", "key", str(folder), "--signature", str(bundle),
         "--public_key", str(lg.settings.public_keys[0]), "--no-ignore-git-paths"],
        capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0


def test_a_corrupt_bom_fails_registration_and_stores_nothing(
    lg: Lockgate, linear_model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bom_module.model_card

    def corrupt(*args: Any, **kwargs: Any) -> dict[str, Any]:
        card = real(*args, **kwargs)
        card["modelParameters"]["approach"] = {"type": "telepathy"}  # not a CycloneDX enum
        return card

    monkeypatch.setattr(bom_module, "model_card", corrupt)
    with pytest.raises(SupplyChainError) as info:
        lg.register(linear_model, name="m")
    assert "approach" in info.value.message
    assert "telepathy" in info.value.message
    assert lg.models() == []
    assert _audit_types(lg) == []


def test_flipped_model_byte_is_refused_and_audited(
    lg: Lockgate, linear_model: onnx.ModelProto
) -> None:
    v = lg.register(linear_model, name="m")
    flip_byte(lg, v.digest, at=len(lg.artifacts.get(v.digest)) // 2)
    with pytest.raises(IntegrityError):
        lg.load("m@1")
    assert _audit_types(lg)[-1] == "artifact.refused"


def test_extra_file_in_the_record_is_refused(lg: Lockgate, linear_model: onnx.ModelProto) -> None:
    v = lg.register(linear_model, name="m")
    extra = lg.artifacts.put(b"#!/bin/sh\necho planted\n")
    _edit_record(lg, "m", v.number, lambda r: r["files"].update({"run.sh": str(extra)}))
    with pytest.raises(SignatureError) as info:
        lg.load("m@1")
    assert "run.sh" in info.value.message
    last = lg.audit_log()[-1]
    assert last.type == "signature.refused"
    assert "run.sh" in last.payload["reason"]


def test_swapped_model_in_the_record_is_refused(
    lg: Lockgate, linear_model: onnx.ModelProto
) -> None:
    v = lg.register(linear_model, name="m")
    other = onnx.ModelProto()
    other.CopyFrom(linear_model)
    other.doc_string = "a different model"
    other_digest = lg.artifacts.put(other.SerializeToString())

    def swap(record: dict[str, Any]) -> None:
        record["digest"] = str(other_digest)
        record["files"]["model.onnx"] = str(other_digest)

    _edit_record(lg, "m", v.number, swap)
    with pytest.raises(SignatureError):
        lg.load("m@1")
    assert _audit_types(lg)[-1] == "signature.refused"


def test_edited_record_field_breaks_the_signed_manifest(
    lg: Lockgate, linear_model: onnx.ModelProto
) -> None:
    lg.register(linear_model, name="m", metrics={"accuracy": 0.7})
    _edit_record(lg, "m", 1, lambda r: r["metrics"].update({"accuracy": 0.99}))
    with pytest.raises(SignatureError, match="manifest"):
        lg.load("m@1")


def test_unknown_key_is_refused(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    with Lockgate.open(home) as lg:
        lg.register(linear_model, name="m")
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    (home / "lockgate.toml").write_text(
        f'[signing]\npublic_keys = ["{tmp_path / "other.pub"}"]\n', encoding="utf-8")
    with Lockgate.open(home) as lg, pytest.raises(SignatureError, match="unknown key"):
        lg.load("m@1")


def test_unsigned_versions_need_policy(home: Path, linear_model: onnx.ModelProto) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "lockgate.toml").write_text(
        '[signing]\nprivate_key = "keys/none.key"\nrequire_signature = false\n',
        encoding="utf-8")
    with Lockgate.open(home) as lg:
        v = lg.register(linear_model, name="m")
        assert v.signature_bundle is None
        assert v.signed_by == ""
        assert lg.load("m@1").signature.inputs
    (home / "lockgate.toml").write_text(
        '[signing]\nprivate_key = "keys/none.key"\n', encoding="utf-8")
    with Lockgate.open(home) as lg:
        with pytest.raises(SignatureError, match="not signed"):
            lg.load("m@1")
        with pytest.raises(ConfigError, match="no signing key"):
            lg.register(linear_model, name="m")


def test_default_keys_are_made_once(home: Path) -> None:
    with Lockgate.open(home):
        pass
    key = home / "keys" / "signing.key"
    first = key.read_bytes()
    assert key.stat().st_mode & 0o077 == 0
    with Lockgate.open(home):
        pass
    assert key.read_bytes() == first


def test_lockgate_verifies_a_folder_the_stock_cli_signed(
    lg: Lockgate, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    """The reverse direction: a bundle made by `model_signing sign key` over the version
    folder is accepted by lockgate's verifier when stored as the version's signature."""
    v = lg.register(linear_model, name="m")
    folder = tmp_path / "m-1"
    materialize(v, lg.artifacts, folder)
    (tmp_path / "m-1.sig").unlink()
    cli_sig = tmp_path / "cli.sig"
    signed = subprocess.run(
        [str(CLI), "sign", "key", str(folder), "--signature", str(cli_sig),
         "--private_key", str(lg.settings.signing_key), "--no-ignore-git-paths"],
        capture_output=True, text=True, timeout=120, check=False)
    assert signed.returncode == 0, signed.stderr
    bundle = lg.artifacts.put(cli_sig.read_bytes())
    _edit_record(lg, "m", 1, lambda r: r.update({"signature_bundle": str(bundle)}))
    assert lg.verify(lg.get("m@1")) == v.signed_by

