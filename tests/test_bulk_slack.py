"""Bulk issuance in Slack over signed HTTP: the command, the four-eyes buttons, the one card.

The real app under uvicorn, the fake Slack Web API counting calls, the Pretix fake and a
real SMTP server. The outbox is delivered by the bot's own poster (`run_once`, or its
thread where timing matters); time for expiry is the services' injected clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.scheduler import build_scheduler
from bot.server import create_web_app
from bot.services.actors import Actor
from bot.services.bulk import DecisionResult, decide_bulk, get_request
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.slack.blocks import (
    BULK_APPROVE_ACTION,
    BULK_REJECT_ACTION,
    BULK_RETRY_FAILED_ACTION,
    MAX_BLOCKS,
    TEXT_LIMIT,
)
from bot.slack.bulk_card import MIN_UPDATE_SECONDS, card_ref
from bot.storage import (
    AuditEvent,
    BulkStatus,
    Conference,
    Grant,
    OutboxKind,
    SlackOutbox,
    Source,
)
from tests.conftest import TEST_ACTOR, serve_app, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack, SlackCall
from tests.fakes.slack_fixtures import (
    GUEST_USER,
    SIGNING_SECRET,
    STAFF_GROUP,
    STAFF_USER,
    STAFF_USER_2,
)
from tests.fakes.slack_requests import block_action_body, signed_headers, slash_command_body
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import post_slack_outbox

STAFF_USER_3 = "U0STAFF3"


@pytest.fixture
def conference(conference: ConferenceConfig, slack_api: FakeSlack) -> ConferenceConfig:
    """The test's conference with a channel of its own.

    Tests share the database and every fake Slack hands out the same ts sequence, so a card
    another test left in the outbox must never land on this test's messages.
    """
    channel = f"C{unique('').upper()}"
    slack_api.add_channel(channel, f"grants-{channel.lower()}")
    return conference.model_copy(update={"slack_channel": channel})


@pytest.fixture(autouse=True)
def third_staff_member(slack_api: FakeSlack) -> None:
    """Carol, a third member of staff, so two approvers can race besides the requester."""
    slack_api.add_user(STAFF_USER_3, email="carol@pycon.example.org", name="carol")
    slack_api.add_usergroup(STAFF_GROUP, [STAFF_USER, STAFF_USER_2, STAFF_USER_3])


def confirmed(ctx: ServiceContext, grant_payload: Callable[..., GrantPayload], count: int) -> None:
    for _ in range(count):
        intake = ingest_grant(ctx, payload=grant_payload(), actor=TEST_ACTOR)
        assert intake.grant is not None


def post(http: httpx.Client, body: str, **options: Any) -> httpx.Response:
    response = http.post(
        "/slack/events",
        content=body,
        headers=signed_headers(body, secret=SIGNING_SECRET, **options),
    )
    assert response.status_code == 200
    return response


def settle(bot: Bot) -> None:
    """Let every background job finish, then deliver the outbox as the poster would."""
    for _ in range(3):
        assert bot.worker.join(timeout=60) and bot.background.join(timeout=120)
        post_slack_outbox(bot)


def ask_for_bulk(
    http: httpx.Client, slack_api: FakeSlack, bot: Bot, conference: str, *, user: str = STAFF_USER
) -> tuple[httpx.Response, dict[str, Any]]:
    """`/voucher bulk CONF`: the ack and the background answer to the asker."""
    name = unique("resp")
    body = slash_command_body(
        text=f"bulk {conference}", user_id=user, response_url=slack_api.response_url(name)
    )
    ack = post(http, body)
    settle(bot)
    [answer] = slack_api.wait_for_response(name, count=1, timeout=30)
    return ack, answer


def card_of(slack_api: FakeSlack, request_id: int) -> dict[str, Any]:
    """The bulk request's message in the conference channel, in its latest state."""
    for message in slack_api.messages():  # request ids are unique across tests
        top_level = message.get("thread_ts", message["ts"]) == message["ts"]
        if f"#{request_id} " in message.get("text", "") and top_level:
            return message
    raise AssertionError(f"no card for bulk request #{request_id}: {slack_api.messages()}")


