"""Grant and voucher intake, shared by the webhook and the imports.

A grant's status never moves backwards: an event older (by `updated_at`) than what is stored
is ignored. A change to `confirmed` asks for provisioning, unless the confirmation did not come
from `waiting_for_confirmation`: such a grant is held for a member of staff to look at.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.services import voucher_row
from bot.services.actors import Actor
from bot.services.audit import add_audit_event
from bot.services.context import ServiceContext
from bot.services.notifications import KNOWN_STATUSES, GrantPayload, VoucherPayload
from bot.services.outcomes import GrantIntake, IntakeAction, VoucherIntake
from bot.services.queries import grant_ref, voucher_of
from bot.storage import (
    Conference,
    ConferenceVoucher,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
    insert_ignoring_conflict,
    stale_reason,
    utcnow,
)

log = structlog.get_logger(__name__)


def ingest_grant(
    ctx: ServiceContext, *, payload: GrantPayload, actor: Actor, wait_for_staff: bool = False
) -> GrantIntake:
    """Store what the backend says about a grant; say whether provisioning should start.

    `wait_for_staff` (an import with `--no-provision`): a grant this confirms is marked as
    waiting for staff, in the same transaction, so neither the webhook path nor the
    reconciler provisions it; `/voucher issue` or a bulk run does.
    """
    with ctx.db.transaction() as session:
        intake = apply_grant(
            session, ctx, payload=payload, actor=actor, wait_for_staff=wait_for_staff
        )
    if intake.action in (IntakeAction.CREATED, IntakeAction.UPDATED):
        ctx.publish(intake)
    return intake


def apply_grant(
    session: Session,
    ctx: ServiceContext,
    *,
    payload: GrantPayload,
    actor: Actor,
    wait_for_staff: bool = False,
) -> GrantIntake:
    """The intake rules inside the caller's transaction (the webhook adds its event id to it)."""
    status = payload.known_status
    if status is None:
        log.warning("unknown grant status ignored", grant=payload.id, status=payload.status)
        return GrantIntake(IntakeAction.IGNORED, f"unknown status {payload.status!r}; ignored")
    conference = session.scalars(
        select(Conference).where(Conference.code == payload.conference)
    ).one_or_none()
    if conference is None or ctx.conference(payload.conference) is None:
        return GrantIntake(
            IntakeAction.IGNORED, f"unknown conference {payload.conference!r}; ignored"
        )
    fields = _grant_fields(payload, status)
    inserted = insert_ignoring_conflict(
        session,
        Grant,
        {"conference_id": conference.id, "external_id": payload.id, **fields},
        conflict=["conference_id", "external_id"],
    )
    grant = session.scalars(
        select(Grant)
        .where(Grant.conference_id == conference.id, Grant.external_id == payload.id)
        .with_for_update()
    ).one()
    old_status: GrantStatus | None = None
    if inserted is not None:
        action = IntakeAction.CREATED
    elif all(getattr(grant, name) == value for name, value in fields.items()):
        return GrantIntake(IntakeAction.UNCHANGED, "no change", grant_ref(grant, conference))
    elif (
        reason := stale_reason(
            stored_at=grant.source_updated_at,
            stored=grant.status,
            updated_at=payload.updated_at,
            status=status,
        )
    ) is not None:
        # Status never moves backwards (see bot.storage.LIFECYCLE_STAGE for a tie).
        return _stale(session, actor, grant, conference, payload, reason=reason)
    else:
        action = IntakeAction.UPDATED
        old_status = grant.status
        for name, value in fields.items():
            setattr(grant, name, value)
    result = _status_change(
        session,
        grant=grant,
        conference=conference,
        payload=payload,
        old_status=old_status,
        action=action,
    )
    if wait_for_staff and result.provision:
        grant.waits_for_staff = True
    add_audit_event(
        session,
        actor=actor,
        action="grant_intake",
        outcome=action.value,
        conference_id=conference.id,
        grant_id=grant.id,
        detail={
            "status": status.value,
            "from": old_status.value if old_status else None,
            "provision": result.provision,
            "held": result.held,
        },
    )
    return result


def _grant_fields(payload: GrantPayload, status: GrantStatus) -> dict[str, Any]:
    """The stored grant columns that a notification sets."""
    previous = payload.previous_status
    return {
        "full_name": payload.full_name,
        "email": payload.email,
        "email_key": payload.email_key,
        "slack_user_id": payload.slack_user_id,
        "status": status,
        "previous_status": GrantStatus(previous) if previous in KNOWN_STATUSES else None,
        "approved_type": payload.approved_type,
        "applicant_reply_sent_at": payload.applicant_reply_sent_at,
        "applicant_reply_deadline": payload.applicant_reply_deadline,
        "source_updated_at": payload.updated_at,
        "admin_url": payload.admin_url,
        "reimbursements": payload.reimbursements,
    }


