"""request nonce, frozen request payload and superseded code

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

`conference_vouchers.request_nonce`: a random value drawn with every request generation and
part of every Pretix idempotency key, so that two bot databases sharing one Pretix token never
send the same key for different requests (Pretix would replay the other database's answer).
`conference_vouchers.request_payload`: the body of the reserved create, frozen, so that a
resumed create is the very same request (same body, same key).
`conference_vouchers.superseded_code`: the code of a revoked voucher whose grant was confirmed
again; the next create deletes a late-landing voucher with that code first.
The downgrade drops the three columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conference_vouchers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_nonce", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("superseded_code", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column(
                "request_payload",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("conference_vouchers", schema=None) as batch_op:
        batch_op.drop_column("request_payload")
        batch_op.drop_column("superseded_code")
        batch_op.drop_column("request_nonce")