def replies(slack_api: FakeSlack, card: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages in a card's thread (the summary, ...), the card itself left out."""
    return [
        m
        for m in slack_api.messages(card["channel"])
        if m.get("thread_ts") == card["ts"] and m["ts"] != card["ts"]
    ]


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in message.get("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def request_id_of(answer: dict[str, Any]) -> int:
    text = answer["text"]
    return int(text.split("#", 1)[1].split(" ", 1)[0])


def click(
    http: httpx.Client,
    slack_api: FakeSlack,
    action: str,
    value: int,
    *,
    user: str,
    message: dict[str, Any] | None = None,
    body: str | None = None,
    **options: Any,
) -> tuple[str, str]:
    """Click a bulk button as Slack sends it; the response_url name and the body sent."""
    name = unique("click")
    body = body or block_action_body(
        action_id=action,
        value=str(value),
        user_id=user,
        response_url=slack_api.response_url(name),
        message=message,
    )
    post(http, body, **options)
    return name, body


def in_channel(slack_api: FakeSlack, method: str, channel: str) -> list[SlackCall]:
    """The calls of `method` that went to `channel` (the test's own conference channel)."""
    return [c for c in slack_api.calls(method) if c.args.get("channel") == channel]


def card_updates(slack_api: FakeSlack, card: dict[str, Any]) -> list[SlackCall]:
    return [
        c
        for c in in_channel(slack_api, "chat.update", card["channel"])
        if c.args.get("ts") == card["ts"] and c.status == 200
    ]


def audit(db: Any, action: str) -> list[AuditEvent]:
    with db.transaction() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def events_of(db: Any, action: str, request_id: int) -> list[tuple[str, str]]:
    return [
        (e.actor, e.outcome)
        for e in audit(db, action)
        if (e.detail or {}).get("request") == request_id
    ]


def shown(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks"), ensure_ascii=False)


@pytest.fixture
def ctx3(
    running_bot: Bot, ctx: ServiceContext, grant_payload: Callable[..., GrantPayload]
) -> ServiceContext:
    """The running bot's services with three confirmed grantees due a new voucher.

    The grants are stored through a context without the Slack listener, so the channel
    holds only what the bulk request posts.
    """
    confirmed(ctx, grant_payload, 3)
    return running_bot.services


def test_bulk_posts_one_preview_card_in_the_conference_channel_and_tells_the_asker(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    ack, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)

    assert "Freezing the list" in ack.json()["text"]
    assert answer["response_type"] == "ephemeral"
    assert f"<#{conference.slack_channel}>" in json.dumps(answer["blocks"])
    request_id = request_id_of(answer)
    card = card_of(slack_api, request_id)
    assert buttons(card) == [
        (BULK_APPROVE_ACTION, str(request_id)),
        (BULK_REJECT_ACTION, str(request_id)),
    ]
    assert f"<!subteam^{STAFF_GROUP}>" in shown(card) and f"<@{STAFF_USER}>" in shown(card)
    assert "*3* new vouchers" in shown(card) and "Jane Doe" in shown(card)
    assert pretix_server.writes() == []  # nothing is done before approval
    assert [u for u in slack_api.uploads() if u.channel == card["channel"]] == []  # no CSV
    assert running_bot.slack is not None
    assert running_bot.slack.outbox.ts(card_ref(request_id)) == card["ts"]


def test_nothing_due_says_so_and_posts_no_buttons(
    http: httpx.Client, slack_api: FakeSlack, running_bot: Bot, conference: ConferenceConfig
) -> None:
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)

    assert "Nothing is due" in json.dumps(answer["blocks"])
    assert "actions" not in json.dumps(answer["blocks"])
    assert in_channel(slack_api, "chat.postMessage", conference.slack_channel or "") == []


def test_non_staff_can_neither_ask_nor_click_and_every_refusal_is_audited(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    name = unique("resp")
    body = slash_command_body(
        text=f"bulk {conference.code}",
        user_id=GUEST_USER,
        response_url=slack_api.response_url(name),
    )
    assert "staff" in post(http, body).json()["text"]
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)

    for action in (BULK_APPROVE_ACTION, BULK_REJECT_ACTION, BULK_RETRY_FAILED_ACTION):
        clicked, _ = click(http, slack_api, action, request_id, user=GUEST_USER)
        settle(running_bot)
        [refusal] = slack_api.wait_for_response(clicked)
        assert "only grants staff" in refusal["text"] and refusal["response_type"] == "ephemeral"
        assert [(e.actor, e.outcome) for e in audit(ctx3.db, action)][-1] == (
            f"button:{GUEST_USER}",
            "denied",
        )
    guest_commands = [e for e in audit(ctx3.db, "slash_bulk") if e.actor.endswith(GUEST_USER)]
    assert guest_commands and guest_commands[-1].outcome == "denied"
    request = get_request(ctx3, request_id)
    assert request is not None and request.status is BulkStatus.AWAITING_APPROVAL
    assert pretix_server.writes() == []


def test_self_approval_is_refused_then_another_member_approves_and_it_runs_once(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)
    card = card_of(slack_api, request_id)

    mine, _ = click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER, message=card)
    settle(running_bot)
    [refusal] = slack_api.wait_for_response(mine)
    assert "another member of staff must approve" in refusal["text"]
    assert buttons(card_of(slack_api, request_id))  # still waiting for a second person
    assert pretix_server.writes() == []

    click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER_2, message=card)
    settle(running_bot)

    card = card_of(slack_api, request_id)
    assert buttons(card) == []
    assert f"*Approved* by <@{STAFF_USER_2}>" in shown(card) and "*Done*" in shown(card)
    assert "created 3" in shown(card) and "emailed 3" in shown(card)
    assert len(pretix_server.all_vouchers()) == 3 and len(smtp_server.wait_for(3)) == 3
    [summary] = replies(slack_api, card)
    assert "finished in" in summary["text"] and buttons(summary) == []
    assert events_of(ctx3.db, "bulk_approve", request_id) == [
        (f"button:{STAFF_USER}", "self_approval_refused"),
        (f"button:{STAFF_USER_2}", "approved"),
    ]


