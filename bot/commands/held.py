"""Buttons that decide: a held grant's Issue and Dismiss (with its reason modal), Revoke.

Each click is acked at once; staff are checked on the server (never trusting the message);
refusals are audited; the work runs on the worker and the answer is ephemeral (the
button's response_url). A click in App Home has no response_url: the answer is shown at the
top of the person's refreshed Home instead. A double click (one delivery twice, or two
people) has one effect: the services decide once, with a conditional UPDATE.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.services.actors import Actor
from bot.services.held import (
    HeldCase,
    audit_refused_click,
    dismiss_held_grant,
    issue_held_grant,
    open_case,
)
from bot.services.outcomes import HeldDecision
from bot.services.revocation import revoke_grant_voucher
from bot.slack.blocks import (
    DISMISS_REASON_BLOCK,
    DISMISS_VIEW,
    HELD_DISMISS_ACTION,
    HELD_ISSUE_ACTION,
    REVOKE_ACTION,
    Message,
    dismiss_modal,
    dismiss_reason,
    error_message,
    held_result_message,
    not_staff_message,
    problem_message,
    revoke_result_message,
)
from bot.slack.edge import SlackEdge
from bot.storage import Source

log = structlog.get_logger(__name__)

MIN_REASON = 3


def register(app: App, edge: SlackEdge) -> None:
    """Listen to the held grant's buttons, the dismissal modal and the Revoke button."""

    def handle_issue(ack: Ack, body: dict[str, Any]) -> None:
        on_click(edge, ack=ack, body=body, action=HeldDecision.ISSUE.value, work=_issue)

    def handle_dismiss(ack: Ack, body: dict[str, Any]) -> None:
        on_click(edge, ack=ack, body=body, action=HeldDecision.DISMISS.value, work=_ask_reason)

    def handle_revoke(ack: Ack, body: dict[str, Any]) -> None:
        on_click(edge, ack=ack, body=body, action="revoke_button", work=_revoke)

    def handle_reason(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        on_dismiss_submitted(edge, ack=ack, body=body, view=view)

    app.action(HELD_ISSUE_ACTION)(handle_issue)
    app.action(HELD_DISMISS_ACTION)(handle_dismiss)
    app.action(REVOKE_ACTION)(handle_revoke)
    app.view(DISMISS_VIEW)(handle_reason)


# What a click does once it is known to come from staff: (edge, grant id, actor, click)
# -> the answer, or None when it answers by itself (a modal opened).
_Work = Callable[[SlackEdge, int, Actor, "Click"], Message | None]


class Click:
    """Who clicked, where, and how to answer them (response_url, or their App Home)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.user = str(body["user"]["id"])
        actions = body.get("actions") or [{}]
        self.value = str(actions[0].get("value", ""))
        self.trigger_id = str(body.get("trigger_id") or "")
        self.response_url: str | None = body.get("response_url")
        container = body.get("container") or {}
        self.in_home = container.get("type") == "view" or (
            (body.get("view") or {}).get("type") == "home"
        )

    @property
    def actor(self) -> Actor:
        """The audit log's name for the person who clicked."""
        return Actor(Source.BUTTON, self.user)


def answer(edge: SlackEdge, click: Click, message: Message) -> None:
    """Tell the person who clicked: ephemerally in the channel, or on top of their Home."""
    if click.response_url:
        try:
            WebhookClient(click.response_url, timeout=10).send(
                **message.as_kwargs(), response_type="ephemeral", replace_original=False
            )
        except Exception:  # the decision is made and audited; only the answer is lost
            log.exception("answer to a click not delivered")
        return
    if edge.home is not None:
        edge.home.show(click.user, notice=message)


def on_click(
    edge: SlackEdge, *, ack: Ack | None, body: dict[str, Any], action: str, work: _Work
) -> None:
    """Ack (unless the caller did), check staff on the server, work on the worker, answer."""
    if ack is not None:
        ack()
    click = Click(body)
    services = edge.services
    if not edge.staff.is_staff(click.user):

        def refuse() -> None:
            audit_refused_click(
                services, actor=click.actor, action=action, value=click.value, reason="not staff"
            )
            answer(edge, click, not_staff_message())

        edge.worker.submit(f"refuse {action}", refuse)
        return
    if not click.value.isdigit():
        broken = problem_message("this button is broken (no grant id)")
        edge.worker.submit("broken button", lambda: answer(edge, click, broken))
        return

    def job() -> None:
        try:
            message = work(edge, int(click.value), click.actor, click)
        except Exception:
            log.exception("button failed", action=action)
            message = error_message()
        if message is not None:
            answer(edge, click, message)

    edge.worker.submit(action, job)


def _issue(edge: SlackEdge, grant_id: int, actor: Actor, click: Click) -> Message:
    return held_result_message(issue_held_grant(edge.services, grant_id=grant_id, actor=actor))


def _revoke(edge: SlackEdge, grant_id: int, actor: Actor, click: Click) -> Message:
    return revoke_result_message(
        revoke_grant_voucher(edge.services, grant_id=grant_id, actor=actor)
    )


def _ask_reason(edge: SlackEdge, grant_id: int, actor: Actor, click: Click) -> Message | None:
    """Open the reason modal, unless the grant is decided already (then say by whom)."""
    case = open_case(edge.services, grant_id=grant_id, actor=actor, decision=HeldDecision.DISMISS)
    if not isinstance(case, HeldCase):
        return held_result_message(case)
    metadata = json.dumps(
        {"grant_id": grant_id, "response_url": click.response_url, "home": click.in_home}
    )
    view = dismiss_modal(grant=case.grant, hold_reason=case.hold_reason, metadata=metadata)
    try:
        edge.client.views_open(trigger_id=click.trigger_id, view=view)
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error")
        log.warning("views.open failed", error=error)
        return problem_message(
            f"Slack did not open the form ({error}); press Dismiss again "
            "(the form must open within 3 seconds of the click)."
        )
    return None


def on_dismiss_submitted(
    edge: SlackEdge, *, ack: Ack, body: dict[str, Any], view: dict[str, Any]
) -> None:
    """The reason modal was submitted: check the reason, close it, then as a click."""
    reason = dismiss_reason(view)
    if len(reason) < MIN_REASON:
        ack(
            response_action="errors",
            errors={DISMISS_REASON_BLOCK: f"Say in a few words why (at least {MIN_REASON})."},
        )
        return
    ack()
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
        grant_id = int(metadata["grant_id"])
    except (ValueError, KeyError, TypeError):
        log.warning("dismissal form without a grant id")
        return

    def dismiss(edge: SlackEdge, grant_id: int, actor: Actor, click: Click) -> Message:
        outcome = dismiss_held_grant(edge.services, grant_id=grant_id, actor=actor, reason=reason)
        return held_result_message(outcome)

    submitted = {
        "user": {"id": str(body["user"]["id"])},
        "actions": [{"value": str(grant_id)}],
        "response_url": metadata.get("response_url"),
        "container": {"type": "view" if metadata.get("home") else "message"},
    }
    # The staff check runs again: the submitter is checked, not the one who opened the form.
    on_click(edge, ack=None, body=submitted, action=HeldDecision.DISMISS.value, work=dismiss)
