"""The grantee's status thread: one parent, replies in its thread, nothing posted twice."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import update

from bot.bootstrap import Bot
from bot.services.provisioning import provision_grant_voucher
from bot.services.resend import resend_voucher_email
from bot.storage import SlackOutbox
from tests.conftest import TEST_ACTOR
from tests.fakes.slack_api import FakeSlack
from tests.helpers import post_slack_outbox, voucher_row


def thread_replies(slack_api: FakeSlack) -> list[str]:
    return [
        str(call.args.get("text"))
        for call in slack_api.calls("chat.postMessage")
        if call.args.get("thread_ts") and call.status == 200 and call.response.get("ok")
    ]


def test_one_parent_per_grantee_and_every_reply_in_its_thread(
    running_bot: Bot, make_grant: Callable[..., int], slack_api: FakeSlack
) -> None:
    grant_id = make_grant()
    provision_grant_voucher(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    post_slack_outbox(running_bot)
    resend_voucher_email(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    post_slack_outbox(running_bot)

    posts = slack_api.calls("chat.postMessage")
    parents = [p for p in posts if not p.args.get("thread_ts")]
    assert len(parents) == 1
    parent_ts = parents[0].response["ts"]
    assert {p.args["thread_ts"] for p in posts if p.args.get("thread_ts")} == {parent_ts}
    assert len(thread_replies(slack_api)) == 2  # created + email, then the resend
    assert [u.args["ts"] for u in slack_api.calls("chat.update")] == [parent_ts]


def test_a_failed_parent_update_is_retried_without_repeating_the_reply(
    running_bot: Bot, make_grant: Callable[..., int], slack_api: FakeSlack
) -> None:
    grant_id = make_grant()
    provision_grant_voucher(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    post_slack_outbox(running_bot)
    resend_voucher_email(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    slack_api.fail_next("chat.update", "ratelimited")

    post_slack_outbox(running_bot)  # the reply goes out, the parent update fails
    with running_bot.db.transaction() as session:  # its retry time has come
        session.execute(
            update(SlackOutbox).where(SlackOutbox.grant_id == grant_id).values(next_attempt_at=None)
        )
    post_slack_outbox(running_bot)

    assert len(thread_replies(slack_api)) == 2
    ok_updates = [u for u in slack_api.calls("chat.update") if u.response.get("ok")]
    assert len(ok_updates) == 1


def channel_payloads(slack_api: FakeSlack) -> list[str]:
    """Everything the bot sent to the conference channel (posts and updates), as JSON."""
    calls = slack_api.calls("chat.postMessage") + slack_api.calls("chat.update")
    return [json.dumps(call.args, ensure_ascii=False) for call in calls]


def test_the_channel_sees_only_the_first_four_characters_of_a_code(
    running_bot: Bot, make_grant: Callable[..., int], slack_api: FakeSlack
) -> None:
    grant_id = make_grant()
    provision_grant_voucher(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    resend_voucher_email(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    post_slack_outbox(running_bot)

    code = voucher_row(running_bot.db, grant_id).code
    payloads = channel_payloads(slack_api)
    assert len(payloads) >= 3  # parent, two replies, parent update
    assert not [p for p in payloads if code in p]
    assert all(code[:4] + "…" in p for p in payloads)


def test_a_row_queued_with_a_full_code_is_masked_when_posted(
    running_bot: Bot, make_grant: Callable[..., int], slack_api: FakeSlack
) -> None:
    # Rows written before codes were masked (or by a builder that forgot) still wait in the
    # outbox: the poster is the last step before the channel and masks the grant's codes.
    grant_id = make_grant()
    provision_grant_voucher(running_bot.services, grant_id=grant_id, actor=TEST_ACTOR)
    code = voucher_row(running_bot.db, grant_id).code
    leaky = {"text": f"Jane Doe: voucher {code} created", "blocks": []}
    with running_bot.db.transaction() as session:
        session.execute(
            update(SlackOutbox)
            .where(SlackOutbox.grant_id == grant_id)
            .values(reply=leaky, parent={**leaky, "text": f"state {code}"})
        )
    post_slack_outbox(running_bot)

    payloads = channel_payloads(slack_api)
    assert payloads
    assert not [p for p in payloads if code in p]
    assert any(f"voucher {code[:4]}… created" in p for p in payloads)
