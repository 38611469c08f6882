"""A CycloneDX 1.6 bill of materials for a version, the model card derived from it, and lock hashes.

    doc = build_bom(version, onnx_bytes=data, producer="pytorch 2.13.0")  # validated JSON dict
    validate_bom(doc)                          # strict 1.6 schema; SupplyChainError when invalid
    text = model_card_markdown(version, doc)   # the human card, signed along with the BOM
    hashes = parse_lock_hashes(Path("pylock.toml"))   # or a requirements.txt with --hash

What the BOM holds:

* ``metadata.component``: the model, type ``machine-learning-model``, version = the version
  number, the SHA-256 of the ONNX file, ``lockgate:*`` properties (opset, IR version, producer,
  framework, converter, seeds, tags, parity) and a ``modelCard`` (task, architecture, datasets,
  input/output formats, metrics and parity errors, considerations). cyclonedx-python-lib has no
  model-card class, so the card is inserted into the serialized JSON before validation.
* ``components``: every Python distribution of the registration environment as a ``library``
  with its purl, the license its installed metadata declares (only when the installed version
  is the recorded one) and hashes from a lock file; CUDA, cuDNN and the GPU driver when the
  environment names them; each dataset as a ``data`` component carrying its fingerprint.
* ``dependencies``: the model on its runtime (onnxruntime), framework and converter; library on
  library from installed ``Requires-Dist`` (extras left out) where both ends are in the BOM.
* ``metadata.properties``: every other environment fact (Python, OS, CPU, git, providers, ...).

The serial number and timestamp come from the version, so the same inputs give the same BOM.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import sys
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import onnx
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalContact
from cyclonedx.model.license import (
    DisjunctiveLicense,
    License,
    LicenseAcknowledgement,
    LicenseExpression,
)
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version as PyVersion

from lockgate.errors import IntegrityError, InvalidInputError, SupplyChainError
from lockgate.supplychain.licenses import LicenseInfo, license_of
from lockgate.types import Digest, Version

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

__all__ = ["RequirementLine", "build_bom", "model_card_markdown", "parse_lock_hashes",
           "parse_requirements", "validate_bom"]

SPEC_VERSION = "1.6"
PREFIX = "lockgate:"
"""Namespace of every property lockgate writes."""

_RUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                  "onnxruntime-openvino", "onnxruntime-qnn", "onnxruntime-rocm",
                  "onnxruntime-training")
_FRAMEWORK_DISTS = {"pytorch": "torch", "torch": "torch", "scikit-learn": "scikit-learn",
                    "sklearn": "scikit-learn", "onnx": "onnx", "tensorflow": "tensorflow"}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_HASH_ALGS = {"md5": (HashAlgorithm.MD5, 32), "sha1": (HashAlgorithm.SHA_1, 40),
              "sha256": (HashAlgorithm.SHA_256, 64), "sha384": (HashAlgorithm.SHA_384, 96),
              "sha512": (HashAlgorithm.SHA_512, 128)}
_DATASET_KEYS = frozenset({"name", "fingerprint", "url", "description"})
_LEARNING_TYPES = frozenset({"supervised", "unsupervised", "reinforcement-learning",
                             "semi-supervised", "self-supervised"})
_GENERIC_GRAPH_NAMES = frozenset({"", "graph", "main_graph", "torch_jit", "torch-jit-export",
                                  "linear", "model"})
_PIN = re.compile(r"^(?:===?)$")
_HASH_OPTION = re.compile(r"--hash(?:=|\s+)(\S+)")
_COMMENT = re.compile(r"(?:^|\s)#.*$")
_CONVERTER_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s,;()]+)")
_MAX_MESSAGE = 400


# -- building ----------------------------------------------------------------------------------
def build_bom(
    version: Version,
    *,
    onnx_bytes: bytes,
    producer: str,
    lock_hashes: Mapping[str, list[str]] | None = None,
    considerations: str = "",
    datasets: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """The version's CycloneDX 1.6 JSON BOM, validated against the strict 1.6 schema.

    ``producer`` is the ONNX file's producer (``"pytorch 2.13.0"``); ``lock_hashes`` maps
    ``name`` or ``name==version`` to ``"sha256:<hex>"`` strings (see :func:`parse_lock_hashes`);
    ``considerations`` is free text, one limitation per paragraph; each dataset is a mapping
    with ``name`` and optionally ``fingerprint`` (``"sha256:<hex>"``), ``url``, ``description``.
    Tags ``task``, ``architecture_family``, ``model_architecture`` and ``learning_approach``
    override what the card infers from the outputs and the ONNX graph.

    Raises IntegrityError when ``onnx_bytes`` is not the version's model, InvalidInputError for
    unusable datasets or hashes, and SupplyChainError when the result does not validate.
    """
    digest = Digest.of_bytes(onnx_bytes)
    if digest != version.digest:
        raise IntegrityError(
            f"the ONNX bytes ({digest}) are not model {version.name}@{version.number} "
            f"({version.digest})",
            hint="pass the bytes the artifact store returns for this version",
        )
    env = version.environment
    hashes = _canonical_lock_hashes(lock_hashes or {})
    installed = _installed_dists()
    libs: dict[str, Component] = {}
    matched: dict[str, _Installed] = {}
    for cname, (name, dist_version) in _packages(env).items():
        dist = installed.get(cname)
        if dist is not None and _same_version(dist.version, dist_version):
            matched[cname] = dist
        libs[cname] = _library(name, dist_version, dist if cname in matched else None,
                               hashes.get(_lock_key(cname, dist_version)) or hashes.get(cname))
    runtime = next((libs[n] for n in _RUNTIME_DISTS if n in libs), None)
    if runtime is not None:
        runtime.properties.update(_provider_properties(env))
    natives = _native_components(env)
    data = [_dataset_component(d, i) for i, d in enumerate(datasets)]

    model = _model_component(version, digest, producer)
    bom = Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL,
                                 f"lockgate:{version.name}:{version.number}:{digest}"),
        metadata=BomMetaData(
            timestamp=_timestamp(version.created_at),
            component=model,
            tools=ToolRepository(components=[Component(
                type=ComponentType.APPLICATION, name="lockgate", version=_own_version())]),
            properties=_environment_properties(env),
        ),
        components=[*libs.values(), *natives.values(), *data],
    )
    model_deps = _model_dependencies(version, libs, runtime)
    bom.register_dependency(model, model_deps)
    for cname, dist in matched.items():
        deps = [libs[r] for r in dist.requires if r in libs and r != cname]
        bom.register_dependency(libs[cname], deps)
    _native_dependencies(bom, env, libs, runtime, natives)

    doc = _serialize(bom, root_has_dependencies=bool(model_deps))
    doc["metadata"]["component"]["modelCard"] = _model_card(
        version, _load_onnx(onnx_bytes), data, considerations
    )
    validate_bom(doc)
    return doc


def _serialize(bom: Bom, *, root_has_dependencies: bool) -> dict[str, Any]:
    outputter = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6)
    if root_has_dependencies:
        text = outputter.output_as_string()
    else:  # an environment without onnxruntime: the library warns the graph is incomplete
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The Component this BOM is describing",
                                    UserWarning)
            text = outputter.output_as_string()
    doc: dict[str, Any] = json.loads(text)
    return doc


def _model_component(version: Version, digest: Digest, producer: str) -> Component:
    props = {
        "onnx:opset": str(version.opset),
        "onnx:ir_version": str(version.ir_version),
        "onnx:producer": producer,
        "framework": version.framework,
        "framework_version": version.framework_version,
        "digest": str(digest),
        "created_at": version.created_at,
        "creator": version.creator,
    }
    if converter := version.environment.get("converter"):
        props["converter"] = str(converter)
    props.update({f"seed:{k}": str(v) for k, v in version.seeds.items()})
    props.update({f"tag:{k}": v for k, v in version.tags.items()})
    if version.parity is not None:
        props["parity:passed"] = "true" if version.parity.passed else "false"
        props["parity:batch_sizes"] = ",".join(str(b) for b in version.parity.batch_sizes)
        props["parity:seed"] = str(version.parity.seed)
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=version.name,
        version=str(version.number),
        bom_ref=f"lockgate:model/{version.name}@{version.number}",
        description=version.description or None,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.hex)],
        authors=[OrganizationalContact(name=version.creator)] if version.creator else None,
        properties=[Property(name=PREFIX + k, value=v) for k, v in props.items()],
    )


def _model_dependencies(
    version: Version, libs: Mapping[str, Component], runtime: Component | None
) -> list[Component]:
    framework = canonicalize_name(version.framework)
    wanted = [_FRAMEWORK_DISTS.get(framework, framework)]
    converter = version.environment.get("converter")
    if isinstance(converter, str):
        wanted += [canonicalize_name(m.group(1)) for m in _CONVERTER_PIN.finditer(converter)]
    if "tensorflow" in wanted:
        wanted.append("tensorflow-cpu")  # the CPU build carries the same module
    deps = [runtime] if runtime is not None else []
    deps += [libs[n] for n in dict.fromkeys(wanted) if n in libs and libs[n] is not runtime]
    return deps


# -- libraries ---------------------------------------------------------------------------------
def _packages(env: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    packages = env.get("packages")
    if not isinstance(packages, Mapping):
        return {}
    return {canonicalize_name(str(n)): (str(n), str(v)) for n, v in packages.items()}


@dataclass(frozen=True)
class _Installed:
    """What the BOM needs of an installed distribution, read once per site-packages state."""

    version: str
    license: LicenseInfo
    requires: tuple[str, ...]


def _installed_dists() -> Mapping[str, _Installed]:
    return _installed_for(_site_state())


def _site_state() -> tuple[tuple[str, int], ...]:
    """sys.path entries and their modification times: installing or removing a distribution
    changes the folder's mtime, which invalidates the cache."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