def _status_change(
    session: Session,
    *,
    grant: Grant,
    conference: Conference,
    payload: GrantPayload,
    old_status: GrantStatus | None,
    action: IntakeAction,
) -> GrantIntake:
    """Apply the consequences of a status change: provisioning, a hold, a revoke warning."""
    new = grant.status
    if new is GrantStatus.CONFIRMED and old_status is not GrantStatus.CONFIRMED:
        grant.confirmed_at = payload.updated_at
        # A new confirmation is a new case: an earlier dismissal (`held_dismiss`) is history
        # (the audit log keeps it), not a decision on this one.
        grant.dismissed_at = grant.dismissed_by = grant.dismiss_reason = None
        origin = payload.previous_status or (old_status.value if old_status else None)
        if origin != GrantStatus.WAITING_FOR_CONFIRMATION:
            grant.hold_reason = (
                f"confirmed from {origin or 'an unknown status'}, not from waiting_for_confirmation"
            )
            return GrantIntake(
                action,
                f"{grant.full_name} confirmed from {origin or 'an unknown status'}: "
                "held for staff instead of issued automatically",
                grant_ref(grant, conference),
                held=True,
            )
        grant.hold_reason = None
        return GrantIntake(
            action,
            f"{grant.full_name} confirmed their grant",
            grant_ref(grant, conference),
            provision=True,
        )
    if new is not GrantStatus.CONFIRMED:
        grant.hold_reason = None
    if old_status is GrantStatus.CONFIRMED and new is not GrantStatus.CONFIRMED:
        voucher = session.scalars(
            select(ConferenceVoucher).where(
                ConferenceVoucher.conference_id == conference.id,
                ConferenceVoucher.email_key == grant.email_key,
                ConferenceVoucher.voucher_type == VoucherType.GRANT,
                ConferenceVoucher.state != VoucherState.REVOKED,
            )
        ).one_or_none()
        if voucher is not None:
            return GrantIntake(
                action,
                f"{grant.full_name}'s grant is now {new.value} after confirmation; grant "
                f"voucher {voucher.code} still exists: revoke it if it should go",
                grant_ref(grant, conference),
                refused_with_voucher=True,
            )
    return GrantIntake(
        action, f"{grant.full_name}'s grant is {new.value}", grant_ref(grant, conference)
    )


def _stale(
    session: Session,
    actor: Actor,
    grant: Grant,
    conference: Conference,
    payload: GrantPayload,
    *,
    reason: str,
) -> GrantIntake:
    add_audit_event(
        session,
        actor=actor,
        action="grant_intake",
        outcome=IntakeAction.STALE.value,
        conference_id=conference.id,
        grant_id=grant.id,
        detail={
            "status": payload.status,
            "event_updated_at": payload.updated_at.isoformat(),
            "stored_updated_at": grant.source_updated_at.isoformat(),
        },
    )
    return GrantIntake(
        IntakeAction.STALE,
        f"{reason}; ignored",
        grant_ref(grant, conference),
    )


# A speaker or grant voucher is a free ticket; a co-speaker voucher a discount.
_RANK = {VoucherType.CO_SPEAKER: 0, VoucherType.SPEAKER: 1, VoucherType.GRANT: 1}


def lowers(current: VoucherType, offered: VoucherType) -> bool:
    """Whether calling a `current` voucher `offered` would take rights away from it."""
    return _RANK[offered] < _RANK[current]


def ingest_voucher(ctx: ServiceContext, *, payload: VoucherPayload, actor: Actor) -> VoucherIntake:
    """Record a voucher made elsewhere (a speaker voucher, usually) for a person."""
    with ctx.db.transaction() as session:
        return apply_voucher(session, payload=payload, actor=actor)


