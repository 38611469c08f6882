"""Vulnerability snapshots record their ecosystem and whether they are a whole ecosystem export.

Snapshots imported before this revision count as not being an export (import them again).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vuln_snapshots") as batch:
        batch.add_column(sa.Column("ecosystem", sa.String(64), nullable=False,
                                   server_default="PyPI"))
        batch.add_column(sa.Column("export", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("vuln_snapshots") as batch:
        batch.drop_column("export")
        batch.drop_column("ecosystem")
