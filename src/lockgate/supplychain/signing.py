"""Sign and verify a version folder in the OpenSSF model-signing format, with EC key files.

    generate_keypair(Path("signing.key"), Path("signing.pub"))
    sign_folder(folder, Path("signing.key"), Path("model.sig"))
    key = verify_folder(folder, Path("model.sig"), [Path("signing.pub")])   # key id that verified

Signing goes through ``model_signing`` (sigstore/model-transparency) with its key-based signer,
so the stock ``model_signing verify key`` CLI checks lockgate's signatures and lockgate checks
the CLI's. Nothing here contacts Sigstore, Rekor or Fulcio.

What is signed (model_signing 1.1.1, "files" serialization):

* every regular file under the folder, recursively, named by its POSIX path relative to the
  folder, hashed with SHA-256 in 1 MiB chunks; symlinks are refused, not followed;
* the manifest is an in-toto Statement v1 (predicate type
  ``https://model_signing/signature/v1.0``): ``predicate.resources`` lists ``{name, algorithm,
  digest}`` per file in sorted order, ``predicate.serialization`` records the method, hash,
  ``allow_symlinks`` and ``ignore_paths``; the subject digest is SHA-256 over the concatenated
  file digests;
* the statement is signed in a DSSE envelope (ECDSA P-256 with SHA-256 over the DSSE PAE) and
  written as a Sigstore bundle v0.3 JSON with no transparency-log entries; its
  ``verificationMaterial.publicKey.hint`` is the SHA-256 of the signer's PEM public key.

Verification rehashes the folder and compares ``{path: digest}``: a changed, missing or extra
file fails. Two library defaults are looser than lockgate: it skips ``.git``, ``.gitattributes``,
``.github`` and ``.gitignore`` on both sides, and it skips any path the signed manifest lists in
``ignore_paths``. lockgate signs git files like any other and, after the library has verified,
refuses any file in the folder the signature does not cover (except the signature file itself).
The folder's name is informative only and not checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lockgate.errors import ConfigError, Error, InvalidInputError, SignatureError

__all__ = ["generate_keypair", "key_id", "private_key_id", "sign_folder", "verify_folder"]

_CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512,
}
_PAYLOAD_TYPE = "application/vnd.in-toto+json"


# -- keys --------------------------------------------------------------------------------------
def generate_keypair(
    private_path: Path, public_path: Path, *, password: str | None = None
) -> None:
    """Write a new EC P-256 key pair: PKCS#8 PEM private key (mode 0600, encrypted when
    ``password`` is given) and SubjectPublicKeyInfo PEM public key. Never overwrites."""
    for path in (private_path, public_path):
        if path.exists():
            raise InvalidInputError(f"{path} already exists; refusing to overwrite a key")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        public_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem)
    except FileExistsError as exc:
        raise InvalidInputError(f"{exc.filename} already exists; refusing to overwrite a key"
                                ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write the key pair: {exc}") from None


def key_id(public_key_path: Path) -> str:
    """SHA-256 (hex) of the public key's DER SubjectPublicKeyInfo."""
    return _key_id(_load_public_key(public_key_path))


