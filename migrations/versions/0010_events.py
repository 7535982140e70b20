"""Events (anomaly and sensor) with their windows, and machine health.

Revision ID: 0010
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Integer primary keys that autoincrement on SQLite and are 64-bit on Postgres.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)

revision: str = "0010"
down_revision: str | None = "0002"  # the lead re-chains at merge
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("opened_at", Time, nullable=False),
        sa.Column("escalated_at", Time, nullable=True),
        sa.Column("resolved_at", Time, nullable=True),
        sa.Column("peak_ratio", sa.Float(), nullable=True),
        sa.Column("mean_ratio", sa.Float(), nullable=True),
        sa.Column("n_windows", sa.Integer(), nullable=False),
        sa.Column("n_scored", sa.Integer(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("acknowledged_at", Time, nullable=True),
        sa.Column("acknowledge_comment", sa.Text(), nullable=True),
        sa.Column("closed_by", sa.String(length=200), nullable=True),
        sa.Column("closed_at", Time, nullable=True),
        sa.Column("disposition", sa.String(length=32), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        sa.CheckConstraint(
            "cause IS NULL OR cause IN ('silence', 'clipping', 'dropout', 'stale')",
            name=op.f("ck_events_cause"),
        ),
        sa.CheckConstraint(
            "disposition IS NULL OR disposition IN "
            "('confirmed_fault', 'false_alarm', 'planned_work', 'sensor_issue')",
            name=op.f("ck_events_disposition"),
        ),
        sa.CheckConstraint("kind IN ('anomaly', 'sensor')", name=op.f("ck_events_kind")),
        sa.CheckConstraint("severity IN ('warning', 'alarm')", name=op.f("ck_events_severity")),
        sa.CheckConstraint("state IN ('open', 'resolved', 'closed')", name=op.f("ck_events_state")),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_events_machine_id_machines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_machine_opened", ["machine_id", "opened_at", "id"], unique=False
        )
        batch_op.create_index("ix_events_opened", ["opened_at", "id"], unique=False)
        batch_op.create_index(
            "uq_events_one_open",
            ["machine_id", "kind"],
            unique=True,
            sqlite_where=ONE_OPEN,
            postgresql_where=ONE_OPEN,
        )

    op.create_table(
        "machine_health",
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("health_since", Time, nullable=False),
        sa.Column("anomaly_event_id", BigId, nullable=True),
        sa.Column("sensor_event_id", BigId, nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("tracker", sa.JSON(), nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.CheckConstraint(
            "health IN ('enrolling', 'learning', 'ok', 'warning', 'alarm', 'sensor_fault')",
            name=op.f("ck_machine_health_health"),
        ),
        sa.ForeignKeyConstraint(
            ["anomaly_event_id"],
            ["events.id"],
            name=op.f("fk_machine_health_anomaly_event_id_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_machine_health_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(
            ["sensor_event_id"],
            ["events.id"],
            name=op.f("fk_machine_health_sensor_event_id_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_machine_health")),
    )
    op.create_table(
        "event_windows",
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("window_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_event_windows_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["window_id"],
            ["windows.id"],
            name=op.f("fk_event_windows_window_id_windows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", "window_id", name=op.f("pk_event_windows")),
    )
    with op.batch_alter_table("event_windows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_windows_window_id"), ["window_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_windows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_windows_window_id"))
    op.drop_table("event_windows")
    op.drop_table("machine_health")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("uq_events_one_open", sqlite_where=ONE_OPEN, postgresql_where=ONE_OPEN)
        batch_op.drop_index("ix_events_opened")
        batch_op.drop_index("ix_events_machine_opened")
    op.drop_table("events")