@functools.lru_cache(maxsize=4)
def _installed_for(state: tuple[tuple[str, int], ...]) -> Mapping[str, _Installed]:
    found: dict[str, _Installed] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and canonicalize_name(str(name)) not in found:
            found[canonicalize_name(str(name))] = _Installed(
                str(dist.version), license_of(dist), tuple(_requirements(dist)))
    return MappingProxyType(found)


def _library(
    name: str, dist_version: str, dist: _Installed | None,
    hashes: Sequence[HashType] | None,
) -> Component:
    purl = PackageURL(type="pypi", name=name, version=dist_version)
    return Component(
        type=ComponentType.LIBRARY,
        name=name,
        version=dist_version,
        bom_ref=purl.to_string(),
        purl=purl,
        licenses=_license_objects(dist.license if dist is not None else None),
        properties=_license_properties(dist.license if dist is not None else None),
        hashes=hashes,
    )


def _license_objects(info: LicenseInfo | None) -> list[License]:
    """The license as :func:`lockgate.supplychain.licenses.license_of` reads it: a normalised
    SPDX expression, else what the metadata declared as a name, else nothing."""
    if info is None:
        return []
    ack = LicenseAcknowledgement.DECLARED
    if info.expression is not None:
        return [LicenseExpression(info.expression, acknowledgement=ack)]
    if info.declared:
        return [DisjunctiveLicense(name=info.declared, acknowledgement=ack)]
    return []


