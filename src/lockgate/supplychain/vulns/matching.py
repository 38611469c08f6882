"""Which OSV records affect an installed ``name==version``: :class:`VulnIndex`, one dict look-up
per package.

Matching follows the evaluation pseudocode of the OSV schema (``docs/schema.md``, "Evaluation"):
a version is affected when ``affected[].versions`` lists it, or when one ``ECOSYSTEM``/``SEMVER``
range, walked in sorted event order (``introduced``/``fixed``/``last_affected``) and bounded by its
``limit`` events, leaves it vulnerable. ``GIT`` ranges are ignored. Versions are PEP 440
(``packaging``; SEMVER events are read as PEP 440 too), names are PEP 503-normalised, and a local
label (``2.1.0+cu121``) is dropped before comparing: a local build has its release's flaws.

Fail closed wherever a silent "not affected" would be a guess:

- an installed version or a range event that is not PEP 440, on a record naming the package, is a
  finding with status ``unparseable`` (gate it as affected). ``versions`` lists are compared as
  strings as well, so an odd entry there flags nothing by itself;
- a range without an ``introduced`` event (invalid per the schema) starts at ``"0"``;
- a record nobody rated is ``UNKNOWN``, which ranks with ``CRITICAL``.

Records that alias each other (GHSA-x and PYSEC-y) become one finding per package: the most
severe record with a known level, carrying the others' ids as aliases.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from lockgate.supplychain.vulns.records import Affected, AffectedRange, OsvRecord
from lockgate.supplychain.vulns.severity import Severity, rate, severity_rank

__all__ = ["Finding", "FindingStatus", "VulnIndex"]


class FindingStatus(enum.StrEnum):
    AFFECTED = "affected"
    UNPARSEABLE = "unparseable"
    """A version could not be compared: gate it as affected."""


@dataclass(frozen=True)
class Finding:
    """One vulnerability affecting one installed distribution.

    ``fixed_versions`` are the ``fixed`` events above the installed version (all of them when it
    cannot be compared). ``reason`` is ``"range"``, ``"versions list"`` or
    ``"unparseable version: ..."``.
    """

    package: str
    version: str
    vuln_id: str
    aliases: tuple[str, ...]
    severity: Severity
    score: float | None
    fixed_versions: tuple[str, ...]
    summary: str
    reason: str
    status: FindingStatus = FindingStatus.AFFECTED

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version, "id": self.vuln_id,
                "aliases": list(self.aliases), "severity": self.severity.value,
                "score": self.score, "fixed_versions": list(self.fixed_versions),
                "summary": self.summary, "reason": self.reason, "status": self.status.value}


# A bound of None is "0" for introduced (before every version) or "*" for limit (after every one).
_Bound: TypeAlias = Version | None


@dataclass(frozen=True)
class _Range:
    events: tuple[tuple[str, _Bound], ...]  # introduced/fixed/last_affected, sorted
    limits: tuple[_Bound, ...]
    fixed: tuple[tuple[str, Version | None], ...]  # None: not PEP 440, shown all the same
    problem: str | None  # the first event that is not PEP 440

    def contains(self, v: Version) -> bool:
        if self.limits and not any(lim is None or v < lim for lim in self.limits):
            return False
        vulnerable = False
        for kind, bound in self.events:
            if kind == "introduced":
                if bound is None or v >= bound:
                    vulnerable = True
            elif kind == "fixed":
                if bound is not None and v >= bound:
                    vulnerable = False
            elif bound is not None and v > bound:  # last_affected
                vulnerable = False
        return vulnerable


@dataclass(frozen=True)
class _Candidate:
    """Everything one record says about one package, compiled for matching."""

    record: OsvRecord
    versions_raw: frozenset[str]
    versions: frozenset[Version]
    ranges: tuple[_Range, ...]
    level: Severity
    score: float | None


@functools.lru_cache(maxsize=1 << 16)
def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _compile_range(rng: AffectedRange, rid: str) -> _Range:
    events: list[tuple[int, Version, int, str, _Bound]] = []
    limits: list[_Bound] = []
    fixed: list[tuple[str, Version | None]] = []
    problem: str | None = None
    for position, evt in enumerate(rng.events):
        if evt.kind == "introduced" and evt.version == "0":
            events.append((0, Version("0"), position, evt.kind, None))
            continue
        if evt.kind == "limit" and "*" in evt.version:
            limits.append(None)
            continue
        parsed = _parse_version(evt.version)
        if evt.kind == "fixed":
            fixed.append((evt.version, parsed))
        if parsed is None:
            problem = problem or f"{evt.kind} {evt.version!r} of {rid} is not a PEP 440 version"
            continue
        if evt.kind == "limit":
            limits.append(parsed)
            continue
        events.append((1, parsed, position, evt.kind, parsed))
    if not any(e[3] == "introduced" for e in events):
        events.append((0, Version("0"), -1, "introduced", None))  # fail closed: from the start
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return _Range(tuple((kind, bound) for *_, kind, bound in events), tuple(limits),
                  tuple(fixed), problem)


def _compile(record: OsvRecord, entries: Sequence[Affected]) -> _Candidate:
    raw = frozenset(v for a in entries for v in a.versions)
    parsed = frozenset(p for v in raw if (p := _parse_version(v)) is not None)
    ranges = tuple(_compile_range(r, record.id)
                   for a in entries for r in a.ranges if r.type in ("ECOSYSTEM", "SEMVER"))
    own = tuple(s for a in entries for s in a.severity)
    level, score = (rate(record.database_severity, own) if own and not record.severity
                    else (record.level, record.score))
    return _Candidate(record, raw, parsed, ranges, level, score)


class VulnIndex:
    """Records by PEP 503 package name; withdrawn records and other ecosystems are left out.

    Building is a dict of lists; a package's records are compiled (versions parsed, events
    sorted) the first time it is matched, so a 20k-record snapshot indexes in milliseconds.
    """

    def __init__(self, records: Iterable[OsvRecord]) -> None:
        self._pending: dict[str, list[tuple[OsvRecord, list[Affected]]]] = {}
        self._compiled: dict[str, list[_Candidate]] = {}
        self._count = 0
        for record in records:
            if record.withdrawn is not None:
                continue
            by_name: dict[str, list[Affected]] = {}
            for aff in record.affected:
                if aff.is_pypi:
                    by_name.setdefault(canonicalize_name(aff.name), []).append(aff)
            self._count += bool(by_name)
            for name, entries in by_name.items():
                self._pending.setdefault(name, []).append((record, entries))

    def _candidates(self, key: str) -> list[_Candidate]:
        found = self._compiled.get(key)
        if found is None:
            found = [_compile(rec, entries) for rec, entries in self._pending.get(key, ())]
            self._compiled[key] = found
        return found

    def __len__(self) -> int:
        return self._count

    @property
    def packages(self) -> frozenset[str]:
        return frozenset(self._pending)

    def match(self, name: str, version: str) -> list[Finding]:
        """Findings for one installed distribution, alias duplicates merged, sorted by id."""
        installed = _parse_version(version.strip())
        public = Version(installed.public) if installed is not None else None
        found = [f for c in self._candidates(canonicalize_name(name))
                 if (f := _evaluate(c, name, version, public)) is not None]
        return sorted(_merge_aliases(found), key=lambda f: f.vuln_id)

    def scan(self, distributions: Mapping[str, str]) -> list[Finding]:
        """Findings for every ``name -> version`` (e.g. ``installed_distributions()``)."""
        out: list[Finding] = []
        for name, version in sorted(distributions.items(),
                                    key=lambda kv: (canonicalize_name(kv[0]), kv[1])):
            out.extend(self.match(name, version))
        return out


def _fixed_above(ranges: Iterable[_Range], v: Version | None) -> tuple[str, ...]:
    found = {raw for rng in ranges for raw, parsed in rng.fixed
             if v is None or parsed is None or parsed > v}
    return tuple(sorted(found, key=_version_key))


def _evaluate(c: _Candidate, name: str, version: str, v: Version | None) -> Finding | None:
    def finding(reason: str, ranges: Iterable[_Range],
                status: FindingStatus = FindingStatus.AFFECTED) -> Finding:
        return Finding(
            package=name, version=version, vuln_id=c.record.id, aliases=c.record.aliases,
            severity=c.level, score=c.score, fixed_versions=_fixed_above(ranges, v),
            summary=c.record.summary, reason=reason, status=status,
        )

    if version.strip() in c.versions_raw or (v is not None and v in c.versions):
        return finding("versions list", c.ranges)
    if v is None:
        if not c.ranges:
            return None  # only a versions list, and the string is not in it
        return finding(f"unparseable version: installed {version!r} is not a PEP 440 version",
                       c.ranges, FindingStatus.UNPARSEABLE)
    matched = [r for r in c.ranges if r.problem is None and r.contains(v)]
    if matched:
        return finding("range", matched)
    problem = next((r.problem for r in c.ranges if r.problem is not None), None)
    if problem is not None:
        return finding(f"unparseable version: {problem}", c.ranges, FindingStatus.UNPARSEABLE)
    return None


def _merge_aliases(findings: list[Finding]) -> list[Finding]:
    """Merge findings whose ids or aliases overlap into the most telling one of each group."""
    groups: list[tuple[set[str], list[Finding]]] = []
    for f in findings:
        keys = {f.vuln_id, *f.aliases}
        merged_keys, merged = set(keys), [f]
        for g_keys, g_members in groups:
            if g_keys & keys:
                merged_keys |= g_keys
                merged.extend(g_members)
        groups = [g for g in groups if not g[0] & keys]
        groups.append((merged_keys, merged))
    out = []
    for keys, members in groups:
        best = min(members, key=lambda f: (f.status is not FindingStatus.AFFECTED,
                                           f.severity is Severity.UNKNOWN,
                                           -severity_rank(f.severity), f.vuln_id))
        if len(members) == 1:
            out.append(best)
            continue
        fixed = {x for f in members for x in f.fixed_versions}
        scores = [f.score for f in members if f.score is not None]
        out.append(replace(
            best, aliases=tuple(sorted(keys - {best.vuln_id})),
            score=best.score if best.score is not None else max(scores, default=None),
            fixed_versions=tuple(sorted(fixed, key=_version_key)),
        ))
    return out


def _version_key(text: str) -> tuple[int, Version, str]:
    parsed = _parse_version(text)
    return (0, parsed, text) if parsed is not None else (1, Version("0"), text)
