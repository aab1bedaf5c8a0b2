"""The voucher email: claimed, sent, recorded; at most one successful send per voucher.

The claim is a conditional UPDATE that only one caller can win. The SMTP conversation happens
outside any transaction; a failed send releases the claim for a retry with backoff. The
Message-ID is derived from the voucher row and its email generation, so the one window that
cannot be closed (a crash after the SMTP server accepted the message, before it was recorded)
re-sends a message with the same Message-ID, which mail systems collapse into one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog
from sqlalchemy import ColumnElement, and_, or_, select, update

from bot.conferences import ConferenceConfig
from bot.email_content import VoucherEmailContext, redeem_url, render_voucher_email
from bot.mailer import MailerError, MailerRejected, OutgoingEmail
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailOutcome, EmailResult, Step
from bot.storage import (
    Conference,
    ConferenceVoucher,
    EmailState,
    Grant,
    VoucherState,
    VoucherType,
)

log = structlog.get_logger(__name__)

CV = ConferenceVoucher


@dataclass(frozen=True)
class _Claimed:
    voucher_id: int
    code: str
    kind: VoucherType
    generation: int
    to_name: str
    to_address: str
    grant_external_id: str
    conference: ConferenceConfig


def deliver_voucher_email(
    ctx: ServiceContext, *, voucher_id: int, resend: bool = False
) -> EmailOutcome:
    """Send the voucher email if it is due (or, with `resend`, send it again on purpose)."""
    if ctx.mailer is None:
        return EmailOutcome(
            EmailResult.DISABLED,
            "email is off (set SMTP_HOST and EMAIL_FROM); it goes out once email is configured",
        )
    claimed = _claim(ctx, voucher_id=voucher_id, resend=resend)
    if isinstance(claimed, EmailOutcome):
        return claimed
    message = _compose(ctx, claimed, resend=resend)
    try:
        ctx.mailer.send(message)
    except MailerError as exc:
        return _release(ctx, claimed, exc)
    _record_sent(ctx, claimed)
    log.info("voucher email sent", voucher=voucher_id, message_id=message.message_id)
    return EmailOutcome(
        EmailResult.SENT, f"voucher email sent to {claimed.to_address}", message.message_id
    )


def email_step(email: EmailOutcome) -> Step:
    """The email outcome as one step of a provisioning report."""
    ok = email.result not in (EmailResult.FAILED, EmailResult.RETRY_SCHEDULED)
    return Step("email", ok=ok, detail=email.detail)


def message_id(ctx: ServiceContext, *, conference: str, voucher_id: int, generation: int) -> str:
    """The deterministic Message-ID of one voucher email generation."""
    return f"<voucher.{conference}.{voucher_id}.{generation}@{ctx.message_id_domain}>"


def _lease_over(now: dt.datetime) -> ColumnElement[bool]:
    return or_(CV.email_lease_expires_at.is_(None), CV.email_lease_expires_at < now)


def email_due(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: the voucher email was never sent and nobody (alive) is sending it: a claim can win.

    The claim below and the reconciler's search for due emails share this one rule.
    """
    return and_(
        CV.state == VoucherState.CREATED,
        CV.email_sent_at.is_(None),
        or_(
            CV.email_state == EmailState.PENDING,
            and_(CV.email_state == EmailState.SENDING, _lease_over(now)),
        ),
    )


def _claim(ctx: ServiceContext, *, voucher_id: int, resend: bool) -> _Claimed | EmailOutcome:
    now = ctx.clock()
    lease_over = _lease_over(now)
    if resend:
        due = and_(or_(CV.email_state != EmailState.SENDING, lease_over), CV.grant_id.is_not(None))
        values = {
            "email_state": EmailState.SENDING,
            "email_lease_expires_at": now + ctx.lease,
            "email_generation": CV.email_generation + 1,
        }
    else:
        due = email_due(now)
        values = {"email_state": EmailState.SENDING, "email_lease_expires_at": now + ctx.lease}
    with ctx.db.transaction() as session:
        won = session.execute(
            update(CV)
            .where(CV.id == voucher_id, CV.state == VoucherState.CREATED, due)
            .values(**values)
            .returning(CV.id)
            .execution_options(synchronize_session=False)
        ).first()
        row = session.execute(
            select(CV, Grant, Conference)
            .outerjoin(Grant, CV.grant_id == Grant.id)
            .join(Conference, CV.conference_id == Conference.id)
            .where(CV.id == voucher_id)
        ).one_or_none()
        if row is None:
            return EmailOutcome(EmailResult.NOT_DUE, f"there is no voucher #{voucher_id}")
        voucher, grant, conference = row
        if won is None:  # the conditional UPDATE matched nothing: someone else's claim
            return _why_not(voucher, resend=resend)
        config = ctx.conference(conference.code)
        if grant is None or grant.email is None or config is None:
            # Cannot happen through the claim above (grant_id is set); release it anyway.
            voucher.email_state = EmailState.NOT_DUE
            voucher.email_lease_expires_at = None
            return EmailOutcome(EmailResult.NOT_DUE, "no grantee address to write to")
        return _Claimed(
            voucher_id=voucher.id,
            code=voucher.code,
            kind=voucher.voucher_type,
            generation=voucher.email_generation,
            to_name=grant.full_name,
            to_address=grant.email,
            grant_external_id=grant.external_id,
            conference=config,
        )


