"""The runtime closure: the distributions serving a version needs, told apart from the training
environment it was registered in.

    closure = runtime_closure()                 # from this process's installed distributions
    "numpy" in closure.members                  # True: onnxruntime requires it
    scoped = judged_components(bom_doc, "runtime")   # what a gate judges under that scope

The closure starts at its roots — ONNX Runtime (whichever build is installed) and lockgate itself,
whose core requirements (no extras) are what ``lockgate serve`` imports — and follows every
installed distribution's ``Requires-Dist``, markers evaluated for this interpreter and platform,
extras followed only where a requirement in the closure asks for them (``uvicorn[standard]``).
Dev tools, training frameworks and converters are reached by no such edge, so they stay out. The
model itself is the BOM's ``metadata.component`` and ships with the runtime.

In the BOM each library carries CycloneDX ``scope`` (``required`` for the runtime closure,
``excluded`` for the training environment) and the property ``lockgate:closure`` (``runtime`` or
``training``); :func:`judged_components` reads them back for the licenses and vulnerabilities
gates. A BOM written before scopes were recorded has neither: every library is judged, and the
result says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from lockgate.errors import ConfigError

if TYPE_CHECKING:
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component

__all__ = ["CLOSURE_PROPERTY", "RUNTIME_DISTS", "SCOPES", "SERVER_DIST", "Closure",
           "JudgedComponents", "RuntimeClosure", "closure_of", "closure_of_component",
           "closure_properties", "judged_components", "mark_components", "runtime_closure"]

CLOSURE_PROPERTY = "lockgate:closure"
"""The component property naming the part of the BOM a library belongs to."""

RUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                 "onnxruntime-openvino", "onnxruntime-qnn", "onnxruntime-rocm",
                 "onnxruntime-training")
"""Distributions that provide ONNX Runtime, in the order the BOM looks for one."""

SERVER_DIST = "lockgate"
"""The distribution whose core requirements serve a version."""

SCOPES = ("runtime", "all")
"""What a supply-chain gate judges: the runtime closure, or the training environment too."""


class Closure(StrEnum):
    """The part of a version's BOM a component belongs to."""

    RUNTIME = "runtime"
    TRAINING = "training"


@dataclass(frozen=True)
class RuntimeClosure:
    """The runtime closure found among installed distributions, by canonical name."""

    roots: tuple[str, ...]
    """The roots that were installed (an ONNX Runtime build, lockgate)."""
    members: frozenset[str]
    """Every installed distribution serving needs, the roots included."""
    unresolved: tuple[str, ...]
    """Requirements of the closure that no installed distribution satisfies by name."""


def runtime_closure(roots: Sequence[str] | None = None) -> RuntimeClosure:
    """The closure of ``roots`` (default: the installed ONNX Runtime build and lockgate) over
    this process's installed distributions."""
    from lockgate.supplychain.components import installed_dists

    installed = installed_dists()
    requires = {name: dist.requirements for name, dist in installed.items()}
    if roots is None:
        ort = next((n for n in RUNTIME_DISTS if n in requires), None)
        roots = [n for n in (ort, SERVER_DIST) if n is not None]
    return closure_of(roots, requires)


def closure_of(roots: Iterable[str], requires: Mapping[str, Sequence[str]]) -> RuntimeClosure:
    """The closure of ``roots`` (names, ``name[extra]`` allowed) over ``requires``: canonical
    name -> that distribution's ``Requires-Dist`` lines. Markers are evaluated for this
    interpreter; a requirement guarded by ``extra == "x"`` is followed only when the
    distribution was required with extra ``x``."""
    base: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    expanded: dict[str, set[str]] = {}
    unresolved: set[str] = set()
    queue: list[tuple[str, frozenset[str]]] = []
    found_roots: list[str] = []
    for root in roots:
        req = _parse(root)
        if req is None:
            continue
        root_name = str(canonicalize_name(req.name))
        if root_name in requires:
            found_roots.append(root_name)
            queue.append((root_name, frozenset(req.extras)))
    while queue:
        name, extras = queue.pop()
        done = expanded.get(name)
        wanted = {""} | set(extras)
        if done is not None and wanted <= done:
            continue
        new = wanted - (done or set())
        expanded[name] = (done or set()) | wanted
        for line in requires.get(name, ()):
            req = _parse(line)
            if req is None or not _applies(req, new, base):
                continue
            dep = str(canonicalize_name(req.name))
            if dep in requires:
                queue.append((dep, frozenset(req.extras)))
            else:
                unresolved.add(dep)
    return RuntimeClosure(tuple(dict.fromkeys(found_roots)), frozenset(expanded),
                          tuple(sorted(unresolved)))


