"""Metadata stores: SQL (SQLite, PostgreSQL) and in-memory."""

from lockgate.store.metadata.interface import (
    Change,
    Decision,
    DeploymentRow,
    EventBuilder,
    GateRun,
    MetadataStore,
    RecordBuilder,
    TokenRow,
    UserRow,
    VersionRow,
    VulnSnapshot,
)
from lockgate.store.metadata.memory import MemoryMetadataStore
from lockgate.store.metadata.sql import SqlMetadataStore

__all__ = [
    "Change",
    "Decision",
    "DeploymentRow",
    "EventBuilder",
    "GateRun",
    "MemoryMetadataStore",
    "MetadataStore",
    "RecordBuilder",
    "SqlMetadataStore",
    "TokenRow",
    "UserRow",
    "VersionRow",
    "VulnSnapshot",
]
