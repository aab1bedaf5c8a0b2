"""The grantee's status thread: one parent, replies in its thread, nothing posted twice."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import update

from bot.bootstrap import Bot
from bot.services.provisioning import provision_grant_voucher
from bot.services.resend import resend_voucher_email
from bot.storage import SlackOutbox
from tests.conftest import TEST_ACTOR
from tests.fakes.slack_api import FakeSlack
from tests.helpers import post_slack_outbox


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
