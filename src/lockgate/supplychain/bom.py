"""A CycloneDX 1.6 bill of materials for a version, validated against the strict 1.6 schema.

    doc = build_bom(version, onnx_bytes=data, producer="pytorch 2.13.0")  # validated JSON dict
    validate_bom(doc)                          # strict 1.6 schema; SupplyChainError when invalid

What the BOM holds:

* ``metadata.component``: the model, type ``machine-learning-model``, version = the version
  number, the SHA-256 of the ONNX file, ``lockgate:*`` properties (opset, IR version, producer,
  framework, converter, seeds, tags, parity) and a ``modelCard``
  (:func:`lockgate.supplychain.modelcard.model_card`).
* ``components``: every Python distribution of the registration environment as a ``library``,
  CUDA, cuDNN and the GPU driver when the environment names them, each dataset as a ``data``
  component (:mod:`lockgate.supplychain.components`); hashes come from a lock file
  (:mod:`lockgate.supplychain.lockfiles`), whose pinned packages the environment does not record
  are listed too. Each component says what ships: CycloneDX ``scope`` ``required`` and
  ``lockgate:closure=runtime`` for the runtime closure (ONNX Runtime, lockgate's serving
  requirements and their dependencies, :mod:`lockgate.supplychain.closure`), ``excluded`` and
  ``lockgate:closure=training`` for the rest of the training environment.
* ``dependencies``: the model on its runtime (onnxruntime), framework and converter; library on
  library from installed ``Requires-Dist`` (extras left out) where both ends are in the BOM.
* ``metadata.properties``: every other environment fact (Python, OS, CPU, git, providers, ...)
  and how the runtime closure was found (``lockgate:closure:*``).

The serial number and timestamp come from the version, so the same inputs give the same BOM.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalContact
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packaging.utils import canonicalize_name

from lockgate.errors import IntegrityError, InvalidInputError, SupplyChainError
from lockgate.supplychain.closure import (
    RUNTIME_DISTS,
    Closure,
    RuntimeClosure,
    closure_properties,
    mark_components,
    runtime_closure,
)
from lockgate.supplychain.components import (
    GPU_PROVIDERS,
    PREFIX,
    Installed,
    dataset_component,
    environment_properties,
    installed_dists,
    library,
    lock_hash_types,
    native_components,
    native_dependencies,
    packages_of,
    provider_properties,
    same_version,
)
from lockgate.supplychain.lockfiles import lock_key
from lockgate.supplychain.modelcard import model_card
from lockgate.types import Digest, Version

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

__all__ = ["PREFIX", "SPEC_VERSION", "build_bom", "validate_bom"]

SPEC_VERSION = "1.6"

_FRAMEWORK_DISTS = {"pytorch": "torch", "torch": "torch", "scikit-learn": "scikit-learn",
                    "sklearn": "scikit-learn", "onnx": "onnx", "tensorflow": "tensorflow"}
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
    model_outline: bytes | None = None,
) -> dict[str, Any]:
    """The version's CycloneDX 1.6 JSON BOM, validated against the strict 1.6 schema.

    ``producer`` is the ONNX file's producer (``"pytorch 2.13.0"``); ``lock_hashes`` maps
    ``name`` or ``name==version`` to ``"sha256:<hex>"`` strings (see
    :func:`lockgate.supplychain.lockfiles.parse_lock_hashes`);
    ``considerations`` is free text, one limitation per paragraph; each dataset is a mapping
    with ``name`` and optionally ``fingerprint`` (``"sha256:<hex>"``), ``url``, ``description``.
    Tags ``task``, ``architecture_family``, ``model_architecture`` and ``learning_approach``
    override what the card infers from the outputs and the ONNX graph, which it reads from
    ``model_outline`` (the model less its weights, :func:`lockgate.seal.folder.outline`) when
    given, else from ``onnx_bytes``.

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
    hashes = lock_hash_types(lock_hashes or {})
    libs, matched = _libraries(env, hashes)
    runtime = next((libs[n] for n in RUNTIME_DISTS if n in libs), None)
    if runtime is not None:
        runtime.properties.update(provider_properties(env))
    natives = native_components(env)
    data = [dataset_component(d, i) for i, d in enumerate(datasets)]
    closure = runtime_closure()
    shipped = _mark_parts(env, libs, natives, data, closure)
    locked = _lock_only(libs, hashes)

    model = _model_component(version, digest, producer)
    bom = Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL,
                                 f"lockgate:{version.name}:{version.number}:{digest}"),
        metadata=BomMetaData(
            timestamp=_timestamp(version.created_at),
            component=model,
            tools=ToolRepository(components=[Component(
                type=ComponentType.APPLICATION, name="lockgate", version=_own_version())]),
            properties=[*environment_properties(env),
                        *closure_properties(closure, shipped, len(libs) + len(locked))],
        ),
        components=[*libs.values(), *locked, *natives.values(), *data],
    )
    model_deps = _model_dependencies(version, libs, runtime)
    bom.register_dependency(model, model_deps)
    for cname, dist in matched.items():
        deps = [libs[r] for r in dist.requires if r in libs and r != cname]
        bom.register_dependency(libs[cname], deps)
    native_dependencies(bom, env, libs, runtime, natives)

    doc = _serialize(bom, root_has_dependencies=bool(model_deps))
    doc["metadata"]["component"]["modelCard"] = model_card(
        version, onnx_bytes if model_outline is None else model_outline,
        [str(d.bom_ref) for d in data], considerations
    )
    validate_bom(doc)
    return doc


def _libraries(
    env: Mapping[str, Any], hashes: Mapping[str, list[HashType]]
) -> tuple[dict[str, Component], dict[str, Installed]]:
    """A library per recorded distribution, and the installed distributions whose version is
    the recorded one (their licenses and requirements are known)."""
    installed = installed_dists()
    libs: dict[str, Component] = {}
    matched: dict[str, Installed] = {}
    for cname, (name, dist_version) in packages_of(env).items():
        dist = installed.get(cname)
        if dist is not None and same_version(dist.version, dist_version):
            matched[cname] = dist
        libs[cname] = library(name, dist_version, dist if cname in matched else None,
                              hashes.get(lock_key(cname, dist_version)) or hashes.get(cname))
    return libs, matched


def _mark_parts(
    env: Mapping[str, Any], libs: Mapping[str, Component], natives: Mapping[str, Component],
    data: Sequence[Component], closure: RuntimeClosure,
) -> int:
    """Mark each component runtime closure or training environment; the runtime's native
    pieces ship only when it ran on a GPU provider. Returns the runtime libraries' count."""
    shipped = [c for n, c in libs.items() if n in closure.members]
    mark_components(shipped, Closure.RUNTIME)
    mark_components([c for n, c in libs.items() if n not in closure.members], Closure.TRAINING)
    used = env.get("onnxruntime", {}).get("session_providers") \
        if isinstance(env.get("onnxruntime"), Mapping) else None
    gpu = isinstance(used, list) and bool(set(used) & set(GPU_PROVIDERS))
    mark_components(natives.values(), Closure.RUNTIME if gpu else Closure.TRAINING)
    mark_components(data, Closure.TRAINING)
    return len(shipped)


def _lock_only(libs: Mapping[str, Component], hashes: Mapping[str, list[HashType]]
               ) -> list[Component]:
    """The lock file's pinned packages the environment does not record, as training
    environment libraries (no installed metadata: license unknown)."""
    out = []
    for key, values in hashes.items():
        cname, sep, ver = key.partition("==")
        if sep and cname not in libs:
            out.append(library(cname, ver, None, values))
    mark_components(out, Closure.TRAINING)
    return out


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
