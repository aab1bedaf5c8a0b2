"""An explicit, staff-requested second sending of a voucher email."""

from __future__ import annotations

from bot.services import voucher_row
from bot.services.actors import Actor
from bot.services.audit import write_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailResult, ResendOutcome
from bot.services.queries import grant_ref, grant_with_conference, voucher_of
from bot.services.voucher_email import deliver_voucher_email
from bot.storage import VoucherState


def resend_voucher_email(ctx: ServiceContext, *, grant_id: int, actor: Actor) -> ResendOutcome:
    """Send the grantee's voucher email again, on purpose (new Message-ID, same code)."""
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            return ResendOutcome(False, f"There is no grant #{grant_id}.", None)
        grant, conference = found
        voucher = voucher_of(session, conference_id=conference.id, email_key=grant.email_key)
        ref = grant_ref(grant, conference)
        if voucher is None or voucher.state is not VoucherState.CREATED:
            state = "no voucher" if voucher is None else f"a voucher that is {voucher.state.value}"
            return ResendOutcome(
                False, f"{ref.full_name} has {state}; there is nothing to resend.", ref
            )
        if voucher.voucher_type not in voucher_row.MAILABLE_TYPES:
            return ResendOutcome(
                False,
                f"{ref.full_name}'s voucher is a co-speaker voucher (a discount, not a free "
                "ticket); there is no voucher email to resend. It becomes a grant voucher, "
                "and its email goes out, when the grant is issued.",
                ref,
            )
        if voucher.grant_id is None:
            voucher_row.link_grant(session, voucher_id=voucher.id, grant_id=grant.id)
        voucher_id, code = voucher.id, voucher.code
    email = deliver_voucher_email(ctx, voucher_id=voucher_id, resend=True)
    ok = email.result is EmailResult.SENT
    outcome = ResendOutcome(
        ok,
        f"Voucher {code} sent again to {ref.email}." if ok else f"Not sent: {email.detail}.",
        ref,
        code,
        email,
    )
    write_audit_event(
        ctx.db,
        actor=actor,
        action="resend",
        outcome=email.result.value,
        conference_id=ref.conference_id,
        grant_id=ref.id,
        detail={"code": code, "detail": email.detail},
    )
    ctx.publish(outcome)
    return outcome
