"""OSV records as typed values: :func:`parse_record` checks the essentials of one OSV JSON
document (``docs/schema.md`` of the OSV schema) and derives its severity level and score
(:mod:`lockgate.supplychain.vulns.severity`); the JSON it came from stays in ``raw``.

Errors: :func:`parse_record` and :func:`parse_timestamp` raise :class:`InvalidInputError`
naming the record id and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from packaging.utils import canonicalize_name

from lockgate.errors import InvalidInputError
from lockgate.supplychain.vulns.severity import Severity, SeverityScore, rate

__all__ = ["ECOSYSTEM", "Affected", "AffectedRange", "Event", "OsvRecord", "parse_record",
           "parse_timestamp"]

ECOSYSTEM = "PyPI"

_EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
_RANGE_TYPES = ("ECOSYSTEM", "GIT", "SEMVER")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


@dataclass(frozen=True)
class Event:
    """One range event: ``kind`` is introduced, fixed, last_affected or limit."""

    kind: str
    version: str


@dataclass(frozen=True)
class AffectedRange:
    type: str
    events: tuple[Event, ...]
    repo: str | None = None


@dataclass(frozen=True)
class Affected:
    """One ``affected[]`` entry. ``ecosystem``/``name`` are empty when it names no package."""

    ecosystem: str
    name: str
    ranges: tuple[AffectedRange, ...] = ()
    versions: tuple[str, ...] = ()
    severity: tuple[SeverityScore, ...] = ()

    @property
    def is_pypi(self) -> bool:
        return self.ecosystem.split(":", 1)[0] == ECOSYSTEM and bool(self.name)


@dataclass(frozen=True)
class OsvRecord:
    """A parsed OSV record. ``level``/``score`` are derived (see the module docstring); ``raw``
    is the JSON it came from, which is what a store keeps."""

    id: str
    modified: str
    aliases: tuple[str, ...]
    summary: str
    published: str | None
    withdrawn: str | None
    severity: tuple[SeverityScore, ...]
    level: Severity
    score: float | None
    affected: tuple[Affected, ...]
    database_severity: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def modified_at(self) -> datetime:
        return parse_timestamp(self.modified, where=f"OSV record {self.id}: modified")

    @property
    def packages(self) -> tuple[str, ...]:
        """PEP 503 names of the PyPI packages this record affects, sorted."""
        return tuple(sorted({canonicalize_name(a.name) for a in self.affected if a.is_pypi}))

    @property
    def is_pypi(self) -> bool:
        return any(a.is_pypi for a in self.affected)


def parse_record(data: Mapping[str, Any]) -> OsvRecord:
    """Check the OSV essentials of one record and parse it.

    Raises :class:`InvalidInputError` naming the record id and field: no ``id``/``modified``, a
    wrong JSON type, a timestamp that is not RFC 3339, a range of unknown type or without events,
    or an event that is not exactly one of introduced/fixed/last_affected/limit.
    """
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"OSV record: expected a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise InvalidInputError("OSV record: 'id' is missing or not a non-empty string")
    f = _Fields(rid)
    modified = f.need(data, "modified")
    times = {k: f.text(data, k) for k in ("published", "withdrawn")}
    for key, value in (("modified", modified), *times.items()):
        if value:
            parse_timestamp(value, where=f"OSV record {rid}: {key}")
    summary = (f.text(data, "summary") or "").strip()
    details = (f.text(data, "details") or "").strip()
    if not summary and details:
        summary = details.splitlines()[0][:120]
    severity = _scores(f, data, "")
    db = f.get(data, "database_specific", Mapping) or {}
    db_severity = db.get("severity") if isinstance(db.get("severity"), str) else None
    affected = tuple(_affected(f, item, f"affected[{i}]")
                     for i, item in enumerate(f.get(data, "affected", list) or []))
    level, score = rate(db_severity, severity or [s for a in affected for s in a.severity])
    return OsvRecord(
        id=rid, modified=modified, aliases=tuple(f.texts(data, "aliases")), summary=summary,
        published=times["published"], withdrawn=times["withdrawn"], severity=severity,
        level=level, score=score, affected=affected, database_severity=db_severity, raw=data,
    )


class _Fields:
    """Typed readers of one record's fields whose errors name the record and the field."""

    def __init__(self, rid: str) -> None:
        self.rid = rid

    def fail(self, where: str, message: str) -> InvalidInputError:
        return InvalidInputError(f"OSV record {self.rid}: {where}: {message}")

    def get(self, obj: Any, key: str, kind: type, where: str = "") -> Any:
        """``obj[key]`` if it is a ``kind``, None when absent."""
        name = f"{where}.{key}" if where else key
        if type(obj) is not dict and not isinstance(obj, Mapping):
            raise self.fail(where or name, f"expected an object, got {type(obj).__name__}")
        value = obj.get(key)
        if value is not None and type(value) is not kind and not isinstance(value, kind):
            raise self.fail(name, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def text(self, obj: Any, key: str, where: str = "") -> str | None:
        value: str | None = self.get(obj, key, str, where)
        return value

    def need(self, obj: Any, key: str, where: str = "") -> str:
        value = self.text(obj, key, where)
        if value is None:
            raise self.fail(f"{where}.{key}" if where else key, "is missing")
        return value

    def texts(self, obj: Any, key: str, where: str = "") -> list[str]:
        items: list[Any] = self.get(obj, key, list, where) or []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{where}.{key}[{i}]" if where else f"{key}[{i}]", "not a string")
        return items


def _scores(f: _Fields, obj: Any, where: str) -> tuple[SeverityScore, ...]:
    items = f.get(obj, "severity", list, where) or []
    prefix = f"{where}.severity" if where else "severity"
    return tuple(SeverityScore(f.need(item, "type", f"{prefix}[{i}]"),
                               f.need(item, "score", f"{prefix}[{i}]"))
                 for i, item in enumerate(items))


def _affected(f: _Fields, item: Any, where: str) -> Affected:
    ecosystem = name = ""
    package = f.get(item, "package", Mapping, where)
    if package is not None:
        ecosystem = f.need(package, "ecosystem", f"{where}.package")
        name = f.need(package, "name", f"{where}.package")
    ranges = tuple(_range(f, r, f"{where}.ranges[{j}]")
                   for j, r in enumerate(f.get(item, "ranges", list, where) or []))
    return Affected(ecosystem, name, ranges, tuple(f.texts(item, "versions", where)),
                    _scores(f, item, where))


def _range(f: _Fields, item: Any, where: str) -> AffectedRange:
    kind = f.need(item, "type", where)
    if kind not in _RANGE_TYPES:
        raise f.fail(f"{where}.type", f"{kind!r} is not one of {list(_RANGE_TYPES)}")
    raw_events = f.get(item, "events", list, where)
    if not raw_events:
        raise f.fail(f"{where}.events", "a range needs at least one event")
    events = []
    for k, evt in enumerate(raw_events):
        here = f"{where}.events[{k}]"
        if not isinstance(evt, Mapping) or len(evt) != 1:
            raise f.fail(here, "an event is an object with exactly one key")
        ((key, value),) = evt.items()
        if key not in _EVENT_KINDS:
            raise f.fail(here, f"{key!r} is not one of {list(_EVENT_KINDS)}")
        if not isinstance(value, str) or not value.strip():
            raise f.fail(f"{here}.{key}", "expected a non-empty string")
        events.append(Event(key, value.strip()))
    return AffectedRange(kind, tuple(events), f.text(item, "repo", where))


def parse_timestamp(text: str, *, where: str = "timestamp") -> datetime:
    """An RFC 3339 timestamp as OSV writes it (``Z``, up to nanoseconds) as an aware datetime;
    :class:`InvalidInputError` naming ``where`` otherwise."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise InvalidInputError(f"{where}: {text!r} is not an RFC 3339 timestamp")
    day, clock, fraction, zone = m.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    fraction = f".{(fraction + '000000')[:6]}" if fraction else ""
    try:
        return datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}")
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {text!r}: {exc}") from exc