def test_self_approval_is_allowed_with_the_setting(
    make_running_bot: Callable[..., Bot],
    ctx: ServiceContext,
    slack_api: FakeSlack,
    grant_payload: Callable[..., GrantPayload],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    bot = make_running_bot(bulk_allow_self_approval=True)
    confirmed(ctx, grant_payload, 2)
    with serve_app(create_web_app(bot, run_background=False)) as http:
        _, answer = ask_for_bulk(http, slack_api, bot, conference.code)
        request_id = request_id_of(answer)
        click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER)
        settle(bot)

    assert f"*Approved* by <@{STAFF_USER}>" in shown(card_of(slack_api, request_id))
    assert len(pretix_server.all_vouchers()) == 2


def test_two_approvals_at_once_and_a_duplicated_click_make_one_run_and_the_loser_hears_who_won(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)
    card = card_of(slack_api, request_id)
    bodies = {
        user: block_action_body(
            action_id=BULK_APPROVE_ACTION,
            value=str(request_id),
            user_id=user,
            response_url=slack_api.response_url(f"race-{user}-{request_id}"),
            message=card,
        )
        for user in (STAFF_USER_2, STAFF_USER_3)
    }
    start = threading.Barrier(2)

    def approve(user: str) -> None:
        start.wait()
        click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=user, body=bodies[user])

    threads = [threading.Thread(target=approve, args=(user,)) for user in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Slack delivers Bob's click again: once as is, once as a marked retry.
    click(
        http,
        slack_api,
        BULK_APPROVE_ACTION,
        request_id,
        user=STAFF_USER_2,
        body=bodies[STAFF_USER_2],
    )
    click(
        http,
        slack_api,
        BULK_APPROVE_ACTION,
        request_id,
        user=STAFF_USER_2,
        body=bodies[STAFF_USER_2],
        retry_num=1,
        retry_reason="http_timeout",
    )
    settle(running_bot)

    approvals = events_of(ctx3.db, "bulk_approve", request_id)
    [(winner, _)] = [e for e in approvals if e[1] == "approved"]
    assert {outcome for _, outcome in approvals} <= {"approved", "already_decided"}
    assert len(pretix_server.all_vouchers()) == 3 and len(smtp_server.wait_for(3)) == 3
    assert [
        e.outcome
        for e in audit(ctx3.db, "bulk_run")
        if (e.detail or {}).get("request") == request_id
    ].count("started") == 1
    assert len(replies(slack_api, card)) == 1
    loser = STAFF_USER_3 if winner == f"button:{STAFF_USER_2}" else STAFF_USER_2
    told = slack_api.responses(f"race-{loser}-{request_id}")
    assert told and f"already *approved* by <@{winner.split(':')[1]}>" in json.dumps(
        told[0]["blocks"]
    )
    assert f"*Approved* by <@{winner.split(':')[1]}>" in shown(card_of(slack_api, request_id))


def test_rejection_edits_the_card_and_nothing_runs(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)

    click(http, slack_api, BULK_REJECT_ACTION, request_id, user=STAFF_USER_2)
    settle(running_bot)
    late, _ = click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER_3)
    settle(running_bot)

    card = card_of(slack_api, request_id)
    assert buttons(card) == [] and f"*Rejected* by <@{STAFF_USER_2}>" in shown(card)
    assert "Nothing was done" in shown(card)
    [told] = slack_api.wait_for_response(late)
    assert f"already *rejected* by <@{STAFF_USER_2}>" in json.dumps(told["blocks"])
    assert pretix_server.writes() == []
    assert events_of(ctx3.db, "bulk_reject", request_id) == [(f"button:{STAFF_USER_2}", "rejected")]


