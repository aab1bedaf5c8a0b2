"""an index of grants by conference and status

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

`ix_grants_conference_status` on grants (conference_id, status): the digest reads one
conference's grants of one status per section (waiting, stuck, held, refused, recent); with
only `ix_grants_status` (every conference) and (conference_id, email_key), Postgres scanned the
whole table for most of them. The downgrade drops the index.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_grants_conference_status", ["conference_id", "status", "confirmed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_conference_status")
