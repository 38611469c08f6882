"""Table definitions shared by the SQL store and its migrations' checks."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)

__all__ = [
    "aliases",
    "audit_log",
    "decisions",
    "deployments",
    "gate_runs",
    "metadata",
    "observations",
    "outbox",
    "tokens",
    "users",
    "versions",
    "vuln_records",
    "vuln_snapshots",
]

metadata = MetaData()

versions = Table(
    "versions",
    metadata,
    Column("name", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    Column("stage", String(64), nullable=False),
    Column("record", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    PrimaryKeyConstraint("name", "number", name="pk_versions"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("name", String(128), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    PrimaryKeyConstraint("name", "alias", name="pk_aliases"),
)

gate_runs = Table(
    "gate_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("from_stage", String(64), nullable=False),
    Column("to_stage", String(64), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("results", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("created_at", String(40), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("model", String(128), nullable=True),
    Column("version", Integer, nullable=True),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

vuln_snapshots = Table(
    "vuln_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False),
    Column("snapshot_date", String(40), nullable=False),
    Column("imported_at", String(40), nullable=False),
    Column("source", Text, nullable=False),
    Column("records", Integer, nullable=False),
    Column("ecosystem", String(64), nullable=False, server_default="PyPI"),
    Column("export", Boolean, nullable=False, server_default=false()),
)

vuln_records = Table(
    "vuln_records",
    metadata,
    Column("snapshot_id", Integer, nullable=False),
    Column("vuln_id", String(128), nullable=False),
    Column("package", String(256), nullable=False),
    Column("record", Text, nullable=False),
    PrimaryKeyConstraint("snapshot_id", "vuln_id", "package", name="pk_vuln_records"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    Column("stage", String(64), nullable=False),
    Column("gate", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("comment", Text, nullable=False),
    Column("expires", String(40), nullable=True),
    Column("detail", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("record", Text, nullable=False),
    Column("updated_at", String(40), nullable=False),
)

observations = Table(
    "observations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    Column("record", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("target", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("delivered_at", String(40), nullable=True),
    Column("last_error", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("roles", Text, nullable=False),
    Column("grants", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", String(40), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user", String(128), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=True),
    Column("revoked_at", String(40), nullable=True),
)
