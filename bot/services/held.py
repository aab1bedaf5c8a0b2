"""Decisions on held confirmations: issue the voucher, or dismiss the grant without one.

A confirmation that did not come from `waiting_for_confirmation` is held for staff
(`Grant.hold_reason`). Staff decide once: `issue_held_grant` releases the hold and runs the
one provisioning path (the same as `/voucher issue`); `dismiss_held_grant` closes it without a
voucher and records who, when and why (`Grant.dismissed_*`). Both decisions start with a
conditional UPDATE on the grant (`hold_reason IS NOT NULL AND dismissed_at IS NULL`), so of
two clicks (the same click delivered twice, two people, issue against dismiss) exactly one
wins and the other is told who decided, and when. A dismissed grant keeps its hold reason:
the reconciler never provisions a held grant, and every list of held grants leaves out the
dismissed ones (`awaiting_decision`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from bot.services.actors import Actor
from bot.services.audit import add_audit_event, write_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import GrantRef, HeldDecision, HeldOutcome, HeldResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.queries import grant_ref, grant_with_conference, voucher_of
from bot.storage import AuditEvent, Grant, GrantStatus, VoucherState

# What staff may write as the reason of a dismissal (the column is Text; keep it readable).
MAX_REASON = 500


def awaiting_decision() -> ColumnElement[bool]:
    """SQL: the grant is held for staff and nobody has dismissed it (the "held" lists)."""
    return and_(
        Grant.status == GrantStatus.CONFIRMED,
        Grant.hold_reason.is_not(None),
        Grant.dismissed_at.is_(None),
    )


def dismiss_held_grant(
    ctx: ServiceContext, *, grant_id: int, actor: Actor, reason: str
) -> HeldOutcome:
    """Close a held confirmation without a voucher, once; record who, when and why."""
    reason = " ".join(reason.split())[:MAX_REASON]
    now = ctx.clock()
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            outcome = _not_found(HeldDecision.DISMISS, grant_id)
        elif not reason:
            outcome = HeldOutcome(
                decision=HeldDecision.DISMISS,
                result=HeldResult.REASON_MISSING,
                message="A dismissal needs a reason; nothing was changed.",
                grant=grant_ref(*found),
            )
        else:
            won = session.execute(
                update(Grant)
                .where(Grant.id == grant_id, awaiting_decision())
                .values(dismissed_at=now, dismissed_by=actor.label, dismiss_reason=reason)
                .returning(Grant.id)
                .execution_options(synchronize_session=False)
            ).first()
            ref = grant_ref(*found)
            if won is not None:
                outcome = HeldOutcome(
                    decision=HeldDecision.DISMISS,
                    result=HeldResult.DISMISSED,
                    message=f"{ref.full_name}'s held grant was dismissed: no voucher.",
                    grant=ref,
                    decided_by=actor.label,
                    decided_at=now,
                    reason=reason,
                )
            else:
                outcome = _refusal(session, HeldDecision.DISMISS, ref)
        _audit(session, actor, outcome, reason=reason or None)
    if outcome.result is HeldResult.DISMISSED:
        ctx.publish(outcome)
    return outcome


def issue_held_grant(ctx: ServiceContext, *, grant_id: int, actor: Actor) -> HeldOutcome:
    """Release the hold (once) and issue the voucher through the one provisioning path.

    The release is committed first, so a dismissal racing this click loses, and a crash
    before Pretix answered leaves an unheld confirmed grant the reconciler finishes.
    """
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            refused: HeldOutcome | None = _not_found(HeldDecision.ISSUE, grant_id)
        else:
            grant, conference = found
            reason = grant.hold_reason
            won = session.execute(
                update(Grant)
                .where(Grant.id == grant_id, awaiting_decision())
                .values(hold_reason=None)
                .returning(Grant.id)
                .execution_options(synchronize_session=False)
            ).first()
            ref = grant_ref(grant, conference)
            if won is None:
                refused = _refusal(session, HeldDecision.ISSUE, ref)
            else:
                refused = None
                # The same record as `/voucher issue` releasing a hold (provisioning.py).
                add_audit_event(
                    session,
                    actor=actor,
                    action="release_hold",
                    outcome="released",
                    conference_id=ref.conference_id,
                    grant_id=ref.id,
                    detail={"reason": reason, "via": HeldDecision.ISSUE.value},
                )
        if refused is not None:
            _audit(session, actor, refused)
            return refused
    provision = provision_grant_voucher(ctx, grant_id=grant_id, actor=actor, release_hold=True)
    outcome = HeldOutcome(
        decision=HeldDecision.ISSUE,
        result=HeldResult.ISSUED,
        message=provision.message,
        grant=provision.grant or ref,
        decided_by=actor.label,
        decided_at=ctx.clock(),
        provision=provision,
    )
    write_audit_event(
        ctx.db,
        actor=actor,
        action=HeldDecision.ISSUE.value,
        outcome=f"{outcome.result.value}:{provision.result.value}",
        conference_id=ref.conference_id,
        grant_id=ref.id,
    )
    return outcome


def _not_found(decision: HeldDecision, grant_id: int) -> HeldOutcome:
    return HeldOutcome(
        decision=decision,
        result=HeldResult.GRANT_NOT_FOUND,
        message=f"There is no grant #{grant_id}; nothing was changed.",
        grant=None,
    )


def _refusal(session: Session, decision: HeldDecision, ref: GrantRef) -> HeldOutcome:
    """Why a grant is no longer waiting for a decision, naming who decided and when."""
    grant = session.get(Grant, ref.id, populate_existing=True)
    assert grant is not None  # read in this very transaction
    if grant.dismissed_at is not None:
        return HeldOutcome(
            decision=decision,
            result=HeldResult.ALREADY_DISMISSED,
            message=f"{ref.full_name}'s grant was already dismissed; nothing was changed.",
            grant=ref,
            decided_by=grant.dismissed_by,
            decided_at=grant.dismissed_at,
            reason=grant.dismiss_reason,
        )
    if grant.status is not GrantStatus.CONFIRMED:
        return HeldOutcome(
            decision=decision,
            result=HeldResult.NOT_CONFIRMED,
            message=(
                f"{ref.full_name}'s grant is {grant.status.value} now, not confirmed; "
                "nothing was changed."
            ),
            grant=ref,
        )
    release = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.grant_id == ref.id, AuditEvent.action == "release_hold")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()
    voucher = voucher_of(session, conference_id=ref.conference_id, email_key=grant.email_key)
    if voucher is not None and voucher.state is not VoucherState.REVOKED:
        state = f"its voucher is {voucher.state.value}"
    else:
        state = "it has no voucher yet; Retry or `/voucher issue` provisions it"
    return HeldOutcome(
        decision=decision,
        result=HeldResult.NOT_HELD,
        message=(f"{ref.full_name}'s grant is not held any more ({state}); nothing was changed."),
        grant=ref,
        decided_by=release.actor if release else None,
        decided_at=release.occurred_at if release else None,
    )


def _audit(
    session: Session, actor: Actor, outcome: HeldOutcome, *, reason: str | None = None
) -> None:
    detail: dict[str, object] = {"message": outcome.message}
    if reason:
        detail["reason"] = reason
    if not outcome.done and outcome.decided_by:
        detail["decided_by"] = outcome.decided_by
        detail["decided_at"] = outcome.decided_at.isoformat() if outcome.decided_at else None
    add_audit_event(
        session,
        actor=actor,
        action=outcome.decision.value,
        outcome=outcome.result.value if outcome.done else f"refused:{outcome.result.value}",
        conference_id=outcome.grant.conference_id if outcome.grant else None,
        grant_id=outcome.grant.id if outcome.grant else None,
        detail=detail,
    )


@dataclass(frozen=True, kw_only=True)
class HeldCase:
    """A held grant about to be decided: who, and why it was held."""

    grant: GrantRef
    hold_reason: str | None


def open_case(
    ctx: ServiceContext, *, grant_id: int, actor: Actor, decision: HeldDecision
) -> HeldCase | HeldOutcome:
    """The held grant, still waiting for a decision, or (audited) why it is not any more.

    Used before asking the person for more (the dismissal's reason): nothing changes here.
    """
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            outcome = _not_found(decision, grant_id)
        else:
            grant, conference = found
            ref = grant_ref(grant, conference)
            waiting = (
                grant.status is GrantStatus.CONFIRMED
                and grant.hold_reason is not None
                and grant.dismissed_at is None
            )
            if waiting:
                return HeldCase(grant=ref, hold_reason=grant.hold_reason)
            outcome = _refusal(session, decision, ref)
        _audit(session, actor, outcome)
        return outcome


def audit_refused_click(
    ctx: ServiceContext, *, actor: Actor, action: str, value: str, reason: str
) -> None:
    """Record a click refused before any decision (not staff, a broken button)."""
    with ctx.db.transaction() as session:
        grant_id = int(value) if value.isdigit() and len(value) < 10 else None
        if grant_id is not None and session.get(Grant, grant_id) is None:
            grant_id = None
        add_audit_event(
            session,
            actor=actor,
            action=action,
            outcome="denied",
            grant_id=grant_id,
            detail={"value": value, "reason": reason},
        )
