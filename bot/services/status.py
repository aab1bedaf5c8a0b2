"""Read-only views: one grant's voucher story, and per-conference totals."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sqlalchemy import func, select

from bot.conferences import ConferenceConfig
from bot.services.outcomes import GrantRef
from bot.services.queries import (
    grant_ref,
    grant_with_conference,
    live_voucher_of_person,
    voucher_of,
)
from bot.storage import (
    AuditEvent,
    Conference,
    ConferenceVoucher,
    Database,
    EmailState,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
)


@dataclass(frozen=True)
class VoucherView:
    """A voucher row as staff see it."""

    code: str
    voucher_type: VoucherType
    original_type: VoucherType | None
    state: VoucherState
    pretix_voucher_id: int | None
    last_error: str | None
    attempts: int
    next_attempt_at: dt.datetime | None
    email_state: EmailState
    email_sent_at: dt.datetime | None
    emails_sent: int
    email_last_error: str | None


@dataclass(frozen=True)
class AuditLine:
    """One audit event, shortened."""

    occurred_at: dt.datetime
    actor: str
    action: str
    outcome: str


@dataclass(frozen=True)
class GrantStatusReport:
    """Everything about one grant's voucher: for `/voucher status` and `status` in the CLI."""

    grant: GrantRef
    status: GrantStatus
    hold_reason: str | None
    confirmed_at: dt.datetime | None
    reply_deadline: dt.datetime | None
    updated_at: dt.datetime
    voucher: VoucherView | None
    history: tuple[AuditLine, ...]
    # A held grant closed without a voucher (`held_dismiss`): who, when and why, in words.
    dismissed: str | None = None


def grant_status(db: Database, *, grant_id: int, history: int = 5) -> GrantStatusReport | None:
    """The status report of one grant (by internal id), or None if there is no such grant."""
    with db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            return None
        grant, conference = found
        row = voucher_of(session, conference_id=conference.id, email_key=grant.email_key)
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.grant_id == grant.id)
            .order_by(AuditEvent.id.desc())
            .limit(history)
        ).all()
        return GrantStatusReport(
            grant=grant_ref(grant, conference),
            status=grant.status,
            hold_reason=None if grant.dismissed_at else grant.hold_reason,
            confirmed_at=grant.confirmed_at,
            reply_deadline=grant.applicant_reply_deadline,
            updated_at=grant.source_updated_at,
            voucher=_voucher_view(row) if row else None,
            history=tuple(
                AuditLine(e.occurred_at, e.actor, e.action, e.outcome) for e in reversed(events)
            ),
            dismissed=(
                f"by {grant.dismissed_by} on {grant.dismissed_at:%Y-%m-%d %H:%M} UTC: "
                f"{grant.dismiss_reason or '-'} (was held: {grant.hold_reason or '-'})"
                if grant.dismissed_at
                else None
            ),
        )


def _voucher_view(row: ConferenceVoucher) -> VoucherView:
    return VoucherView(
        code=row.code,
        voucher_type=row.voucher_type,
        original_type=row.original_type,
        state=row.state,
        pretix_voucher_id=row.pretix_voucher_id,
        last_error=row.last_error,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        email_state=row.email_state,
        email_sent_at=row.email_sent_at,
        emails_sent=row.emails_sent,
        email_last_error=row.email_last_error,
    )


@dataclass(frozen=True)
class ConferenceSummary:
    """Totals for one conference."""

    code: str
    name: str
    grants_by_status: Counter[str] = field(default_factory=Counter)
    vouchers_by_state: Counter[str] = field(default_factory=Counter)
    vouchers_by_type: Counter[str] = field(default_factory=Counter)
    emails_by_state: Counter[str] = field(default_factory=Counter)
    held: int = 0
    confirmed_without_voucher: int = 0
    # False for a conference with `issue_vouchers = false` (last year's, say) or one no longer
    # in the configuration: its grants are shown, but none of them is a voucher missing.
    issues_vouchers: bool = True


def conference_summaries(
    db: Database, conferences: Mapping[str, ConferenceConfig] | None = None
) -> list[ConferenceSummary]:
    """Per-conference totals of grants, vouchers and emails.

    With `conferences` (the configuration), a conference that does not issue vouchers counts
    no confirmed grant as "without a voucher" and no held grant as waiting for staff.
    """
    with db.transaction() as session:
        summaries = []
        for conference in session.scalars(select(Conference).order_by(Conference.code)):
            config = None if conferences is None else conferences.get(conference.code)
            issuing = conferences is None or (config is not None and config.issue_vouchers)
            summary = ConferenceSummary(conference.code, conference.name, issues_vouchers=issuing)
            for status, count in session.execute(
                select(Grant.status, func.count())
                .where(Grant.conference_id == conference.id)
                .group_by(Grant.status)
            ):
                summary.grants_by_status[status.value] = count
            for state, kind, email_state, count in session.execute(
                select(
                    ConferenceVoucher.state,
                    ConferenceVoucher.voucher_type,
                    ConferenceVoucher.email_state,
                    func.count(),
                )
                .where(ConferenceVoucher.conference_id == conference.id)
                .group_by(
                    ConferenceVoucher.state,
                    ConferenceVoucher.voucher_type,
                    ConferenceVoucher.email_state,
                )
            ):
                summary.vouchers_by_state[state.value] += count
                summary.vouchers_by_type[kind.value] += count
                summary.emails_by_state[email_state.value] += count
            held = session.scalar(
                select(func.count()).where(
                    Grant.conference_id == conference.id,
                    Grant.hold_reason.is_not(None),
                    Grant.dismissed_at.is_(None),  # dismissed: decided, not held
                )
            )
            missing = session.scalar(
                select(func.count())
                .select_from(Grant)
                .where(
                    Grant.conference_id == conference.id,
                    Grant.status == GrantStatus.CONFIRMED,
                    ~live_voucher_of_person(),
                )
            )
            if not issuing:
                held = missing = 0
            summaries.append(
                replace(summary, held=held or 0, confirmed_without_voucher=missing or 0)
            )
        return summaries
