"""Key-based OpenSSF model signing, checked against the stock ``model_signing`` CLI both ways.

Nothing here may reach Sigstore, Rekor or Fulcio: every CLI run gets a ``sitecustomize`` that
logs and refuses any name lookup or socket connection, every in-process test patches the same
calls, and each test fails if anything was attempted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from lockgate.errors import ConfigError, IntegrityError, InvalidInputError, SignatureError
from lockgate.supplychain.signing import generate_keypair, key_id, sign_folder, verify_folder

CLI = Path(sys.executable).parent / "model_signing"
_NO_NETWORK = """\
import os, socket
def _refuse(*args, **kwargs):
    with open(os.environ["SIGNING_TEST_NETWORK_LOG"], "a") as log:
        log.write(repr(args[1:] or args) + "\\n")
    raise OSError("network access attempted during a lockgate signing test")
socket.getaddrinfo = _refuse
socket.create_connection = _refuse
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    yield
    log = tmp_path / "network.log"
    assert not attempts, f"in-process network access: {attempts}"
    assert not log.exists(), f"the CLI tried the network: {log.read_text()}"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    generate_keypair(private, public)
    return private, public


@pytest.fixture
def other_keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "other" / "k.key", tmp_path / "other" / "k.pub"
    generate_keypair(private, public)
    return private, public


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A version folder: model, BOM, card, manifest and one nested file."""
    f = tmp_path / "churn-3"
    (f / "extra").mkdir(parents=True)
    (f / "model.onnx").write_bytes(bytes(range(256)) * 64)
    (f / "bom.cdx.json").write_text('{"bomFormat": "CycloneDX"}')
    (f / "MODEL_CARD.md").write_text("# churn\n")
    (f / "manifest.json").write_text("{}")
    (f / "extra" / "labels.txt").write_text("no\nyes\n")
    return f


def _cli(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The stock console script, with the network guard loaded through PYTHONPATH."""
    guard = tmp_path / "no-network"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(_NO_NETWORK)
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(guard),
           "SIGNING_TEST_NETWORK_LOG": str(tmp_path / "network.log")}
    assert CLI.exists(), f"the model_signing console script is missing at {CLI}"
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def _cli_verify(tmp_path: Path, folder: Path, sig: Path, pub: Path,
                *flags: str) -> subprocess.CompletedProcess[str]:
    return _cli(tmp_path, "verify", "key", folder, "--signature", sig, "--public_key", pub,
                *flags)


# -- keys --------------------------------------------------------------------------------------
def test_generate_keypair_writes_private_0600_and_never_overwrites(
    keys: tuple[Path, Path],
) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        generate_keypair(private, public.with_name("new.pub"))
    assert not public.with_name("new.pub").exists()


def test_key_id_is_sha256_of_the_der_public_key(keys: tuple[Path, Path]) -> None:
    pub = serialization.load_pem_public_key(keys[1].read_bytes())
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key_id(keys[1]) == hashlib.sha256(der).hexdigest()


def test_unusable_keys_are_config_errors(tmp_path: Path, folder: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        key_id(junk)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        sign_folder(folder, junk, tmp_path / "s.sig")


# -- interoperability with the stock CLI -------------------------------------------------------
def test_lockgate_signature_verifies_with_the_stock_cli(
    tmp_path: Path, folder: Path, keys: tuple[Path, Path]
) -> None:
    sig = tmp_path / "churn-3.sig"
    sign_folder(folder, keys[0], sig)
    done = _cli_verify(tmp_path, folder, sig, keys[1])
    assert done.returncode == 0, done.stderr
    assert "Verification succeeded" in done.stdout
    strict = _cli_verify(tmp_path, folder, sig, keys[1], "--no-ignore-git-paths")
    assert strict.returncode == 0, strict.stderr
    assert verify_folder(folder, sig, [keys[1]]) == key_id(keys[1])


def test_stock_cli_signature_verifies_with_lockgate(
    tmp_path: Path, folder: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    sig = tmp_path / "cli.sig"
    done = _cli(tmp_path, "sign", "key", folder, "--signature", sig, "--private_key", keys[0])
    assert done.returncode == 0, done.stderr
    assert verify_folder(folder, sig, [other_keys[1], keys[1]]) == key_id(keys[1])


def test_signature_inside_the_folder_is_left_out_of_what_is_signed(
    tmp_path: Path, folder: Path, keys: tuple[Path, Path]
) -> None:
    sig = folder / "model.sig"
    sign_folder(folder, keys[0], sig)
    assert verify_folder(folder, sig, [keys[1]]) == key_id(keys[1])
    done = _cli_verify(tmp_path, folder, sig, keys[1], "--no-ignore-git-paths")
    assert done.returncode == 0, done.stderr


def test_what_is_signed(tmp_path: Path, folder: Path, keys: tuple[Path, Path]) -> None:
    """Every file by relative POSIX path with its SHA-256, in a DSSE-wrapped in-toto statement."""
    sig = tmp_path / "s.sig"
    sign_folder(folder, keys[0], sig)
    bundle = json.loads(sig.read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["tlogEntries"] == []  # nothing went to Rekor
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["predicate"]["serialization"] == {
        "method": "files", "hash_type": "sha256", "allow_symlinks": False}
    resources = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert resources == {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes())
                         .hexdigest() for p in files}
    root = hashlib.sha256(b"".join(bytes.fromhex(resources[k]) for k in sorted(resources)))
    assert statement["subject"][0]["digest"]["sha256"] == root.hexdigest()


# -- tampering ---------------------------------------------------------------------------------
def _flip_byte(folder: Path) -> None:
    path = folder / "model.onnx"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))


