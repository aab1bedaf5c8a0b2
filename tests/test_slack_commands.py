"""`/voucher` over signed HTTP against the real app, with Slack, Pretix and SMTP faked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.provisioning import provision_grant_voucher
from bot.slack.blocks import RETRY_ACTION
from bot.storage import AuditEvent, Database, SlackOutbox
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GUEST_USER, SIGNING_SECRET, STAFF_USER
from tests.fakes.slack_requests import block_action_body, signed_headers, slash_command_body
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_external_id, post_slack_outbox, record_voucher


def post(http: httpx.Client, body: str, **header_options: Any) -> httpx.Response:
    headers = signed_headers(body, secret=SIGNING_SECRET, **header_options)
    return http.post("/slack/events", content=body, headers=headers)


def command(
    http: httpx.Client, slack_api: FakeSlack, text: str, *, user: str = STAFF_USER
) -> tuple[httpx.Response, str]:
    """Send `/voucher <text>`; returns the ack and the name of its response_url."""
    name = unique("resp")
    body = slash_command_body(text=text, user_id=user, response_url=slack_api.response_url(name))
    return post(http, body), name


def answer(
    running_bot: Bot, slack_api: FakeSlack, name: str, *, timeout: float = 10.0
) -> dict[str, Any]:
    """The background answer posted to the command's response_url."""
    running_bot.worker.join(timeout=timeout)
    [posted] = slack_api.wait_for_response(name, count=1, timeout=timeout)
    return posted


def ack_text(response: httpx.Response) -> str:
    assert response.status_code == 200
    return str(response.json()["text"]) if response.content else ""


def outbox_rows(db: Database, grant_id: int) -> list[SlackOutbox]:
    """The Slack messages queued for a grant."""
    with db.transaction() as session:
        return list(session.scalars(select(SlackOutbox).where(SlackOutbox.grant_id == grant_id)))


@pytest.fixture
def bot_ctx(running_bot: Bot) -> ServiceContext:
    return running_bot.services


@pytest.fixture
def staff_grant(bot_ctx: ServiceContext, make_grant: Callable[..., int]) -> int:
    """A confirmed grant for the staff-visible grantee alice (email from Slack)."""
    return make_grant(email=f"{unique('grantee')}@example.org")


def test_empty_or_unknown_subcommand_shows_help(http: httpx.Client, slack_api: FakeSlack) -> None:
    for text in ("", "help", "frobnicate"):
        response, _ = command(http, slack_api, text)
        body = response.json()
        assert response.status_code == 200
        assert "issue" in json.dumps(body["blocks"]) and "revoke" in json.dumps(body["blocks"])
    response, _ = command(http, slack_api, "frobnicate")
    assert "frobnicate" in ack_text(response)


def test_bad_signature_and_stale_timestamp_are_refused_and_nothing_happens(
    http: httpx.Client, slack_api: FakeSlack, pretix_server: FakePretix, running_bot: Bot
) -> None:
    body = slash_command_body(
        text="issue 1234", user_id=STAFF_USER, response_url=slack_api.response_url("x")
    )
    forged = signed_headers(body, secret="not-the-secret")
    stale = signed_headers(body, secret=SIGNING_SECRET, timestamp=int(time.time()) - 301)

    assert http.post("/slack/events", content=body, headers=forged).status_code == 401
    assert http.post("/slack/events", content=body, headers=stale).status_code == 401
    running_bot.worker.join(timeout=5)
    assert pretix_server.requests == []
    assert slack_api.responses() == []


def test_non_staff_get_a_polite_refusal_an_audit_entry_and_no_side_effect(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
) -> None:
    target = grant_external_id(bot_ctx.db, staff_grant)
    response, _ = command(http, slack_api, f"issue {target}", user=GUEST_USER)

    assert "staff" in ack_text(response).lower()
    running_bot.worker.join(timeout=5)
    assert pretix_server.requests == []
    with bot_ctx.db.transaction() as session:
        denied = session.scalars(
            select(AuditEvent).where(AuditEvent.actor == f"slash_command:{GUEST_USER}")
        ).all()
    assert [(e.action, e.outcome) for e in denied][-1] == ("slash_issue", "denied")


