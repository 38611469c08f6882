"""A version's signed folder: write it at registration, check it before anything loads it.

    sealed = seal(version, onnx_bytes, artifacts, settings, producer="pytorch 2.13.0")
    key = verify(sealed, artifacts, settings)          # key id, or None for an allowed unsigned one

The folder holds four files, each stored content-addressed and listed in the version record:

* ``model.onnx``: the model;
* ``bom.cdx.json``: the CycloneDX 1.6 ML-BOM (validated; an invalid BOM fails registration);
* ``model_card.md``: the human-readable card derived from the BOM;
* ``manifest.json``: the version record (less its file list and signature) as canonical JSON,
  so the signature also covers the parity report, the environment, metrics and tags.

The folder is signed in the OpenSSF model-signing format with the configured EC key; the
signature bundle is stored as a blob too. Verification rebuilds the folder from the artifact store
(every blob's digest is checked on read), verifies the bundle against the configured public keys
(which refuses changed, missing and extra files), and checks that the signed manifest is the
record the metadata store returned — so editing the record in the database is caught as well.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import onnx

from lockgate.audit import canonical_json
from lockgate.config.settings import Settings
from lockgate.errors import ConfigError, InvalidInputError, SignatureError
from lockgate.store.artifacts import ArtifactStore
from lockgate.types import Digest, Version

__all__ = [
    "BOM_FILE",
    "CARD_FILE",
    "FOLDER_FILES",
    "LOCK_FILES",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "OPTIONAL_FILES",
    "RECIPE_FILE",
    "SAMPLES_FILE",
    "SIGNATURE_FILE",
    "ensure_default_keys",
    "materialize",
    "outline",
    "seal",
    "verify",
    "weights_bytes",
    "write_model",
]

MODEL_FILE = "model.onnx"
BOM_FILE = "bom.cdx.json"
CARD_FILE = "model_card.md"
MANIFEST_FILE = "manifest.json"
SAMPLES_FILE = "samples.json"
FOLDER_FILES = (MODEL_FILE, BOM_FILE, CARD_FILE, MANIFEST_FILE, SAMPLES_FILE)
LOCK_FILES = ("pylock.toml", "requirements.txt")
RECIPE_FILE = "recipe.json"
OPTIONAL_FILES = (*LOCK_FILES, RECIPE_FILE)
"""Files a registration may add: the lock it was made with, and how to rebuild it."""
SIGNATURE_FILE = "model.sig"
"""Name of the signature bundle next to (never inside) an exported folder."""


def outline(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` less the values of its initializers: every field of the model and of its graph
    as they are, the initializers with their names, types and shapes only. What the model card
    and the version record read, without a copy of the weights (a registration keeps the
    weights in the serialized model alone)."""
    out = _without_initializers(model)
    out.graph.initializer.extend(
        onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
        for t in model.graph.initializer)
    return out


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    for target, source, skip in ((out, model, "graph"), (out.graph, model.graph, "initializer")):
        for field, value in source.ListFields():
            if field.name == skip:
                continue
            if field.is_repeated:
                getattr(target, field.name).extend(value)
            elif field.message_type is not None:
                getattr(target, field.name).CopyFrom(value)
            else:
                setattr(target, field.name, value)
    return out


