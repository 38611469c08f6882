"""Metadata in a SQL database (SQLite, PostgreSQL) through SQLAlchemy.

:class:`SqlMetadataStore` (``store``) owns the engine, the transactions and their retries; the
statements live by what they touch:

    versions      versions, stages, aliases, gate runs and decisions
    audit         the hash-chained audit log
    activity      deployments, observations and the delivery outbox
    identity      registry users and API tokens
    vulndb        imported OSV snapshots and their records
    changes       one :class:`~lockgate.store.metadata.interface.Change`, written in order
    locks         the per-model registration lock
"""

from lockgate.store.metadata.sql.store import SqlMetadataStore

__all__ = ["SqlMetadataStore"]
