"""Posting the digest: through the outbox to (fake) Slack, `/voucher digest`, the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.slack.digest_post import digest_ref, post_digest
from bot.storage import AuditEvent, Database, SlackMessage, SlackOutbox, utcnow
from tests.conftest import unique
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GRANTS_CHANNEL, GUEST_USER, SIGNING_SECRET, STAFF_USER
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.helpers import grant_external_id, post_slack_outbox

ROOT = Path(__file__).resolve().parent.parent


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def waiting_grants(make_grant: Callable[..., int], count: int, now: dt.datetime) -> list[int]:
    """`count` grantees offered a grant, deadlines from two days ago to well ahead."""
    return [
        make_grant(
            full_name=f"Waiting {n}",
            status="waiting_for_confirmation",
            previous_status="approved",
            applicant_reply_sent_at=iso(now - dt.timedelta(days=7)),
            applicant_reply_deadline=iso(now + dt.timedelta(hours=n - 48)),
            updated_at=iso(now - dt.timedelta(days=7)),
        )
        for n in range(count)
    ]


def top_level(db: Database, slack_api: FakeSlack, conference: ConferenceConfig) -> list[Any]:
    """This conference's digests in the channel, found by their refs (the test database is
    shared: a poster may deliver other tests' messages to this fake too)."""
    with db.transaction() as session:
        ts = set(
            session.scalars(
                select(SlackMessage.ts).where(SlackMessage.ref.like(f"digest:{conference.code}:%"))
            )
        )
    return [m for m in slack_api.messages(GRANTS_CHANNEL) if m["ts"] in ts]