TAMPERINGS: dict[str, tuple[Callable[[Path], object], str]] = {
    "flipped-byte": (_flip_byte, "Hash mismatch for 'model.onnx'"),
    "extra-file": (lambda f: (f / "extra" / "payload.py").write_text("x"),
                   "Extra files found in model 'churn-3': extra/payload.py"),
    "removed-file": (lambda f: (f / "MODEL_CARD.md").unlink(),
                     "Missing files in model 'churn-3': MODEL_CARD.md"),
    "extra-gitignore": (lambda f: (f / ".gitignore").write_text("*"),
                        "Extra files found in model 'churn-3': .gitignore"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERINGS))
def test_tampering_fails_verification(
    tmp_path: Path, folder: Path, keys: tuple[Path, Path], tamper: str
) -> None:
    sig = tmp_path / "s.sig"
    sign_folder(folder, keys[0], sig)
    change, diagnostic = TAMPERINGS[tamper]
    change(folder)
    with pytest.raises(SignatureError, match="does not match its signature") as info:
        verify_folder(folder, sig, [keys[1]])
    assert isinstance(info.value, IntegrityError)
    assert diagnostic in info.value.message
    assert _cli_verify(tmp_path, folder, sig, keys[1], "--no-ignore-git-paths").returncode == 1


def test_an_unknown_key_fails_verification(
    tmp_path: Path, folder: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    sig = tmp_path / "s.sig"
    sign_folder(folder, keys[0], sig)
    with pytest.raises(SignatureError, match="signed by an unknown key") as info:
        verify_folder(folder, sig, [other_keys[1]])
    assert isinstance(info.value, IntegrityError)
    assert key_id(other_keys[1])[:16] in (info.value.hint or "")
    assert _cli_verify(tmp_path, folder, sig, other_keys[1]).returncode == 1


def test_files_the_signer_chose_to_ignore_are_still_refused(
    tmp_path: Path, folder: Path, keys: tuple[Path, Path]
) -> None:
    """The stock CLI signs with git paths ignored and then accepts a .gitignore; lockgate
    does not."""
    sig = tmp_path / "cli.sig"
    done = _cli(tmp_path, "sign", "key", folder, "--signature", sig, "--private_key", keys[0])
    assert done.returncode == 0, done.stderr
    (folder / ".gitignore").write_text("*")
    assert _cli_verify(tmp_path, folder, sig, keys[1]).returncode == 0
    with pytest.raises(SignatureError, match=r"files the signature does not cover: \.gitignore"):
        verify_folder(folder, sig, [keys[1]])


def test_a_forged_payload_fails(tmp_path: Path, folder: Path, keys: tuple[Path, Path]) -> None:
    sig = tmp_path / "s.sig"
    sign_folder(folder, keys[0], sig)
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"].pop()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="unknown key"):
        verify_folder(folder, sig, [keys[1]])
    sig.write_text("{}")
    with pytest.raises(SignatureError, match="not a model-signing bundle"):
        verify_folder(folder, sig, [keys[1]])


def test_symlinks_are_refused(tmp_path: Path, folder: Path, keys: tuple[Path, Path]) -> None:
    (folder / "link").symlink_to(folder / "model.onnx")
    with pytest.raises(InvalidInputError, match="symlink"):
        sign_folder(folder, keys[0], tmp_path / "s.sig")
    (folder / "link").unlink()
    sign_folder(folder, keys[0], tmp_path / "s.sig")
    (folder / "link").symlink_to(folder / "model.onnx")
    with pytest.raises(SignatureError, match="symlink"):
        verify_folder(folder, tmp_path / "s.sig", [keys[1]])


def test_password_protected_key(tmp_path: Path, folder: Path) -> None:
    private, public = tmp_path / "pw.key", tmp_path / "pw.pub"
    generate_keypair(private, public, password="correct horse")
    assert "ENCRYPTED" in private.read_text()
    with pytest.raises(ConfigError, match="is encrypted"):
        sign_folder(folder, private, tmp_path / "s.sig")
    with pytest.raises(ConfigError, match="password is wrong"):
        sign_folder(folder, private, tmp_path / "s.sig", password="wrong")
    sign_folder(folder, private, tmp_path / "s.sig", password="correct horse")
    assert verify_folder(folder, tmp_path / "s.sig", [public]) == key_id(public)


def test_an_empty_folder_is_not_signed(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no files to sign"):
        sign_folder(tmp_path / "empty", keys[0], tmp_path / "s.sig")


def test_the_network_guard_would_catch_a_sigstore_call(tmp_path: Path, folder: Path) -> None:
    """Keyless signing needs Sigstore's TUF repository; under the guard it is refused and logged,
    which is what makes the key-based tests above prove they stayed offline."""
    done = _cli(tmp_path, "sign", "sigstore", folder, "--signature", tmp_path / "s.sig",
                "--use_ambient_credentials")
    log = tmp_path / "network.log"
    assert done.returncode == 1
    assert log.exists()
    log.unlink()
