"""The reconciler finishes every kind of unfinished provisioning, and leaves alone what waits
for a person (it must not redo the same no-op every 30 seconds)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import update

from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.services.outcomes import EmailResult, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.storage import Grant, VoucherType
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import record_voucher, voucher_row


def grant_outcomes(ctx: ServiceContext, grant_id: int) -> list[ProvisionResult]:
    return [o.result for o in reconcile_once(ctx).provisioned if o.grant and o.grant.id == grant_id]


def test_a_co_speaker_confirmation_lost_in_a_crash_is_upgraded_by_the_reconciler(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    seeded = pretix_server.seed_voucher(code="COSPKCRASH1", price_mode="percent", value="25.00")
    email = f"{unique('cospeaker')}@example.org"
    record_voucher(
        ctx, conference.code, email, type="co_speaker", code="COSPKCRASH1",
        pretix_voucher_id=seeded["id"],
    )  # fmt: skip
    grant_id = make_grant(email=email)  # confirmed; the process died before provisioning

    assert grant_outcomes(ctx, grant_id) == [ProvisionResult.UPGRADED]
    assert voucher_row(ctx.db, grant_id).voucher_type is VoucherType.GRANT
    assert len(smtp_server.messages) == 1
    assert grant_outcomes(ctx, grant_id) == []  # and then it is done


def test_a_speaker_whose_grant_confirmation_was_lost_still_gets_one_email(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    email = f"{unique('speaker')}@example.org"
    record_voucher(ctx, conference.code, email, type="speaker", code="SPEAKERLOST1")
    grant_id = make_grant(email=email)

    [outcome] = [o for o in reconcile_once(ctx).provisioned if o.grant and o.grant.id == grant_id]
    assert outcome.result is ProvisionResult.ALREADY_SPEAKER
    assert outcome.email is not None and outcome.email.result is EmailResult.SENT
    assert grant_outcomes(ctx, grant_id) == []
    assert pretix_server.writes() == []
    assert len(smtp_server.messages) == 1


def test_an_email_changed_after_issuing_is_left_to_a_person_not_redone_every_pass(
    ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    pretix_server: FakePretix,
) -> None:
    payload = grant_payload()
    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
    assert intake.grant is not None
    grant_id = intake.grant.id
    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).has_voucher
    moved = payload.model_copy(
        update={
            "email": f"new.{unique('')}@example.org",
            "updated_at": dt.datetime(2026, 5, 3, tzinfo=dt.UTC),
        }
    )
    ingest_grant(ctx, payload=moved, actor=TEST_ACTOR)

    assert [grant_outcomes(ctx, grant_id) for _ in range(3)] == [[], [], []]
    assert len(pretix_server.all_vouchers()) == 1


def test_an_unfinished_row_of_a_held_grant_waits_for_staff(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    start = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
    ctx = make_ctx(clock=lambda: start)
    grant_id = make_grant()
    pretix_server.fail_next(503, times=100, method="POST")
    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        ProvisionResult.RETRY_SCHEDULED
    )
    with ctx.db.transaction() as session:  # staff held it meanwhile (e.g. a second look)
        session.execute(
            update(Grant).where(Grant.id == grant_id).values(hold_reason="checking eligibility")
        )
    pretix_server.reset_faults()
    later = make_ctx(clock=lambda: start + dt.timedelta(hours=2))

    assert grant_outcomes(later, grant_id) == []
    assert pretix_server.all_vouchers() == []


def test_one_pass_drains_a_backlog_larger_than_a_batch(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    grant_ids = {make_grant() for _ in range(60)}  # confirmations whose provisioning was lost

    report = reconcile_once(ctx, limit=25)

    done = {o.grant.id for o in report.provisioned if o.grant and o.has_voucher}
    assert grant_ids <= done
    assert len(pretix_server.all_vouchers()) == 60
