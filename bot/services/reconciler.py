"""The reconciler: finishes unfinished work found in the database (the database is the queue).

It runs as an interval job and only touches conferences in its configuration. Rows are picked
with `FOR UPDATE SKIP LOCKED` and pushed a lease into the future, so several replicas on one
Postgres share the work instead of repeating it; the provisioning service's own lease
decides, row by row, who really acts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import structlog
from sqlalchemy import ColumnElement, and_, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from bot.services import voucher_row
from bot.services.actors import RECONCILER
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailOutcome, ProvisionOutcome, RevokeOutcome
from bot.services.provisioning import provision_many
from bot.services.provisioning_facts import load_facts
from bot.services.revocation import revoke_grant_voucher, sweep_revoked_codes
from bot.services.voucher_email import deliver_voucher_emails
from bot.storage import (
    Conference,
    ConferenceVoucher,
    EmailState,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
)

log = structlog.get_logger(__name__)

CV = ConferenceVoucher


@dataclass
class ReconcileReport:
    """What one pass found and did."""

    provisioned: list[ProvisionOutcome] = field(default_factory=list)
    emails: list[EmailOutcome] = field(default_factory=list)
    revoked: list[RevokeOutcome] = field(default_factory=list)
    late_vouchers_deleted: int = 0  # creates that landed after their row was revoked

    @property
    def idle(self) -> bool:
        """True when there was nothing to do."""
        return not self.provisioned and not self.emails and not self.revoked


def reconcile_once(
    ctx: ServiceContext, *, limit: int = 25, workers: int = 4, max_batches: int = 40
) -> ReconcileReport:
    """One pass: resume stale Pretix work, provision forgotten grants, send due emails.

    What is due is decided by the one provisioning rule (`provisioning_rules.decide`), the
    same that provisioning applies, so a grant the rule leaves alone is never picked again
    and again. Work is taken `limit` grants at a time (each claim's lease must not run out
    while the batch is worked on) and batches follow each other until the backlog is drained
    or `max_batches` were done. One grant's or one email's failure never stops the others.
    """
    report = ReconcileReport()
    if ctx.pretix is not None:
        # A revoke staff asked for that died half-way (its lease ran out) is finished.
        report.revoked = [
            revoke_grant_voucher(ctx, grant_id=grant_id, actor=RECONCILER)
            for grant_id in _unfinished_revokes(ctx, limit)
        ]
        report.late_vouchers_deleted = sweep_revoked_codes(ctx, limit=limit)
    # Once a search finds less than a full batch, the backlog of that kind is drained: it is
    # not searched again in this pass (the grant search reads every confirmed grant).
    grants_left, emails_left = ctx.pretix is not None, True
    for _ in range(max_batches):
        provisioned: list[ProvisionOutcome] = []
        if grants_left:
            grant_ids = due_grants(ctx, limit=limit)
            grants_left = len(grant_ids) >= limit
            if grant_ids:
                provisioned = provision_many(
                    ctx, grant_ids=grant_ids, actor=RECONCILER, workers=workers, background=True
                )
        emails: list[EmailOutcome] = []
        if emails_left:
            claimed = _claim_due_emails(ctx, limit)
            emails_left = len(claimed) >= limit
            emails = list(deliver_voucher_emails(ctx, claimed).values())
        report.provisioned += provisioned
        report.emails += emails
        if not grants_left and not emails_left:
            break
    if not report.idle:
        log.info(
            "reconciled",
            provisioned=len(report.provisioned),
            emails=len(report.emails),
            revoked=len(report.revoked),
        )
    return report


def due_grants(ctx: ServiceContext, *, limit: int, page: int = 200) -> list[int]:
    """Grant ids the provisioning rule would act on now, up to `limit`, hidden from the
    other replicas' next pass while this one works on them.

    The SQL below only narrows the search (it leaves out what the rule certainly leaves
    alone); the rule itself decides, on the same facts provisioning reads.
    """
    issuing = [code for code, conf in ctx.conferences.items() if conf.issue_vouchers]
    if not issuing or (ctx.mailer is None and ctx.pretix is None):
        return []
    now = ctx.clock()
    due: list[int] = []
    with ctx.db.transaction() as session:
        # The conference ids go into the statement as literals, not through a join on the
        # code or bound parameters: the planner then knows how many grants they hold and
        # scans them once with a hash anti-join, instead of probing the voucher index once
        # per grant (100,000 finished grantees: about 3x faster). See docs/architecture.md.
        conference_ids = list(
            session.scalars(select(Conference.id).where(Conference.code.in_(issuing)))
        )
        if not conference_ids:
            return []
        in_conferences = Grant.conference_id.in_(
            bindparam("conference_ids", conference_ids, expanding=True, literal_execute=True)
        )
        # Every candidate at once, no LIMIT: with one, the planner expects to find a page of
        # candidates early and probes the voucher index once per grant (an idle pass over
        # 100,000 finished grantees finds none, so it probes them all); without it, one hash
        # anti-join. The candidates are few (a superset of the due); only their facts are
        # read, a page at a time, until `limit` are due.
        candidates = list(
            session.scalars(
                select(Grant.id).where(in_conferences, _candidate(now)).order_by(Grant.id)
            )
        )
        for start in range(0, len(candidates), page):
            if len(due) >= limit:
                break
            ids = candidates[start : start + page]
            facts = load_facts(session, ctx, ids)
            for grant_id in ids:
                found = facts.get(grant_id)
                if (
                    found is not None
                    and found.decide(ctx, now=now, background=True, respect_schedule=True).acts
                ):
                    due.append(grant_id)
        due = due[:limit]
        if due:
            _hide_unfinished(session, ctx, due, now=now)
    return due


def _candidate(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: a confirmed, unheld grant not waiting for staff that the rule might act on (a
    superset of "due").

    A grant with a live row under another email (its email changed) is left to the rule
    (`EMAIL_CHANGED`): checking it here made the planner misjudge how many grants remain and
    probe the person's row once per grant, the slowest part of an idle pass.
    """
    person = and_(CV.conference_id == Grant.conference_id, CV.email_key == Grant.email_key)
    settled = or_(
        CV.state.in_([VoucherState.FAILED, VoucherState.NEEDS_REVIEW, VoucherState.REVOKING]),
        and_(
            CV.state.in_([VoucherState.CREATING, VoucherState.UPGRADING]),
            or_(CV.lease_expires_at > now, CV.next_attempt_at > now),
        ),
        and_(
            CV.state == VoucherState.CREATED,
            CV.voucher_type.in_([VoucherType.SPEAKER, VoucherType.GRANT]),
            CV.grant_id.is_not(None),
            or_(
                CV.grant_id != Grant.id,
                CV.email_sent_at.is_not(None),
                CV.email_state != EmailState.NOT_DUE,
            ),
        ),
    )
    return and_(
        Grant.status == GrantStatus.CONFIRMED,
        Grant.hold_reason.is_(None),
        Grant.waits_for_staff.is_(False),
        Grant.email_key.is_not(None),
        ~exists(select(CV.id).where(person, settled)),
    )


