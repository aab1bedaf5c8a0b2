"""bulk requests, job claims, general Slack outbox, held-grant decisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

`bulk_requests`: the frozen candidate list moves to `bulk_items` (one row per grantee with
its preview branch and what the run did); the request gets who decided, counts, progress, a
runner lease and the request it retries. `job_claims`: one row per periodic job run (e.g. a
conference's digest for one local day), so several bot processes run it once.
`slack_outbox` is no longer tied to a grant: `kind` says what it asks of Slack, `ref` names
the message (kept in `slack_messages` with its ts). `grants` get `waits_for_staff`
(`--no-provision`) and the dismissal of a held confirmation.
The downgrade drops all of it (rows that are not grantee threads are deleted first, the
frozen lists are copied back into `grant_ids`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("waits_for_staff", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dismissed_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("dismiss_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("bulk_requests", schema=None) as batch_op:
        batch_op.drop_column("grant_ids")
        batch_op.alter_column("approved_by", new_column_name="decided_by")
        batch_op.add_column(sa.Column("retry_of_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("counts", JSON_TYPE, nullable=True))
        batch_op.add_column(sa.Column("progress", JSON_TYPE, nullable=True))
        batch_op.add_column(
            sa.Column("run_lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_bulk_requests_retry_of_id_bulk_requests"),
            "bulk_requests",
            ["retry_of_id"],
            ["id"],
            ondelete="SET NULL",
        )

    op.create_table(
        "bulk_items",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("branch", sa.String(length=32), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
            name=op.f("fk_bulk_items_grant_id_grants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["bulk_requests.id"],
            name=op.f("fk_bulk_items_request_id_bulk_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_items")),
        sa.UniqueConstraint("request_id", "grant_id", name=op.f("uq_bulk_items_request_id_grant_id")),
    )
    with op.batch_alter_table("bulk_items", schema=None) as batch_op:
        batch_op.create_index("ix_bulk_items_request_state", ["request_id", "state"], unique=False)

    op.create_table(
        "job_claims",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("name", "key", name=op.f("pk_job_claims")),
    )

    op.create_table(
        "slack_messages",
        sa.Column("ref", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.String(length=40), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_slack_messages")),
    )

    with op.batch_alter_table("slack_outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="thread")
        )
        batch_op.add_column(sa.Column("ref", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("user", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("message", JSON_TYPE, nullable=True))
        batch_op.alter_column("grant_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("channel", existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column("parent", existing_type=JSON_TYPE, nullable=True)
        batch_op.create_index("ix_slack_outbox_ref", ["ref"], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM slack_outbox WHERE kind <> 'thread'")
    with op.batch_alter_table("slack_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_slack_outbox_ref")
        batch_op.alter_column("parent", existing_type=JSON_TYPE, nullable=False)
        batch_op.alter_column("channel", existing_type=sa.String(length=40), nullable=False)
        batch_op.alter_column("grant_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("message")
        batch_op.drop_column("user")
        batch_op.drop_column("ref")
        batch_op.drop_column("kind")

    op.drop_table("slack_messages")
    op.drop_table("job_claims")

    with op.batch_alter_table("bulk_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("grant_ids", JSON_TYPE, nullable=False, server_default=sa.text("'[]'"))
        )
    # The frozen lists go back where 0004 kept them.
    connection = op.get_bind()
    items = connection.execute(
        sa.text("SELECT request_id, grant_id FROM bulk_items ORDER BY request_id, position")
    ).all()
    lists: dict[int, list[int]] = {}
    for request_id, grant_id in items:
        lists.setdefault(request_id, []).append(grant_id)
    table = sa.table(
        "bulk_requests", sa.column("id", sa.Integer()), sa.column("grant_ids", JSON_TYPE)
    )
    for request_id, grant_ids in lists.items():
        connection.execute(
            table.update().where(table.c.id == request_id).values(grant_ids=grant_ids)
        )
    with op.batch_alter_table("bulk_items", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_items_request_state")
    op.drop_table("bulk_items")

    with op.batch_alter_table("bulk_requests", schema=None) as batch_op:
        batch_op.alter_column("grant_ids", server_default=None)
        batch_op.drop_constraint(
            batch_op.f("fk_bulk_requests_retry_of_id_bulk_requests"), type_="foreignkey"
        )
        batch_op.drop_column("finished_at")
        batch_op.drop_column("started_at")
        batch_op.drop_column("run_lease_expires_at")
        batch_op.drop_column("progress")
        batch_op.drop_column("counts")
        batch_op.drop_column("retry_of_id")
        batch_op.alter_column("decided_by", new_column_name="approved_by")

    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("dismiss_reason")
        batch_op.drop_column("dismissed_by")
        batch_op.drop_column("dismissed_at")
        batch_op.drop_column("waits_for_staff")
