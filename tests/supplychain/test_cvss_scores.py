"""CVSS scores and severity levels: golden values for every vector the OSV fixtures carry and for
vectors with known base scores (NVD for the CVEs named, FIRST's calculator for the others)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.errors import InvalidInputError
from lockgate.supplychain.vulns.records import parse_record
from lockgate.supplychain.vulns.severity import (
    Severity,
    SeverityScore,
    cvss3_base_score,
    rate,
)

FIXTURES = Path(__file__).parent / "fixtures" / "osv"

# Every CVSS v3 vector of fixtures/osv and of the records the tests write, with the base score
# and level lockgate gives it.
FIXTURE_VECTORS = {
    "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N": (5.9, Severity.MODERATE),
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H": (9.8, Severity.CRITICAL),
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:N": (7.5, Severity.HIGH),
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H": (7.5, Severity.HIGH),
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N": (5.4, Severity.MODERATE),
}

# Known v3 base scores.
KNOWN_V3 = [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),  # CVE-2021-44228, Log4Shell
    ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  # scope changed
    ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),  # CVE-2021-4034, PwnKit
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),  # scope changed, PR:L
    ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),  # a v3.0 vector
    ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
    ("CVSS:3.1/AV:A/AC:H/PR:H/UI:R/S:C/C:L/I:L/A:L", 4.8),
    ("CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:N/I:N/A:H", 4.7),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),  # no impact
]

# CVSS v4.0 vectors with known base scores; lockgate keeps them but does not score them.
KNOWN_V4 = [
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N", 8.7),
    ("CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 8.5),
]


def _fixture_vectors() -> set[str]:
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("score"), str) and value["score"].startswith("CVSS:3"):
                found.add(value["score"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in FIXTURES.glob("*.json"):
        walk(json.loads(path.read_text()))
    return found


def test_the_golden_table_covers_every_fixture_vector() -> None:
    assert _fixture_vectors() <= set(FIXTURE_VECTORS)


@pytest.mark.parametrize(("vector", "expected"), sorted(FIXTURE_VECTORS.items()))
def test_fixture_vectors_score_and_rate_as_before(
    vector: str, expected: tuple[float, Severity]
) -> None:
    score, level = expected
    assert cvss3_base_score(vector) == score
    assert rate(None, [SeverityScore("CVSS_V3", vector)]) == (level, score)


@pytest.mark.parametrize(("vector", "score"), KNOWN_V3)
def test_published_v3_base_scores(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


def test_the_best_v3_score_sets_the_level_and_the_database_level_wins() -> None:
    low, high = KNOWN_V3[6][0], KNOWN_V3[3][0]
    scores = [SeverityScore("CVSS_V3", low), SeverityScore("CVSS_V3", high)]
    assert rate(None, scores) == (Severity.HIGH, 7.8)
    assert rate("moderate", scores) == (Severity.MODERATE, 7.8)
    assert rate(None, [SeverityScore("CVSS_V3", "CVSS:3.1/AV:N")]) == (Severity.UNKNOWN, None)


@pytest.mark.parametrize(("vector", "published"), KNOWN_V4)
def test_v4_vectors_are_kept_but_not_scored(vector: str, published: float) -> None:
    cvss = pytest.importorskip("cvss")
    assert float(cvss.CVSS4(vector).base_score) == published  # the library can score it
    with pytest.raises(InvalidInputError):
        cvss3_base_score(vector)
    assert rate(None, [SeverityScore("CVSS_V4", vector)]) == (Severity.UNKNOWN, None)
    record = parse_record({"id": "T-1", "modified": "2024-01-01T00:00:00Z",
                           "severity": [{"type": "CVSS_V4", "score": vector}]})
    assert (record.level, record.score) == (Severity.UNKNOWN, None)
    assert record.severity == (SeverityScore("CVSS_V4", vector),)


@pytest.mark.parametrize(
    "vector",
    [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",  # trailing slash
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:Q",  # E has no value Q
        "CVSS:3.1",
        "CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P",
    ],
)
def test_malformed_vectors_are_refused(vector: str) -> None:
    with pytest.raises(InvalidInputError, match="CVSS"):
        cvss3_base_score(vector)
