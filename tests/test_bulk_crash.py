"""A bulk run killed half-way (a real `kill -9` of `voucher-bot bulk run`) and resumed.

Every grantee ends with exactly one voucher in Pretix and one email: a resend after the
crash (an email the SMTP server accepted the instant before the process died, not recorded
yet) carries the same Message-ID, so the grantee's mail client shows one message.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from bot.conferences import ConferenceConfig
from bot.services.bulk import BulkProgress, BulkSummary, resume_stalled
from bot.services.bulk.run import PIPELINE
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.storage import BulkItem, BulkItemState, BulkRequest, BulkStatus, Conference, utcnow
from tests.conftest import TEST_ACTOR
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import voucher_row


class Told:
    """A reporter that keeps the summaries it was told."""

    def __init__(self) -> None:
        self.summaries: list[BulkSummary] = []

    def progress(self, progress: BulkProgress) -> None:
        """Ignore the progress."""

    def finished(self, summary: BulkSummary) -> None:
        self.summaries.append(summary)


ROOT = Path(__file__).resolve().parent.parent
GRANTEES = 120  # chunks of 100 and 20: the small one is recorded long before the other
# A slow SMTP relay: the chunk of 20 is recorded after about 0.5 s of emails, the chunk of
# 100 after about 2 s, so the kill (once 5 items are done) always lands between the two.
SMTP_DELAY = 0.02


def _request_of(ctx: ServiceContext, conference: str) -> BulkRequest | None:
    with ctx.db.transaction() as session:
        return session.scalars(
            select(BulkRequest)
            .join(Conference, BulkRequest.conference_id == Conference.id)
            .where(Conference.code == conference)
            .order_by(BulkRequest.id.desc())
        ).first()


def _done_items(ctx: ServiceContext, request_id: int) -> int:
    with ctx.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(BulkItem)
                .where(BulkItem.request_id == request_id, BulkItem.state == BulkItemState.DONE)
            )
            or 0
        )


def test_a_bulk_run_killed_half_way_is_resumed_with_one_voucher_and_one_email_each(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    grant_payload: Callable[..., GrantPayload],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ctx = make_ctx()
    ids = []
    for _ in range(GRANTEES):
        intake = ingest_grant(ctx, payload=grant_payload(), actor=TEST_ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)
    pretix_server.latency = 0.1  # slow enough to be caught half-way
    smtp_server.delay = SMTP_DELAY
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "bulk", "run", "--yes"],
        cwd=ROOT,
        env=bot_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        request = None
        while time.monotonic() < deadline and process.poll() is None:
            request = request or _request_of(ctx, conference.code)
            if request is not None and _done_items(ctx, request.id) >= 5:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert request is not None
    killed = _request_of(ctx, conference.code)
    assert killed is not None and killed.status is BulkStatus.RUNNING
    done_before = _done_items(ctx, request.id)
    assert 5 <= done_before < GRANTEES  # killed half-way
    pretix_server.latency = 0.0
    smtp_server.delay = 0.0

    # The scheduler's pass once the runner's lease (and the rows' leases) lapsed.
    later = make_ctx(clock=lambda: utcnow() + dt.timedelta(minutes=10))
    told = Told()
    assert resume_stalled(later, lambda ref: told) == 1, told.summaries

    finished = _request_of(ctx, conference.code)
    assert finished is not None and finished.status is BulkStatus.DONE
    assert _done_items(ctx, request.id) == GRANTEES
    vouchers = pretix_server.all_vouchers()
    assert len(vouchers) == GRANTEES
    assert {voucher_row(ctx.db, g).code for g in ids} == {v["code"] for v in vouchers}
    mails = smtp_server.wait_for(GRANTEES)
    by_recipient: dict[str, set[str]] = defaultdict(set)
    received: dict[str, int] = defaultdict(int)
    for mail in mails:
        [rcpt] = mail.rcpt_tos
        by_recipient[rcpt].add(str(mail.message["Message-ID"]))
        received[rcpt] += 1
    assert len(by_recipient) == GRANTEES
    assert {len(message_ids) for message_ids in by_recipient.values()} == {1}  # one email each
    # The SMTP server saw a message twice at most for the emails in flight at the kill.
    assert sum(received.values()) - GRANTEES <= PIPELINE
    assert {voucher_row(ctx.db, g).emails_sent for g in ids} == {1}
