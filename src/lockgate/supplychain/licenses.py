"""License outcomes for installed distributions: read, normalise to SPDX, judge against a policy.

Reading order for one distribution (the first that says something wins):

1. ``License-Expression`` (PEP 639): an SPDX expression. When it does not parse, the answer is
   "needs review"; the older fields are not consulted behind the author's back.
2. ``Classifier: License :: ...`` trove classifiers, mapped to SPDX ids by a table. Several are
   joined with ``AND``: classifiers cannot say "or", so each must be acceptable. A classifier that
   names a family, not a license (``BSD License``, ``GNU General Public License (GPL)``, bare
   ``OSI Approved``), needs review unless the ``License`` field names a license of that family
   and nothing the classifiers do not (``BSD License`` + ``License: BSD-3-Clause`` is
   ``BSD-3-Clause``); a field that covers every classifier replaces them, since it can say OR.
3. The free-text ``License`` field: an SPDX expression, a common spelling (``Apache 2.0``,
   ``3-Clause BSD License``, ``PSFL``) or a full license text recognised by its wording (the
   license whose wording comes first wins, so bundled third-party notices further down do not).
   Texts of the GNU licenses cannot say "only" or "or later"; they are read as ``-only``.
4. When the classifiers name only a family (``BSD License``) that the ``License`` field does not
   narrow, or no field says anything usable: the license files the distribution ships
   (``License-File`` entries, ``.dist-info/licenses/``, ``LICENSE*``/``COPYING*`` in the
   ``.dist-info`` folder), matched by :mod:`lockgate.supplychain.license_texts`. Every license a
   file holds counts (joined with ``AND``); the family the classifiers name must be among them.

Each :class:`LicenseInfo` lists the evidence it was read from (field and value, or file and the
ids it matched). Per-package decisions of the policy (:mod:`lockgate.supplychain.license_decisions`)
are applied over the findings.

Everything is normalised with ``license-expression``'s SPDX licensing (``mit`` is ``MIT``,
``GPL-2.0+`` is ``GPL-2.0-or-later``); ``LicenseRef-*`` ids are kept as written.

Policy semantics (:func:`evaluate`): an id in ``denied`` is DENIED, in ``allowed`` ALLOWED, in
neither NEEDS_REVIEW; ``WITH`` exceptions are judged by their base license. ``A OR B`` takes the
best option (ALLOWED if any option is, DENIED only if every option is); ``A AND B`` takes the worst
(DENIED if any part is, ALLOWED only if every part is). No usable license is NEEDS_REVIEW.

Default policy (:data:`DEFAULT_LICENSE_POLICY`): permissive licenses are allowed. The licenses
whose obligations trigger on network use (AGPL, SSPL) are denied, because serving a model is
network use, and so are source-available and non-commercial licenses (BUSL, Elastic, CC-BY-NC).
GPL, LGPL, EPL, CDDL and other copyleft licenses need review: whether they bind depends on how the
model is shipped, which a person decides.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.metadata
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import license_expression  # type: ignore[import-untyped]
from packaging.utils import canonicalize_name

from lockgate.config.spdx import license_id as _policy_id
from lockgate.config.spdx import license_lists
from lockgate.config.spdx import licensing as _licensing
from lockgate.config.spdx import parse_expression as _parse
from lockgate.errors import InvalidInputError
from lockgate.supplychain.license_texts import (
    LicenseFile,
    first_license,
    license_files,
    without_implied,
)

__all__ = [
    "DEFAULT_LICENSE_POLICY",
    "EVIDENCE_PROPERTY",
    "LicenseFinding",
    "LicenseInfo",
    "LicenseOutcome",
    "LicensePolicy",
    "LicenseSource",
    "assess",
    "evaluate",
    "info_from_bom",
    "license_of",
    "normalize_expression",
    "policy_for",
    "scan_licenses",
]


class LicenseSource(enum.StrEnum):
    """Which metadata field the license was read from."""

    EXPRESSION = "expression"
    CLASSIFIER = "classifier"
    LICENSE_FIELD = "license-field"
    LICENSE_FILE = "license-file"
    DECISION = "decision"
    NONE = "none"


class LicenseOutcome(enum.StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    NEEDS_REVIEW = "needs-review"


@dataclass(frozen=True)
class LicenseInfo:
    """What one distribution declares. ``expression`` is a normalised SPDX expression, or None
    with ``problem`` saying why; ``declared`` is what the metadata said (shortened);
    ``evidence`` what was read (``Classifier: BSD License``, ``license file LICENSE:
    BSD-3-Clause``)."""

    name: str
    version: str
    expression: str | None
    source: LicenseSource
    declared: str = ""
    problem: str | None = None
    evidence: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "expression": self.expression,
                "source": self.source.value, "declared": self.declared, "problem": self.problem,
                "evidence": list(self.evidence)}


@dataclass(frozen=True)
class LicensePolicy:
    """SPDX ids to allow and to deny. Ids are normalised (``apache-2.0`` is ``Apache-2.0``,
    ``GPL-2.0`` is ``GPL-2.0-only``); an unknown id or one in both sets is an
    :class:`InvalidInputError`."""

    allowed: frozenset[str]
    denied: frozenset[str]

    def __post_init__(self) -> None:
        allowed, denied = license_lists(self.allowed, self.denied)
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "denied", denied)

    @functools.cached_property
    def _keys(self) -> tuple[frozenset[str], frozenset[str]]:
        return (frozenset(i.casefold() for i in self.allowed),
                frozenset(i.casefold() for i in self.denied))

    def judge(self, license_id: str) -> LicenseOutcome:
        """The outcome of a single SPDX id (case-insensitive)."""
        allowed, denied = self._keys
        if license_id.casefold() in denied:
            return LicenseOutcome.DENIED
        if license_id.casefold() in allowed:
            return LicenseOutcome.ALLOWED
        return LicenseOutcome.NEEDS_REVIEW


@dataclass(frozen=True)
class LicenseFinding:
    """The outcome for one distribution; ``decision`` says which policy decision was applied
    (or why one was not)."""

    info: LicenseInfo
    outcome: LicenseOutcome
    reason: str
    decision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.info.to_dict(), "outcome": self.outcome.value, "reason": self.reason,
                "decision": self.decision}


# -- SPDX --------------------------------------------------------------------------------------


def normalize_expression(text: str) -> str:
    """``text`` as a normalised SPDX expression (``mit or apache-2.0`` is ``MIT OR Apache-2.0``);
    :class:`InvalidInputError` when it is not one."""
    rendered: str = _parse(text.strip()).render()
    return rendered


def _try_expression(text: str) -> str | None:
    try:
        return normalize_expression(text)
    except InvalidInputError:
        return None


def _ids(expression: str) -> list[str]:
    """Base license ids of an expression (exceptions left out), in order."""
    symbols = _licensing().license_symbols(_parse(expression), decompose=True)
    return [s.key for s in symbols if not getattr(s, "is_exception", False)]


# -- reading metadata --------------------------------------------------------------------------

_CLASSIFIERS = {
    "Apache Software License": "Apache-2.0",
    "Attribution Assurance License": "AAL",
    "Blue Oak Model License (BlueOak-1.0.0)": "BlueOak-1.0.0",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
    "CEA CNRS Inria Logiciel Libre License, version 2.1 (CeCILL-2.1)": "CECILL-2.1",
    "CeCILL-B Free Software License Agreement (CECILL-B)": "CECILL-B",
    "CeCILL-C Free Software License Agreement (CECILL-C)": "CECILL-C",
    "Common Development and Distribution License 1.0 (CDDL-1.0)": "CDDL-1.0",
    "Common Public License": "CPL-1.0",
    "Eclipse Public License 1.0 (EPL-1.0)": "EPL-1.0",
    "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "Educational Community License, Version 2.0 (ECL-2.0)": "ECL-2.0",
    "European Union Public Licence 1.0 (EUPL 1.0)": "EUPL-1.0",
    "European Union Public Licence 1.1 (EUPL 1.1)": "EUPL-1.1",
    "European Union Public Licence 1.2 (EUPL 1.2)": "EUPL-1.2",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "IBM Public License": "IPL-1.0",
    "ISC License (ISCL)": "ISC",
    "Intel Open Source License": "Intel",
    "MIT License": "MIT",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "MirOS License (MirOS)": "MirOS",
    "Mozilla Public License 1.0 (MPL)": "MPL-1.0",
    "Mozilla Public License 1.1 (MPL 1.1)": "MPL-1.1",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "Mulan Permissive Software License v2 (MulanPSL-2.0)": "MulanPSL-2.0",
    "Open Software License 3.0 (OSL-3.0)": "OSL-3.0",
    "PostgreSQL License": "PostgreSQL",
    "Python License (CNRI Python License)": "CNRI-Python",
    "Python Software Foundation License": "PSF-2.0",
    "Qt Public License (QPL)": "QPL-1.0",
    "SIL Open Font License 1.1 (OFL-1.1)": "OFL-1.1",
    "Sleepycat License": "Sleepycat",
    "Sun Public License": "SPL-1.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "Universal Permissive License (UPL)": "UPL-1.0",
    "University of Illinois/NCSA Open Source License": "NCSA",
    "Vovida Software License 1.0": "VSL-1.0",
    "W3C License": "W3C",
    "Zero-Clause BSD (0BSD)": "0BSD",
    "Zope Public License": "ZPL-2.1",
    "zlib/libpng License": "Zlib",
}
"""Last segment of a ``License ::`` classifier -> SPDX id."""

_FAMILIES: dict[str, tuple[str, ...]] = {
    "Academic Free License (AFL)": ("AFL-",),
    "Artistic License": ("Artistic-",),
    "BSD License": ("BSD-", "0BSD", "ISC"),
    "Eiffel Forum License": ("EFL-",),
    "GNU Free Documentation License (FDL)": ("GFDL-",),
    "GNU General Public License (GPL)": ("GPL-",),
    "GNU Lesser General Public License v2 (LGPLv2)": ("LGPL-2.0", "LGPL-2.1"),
    "GNU Library or Lesser General Public License (LGPL)": ("LGPL-",),
    "OSI Approved": ("",),
    "DFSG approved": ("",),
}
"""Classifiers that name a family: the ``License`` field may pick a member by id prefix."""

_ALIASES = {
    "mit": "MIT", "expat": "MIT", "mit/x11": "MIT",
    "apache": "Apache-2.0", "apache 2": "Apache-2.0", "apache 2.0": "Apache-2.0",
    "apache-2": "Apache-2.0", "apache2": "Apache-2.0", "apache v2": "Apache-2.0",
    "apache v2.0": "Apache-2.0", "apache license": "Apache-2.0",
    "apache license 2.0": "Apache-2.0", "apache license v2": "Apache-2.0",
    "apache license v2.0": "Apache-2.0", "apache license version 2": "Apache-2.0",
    "apache license version 2.0": "Apache-2.0", "apache software": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0", "asl 2.0": "Apache-2.0",
    "bsd 3-clause": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause", "bsd-3": "BSD-3-Clause",
    "bsd 3 clause": "BSD-3-Clause", "new bsd": "BSD-3-Clause", "modified bsd": "BSD-3-Clause",
    "revised bsd": "BSD-3-Clause", "bsd 2-clause": "BSD-2-Clause", "2-clause bsd": "BSD-2-Clause",
    "bsd-2": "BSD-2-Clause", "simplified bsd": "BSD-2-Clause", "freebsd": "BSD-2-Clause",
    "psf": "PSF-2.0", "psfl": "PSF-2.0", "psf 2.0": "PSF-2.0",
    "python software foundation": "PSF-2.0", "isc": "ISC", "iscl": "ISC",
    "mpl 2.0": "MPL-2.0", "mpl2": "MPL-2.0", "mpl v2": "MPL-2.0",
    "mozilla public license 2.0": "MPL-2.0", "mozilla public license version 2.0": "MPL-2.0",
    "gplv2": "GPL-2.0-only", "gplv2+": "GPL-2.0-or-later", "gplv3": "GPL-3.0-only",
    "gplv3+": "GPL-3.0-or-later", "lgplv3": "LGPL-3.0-only", "lgplv3+": "LGPL-3.0-or-later",
    "lgplv2.1": "LGPL-2.1-only", "lgplv2.1+": "LGPL-2.1-or-later", "agplv3": "AGPL-3.0-only",
    "agplv3+": "AGPL-3.0-or-later", "zlib/libpng": "Zlib", "boost": "BSL-1.0",
    "boost software license 1.0": "BSL-1.0", "cc0": "CC0-1.0", "cc0 1.0": "CC0-1.0",
}
"""Common free-text spellings (casefolded, punctuation and a trailing "license" dropped)."""

_NOTHING = frozenset({"", "unknown", "none", "n/a", "na", "-", "license", "see license",
                      "see license file", "license.txt", "see license.txt", "license file"})

def _field(dist: importlib.metadata.Distribution, key: str) -> list[str]:
    try:
        meta = dist.metadata
    except (OSError, TypeError, ValueError):  # a broken install without readable metadata
        return []
    values = meta.get_all(key, None) if meta is not None else None
    return [str(v) for v in values or ()]


def _unfold(text: str) -> str:
    """A multi-line metadata value with its continuation indent (and ``|`` marks) removed."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\n".join(line[1:] if line.startswith("|") else line for line in lines).strip()