def test_an_expired_request_says_expired_loses_its_buttons_and_nothing_runs(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    _, first = ask_for_bulk(http, slack_api, running_bot, conference.code)
    expiring = request_id_of(first)
    assert running_bot.slack is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(
        minutes=running_bot.settings.bulk_request_ttl_minutes + 1
    )
    ctx3.clock = lambda: later

    # The scheduler's bulk job, as registered: every request past its time is expired and
    # its card edited.
    job = build_scheduler(running_bot).get_job("bulk")
    job.func(*job.args)
    settle(running_bot)
    card = card_of(slack_api, expiring)
    assert buttons(card) == [] and "*Expired*" in shown(card)

    # A click that arrives late is refused and told so; still nothing runs.
    late, _ = click(http, slack_api, BULK_APPROVE_ACTION, expiring, user=STAFF_USER_2)
    settle(running_bot)
    assert "expired" in slack_api.wait_for_response(late)[0]["text"]
    assert pretix_server.writes() == []
    request = get_request(ctx3, expiring)
    assert request is not None and request.status is BulkStatus.EXPIRED


def test_a_click_past_the_time_expires_the_request_on_the_spot(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    ctx3.clock = lambda: later

    late, _ = click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER_2)
    settle(running_bot)

    assert "expired" in slack_api.wait_for_response(late)[0]["text"]
    card = card_of(slack_api, request_id)
    assert buttons(card) == [] and "*Expired*" in shown(card)
    assert pretix_server.writes() == []


def test_600_grantees_a_preview_within_slack_limits_with_the_csv_then_a_run_that_updates_one_card(
    http: httpx.Client,
    ctx: ServiceContext,
    slack_api: FakeSlack,
    running_bot: Bot,
    grant_payload: Callable[..., GrantPayload],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    confirmed(ctx, grant_payload, 600)
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)

    [preview_post] = [
        c for c in slack_api.calls("chat.postMessage") if f"#{request_id} " in c.args["text"]
    ]
    assert preview_post.status == 200 and preview_post.response["ok"]  # Slack took the blocks
    blocks = preview_post.args["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(b["text"]["text"]) <= TEXT_LIMIT for b in blocks if "text" in b)
    card = card_of(slack_api, request_id)
    assert "and 585 more" in shown(card) and "CSV file in this thread" in shown(card)
    [upload] = [u for u in slack_api.uploads() if u.channel == conference.slack_channel]
    assert (
        upload.completed
        and upload.thread_ts == card["ts"]
        and upload.channel == conference.slack_channel
    )
    assert upload.content is not None and len(upload.content.decode().splitlines()) == 601

    # The run, with the poster delivering as it would in production (its own thread).
    assert running_bot.slack is not None
    poster = running_bot.slack.poster
    before = len(in_channel(slack_api, "chat.postMessage", card["channel"]))
    poster.start()
    try:
        started = time.monotonic()
        click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER_2, message=card)
        assert running_bot.worker.join(timeout=60) and running_bot.background.join(timeout=300)
        deadline = time.monotonic() + 30
        while not [
            m
            for m in slack_api.messages(card["channel"])
            if m.get("thread_ts") == card["ts"] and "finished in" in m.get("text", "")
        ]:
            assert time.monotonic() < deadline, "no summary reply"
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        poster.stop()
    post_slack_outbox(running_bot)

    assert (
        len(pretix_server.all_vouchers()) == 600
        and len(smtp_server.wait_for(600, timeout=60)) == 600
    )
    updates = card_updates(slack_api, card)
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    posts = len(in_channel(slack_api, "chat.postMessage", card["channel"])) - before
    figures = (
        f"{elapsed:.1f} s from approval to summary, {len(updates)} chat.update of the card "
        f"(gaps {[round(g, 2) for g in gaps]}), {posts} chat.postMessage"
    )
    assert posts == 1, figures  # the summary reply; not one message per grantee
    assert 2 <= len(updates) <= 2 + elapsed / MIN_UPDATE_SECONDS, figures
    # The reporter queues a new state of the card at most once every 2 s (the poster may
    # deliver one late, so the gaps at Slack vary; their number is what Slack sees).
    with ctx.db.transaction() as session:
        queued = list(
            session.scalars(
                select(SlackOutbox.created_at)
                .where(
                    SlackOutbox.ref == card_ref(request_id), SlackOutbox.kind == OutboxKind.UPDATE
                )
                .order_by(SlackOutbox.id)
            )
        )
    queued_gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(queued)]
    assert all(gap >= MIN_UPDATE_SECONDS - 0.05 for gap in queued_gaps), (queued_gaps, figures)
    with ctx.db.transaction() as session:
        threads = session.scalar(
            select(func.count())
            .select_from(SlackOutbox)
            .join(Grant, SlackOutbox.grant_id == Grant.id)
            .join(Conference, Grant.conference_id == Conference.id)
            .where(Conference.code == conference.code)
        )
    assert threads == 0  # the per-grantee threads were not touched
    final = card_of(slack_api, request_id)
    assert "*Done*" in shown(final) and "created 600" in shown(final) and buttons(final) == []


