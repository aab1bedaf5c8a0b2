"""`/voucher digest [conference]`: post the conference's digest in its channel now (staff only).

It is registered before the other `/voucher` listener and answers only `digest`. The digest
asked for goes through the outbox like the scheduled one, and never counts as that day's
scheduled digest; the asker is told, ephemerally, where it went.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.commands.parsing import Action, parse_command
from bot.commands.staff_only import refused_unless_staff
from bot.conferences import pick_conference
from bot.services.actors import Actor
from bot.slack.blocks import (
    COMMAND,
    Message,
    digest_not_posted_message,
    digest_posted_message,
    digest_working_message,
    problem_message,
)
from bot.slack.digest_post import post_digest
from bot.slack.edge import SlackEdge
from bot.storage import Source


def is_digest(command: dict[str, Any]) -> bool:
    """Bolt matcher: the `/voucher` text is `digest …`."""
    return parse_command(str(command.get("text", ""))).action is Action.DIGEST


def register(app: App, edge: SlackEdge) -> None:
    """Listen to `/voucher digest` (before the other `/voucher` listener: first match wins)."""

    def handle_digest(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        answer_digest_command(edge, ack=ack, command=command, respond=respond)

    app.command(COMMAND, matchers=[is_digest])(handle_digest)


def answer_digest_command(
    edge: SlackEdge, *, ack: Ack, command: dict[str, Any], respond: Respond
) -> None:
    """Check staff and the conference at once (no I/O), ack, then build and post on the worker."""
    parsed = parse_command(str(command.get("text", "")))
    user = str(command["user_id"])
    actor = Actor(Source.SLASH_COMMAND, user)
    if refused_unless_staff(edge, ack, parsed, actor):
        return
    pick = pick_conference(edge.services.conferences, parsed.target)
    code = pick.code
    if code is None:
        hint = f": say which, e.g. `{COMMAND} digest {pick.suggested}`" if pick.suggested else ""
        ack(**problem_message(f"{pick.problem or 'no conference'}{hint}").as_kwargs())
        return
    name = edge.services.conferences[code].name
    ack(**digest_working_message(name).as_kwargs())
    edge.answer_later(f"{COMMAND} digest", respond, lambda: run_digest(edge, code))


def run_digest(edge: SlackEdge, conference: str) -> Message:
    """Build the digest now and enqueue it in the conference channel; the asker's answer."""
    services = edge.services
    post = post_digest(edge.outbox, services, conference, services.clock(), False)
    if not post.posted:
        return digest_not_posted_message(post.digest, post.skipped or "unknown reason")
    return digest_posted_message(post.digest, csv_attached=post.csv_attached)
