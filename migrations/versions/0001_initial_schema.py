"""Initial schema: machines, recordings and their audio, windows, baselines and members.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Integer primary keys that autoincrement on SQLite and are 64-bit on Postgres.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "machines",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=200), nullable=True),
        sa.Column("area", sa.String(length=200), nullable=True),
        sa.Column("machine_type", sa.String(length=100), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("hop_seconds", sa.Float(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("embedder", sa.JSON(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("standardize", sa.Boolean(), nullable=False),
        sa.Column("false_alarm_rate", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("enrolled_seconds", sa.Float(), nullable=False),
        sa.Column("active_baseline_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('enrolling', 'monitoring', 'paused')", name=op.f("ck_machines_state")
        ),
        sa.CheckConstraint(
            "window_seconds > 0 AND hop_seconds > 0", name=op.f("ck_machines_window_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_machines_site"), ["site"], unique=False)

    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("embedder", sa.JSON(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("standardize", sa.Boolean(), nullable=False),
        sa.Column("false_alarm_rate", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("threshold_method", sa.JSON(), nullable=False),
        sa.Column("n_vectors", sa.Integer(), nullable=False),
        sa.Column("n_recordings", sa.Integer(), nullable=False),
        sa.Column("source_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_filter", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("artifact", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_baselines_machine_id_machines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baselines")),
        sa.UniqueConstraint("machine_id", "version", name=op.f("uq_baselines_machine_id_version")),
    )
    with op.batch_alter_table("baselines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_baselines_machine_id"), ["machine_id"], unique=False)

    op.create_table(
        "recordings",
        sa.Column("id", BigId, nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("is_enrollment", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_recordings_machine_id_machines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sa.UniqueConstraint(
            "machine_id",
            "sha256",
            "started_at",
            name=op.f("uq_recordings_machine_id_sha256_started_at"),
        ),
    )
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recordings_machine_id"), ["machine_id"], unique=False)

    op.create_table(
        "windows",
        sa.Column("id", BigId, nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("recording_id", BigId, nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("ratio", sa.Float(), nullable=True),
        sa.Column("is_outlier", sa.Boolean(), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column("label_note", sa.Text(), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint(
            "label IS NULL OR label IN ('normal', 'anomaly')", name=op.f("ck_windows_label")
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_windows_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_windows_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_windows")),
    )
    with op.batch_alter_table("windows", schema=None) as batch_op:
        batch_op.create_index(
            "ix_windows_machine_start", ["machine_id", "start_at", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_windows_recording_id"), ["recording_id"], unique=False)

    op.create_table(
        "baseline_windows",
        sa.Column("baseline_id", sa.Integer(), nullable=False),
        sa.Column("window_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["baseline_id"],
            ["baselines.id"],
            name=op.f("fk_baseline_windows_baseline_id_baselines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["window_id"],
            ["windows.id"],
            name=op.f("fk_baseline_windows_window_id_windows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("baseline_id", "window_id", name=op.f("pk_baseline_windows")),
    )
    with op.batch_alter_table("baseline_windows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_baseline_windows_window_id"), ["window_id"], unique=False
        )

    op.create_table(
        "recording_audio",
        sa.Column("recording_id", BigId, nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_recording_audio_recording_id_recordings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_recording_audio")),
    )


def downgrade() -> None:
    op.drop_table("recording_audio")
    with op.batch_alter_table("baseline_windows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_baseline_windows_window_id"))

    op.drop_table("baseline_windows")
    with op.batch_alter_table("windows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_windows_recording_id"))
        batch_op.drop_index("ix_windows_machine_start")

    op.drop_table("windows")
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_machine_id"))

    op.drop_table("recordings")
    with op.batch_alter_table("baselines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_baselines_machine_id"))

    op.drop_table("baselines")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machines_site"))

    op.drop_table("machines")
