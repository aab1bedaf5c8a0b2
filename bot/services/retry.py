"""What the Retry button means for a grant: finish the voucher, or the email that failed."""

from __future__ import annotations

from bot.services import voucher_row
from bot.services.actors import Actor
from bot.services.audit import add_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import ProvisionOutcome
from bot.services.provisioning import provision_grant_voucher
from bot.services.queries import grant_with_conference


def retry_grant(ctx: ServiceContext, *, grant_id: int, actor: Actor) -> ProvisionOutcome:
    """Retry whatever failed for this grant; safe to click twice (nothing runs twice).

    An email that gave up is made due again, a row waiting for review becomes a failed row
    to retry, then the one provisioning path runs: it
    restarts a failed voucher, or finds the voucher in place and sends the due email, and
    reports (and threads) what it did like any other call.
    """
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is not None:
            grant, conference = found
            reopened = grant.email_key is not None and voucher_row.reopen_failed_email(
                session, conference_id=conference.id, email_key=grant.email_key
            )
            if reopened:
                add_audit_event(
                    session,
                    actor=actor,
                    action="retry_email",
                    outcome="reopened",
                    conference_id=conference.id,
                    grant_id=grant.id,
                )
            # A person looked at a row waiting for review and clicked Retry: try it again.
            if grant.email_key is not None and voucher_row.reopen_for_retry(
                session, conference_id=conference.id, email_key=grant.email_key
            ):
                add_audit_event(
                    session,
                    actor=actor,
                    action="retry_review",
                    outcome="reopened",
                    conference_id=conference.id,
                    grant_id=grant.id,
                )
    return provision_grant_voucher(ctx, grant_id=grant_id, actor=actor, release_hold=True)