def _license_properties(info: LicenseInfo | None) -> list[Property]:
    if info is None:
        return []
    props = [Property(name=f"{PREFIX}license:source", value=info.source.value)]
    if info.problem:
        props.append(Property(name=f"{PREFIX}license:problem", value=info.problem))
    return props


def _field(meta: importlib.metadata.PackageMetadata, key: str) -> str:
    """A metadata field, "" when absent (``meta[key]`` warns for absent keys on Python 3.12)."""
    values = meta.get_all(key)
    return str(values[0]).strip() if values else ""


def _requirements(dist: importlib.metadata.Distribution) -> list[str]:
    """Canonical names a distribution requires, without extras-only requirements."""
    out: list[str] = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
        except Exception:  # malformed metadata or markers this Python cannot evaluate
            continue
        out.append(canonicalize_name(req.name))
    return out


def _same_version(a: str, b: str) -> bool:
    return _canonical_version(a) == _canonical_version(b)


def _canonical_version(v: str) -> str:
    try:
        return str(PyVersion(v))
    except InvalidVersion:
        return v.strip().lower()


def _lock_key(name: str, version: str) -> str:
    return f"{canonicalize_name(name)}=={_canonical_version(version)}"


def _canonical_lock_hashes(hashes: Mapping[str, list[str]]) -> dict[str, list[HashType]]:
    out: dict[str, list[HashType]] = {}
    for key, values in hashes.items():
        name, sep, ver = key.partition("==")
        ckey = _lock_key(name, ver) if sep else canonicalize_name(name)
        bucket = out.setdefault(ckey, [])
        for value in values:
            h = _hash_type(value, f"lock hash for {key}")
            if h not in bucket:
                bucket.append(h)
    return out


