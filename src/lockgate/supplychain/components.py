"""What a version's BOM lists besides the model: libraries, native pieces, datasets and the
environment, as cyclonedx-python-lib objects.

* a library per Python distribution of the registration environment, with its purl, the license
  its installed metadata declares (only when the installed version is the recorded one, see
  :func:`installed_dists`) and its lock-file hashes;
* CUDA, cuDNN and the NVIDIA driver when the environment names them, and the edges between them,
  the framework and the runtime (:func:`native_dependencies`);
* each declared dataset as a ``data`` component carrying its fingerprint;
* every other environment fact as a ``lockgate:environment:*`` property.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import (
    DisjunctiveLicense,
    License,
    LicenseAcknowledgement,
    LicenseExpression,
)
from packageurl import PackageURL
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lockgate.errors import InvalidInputError
from lockgate.supplychain.licenses import LicenseInfo, license_of
from lockgate.supplychain.lockfiles import canonical_version, lock_key, normalize_hash

__all__ = ["GPU_PROVIDERS", "PREFIX", "Installed", "dataset_component", "environment_properties",
           "hash_type", "installed_dists", "library", "lock_hash_types", "native_components",
           "native_dependencies", "packages_of", "provider_properties", "same_version"]

PREFIX = "lockgate:"
"""Namespace of every property lockgate writes."""

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
"""Execution providers that make the runtime depend on CUDA, cuDNN and the driver."""
_HASH_ALGS = {"md5": HashAlgorithm.MD5, "sha1": HashAlgorithm.SHA_1,
              "sha256": HashAlgorithm.SHA_256, "sha384": HashAlgorithm.SHA_384,
              "sha512": HashAlgorithm.SHA_512}
_DATASET_KEYS = frozenset({"name", "fingerprint", "url", "description"})


# -- libraries ---------------------------------------------------------------------------------
def packages_of(env: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The environment's ``packages`` as canonical name -> (recorded name, version)."""
    packages = env.get("packages")
    if not isinstance(packages, Mapping):
        return {}
    return {canonicalize_name(str(n)): (str(n), str(v)) for n, v in packages.items()}


@dataclass(frozen=True)
class Installed:
    """What the BOM needs of an installed distribution, read once per site-packages state."""

    version: str
    license: LicenseInfo
    requires: tuple[str, ...]
    """Canonical names it requires, extras-only requirements left out."""
    requirements: tuple[str, ...] = ()
    """Its ``Requires-Dist`` lines as written, markers and extras included."""


def installed_dists() -> Mapping[str, Installed]:
    """The distributions this process can import, by canonical name."""
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
def _installed_for(state: tuple[tuple[str, int], ...]) -> Mapping[str, Installed]:
    found: dict[str, Installed] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and canonicalize_name(str(name)) not in found:
            found[canonicalize_name(str(name))] = Installed(
                str(dist.version), license_of(dist), tuple(_requirements(dist)),
                tuple(dist.requires or ()))
    return MappingProxyType(found)


def library(
    name: str, dist_version: str, dist: Installed | None,
    hashes: Sequence[HashType] | None,
) -> Component:
    """The ``library`` component of one recorded distribution; ``dist`` is the installed one
    when its version is the recorded one (its license is then declared)."""
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
    props += [Property(name=f"{PREFIX}license:evidence", value=e) for e in info.evidence]
    return props


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


def same_version(a: str, b: str) -> bool:
    """Whether two version strings name the same PEP 440 version."""
    return canonical_version(a) == canonical_version(b)


def lock_hash_types(hashes: Mapping[str, list[str]]) -> dict[str, list[HashType]]:
    """:func:`lockgate.supplychain.lockfiles.parse_lock_hashes` output (or any mapping of
    ``name`` / ``name==version`` to hash strings) under canonical keys, as HashType values."""
    out: dict[str, list[HashType]] = {}
    for key, values in hashes.items():
        name, sep, ver = key.partition("==")
        ckey = lock_key(name, ver) if sep else canonicalize_name(name)
        bucket = out.setdefault(ckey, [])
        for value in values:
            h = hash_type(value, f"lock hash for {key}")
            if h not in bucket:
                bucket.append(h)
    return out


def hash_type(text: str, where: str) -> HashType:
    """``"<algorithm>:<hex>"`` as a HashType; InvalidInputError naming ``where`` otherwise."""
    alg, digest = normalize_hash(text, where)
    return HashType(alg=_HASH_ALGS[alg], content=digest)


# -- native pieces and environment -------------------------------------------------------------
def _available(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    return None if not text or text.startswith("unavailable:") else text


def _section(env: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = env.get(key)
    return value if isinstance(value, Mapping) else {}


def native_components(env: Mapping[str, Any]) -> dict[str, Component]:
    """CUDA, cuDNN and the GPU driver the environment names, keyed cuda/cudnn/driver."""
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


def native_dependencies(
    bom: Bom, env: Mapping[str, Any], libs: Mapping[str, Component],
    runtime: Component | None, natives: Mapping[str, Component],
) -> None:
    """Register CUDA on the driver, torch on CUDA/cuDNN, and the runtime on all three when it
    ran on a GPU provider."""
    cuda, cudnn, driver = (natives.get(k) for k in ("cuda", "cudnn", "driver"))
    if cuda is not None and driver is not None:
        bom.register_dependency(cuda, [driver])
    torch = libs.get("torch")
    if torch is not None:
        bom.register_dependency(torch, [c for c in (cuda, cudnn) if c is not None])
    used = _section(env, "onnxruntime").get("session_providers")
    if runtime is not None and isinstance(used, list) and set(used) & set(GPU_PROVIDERS):
        bom.register_dependency(runtime, [c for c in (cuda, cudnn, driver) if c is not None])


def provider_properties(env: Mapping[str, Any]) -> list[Property]:
    """The runtime's session and available execution providers as properties."""
    ort = _section(env, "onnxruntime")
    return [
        Property(name=f"{PREFIX}onnxruntime:{key}", value=_flat(ort[key]))
        for key in ("session_providers", "available_providers")
        if key in ort
    ]


def environment_properties(env: Mapping[str, Any]) -> list[Property]:
    """Every environment fact but the packages, as ``lockgate:environment:a.b`` properties."""
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


# -- datasets ----------------------------------------------------------------------------------
def dataset_component(spec: Mapping[str, str], index: int) -> Component:
    """The ``data`` component of dataset number ``index``; InvalidInputError for unknown keys,
    no name or a fingerprint that is not a hash."""
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
        hashes = [hash_type(text, f"dataset {name!r} fingerprint")]
    props = [Property(name=f"{PREFIX}dataset:url", value=spec["url"])] if spec.get("url") else []
    return Component(
        type=ComponentType.DATA,
        name=name,
        bom_ref=f"lockgate:dataset/{index}/{name}",
        description=spec.get("description") or None,
        hashes=hashes,
        properties=props,
    )
