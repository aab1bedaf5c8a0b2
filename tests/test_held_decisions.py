"""Held grants decided from Slack (Issue, Dismiss with a reason) and the Revoke button.

Signed requests to the real HTTP app; Slack, Pretix and SMTP are the local fakes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.bootstrap import Bot
from bot.services.context import ServiceContext
from bot.services.held import dismiss_held_grant, issue_held_grant
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.services.outcomes import HeldResult, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.services.status import conference_summaries
from bot.slack.blocks import (
    DISMISS_REASON_BLOCK,
    DISMISS_REASON_INPUT,
    HELD_DISMISS_ACTION,
    HELD_ISSUE_ACTION,
    REVOKE_ACTION,
)
from bot.storage import AuditEvent, Grant, Source
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GUEST_USER, SIGNING_SECRET, STAFF_USER, STAFF_USER_2
from tests.fakes.slack_requests import (
    block_action_body,
    signed_headers,
    view_submission_body,
)
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_events, post_slack_outbox


def post(http: httpx.Client, body: str, **header_options: Any) -> httpx.Response:
    headers = signed_headers(body, secret=SIGNING_SECRET, **header_options)
    return http.post("/slack/events", content=body, headers=headers)


def click(
    http: httpx.Client,
    slack_api: FakeSlack,
    action_id: str,
    grant_id: int,
    *,
    user: str = STAFF_USER,
    value: str | None = None,
) -> str:
    """Click a button on a grant's thread; returns the name of its response_url."""
    name = unique("click")
    body = block_action_body(
        action_id=action_id,
        value=str(grant_id) if value is None else value,
        user_id=user,
        response_url=slack_api.response_url(name),
    )
    assert post(http, body).status_code == 200
    return name


def answer_text(running_bot: Bot, slack_api: FakeSlack, name: str) -> str:
    running_bot.worker.join(timeout=20)
    [posted] = slack_api.wait_for_response(name, count=1, timeout=10)
    assert posted["response_type"] == "ephemeral"
    return json.dumps(posted, ensure_ascii=False)


@pytest.fixture
def bot_ctx(running_bot: Bot) -> ServiceContext:
    return running_bot.services


@pytest.fixture
def held_grant(bot_ctx: ServiceContext, grant_payload: Callable[..., GrantPayload]) -> int:
    """A confirmation from the waiting list: held for staff, its thread queued."""
    intake = ingest_grant(
        bot_ctx, payload=grant_payload(previous_status="waiting_list"), actor=TEST_ACTOR
    )
    assert intake.held and intake.grant is not None
    return intake.grant.id


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """action_id -> value of every button in a posted message."""
    found: dict[str, str] = {}
    for block in message.get("blocks") or []:
        if isinstance(block, str):
            continue
        for element in block.get("elements", []):
            if element.get("type") == "button":
                found[element["action_id"]] = element["value"]
    return found


def thread_buttons(slack_api: FakeSlack) -> dict[str, str]:
    merged: dict[str, str] = {}
    for message in slack_api.messages():
        merged |= buttons(message)
    return merged


def dismiss_via_modal(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    grant_id: int,
    *,
    user: str = STAFF_USER,
    reason: str = "Not eligible: already funded by the PSF",
) -> str:
    """Click Dismiss, then submit the modal with `reason`; the click's response_url name."""
    opened = len(slack_api.opened_views())
    name = click(http, slack_api, HELD_DISMISS_ACTION, grant_id, user=user)
    running_bot.worker.join(timeout=10)
    views = slack_api.opened_views()
    assert len(views) == opened + 1, "the reason form did not open"
    body = view_submission_body(
        user_id=user,
        view=views[-1],
        values={DISMISS_REASON_BLOCK: {DISMISS_REASON_INPUT: reason}},
    )
    response = post(http, body)
    assert response.status_code == 200
    assert not response.content or "errors" not in response.json()
    return name


def stored_grant(bot_ctx: ServiceContext, grant_id: int) -> Grant:
    with bot_ctx.db.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        return grant


def test_a_held_grant_thread_carries_issue_and_dismiss_buttons(
    running_bot: Bot, slack_api: FakeSlack, held_grant: int
) -> None:
    post_slack_outbox(running_bot)
    assert thread_buttons(slack_api) == {
        HELD_ISSUE_ACTION: str(held_grant),
        HELD_DISMISS_ACTION: str(held_grant),
    }


