"""OSV parsing, snapshots and matching.

The fixtures under ``fixtures/osv`` are hand-written records in the real OSV JSON shape, about
fictional ``fixture-*`` packages; nothing here reads the network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lockgate.errors import InvalidInputError, NotFoundError, SupplyChainError
from lockgate.supplychain.vulns.matching import FindingStatus, VulnIndex
from lockgate.supplychain.vulns.records import OsvRecord, parse_record, parse_timestamp
from lockgate.supplychain.vulns.severity import Severity, cvss3_base_score, severity_rank
from lockgate.supplychain.vulns.snapshots import load_snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "osv"
WEB = "GHSA-f2xw-wv3q-7hcm"
WEB_PYSEC = "PYSEC-2099-17"


def raw(vuln_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{vuln_id}.json").read_text())
    return data


def record(vuln_id: str) -> OsvRecord:
    return parse_record(raw(vuln_id))


def index(*ids: str) -> VulnIndex:
    return VulnIndex(record(i) for i in ids)


def ids(findings: list[Any]) -> list[str]:
    return [f.vuln_id for f in findings]


def minimal(events: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "TEST-1",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "pkg"},
                      "ranges": [{"type": "ECOSYSTEM", "events": events}]}],
        **extra,
    }


# -- parsing and severity ------------------------------------------------------------------


def test_parse_record_reads_the_essentials() -> None:
    rec = record(WEB)
    assert rec.id == WEB
    assert rec.aliases == ("CVE-2099-10001",)
    assert rec.summary.startswith("fixture-web allows request smuggling")
    assert rec.published == "2023-11-14T20:31:07Z"
    assert rec.withdrawn is None
    assert rec.level is Severity.HIGH
    assert rec.score == 7.5
    assert rec.packages == ("fixture-web",)
    assert [r.type for r in rec.affected[0].ranges] == ["ECOSYSTEM", "GIT"]
    assert rec.raw["database_specific"]["cwe_ids"] == ["CWE-444"]


def test_summary_falls_back_to_the_first_line_of_details() -> None:
    assert record("PYSEC-2099-23").summary == (
        "fixture-legacy stores session secrets in a world-readable file."
    )


def test_nanosecond_timestamps_parse() -> None:
    rec = record("GHSA-v4x7-c8mp-2qwr")
    assert rec.modified_at.isoformat() == "2024-06-18T07:12:45.123456+00:00"
    assert parse_timestamp("2024-01-02T03:04:05+02:00").isoformat() == (
        "2024-01-02T03:04:05+02:00")
    with pytest.raises(InvalidInputError, match="snapshot_date"):
        parse_timestamp("2024-01-02", where="snapshot_date")


@pytest.mark.parametrize(
    ("vuln_id", "level", "score"),
    [
        (WEB, Severity.HIGH, 7.5),  # database_specific wins; the vector is still scored
        ("GHSA-5mqv-3j9x-c4p7", Severity.MODERATE, None),  # database_specific only
        ("GHSA-7jgc-m2xp-w3hq", Severity.MODERATE, 5.4),  # CVSS v3 vector only
        ("GHSA-r8hw-q4j6-9mvx", Severity.CRITICAL, 9.8),
        ("GHSA-v4x7-c8mp-2qwr", Severity.UNKNOWN, None),  # CVSS v4 only: not scored
        ("PYSEC-2099-23", Severity.UNKNOWN, None),  # no severity at all
    ],
)
def test_severity_level(vuln_id: str, level: Severity, score: float | None) -> None:
    rec = record(vuln_id)
    assert (rec.level, rec.score) == (level, score)


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N", 5.4),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  # scope changed
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),  # scope changed, PR:L
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),  # capped at 10
        ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O/RC:C", 9.8),  # temporal ignored
    ],
)
def test_cvss3_base_score(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


@pytest.mark.parametrize(
    "vector",
    [
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N",
        "AV:N/AC:L/Au:N/C:P/I:P/A:P",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",  # A missing
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1",
    ],
)
def test_cvss3_rejects_other_vectors(vector: str) -> None:
    with pytest.raises(InvalidInputError):
        cvss3_base_score(vector)


def test_severity_rank_orders_levels_and_fails_closed_on_unknown() -> None:
    order = ["NONE", "LOW", "MODERATE", "HIGH", "CRITICAL"]
    assert [severity_rank(x) for x in order] == sorted(severity_rank(x) for x in order)
    assert len({severity_rank(x) for x in order}) == 5
    assert severity_rank("medium") == severity_rank(Severity.MODERATE)
    assert severity_rank(Severity.UNKNOWN) == severity_rank("CRITICAL")
    for level in Severity:
        assert 0 <= severity_rank(level) <= 4
    with pytest.raises(InvalidInputError, match="SEVERE"):
        severity_rank("SEVERE")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("id"), "'id'"),
        (lambda d: d.pop("modified"), "modified: is missing"),
        (lambda d: d.update(modified="yesterday"), "modified"),
        (lambda d: d.update(aliases="CVE-1"), "aliases"),
        (lambda d: d.update(affected={"package": {}}), "affected"),
        (lambda d: d["affected"][0]["package"].pop("name"), "affected[0].package.name"),
        (lambda d: d["affected"][0]["ranges"][0].update(type="DATE"),
         "affected[0].ranges[0].type"),
        (lambda d: d["affected"][0]["ranges"][0].update(events=[]),
         "affected[0].ranges[0].events"),
        (lambda d: d["affected"][0]["ranges"][0]["events"][0].update(fixed="1.0"),
         "affected[0].ranges[0].events[0]"),
        (lambda d: d["affected"][0]["ranges"][0]["events"].append({"patched": "1"}),
         "'patched'"),
        (lambda d: d["affected"][0]["ranges"][0]["events"].append({"fixed": 2}),
         "events[1].fixed"),
        (lambda d: d.update(severity=[{"type": "CVSS_V3"}]), "severity[0].score"),
    ],
)
def test_parse_record_names_the_bad_field(change: Any, field: str) -> None:
    data = minimal([{"introduced": "0"}])
    change(data)
    with pytest.raises(InvalidInputError) as info:
        parse_record(data)
    assert field in info.value.message
    if "id" in data:
        assert "TEST-1" in info.value.message


def test_parse_record_refuses_non_objects() -> None:
    with pytest.raises(InvalidInputError):
        parse_record([])  # type: ignore[arg-type]


# -- matching rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "affected", "fixed"),
    [
        ("0.1", True, ("1.2.3", "2.0.5")),
        ("1.2.2", True, ("1.2.3", "2.0.5")),
        ("1.2.3", False, ()),
        ("1.9.9", False, ()),
        ("2.0.0rc1", False, ()),
        ("2.0.0", True, ("2.0.5",)),
        ("2.0.4", True, ("2.0.5",)),
        ("2.0.5", False, ()),
        ("3.0", False, ()),
    ],
)
def test_introduced_and_fixed(version: str, affected: bool, fixed: tuple[str, ...]) -> None:
    found = index(WEB).match("fixture-web", version)
    assert ids(found) == ([WEB] if affected else [])
    if affected:
        assert found[0].reason == "range"
        assert found[0].status is FindingStatus.AFFECTED
        assert found[0].fixed_versions == fixed
        assert found[0].severity is Severity.HIGH


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.9", False), ("1.0", True), ("1.3", True), ("1.4.2", True), ("1.4.2+local.7", True),
     ("1.4.2.post1", False), ("1.4.3", False)],
)
def test_last_affected(version: str, affected: bool) -> None:
    found = index("GHSA-5mqv-3j9x-c4p7").match("fixture-parser", version)
    assert bool(found) is affected
    if found:
        assert found[0].fixed_versions == ()


@pytest.mark.parametrize(
    ("version", "reason"),
    [("1.0.1", "versions list"), ("1.0.1.0", "versions list"), ("2004d", "versions list"),
     ("1.0.2", None), ("2005a", None)],
)
def test_versions_list(version: str, reason: str | None) -> None:
    found = index("PYSEC-2099-23").match("fixture-legacy", version)
    assert [f.reason for f in found] == ([reason] if reason else [])


def test_introduced_zero_affects_every_version() -> None:
    idx = index("GHSA-r8hw-q4j6-9mvx")
    for version in ("0", "0.0.1.dev0", "1.0", "99.1.post3"):
        (finding,) = idx.match("fixture-abandoned", version)
        assert finding.fixed_versions == ()
        assert finding.severity is Severity.CRITICAL
        assert finding.score == 9.8


@pytest.mark.parametrize(("version", "affected"), [("1.9.9", True), ("2.0", False), ("7", False)])
def test_limit(version: str, affected: bool) -> None:
    assert bool(index("PYSEC-2099-40").match("fixture-limit", version)) is affected


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.9", False), ("1.0.0", True), ("1.0.2b0", True), ("1.0.2b1", False), ("1.0.2", False)],
)
def test_semver_ranges_are_read_as_pep440(version: str, affected: bool) -> None:
    assert bool(index("PYSEC-2099-40").match("fixture-semver", version)) is affected


def test_unsorted_events_are_sorted_before_walking() -> None:
    idx = VulnIndex([parse_record(minimal(
        [{"fixed": "2.0"}, {"introduced": "3.0"}, {"introduced": "1.0"}, {"fixed": "3.5"}]
    ))])
    assert [bool(idx.match("pkg", v)) for v in ("0.5", "1.0", "1.9", "2.0", "3.1", "3.5")] == [
        False, True, True, False, True, False]


def test_range_without_introduced_starts_at_zero() -> None:
    idx = VulnIndex([parse_record(minimal([{"fixed": "2.0"}]))])
    assert idx.match("pkg", "0.1")
    assert not idx.match("pkg", "2.0")


def test_unparseable_event_fails_closed() -> None:
    idx = index("PYSEC-2099-31")
    for version in ("0.1", "1.0", "5.0"):
        (finding,) = idx.match("fixture-odd", version)
        assert finding.status is FindingStatus.UNPARSEABLE
        assert finding.reason.startswith("unparseable version")
        assert "1.0-foo-bar!!" in finding.reason
        assert finding.fixed_versions == ("1.0-foo-bar!!",)


def test_unparseable_installed_version_fails_closed() -> None:
    (finding,) = index(WEB).match("fixture-web", "1.0-foo-bar!!")
    assert finding.status is FindingStatus.UNPARSEABLE
    assert "1.0-foo-bar!!" in finding.reason
    assert finding.fixed_versions == ("1.2.3", "2.0.5")
    assert index(WEB).match("fixture-other", "1.0-foo-bar!!") == []


def test_a_parseable_range_that_matches_wins_over_an_unparseable_one() -> None:
    data = minimal([{"introduced": "0"}, {"fixed": "2.0"}])
    data["affected"][0]["ranges"].append(
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "x y z"}]})
    idx = VulnIndex([parse_record(data)])
    assert idx.match("pkg", "1.0")[0].status is FindingStatus.AFFECTED
    assert idx.match("pkg", "3.0")[0].status is FindingStatus.UNPARSEABLE


def test_git_ranges_are_ignored() -> None:
    data = minimal([{"introduced": "0"}])
    data["affected"][0]["ranges"] = [
        {"type": "GIT", "repo": "https://example.invalid/r.git",
         "events": [{"introduced": "0"}, {"fixed": "8f1c0d3e9b2a4c5d6e7f8091a2b3c4d5e6f70819"}]}]
    assert VulnIndex([parse_record(data)]).match("pkg", "1.0") == []


@pytest.mark.parametrize("name", ["fixture-web", "Fixture_Web", "FIXTURE.web", "fixture__web"])
def test_names_are_pep503_normalised(name: str) -> None:
    assert ids(index(WEB).match(name, "1.0")) == [WEB]


def test_other_ecosystems_and_withdrawn_records_are_ignored() -> None:
    idx = index(WEB, "GHSA-npm9-4xgq-h2cw", "GHSA-wd2m-8r4v-x6qf")
    assert len(idx) == 1
    assert idx.match("fixture-web", "2.5") == []


def test_aliases_merge_into_the_rated_record() -> None:
    idx = index(WEB, WEB_PYSEC)
    (finding,) = idx.match("fixture-web", "1.0")
    assert finding.vuln_id == WEB
    assert finding.severity is Severity.HIGH
    assert set(finding.aliases) == {"CVE-2099-10001", WEB_PYSEC}
    # Above 2.0.0 only the GHSA matches: no merge needed.
    assert ids(idx.match("fixture-web", "2.0.1")) == [WEB]


def test_unrelated_records_stay_separate() -> None:
    data = minimal([{"introduced": "0"}], aliases=["CVE-2099-1"])
    other = minimal([{"introduced": "0"}], id="TEST-2", aliases=["CVE-2099-2"])
    idx = VulnIndex([parse_record(data), parse_record(other)])
    assert ids(idx.match("pkg", "1")) == ["TEST-1", "TEST-2"]


def test_scan_reports_every_affected_distribution_in_name_order() -> None:
    snapshot = load_snapshot(FIXTURES)
    found = snapshot.index().scan({
        "fixture_web": "1.2.0",
        "fixture-crypto": "0.6",
        "fixture-parser": "2.0",
        "numpy": "2.0.0",
        "fixture-odd": "0.3",
    })
    assert [(f.package, f.vuln_id, f.status.value) for f in found] == [
        ("fixture-crypto", "GHSA-7jgc-m2xp-w3hq", "affected"),
        ("fixture-odd", "PYSEC-2099-31", "unparseable"),
        ("fixture_web", WEB, "affected"),
    ]
    assert found[0].to_dict()["fixed_versions"] == ["0.7.1"]
    assert json.loads(json.dumps([f.to_dict() for f in found]))


def test_affected_level_severity_is_used_when_the_record_has_none() -> None:
    data = minimal([{"introduced": "0"}])
    data["affected"][0]["severity"] = [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}]
    (finding,) = VulnIndex([parse_record(data)]).match("pkg", "1")
    assert (finding.severity, finding.score) == (Severity.MODERATE, 5.4)


# -- snapshots -------------------------------------------------------------------------------


def build_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(FIXTURES.glob("*.json")):
            zf.write(f, f.name)
        for name, blob in (extra or {}).items():
            zf.writestr(name, blob)
    return path


def test_zip_snapshot(tmp_path: Path) -> None:
    path = build_zip(tmp_path / "all.zip", {"README.txt": b"not a record"})
    snap = load_snapshot(path)
    assert len(snap.records) == 9
    assert (snap.skipped, snap.withdrawn) == (1, 1)
    assert snap.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert snap.date == "2024-06-18T07:12:45.123456789Z"
    assert snap.source == str(path)
    assert all(r.is_pypi and r.withdrawn is None for r in snap.records)
    assert [r.id for r in snap.records] == sorted(r.id for r in snap.records)


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "a/../../evil.json",
                                  "C:/evil.json", "dir\\..\\evil.json"])
def test_zip_with_an_unsafe_member_name_is_refused(tmp_path: Path, name: str) -> None:
    path = build_zip(tmp_path / "all.zip", {name: json.dumps(raw(WEB)).encode()})
    with pytest.raises(SupplyChainError, match="unsafe member"):
        load_snapshot(path)


def test_zip_member_size_is_capped(tmp_path: Path) -> None:
    padded = json.dumps({**raw(WEB), "details": "x" * 50_000}).encode()
    path = build_zip(tmp_path / "all.zip", {"BIG.json": padded})
    with pytest.raises(SupplyChainError, match="larger than"):
        load_snapshot(path, max_member_bytes=20_000)
    with pytest.raises(SupplyChainError, match="more than"):
        load_snapshot(path, max_total_bytes=30_000)


def test_folder_snapshot_matches_the_zip(tmp_path: Path) -> None:
    folder = tmp_path / "osv"
    for i, f in enumerate(sorted(FIXTURES.glob("*.json"))):
        target = folder / f"part{i % 3}" / "nested" / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    (folder / "notes.md").write_text("ignored")
    from_folder = load_snapshot(folder)
    from_zip = load_snapshot(build_zip(tmp_path / "all.zip"))
    assert from_folder.records == from_zip.records
    assert (from_folder.skipped, from_folder.withdrawn) == (1, 1)
    assert from_folder.date == from_zip.date


def test_folder_digest_is_stable_and_content_bound(tmp_path: Path) -> None:
    first = tmp_path / "a"
    shutil.copytree(FIXTURES, first)
    second = tmp_path / "b"
    shutil.copytree(FIXTURES, second)
    digest = load_snapshot(first).sha256
    assert load_snapshot(first).sha256 == digest
    assert load_snapshot(second).sha256 == digest
    assert load_snapshot(FIXTURES).sha256 == digest
    expected = hashlib.sha256()
    for f in sorted(FIXTURES.glob("*.json")):
        expected.update(f"{f.name}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    assert digest == expected.hexdigest()
    changed = raw(WEB)
    changed["summary"] = "edited"
    (second / f"{WEB}.json").write_text(json.dumps(changed))
    assert load_snapshot(second).sha256 != digest
    (second / f"{WEB}.json").rename(second / "renamed.json")
    assert load_snapshot(second).sha256 not in (digest, load_snapshot(first).sha256)


def test_later_modified_wins_for_a_duplicate_id(tmp_path: Path) -> None:
    old = raw(WEB)
    new = copy.deepcopy(old)
    new["modified"] = "2025-01-01T00:00:00Z"
    new["summary"] = "newer"
    (tmp_path / "a.json").write_text(json.dumps(new))
    (tmp_path / "b.json").write_text(json.dumps(old))
    snap = load_snapshot(tmp_path)
    assert [r.summary for r in snap.records] == ["newer"]
    assert snap.date == "2025-01-01T00:00:00Z"


def test_a_malformed_record_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(json.dumps(raw(WEB)))
    (tmp_path / "bad.json").write_text(json.dumps({"id": "BAD-1"}))
    with pytest.raises(SupplyChainError, match=r"bad\.json.*BAD-1.*modified"):
        load_snapshot(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SupplyChainError, match="not valid JSON"):
        load_snapshot(tmp_path)


def test_snapshot_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_snapshot(tmp_path / "missing.zip")
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(SupplyChainError, match="neither a zip"):
        load_snapshot(tmp_path / "plain.txt")
    only_npm = tmp_path / "npm"
    only_npm.mkdir()
    shutil.copy(FIXTURES / "GHSA-npm9-4xgq-h2cw.json", only_npm)
    with pytest.raises(SupplyChainError, match="no current PyPI records"):
        load_snapshot(only_npm)


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(raw(WEB)))
    folder = tmp_path / "snap"
    folder.mkdir()
    (folder / "link.json").symlink_to(outside)
    with pytest.raises(SupplyChainError, match="links outside"):
        load_snapshot(folder)
