"""request generation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

`conference_vouchers.request_generation`: bumped when a failed voucher is tried again, and
part of every Pretix idempotency key, so that a request fixed after a 4xx answer is not
answered with Pretix's stored copy of that 4xx. The downgrade drops the column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conference_vouchers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("request_generation", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("conference_vouchers", schema=None) as batch_op:
        batch_op.drop_column("request_generation")
