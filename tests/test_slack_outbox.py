"""The durable path of every named message: posted once, updated latest-first, retried."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from bot.bootstrap import Bot
from bot.slack.blocks import Message
from bot.storage import OutboxState, SlackOutbox
from tests.conftest import unique
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GRANTS_CHANNEL
from tests.helpers import post_slack_outbox


def _message(text: str) -> Message:
    return Message(
        text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    )


def _ok(slack_api: FakeSlack, method: str) -> list[dict[str, object]]:
    return [c.args for c in slack_api.calls(method) if c.status == 200 and c.response.get("ok")]


def test_a_named_message_is_posted_once_then_updated_and_replied_to_in_its_thread(
    running_bot: Bot, slack_api: FakeSlack
) -> None:
    assert running_bot.slack is not None
    outbox = running_bot.slack.outbox
    ref = unique("bulk:")  # the test database is shared; every test names its own messages
    outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("preview"))
    outbox.update(ref=ref, message=_message("approved"))
    outbox.reply(ref=ref, message=_message("summary"))
    outbox.upload(ref=ref, filename="list.csv", content="a,b\n1,2\n", title="The list")
    post_slack_outbox(running_bot)

    posts = _ok(slack_api, "chat.postMessage")
    top = [p for p in posts if not p.get("thread_ts")]
    assert [p["text"] for p in top] == ["preview"]
    ts = outbox.ts(ref)
    assert ts is not None
    assert [(p["text"], p["thread_ts"]) for p in posts if p.get("thread_ts")] == [("summary", ts)]
    assert [(u["text"], u["ts"]) for u in _ok(slack_api, "chat.update")] == [("approved", ts)]
    assert [u.filename for u in slack_api.uploads()] == ["list.csv"]
    assert slack_api.message(GRANTS_CHANNEL, ts) is not None


def test_only_the_latest_of_several_pending_updates_reaches_slack(
    running_bot: Bot, slack_api: FakeSlack
) -> None:
    assert running_bot.slack is not None
    outbox = running_bot.slack.outbox
    ref = unique("bulk:")  # the test database is shared; every test names its own messages
    outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("preview"))
    for done in range(1, 6):
        outbox.update(ref=ref, message=_message(f"{done}/5 done"))
    post_slack_outbox(running_bot)

    assert [u["text"] for u in _ok(slack_api, "chat.update")] == ["5/5 done"]
    with running_bot.db.transaction() as session:
        states = session.scalars(select(SlackOutbox.state).where(SlackOutbox.ref == ref))
        assert set(states) == {OutboxState.SENT}


def test_an_update_waits_for_its_message_and_a_failed_post_is_retried_not_doubled(
    running_bot: Bot, slack_api: FakeSlack
) -> None:
    assert running_bot.slack is not None
    outbox = running_bot.slack.outbox
    ref = unique("bulk:")  # the test database is shared; every test names its own messages
    slack_api.fail_next("chat.postMessage", "internal_error")
    outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("digest"))
    outbox.update(ref=ref, message=_message("digest, edited"))
    post_slack_outbox(running_bot)
    assert _ok(slack_api, "chat.postMessage") == []
    assert slack_api.calls("chat.update") == []  # nothing to update yet: it waits

    with running_bot.db.transaction() as session:  # the retry time has come
        session.execute(update(SlackOutbox).values(next_attempt_at=None))
    post_slack_outbox(running_bot)

    assert [p["text"] for p in _ok(slack_api, "chat.postMessage")] == ["digest"]
    assert [u["text"] for u in _ok(slack_api, "chat.update")] == ["digest, edited"]


def test_a_second_post_under_the_same_ref_updates_the_message(
    running_bot: Bot, slack_api: FakeSlack
) -> None:
    assert running_bot.slack is not None
    outbox = running_bot.slack.outbox
    ref = unique("bulk:")  # the test database is shared; every test names its own messages
    outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("first"))
    post_slack_outbox(running_bot)
    outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("again"))
    post_slack_outbox(running_bot)

    assert [p["text"] for p in _ok(slack_api, "chat.postMessage")] == ["first"]
    assert [u["text"] for u in _ok(slack_api, "chat.update")] == ["again"]


def test_a_message_enqueued_in_a_transaction_that_rolls_back_is_never_sent(
    running_bot: Bot, slack_api: FakeSlack
) -> None:
    assert running_bot.slack is not None
    outbox = running_bot.slack.outbox
    ref = unique("bulk:")  # the test database is shared; every test names its own messages
    with pytest.raises(RuntimeError), running_bot.db.transaction() as session:
        outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("x"), session=session)
        raise RuntimeError("the decision failed")
    post_slack_outbox(running_bot)
    assert slack_api.calls("chat.postMessage") == []


def test_a_rate_limited_update_waits_at_least_as_long_as_slack_asks(
    running_bot: Bot, slack_api: FakeSlack
) -> None:
    assert running_bot.slack is not None
    outbox = running_bot.slack.outbox
    ref = unique("bulk:")
    outbox.post(ref=ref, channel=GRANTS_CHANNEL, message=_message("preview"))
    post_slack_outbox(running_bot)
    # More 429s than the client's own retries: the row itself waits for Retry-After.
    slack_api.rate_limit_next("chat.update", retry_after=1, times=4)
    outbox.update(ref=ref, message=_message("progress"))
    post_slack_outbox(running_bot)

    with running_bot.db.transaction() as session:
        row = session.scalars(
            select(SlackOutbox).where(SlackOutbox.ref == ref, SlackOutbox.kind == "update")
        ).one()
        assert row.state is OutboxState.PENDING and row.attempts == 1
        assert row.next_attempt_at is not None
        assert "ratelimited" in (row.last_error or "")
        session.execute(
            update(SlackOutbox).where(SlackOutbox.id == row.id).values(next_attempt_at=None)
        )
    post_slack_outbox(running_bot)
    assert [u["text"] for u in _ok(slack_api, "chat.update")] == ["progress"]
