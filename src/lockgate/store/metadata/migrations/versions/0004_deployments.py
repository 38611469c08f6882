"""Deployments: what each model's servers should serve (stable, candidate, weight, shadow).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployments")
