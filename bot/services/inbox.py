"""Inbound notifications are handled once: each event id is remembered with its result."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.services.actors import Actor
from bot.services.context import ServiceContext
from bot.services.intake import apply_grant, apply_voucher
from bot.services.notifications import WebhookEvent
from bot.services.outcomes import GrantIntake, IntakeAction, VoucherIntake
from bot.storage import Database, InboundEvent, insert_ignoring_conflict

GRANTS_WEBHOOK = "grants_webhook"
SLACK = "slack"


@dataclass(frozen=True)
class WebhookReceipt:
    """What became of one webhook delivery."""

    duplicate: bool
    intake: GrantIntake | VoucherIntake | None = None


def remember(session: Session, *, source: str, event_id: str, kind: str) -> int | None:
    """Record an event id in the caller's transaction; None if it was seen before."""
    return insert_ignoring_conflict(
        session,
        InboundEvent,
        {"source": source, "event_id": event_id, "kind": kind, "result": "received"},
        conflict=["source", "event_id"],
    )


def first_delivery(db: Database, *, source: str, event_id: str, kind: str) -> bool:
    """True the first time an event id is seen, False for every re-delivery."""
    with db.transaction() as session:
        return remember(session, source=source, event_id=event_id, kind=kind) is not None


def receive_webhook_event(
    ctx: ServiceContext, *, event: WebhookEvent, actor: Actor
) -> WebhookReceipt:
    """Apply a backend notification once: the event id and its effect commit together."""
    with ctx.db.transaction() as session:
        inbound_id = remember(session, source=GRANTS_WEBHOOK, event_id=event.id, kind=event.type)
        if inbound_id is None:
            return WebhookReceipt(duplicate=True)
        intake: GrantIntake | VoucherIntake
        if event.grant is not None:
            intake = apply_grant(session, ctx, payload=event.grant, actor=actor)
        else:
            assert event.voucher is not None  # the model requires one of the two
            intake = apply_voucher(session, payload=event.voucher, actor=actor)
        session.execute(
            update(InboundEvent)
            .where(InboundEvent.id == inbound_id)
            .values(result=intake.action.value, payload=event.model_dump(mode="json"))
        )
    if isinstance(intake, GrantIntake) and intake.action in (
        IntakeAction.CREATED,
        IntakeAction.UPDATED,
    ):
        ctx.publish(intake)
    return WebhookReceipt(duplicate=False, intake=intake)
