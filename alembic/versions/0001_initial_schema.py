"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Every table the bot needs: conferences, grants, conference vouchers (one per conference
and person), bulk requests, the audit log and inbound event ids. The downgrade drops them all.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when the models do.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "conferences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pretix_organizer", sa.String(length=100), nullable=False),
        sa.Column("pretix_event", sa.String(length=100), nullable=False),
        sa.Column("pretix_quota_id", sa.Integer(), nullable=True),
        sa.Column("pretix_item_id", sa.Integer(), nullable=True),
        sa.Column("voucher_valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("slack_channel", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conferences")),
        sa.UniqueConstraint("code", name=op.f("uq_conferences_code")),
    )
    op.create_table(
        "inbound_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=40), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_events")),
        sa.UniqueConstraint("source", "event_id", name=op.f("uq_inbound_events_source_event_id")),
    )
    op.create_table(
        "bulk_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conference_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("grant_ids", JSON_TYPE, nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slack_channel", sa.String(length=40), nullable=True),
        sa.Column("slack_ts", sa.String(length=40), nullable=True),
        sa.Column("summary", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conference_id"],
            ["conferences.id"],
            name=op.f("fk_bulk_requests_conference_id_conferences"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_requests")),
    )
    with op.batch_alter_table("bulk_requests", schema=None) as batch_op:
        batch_op.create_index("ix_bulk_requests_status", ["status"], unique=False)

    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conference_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(length=300), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("email_key", sa.String(length=320), nullable=True),
        sa.Column("slack_user_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("previous_status", sa.String(length=40), nullable=True),
        sa.Column("approved_type", sa.String(length=40), nullable=True),
        sa.Column("applicant_reply_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applicant_reply_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("admin_url", sa.Text(), nullable=True),
        sa.Column("reimbursements", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conference_id"], ["conferences.id"], name=op.f("fk_grants_conference_id_conferences")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint(
            "conference_id", "external_id", name=op.f("uq_grants_conference_id_external_id")
        ),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_grants_conference_email", ["conference_id", "email_key"], unique=False
        )
        batch_op.create_index("ix_grants_external_id", ["external_id"], unique=False)
        batch_op.create_index("ix_grants_status", ["status"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("outcome", sa.String(length=50), nullable=False),
        sa.Column("conference_id", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("detail", JSON_TYPE, nullable=True),
        sa.ForeignKeyConstraint(
            ["conference_id"],
            ["conferences.id"],
            name=op.f("fk_audit_events_conference_id_conferences"),
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
            name=op.f("fk_audit_events_grant_id_grants"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_grant_id", ["grant_id"], unique=False)
        batch_op.create_index("ix_audit_events_occurred_at", ["occurred_at"], unique=False)

    op.create_table(
        "conference_vouchers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conference_id", sa.Integer(), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("voucher_type", sa.String(length=16), nullable=False),
        sa.Column("original_type", sa.String(length=16), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("pretix_voucher_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("email_state", sa.String(length=16), nullable=False),
        sa.Column("email_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("email_lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("email_attempts", sa.Integer(), nullable=False),
        sa.Column("email_next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("email_last_error", sa.Text(), nullable=True),
        sa.Column("email_generation", sa.Integer(), nullable=False),
        sa.Column("emails_sent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conference_id"],
            ["conferences.id"],
            name=op.f("fk_conference_vouchers_conference_id_conferences"),
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
            name=op.f("fk_conference_vouchers_grant_id_grants"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conference_vouchers")),
        sa.UniqueConstraint(
            "conference_id", "code", name=op.f("uq_conference_vouchers_conference_id_code")
        ),
        sa.UniqueConstraint(
            "conference_id",
            "email_key",
            name=op.f("uq_conference_vouchers_conference_id_email_key"),
        ),
    )
    with op.batch_alter_table("conference_vouchers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conference_vouchers_email_state_next",
            ["email_state", "email_next_attempt_at"],
            unique=False,
        )
        batch_op.create_index("ix_conference_vouchers_grant_id", ["grant_id"], unique=False)
        batch_op.create_index(
            "ix_conference_vouchers_state_next", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("conference_vouchers", schema=None) as batch_op:
        batch_op.drop_index("ix_conference_vouchers_state_next")
        batch_op.drop_index("ix_conference_vouchers_grant_id")
        batch_op.drop_index("ix_conference_vouchers_email_state_next")

    op.drop_table("conference_vouchers")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_occurred_at")
        batch_op.drop_index("ix_audit_events_grant_id")

    op.drop_table("audit_events")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_status")
        batch_op.drop_index("ix_grants_external_id")
        batch_op.drop_index("ix_grants_conference_email")

    op.drop_table("grants")
    with op.batch_alter_table("bulk_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_requests_status")

    op.drop_table("bulk_requests")
    op.drop_table("inbound_events")
    op.drop_table("conferences")
