"""The voucher email: claimed, sent, recorded; at most one successful send per voucher.

The claim is a conditional UPDATE that only one caller can win. The SMTP conversation happens
outside any transaction; a failed send releases the claim for a retry with backoff. The
Message-ID is derived from the voucher row and its email generation, so the one window that
cannot be closed (a crash after the SMTP server accepted the message, before it was recorded)
re-sends a message with the same Message-ID, which mail systems collapse into one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.conferences import ConferenceConfig
from bot.email_content import VoucherEmailContext, redeem_url, render_voucher_email
from bot.mailer import MailerError, MailerRejected, OutgoingEmail
from bot.services import voucher_row
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailOutcome, EmailResult, Step
from bot.storage import (
    ConferenceVoucher,
    EmailState,
    Grant,
    VoucherState,
    VoucherType,
)

log = structlog.get_logger(__name__)

CV = ConferenceVoucher


def deliver_voucher_email(
    ctx: ServiceContext, *, voucher_id: int, resend: bool = False
) -> EmailOutcome:
    """Send the voucher email if it is due (or, with `resend`, send it again on purpose)."""
    if ctx.mailer is None:
        return _EMAIL_OFF
    now = ctx.clock()
    with ctx.db.transaction() as session:
        claim = voucher_row.claim_email(
            session, voucher_id=voucher_id, now=now, lease_until=now + ctx.lease, resend=resend
        )
        if claim is None:
            return _why_not(session, voucher_id, resend=resend)
    return send_claimed_email(ctx, claim, resend=resend)


# Emails claimed together by `deliver_voucher_emails`: one claim statement for ten sends.
CLAIM_BATCH = 10
# How long after their claim the ten may still start: past it (a slow relay), the rest are
# given back and claimed again, so a grant refused, held or given another address meanwhile
# is noticed within seconds, and no send starts on a lease another replica may soon take.
CLAIM_BUDGET = dt.timedelta(seconds=5)


def deliver_voucher_emails(
    ctx: ServiceContext, voucher_ids: Sequence[int]
) -> dict[int, EmailOutcome]:
    """Send the due emails of many vouchers one after the other (a batch just recorded).

    They are claimed ten at a time (one conditional UPDATE), each sent and then recorded at
    once: an email the SMTP server accepted waits for nothing else to be recorded. A send
    never starts later than `CLAIM_BUDGET` (or half the lease, if shorter) after its claim:
    the rest of those ten are given back unsent and claimed again.
    """
    if not voucher_ids:
        return {}
    if ctx.mailer is None:
        return dict.fromkeys(voucher_ids, _EMAIL_OFF)
    outcomes: dict[int, EmailOutcome] = {}
    queue = list(dict.fromkeys(voucher_ids))
    budget = min(CLAIM_BUDGET, ctx.lease / 2)
    with ctx.db.autocommit() as held:  # each record is one UPDATE, durable at once
        recorder = _Recorder(ctx, held)
        while queue:
            batch, queue = queue[:CLAIM_BATCH], queue[CLAIM_BATCH:]
            claimed_at = ctx.clock()
            with ctx.db.transaction() as session:
                claims = voucher_row.claim_emails(
                    session, voucher_ids=batch, now=claimed_at, lease_until=claimed_at + ctx.lease
                )
                won = {claim.voucher_id for claim in claims}
                for voucher_id in batch:
                    if voucher_id not in won:
                        outcomes[voucher_id] = _why_not(session, voucher_id, resend=False)
            for n, claim in enumerate(claims):
                if n and ctx.clock() >= claimed_at + budget:
                    late = claims[n:]
                    with ctx.db.transaction() as session:
                        for unsent in late:
                            voucher_row.give_back_email(session, unsent)
                    queue[:0] = [unsent.voucher_id for unsent in late]
                    break
                outcomes[claim.voucher_id] = _send_and_record(ctx, claim, recorder)
    return outcomes


class _Recorder:
    """Records sent emails on one held autocommit connection; once that connection fails (a
    database restart, a dropped connection), every record goes through a pooled, pinged
    transaction instead. A record that fails there too is raised: the batch stops, as an
    accepted email must never be reported failed nor the next one sent unrecorded."""

    def __init__(self, ctx: ServiceContext, held: Session) -> None:
        self._ctx = ctx
        self._held: Session | None = held

    def record(self, claim: voucher_row.EmailClaim) -> None:
        if self._held is not None:
            try:
                voucher_row.record_email_sent(self._held, claim, now=self._ctx.clock())
            except SQLAlchemyError:
                log.warning("email recorder connection failed; recording through the pool")
                self._held = None
            else:
                return
        with self._ctx.db.transaction() as session:
            voucher_row.record_email_sent(session, claim, now=self._ctx.clock())


def _send_and_record(
    ctx: ServiceContext, claim: voucher_row.EmailClaim, recorder: _Recorder
) -> EmailOutcome:
    try:
        result = _send(ctx, claim, resend=False)
    except Exception as exc:
        log.exception("voucher email failed unexpectedly", voucher=claim.voucher_id)
        return EmailOutcome(
            EmailResult.FAILED,
            f"unexpected error ({type(exc).__name__}); the reconciler sends it again",
        )
    if not isinstance(result, _Sent):
        return result
    recorder.record(claim)  # outside the try: an accepted email is never called failed
    return result.outcome


@dataclass(frozen=True)
class _Sent:
    """An email the SMTP server accepted, not recorded yet."""

    claim: voucher_row.EmailClaim
    outcome: EmailOutcome


_EMAIL_OFF = EmailOutcome(
    EmailResult.DISABLED,
    "email is off (set SMTP_HOST and EMAIL_FROM); it goes out once email is configured",
)


def send_claimed_email(
    ctx: ServiceContext, claim: voucher_row.EmailClaim, *, resend: bool = False
) -> EmailOutcome:
    """Send an email whose claim was won (here, or when its voucher was recorded)."""
    result = _send(ctx, claim, resend=resend)
    if not isinstance(result, _Sent):
        return result
    with ctx.db.transaction() as session:
        voucher_row.record_email_sent(session, claim, now=ctx.clock())
    return result.outcome


def _send(
    ctx: ServiceContext, claim: voucher_row.EmailClaim, *, resend: bool
) -> EmailOutcome | _Sent:
    """Send a claimed email; a failure releases the claim, a success is left to record."""
    assert ctx.mailer is not None  # a claim is taken only when email is configured
    config = ctx.conference(claim.conference_code)
    if config is None:
        with ctx.db.transaction() as session:
            voucher_row.release_email(
                session,
                claim,
                error="the conference is no longer configured",
                permanent=True,
                max_attempts=ctx.max_email_attempts,
                retry_at=ctx.clock(),
            )
        return EmailOutcome(EmailResult.NOT_DUE, "the conference is no longer configured")
    message = _compose(ctx, claim, config, resend=resend)
    try:
        ctx.mailer.send(message)
    except MailerError as exc:
        return _release(ctx, claim, exc)
    log.info("voucher email sent", voucher=claim.voucher_id, message_id=message.message_id)
    return _Sent(
        claim,
        EmailOutcome(
            EmailResult.SENT, f"voucher email sent to {claim.to_address}", message.message_id
        ),
    )


def email_step(email: EmailOutcome) -> Step:
    """The email outcome as one step of a provisioning report."""
    ok = email.result not in (EmailResult.FAILED, EmailResult.RETRY_SCHEDULED)
    return Step("email", ok=ok, detail=email.detail)


def message_id(ctx: ServiceContext, *, conference: str, voucher_id: int, generation: int) -> str:
    """The deterministic Message-ID of one voucher email generation."""
    return f"<voucher.{conference}.{voucher_id}.{generation}@{ctx.message_id_domain}>"


def _why_not(session: Session, voucher_id: int, *, resend: bool) -> EmailOutcome:
    """Explain, from the row as it is now, why the claim was not ours."""
    found = session.execute(
        select(CV, Grant).outerjoin(Grant, CV.grant_id == Grant.id).where(CV.id == voucher_id)
    ).one_or_none()
    if found is None:
        return EmailOutcome(EmailResult.NOT_DUE, f"there is no voucher #{voucher_id}")
    voucher, grant = found
    if voucher.state is not VoucherState.CREATED:
        return EmailOutcome(
            EmailResult.NOT_DUE, f"the voucher is {voucher.state.value}, so no email yet"
        )
    if voucher.voucher_type not in voucher_row.MAILABLE_TYPES:
        return EmailOutcome(
            EmailResult.NOT_DUE,
            "a co-speaker voucher is a discount, not a free ticket: no voucher email is sent "
            "for it until it is upgraded to a grant voucher",
        )
    if grant is None or grant.email is None:
        return EmailOutcome(EmailResult.NOT_DUE, "no grantee address to write to")
    if grant.email_key != voucher.email_key:
        return EmailOutcome(
            EmailResult.NOT_DUE,
            f"the grant's email changed after the voucher was issued to {voucher.email_key}; "
            "nothing is sent until a person decides",
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


def _compose(
    ctx: ServiceContext, claim: voucher_row.EmailClaim, config: ConferenceConfig, *, resend: bool
) -> OutgoingEmail:
    rendered = render_voucher_email(
        VoucherEmailContext(
            grantee_name=claim.to_name,
            conference_name=config.name,
            code=claim.code,
            redeem_url=redeem_url(config.shop_url(ctx.pretix_url), claim.code),
            valid_until=config.voucher_valid_until,
            timezone=config.timezone,
            voucher_kind=_KINDS[claim.kind],
            resend=resend,
        ),
        templates=config.template_folder,
    )
    return OutgoingEmail(
        to_name=claim.to_name,
        to_address=claim.to_address,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id(
            ctx, conference=config.code, voucher_id=claim.voucher_id, generation=claim.generation
        ),
        headers={"X-Voucher-Bot-Grant": f"{config.code}/{claim.grant_external_id}"},
    )


# The wording follows the voucher's real type; only these types are ever claimed.
_KINDS: dict[VoucherType, Literal["speaker", "grant"]] = {
    VoucherType.SPEAKER: "speaker",
    VoucherType.GRANT: "grant",
}


def _release(
    ctx: ServiceContext, claim: voucher_row.EmailClaim, error: MailerError
) -> EmailOutcome:
    """Give the claim back after a failed send: retry later, or stop on a permanent refusal."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        attempts = session.execute(
            select(CV.email_attempts).where(CV.id == claim.voucher_id)
        ).scalar_one()
        retry_at = now + ctx.backoff(attempts + 1)
        state = voucher_row.release_email(
            session,
            claim,
            error=str(error),
            permanent=isinstance(error, MailerRejected),
            max_attempts=ctx.max_email_attempts,
            retry_at=retry_at,
        )
    log.warning(
        "voucher email failed",
        voucher=claim.voucher_id,
        smtp_code=error.smtp_code,
        permanent=isinstance(error, MailerRejected),
    )
    if state is not EmailState.PENDING:
        return EmailOutcome(EmailResult.FAILED, f"email to {claim.to_address} failed: {error}")
    return EmailOutcome(
        EmailResult.RETRY_SCHEDULED,
        f"email to {claim.to_address} failed ({error}); will retry at {retry_at:%H:%M:%S} UTC",
    )
