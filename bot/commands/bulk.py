"""Bulk issuance in Slack: `/voucher bulk [conference]` and the Approve, Reject, Retry buttons.

Every listener acks at once and does its work on the worker. The command freezes the list
(`request_bulk`) and posts the preview card in the conference channel through the outbox;
the asker hears where it went. A click is checked on the server (staff only; the bulk
service decides exactly once, refuses the requester's own approval unless allowed, and
expires late clicks), the card is edited through the outbox, and a loser hears who won.
An approval starts `run_bulk` on the background worker with the Slack reporter, which keeps
the same card current and puts the summary in its thread.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from slack_bolt import Ack, App, Respond

from bot.commands.parsing import VoucherCommand
from bot.services.actors import Actor
from bot.services.audit import write_audit_event
from bot.services.bulk import (
    BulkConferenceError,
    BulkDecision,
    BulkPreview,
    BulkRequestError,
    DecisionResult,
    decide_bulk,
    request_bulk,
    resolve_conference,
    retry_failed,
    run_bulk,
)
from bot.slack.blocks import (
    BULK_APPROVE_ACTION,
    BULK_REJECT_ACTION,
    BULK_RETRY_FAILED_ACTION,
    BulkCard,
    Message,
    bulk_already_decided_message,
    bulk_card_message,
    bulk_command_answer,
    bulk_refusal_message,
    bulk_working_message,
    not_staff_message,
    problem_message,
)
from bot.slack.edge import SlackEdge
from bot.storage import BulkStatus, Source

log = structlog.get_logger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    """Listen to the three bulk buttons (the command comes through `/voucher`)."""

    def handle_approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        answer_decision(edge, ack=ack, body=body, respond=respond, approve=True)

    def handle_reject(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        answer_decision(edge, ack=ack, body=body, respond=respond, approve=False)

    def handle_retry_failed(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        answer_retry_failed(edge, ack=ack, body=body, respond=respond)

    app.action(BULK_APPROVE_ACTION)(handle_approve)
    app.action(BULK_REJECT_ACTION)(handle_reject)
    app.action(BULK_RETRY_FAILED_ACTION)(handle_retry_failed)


# --- /voucher bulk [conference] -----------------------------------------------------------------


def answer_bulk_command(
    edge: SlackEdge, *, ack: Ack, parsed: VoucherCommand, actor: Actor, respond: Respond
) -> None:
    """Ack at once (staff was checked by `/voucher`); freeze and post in the background."""
    ack(**bulk_working_message(parsed.conference).as_kwargs())
    edge.answer_later(
        "/voucher bulk", respond, lambda: run_bulk_command(edge, parsed.conference, actor)
    )


def run_bulk_command(edge: SlackEdge, conference: str | None, actor: Actor) -> Message:
    """Freeze the candidates, post the preview card; what to tell the asker."""
    services = edge.services
    try:
        config = resolve_conference(services, conference)
    except BulkConferenceError as exc:
        return problem_message(str(exc))
    if not config.slack_channel:
        return problem_message(
            f"{config.name} has no slack_channel in the conference file, so nobody could "
            "approve a bulk request in Slack; set one, or use the command line "
            "(voucher-bot bulk run)"
        )
    preview = request_bulk(services, conference=config.code, actor=actor, ttl=_ttl(edge))
    return _posted(edge, preview)


def _posted(edge: SlackEdge, preview: BulkPreview) -> Message:
    """Post a preview's card (when something is due) and say where it went."""
    if preview.request is None:
        # Nothing due: nothing was stored and there is nothing to approve; the counts are
        # the asker's answer.
        card = BulkCard(
            request_id=None,
            conference=preview.conference,
            conference_name=preview.conference_name,
            requested_by="",
            expires_at=edge.services.clock(),
            branches={b.value: n for b, n in preview.counts.items()},
            grantees=[],
        )
        return bulk_card_message(card)
    edge.bulk.post_preview(preview)
    return bulk_command_answer(
        channel=preview.slack_channel or "",
        request_id=preview.request.request_id,
        due=preview.to_do,
    )