def _why_not(voucher: ConferenceVoucher, *, resend: bool) -> EmailOutcome:
    """Explain, from the row as it is now, why the claim was not ours."""
    if voucher.state is not VoucherState.CREATED:
        return EmailOutcome(
            EmailResult.NOT_DUE, f"the voucher is {voucher.state.value}, so no email yet"
        )
    if voucher.email_state is EmailState.SENDING:
        return EmailOutcome(EmailResult.IN_PROGRESS, "the email is being sent right now")
    if voucher.email_sent_at is not None and not resend:
        return EmailOutcome(
            EmailResult.ALREADY_SENT,
            f"voucher email already sent on {voucher.email_sent_at:%Y-%m-%d %H:%M} UTC",
        )
    if voucher.email_state is EmailState.FAILED:
        return EmailOutcome(
            EmailResult.FAILED,
            f"the email failed earlier ({voucher.email_last_error}); use resend to try again",
        )
    return EmailOutcome(EmailResult.NOT_DUE, "no email is due for this voucher")


def _compose(ctx: ServiceContext, claimed: _Claimed, *, resend: bool) -> OutgoingEmail:
    config = claimed.conference
    rendered = render_voucher_email(
        VoucherEmailContext(
            grantee_name=claimed.to_name,
            conference_name=config.name,
            code=claimed.code,
            redeem_url=redeem_url(config.shop_url(ctx.pretix_url), claimed.code),
            valid_until=config.voucher_valid_until,
            timezone=config.timezone,
            voucher_kind="speaker" if claimed.kind is VoucherType.SPEAKER else "grant",
            resend=resend,
        )
    )
    return OutgoingEmail(
        to_name=claimed.to_name,
        to_address=claimed.to_address,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id(
            ctx,
            conference=config.code,
            voucher_id=claimed.voucher_id,
            generation=claimed.generation,
        ),
        headers={"X-Voucher-Bot-Grant": f"{config.code}/{claimed.grant_external_id}"},
    )


def _record_sent(ctx: ServiceContext, claimed: _Claimed) -> None:
    with ctx.db.transaction() as session:
        session.execute(
            update(CV)
            .where(CV.id == claimed.voucher_id, CV.email_state == EmailState.SENDING)
            .values(
                email_state=EmailState.SENT,
                email_sent_at=ctx.clock(),
                emails_sent=CV.emails_sent + 1,
                email_lease_expires_at=None,
                email_attempts=0,
                email_next_attempt_at=None,
                email_last_error=None,
            )
            .execution_options(synchronize_session=False)
        )


def _release(ctx: ServiceContext, claimed: _Claimed, error: MailerError) -> EmailOutcome:
    """Give the claim back after a failed send: retry later, or stop on a permanent refusal."""
    now = ctx.clock()
    permanent = isinstance(error, MailerRejected)
    with ctx.db.transaction() as session:
        row = session.get(CV, claimed.voucher_id, with_for_update=True)
        assert row is not None
        row.email_attempts += 1
        row.email_last_error = str(error)
        row.email_lease_expires_at = None
        retry_at: dt.datetime | None = None
        if row.email_sent_at is not None:
            # A failed resend: the earlier email stands; staff can ask to resend again.
            row.email_state = EmailState.SENT
        elif permanent or row.email_attempts >= ctx.max_email_attempts:
            row.email_state = EmailState.FAILED
        else:
            row.email_state = EmailState.PENDING
            retry_at = row.email_next_attempt_at = now + ctx.backoff(row.email_attempts)
    log.warning("voucher email failed", voucher=claimed.voucher_id, error=str(error))
    if retry_at is None:
        return EmailOutcome(EmailResult.FAILED, f"email to {claimed.to_address} failed: {error}")
    return EmailOutcome(
        EmailResult.RETRY_SCHEDULED,
        f"email to {claimed.to_address} failed ({error}); will retry at {retry_at:%H:%M:%S} UTC",
    )
