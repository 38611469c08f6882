"""How bad an OSV record is: qualitative levels, CVSS v3 base scores, and the gate's order.

A record's level is ``database_specific.severity`` (GitHub's LOW/MODERATE/HIGH/CRITICAL) when
present, else the highest CVSS v3.x base score among its ``severity`` entries on the CVSS
qualitative scale (0 NONE, 0.1-3.9 LOW, 4-6.9 MODERATE, 7-8.9 HIGH, 9-10 CRITICAL), scored by the
``cvss`` library. CVSS v2 and v4 vectors are kept but not scored: their
level is ``UNKNOWN`` unless the database names one, and :func:`severity_rank` ranks ``UNKNOWN``
with ``CRITICAL`` (fail closed).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from cvss import CVSS3, CVSSError

from lockgate.errors import InvalidInputError

__all__ = ["Severity", "SeverityScore", "cvss3_base_score", "rate", "severity_rank"]


class Severity(enum.StrEnum):
    """Qualitative severity. ``MEDIUM`` (CVSS's word) is read as ``MODERATE`` (GitHub's)."""

    NONE = "NONE"
    LOW = "LOW"
    MODERATE = "MODERATE"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"


# UNKNOWN ranks with CRITICAL: what nobody rated is gated like the worst (fail closed).
_RANK = {Severity.NONE: 0, Severity.LOW: 1, Severity.MODERATE: 2, Severity.HIGH: 3,
         Severity.CRITICAL: 4, Severity.UNKNOWN: 4}


def _level_of(text: str) -> Severity | None:
    key = text.strip().upper()
    try:
        return Severity("MODERATE" if key == "MEDIUM" else key)
    except ValueError:
        return None


def severity_rank(level: str) -> int:
    """Order of a level for gating: NONE 0 < LOW 1 < MODERATE (= MEDIUM) 2 < HIGH 3 < CRITICAL 4.

    ``UNKNOWN`` ranks 4 with CRITICAL, so a record nobody rated fails a gate like the worst one.
    Case does not matter; any other name is an :class:`InvalidInputError`.
    """
    found = _level_of(level)
    if found is None:
        raise InvalidInputError(f"unknown severity level {level!r}",
                                hint="use NONE, LOW, MODERATE (or MEDIUM), HIGH or CRITICAL")
    return _RANK[found]


@dataclass(frozen=True)
class SeverityScore:
    """One ``severity[]`` entry: ``type`` (CVSS_V3, CVSS_V4, ...) and its ``score`` vector."""

    type: str
    score: str


def cvss3_base_score(vector: str) -> float:
    """Base score of a CVSS v3.0/v3.1 vector (``CVSS:3.1/AV:N/AC:L/...``).

    Temporal and environmental metrics are accepted and do not change the base score. A
    malformed vector (a metric missing, repeated, unknown or with a value CVSS does not define)
    raises :class:`InvalidInputError`.
    """
    text = vector.strip()
    if not text.startswith(("CVSS:3.0/", "CVSS:3.1/")):
        raise InvalidInputError(f"not a CVSS v3 vector: {vector!r}")
    try:
        parsed = CVSS3(text)
    except CVSSError as exc:
        raise InvalidInputError(f"CVSS vector {vector!r}: {exc}") from None
    return float(parsed.base_score)


def _level_of_score(score: float) -> Severity:
    for floor, level in ((9.0, Severity.CRITICAL), (7.0, Severity.HIGH),
                         (4.0, Severity.MODERATE), (0.1, Severity.LOW)):
        if score >= floor:
            return level
    return Severity.NONE


def rate(db_severity: str | None,
         scores: Sequence[SeverityScore]) -> tuple[Severity, float | None]:
    """Level and CVSS v3 score: the database's level when it names one, else the best v3 score."""
    best: float | None = None
    for s in scores:
        if s.type == "CVSS_V3" or s.score.startswith("CVSS:3."):
            try:
                value = cvss3_base_score(s.score)
            except InvalidInputError:
                continue
            best = value if best is None else max(best, value)
    named = _level_of(db_severity) if db_severity else None
    if named is not None:
        return named, best
    return (_level_of_score(best) if best is not None else Severity.UNKNOWN), best
