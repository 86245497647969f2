"""Teams, known dataset and model versions, jobs, metrics, bad cases, workers and triggers.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("quota", sa.JSON, nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "known_versions",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), nullable=False, index=True),
        sa.Column("dataset_name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("manifest_key", sa.String(500), nullable=False),
        sa.Column("labelled", sa.Boolean, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "known_model_versions",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("training_job_id", sa.String(32)),
        sa.Column("artifact_key", sa.String(500), nullable=False),
    )
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("parent_id", sa.String(32), index=True),
        sa.Column("trigger_id", sa.String(32)),
        sa.Column("team", sa.String(100), nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("dataset_version", sa.Integer, nullable=False),
        sa.Column("dataset_version_id", sa.String(32), nullable=False),
        sa.Column("manifest_key", sa.String(500), nullable=False),
        sa.Column("train_split", sa.String(50), nullable=False),
        sa.Column("eval_split", sa.String(50), nullable=False),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("pool", sa.String(10), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("warm_start_model_version_id", sa.String(32)),
        sa.Column("warm_start_key", sa.String(500)),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("max_epochs", sa.Integer),
        sa.Column("time_budget_s", sa.Float),
        sa.Column("early_stopping_patience", sa.Integer),
        sa.Column("world_size", sa.Integer, nullable=False),
        sa.Column("checkpoint_every_steps", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("requested", sa.String(10)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("worker_losses", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(200)),
        _ts("lease_expires_at", True),
        sa.Column("checkpoint_key", sa.String(500)),
        sa.Column("checkpoint_step", sa.Integer),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("evaluation", sa.JSON),
        sa.Column("artifact", sa.JSON),
        sa.Column("search", sa.JSON),
        sa.Column("error", sa.Text),
        _ts("first_step_at", True),
        _ts("last_progress_event_at", True),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("submitted_at"),
        _ts("queued_at"),
        _ts("started_at", True),
        _ts("finished_at", True),
        _ts("updated_at"),
    )
    # A trigger trains once per dataset version, however often the event arrives.
    op.create_index(
        "uq_jobs_trigger_version",
        "training_jobs",
        ["trigger_id", "dataset_version_id"],
        unique=True,
        postgresql_where=sa.text("trigger_id IS NOT NULL"),
        sqlite_where=sa.text("trigger_id IS NOT NULL"),
    )
    op.create_table(
        "metric_points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False, index=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        _ts("at"),
    )
    op.create_table(
        "bad_cases",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("item_id", sa.String(500), primary_key=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("predicted", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("pool", sa.String(10), nullable=False),
        sa.Column("capacity", sa.JSON, nullable=False),
        _ts("heartbeat_at"),
    )
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("dataset_id", sa.String(32), nullable=False, index=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("job", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )


def downgrade() -> None:
    for table in (
        "triggers",
        "workers",
        "bad_cases",
        "metric_points",
        "training_jobs",
        "known_model_versions",
        "known_versions",
        "teams",
    ):
        op.drop_table(table)