# --- Approve and Reject ------------------------------------------------------------------------


def answer_decision(
    edge: SlackEdge, *, ack: Ack, body: dict[str, Any], respond: Respond, approve: bool
) -> None:
    """Ack, check staff on the server, decide in the background; a win edits the card."""
    ack()
    action = "bulk_approve" if approve else "bulk_reject"
    checked = _checked_click(edge, body, respond, action)
    if checked is None:
        return
    actor, request_id = checked
    edge.worker.submit(
        action, lambda: _decide(edge, actor, request_id, approve=approve, respond=respond)
    )


def _decide(
    edge: SlackEdge, actor: Actor, request_id: int, *, approve: bool, respond: Respond
) -> None:
    decision = decide_bulk(
        edge.services,
        request_id=request_id,
        actor=actor,
        approve=approve,
        allow_self_approval=edge.settings.bulk_allow_self_approval,
    )
    if decision.result in (DecisionResult.APPROVED, DecisionResult.REJECTED):
        edge.bulk.show(request_id)
        if decision.result is DecisionResult.APPROVED:
            edge.background.submit(
                "bulk run", lambda: _run(edge, actor, request_id, just_updated=True)
            )
        return
    if decision.result is DecisionResult.EXPIRED:
        edge.bulk.show(request_id)  # the click found it late: the card says so now
    _tell(respond, _refusal(decision))


def _refusal(decision: BulkDecision) -> Message:
    request = decision.request
    if decision.result is DecisionResult.ALREADY_DECIDED and request is not None:
        return bulk_already_decided_message(
            request.request_id,
            approved=request.status is not BulkStatus.REJECTED,
            winner=decision.winner,
            when=request.decided_at,
        )
    return bulk_refusal_message(decision.message)


def _run(edge: SlackEdge, actor: Actor, request_id: int, *, just_updated: bool) -> None:
    reporter = edge.bulk.reporter_for(request_id, just_updated=just_updated)
    summary = run_bulk(edge.services, request_id=request_id, actor=actor, reporter=reporter)
    log.info("bulk run ended", request=request_id, outcome=summary.outcome.value)


# --- Retry failed ------------------------------------------------------------------------------


def answer_retry_failed(
    edge: SlackEdge, *, ack: Ack, body: dict[str, Any], respond: Respond
) -> None:
    """Ack, check staff, then a new request over the failed grantees, posted as a preview."""
    ack()
    checked = _checked_click(edge, body, respond, "bulk_retry_failed")
    if checked is None:
        return
    actor, request_id = checked

    def work() -> Message:
        try:
            preview = retry_failed(
                edge.services, request_id=request_id, actor=actor, ttl=_ttl(edge)
            )
        except (BulkRequestError, BulkConferenceError) as exc:
            return problem_message(str(exc))
        return _posted(edge, preview)

    edge.answer_later("bulk retry failed", respond, work)


# --- shared ------------------------------------------------------------------------------------


def _checked_click(
    edge: SlackEdge, body: dict[str, Any], respond: Respond, action: str
) -> tuple[Actor, int] | None:
    """The clicker and the request id, or None after refusing (and auditing) the click."""
    user = str(body["user"]["id"])
    value = str(body["actions"][0].get("value", ""))
    actor = Actor(Source.BUTTON, user)
    if not edge.staff.is_staff(user):

        def refuse() -> None:
            _tell(respond, not_staff_message())
            write_audit_event(
                edge.services.db,
                actor=actor,
                action=action,
                outcome="denied",
                detail={"value": value, "reason": "not staff"},
            )

        edge.worker.submit(f"refuse {action}", refuse)
        return None
    if not value.isdigit():
        broken = problem_message("this button is broken (no bulk request id)")
        edge.worker.submit("broken button", lambda: _tell(respond, broken))
        return None
    return actor, int(value)


def _tell(respond: Respond, message: Message) -> None:
    respond(**message.as_kwargs(), response_type="ephemeral", replace_original=False)


def _ttl(edge: SlackEdge) -> dt.timedelta:
    return dt.timedelta(minutes=edge.settings.bulk_request_ttl_minutes)