def test_retry_failed_makes_a_new_preview_that_needs_approval_again(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    confirmed(ctx, grant_payload, 12)  # enough for Pretix's batch_create
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)
    row_errors: list[dict[str, list[str]]] = [{} for _ in range(12)]
    row_errors[1] = {"item": ['Invalid pk "999" - object does not exist.']}
    pretix_server.fail_next(400, body=row_errors, path_contains="batch_create")

    click(http, slack_api, BULK_APPROVE_ACTION, request_id, user=STAFF_USER_2)
    settle(running_bot)

    card = card_of(slack_api, request_id)
    [summary] = replies(slack_api, card)
    assert "Failed (1)" in shown(summary) and "999" in shown(summary)
    assert buttons(summary) == [(BULK_RETRY_FAILED_ACTION, str(request_id))]
    assert len(pretix_server.all_vouchers()) == 11

    retried, _ = click(
        http, slack_api, BULK_RETRY_FAILED_ACTION, request_id, user=STAFF_USER_3, message=summary
    )
    settle(running_bot)

    [told] = slack_api.wait_for_response(retried)
    retry_id = request_id_of(told)
    assert retry_id != request_id
    retry_card = card_of(slack_api, retry_id)
    assert f"the failed grantees of #{request_id}" in shown(retry_card)
    assert buttons(retry_card) == [
        (BULK_APPROVE_ACTION, str(retry_id)),
        (BULK_REJECT_ACTION, str(retry_id)),
    ]
    assert f"<@{STAFF_USER_3}>" in shown(retry_card)  # who asked for the retry
    mine, _ = click(http, slack_api, BULK_APPROVE_ACTION, retry_id, user=STAFF_USER_3)
    settle(running_bot)
    assert "another member of staff" in slack_api.wait_for_response(mine)[0]["text"]
    click(http, slack_api, BULK_APPROVE_ACTION, retry_id, user=STAFF_USER_2)
    settle(running_bot)
    assert len(pretix_server.all_vouchers()) == 12
    assert "*Done*" in shown(card_of(slack_api, retry_id))


def test_a_run_the_approving_process_never_started_is_resumed_on_the_same_card(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    ctx3: ServiceContext,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    _, answer = ask_for_bulk(http, slack_api, running_bot, conference.code)
    request_id = request_id_of(answer)
    card = card_of(slack_api, request_id)
    # The approving process died between the decision and the run: approved, never started.
    decision = decide_bulk(
        ctx3,
        request_id=request_id,
        actor=Actor(Source.BUTTON, STAFF_USER_2),
        approve=True,
        allow_self_approval=False,
    )
    assert decision.result is DecisionResult.APPROVED and pretix_server.writes() == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    ctx3.clock = lambda: later

    # Another process's scheduler: its bulk job resumes the run with the Slack reporter.
    job = build_scheduler(running_bot).get_job("bulk")
    job.func(*job.args)
    settle(running_bot)

    final = card_of(slack_api, request_id)
    assert final["ts"] == card["ts"]  # the same message, edited; no second card
    assert "*Done*" in shown(final) and "created 3" in shown(final)
    [summary] = replies(slack_api, card)
    assert "finished in" in summary["text"]
    tops = [
        m for m in slack_api.messages(card["channel"]) if m.get("thread_ts", m["ts"]) == m["ts"]
    ]
    assert len(tops) == 1
    assert len(pretix_server.all_vouchers()) == 3 and len(smtp_server.wait_for(3)) == 3