def _parse(line: str) -> Requirement | None:
    try:
        return Requirement(line)
    except InvalidRequirement:  # malformed metadata: no edge rather than a failed BOM
        return None


def _applies(req: Requirement, extras: Iterable[str], base: Mapping[str, str]) -> bool:
    if req.marker is None:
        return "" in extras
    for extra in extras:
        try:
            if req.marker.evaluate({**base, "extra": extra}):
                return True
        except Exception:  # a marker this Python cannot evaluate (undefined names): no edge
            return False
    return False


def mark_components(components: Iterable[Component], part: Closure) -> None:
    """Record ``part`` on each component: CycloneDX ``scope`` and ``lockgate:closure``."""
    from cyclonedx.model import Property
    from cyclonedx.model.component import ComponentScope

    scope = ComponentScope.REQUIRED if part is Closure.RUNTIME else ComponentScope.EXCLUDED
    for component in components:
        component.scope = scope
        component.properties.add(Property(name=CLOSURE_PROPERTY, value=part.value))


def closure_properties(closure: RuntimeClosure, runtime: int, total: int) -> list[Property]:
    """The BOM metadata properties that say how the runtime closure was found."""
    from cyclonedx.model import Property

    values = {"roots": ",".join(closure.roots) or "none",
              "method": "installed Requires-Dist, markers evaluated, extras as required",
              "runtime_libraries": str(runtime), "libraries": str(total)}
    if closure.unresolved:
        values["unresolved"] = ",".join(closure.unresolved)
    return [Property(name=f"{CLOSURE_PROPERTY}:{k}", value=v) for k, v in values.items()]


# -- reading a BOM back ------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgedComponents:
    """The BOM libraries a gate judges under a scope, and how they were chosen."""

    scope: str
    components: list[dict[str, Any]]
    total: int
    """Libraries in the BOM, both parts."""
    scoped: bool
    """Whether the BOM records which part each library belongs to."""

    @property
    def note(self) -> str:
        """One phrase for the gate's message."""
        if not self.scoped:
            return (f"all {self.total} libraries judged: the BOM records no runtime closure "
                    "(written before scopes were recorded)")
        if self.scope == "all":
            return f"runtime closure and training environment, {self.total} libraries"
        return f"runtime closure, {len(self.components)} of {self.total} libraries"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "judged": len(self.components), "libraries": self.total,
                "bom_records_closure": self.scoped}


def closure_of_component(component: Mapping[str, Any]) -> Closure | None:
    """The part a BOM component belongs to, from its property, else its CycloneDX scope."""
    for prop in component.get("properties") or ():
        if isinstance(prop, Mapping) and prop.get("name") == CLOSURE_PROPERTY:
            try:
                return Closure(str(prop.get("value")))
            except ValueError:
                return None
    scope = component.get("scope")
    if scope == "required":
        return Closure.RUNTIME
    if scope in ("excluded", "optional"):
        return Closure.TRAINING
    return None


def judged_components(doc: Mapping[str, Any], scope: str) -> JudgedComponents:
    """The BOM's libraries a gate with ``scope`` (``runtime`` or ``all``) judges. A BOM whose
    libraries record no part gives every library, flagged ``scoped=False``."""
    if scope not in SCOPES:
        raise ConfigError(f"scope {scope!r} is not one of {list(SCOPES)}",
                          hint='scope = "runtime" judges what ships, "all" the training '
                               "environment too")
    libraries = [dict(c) for c in doc.get("components") or () if isinstance(c, Mapping)
                 and c.get("type") == "library"]
    parts = [closure_of_component(c) for c in libraries]
    scoped = any(p is not None for p in parts)
    if scope == "all" or not scoped:
        chosen = libraries
    else:  # a library of a scoped BOM with no part recorded is judged: fail towards checking
        chosen = [c for c, p in zip(libraries, parts, strict=True) if p is not Closure.TRAINING]
    return JudgedComponents(scope, chosen, len(libraries), scoped)