def test_300_pending_grantees_post_one_message_and_the_csv_in_its_thread(
    db: Database,
    running_bot: Bot,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    slack_api: FakeSlack,
) -> None:
    now = utcnow()
    waiting_grants(make_grant, 300, now)
    assert running_bot.slack is not None

    posted = post_digest(running_bot.slack.outbox, running_bot.services, conference.code, now, True)
    post_slack_outbox(running_bot)

    assert posted.ref == digest_ref(conference.code, posted.digest.local_date, "0")
    assert posted.csv_attached
    [message] = top_level(db, slack_api, conference)
    assert len(message["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in message["blocks"] if b["type"] == "section")
    assert "more (every line is in the CSV file in this thread)" in str(message["blocks"])
    [upload] = [u for u in slack_api.uploads() if u.thread_ts == message["ts"]]
    assert upload.completed and upload.channel == GRANTS_CHANNEL
    assert upload.thread_ts == message["ts"]
    assert upload.filename == f"digest-{conference.code}-{posted.digest.local_date}.csv"
    assert upload.content is not None
    rows = list(csv.DictReader(io.StringIO(upload.content.decode())))
    assert len(rows) == 300 and {row["section"] for row in rows} == {"waiting"}
    assert [row["name"] for row in rows[:2]] == ["Waiting 0", "Waiting 1"]  # overdue first


def test_the_scheduled_digest_is_one_message_a_day_one_asked_for_is_its_own(
    db: Database,
    running_bot: Bot,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    slack_api: FakeSlack,
) -> None:
    now = utcnow()
    waiting_grants(make_grant, 2, now)
    assert running_bot.slack is not None
    outbox, services = running_bot.slack.outbox, running_bot.services

    post_digest(outbox, services, conference.code, now, True)
    post_digest(outbox, services, conference.code, now + dt.timedelta(minutes=5), True)
    asked = post_digest(outbox, services, conference.code, now + dt.timedelta(minutes=6), False)
    post_slack_outbox(running_bot)

    ours = top_level(db, slack_api, conference)
    assert len(ours) == 2  # the day's scheduled one (updated), the asked one
    updated = [c for c in slack_api.calls("chat.update") if c.args.get("ts") == ours[0]["ts"]]
    assert len(updated) == 1  # the second scheduled call updated the day's one message
    assert asked.ref is not None and not asked.ref.endswith(":0")
    assert not asked.csv_attached


def test_an_empty_day_posts_one_line_unless_silenced(
    db: Database,
    make_running_bot: Callable[..., Bot],
    conference: ConferenceConfig,
    slack_api: FakeSlack,
) -> None:
    bot = make_running_bot(digest_post_empty=False)
    assert bot.slack is not None and bot.settings.digest_post_empty is False
    now = utcnow()

    silenced = post_digest(
        bot.slack.outbox, bot.services, conference.code, now, True, post_empty=False
    )
    asked = post_digest(
        bot.slack.outbox, bot.services, conference.code, now, False, post_empty=False
    )
    post_slack_outbox(bot)

    assert not silenced.posted and silenced.skipped and "nothing to report" in silenced.skipped
    assert asked.posted
    [message] = top_level(db, slack_api, conference)
    assert len(message["blocks"]) == 1 and "nothing to report" in message["text"]
    with bot.db.transaction() as session:
        refs = session.scalars(
            select(SlackOutbox.ref).where(SlackOutbox.ref.like(f"digest:{conference.code}:%"))
        )
        assert list(refs) == [asked.ref]


def post(http: httpx.Client, body: str) -> httpx.Response:
    return http.post(
        "/slack/events", content=body, headers=signed_headers(body, secret=SIGNING_SECRET)
    )


def test_voucher_digest_posts_in_the_channel_and_tells_the_asker(
    db: Database,
    http: httpx.Client,
    running_bot: Bot,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    slack_api: FakeSlack,
) -> None:
    waiting_grants(make_grant, 3, utcnow())
    name = unique("resp")
    body = slash_command_body(
        text=f"digest {conference.code}",
        user_id=STAFF_USER,
        response_url=slack_api.response_url(name),
    )

    ack = post(http, body)
    running_bot.worker.join(timeout=10)
    [answer] = slack_api.wait_for_response(name, count=1, timeout=10)
    post_slack_outbox(running_bot)

    assert ack.status_code == 200 and "Building the digest" in ack.json()["text"]
    assert answer["response_type"] == "ephemeral"
    assert "Posted the digest of" in answer["text"] and "3 waiting" in answer["text"]
    assert f"<#{GRANTS_CHANNEL}>" in str(answer["blocks"])
    [message] = top_level(db, slack_api, conference)
    assert "Waiting for confirmation" in str(message["blocks"])
    with running_bot.db.transaction() as session:
        [ref] = session.scalars(
            select(SlackMessage.ref).where(SlackMessage.ref.like(f"digest:{conference.code}:%"))
        )
    assert not ref.endswith(":0")  # not the day's scheduled digest


def test_voucher_digest_refuses_non_staff_and_unknown_conferences(
    db: Database,
    http: httpx.Client,
    running_bot: Bot,
    slack_api: FakeSlack,
    conference: ConferenceConfig,
) -> None:
    refused = post(
        http,
        slash_command_body(
            text="digest", user_id=GUEST_USER, response_url=slack_api.response_url("g")
        ),
    )
    unknown = post(
        http,
        slash_command_body(
            text="digest nope2026", user_id=STAFF_USER, response_url=slack_api.response_url("u")
        ),
    )
    running_bot.worker.join(timeout=10)

    assert "staff" in refused.json()["text"].lower()
    assert "unknown conference 'nope2026'" in unknown.json()["text"]
    assert top_level(db, slack_api, conference) == []
    with running_bot.db.transaction() as session:
        denied = session.scalars(
            select(AuditEvent.action).where(AuditEvent.actor == f"slash_command:{GUEST_USER}")
        ).all()
    assert "slash_digest" in denied


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_prints_the_digest_and_posts_it(
    db: Database,
    bot_env: dict[str, str],
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    slack_api: FakeSlack,
) -> None:
    ours = [grant_external_id(db, g) for g in waiting_grants(make_grant, 2, utcnow())]

    printed = run_cli(bot_env, "digest", conference.code, "--print")
    posted = run_cli(bot_env, "digest", conference.code, "--post")
    unknown = run_cli(bot_env, "digest", "nope2026")

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("Grants digest · PyCon Italia 2026 · ")
    assert (
        "Waiting for confirmation (2)" in printed.stdout and "Waiting 1 (grant " in printed.stdout
    )
    assert posted.returncode == 0, posted.stderr
    assert f"Posted the digest of PyCon Italia 2026 in {GRANTS_CHANNEL}" in posted.stdout
    [message] = top_level(db, slack_api, conference)
    assert f"grant {ours[0]}" in str(message["blocks"])
    assert "Waiting for confirmation" in str(message["blocks"])
    assert unknown.returncode == 2 and "unknown conference" in unknown.stderr
