"""Runs and learning: per-machine enrollment coverage and learning period, learned recordings.

Machines registered before keep the old rule (one run enough) and no learning period; their
baselines keep working (baseline artifacts of format 1 still load).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("whiten", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("enrollment_seconds", sa.Float(), server_default="120", nullable=False)
        )
        batch.add_column(
            sa.Column("enrollment_runs", sa.Integer(), server_default="1", nullable=False)
        )
        batch.add_column(
            sa.Column("run_gap_seconds", sa.Float(), server_default="300", nullable=False)
        )
        batch.add_column(sa.Column("learning_days", sa.Float(), server_default="0", nullable=False))
        batch.add_column(sa.Column("learning_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(
            sa.Column("learned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("learned")
    with op.batch_alter_table("machines") as batch:
        for column in (
            "learning_until",
            "learning_days",
            "run_gap_seconds",
            "enrollment_runs",
            "enrollment_seconds",
            "whiten",
        ):
            batch.drop_column(column)