def weights_bytes(model: onnx.ModelProto) -> int:
    """The size of the main graph's initializers, from their shapes and types (no copy)."""
    total = 0
    for t in model.graph.initializer:
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 1
        total += math.prod(t.dims) * itemsize
    return total


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model``'s protobuf encoding to ``path`` without building it in memory whole.

    protobuf's own serializer holds the model's encoding twice while it makes the bytes (its
    buffer and the result) beside the model itself. This writes the model less its
    initializers, then each initializer as one more ``graph`` field holding one ``initializer``:
    a parser merges a message field that occurs several times and appends to its repeated
    fields, so the file parses to the same model (ONNX Runtime, onnx.load and protobuf agree),
    with at most one initializer's encoding in memory at a time.
    """
    header = _without_initializers(model)
    with path.open("wb") as f:
        f.write(header.SerializeToString())
        for tensor in model.graph.initializer:
            data = tensor.SerializeToString()
            inner = _field(_INITIALIZER_FIELD, len(data))
            f.write(_field(_GRAPH_FIELD, len(inner) + len(data)))
            f.write(inner)
            f.write(data)
            del data


_GRAPH_FIELD = 7  # ModelProto.graph
_INITIALIZER_FIELD = 5  # GraphProto.initializer


def _field(number: int, length: int) -> bytes:
    """The key and length of a length-delimited protobuf field."""
    out = bytearray()
    for value in ((number << 3) | 2, length):
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def manifest_bytes(version: Version) -> bytes:
    return (canonical_json(version.manifest()) + "\n").encode("utf-8")


def seal(
    version: Version,
    onnx_bytes: bytes,
    artifacts: ArtifactStore,
    settings: Settings,
    *,
    producer: str,
    lock_hashes: Mapping[str, list[str]] | None = None,
    considerations: str = "",
    datasets: Sequence[Mapping[str, str]] = (),
    extra_files: Mapping[str, bytes] | None = None,
    model_outline: bytes | None = None,
) -> Version:
    """Write the version's BOM, card and manifest, sign the folder, and return the version with
    ``files``, ``signature_bundle`` and ``signed_by`` set. ``extra_files`` are
    ``samples.json`` and any of :data:`OPTIONAL_FILES`, signed with the rest.
    ``model_outline`` (the serialized :func:`outline` of the model) is what the card reads the
    graph from; without it the card parses ``onnx_bytes``, weights and all.

    Raises SupplyChainError when the BOM does not validate and ConfigError when signing is
    required but no usable key is configured. Only content-addressed blobs are written, so a
    failure leaves no version behind.
    """
    from lockgate.supplychain.bom import build_bom
    from lockgate.supplychain.modelcard import model_card_markdown

    bom = build_bom(version, onnx_bytes=onnx_bytes, producer=producer, lock_hashes=lock_hashes,
                    considerations=considerations, datasets=datasets,
                    model_outline=model_outline)
    contents = {
        MODEL_FILE: onnx_bytes,
        BOM_FILE: (json.dumps(bom, indent=2, sort_keys=True) + "\n").encode("utf-8"),
        CARD_FILE: model_card_markdown(version, bom).encode("utf-8"),
        MANIFEST_FILE: manifest_bytes(version),
    }
    for name, data in (extra_files or {}).items():
        if name not in (SAMPLES_FILE, *OPTIONAL_FILES):
            raise ConfigError(f"{name!r} is not a file a version folder may hold")
        contents[name] = data
    files = {name: artifacts.put(data) for name, data in contents.items()}
    sealed = replace(version, files=files, signature_bundle=None, signed_by="")
    key = settings.signing_key
    if key is None or not key.exists():
        if settings.require_signature:
            raise ConfigError(
                f"no signing key at {key}" if key else "no signing key is configured",
                hint="`lockgate keys generate` makes one; or set signing.require_signature = "
                     "false to register unsigned versions",
            )
        return sealed
    from lockgate.supplychain.signing import private_key_id, sign_folder

    with tempfile.TemporaryDirectory(prefix="lockgate-seal-") as tmp:
        folder = Path(tmp) / f"{version.name}-{version.number}"
        _write(folder, contents)
        bundle = Path(tmp) / SIGNATURE_FILE
        sign_folder(folder, key, bundle)
        signature = artifacts.put(bundle.read_bytes())
    return replace(sealed, signature_bundle=signature, signed_by=private_key_id(key))


def materialize(version: Version, artifacts: ArtifactStore, folder: Path) -> Path | None:
    """Write the version's files into ``folder`` (created) and its signature bundle next to it;
    return the bundle's path, or None for an unsigned version. Every blob's digest is checked."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, {name: artifacts.get(d) for name, d in _files(version).items()})
    if version.signature_bundle is None:
        return None
    bundle = folder.parent / f"{folder.name}.sig"
    bundle.write_bytes(artifacts.get(version.signature_bundle))
    return bundle


def verify(version: Version, artifacts: ArtifactStore, settings: Settings) -> str | None:
    """Check the version's signature against the configured public keys and its manifest against
    its record; return the key id that verified, or None for an unsigned version that policy
    allows. Raises SignatureError (or IntegrityError for a corrupt blob) otherwise."""
    if version.files.get(MODEL_FILE, version.digest) != version.digest:
        raise SignatureError(
            f"{version.ref}: the record's model digest and its file list disagree",
            hint="the metadata store was edited; restore it from a backup",
        )
    if version.signature_bundle is None:
        if settings.require_signature:
            raise SignatureError(
                f"{version.ref} is not signed and policy requires a signature",
                hint="register it again with a signing key, or set "
                     "signing.require_signature = false",
            )
        return None
    from lockgate.supplychain.signing import verify_folder

    with tempfile.TemporaryDirectory(prefix="lockgate-verify-") as tmp:
        folder = Path(tmp) / f"{version.name}-{version.number}"
        bundle = materialize(version, artifacts, folder)
        assert bundle is not None
        keys = [k for k in settings.public_keys if k.exists()]
        if not keys:
            raise SignatureError(
                f"cannot verify {version.ref}: none of the configured public keys exists "
                f"({', '.join(str(k) for k in settings.public_keys) or 'none configured'})",
                hint="set signing.public_keys in lockgate.toml",
            )
        key_id = verify_folder(folder, bundle, keys)
        signed_manifest = (folder / MANIFEST_FILE).read_bytes() if (
            folder / MANIFEST_FILE).is_file() else None
    if signed_manifest != manifest_bytes(version):
        raise SignatureError(
            f"{version.ref}: the signed manifest does not match the version record",
            hint="the metadata store was edited after signing",
        )
    return key_id


def ensure_default_keys(settings: Settings) -> bool:
    """Create the home's default key pair when signing uses the default paths and neither key
    exists yet; return whether one was made."""
    from lockgate.supplychain.signing import generate_keypair

    private = settings.home / "keys" / "signing.key"
    public = settings.home / "keys" / "signing.pub"
    if settings.signing_key != private or public not in settings.public_keys:
        return False
    if private.exists() or public.exists():
        return False
    try:
        generate_keypair(private, public)
    except InvalidInputError:  # another process made it first
        return False
    return True


def _files(version: Version) -> Mapping[str, Digest]:
    # Versions stored before sealing existed list no files: the model alone is the folder.
    return version.files or {MODEL_FILE: version.digest}


def _write(folder: Path, contents: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        if "/" in name or name in ("", ".", ".."):
            raise SignatureError(f"refusing file name {name!r} in a version folder")
        (folder / name).write_bytes(data)
