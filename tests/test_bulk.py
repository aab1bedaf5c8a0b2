"""Bulk issuance (issue 10): freeze, four-eyes approval exactly once, the run, its resume.

Real Postgres, the Pretix fake and a real SMTP server; time is the context's injected clock.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot.services.actors import Actor
from bot.services.bulk import (
    Branch,
    BulkProgress,
    BulkSummary,
    DecisionResult,
    NoReporter,
    RunOutcome,
    decide_bulk,
    expire_due,
    get_request,
    preview_bulk,
    request_bulk,
    request_lines,
    resume_stalled,
    retry_failed,
    run_bulk,
)
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.storage import (
    AuditEvent,
    BulkItemState,
    BulkRequest,
    BulkStatus,
    ConferenceVoucher,
    Grant,
    Source,
    VoucherState,
    VoucherType,
)
from tests.conftest import TEST_ACTOR
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import record_voucher, seed_co_speaker, voucher_row

PayloadFactory = Callable[..., GrantPayload]
ALICE = Actor(Source.SLASH_COMMAND, "UALICE")
BOB = Actor(Source.BUTTON, "UBOB")
CAROL = Actor(Source.BUTTON, "UCAROL")
TTL = dt.timedelta(hours=24)
NOW = dt.datetime(2026, 5, 3, 9, 0, tzinfo=dt.UTC)


class Recorder:
    """A reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.progress_calls: list[BulkProgress] = []
        self.summaries: list[BulkSummary] = []

    def progress(self, progress: BulkProgress) -> None:
        self.progress_calls.append(progress)

    def finished(self, summary: BulkSummary) -> None:
        self.summaries.append(summary)


def _confirmed(
    ctx: ServiceContext, grant_payload: PayloadFactory, count: int, **fields: Any
) -> list[int]:
    ids = []
    for _ in range(count):
        intake = ingest_grant(ctx, payload=grant_payload(**fields), actor=TEST_ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)
    return ids


def _approved(ctx: ServiceContext, conference: str) -> int:
    preview = request_bulk(ctx, conference=conference, actor=ALICE, ttl=TTL)
    assert preview.request is not None
    decision = decide_bulk(
        ctx,
        request_id=preview.request.request_id,
        actor=BOB,
        approve=True,
        allow_self_approval=False,
    )
    assert decision.result is DecisionResult.APPROVED, decision.message
    return preview.request.request_id


def _vouchers(ctx: ServiceContext, conference_id: int) -> list[ConferenceVoucher]:
    with ctx.db.transaction() as session:
        return list(
            session.scalars(
                select(ConferenceVoucher).where(ConferenceVoucher.conference_id == conference_id)
            )
        )


def _audit(ctx: ServiceContext, action: str) -> list[AuditEvent]:
    with ctx.db.transaction() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_a_mixed_conference_is_previewed_by_branch_frozen_approved_and_run_once(
    ctx: ServiceContext,
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    new = _confirmed(ctx, grant_payload, 12)
    _seeded, co_email = seed_co_speaker(ctx, pretix_server, conference.code, "COSPEAK1")
    [upgrade] = _confirmed(ctx, grant_payload, 1, email=co_email)
    [held] = _confirmed(ctx, grant_payload, 1, previous_status="waiting_list")

    preview = preview_bulk(ctx, conference=None)
    assert preview.counts == {Branch.NEW: 12, Branch.UPGRADE: 1, Branch.HELD: 1}
    assert preview.request is None and not pretix_server.writes()

    request_id = _approved(ctx, conference.code)
    recorder = Recorder()
    summary = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=recorder)

    assert summary.outcome is RunOutcome.DONE and summary.all_good, summary
    assert summary.progress is not None
    assert (summary.progress.created, summary.progress.upgraded) == (12, 1)
    assert summary.progress.emailed == 13
    assert pretix_server.count("POST", "/batch_create/") == 1
    assert len(smtp_server.wait_for(13)) == 13
    assert voucher_row(ctx.db, upgrade).voucher_type is VoucherType.GRANT
    assert {voucher_row(ctx.db, g).state for g in new} == {VoucherState.CREATED}
    assert recorder.summaries == [summary]
    assert recorder.progress_calls[-1].processed == 13
    assert get_request(ctx, request_id).status is BulkStatus.DONE  # type: ignore[union-attr]
    lines = request_lines(ctx, request_id)
    assert lines is not None
    assert {line.grant.id: line.state for line in lines.lines}[held] is BulkItemState.SKIPPED

    again = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=NoReporter())
    assert again.outcome is RunOutcome.ALREADY_DONE
    assert pretix_server.count("POST", "/batch_create/") == 1
