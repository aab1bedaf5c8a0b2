"""Bulk issuance (issue 10): freeze, four-eyes approval exactly once, the run, its resume.

Real Postgres, the Pretix fake and a real SMTP server; time is the context's injected clock.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Callable
from typing import Any

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
from tests.helpers import seed_co_speaker, voucher_row

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


def _request(ctx: ServiceContext, conference: str, actor: Actor = ALICE) -> int:
    preview = request_bulk(ctx, conference=conference, actor=actor, ttl=TTL)
    assert preview.request is not None
    return preview.request.request_id


# --- approval: four eyes, exactly once, in time ----------------------------------------------


def test_the_requester_cannot_approve_their_own_request_unless_the_setting_allows_it(
    ctx: ServiceContext, conference: Any, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    _confirmed(ctx, grant_payload, 2)
    request_id = _request(ctx, conference.code)
    self_click = Actor(Source.BUTTON, ALICE.name)  # the same person, clicking the button

    refused = decide_bulk(
        ctx, request_id=request_id, actor=self_click, approve=True, allow_self_approval=False
    )
    ref = get_request(ctx, request_id)
    allowed = decide_bulk(
        ctx, request_id=request_id, actor=self_click, approve=True, allow_self_approval=True
    )

    assert refused.result is DecisionResult.SELF_APPROVAL_REFUSED and not refused.won
    assert ref is not None and ref.status is BulkStatus.AWAITING_APPROVAL
    assert allowed.result is DecisionResult.APPROVED
    assert [
        (e.outcome, (e.detail or {}).get("self_approved")) for e in _audit_of(ctx, request_id)
    ] == [
        ("self_approval_refused", None),
        ("approved", True),
    ]
    assert not pretix_server.writes()  # approving runs nothing by itself


def _audit_of(ctx: ServiceContext, request_id: int) -> list[AuditEvent]:
    return [
        event
        for event in _audit(ctx, "bulk_approve") + _audit(ctx, "bulk_reject")
        if (event.detail or {}).get("request") == request_id
    ]


def test_two_approvals_at_the_same_instant_make_one_approval_and_one_run(
    ctx: ServiceContext,
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    _confirmed(ctx, grant_payload, 12)
    request_id = _request(ctx, conference.code)
    barrier = threading.Barrier(2)
    decisions: dict[str, Any] = {}
    summaries: dict[str, BulkSummary] = {}

    def click(actor: Actor) -> None:
        barrier.wait()
        decision = decide_bulk(
            ctx, request_id=request_id, actor=actor, approve=True, allow_self_approval=False
        )
        decisions[actor.name] = decision
        if decision.won:  # what the Slack listener does: the winner starts the run
            summaries[actor.name] = run_bulk(
                ctx, request_id=request_id, actor=actor, reporter=NoReporter()
            )

    threads = [threading.Thread(target=click, args=(who,)) for who in (BOB, CAROL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    results = sorted(d.result.value for d in decisions.values())
    assert results == ["already_decided", "approved"]
    [winner] = [name for name, d in decisions.items() if d.won]
    [loser] = [d for d in decisions.values() if not d.won]
    assert loser.winner == winner and winner in loser.message
    assert list(summaries) == [winner] and summaries[winner].ran
    assert pretix_server.count("POST", "/batch_create/") == 1
    assert len(pretix_server.all_vouchers()) == 12
    assert len(smtp_server.wait_for(12)) == 12


def test_a_duplicated_click_is_told_who_decided_and_when(
    ctx: ServiceContext, conference: Any, grant_payload: PayloadFactory
) -> None:
    _confirmed(ctx, grant_payload, 1)
    request_id = _request(ctx, conference.code)
    at = dt.datetime(2026, 5, 3, 9, 30, 15, tzinfo=dt.UTC)
    later = ServiceContext(**{**ctx.__dict__, "clock": lambda: at})

    first = decide_bulk(
        later, request_id=request_id, actor=BOB, approve=True, allow_self_approval=False
    )
    again = decide_bulk(
        later, request_id=request_id, actor=BOB, approve=True, allow_self_approval=False
    )
    reject = decide_bulk(
        later, request_id=request_id, actor=CAROL, approve=False, allow_self_approval=False
    )

    assert first.result is DecisionResult.APPROVED
    assert again.result is DecisionResult.ALREADY_DECIDED and again.winner == BOB.name
    assert reject.result is DecisionResult.ALREADY_DECIDED
    assert "approved by UBOB at 09:30:15 UTC" in reject.message
    assert again.request is not None and again.request.decided_at == at
    outcomes = [e.outcome for e in _audit_of(ctx, request_id)]
    assert outcomes == ["approved", "already_decided", "already_decided"]


def test_an_expired_request_runs_nothing_and_is_expired_in_the_background_once(
    make_ctx: Callable[..., ServiceContext],
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx(clock=lambda: NOW)
    _confirmed(ctx, grant_payload, 3)
    preview = request_bulk(
        ctx, conference=conference.code, actor=ALICE, ttl=dt.timedelta(minutes=5)
    )
    assert preview.request is not None
    request_id = preview.request.request_id
    soon = make_ctx(clock=lambda: NOW + dt.timedelta(minutes=4))
    late = make_ctx(clock=lambda: NOW + dt.timedelta(minutes=5))

    assert request_id not in [ref.request_id for ref in expire_due(soon)]
    expired = expire_due(late)
    assert [ref.request_id for ref in expired if ref.request_id == request_id] == [request_id]
    assert request_id not in [ref.request_id for ref in expire_due(late)]  # once
    click = decide_bulk(
        late, request_id=request_id, actor=BOB, approve=True, allow_self_approval=False
    )
    run = run_bulk(late, request_id=request_id, actor=BOB, reporter=NoReporter())

    assert click.result is DecisionResult.EXPIRED and "expired" in click.message
    assert run.outcome is RunOutcome.NOT_APPROVED
    assert not pretix_server.writes()


def test_a_click_after_the_deadline_expires_the_request_itself(
    make_ctx: Callable[..., ServiceContext], conference: Any, grant_payload: PayloadFactory
) -> None:
    ctx = make_ctx(clock=lambda: NOW)
    _confirmed(ctx, grant_payload, 1)
    preview = request_bulk(
        ctx, conference=conference.code, actor=ALICE, ttl=dt.timedelta(minutes=1)
    )
    assert preview.request is not None
    late = make_ctx(clock=lambda: NOW + dt.timedelta(minutes=1, seconds=1))

    click = decide_bulk(
        late,
        request_id=preview.request.request_id,
        actor=BOB,
        approve=True,
        allow_self_approval=False,
    )

    assert click.result is DecisionResult.EXPIRED
    assert click.request is not None and click.request.status is BulkStatus.EXPIRED


def test_a_rejected_request_runs_nothing(
    ctx: ServiceContext, conference: Any, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    _confirmed(ctx, grant_payload, 3)
    request_id = _request(ctx, conference.code)

    rejected = decide_bulk(
        ctx, request_id=request_id, actor=BOB, approve=False, allow_self_approval=False
    )
    approve_after = decide_bulk(
        ctx, request_id=request_id, actor=CAROL, approve=True, allow_self_approval=False
    )
    run = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=NoReporter())

    assert rejected.result is DecisionResult.REJECTED
    assert approve_after.result is DecisionResult.ALREADY_DECIDED
    assert "rejected by UBOB" in approve_after.message
    assert run.outcome is RunOutcome.NOT_APPROVED and not pretix_server.writes()


def test_an_unknown_request_is_not_found_and_the_click_audited(ctx: ServiceContext) -> None:
    missing = random.randint(1_000_000_000, 2_000_000_000)
    decision = decide_bulk(
        ctx, request_id=missing, actor=BOB, approve=True, allow_self_approval=False
    )

    assert decision.result is DecisionResult.NOT_FOUND
    assert [
        e.outcome for e in _audit(ctx, "bulk_approve") if (e.detail or {}).get("request") == missing
    ] == ["not_found"]


def test_nothing_due_stores_no_request(
    ctx: ServiceContext, conference: Any, grant_payload: PayloadFactory
) -> None:
    [held] = _confirmed(ctx, grant_payload, 1, previous_status="waiting_list")

    preview = request_bulk(ctx, conference=conference.code, actor=ALICE, ttl=TTL)

    assert preview.nothing_to_do and preview.request is None
    assert preview.counts == {Branch.HELD: 1}
    with ctx.db.transaction() as session:
        stored = session.scalar(
            select(func.count())
            .select_from(BulkRequest)
            .where(BulkRequest.conference_id == preview.lines[0].grant.conference_id)
        )
    assert stored == 0 and held


# --- re-checked at run time -------------------------------------------------------------------


def test_a_grant_refused_or_given_another_email_after_the_preview_is_skipped_and_listed(
    ctx: ServiceContext,
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    payloads = [grant_payload() for _ in range(12)]
    ids = []
    for payload in payloads:
        intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)
    request_id = _approved(ctx, conference.code)
    later = {"updated_at": "2026-05-02T11:00:00Z"}
    ingest_grant(
        ctx,
        payload=grant_payload(
            **{**payloads[0].model_dump(mode="json"), **later, "status": "refused"}
        ),
        actor=TEST_ACTOR,
    )
    ingest_grant(
        ctx,
        payload=grant_payload(
            **{**payloads[1].model_dump(mode="json"), **later, "email": "moved@example.org"}
        ),
        actor=TEST_ACTOR,
    )

    summary = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=NoReporter())

    skipped = {line.grant.id: line.result for line in summary.skipped}
    assert skipped == {ids[0]: "not_confirmed", ids[1]: "email_changed"}
    assert summary.progress is not None and summary.progress.skipped == 2
    assert summary.progress.created == 10 and not summary.failed
    assert len(pretix_server.all_vouchers()) == 10
    recipients = {m.message["To"].addresses[0].addr_spec for m in smtp_server.wait_for(10)}
    assert payloads[0].email not in recipients and "moved@example.org" not in recipients


def test_a_grant_issued_meanwhile_is_skipped_not_issued_twice(
    ctx: ServiceContext,
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ids = _confirmed(ctx, grant_payload, 11)
    request_id = _approved(ctx, conference.code)
    from bot.services.provisioning import provision_grant_voucher

    provision_grant_voucher(ctx, grant_id=ids[0], actor=TEST_ACTOR)  # /voucher issue meanwhile
    summary = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=NoReporter())

    assert {line.grant.id: line.result for line in summary.skipped} == {ids[0]: "issued_meanwhile"}
    assert len(pretix_server.all_vouchers()) == 11
    assert len(smtp_server.wait_for(11)) == 11


# --- Pretix refuses some rows; retry the failed ones ---------------------------------------


def test_rows_pretix_refuses_are_listed_the_rest_created_once_and_retry_failed_takes_them(
    make_ctx: Callable[..., ServiceContext],
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    # One grantee's code is taken in Pretix by a voucher made elsewhere (other terms).
    pretix_server.seed_voucher(code="TAKENCODE1", price_mode="percent", value="10.00")
    codes = iter(["TAKENCODE1"])
    from bot.services.codes import generate_voucher_code

    ctx = make_ctx(new_code=lambda: next(codes, None) or generate_voucher_code())
    ids = _confirmed(ctx, grant_payload, 12)
    request_id = _approved(ctx, conference.code)
    row_errors: list[dict[str, list[str]]] = [{} for _ in ids]
    row_errors[5] = {"item": ['Invalid pk "999" - object does not exist.']}
    pretix_server.fail_next(400, body=row_errors, path_contains="batch_create")

    summary = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=NoReporter())

    failed = {line.grant.id: line.detail for line in summary.failed}
    assert ids[5] in failed and "999" in failed[ids[5]]
    assert ids[0] in failed  # its code belongs to another voucher: never adopted, never emailed
    assert len(failed) == 2
    assert summary.progress is not None and summary.progress.created == 10
    made = [v for v in pretix_server.all_vouchers() if v["code"] != "TAKENCODE1"]
    assert len(made) == 10
    assert len(smtp_server.wait_for(10)) == 10
    assert pretix_server.voucher_by_code("TAKENCODE1")["value"] == "10.00"  # type: ignore[index]

    retry = retry_failed(ctx, request_id=request_id, actor=ALICE, ttl=TTL)
    again = retry_failed(ctx, request_id=request_id, actor=ALICE, ttl=TTL)  # a second click
    assert retry.request is not None and retry.request.retry_of_id == request_id
    assert again.request is not None and again.request.request_id == retry.request.request_id
    assert {line.grant.id for line in retry.lines} == set(failed)
    refused = decide_bulk(
        ctx,
        request_id=retry.request.request_id,
        actor=Actor(Source.BUTTON, ALICE.name),
        approve=True,
        allow_self_approval=False,
    )
    assert refused.result is DecisionResult.SELF_APPROVAL_REFUSED  # the same rules again
    decide_bulk(
        ctx,
        request_id=retry.request.request_id,
        actor=CAROL,
        approve=True,
        allow_self_approval=False,
    )
    retried = run_bulk(ctx, request_id=retry.request.request_id, actor=CAROL, reporter=NoReporter())

    assert retried.ran
    assert voucher_row(ctx.db, ids[5]).state is VoucherState.CREATED
    assert len([v for v in pretix_server.all_vouchers() if v["code"] != "TAKENCODE1"]) == 11
    assert len(smtp_server.wait_for(11)) == 11
    assert len(pretix_server.all_vouchers()) == 12  # nobody got a second one


# --- grants that wait for staff ---------------------------------------------------------------


def test_grants_waiting_for_staff_are_left_to_staff_by_the_reconciler_and_webhook_path(
    ctx: ServiceContext,
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    from bot.services.outcomes import ProvisionResult
    from bot.services.provisioning import provision_grant_voucher
    from bot.services.reconciler import due_grants, reconcile_once

    ids = []
    for _ in range(3):
        intake = ingest_grant(ctx, payload=grant_payload(), actor=TEST_ACTOR, wait_for_staff=True)
        assert intake.grant is not None
        ids.append(intake.grant.id)
    with ctx.db.transaction() as session:
        assert set(session.scalars(select(Grant.waits_for_staff).where(Grant.id.in_(ids)))) == {
            True
        }

    assert not set(due_grants(ctx, limit=1000)) & set(ids)
    reconcile_once(ctx)
    webhook = provision_grant_voucher(ctx, grant_id=ids[0], actor=TEST_ACTOR)  # the webhook path
    assert webhook.result is ProvisionResult.HELD and "no-provision" in webhook.message
    assert not pretix_server.writes()

    preview = preview_bulk(ctx, conference=conference.code)
    assert preview.counts == {Branch.NEW: 3}
    request_id = _approved(ctx, conference.code)
    summary = run_bulk(ctx, request_id=request_id, actor=BOB, reporter=NoReporter())

    assert summary.all_good and summary.progress is not None and summary.progress.created == 3
    with ctx.db.transaction() as session:
        assert set(session.scalars(select(Grant.waits_for_staff).where(Grant.id.in_(ids)))) == {
            False
        }
    assert len(smtp_server.wait_for(3)) == 3


def test_voucher_issue_by_staff_takes_a_grant_waiting_for_staff(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    from bot.services.outcomes import ProvisionResult
    from bot.services.provisioning import provision_grant_voucher

    intake = ingest_grant(ctx, payload=grant_payload(), actor=TEST_ACTOR, wait_for_staff=True)
    assert intake.grant is not None

    outcome = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=BOB, release_hold=True)

    assert outcome.result is ProvisionResult.CREATED
    with ctx.db.transaction() as session:
        assert session.get_one(Grant, intake.grant.id).waits_for_staff is False


# --- a runner that dies ------------------------------------------------------------------------


def test_a_run_whose_runner_stopped_is_taken_over_after_its_lease_and_resumes_the_pending_items(
    make_ctx: Callable[..., ServiceContext],
    conference: Any,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ctx = make_ctx(clock=lambda: NOW)
    ids = _confirmed(ctx, grant_payload, 25)
    request_id = _approved(ctx, conference.code)
    # A runner took the lease and did nothing more (it died before its first chunk).
    with ctx.db.transaction() as session:
        session.execute(
            update(BulkRequest)
            .where(BulkRequest.id == request_id)
            .values(status=BulkStatus.RUNNING, run_lease_expires_at=NOW + dt.timedelta(minutes=4))
        )
    early = make_ctx(clock=lambda: NOW + dt.timedelta(minutes=3))
    busy = run_bulk(early, request_id=request_id, actor=BOB, reporter=NoReporter())
    assert busy.outcome is RunOutcome.RUNNING_ELSEWHERE and not pretix_server.writes()
    assert resume_stalled(early, lambda ref: NoReporter()) == 0

    recorders: list[Recorder] = []

    def reporter_for(ref: Any) -> Recorder:
        recorders.append(Recorder())
        return recorders[-1]

    later = make_ctx(clock=lambda: NOW + dt.timedelta(minutes=5))
    assert resume_stalled(later, reporter_for) == 1

    assert len(recorders) == 1 and recorders[0].summaries[0].ran
    assert len(pretix_server.all_vouchers()) == 25
    assert len(smtp_server.wait_for(25)) == 25
    assert {voucher_row(ctx.db, g).emails_sent for g in ids} == {1}