def _hide_unfinished(
    session: Session, ctx: ServiceContext, grant_ids: list[int], *, now: dt.datetime
) -> None:
    rows = list(
        session.scalars(
            select(CV.id)
            .join(
                Grant,
                and_(CV.conference_id == Grant.conference_id, CV.email_key == Grant.email_key),
            )
            .where(
                Grant.id.in_(grant_ids),
                CV.state.in_([VoucherState.CREATING, VoucherState.UPGRADING]),
            )
            .with_for_update(skip_locked=True, of=CV)
        )
    )
    voucher_row.push_back(session, rows, until=now + ctx.lease)


def _unfinished_revokes(ctx: ServiceContext, limit: int) -> list[int]:
    """Grant ids whose revoke started and died (state `revoking`, lease over)."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        return [
            grant_id
            for grant_id in session.scalars(
                select(CV.grant_id)
                .join(Conference, CV.conference_id == Conference.id)
                .where(
                    Conference.code.in_(list(ctx.conferences)),
                    CV.state == VoucherState.REVOKING,
                    voucher_row.lease_over(now),
                    CV.grant_id.is_not(None),
                )
                .order_by(CV.id)
                .limit(limit)
            )
            if grant_id is not None
        ]


def _claim_due_emails(ctx: ServiceContext, limit: int) -> list[int]:
    """Voucher rows whose email is due, or whose sender died holding the claim."""
    if ctx.mailer is None:
        return []
    now = ctx.clock()
    with ctx.db.transaction() as session:
        ids = list(
            session.scalars(
                select(CV.id)
                .join(Conference, CV.conference_id == Conference.id)
                .where(
                    Conference.code.in_(list(ctx.conferences)),
                    voucher_row.email_due(now),
                    or_(CV.email_next_attempt_at.is_(None), CV.email_next_attempt_at <= now),
                )
                .order_by(CV.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=CV)
            )
        )
        voucher_row.push_back_emails(session, ids, until=now + ctx.lease)
        return ids