def _short(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def license_of(dist: importlib.metadata.Distribution) -> LicenseInfo:
    """The license ``dist`` declares, read as the module docstring describes."""
    name = next(iter(_field(dist, "Name")), "") or "<unnamed>"
    version = next(iter(_field(dist, "Version")), "")
    expression = next(iter(_field(dist, "License-Expression")), "").strip()
    if expression:
        evidence = (f"License-Expression: {_short(expression, 120)}",)
        try:
            return LicenseInfo(name, version, normalize_expression(expression),
                               LicenseSource.EXPRESSION, _short(expression), None, evidence)
        except InvalidInputError as exc:
            return LicenseInfo(name, version, None, LicenseSource.EXPRESSION, _short(expression),
                               f"License-Expression: {exc.message}", evidence)
    field_text = _unfold(next(iter(_field(dist, "License")), ""))
    has_field = field_text.casefold() not in _NOTHING
    classifiers = [c for c in _field(dist, "Classifier")
                   if c.replace(" ", "").startswith("License::")]
    seen = [f"Classifier: {c.split('::', 1)[-1].strip()}" for c in classifiers]
    seen += [f"License: {_short(field_text, 120)}"] if has_field else []
    ids: list[str] = []
    families: list[str] = []
    if classifiers:
        declared = _short("; ".join(c.split("::", 1)[-1].strip() for c in classifiers))
        expr, problem, ids, families = _from_classifiers(classifiers, field_text)
        if expr is not None or not families:
            return LicenseInfo(name, version, expr, LicenseSource.CLASSIFIER, declared, problem,
                               tuple(seen))
    elif has_field:
        declared = _short(field_text)
        expr, problem = _from_text(field_text)
        if expr is not None:
            return LicenseInfo(name, version, expr, LicenseSource.LICENSE_FIELD, declared, None,
                               tuple(seen))
    else:
        declared = ""
        problem = "no License-Expression, license classifier or License field"
    files = license_files(dist)
    seen += [f"license file {f.path}: {' AND '.join(f.ids) or 'not recognised'}" for f in files]
    expr, file_problem = _from_files(files, ids, families)
    if expr is not None:
        return LicenseInfo(name, version, expr, LicenseSource.LICENSE_FILE, declared, None,
                           tuple(seen))
    source = (LicenseSource.CLASSIFIER if classifiers
              else LicenseSource.LICENSE_FIELD if has_field else LicenseSource.NONE)
    return LicenseInfo(name, version, None, source, declared, f"{problem}; {file_problem}",
                       tuple(seen))


def _from_files(files: Sequence[LicenseFile], ids: Sequence[str], families: Sequence[str]
                ) -> tuple[str | None, str]:
    """The expression the license files give, with the classifiers' ids; the families the
    classifiers name must be among the files' licenses. None and why not otherwise."""
    if not files:
        return None, "the distribution ships no license file"
    found = without_implied(list(dict.fromkeys(i for f in files for i in f.ids)))
    if not found:
        return None, ("its license files (" + ", ".join(f.path for f in files)
                      + ") hold no license text that was recognised")
    for family in families:
        if not any(i.startswith(_FAMILIES[family]) for i in found):
            return None, (f"its license files hold {' AND '.join(found)}, which classifier "
                          f"{family!r} does not name")
    return normalize_expression(" AND ".join(dict.fromkeys([*ids, *found]))), ""


def info_from_bom(component: Mapping[str, Any]) -> LicenseInfo:
    """The :class:`LicenseInfo` a lockgate BOM library component records (see
    :mod:`lockgate.supplychain.components`), so a signed BOM can be judged under today's policy."""
    name = str(component.get("name", "")) or "<unnamed>"
    version = str(component.get("version", ""))
    props = {str(p.get("name")): str(p.get("value", ""))
             for p in component.get("properties", []) if isinstance(p, Mapping)}
    try:
        source = LicenseSource(props.get("lockgate:license:source", "none"))
    except ValueError:
        source = LicenseSource.NONE
    problem = props.get("lockgate:license:problem") or None
    info = _bom_license(component, name, version, source, problem)
    evidence = tuple(str(p.get("value", "")) for p in component.get("properties", [])
                     if isinstance(p, Mapping) and p.get("name") == EVIDENCE_PROPERTY)
    return dataclasses.replace(info, evidence=evidence) if evidence else info


EVIDENCE_PROPERTY = "lockgate:license:evidence"
"""The BOM property (one per item) that records the evidence a library's license was read
from."""


def _bom_license(component: Mapping[str, Any], name: str, version: str, source: LicenseSource,
                 problem: str | None) -> LicenseInfo:
    for entry in component.get("licenses", []):
        if not isinstance(entry, Mapping):
            continue
        if "expression" in entry:
            text = str(entry["expression"])
            try:
                return LicenseInfo(name, version, normalize_expression(text), source,
                                   _short(text))
            except InvalidInputError as exc:
                return LicenseInfo(name, version, None, source, _short(text), exc.message)
        lic = entry.get("license")
        if isinstance(lic, Mapping):
            if "id" in lic:
                text = str(lic["id"])
                return LicenseInfo(name, version, normalize_expression(text), source, text)
            declared = str(lic.get("name", ""))
            return LicenseInfo(name, version, None, source, _short(declared),
                               problem or f"{declared!r} is not an SPDX expression")
    return LicenseInfo(name, version, None, LicenseSource.NONE, "",
                       problem or "the BOM records no license")


def _from_classifiers(classifiers: Sequence[str], field_text: str
                      ) -> tuple[str | None, str | None, list[str], list[str]]:
    """The expression, or None and why not; then the classifiers' SPDX ids and the families
    neither they nor the License field narrow (empty when another problem stands)."""
    ids: list[str] = []
    families: list[str] = []
    problems: list[str] = []
    for classifier in classifiers:
        last = classifier.split("::")[-1].strip()
        spdx = _CLASSIFIERS.get(last)
        if spdx is not None:
            ids.append(spdx)
        elif last in _FAMILIES:
            families.append(last)
        else:
            problems.append(f"classifier {last!r} has no SPDX id")
    if ids or problems:  # a bare "OSI Approved" next to a real license adds nothing
        families = [f for f in families if _FAMILIES[f] != ("",)]
    text_expr = None
    if families and field_text.casefold() not in _NOTHING:
        text_expr = _from_text(field_text)[0]
    text_ids = set(_ids(text_expr)) if text_expr else set()
    open_families = []
    for family in families:
        # The License field picks a member of the family, and names nothing the classifiers
        # do not (it may still say "OR" where classifiers cannot).
        prefixes = _FAMILIES[family]
        if not (any(i.startswith(prefixes) for i in text_ids)
                and all(i.startswith(prefixes) or i in ids for i in text_ids)):
            open_families.append(family)
    if problems:
        return None, "; ".join(problems), ids, []
    if open_families:
        return None, "; ".join(f"classifier {f!r} names no single license and the License "
                               "field does not say which" for f in open_families), ids, \
            open_families
    if text_expr and set(ids) <= text_ids:
        return text_expr, None, ids, []
    parts = list(dict.fromkeys(ids + ([f"({text_expr})"] if text_expr else [])))
    return normalize_expression(" AND ".join(parts)), None, ids, []


def _alias_key(text: str) -> str:
    key = re.sub(r"\s*\([^()]*\)\s*$", "", text.casefold())  # "ISC License (ISCL)"
    key = re.sub(r"[(),;:\"']", " ", key)
    key = re.sub(r"\s+", " ", key).strip()
    key = re.sub(r"^the ", "", key)
    return re.sub(r" licen[cs]e$", "", key)


def _from_text(text: str) -> tuple[str | None, str | None]:
    """An SPDX expression from a free-text License field, or None and why not."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    found = None
    if len(first) <= 80:  # a name or an expression, possibly the title of a full text
        found = _try_expression(first) or _ALIASES.get(_alias_key(first))
    found = found or first_license(text)
    if found:
        return normalize_expression(found), None
    if len(lines) <= 1:
        return None, f"License field {_short(first, 80)!r} is not a known license name"
    return None, "License field holds a license text that was not recognised"


# -- policy ------------------------------------------------------------------------------------


def _judge(node: Any, policy: LicensePolicy) -> LicenseOutcome:
    if isinstance(node, license_expression.LicenseWithExceptionSymbol):
        return policy.judge(node.license_symbol.key)
    if isinstance(node, license_expression.LicenseSymbol):
        return policy.judge(node.key)
    results = [_judge(arg, policy) for arg in node.args]
    if isinstance(node, license_expression.OR):
        for best in (LicenseOutcome.ALLOWED, LicenseOutcome.NEEDS_REVIEW):
            if best in results:
                return best
        return LicenseOutcome.DENIED
    if isinstance(node, license_expression.AND):
        for worst in (LicenseOutcome.DENIED, LicenseOutcome.NEEDS_REVIEW):
            if worst in results:
                return worst
        return LicenseOutcome.ALLOWED
    return LicenseOutcome.NEEDS_REVIEW  # an operator we do not know: fail closed


def assess(info: LicenseInfo, policy: LicensePolicy | None = None) -> LicenseFinding:
    """The outcome for ``info`` under ``policy`` (default :data:`DEFAULT_LICENSE_POLICY`), with a
    one-line reason."""
    policy = policy or DEFAULT_LICENSE_POLICY
    if info.expression is None:
        return LicenseFinding(info, LicenseOutcome.NEEDS_REVIEW,
                              f"needs review: {info.problem or 'no license'}")
    try:
        outcome = _judge(_parse(info.expression), policy)
    except InvalidInputError as exc:
        return LicenseFinding(info, LicenseOutcome.NEEDS_REVIEW, f"needs review: {exc.message}")
    ids = list(dict.fromkeys(_ids(info.expression)))
    by = {o: [i for i in ids if policy.judge(i) is o] for o in LicenseOutcome}
    if outcome is LicenseOutcome.ALLOWED:
        reason = f"allowed: {info.expression}"
    elif outcome is LicenseOutcome.DENIED:
        reason = f"denied: {', '.join(by[LicenseOutcome.DENIED])}"
    else:
        unknown = ", ".join(by[LicenseOutcome.NEEDS_REVIEW]) or info.expression
        reason = f"needs review: {unknown} in neither list"
    return LicenseFinding(info, outcome, reason)


def evaluate(info: LicenseInfo, policy: LicensePolicy | None = None) -> LicenseOutcome:
    """ALLOWED, DENIED or NEEDS_REVIEW for ``info`` under ``policy`` (see the module docstring)."""
    return assess(info, policy).outcome


def scan_licenses(
    dists: Iterable[importlib.metadata.Distribution] | None = None,
    *,
    policy: LicensePolicy | None = None,
) -> list[LicenseFinding]:
    """One finding per distribution (default: this environment's), first one per PEP 503 name
    (the one Python imports), sorted by name. Distributions without a name are skipped."""
    seen: dict[str, LicenseFinding] = {}
    for dist in importlib.metadata.distributions() if dists is None else dists:
        name = next(iter(_field(dist, "Name")), "").strip()
        if name and canonicalize_name(name) not in seen:
            seen[canonicalize_name(name)] = assess(license_of(dist), policy)
    return [seen[k] for k in sorted(seen)]


DEFAULT_LICENSE_POLICY = LicensePolicy(
    allowed=frozenset({
        "0BSD", "Apache-2.0", "BlueOak-1.0.0", "BSD-2-Clause", "BSD-3-Clause", "BSL-1.0",
        "CC0-1.0", "CNRI-Python", "HPND", "ISC", "MIT", "MIT-0", "MIT-CMU", "MPL-2.0", "NCSA",
        "PSF-2.0", "Python-2.0", "Python-2.0.1", "TCL", "Unicode-3.0", "Unicode-DFS-2016",
        "Unlicense", "UPL-1.0", "X11", "Zlib", "ZPL-2.0", "ZPL-2.1",
    }),
    denied=frozenset({
        "AGPL-1.0-only", "AGPL-1.0-or-later", "AGPL-3.0-only", "AGPL-3.0-or-later", "BUSL-1.1",
        "CC-BY-NC-3.0", "CC-BY-NC-4.0", "CC-BY-NC-ND-3.0", "CC-BY-NC-ND-4.0", "CC-BY-NC-SA-3.0",
        "CC-BY-NC-SA-4.0", "Elastic-2.0", "SSPL-1.0",
    }),
)
"""Permissive licenses allowed; network-copyleft, source-available and non-commercial denied."""


def policy_for(allowed: frozenset[str] | None, denied: frozenset[str] | None) -> LicensePolicy:
    """The policy from configured lists; a list left out keeps the default less whatever the
    other list names (deny Apache-2.0 and it leaves the default allow list). Raises
    InvalidInputError for unknown ids, or ids in both lists."""
    default = DEFAULT_LICENSE_POLICY
    if allowed is not None and denied is not None:
        return LicensePolicy(allowed, denied)
    if denied is not None:
        keys = {_policy_id(i).casefold() for i in denied}
        return LicensePolicy(frozenset(i for i in default.allowed if i.casefold() not in keys),
                             denied)
    if allowed is not None:
        keys = {_policy_id(i).casefold() for i in allowed}
        return LicensePolicy(allowed,
                             frozenset(i for i in default.denied if i.casefold() not in keys))
    return default
