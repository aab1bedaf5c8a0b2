"""What the Retry button means for a grant: finish the voucher, or the email that failed."""

from __future__ import annotations

from sqlalchemy import update

from bot.services.actors import Actor
from bot.services.audit import add_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import ProvisionOutcome
from bot.services.provisioning import provision_grant_voucher
from bot.services.queries import grant_with_conference
from bot.storage import ConferenceVoucher, EmailState, VoucherState

CV = ConferenceVoucher


def retry_grant(ctx: ServiceContext, *, grant_id: int, actor: Actor) -> ProvisionOutcome:
    """Retry whatever failed for this grant; safe to click twice (nothing runs twice).

    An email that gave up is made due again, then the one provisioning path runs: it
    restarts a failed voucher, or finds the voucher in place and sends the due email, and
    reports (and threads) what it did like any other call.
    """
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is not None:
            grant, conference = found
            reopened = session.execute(
                update(CV)
                .where(
                    CV.conference_id == conference.id,
                    CV.email_key == grant.email_key,
                    CV.state == VoucherState.CREATED,
                    CV.email_state == EmailState.FAILED,
                    CV.email_sent_at.is_(None),
                )
                .values(
                    email_state=EmailState.PENDING, email_attempts=0, email_next_attempt_at=None
                )
                .returning(CV.id)
                .execution_options(synchronize_session=False)
            ).first()
            if reopened is not None:
                add_audit_event(
                    session,
                    actor=actor,
                    action="retry_email",
                    outcome="reopened",
                    conference_id=conference.id,
                    grant_id=grant.id,
                )
    return provision_grant_voucher(ctx, grant_id=grant_id, actor=actor, release_hold=True)
