"""Registration uploads: a bare ONNX file, or a bundle (a tar archive, gzip allowed) holding
one ``.onnx`` file at its top, the external-data files it names, and optionally:

    registration.json     options: description, tags, metrics, seed, seeds, atol, rtol,
                          considerations, datasets
    pylock.toml | requirements.txt          the lock file for the BOM's hashes
    reference.npy|.npz|.csv|.parquet        reference data for drift monitors
    expect_inputs.npz, expect_outputs.npz   recorded inputs and the source model's outputs
                                            for them, which parity compares ONNX Runtime with

Extraction refuses anything but plain files and folders, absolute paths, ``..``, more than
``MAX_MEMBERS`` members or more bytes than the upload limit; ONNX external data is then read
only from inside the folder (see lockgate.convert.onnxfile). ``registration.json`` and the
API's JSON bodies are read by :func:`load_json`: at most ``MAX_JSON_BYTES``, nested at most
``MAX_JSON_DEPTH`` levels, no NaN or Infinity, no lone surrogates.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lockgate.errors import InvalidInputError, NotFoundError, UnsafePathError

__all__ = ["BUNDLE_MEDIA", "EXPECT_FILES", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_MEMBERS",
           "ONNX_MEDIA", "Upload", "load_json", "make_bundle", "read_bundle"]

ONNX_MEDIA = "application/octet-stream"
"""The content type of a bare ONNX file, uploaded or downloaded."""
BUNDLE_MEDIA = ("application/x-tar", "application/gzip", "application/x-gtar")
"""The content types a bundle may be uploaded as."""
MAX_MEMBERS = 1000
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 1 << 20
OPTIONS_FILE = "registration.json"
EXPECT_FILES = ("expect_inputs.npz", "expect_outputs.npz")
"""The recorded inputs and outputs of a bundle, in that order."""
_LOCK_FILES = ("pylock.toml", "requirements.txt")
_REFERENCE_SUFFIXES = (".npy", ".npz", ".csv", ".parquet")
_OPTIONS = {"description": str, "considerations": str, "tags": dict, "metrics": dict,
            "seed": int, "seeds": dict, "atol": float, "rtol": float, "datasets": list}


@dataclass
class Upload:
    """What a registration upload holds, on disk under ``folder``."""

    model: Path
    options: dict[str, Any] = field(default_factory=dict)
    lock_file: Path | None = None
    reference: Path | None = None
    expect: tuple[Path, Path] | None = None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(data: bytes | str, what: str) -> Any:
    """Parse ``data`` (named ``what`` in errors), refusing more than ``MAX_JSON_BYTES``,
    nesting deeper than ``MAX_JSON_DEPTH``, the non-standard NaN and Infinity, and strings
    that hold a lone surrogate (``"\\udfff"``: no UTF-8 text can carry it)."""
    if len(data) > MAX_JSON_BYTES:
        raise InvalidInputError(f"{what} is over {MAX_JSON_BYTES} bytes")
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        value = None
        deep = True
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    else:
        deep = _depth_over(value, MAX_JSON_DEPTH)
    if deep:
        raise InvalidInputError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} holds a lone surrogate (a \\ud800-\\udfff escape "
                                "without its pair), which is not text",
                                hint="send UTF-8 text; escape characters outside the BMP "
                                     "as a surrogate pair") from None
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The registration options, type-checked: unknown keys and wrong types are refused."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        want = _OPTIONS.get(key)
        if want is None:
            raise InvalidInputError(f"unknown registration option {key!r}",
                                    hint=f"options: {', '.join(sorted(_OPTIONS))}")
        if value is None:
            continue
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise InvalidInputError(f"registration option {key!r} must be a {want.__name__}")
        out[key] = value
    for key in ("tags", "seeds"):
        for k, v in out.get(key, {}).items():
            ok = isinstance(v, str) if key == "tags" else (
                isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise InvalidInputError(f"registration option {key}.{k} has the wrong type")
    for k, v in out.get("metrics", {}).items():
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise InvalidInputError(f"metric {k!r} is not a number")
    for d in out.get("datasets", []):
        if not isinstance(d, dict) or not all(isinstance(x, str) for x in d.values()):
            raise InvalidInputError("datasets must be objects of strings (name, fingerprint)")
    return out


def read_bundle(data: Path, folder: Path, limit: int) -> Upload:
    """Extract the tar archive at ``data`` into ``folder`` (empty) and say what it holds."""
    try:
        with tarfile.open(data, mode="r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise InvalidInputError(f"the bundle has over {MAX_MEMBERS} members")
            total = 0
            for m in members:
                _check_member(m)
                total += m.size
            if total > limit:
                raise InvalidInputError(f"the bundle unpacks to over {limit} bytes")
            tar.extractall(folder, filter="data")
    except tarfile.TarError as exc:
        raise InvalidInputError(f"the upload is not a valid tar bundle: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"the bundle cannot be read: {exc}") from None
    models = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".onnx" and p.is_file())
    if len(models) != 1:
        raise InvalidInputError(f"a bundle holds exactly one .onnx file at its top, found "
                                f"{len(models)}")
    upload = Upload(model=models[0])
    options_file = folder / OPTIONS_FILE
    if options_file.is_file():
        if options_file.stat().st_size > MAX_JSON_BYTES:
            raise InvalidInputError(f"{OPTIONS_FILE} is over {MAX_JSON_BYTES} bytes")
        options = load_json(options_file.read_bytes(), OPTIONS_FILE)
        if not isinstance(options, dict):
            raise InvalidInputError(f"{OPTIONS_FILE} must hold a JSON object")
        upload.options = check_options(options)
    for name in _LOCK_FILES:
        if (folder / name).is_file():
            upload.lock_file = folder / name
    refs = [folder / f"reference{s}" for s in _REFERENCE_SUFFIXES
            if (folder / f"reference{s}").is_file()]
    if len(refs) > 1:
        raise InvalidInputError("a bundle holds one reference data file at most")
    upload.reference = refs[0] if refs else None
    recorded = [folder / name for name in EXPECT_FILES if (folder / name).is_file()]
    if len(recorded) == 1:
        raise InvalidInputError(f"a bundle holds both {' and '.join(EXPECT_FILES)}, or neither")
    upload.expect = (recorded[0], recorded[1]) if recorded else None
    return upload


def _check_member(m: tarfile.TarInfo) -> None:
    path = PurePosixPath(m.name)
    if path.is_absolute() or ".." in path.parts or m.name.startswith(("/", "\\")):
        raise UnsafePathError(f"bundle member {m.name!r} escapes the bundle")
    if not (m.isfile() or m.isdir()):
        raise UnsafePathError(f"bundle member {m.name!r} is not a plain file or folder")


def make_bundle(model: Path, *, options: Mapping[str, Any] | None = None,
                lock_file: Path | None = None, reference: Path | None = None,
                expect: tuple[Path, Path] | None = None) -> bytes:
    """A gzip'd tar bundle of the ONNX file ``model``, every other file in its folder that it
    names as external data, and the optional parts."""
    from lockgate.convert.onnxfile import external_files

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(model, arcname=model.name, recursive=False)
        for rel in external_files(model):
            tar.add(model.parent / rel, arcname=rel, recursive=False)
        if options:
            body = json.dumps(dict(options)).encode()
            info = tarfile.TarInfo(OPTIONS_FILE)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        if lock_file is not None:
            tar.add(lock_file, arcname="pylock.toml" if lock_file.suffix == ".toml"
                    else "requirements.txt", recursive=False)
        if reference is not None:
            suffix = reference.suffix.lower()
            if suffix not in _REFERENCE_SUFFIXES:
                raise InvalidInputError(f"reference data must be one of "
                                        f"{', '.join(_REFERENCE_SUFFIXES)}, not {suffix!r}")
            tar.add(reference, arcname=f"reference{suffix}", recursive=False)
        for path, arcname in zip(expect or (), EXPECT_FILES, strict=False):
            if not path.is_file():
                raise NotFoundError(f"{arcname.removesuffix('.npz')}: no file at {path}")
            tar.add(path, arcname=arcname, recursive=False)
    return buf.getvalue()