def _key_id(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVE_HASH:
        raise ConfigError(f"{path} is not an EC P-256, P-384 or P-521 public key",
                          hint="generate one with `lockgate init` or openssl ecparam "
                               "-name prime256v1")
    return key


def private_key_id(path: Path, *, password: str | None = None) -> str:
    """The key id (:func:`key_id`) of the public half of the private key at ``path``."""
    return _key_id(_check_private_key(path, password).public_key())


def _check_private_key(path: Path, password: str | None) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise ConfigError(
            f"signing key {path} is encrypted" if password is None
            else f"signing key {path} is not encrypted; drop the password"
        ) from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM private key, or the password is wrong") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVE_HASH:
        raise ConfigError(f"signing key {path} is not an EC P-256, P-384 or P-521 key")
    return key


# -- signing -----------------------------------------------------------------------------------
def sign_folder(
    folder: Path, private_key: Path, signature_path: Path, *, password: str | None = None
) -> None:
    """Sign every file under ``folder`` into ``signature_path`` (a Sigstore bundle JSON).

    The signature may live next to the folder or inside it (then it is left out of what is
    signed, as the stock CLI does). Symlinks, special files and empty folders are refused.
    """
    from model_signing import hashing, signing

    files = list(_files(folder, _inside(folder, signature_path), InvalidInputError))
    if not files:
        raise InvalidInputError(f"{folder} has no files to sign")
    _check_private_key(private_key, password)
    ignored = [p for p in [_inside(folder, signature_path)] if p is not None]
    hashing_config = hashing.Config()  # type: ignore[no-untyped-call]
    hashing_config.set_ignored_paths(paths=ignored, ignore_git_paths=False)
    config = signing.Config()  # type: ignore[no-untyped-call]
    # model_signing 1.1.1 annotates the password as str but hands it to cryptography, which
    # needs bytes (a str fails with TypeError, also from the CLI's --password).
    key_password: Any = password.encode() if password else None
    config.use_elliptic_key_signer(private_key=private_key, password=key_password)
    config.set_hashing_config(hashing_config)
    try:
        config.sign(folder, signature_path)
    except (OSError, ValueError) as exc:
        raise SignatureError(f"signing {folder} failed: {exc}") from None


# -- verifying ---------------------------------------------------------------------------------
def verify_folder(folder: Path, signature_path: Path, public_keys: Sequence[Path]) -> str:
    """Check that ``signature_path`` was made by one of ``public_keys`` over exactly the files
    in ``folder``; return the key id (:func:`key_id`) of the key that verified.

    Raises SignatureError (an IntegrityError) for an unknown key, a changed, missing or extra
    file, a symlink, or a malformed signature; ConfigError for an unreadable key.
    """
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    if not public_keys:
        raise ConfigError("no public keys to verify with",
                          hint="set signing.public_keys in lockgate.toml")
    try:
        raw = signature_path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read signature {signature_path}: {exc.strerror}") from None
    payload_type, payload, sig = _envelope(raw, signature_path)
    keys = [(path, _load_public_key(path)) for path in public_keys]
    match = next(((p, k) for p, k in keys if _dsse_verifies(k, payload_type, payload, sig)), None)
    if match is None:
        raise SignatureError(
            f"{signature_path} is signed by an unknown key",
            hint="trusted key ids: " + ", ".join(_key_id(k)[:16] for _, k in keys),
        )
    key_path, key = match
    statement = _statement(payload, signature_path)
    signed = _signed_files(statement, signature_path)
    _library_verify(folder, raw, key_path, statement, _inside(folder, signature_path))
    unsigned = sorted(set(_files(folder, _inside(folder, signature_path))) - signed)
    if unsigned:
        raise SignatureError(
            f"{folder} has files the signature does not cover: {', '.join(unsigned)}",
            hint="remove them, or sign the folder again",
        )
    return _key_id(key)


def _library_verify(
    folder: Path, raw: bytes, key_path: Path, statement: dict[str, Any], sig_rel: str | None
) -> None:
    """model_signing's own check (signature, then {path: digest}), git files included."""
    from model_signing import hashing, verifying

    serialization_args = statement["predicate"]["serialization"]
    config = hashing.Config()  # type: ignore[no-untyped-call]
    try:
        if serialization_args.get("method") == "shards":
            config.use_shard_serialization(hashing_algorithm=serialization_args["hash_type"],
                                           shard_size=int(serialization_args["shard_size"]))
        else:
            config.use_file_serialization(hashing_algorithm=serialization_args["hash_type"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"unsupported serialization {serialization_args!r}: {exc}"
                             ) from None
    config.set_ignored_paths(paths=[sig_rel] if sig_rel else [], ignore_git_paths=False)
    with tempfile.TemporaryDirectory(prefix="lockgate-sig-") as tmp:
        copy = Path(tmp) / "signature.json"  # verify the very bytes already checked
        copy.write_bytes(raw)
        try:
            verifier = verifying.Config()  # type: ignore[no-untyped-call]
            verifier.use_elliptic_key_verifier(public_key=key_path)
            verifier.set_hashing_config(config)
            verifier.verify(folder, copy)
        except Exception as exc:  # ValueError, InvalidSignature, KeyError from the library
            raise SignatureError(f"{folder} does not match its signature: {exc}",
                                 hint="a file was changed, added or removed after signing"
                                 ) from None


def _envelope(raw: bytes, where: Path) -> tuple[str, bytes, bytes]:
    try:
        bundle = json.loads(raw)
        env = bundle["dsseEnvelope"]
        return (str(env["payloadType"]), base64.b64decode(env["payload"], validate=True),
                base64.b64decode(env["signatures"][0]["sig"], validate=True))
    except (ValueError, KeyError, IndexError, TypeError):
        raise SignatureError(f"{where} is not a model-signing bundle with a DSSE envelope",
                             hint="sign the folder with lockgate or `model_signing sign key`"
                             ) from None


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def _dsse_verifies(
    key: ec.EllipticCurvePublicKey, payload_type: str, payload: bytes, sig: bytes
) -> bool:
    try:
        key.verify(sig, _pae(payload_type, payload), ec.ECDSA(_CURVE_HASH[key.curve.name]()))
    except InvalidSignature:
        return False
    return True


def _statement(payload: bytes, where: Path) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
        if not isinstance(statement, dict) or not isinstance(
            statement["predicate"]["serialization"], dict
        ) or not isinstance(statement["predicate"]["resources"], list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SignatureError(f"{where}: the signed payload is not a model-signing manifest"
                             ) from None
    return statement


def _signed_files(statement: dict[str, Any], where: Path) -> set[str]:
    method = statement["predicate"]["serialization"].get("method")
    names: set[str] = set()
    for resource in statement["predicate"]["resources"]:
        name = str(resource.get("name", "")) if isinstance(resource, dict) else ""
        if method == "shards":  # "path:start:end"
            name = name.rsplit(":", 2)[0]
        names.add(name)
    return names


# -- folder walking ----------------------------------------------------------------------------
def _inside(folder: Path, path: Path) -> str | None:
    """``path`` relative to ``folder`` (POSIX), or None when it lies outside."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def _files(
    folder: Path, skip: str | None, error: type[Error] = SignatureError
) -> Iterator[str]:
    """Every regular file under ``folder`` (POSIX, relative) but ``skip``; a symlink or special
    file raises ``error``."""
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        for name in [*dirs, *names]:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise error(f"{folder} holds a symlink ({rel}); lockgate signs only "
                            "regular files")
            if name in names and rel != skip:
                if not path.is_file():
                    raise error(f"{folder} holds a special file ({rel})")
                yield rel
