from __future__ import annotations

import itertools
import sqlite3
from dataclasses import replace
from pathlib import Path

from lockgate.audit import GENESIS, AuditEvent, EventType, chain_record, verify_chain
from lockgate.store.metadata import SqlMetadataStore


def _chain(n: int) -> list:
    recs = []
    for i in range(n):
        recs.append(chain_record(recs[-1] if recs else None,
                         AuditEvent(EventType.ALIAS_SET, "me", "m", i, {"i": i})))
    return recs


def test_chain_links_each_row_to_the_previous() -> None:
    recs = _chain(4)
    assert recs[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    assert verify_chain(recs).ok


def test_edited_payload_is_named() -> None:
    recs = _chain(5)
    recs[2] = replace(recs[2], payload={"i": 99})
    report = verify_chain(recs)
    assert (report.ok, report.first_broken) == (False, 3)
    assert "edited" in report.reason


def test_deleted_row_is_named() -> None:
    recs = _chain(5)
    del recs[1]
    report = verify_chain(recs)
    assert (report.ok, report.first_broken) == (False, 3)


def test_rehashed_row_breaks_the_next_link() -> None:
    recs = _chain(4)
    forged = chain_record(recs[0], AuditEvent(EventType.ALIAS_SET, "mallory", "m", 1, {"i": 1}))
    recs[1] = forged
    report = verify_chain(recs)
    assert (report.ok, report.first_broken) == (False, 3)


def test_sql_row_edited_in_the_database_is_detected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = SqlMetadataStore(url)
    for i in range(3):
        store.append_event(AuditEvent(EventType.ALIAS_SET, "alice", "m", i, {"alias": "a"}))
    store.close()
    con = sqlite3.connect(tmp_path / "db.sqlite")
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    con.commit()
    con.close()
    store = SqlMetadataStore(url)
    report = verify_chain(store.audit_records())
    store.close()
    assert (report.ok, report.first_broken) == (False, 2)