def test_held_issue_creates_one_voucher_even_when_clicked_twice_by_two_people(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    held_grant: int,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    first = click(http, slack_api, HELD_ISSUE_ACTION, held_grant, user=STAFF_USER)
    second = click(http, slack_api, HELD_ISSUE_ACTION, held_grant, user=STAFF_USER_2)
    answers = [answer_text(running_bot, slack_api, n) for n in (first, second)]

    [voucher] = pretix_server.all_vouchers()
    assert len(smtp_server.messages) == 1
    assert sum(voucher["code"] in a for a in answers) == 1  # the winner sees the code
    assert sum("not held any more" in a for a in answers) == 1
    assert stored_grant(bot_ctx, held_grant).hold_reason is None
    outcomes = [e.outcome for e in grant_events(bot_ctx.db, held_grant, "held_issue")]
    assert sorted(outcomes) == ["issued:created", "refused:not_held"]
    [release] = grant_events(bot_ctx.db, held_grant, "release_hold")
    assert release.actor in (f"button:{STAFF_USER}", f"button:{STAFF_USER_2}")


def test_held_dismiss_asks_why_records_who_and_the_grant_leaves_the_held_lists(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    held_grant: int,
    pretix_server: FakePretix,
) -> None:
    conference = stored_conference_code(bot_ctx, held_grant)
    assert summary_held(bot_ctx, conference) == 1
    name = dismiss_via_modal(http, slack_api, running_bot, held_grant)

    text = answer_text(running_bot, slack_api, name)
    assert "Dismissed" in text and "already funded by the PSF" in text
    grant = stored_grant(bot_ctx, held_grant)
    assert grant.dismissed_by == f"button:{STAFF_USER}"
    assert grant.dismiss_reason == "Not eligible: already funded by the PSF"
    assert grant.dismissed_at is not None
    assert summary_held(bot_ctx, conference) == 0
    # The reconciler never provisions it, and nothing reached Pretix.
    provisioned = reconcile_once(bot_ctx).provisioned
    assert [o for o in provisioned if o.grant and o.grant.id == held_grant] == []
    assert pretix_server.all_vouchers() == []
    [event] = grant_events(bot_ctx.db, held_grant, "held_dismiss")
    assert (event.actor, event.outcome) == (f"button:{STAFF_USER}", "dismissed")
    assert event.detail is not None and event.detail["reason"].startswith("Not eligible")
    # The thread hears who dismissed it and why.
    post_slack_outbox(running_bot)
    thread = json.dumps(slack_api.messages(), ensure_ascii=False)
    assert f"Dismissed by <@{STAFF_USER}>" in thread and "already funded" in thread


def test_a_second_dismiss_or_a_late_issue_says_who_dismissed_it_and_changes_nothing(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    held_grant: int,
    pretix_server: FakePretix,
) -> None:
    answer_text(running_bot, slack_api, dismiss_via_modal(http, slack_api, running_bot, held_grant))
    opened = len(slack_api.opened_views())

    again = click(http, slack_api, HELD_DISMISS_ACTION, held_grant, user=STAFF_USER_2)
    late_issue = click(http, slack_api, HELD_ISSUE_ACTION, held_grant, user=STAFF_USER_2)

    for name in (again, late_issue):
        text = answer_text(running_bot, slack_api, name)
        assert f"already dismissed by <@{STAFF_USER}>" in text
        assert "already funded by the PSF" in text
    assert len(slack_api.opened_views()) == opened  # no second form
    assert pretix_server.all_vouchers() == []
    assert stored_grant(bot_ctx, held_grant).dismissed_by == f"button:{STAFF_USER}"
    outcomes = [e.outcome for e in grant_events(bot_ctx.db, held_grant)]
    assert outcomes.count("refused:already_dismissed") == 2


def test_the_same_dismissal_submitted_twice_dismisses_once(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    held_grant: int,
) -> None:
    click(http, slack_api, HELD_DISMISS_ACTION, held_grant)
    running_bot.worker.join(timeout=10)
    [view] = slack_api.opened_views()
    values = {DISMISS_REASON_BLOCK: {DISMISS_REASON_INPUT: "duplicate application"}}
    body = view_submission_body(user_id=STAFF_USER, view=view, values=values)
    assert post(http, body).status_code == 200
    running_bot.worker.join(timeout=10)  # Slack redelivers only after its 3-second timeout
    assert post(http, body, retry_num=1, retry_reason="http_timeout").status_code == 200
    other = view_submission_body(user_id=STAFF_USER_2, view=view, values=values)
    assert post(http, other).status_code == 200
    running_bot.worker.join(timeout=10)

    outcomes = sorted(e.outcome for e in grant_events(bot_ctx.db, held_grant, "held_dismiss"))
    assert outcomes == ["dismissed", "refused:already_dismissed"]


def test_a_reason_too_short_keeps_the_form_open_with_an_error(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    held_grant: int,
) -> None:
    click(http, slack_api, HELD_DISMISS_ACTION, held_grant)
    running_bot.worker.join(timeout=10)
    [view] = slack_api.opened_views()
    assert view["callback_id"] and view["title"]["text"] == "Dismiss held grant"
    body = view_submission_body(
        user_id=STAFF_USER, view=view, values={DISMISS_REASON_BLOCK: {DISMISS_REASON_INPUT: " "}}
    )
    response = post(http, body)

    assert response.json()["response_action"] == "errors"
    assert DISMISS_REASON_BLOCK in response.json()["errors"]
    running_bot.worker.join(timeout=5)
    assert stored_grant(bot_ctx, held_grant).dismissed_at is None


def test_non_staff_clicks_are_refused_audited_and_change_nothing(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    held_grant: int,
    pretix_server: FakePretix,
) -> None:
    names = [
        click(http, slack_api, action, held_grant, user=GUEST_USER)
        for action in (HELD_ISSUE_ACTION, HELD_DISMISS_ACTION, REVOKE_ACTION)
    ]
    for name in names:
        assert "staff" in answer_text(running_bot, slack_api, name).lower()
    # A submitted form is checked again (a form opened by staff, submitted by someone else).
    view = {
        "type": "modal",
        "callback_id": "held_dismiss_reason",
        "private_metadata": json.dumps({"grant_id": held_grant, "response_url": None}),
    }
    body = view_submission_body(
        user_id=GUEST_USER,
        view=view,
        values={DISMISS_REASON_BLOCK: {DISMISS_REASON_INPUT: "not wanted"}},
    )
    assert post(http, body).status_code == 200
    running_bot.worker.join(timeout=10)

    assert slack_api.opened_views() == []
    assert pretix_server.all_vouchers() == []
    grant = stored_grant(bot_ctx, held_grant)
    assert grant.hold_reason is not None and grant.dismissed_at is None
    with bot_ctx.db.transaction() as session:
        denied = session.scalars(
            select(AuditEvent).where(
                AuditEvent.actor == f"button:{GUEST_USER}", AuditEvent.grant_id == held_grant
            )
        ).all()
    assert sorted((e.action, e.outcome) for e in denied) == [
        ("held_dismiss", "denied"),
        ("held_dismiss", "denied"),
        ("held_issue", "denied"),
        ("revoke_button", "denied"),
    ]


def test_a_refusal_after_the_voucher_was_issued_gets_a_revoke_button_that_works(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    pretix_server: FakePretix,
) -> None:
    confirmed = grant_payload()
    intake = ingest_grant(bot_ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    grant_id = intake.grant.id
    issued = provision_grant_voucher(bot_ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert issued.result is ProvisionResult.CREATED
    refused = confirmed.model_copy(
        update={"status": "refused", "updated_at": confirmed.updated_at.replace(hour=12)}
    )
    assert ingest_grant(bot_ctx, payload=refused, actor=TEST_ACTOR).refused_with_voucher
    post_slack_outbox(running_bot)
    assert thread_buttons(slack_api).get(REVOKE_ACTION) == str(grant_id)

    name = click(http, slack_api, REVOKE_ACTION, grant_id)

    text = answer_text(running_bot, slack_api, name)
    assert "revoked" in text
    assert pretix_server.all_vouchers() == []
    post_slack_outbox(running_bot)
    replies = [m for m in slack_api.messages() if m.get("thread_ts") and m["ts"] != m["thread_ts"]]
    assert "revoked" in replies[-1]["text"]
    [event] = grant_events(bot_ctx.db, grant_id, "revoke")
    assert (event.actor, event.outcome) == (f"button:{STAFF_USER}", "revoked")


def test_issue_and_dismiss_racing_have_exactly_one_winner(
    ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    pretix_server: FakePretix,
) -> None:
    from bot.services.actors import Actor

    for _ in range(3):
        intake = ingest_grant(
            ctx, payload=grant_payload(previous_status="pending"), actor=TEST_ACTOR
        )
        assert intake.grant is not None and intake.held
        grant_id = intake.grant.id

        def decide(n: int, grant_id: int = grant_id) -> HeldResult:
            actor = Actor(Source.BUTTON, f"U0RACE{n}")
            if n % 2:
                return issue_held_grant(ctx, grant_id=grant_id, actor=actor).result
            return dismiss_held_grant(ctx, grant_id=grant_id, actor=actor, reason="race").result

        before = len(pretix_server.all_vouchers())
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(decide, range(6)))
        winners = [r for r in results if r in (HeldResult.ISSUED, HeldResult.DISMISSED)]
        assert len(winners) == 1, results
        issued = winners[0] is HeldResult.ISSUED
        assert len(pretix_server.all_vouchers()) == before + (1 if issued else 0)
        with ctx.db.transaction() as session:
            grant = session.get(Grant, grant_id)
            assert grant is not None
            assert (grant.dismissed_at is None) == issued


def test_a_new_confirmation_of_a_dismissed_grant_is_held_again_for_a_new_decision(
    ctx: ServiceContext, grant_payload: Callable[..., GrantPayload]
) -> None:
    from bot.services.actors import Actor

    first = grant_payload(previous_status="waiting_list")
    intake = ingest_grant(ctx, payload=first, actor=TEST_ACTOR)
    assert intake.grant is not None
    staff = Actor(Source.BUTTON, STAFF_USER)
    assert (
        dismiss_held_grant(ctx, grant_id=intake.grant.id, actor=staff, reason="dup").result
        is HeldResult.DISMISSED
    )
    later = first.updated_at
    ingest_grant(
        ctx,
        payload=first.model_copy(
            update={"status": "refused", "updated_at": later.replace(hour=11)}
        ),
        actor=TEST_ACTOR,
    )
    again = ingest_grant(
        ctx,
        payload=first.model_copy(
            update={"previous_status": "refused", "updated_at": later.replace(hour=12)}
        ),
        actor=TEST_ACTOR,
    )
    assert again.held
    with ctx.db.transaction() as session:
        grant = session.get(Grant, intake.grant.id)
        assert grant is not None
        assert grant.dismissed_at is None and grant.hold_reason is not None


def test_a_dismissal_needs_a_reason(ctx: ServiceContext, make_grant: Callable[..., int]) -> None:
    from bot.services.actors import Actor

    grant_id = make_grant(previous_status="waiting_list")
    outcome = dismiss_held_grant(
        ctx, grant_id=grant_id, actor=Actor(Source.BUTTON, STAFF_USER), reason="  \n "
    )
    assert outcome.result is HeldResult.REASON_MISSING
    assert [e.outcome for e in grant_events(ctx.db, grant_id, "held_dismiss")] == [
        "refused:reason_missing"
    ]


def stored_conference_code(bot_ctx: ServiceContext, grant_id: int) -> str:
    from bot.storage import Conference

    with bot_ctx.db.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        conference = session.get(Conference, grant.conference_id)
        assert conference is not None
        return conference.code


def summary_held(bot_ctx: ServiceContext, code: str) -> int:
    [summary] = [s for s in conference_summaries(bot_ctx.db) if s.code == code]
    return summary.held


def test_status_tells_a_dismissed_grant_from_a_held_one(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    from bot.services.actors import Actor
    from bot.services.status import grant_status
    from bot.slack.blocks import status_message

    grant_id = make_grant(previous_status="waiting_list")
    held = grant_status(ctx.db, grant_id=grant_id)
    assert held is not None and held.hold_reason and held.dismissed is None
    staff = Actor(Source.BUTTON, STAFF_USER)
    dismiss_held_grant(ctx, grant_id=grant_id, actor=staff, reason="withdrew by email")

    report = grant_status(ctx.db, grant_id=grant_id)
    assert report is not None and report.hold_reason is None
    assert report.dismissed is not None
    assert f"by button:{STAFF_USER}" in report.dismissed and "withdrew by email" in report.dismissed
    shown = json.dumps(status_message(report).blocks)
    assert "Dismissed, no voucher:" in shown and "Held for staff" not in shown


def test_voucher_issue_by_hand_still_issues_a_dismissed_grant_and_clears_the_dismissal(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    from bot.services.actors import Actor

    grant_id = make_grant(previous_status="waiting_list")
    dismiss_held_grant(
        ctx, grant_id=grant_id, actor=Actor(Source.BUTTON, STAFF_USER), reason="by mistake"
    )
    outcome = provision_grant_voucher(
        ctx, grant_id=grant_id, actor=Actor(Source.SLASH_COMMAND, STAFF_USER), release_hold=True
    )

    assert outcome.result is ProvisionResult.CREATED
    assert len(pretix_server.all_vouchers()) == 1
    with ctx.db.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        assert grant.hold_reason is None and grant.dismissed_at is None
    assert [e.outcome for e in grant_events(ctx.db, grant_id, "held_dismiss")] == ["dismissed"]
