"""What the Retry button means for a grant: finish the voucher, or the email that failed."""

from __future__ import annotations

from dataclasses import replace

from bot.services.actors import Actor
from bot.services.audit import write_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import ProvisionOutcome, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.queries import grant_with_conference, voucher_of
from bot.services.voucher_email import email_step, retry_failed_email
from bot.storage import EmailState, VoucherState


def retry_grant(ctx: ServiceContext, *, grant_id: int, actor: Actor) -> ProvisionOutcome:
    """Retry whatever failed for this grant; safe to click twice (nothing runs twice)."""
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        voucher = (
            voucher_of(session, conference_id=found[0].conference_id, email_key=found[0].email_key)
            if found
            else None
        )
        failed_email = (
            voucher is not None
            and voucher.state is VoucherState.CREATED
            and voucher.email_state is EmailState.FAILED
            and voucher.email_sent_at is None
        )
        voucher_id = voucher.id if voucher is not None else None
    if not failed_email or voucher_id is None:
        return provision_grant_voucher(ctx, grant_id=grant_id, actor=actor, release_hold=True)
    email = retry_failed_email(ctx, voucher_id=voucher_id)
    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=actor)
    if outcome.result is ProvisionResult.ALREADY_GRANT or outcome.has_voucher:
        # The provisioning pass found the voucher in place; report the email that was retried.
        outcome = replace(outcome, email=email, steps=(*outcome.steps[:-1], email_step(email)))
    write_audit_event(
        ctx.db,
        actor=actor,
        action="retry_email",
        outcome=email.result.value,
        grant_id=grant_id,
        detail={"detail": email.detail},
    )
    return outcome
