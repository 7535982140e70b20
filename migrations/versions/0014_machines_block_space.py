"""machines.block_space: whitened baselines also score in the space scaled per statistic block.

Machines registered before it keep NULL (one per-dimension space, as before); new machines
get the default preset's block (``n_mels`` of a log-mel embedder).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("block_space", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("block_space")