def apply_voucher(session: Session, *, payload: VoucherPayload, actor: Actor) -> VoucherIntake:
    """The voucher intake rules inside the caller's transaction."""
    kind = VoucherType(payload.type)
    conference = session.scalars(
        select(Conference).where(Conference.code == payload.conference)
    ).one_or_none()
    if conference is None:
        return VoucherIntake(
            IntakeAction.IGNORED, f"unknown conference {payload.conference!r}; ignored"
        )
    taken = session.scalars(
        select(ConferenceVoucher).where(
            ConferenceVoucher.conference_id == conference.id,
            ConferenceVoucher.code == payload.code,
            ConferenceVoucher.email_key != payload.email_key,
        )
    ).one_or_none()
    if taken is not None:
        add_audit_event(
            session,
            actor=actor,
            action="voucher_intake",
            outcome=IntakeAction.CONFLICT.value,
            conference_id=conference.id,
            grant_id=taken.grant_id,
            detail={"email": payload.email_key, "code": payload.code, "owner": taken.email_key},
        )
        return VoucherIntake(
            IntakeAction.CONFLICT,
            f"code {payload.code} already belongs to {taken.email_key}; not recorded "
            f"for {payload.email_key}",
        )
    inserted = voucher_row.record_external_voucher(
        session,
        conference_id=conference.id,
        email_key=payload.email_key,
        kind=kind,
        code=payload.code,
        pretix_voucher_id=payload.pretix_voucher_id,
        email_sent_at=payload.email_sent_at,
    )
    if inserted is not None:
        add_audit_event(
            session,
            actor=actor,
            action="voucher_intake",
            outcome=IntakeAction.CREATED.value,
            conference_id=conference.id,
            detail={"email": payload.email_key, "type": kind.value, "code": payload.code},
        )
        return VoucherIntake(IntakeAction.CREATED, f"{kind.value} voucher {payload.code} recorded")
    voucher = voucher_of(
        session, conference_id=conference.id, email_key=payload.email_key, lock=True
    )
    assert voucher is not None  # the insert above met this very row
    return _merge_voucher(
        session,
        actor=actor,
        conference=conference,
        voucher=voucher,
        payload=payload,
        kind=kind,
    )


def _merge_voucher(
    session: Session,
    *,
    actor: Actor,
    conference: Conference,
    voucher: ConferenceVoucher,
    payload: VoucherPayload,
    kind: VoucherType,
) -> VoucherIntake:
    """A person who already has a voucher row: same code updates it, another code conflicts."""

    def said(
        action: IntakeAction, message: str, detail: dict[str, Any], *, needs_person: bool = False
    ) -> VoucherIntake:
        add_audit_event(
            session,
            actor=actor,
            action="voucher_intake",
            outcome=action.value,
            conference_id=conference.id,
            grant_id=voucher.grant_id,
            detail={"email": payload.email_key, **detail},
        )
        return VoucherIntake(action, message, needs_person=needs_person)

    def conflict(message: str, detail: dict[str, Any], *, needs_person: bool) -> VoucherIntake:
        return said(IntakeAction.CONFLICT, message, detail, needs_person=needs_person)

    current, offered = (k.value.replace("_", "-") for k in (voucher.voucher_type, kind))
    if voucher.code != payload.code:
        return conflict(
            f"{payload.email_key} already has {voucher.voucher_type.value} voucher "
            f"{voucher.code} ({voucher.state.value}); {payload.code} was not recorded",
            {"kept": voucher.code, "offered": payload.code},
            needs_person=False,
        )
    # A co-speaker voucher the bot upgraded is still a co-speaker voucher to the backend.
    if lowers(voucher.voucher_type, kind) and voucher.original_type is not kind:
        return conflict(
            f"{payload.email_key}'s voucher {voucher.code} is a {current} voucher; a "
            f"notification calling it {offered} would lower it and was not applied. "
            "A person must check which is right",
            {"kept": voucher.voucher_type.value, "offered": kind.value},
            needs_person=True,
        )
    # Only vouchers made elsewhere change type here (a co-speaker found to be a speaker);
    # ours change through provisioning.
    raise_to = (
        kind
        if kind is VoucherType.SPEAKER and voucher.voucher_type is VoucherType.CO_SPEAKER
        else None
    )
    if raise_to is not None and (
        voucher.state is not VoucherState.CREATED or voucher.original_type is not None
    ):
        if voucher_row.stop_upgrade_for_speaker(session, voucher, now=utcnow()):
            return said(
                IntakeAction.UPDATED,
                f"{payload.email_key}'s voucher {voucher.code} is a speaker voucher; its "
                "unfinished upgrade to a grant voucher was stopped. Check in Pretix that it "
                "still has the speaker terms (an upgrade attempt may have reached Pretix)",
                {"type": kind.value, "upgrade": "stopped"},
                needs_person=True,
            )
        return conflict(
            f"{payload.email_key}'s co-speaker voucher {voucher.code} is {voucher.state.value} "
            "(an upgrade to a grant voucher started); a notification calling it a speaker "
            "voucher was not applied. A person must check it in Pretix",
            {"kept": voucher.voucher_type.value, "offered": kind.value},
            needs_person=True,
        )
    changed = voucher_row.merge_external_voucher(
        session,
        voucher_id=voucher.id,
        pretix_voucher_id=payload.pretix_voucher_id,
        kind=kind,
        raise_to=raise_to,
        email_sent_at=payload.email_sent_at,
    )
    if not changed:
        return VoucherIntake(IntakeAction.UNCHANGED, "no change")
    return said(
        IntakeAction.UPDATED,
        f"voucher {voucher.code} updated",
        {"type": (raise_to or voucher.voucher_type).value},
    )
