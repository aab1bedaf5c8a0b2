"""Buttons: Retry on a failed step in a grantee's status thread."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.commands.held import Click, answer
from bot.services.actors import Actor
from bot.services.audit import write_audit_event
from bot.services.retry import retry_grant
from bot.slack.blocks import (
    LEGACY_RETRY_ACTION,
    RETRY_ACTION,
    not_staff_message,
    problem_message,
    provision_result_message,
)
from bot.slack.edge import SlackEdge
from bot.storage import Source


def register(app: App, edge: SlackEdge) -> None:
    """Listen to the Retry button."""

    def handle_retry(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        answer_retry(edge, ack=ack, body=body, respond=respond)

    app.action(RETRY_ACTION)(handle_retry)
    app.action(LEGACY_RETRY_ACTION)(handle_retry)  # buttons posted before the rename


def answer_retry(edge: SlackEdge, *, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
    """Ack, check staff on the server (never trust the message), retry in the background.

    Runs on the event loop: everything that talks to the network goes to the worker.
    """
    ack()
    user = str(body["user"]["id"])
    value = str(body["actions"][0].get("value", ""))
    actor = Actor(Source.BUTTON, user)
    if not edge.staff.is_staff(user):

        def refuse() -> None:
            answer(edge, Click(body), not_staff_message())
            write_audit_event(
                edge.services.db,
                actor=actor,
                action="retry",
                outcome="denied",
                detail={"value": value, "reason": "not staff"},
            )

        edge.worker.submit("refuse retry", refuse)
        return
    if not value.isdigit():
        broken = problem_message("this button is broken (no grant id)")
        edge.worker.submit("broken button", lambda: respond(**broken.as_kwargs()))
        return

    if not body.get("response_url"):  # clicked in App Home: the answer goes on top of it
        click = Click(body)
        edge.worker.submit(
            "retry button",
            lambda: answer(
                edge,
                click,
                provision_result_message(
                    retry_grant(edge.services, grant_id=int(value), actor=actor)
                ),
            ),
        )
        return
    edge.answer_later(
        "retry button",
        respond,
        lambda: provision_result_message(
            retry_grant(edge.services, grant_id=int(value), actor=actor)
        ),
    )
