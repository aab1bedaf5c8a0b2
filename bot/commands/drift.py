"""`/voucher drift [conference]`: Pretix grant vouchers against the bot's records, for staff."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.commands.parsing import Action, parse_command
from bot.commands.staff_only import refused_unless_staff
from bot.pretix import PretixError
from bot.services.actors import Actor
from bot.services.drift import DriftError, drift_conference, drift_report
from bot.slack.blocks import (
    COMMAND,
    Message,
    drift_message,
    drift_working_message,
    problem_message,
)
from bot.slack.edge import SlackEdge
from bot.storage import Source


def is_drift(command: dict[str, Any]) -> bool:
    """Bolt matcher: the `/voucher` request is `drift [conference]`."""
    return parse_command(str(command.get("text", ""))).action is Action.DRIFT


def register(app: App, edge: SlackEdge) -> None:
    """Answer `/voucher drift`; registered before the other `/voucher` subcommands."""

    def handle_drift(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        answer_drift_command(edge, ack=ack, command=command, respond=respond)

    app.command(COMMAND, matchers=[is_drift])(handle_drift)


def answer_drift_command(
    edge: SlackEdge, *, ack: Ack, command: dict[str, Any], respond: Respond
) -> None:
    """Check staff, ack at once; the report (a Pretix list call) is made on the worker."""
    parsed = parse_command(str(command.get("text", "")))
    user = str(command["user_id"])
    actor = Actor(Source.SLASH_COMMAND, user)
    if refused_unless_staff(edge, ack, parsed, actor):
        return
    conference = parsed.target  # `drift pycon2026`: the first word after the subcommand
    ack(**drift_working_message(conference).as_kwargs())
    edge.answer_later(f"{COMMAND} drift", respond, lambda: run_drift_command(edge, conference))


def run_drift_command(edge: SlackEdge, conference: str | None) -> Message:
    """The drift report of the conference, or the problem in words."""
    try:
        code = drift_conference(edge.services, conference)
        report = drift_report(edge.services, conference=code)
    except DriftError as exc:
        return problem_message(str(exc))
    except PretixError as exc:
        return problem_message(f"Pretix could not be read: {exc}")
    return drift_message(report)
