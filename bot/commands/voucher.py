"""`/voucher`: ack at once, check staff, then do the work in the background and answer."""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.commands import bulk
from bot.commands.parsing import Action, VoucherCommand, parse_command
from bot.commands.staff_only import refused_unless_staff
from bot.services.actors import Actor
from bot.services.lookup import Target, TargetKind, parse_target, resolve_grant
from bot.services.provisioning import provision_grant_voucher
from bot.services.resend import resend_voucher_email
from bot.services.revocation import revoke_grant_voucher
from bot.services.status import grant_status
from bot.slack.blocks import (
    COMMAND,
    Message,
    help_message,
    problem_message,
    provision_result_message,
    resend_result_message,
    revoke_result_message,
    status_message,
    unknown_subcommand_message,
    unresolved_text,
    working_message,
)
from bot.slack.edge import SlackEdge
from bot.storage import Source

log = structlog.get_logger(__name__)

# Past this many unfinished background jobs a new command is refused with BUSY_TEXT.
BUSY_BACKLOG = 200
BUSY_TEXT = (
    "the bot is very busy right now and did nothing with this request; please try again in a minute"
)


def register(app: App, edge: SlackEdge) -> None:
    """Listen to `/voucher`."""

    def handle_voucher(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        answer_voucher_command(edge, ack=ack, command=command, respond=respond)

    app.command(COMMAND)(handle_voucher)


def answer_voucher_command(
    edge: SlackEdge, *, ack: Ack, command: dict[str, Any], respond: Respond
) -> None:
    """Parse, check permission, ack within milliseconds; the work goes to the worker."""
    parsed = parse_command(str(command.get("text", "")))
    user = str(command["user_id"])
    if parsed.action is Action.HELP:
        message = unknown_subcommand_message(parsed.unknown) if parsed.unknown else help_message()
        ack(**message.as_kwargs())
        return
    actor = Actor(Source.SLASH_COMMAND, user)
    if refused_unless_staff(edge, ack, parsed, actor):
        return
    if parsed.action is Action.BULK:
        bulk.answer_bulk_command(edge, ack=ack, parsed=parsed, actor=actor, respond=respond)
        return
    if parsed.target is None:
        ack(
            **problem_message(
                f"`{COMMAND} {parsed.action.value}` needs a person: a mention, an email "
                f"address or a grant id, e.g. `{COMMAND} {parsed.action.value} @jane`"
            ).as_kwargs()
        )
        return
    if edge.worker.backlog >= BUSY_BACKLOG:
        # Shed load rather than queue work nobody will wait for: say so, at once.
        log.warning("busy: command refused", backlog=edge.worker.backlog)
        ack(**problem_message(BUSY_TEXT).as_kwargs())
        return
    ack(**working_message(parsed.action.value, parsed.target).as_kwargs())
    edge.answer_later(
        f"/voucher {parsed.action.value}", respond, lambda: run_voucher_command(edge, parsed, actor)
    )


def run_voucher_command(edge: SlackEdge, parsed: VoucherCommand, actor: Actor) -> Message:
    """Resolve the grant and call the service; the answer to show the staff member."""
    assert parsed.target is not None  # checked before the work was queued
    target = parse_target(parsed.target)
    if target is None:
        return problem_message(
            f"{parsed.target!r} is not a mention, an email address or a grant id"
        )
    email, problem = _slack_email(edge, target)
    resolution = resolve_grant(
        edge.services.db,
        target,
        email=email,
        conference=parsed.conference,
        label=parsed.target,
        conferences=edge.services.conferences,
    )
    if resolution.grant is None:
        return problem_message(" ".join(p for p in (unresolved_text(resolution), problem) if p))
    grant_id = resolution.grant.id
    services = edge.services
    match parsed.action:
        case Action.ISSUE:
            outcome = provision_grant_voucher(
                services, grant_id=grant_id, actor=actor, release_hold=True
            )
            return provision_result_message(outcome)
        case Action.STATUS:
            report = grant_status(services.db, grant_id=grant_id)
            if report is None:
                return problem_message("that grant disappeared meanwhile")
            return status_message(report)
        case Action.RESEND:
            return resend_result_message(
                resend_voucher_email(services, grant_id=grant_id, actor=actor)
            )
        case Action.REVOKE:
            return revoke_result_message(
                revoke_grant_voucher(services, grant_id=grant_id, actor=actor)
            )
        case Action.HELP | Action.BULK | Action.DIGEST | Action.DRIFT:  # own listeners
            return help_message()


def _slack_email(edge: SlackEdge, target: Target) -> tuple[str | None, str | None]:
    """A mentioned user's email from Slack (users.info), or why there is none."""
    if target.kind is not TargetKind.SLACK_USER:
        return None, None
    try:
        answer = edge.client.users_info(user=target.value)
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error")
        log.warning("users.info failed", user=target.value, error=error)
        return None, f"Slack could not tell who that is ({error})."
    profile = (answer.get("user") or {}).get("profile") or {}
    email = profile.get("email")
    if not email:
        return None, (
            "Slack shows no email address for that person (a bot, a guest, or the app lacks "
            "the users:read.email scope); try their email address or grant id."
        )
    return str(email), None
