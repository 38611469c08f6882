"""One :class:`~lockgate.store.metadata.interface.Change` written on a connection that holds the
write lock: every check first, then every write, then the audit events."""

from __future__ import annotations

from sqlalchemy.engine import Connection

import lockgate.store.metadata.sql.activity as activity
import lockgate.store.metadata.sql.audit as audit
import lockgate.store.metadata.sql.versions as versions
from lockgate.store.metadata.interface import Change

__all__ = ["write_change"]


def write_change(conn: Connection, change: Change) -> None:
    """Check ``change``'s expectations, then write it; the caller's transaction makes it all or
    nothing."""
    versions.check_stages(conn, change.expect)
    versions.check_holders(conn, change.expect_holders)
    versions.set_stages(conn, change.stages)
    versions.set_aliases(conn, change.aliases)
    versions.insert_gate_runs(conn, change.gate_runs)
    activity.write_deployments(conn, change.deployments)
    versions.insert_decisions(conn, change.decisions)
    activity.insert_observations(conn, change.observations)
    activity.insert_deliveries(conn, change.deliveries)
    for ev in change.events:
        audit.append(conn, ev)
