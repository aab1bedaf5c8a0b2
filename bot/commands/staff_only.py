"""The staff check every `/voucher` subcommand makes before it acks: refuse, and audit it."""

from __future__ import annotations

from slack_bolt import Ack

from bot.commands.parsing import VoucherCommand
from bot.services.actors import Actor
from bot.services.audit import write_audit_event
from bot.slack.blocks import not_staff_message
from bot.slack.edge import SlackEdge


def refused_unless_staff(edge: SlackEdge, ack: Ack, parsed: VoucherCommand, actor: Actor) -> bool:
    """Ack a non-staff request with the refusal and audit it off the ack path; True if refused."""
    if edge.staff.is_staff(actor.name):
        return False
    ack(**not_staff_message().as_kwargs())
    edge.worker.submit(
        "audit refusal",
        lambda: write_audit_event(
            edge.services.db,
            actor=actor,
            action=f"slash_{parsed.action.value}",
            outcome="denied",
            detail={"target": parsed.target, "reason": "not staff"},
        ),
    )
    return True
