"""The reconciler: finishes unfinished work found in the database (the database is the queue).

It runs as an interval job and only touches conferences in its configuration. Rows are picked
with `FOR UPDATE SKIP LOCKED` and pushed a lease into the future, so several replicas on one
Postgres share the work instead of repeating it; the provisioning service's own lease
decides, row by row, who really acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy import or_, select, update

from bot.services.actors import RECONCILER
from bot.services.batch import provision_many
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailOutcome, ProvisionOutcome
from bot.services.queries import provisioning_due
from bot.services.voucher_email import deliver_voucher_email, email_due
from bot.storage import (
    Conference,
    ConferenceVoucher,
    Grant,
    GrantStatus,
    VoucherState,
)

log = structlog.get_logger(__name__)

CV = ConferenceVoucher


@dataclass
class ReconcileReport:
    """What one pass found and did."""

    provisioned: list[ProvisionOutcome] = field(default_factory=list)
    emails: list[EmailOutcome] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        """True when there was nothing to do."""
        return not self.provisioned and not self.emails


def reconcile_once(
    ctx: ServiceContext, *, limit: int = 25, workers: int = 4, max_batches: int = 40
) -> ReconcileReport:
    """One pass: resume stale Pretix work, provision forgotten grants, send due emails.

    Work is claimed `limit` rows at a time (each claim's lease must not run out while the
    batch is worked on) and batches follow each other until the backlog is drained or
    `max_batches` were done, so a burst is finished in one pass, not 25 rows every 30 s.
    """
    report = ReconcileReport()
    for _ in range(max_batches):
        provisioned: list[ProvisionOutcome] = []
        if ctx.pretix is not None:
            grant_ids = _claim_unfinished_vouchers(ctx, limit) + _confirmed_and_due(ctx, limit)
            if grant_ids:
                provisioned = provision_many(
                    ctx, grant_ids=list(dict.fromkeys(grant_ids)), actor=RECONCILER, workers=workers
                )
        emails: list[EmailOutcome] = []
        if ctx.mailer is not None:
            emails = [
                deliver_voucher_email(ctx, voucher_id=voucher_id)
                for voucher_id in _claim_due_emails(ctx, limit)
            ]
        report.provisioned += provisioned
        report.emails += emails
        if len(provisioned) < limit and len(emails) < limit:
            break
    if not report.idle:
        log.info(
            "reconciled",
            provisioned=len(report.provisioned),
            emails=len(report.emails),
        )
    return report


def _claim_unfinished_vouchers(ctx: ServiceContext, limit: int) -> list[int]:
    """Grant ids of rows left half-way (crash, Pretix outage) whose retry time has come."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        rows = session.execute(
            select(CV.id, CV.grant_id)
            .join(Grant, CV.grant_id == Grant.id)
            .join(Conference, CV.conference_id == Conference.id)
            .where(
                Conference.code.in_(list(ctx.conferences)),
                CV.state.in_([VoucherState.CREATING, VoucherState.UPGRADING]),
                Grant.status == GrantStatus.CONFIRMED,
                # Held grants and changed addresses wait for a person, not for the next pass.
                Grant.hold_reason.is_(None),
                CV.email_key == Grant.email_key,
                or_(CV.lease_expires_at.is_(None), CV.lease_expires_at < now),
                or_(CV.next_attempt_at.is_(None), CV.next_attempt_at <= now),
            )
            .order_by(CV.next_attempt_at.nulls_first(), CV.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=CV)
        ).all()
        if rows:
            # Push them out of the other replicas' sight while this one works on them.
            session.execute(
                update(CV)
                .where(CV.id.in_([row.id for row in rows]))
                .values(next_attempt_at=now + ctx.lease)
                .execution_options(synchronize_session=False)
            )
        return [row.grant_id for row in rows if row.grant_id is not None]


def _confirmed_and_due(ctx: ServiceContext, limit: int) -> list[int]:
    """Confirmed grants whose provisioning never ran or never finished (e.g. a crash)."""
    issuing = [code for code, conf in ctx.conferences.items() if conf.issue_vouchers]
    if not issuing:
        return []
    with ctx.db.transaction() as session:
        return list(
            session.scalars(
                select(Grant.id)
                .join(Conference, Grant.conference_id == Conference.id)
                .where(Conference.code.in_(issuing), provisioning_due())
                .order_by(Grant.id)
                .limit(limit)
            )
        )


def _claim_due_emails(ctx: ServiceContext, limit: int) -> list[int]:
    """Voucher rows whose email is due, or whose sender died holding the claim."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        ids = list(
            session.scalars(
                select(CV.id)
                .join(Conference, CV.conference_id == Conference.id)
                .where(
                    Conference.code.in_(list(ctx.conferences)),
                    email_due(now),
                    or_(CV.email_next_attempt_at.is_(None), CV.email_next_attempt_at <= now),
                )
                .order_by(CV.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=CV)
            )
        )
        if ids:
            session.execute(
                update(CV)
                .where(CV.id.in_(ids))
                .values(email_next_attempt_at=now + ctx.lease)
                .execution_options(synchronize_session=False)
            )
        return ids
