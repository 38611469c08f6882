"""Offline vulnerability data: imported OSV snapshots and their records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vuln_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("snapshot_date", sa.String(40), nullable=False),
        sa.Column("imported_at", sa.String(40), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
    )
    op.create_table(
        "vuln_records",
        sa.Column("snapshot_id", sa.Integer, nullable=False),
        sa.Column("vuln_id", sa.String(128), nullable=False),
        sa.Column("package", sa.String(256), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", "vuln_id", "package", name="pk_vuln_records"),
    )
    op.create_index("ix_vuln_records_package", "vuln_records", ["snapshot_id", "package"])


def downgrade() -> None:
    op.drop_index("ix_vuln_records_package", table_name="vuln_records")
    op.drop_table("vuln_records")
    op.drop_table("vuln_snapshots")