def test_issue_by_grant_id_acks_at_once_then_answers_and_threads(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    target = grant_external_id(bot_ctx.db, staff_grant)
    response, name = command(http, slack_api, f"issue {target}")

    assert "Issuing" in ack_text(response) or "issu" in ack_text(response).lower()
    result = answer(running_bot, slack_api, name)
    [voucher] = pretix_server.all_vouchers()
    assert voucher["code"] in json.dumps(result)
    assert result["response_type"] == "ephemeral"
    assert len(smtp_server.messages) == 1

    post_slack_outbox(running_bot)
    posts = slack_api.calls("chat.postMessage")
    parent, *replies = posts
    assert parent.args["channel"] == conference.slack_channel
    assert "thread_ts" not in parent.args
    assert "confirmed their grant" in parent.args["text"]
    assert replies and {reply.args["thread_ts"] for reply in replies} == {parent.response["ts"]}
    # The channel sees the code's first 4 characters only; the staff answer above has it all.
    masked = voucher["code"][:4] + "…"
    assert any(masked in reply.args["text"] for reply in replies)
    assert not [p for p in posts if voucher["code"] in json.dumps(p.args)]
    # The parent was posted with the current state, so there is nothing to update yet.
    assert masked in json.dumps(parent.args["blocks"], ensure_ascii=False)


def test_issue_by_mention_reads_the_email_from_slack(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    user = f"U{unique('').upper()}"
    email = f"{unique('mentioned')}@example.org"
    slack_api.add_user(user, email=email, name="jane")
    make_grant(email=email)

    _, name = command(http, slack_api, f"issue <@{user}|jane>")

    result = answer(running_bot, slack_api, name)
    assert len(pretix_server.all_vouchers()) == 1
    assert pretix_server.all_vouchers()[0]["code"] in json.dumps(result)
    assert slack_api.calls("users.info")[-1].args["user"] == user


def test_mention_of_a_user_without_email_says_so(
    http: httpx.Client, slack_api: FakeSlack, running_bot: Bot
) -> None:
    user = f"U{unique('').upper()}"
    slack_api.add_user(user, email=None, name="ghost")

    _, name = command(http, slack_api, f"issue <@{user}|ghost>")

    text = answer(running_bot, slack_api, name)["text"]
    assert "No grant found" in text
    assert "no email address" in text


def test_unknown_person_and_several_grants_get_clear_answers(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    grant_payload: Callable[..., Any],
) -> None:
    _, name = command(http, slack_api, "issue nobody@example.org")
    assert "No grant found" in answer(running_bot, slack_api, name)["text"]

    email = f"{unique('twice')}@example.org"
    other = conference.model_copy(update={"code": unique("other")})
    from bot.conferences import Conferences
    from bot.services.intake import ingest_grant

    ctx = make_ctx(conferences=Conferences({conference.code: conference, other.code: other}))
    ingest_grant(ctx, payload=grant_payload(email=email), actor=TEST_ACTOR)
    ingest_grant(ctx, payload=grant_payload(email=email, conference=other.code), actor=TEST_ACTOR)

    _, name = command(http, slack_api, f"status {email}")
    text = answer(running_bot, slack_api, name)["text"]
    assert "several grants" in text
    assert conference.code in text and other.code in text


def test_not_confirmed_and_speaker_vouchers_are_explained(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    pending = make_grant(status="pending", previous_status=None)
    _, name = command(http, slack_api, f"issue {grant_external_id(bot_ctx.db, pending)}")
    assert "not confirmed" in answer(running_bot, slack_api, name)["text"]

    email = f"{unique('speaker')}@example.org"
    record_voucher(bot_ctx, conference.code, email, type="speaker", code="SPEAKER0042")
    speaker = make_grant(email=email)
    _, name = command(http, slack_api, f"issue {grant_external_id(bot_ctx.db, speaker)}")
    text = answer(running_bot, slack_api, name)["text"]
    assert "speaker voucher" in text and "SPEAKER0042" in text
    assert pretix_server.writes() == []


def test_pretix_unreachable_answer_says_it_will_retry(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
) -> None:
    pretix_server.fail_next(503, times=10, method="POST")
    _, name = command(http, slack_api, f"issue {grant_external_id(bot_ctx.db, staff_grant)}")
    assert "retry" in answer(running_bot, slack_api, name, timeout=20)["text"].lower()


def test_status_resend_and_revoke(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    smtp_server: FakeSmtpServer,
    pretix_server: FakePretix,
) -> None:
    target = grant_external_id(bot_ctx.db, staff_grant)
    _, name = command(http, slack_api, f"issue {target}")
    answer(running_bot, slack_api, name)
    [voucher] = pretix_server.all_vouchers()

    _, name = command(http, slack_api, f"status {target}")
    assert voucher["code"] in json.dumps(answer(running_bot, slack_api, name))

    _, name = command(http, slack_api, f"resend {target}")
    assert "sent again" in answer(running_bot, slack_api, name)["text"].lower()
    assert len(smtp_server.messages) == 2

    _, name = command(http, slack_api, f"revoke {target}")
    assert "still confirmed" in answer(running_bot, slack_api, name)["text"]
    assert pretix_server.all_vouchers() == [voucher]


def test_a_command_without_a_target_says_what_is_missing(
    http: httpx.Client, slack_api: FakeSlack
) -> None:
    response, _ = command(http, slack_api, "issue")
    assert "needs a person" in ack_text(response)


def test_slack_retry_of_the_same_command_is_not_repeated(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
) -> None:
    name = unique("resp")
    body = slash_command_body(
        text=f"status {grant_external_id(bot_ctx.db, staff_grant)}",
        user_id=STAFF_USER,
        response_url=slack_api.response_url(name),
    )
    first = post(http, body)
    again = post(http, body, retry_num=1, retry_reason="http_timeout")

    assert first.status_code == 200 and again.status_code == 200
    assert again.headers.get("x-slack-no-retry") == "1"
    running_bot.worker.join(timeout=10)
    time.sleep(0.2)
    assert len(slack_api.responses(name)) == 1


def test_thirty_concurrent_issue_commands_make_one_voucher(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    target = grant_external_id(bot_ctx.db, staff_grant)
    pretix_server.latency = 0.05

    with ThreadPoolExecutor(max_workers=30) as pool:
        acks = list(pool.map(lambda _: command(http, slack_api, f"issue {target}"), range(30)))

    assert all(response.status_code == 200 for response, _ in acks)
    running_bot.worker.join(timeout=60)
    for _, name in acks:
        slack_api.wait_for_response(name, count=1, timeout=10)
    assert pretix_server.count("POST", "/vouchers/") == 1
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1


def test_retry_button_is_checked_on_the_server_and_retries_once(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
) -> None:
    pretix_server.fail_next(401, body={"detail": "Invalid token."}, method="POST")
    _, name = command(http, slack_api, f"issue {grant_external_id(bot_ctx.db, staff_grant)}")
    assert "PRETIX_TOKEN" in answer(running_bot, slack_api, name)["text"]

    guest_click = block_action_body(
        action_id=RETRY_ACTION,
        value=str(staff_grant),
        user_id=GUEST_USER,
        response_url=slack_api.response_url("guest-click"),
    )
    assert post(http, guest_click).status_code == 200
    assert "staff" in slack_api.wait_for_response("guest-click")[0]["text"].lower()
    running_bot.worker.join(timeout=5)
    assert pretix_server.all_vouchers() == []

    clicks = [
        block_action_body(
            action_id=RETRY_ACTION,
            value=str(staff_grant),
            user_id=STAFF_USER,
            response_url=slack_api.response_url(f"click-{n}"),
        )
        for n in range(2)
    ]
    for click in clicks:  # a double click
        assert post(http, click).status_code == 200
    running_bot.worker.join(timeout=20)
    assert len(pretix_server.all_vouchers()) == 1
    assert pretix_server.count("POST", "/vouchers/") == 2  # the 401, then one create


def test_slack_rate_limit_while_posting_status_is_retried(
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    slack_api: FakeSlack,
) -> None:
    provision_grant_voucher(bot_ctx, grant_id=staff_grant, actor=TEST_ACTOR)
    slack_api.rate_limit_next("chat.postMessage", retry_after=0)
    assert running_bot.slack is not None

    # The outbox is shared by every test's messages: deliver until nothing is due.
    post_slack_outbox(running_bot)

    assert slack_api.count("chat.postMessage") >= 2  # the 429, then the same post again
    rows = outbox_rows(bot_ctx.db, staff_grant)
    assert rows and {row.state.value for row in rows} == {"sent"}


def test_slack_outage_never_blocks_provisioning_and_is_retried_later(
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    slack_api: FakeSlack,
    pretix_server: FakePretix,
) -> None:
    slack_api.fail_next("chat.postMessage", "channel_not_found", times=5)
    outcome = provision_grant_voucher(bot_ctx, grant_id=staff_grant, actor=TEST_ACTOR)
    assert outcome.has_voucher and len(pretix_server.all_vouchers()) == 1
    assert running_bot.slack is not None

    running_bot.slack.poster.run_once()

    rows = outbox_rows(bot_ctx.db, staff_grant)
    assert rows and all(row.state.value == "pending" for row in rows)
    assert all(row.attempts == 1 and row.next_attempt_at is not None for row in rows)
    assert all("channel_not_found" in (row.last_error or "") for row in rows)


def test_a_flooded_bot_says_it_is_busy_instead_of_queueing_forever(
    make_running_bot: Callable[..., Bot],
    slack_api: FakeSlack,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
) -> None:
    from bot.commands.voucher import BUSY_BACKLOG
    from bot.server import create_web_app
    from tests.conftest import serve_app

    bot = make_running_bot()
    release = threading.Event()
    for _ in range(BUSY_BACKLOG):  # the worker is stuck behind slow jobs
        bot.worker.submit("slow job", release.wait)
    try:
        with serve_app(create_web_app(bot, run_background=False)) as client:
            response, _ = command(
                client, slack_api, f"issue {grant_external_id(bot_ctx.db, staff_grant)}"
            )
        assert "busy" in ack_text(response)
    finally:
        release.set()
    bot.worker.join(timeout=10)
    assert pretix_server.requests == []


def test_the_retry_button_has_the_contract_action_id_and_old_buttons_still_work(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    bot_ctx: ServiceContext,
    staff_grant: int,
    pretix_server: FakePretix,
) -> None:
    pretix_server.fail_next(401, body={"detail": "Invalid token."}, method="POST")
    command(http, slack_api, f"issue {grant_external_id(bot_ctx.db, staff_grant)}")
    running_bot.worker.join(timeout=5)
    assert RETRY_ACTION == "retry"  # CONTRACT.md

    old_button = block_action_body(
        action_id="voucher_retry",  # the name buttons posted before the rename carry
        value=str(staff_grant),
        user_id=STAFF_USER,
        response_url=slack_api.response_url("old-click"),
    )
    assert post(http, old_button).status_code == 200
    running_bot.worker.join(timeout=20)
    assert len(pretix_server.all_vouchers()) == 1