def _hash_type(text: str, where: str) -> HashType:
    alg, sep, hexpart = text.strip().partition(":")
    known = _HASH_ALGS.get(alg.lower().replace("-", ""))
    hexpart = hexpart.lower()
    if not sep or known is None or len(hexpart) != known[1] or not _is_hex(hexpart):
        raise InvalidInputError(
            f"{where}: {text!r} is not '<algorithm>:<hex digest>'",
            hint=f"algorithms: {', '.join(_HASH_ALGS)}",
        )
    return HashType(alg=known[0], content=hexpart)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


# -- native pieces and environment -------------------------------------------------------------
def _available(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    return None if not text or text.startswith("unavailable:") else text


def _section(env: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = env.get(key)
    return value if isinstance(value, Mapping) else {}


def _native_components(env: Mapping[str, Any]) -> dict[str, Component]:
    torch = _section(env, "torch")
    found = {
        "cuda": (ComponentType.LIBRARY, "cuda", _available(torch.get("cuda")),
                 "CUDA runtime the framework was built with"),
        "cudnn": (ComponentType.LIBRARY, "cudnn", _available(torch.get("cudnn")),
                  "cuDNN version the framework reported"),
        "driver": (ComponentType.DEVICE_DRIVER, "nvidia-driver",
                   _available(env.get("nvidia_driver")), "NVIDIA GPU driver"),
    }
    return {
        key: Component(type=kind, name=name, version=ver, description=desc,
                       bom_ref=f"lockgate:native/{name}@{ver}")
        for key, (kind, name, ver, desc) in found.items()
        if ver is not None
    }


def _native_dependencies(
    bom: Bom, env: Mapping[str, Any], libs: Mapping[str, Component],
    runtime: Component | None, natives: Mapping[str, Component],
) -> None:
    cuda, cudnn, driver = (natives.get(k) for k in ("cuda", "cudnn", "driver"))
    if cuda is not None and driver is not None:
        bom.register_dependency(cuda, [driver])
    torch = libs.get("torch")
    if torch is not None:
        bom.register_dependency(torch, [c for c in (cuda, cudnn) if c is not None])
    used = _section(env, "onnxruntime").get("session_providers")
    if runtime is not None and isinstance(used, list) and set(used) & set(_GPU_PROVIDERS):
        bom.register_dependency(runtime, [c for c in (cuda, cudnn, driver) if c is not None])


def _provider_properties(env: Mapping[str, Any]) -> list[Property]:
    ort = _section(env, "onnxruntime")
    return [
        Property(name=f"{PREFIX}onnxruntime:{key}", value=_flat(ort[key]))
        for key in ("session_providers", "available_providers")
        if key in ort
    ]


def _environment_properties(env: Mapping[str, Any]) -> list[Property]:
    out: list[Property] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out.append(Property(name=f"{PREFIX}environment:{prefix}", value=_flat(value)))

    walk("", {k: v for k, v in env.items() if k != "packages"})
    return out


def _flat(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _timestamp(created_at: str) -> datetime:
    try:
        ts = datetime.fromisoformat(created_at)
    except ValueError:
        raise InvalidInputError(f"created_at {created_at!r} is not an ISO 8601 time") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _own_version() -> str:
    try:
        return importlib.metadata.version("lockgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- datasets and the model card ---------------------------------------------------------------
def _dataset_component(spec: Mapping[str, str], index: int) -> Component:
    unknown = set(spec) - _DATASET_KEYS
    name = str(spec.get("name", "")).strip()
    if unknown or not name:
        raise InvalidInputError(
            f"dataset #{index + 1}: " + (f"unknown keys {sorted(unknown)}" if unknown
                                         else "a dataset needs a name"),
            hint=f"keys: {sorted(_DATASET_KEYS)}",
        )
    hashes = None
    if fingerprint := spec.get("fingerprint"):
        text = fingerprint if ":" in fingerprint else f"sha256:{fingerprint}"
        hashes = [_hash_type(text, f"dataset {name!r} fingerprint")]
    props = [Property(name=f"{PREFIX}dataset:url", value=spec["url"])] if spec.get("url") else []
    return Component(
        type=ComponentType.DATA,
        name=name,
        bom_ref=f"lockgate:dataset/{index}/{name}",
        description=spec.get("description") or None,
        hashes=hashes,
        properties=props,
    )


def _model_card(
    version: Version, proto: onnx.ModelProto, datasets: Sequence[Component], considerations: str
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "task": version.tags.get("task") or _infer_task(version),
        "architectureFamily": version.tags.get("architecture_family")
        or _infer_family(version.framework, proto),
    }
    if approach := version.tags.get("learning_approach"):
        if approach not in _LEARNING_TYPES:
            raise InvalidInputError(
                f"tag learning_approach={approach!r} is not a CycloneDX learning type",
                hint=f"one of {sorted(_LEARNING_TYPES)}",
            )
        params["approach"] = {"type": approach}
    if arch := version.tags.get("model_architecture") or _graph_name(proto):
        params["modelArchitecture"] = arch
    if datasets:
        params["datasets"] = [{"ref": str(d.bom_ref)} for d in datasets]
    params["inputs"] = [{"format": _tensor_format(t.name, t.dtype, t.shape)}
                        for t in version.signature.inputs]
    params["outputs"] = [{"format": _tensor_format(t.name, t.dtype, t.shape)}
                         for t in version.signature.outputs]
    card: dict[str, Any] = {"modelParameters": params}
    metrics = [{"type": k, "value": repr(float(v))} for k, v in sorted(version.metrics.items())]
    if version.parity is not None:
        metrics += [
            {"type": f"parity max abs error vs {version.framework}",
             "value": repr(o.max_abs_error), "slice": o.name}
            for o in version.parity.outputs
        ]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    limitations = [p.strip() for p in re.split(r"\n\s*\n", considerations) if p.strip()]
    if limitations:
        card["considerations"] = {"technicalLimitations": limitations}
    return card


def _tensor_format(name: str, dtype: str, shape: Sequence[object]) -> str:
    return f"{name}: {dtype}[{', '.join(str(d) for d in shape)}]"


def _infer_task(version: Version) -> str:
    names = [o.name.lower() for o in version.signature.outputs]
    if any("label" in n or "probabilit" in n for n in names):
        return "classification"
    return "unknown"


def _load_onnx(onnx_bytes: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # protobuf DecodeError
        raise InvalidInputError(f"the model bytes are not an ONNX model: {exc}") from None


def _infer_family(framework: str, proto: onnx.ModelProto) -> str:
    ops = frozenset(n.op_type for n in proto.graph.node)
    rules = [
        (any(o.startswith("TreeEnsemble") for o in ops), "tree ensemble"),
        (bool(ops & {"SVMClassifier", "SVMRegressor"}), "support vector machine"),
        (bool(ops & {"LinearClassifier", "LinearRegressor"}), "linear model"),
        (bool(ops & {"Attention", "MultiHeadAttention"})
         or {"Softmax", "LayerNormalization", "MatMul"} <= ops, "transformer"),
        (bool(ops & {"Conv", "ConvTranspose"}), "convolutional neural network"),
        (bool(ops & {"LSTM", "GRU", "RNN"}), "recurrent neural network"),
        (bool(ops & {"MatMul", "Gemm"}), "feed-forward neural network"),
    ]
    for matched, family in rules:
        if matched:
            return family
    return {"pytorch": "neural network", "keras": "neural network",
            "tensorflow": "neural network", "jax": "neural network",
            "scikit-learn": "classical machine learning"}.get(framework, "unknown")


def _graph_name(proto: onnx.ModelProto) -> str:
    name = proto.graph.name.strip()
    return "" if name.lower() in _GENERIC_GRAPH_NAMES else name


# -- validation --------------------------------------------------------------------------------
@functools.cache
def _validator() -> JsonStrictValidator:
    from cyclonedx.validation.json import JsonStrictValidator  # jsonschema: ~2 s to import

    return JsonStrictValidator(SchemaVersion.V1_6)


def validate_bom(doc: Mapping[str, Any] | str) -> None:
    """Check ``doc`` (a dict or JSON text) against the strict CycloneDX 1.6 JSON schema.

    Raises SupplyChainError naming the first failing JSON path and the validator's message.
    """
    try:
        data = json.loads(doc) if isinstance(doc, str) else dict(doc)
        text = doc if isinstance(doc, str) else json.dumps(data)
    except (ValueError, TypeError) as exc:
        raise SupplyChainError(f"the BOM is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("bomFormat") != "CycloneDX" \
            or data.get("specVersion") != SPEC_VERSION:
        raise SupplyChainError(
            "not a CycloneDX 1.6 BOM (bomFormat/specVersion)",
            hint="lockgate writes and reads CycloneDX 1.6 JSON",
        )
    errors = _validator().validate_str(text, all_errors=True)
    found = list(errors) if errors is not None else []
    if not found:
        return
    first = found[0].data
    path = getattr(first, "json_path", "$")
    message = str(getattr(first, "message", first))
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise SupplyChainError(
        f"the BOM fails the CycloneDX 1.6 schema at {path}: {message}{more}",
        hint="either the document was edited after lockgate wrote it, or the datasets, tags "
             "or considerations it was built from cannot be expressed in CycloneDX 1.6",
    )


# -- lock files --------------------------------------------------------------------------------
def parse_lock_hashes(path: Path) -> dict[str, list[str]]:
    """Hashes per distribution from a ``pylock.toml`` (PEP 751) or a requirements file.

    Keys are ``name==version`` (canonical name and version) where the lock pins a version,
    else the canonical name; values are sorted ``"<algorithm>:<hex>"`` strings. Raises
    InvalidInputError for a file that cannot be read or parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read lock file {path}: {exc}") from None
    entries = _pylock(text, path) if path.suffix == ".toml" else _requirements_txt(text, path)
    out: dict[str, set[str]] = {}
    for key, values in entries:
        bucket = out.setdefault(key, set())
        for value in values:
            h = _hash_type(value, str(path))
            bucket.add(f"{_alg_name(h.alg)}:{h.content}")
    return {k: sorted(v) for k, v in sorted(out.items())}


def _alg_name(alg: HashAlgorithm) -> str:
    return next(name for name, (a, _) in _HASH_ALGS.items() if a is alg)


def _pylock(text: str, path: Path) -> list[tuple[str, list[str]]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{path} is not TOML: {exc}") from None
    packages = data.get("packages")
    if not isinstance(packages, list):
        raise InvalidInputError(f"{path} has no [[packages]] array; is it a pylock.toml?")
    out = []
    for i, pkg in enumerate(packages):
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            raise InvalidInputError(f"{path}: packages[{i}] has no name")
        tables: list[Any] = [*pkg.get("wheels", []), pkg.get("sdist"), pkg.get("archive")]
        values = [
            f"{alg}:{digest}"
            for t in tables if isinstance(t, dict) and isinstance(t.get("hashes"), dict)
            for alg, digest in t["hashes"].items()
        ]
        ver = pkg.get("version")
        key = _lock_key(pkg["name"], str(ver)) if ver else canonicalize_name(pkg["name"])
        out.append((key, values))
    return out


@dataclass(frozen=True)
class RequirementLine:
    """One logical line of a requirements file: a requirement with its ``--hash`` values, or
    an option line (``-r``, ``--index-url``, ...) in ``option``."""

    lineno: int
    requirement: Requirement | None
    hashes: tuple[str, ...] = ()
    option: str = ""


def parse_requirements(text: str, where: str) -> list[RequirementLine]:
    """The requirements and option lines of a ``requirements.txt`` (comments dropped, lines
    joined across trailing backslashes); InvalidInputError naming ``where:line``."""
    out = []
    for lineno, line in _logical_lines(text):
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            out.append(RequirementLine(lineno, None, option=line))
            continue
        values = tuple(_HASH_OPTION.findall(line))
        spec = _HASH_OPTION.sub("", line).strip()
        try:
            out.append(RequirementLine(lineno, Requirement(spec), values))
        except InvalidRequirement as exc:
            raise InvalidInputError(f"{where}:{lineno}: {exc}") from None
    return out


def _requirements_txt(text: str, path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for entry in parse_requirements(text, str(path)):
        req, values = entry.requirement, list(entry.hashes)
        if req is None:  # -r, -c, --index-url, -e and friends
            continue
        pins = [s for s in req.specifier if _PIN.match(s.operator) and "*" not in s.version]
        key = (_lock_key(req.name, pins[0].version) if len(pins) == 1 and len(req.specifier) == 1
               else canonicalize_name(req.name))
        out.append((key, values))
    return out


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Lines joined across trailing backslashes, each with the number of its first line."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        yield start, " ".join(buf)
        buf = []
    if buf:
        yield start, " ".join(buf)


# -- the human model card ----------------------------------------------------------------------
def model_card_markdown(version: Version, bom: Mapping[str, Any]) -> str:
    """A markdown model card drawn from the version and its BOM (signed along with the BOM)."""
    model = bom["metadata"]["component"]
    card = model.get("modelCard", {})
    params = card.get("modelParameters", {})
    props = {p["name"].removeprefix(PREFIX): p.get("value", "")
             for p in model.get("properties", [])}
    env = {p["name"].removeprefix(PREFIX + "environment:"): p.get("value", "")
           for p in bom["metadata"].get("properties", [])}
    components = {c.get("bom-ref"): c for c in bom.get("components", [])}
    sha = next((h["content"] for h in model.get("hashes", []) if h["alg"] == "SHA-256"), "")

    lines = [f"# {model['name']} — version {model['version']}", ""]
    if version.description:
        lines += [version.description, ""]
    rows = [
        ("Model file", f"`model.onnx`, sha256 `{sha}`"),
        ("Framework", f"{version.framework} {version.framework_version}"),
        ("Converter", props.get("converter", "")),
        ("ONNX", f"opset {version.opset}, IR version {version.ir_version}, "
                 f"producer {props.get('onnx:producer', '')}"),
        ("Task", params.get("task", "")),
        ("Architecture", " / ".join(x for x in (params.get("architectureFamily"),
                                                 params.get("modelArchitecture")) if x)),
        ("Registered", f"{version.created_at} by {version.creator}"),
        ("Seeds", ", ".join(f"{k}={v}" for k, v in sorted(version.seeds.items())) or "none"),
        ("Tags", ", ".join(f"{k}={v}" for k, v in sorted(version.tags.items())) or "none"),
    ]
    lines += _table(("", ""), rows)

    lines += ["", "## Inputs and outputs", ""]
    lines += _table(("Kind", "Name", "Type", "Shape"),
                    [("input", t.name, t.dtype, _shape(t.shape)) for t in version.signature.inputs]
                    + [("output", t.name, t.dtype, _shape(t.shape))
                       for t in version.signature.outputs])

    lines += ["", "## Metrics", ""]
    metrics = [m for m in card.get("quantitativeAnalysis", {}).get("performanceMetrics", [])
               if not m["type"].startswith("parity ")]
    lines += (_table(("Metric", "Value"), [(m["type"], m["value"]) for m in metrics])
              if metrics else ["None reported."])

    lines += ["", "## Parity with the source framework", ""]
    if version.parity is None:
        lines.append("Not checked: the model arrived as ONNX, there was no framework to compare.")
    else:
        p = version.parity
        lines += [f"{'Passed' if p.passed else 'FAILED'} on batch sizes "
                  f"{', '.join(map(str, p.batch_sizes))} (seed {p.seed}).", ""]
        lines += _table(("Output", "Max abs error", "Max rel error", "atol", "rtol", "Mismatches"),
                        [(o.name, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}",
                          f"{o.atol:g}", f"{o.rtol:g}", f"{o.mismatches}/{o.elements}")
                         for o in p.outputs])

    lines += ["", "## Datasets", ""]
    refs = [components.get(d.get("ref"), {}) for d in params.get("datasets", [])]
    lines += [f"- {d.get('name', '?')}" + "".join(
        f", {h['alg'].lower()} `{h['content']}`" for h in d.get("hashes", []))
        + (f" — {d['description']}" if d.get("description") else "") for d in refs] \
        or ["None declared."]

    lines += ["", "## Considerations", ""]
    limits = card.get("considerations", {}).get("technicalLimitations", [])
    lines += [f"- {_one_line(t)}" for t in limits] or ["None stated."]

    lines += ["", "## Runtime environment", ""]
    lines += _table(("", ""), [
        ("ONNX Runtime", env.get("onnxruntime.version", "")),
        ("Execution providers used", env.get("onnxruntime.session_providers", "")),
        ("Python", env.get("python.version", "")),
        ("OS", env.get("os.platform", "")),
        ("CUDA / cuDNN", f"{env.get('torch.cuda', '')} / {env.get('torch.cudnn', '')}"),
        ("GPU driver", env.get("nvidia_driver", "")),
        ("Git commit", env.get("git.commit", "")),
    ])

    lines += ["", "## Direct dependencies", ""]
    edges = {d["ref"]: d.get("dependsOn", []) for d in bom.get("dependencies", [])}
    direct = [components[r] for r in edges.get(model.get("bom-ref"), []) if r in components]
    lines += _table(("Component", "Version", "License"),
                    [(c["name"], c.get("version", ""), _license_text(c)) for c in direct]) \
        if direct else ["None recorded."]
    libraries = [c for c in components.values() if c.get("type") == "library"]
    by_license = Counter(_license_text(c) or "not declared" for c in libraries)
    lines += ["", f"{len(libraries)} libraries in all; declared licenses:", ""]
    lines += _table(("License", "Libraries"),
                    [(k, str(n)) for k, n in sorted(by_license.items(),
                                                     key=lambda kv: (-kv[1], kv[0]))])
    lines += ["", "---", "",
              f"Derived from CycloneDX {bom.get('specVersion', '')} BOM "
              f"`{bom.get('serialNumber', '')}`; the card and the BOM are signed together.", ""]
    return "\n".join(lines)


def _license_text(component: Mapping[str, Any]) -> str:
    out = []
    for entry in component.get("licenses", []):
        if "expression" in entry:
            out.append(entry["expression"])
        else:
            lic = entry.get("license", {})
            out.append(lic.get("id") or lic.get("name") or "")
    return ", ".join(x for x in out if x)


def _shape(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(value: object) -> str:
    return _one_line(str(value)).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out
