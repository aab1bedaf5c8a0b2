"""Revoking a grant voucher after a refusal, against real Postgres and the Pretix fake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from bot.conferences import ConferenceConfig
from bot.pretix import EventRef, PretixClient
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.services.outcomes import ProvisionResult, RevokeResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.services.revocation import revoke_grant_voucher
from bot.storage import (
    ConferenceVoucher,
    EmailState,
    VoucherState,
    VoucherType,
)
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import (
    expected_message_id,
    grant_events,
    plain_text,
    record_voucher,
    voucher_row,
)

VOUCHERS = "/api/v1/organizers/pycon/events/pycon2026/vouchers/"
PayloadFactory = Callable[..., GrantPayload]


@dataclass(frozen=True)
class Issued:
    """A grant that got a voucher."""

    grant_id: int
    payload: GrantPayload
    code: str
    pretix_id: int


def issue(ctx: ServiceContext, grant_payload: PayloadFactory, **fields: object) -> Issued:
    payload = grant_payload(**fields)
    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
    assert intake.grant is not None
    outcome = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    assert outcome.has_voucher, outcome.message
    assert outcome.voucher_code is not None and outcome.pretix_voucher_id is not None
    return Issued(intake.grant.id, payload, outcome.voucher_code, outcome.pretix_voucher_id)


def change_status(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    issued: Issued,
    status: str,
    *,
    previous: str,
    at: str,
) -> None:
    payload = grant_payload(
        id=issued.payload.id,
        email=issued.payload.email,
        status=status,
        previous_status=previous,
        updated_at=at,
    )
    ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)


def refuse(ctx: ServiceContext, grant_payload: PayloadFactory, issued: Issued) -> None:
    change_status(
        ctx, grant_payload, issued, "refused", previous="confirmed", at="2026-05-03T09:00:00Z"
    )


def refused_holder_of(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    conference: str,
    seeded: dict[str, Any],
    voucher_type: str,
) -> Issued:
    """A refused grant for the person who holds `seeded`, recorded as a `voucher_type` voucher."""
    email = f"{unique('holder')}@example.org"
    record_voucher(
        ctx,
        conference,
        email,
        type=voucher_type,
        code=seeded["code"],
        pretix_voucher_id=seeded["id"],
    )
    issued = issue(ctx, grant_payload, email=email)
    refuse(ctx, grant_payload, issued)
    return issued


def test_a_refused_grant_loses_its_voucher_in_pretix(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    writes_before = len(pretix_server.writes())

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.REVOKED
    assert outcome.voucher_code == issued.code
    assert issued.code in outcome.message
    assert [step.detail for step in outcome.steps] == [f"deleted voucher #{issued.pretix_id}"]
    [delete] = pretix_server.writes()[writes_before:]
    assert (delete.method, delete.path) == ("DELETE", f"{VOUCHERS}{issued.pretix_id}/")
    assert delete.idempotency_key
    assert delete.status == 204
    assert pretix_server.voucher(issued.pretix_id) is None
    row = voucher_row(ctx.db, issued.grant_id)
    assert row.state is VoucherState.REVOKED
    assert row.lease_expires_at is None and row.last_error is None
    [event] = grant_events(ctx.db, issued.grant_id, "revoke")
    assert (event.outcome, event.actor) == ("revoked", "cli:pytest")
    assert event.detail is not None and event.detail["code"] == issued.code


def test_a_retried_delete_keeps_its_idempotency_key(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    pretix_server.fail_next(502, method="DELETE")

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.REVOKED
    deletes = [r for r in pretix_server.requests if r.method == "DELETE"]
    assert [r.status for r in deletes] == [502, 204]
    assert len({r.idempotency_key for r in deletes}) == 1
    assert deletes[0].idempotency_key


def test_a_grant_that_is_still_confirmed_keeps_its_voucher(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    requests_before = len(pretix_server.requests)

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.NOT_REFUSED
    assert "still confirmed" in outcome.message
    assert len(pretix_server.requests) == requests_before
    assert pretix_server.voucher(issued.pretix_id) is not None
    assert voucher_row(ctx.db, issued.grant_id).state is VoucherState.CREATED
    [event] = grant_events(ctx.db, issued.grant_id, "revoke")
    assert event.outcome == "not_refused"


def test_a_used_voucher_is_not_deleted_and_goes_back_to_created(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    pretix_server.redeem(issued.pretix_id)

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.REDEEMED
    assert "already used" in outcome.message
    assert pretix_server.count("DELETE") == 0
    assert pretix_server.voucher(issued.pretix_id) is not None
    row = voucher_row(ctx.db, issued.grant_id)
    assert row.state is VoucherState.CREATED
    assert row.lease_expires_at is None
    assert row.last_error is not None and "already used" in row.last_error


def test_a_speaker_voucher_is_never_revoked(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    seeded = pretix_server.seed_voucher(code="SPKREVOKE1", price_mode="set", value="0.00")
    issued = refused_holder_of(ctx, grant_payload, conference.code, seeded, "speaker")
    requests_before = len(pretix_server.requests)

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.NOT_A_GRANT_VOUCHER
    assert "speaker voucher" in outcome.message
    assert len(pretix_server.requests) == requests_before
    assert pretix_server.voucher(seeded["id"]) is not None
    row = voucher_row(ctx.db, issued.grant_id)
    assert (row.state, row.voucher_type) == (VoucherState.CREATED, VoucherType.SPEAKER)


def test_an_upgraded_co_speaker_voucher_needs_a_person_to_decide(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    seeded = pretix_server.seed_voucher(code="COSPKREV01", price_mode="percent", value="25.00")
    issued = refused_holder_of(ctx, grant_payload, conference.code, seeded, "co_speaker")
    requests_before = len(pretix_server.requests)

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.NEEDS_REVIEW
    assert "co-speaker" in outcome.message
    assert len(pretix_server.requests) == requests_before
    assert pretix_server.voucher(seeded["id"]) is not None
    row = voucher_row(ctx.db, issued.grant_id)
    assert (row.state, row.original_type) == (VoucherState.CREATED, VoucherType.CO_SPEAKER)


def test_revoking_twice_reports_already_revoked_without_calling_pretix(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    first = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)
    requests_before = len(pretix_server.requests)

    second = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert first.result is RevokeResult.REVOKED
    assert second.result is RevokeResult.ALREADY_REVOKED
    assert second.voucher_code == issued.code
    assert len(pretix_server.requests) == requests_before
    assert [e.outcome for e in grant_events(ctx.db, issued.grant_id, "revoke")] == [
        "revoked",
        "already_revoked",
    ]


def test_a_voucher_deleted_in_pretix_meanwhile_is_already_gone(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    pretix_client: PretixClient,
    pretix_event: EventRef,
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    pretix_client.delete_voucher(pretix_event, issued.pretix_id)  # by hand, in Pretix
    deletes_before = pretix_server.count("DELETE")

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.ALREADY_GONE
    assert pretix_server.count("DELETE") == deletes_before
    assert voucher_row(ctx.db, issued.grant_id).state is VoucherState.REVOKED


def test_pretix_unavailable_throughout_leaves_the_voucher_as_it_was(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    pretix_server.fail_next(503, times=100, method="DELETE")

    outcome = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.RETRY_LATER
    assert "try the revoke again later" in outcome.message
    assert pretix_server.voucher(issued.pretix_id) is not None
    row = voucher_row(ctx.db, issued.grant_id)
    assert row.state is VoucherState.CREATED
    assert row.lease_expires_at is None
    assert row.last_error is not None and "unavailable" in row.last_error
    assert grant_events(ctx.db, issued.grant_id, "revoke")[-1].outcome == "retry_later"

    refused_deletes = [r for r in pretix_server.requests if r.method == "DELETE"]
    assert refused_deletes and {r.status for r in refused_deletes} == {503}

    pretix_server.reset_faults()
    retried = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)
    assert retried.result is RevokeResult.REVOKED
    assert pretix_server.voucher(issued.pretix_id) is None
    # Each revoke is a new request to Pretix (a new idempotency key), so that an answer
    # Pretix stored for an earlier attempt (a 403, say) is never replayed to a later one;
    # deleting twice is harmless (Pretix answers 404, which reads "already gone").
    deletes = [r for r in pretix_server.requests if r.method == "DELETE"]
    assert deletes[-1].status == 204
    assert len({r.idempotency_key for r in refused_deletes}) == 1
    assert deletes[-1].idempotency_key != refused_deletes[0].idempotency_key


def test_a_revoke_that_died_half_way_is_finished_by_the_next_one(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    row = voucher_row(ctx.db, issued.grant_id)
    with ctx.db.transaction() as session:
        session.execute(
            update(ConferenceVoucher)
            .where(ConferenceVoucher.id == row.id)
            .values(
                state=VoucherState.REVOKING,
                lease_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3),
            )
        )

    busy = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)
    assert busy.result is RevokeResult.IN_PROGRESS
    assert pretix_server.voucher(issued.pretix_id) is not None

    with ctx.db.transaction() as session:
        session.execute(
            update(ConferenceVoucher)
            .where(ConferenceVoucher.id == row.id)
            .values(lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
    finished = revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert finished.result is RevokeResult.REVOKED
    assert pretix_server.voucher(issued.pretix_id) is None
    assert voucher_row(ctx.db, issued.grant_id).state is VoucherState.REVOKED


def test_a_grant_confirmed_again_after_a_revoke_gets_a_new_voucher_with_a_new_code(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)
    change_status(
        ctx,
        grant_payload,
        issued,
        "waiting_for_confirmation",
        previous="refused",
        at="2026-05-04T09:00:00Z",
    )
    change_status(
        ctx,
        grant_payload,
        issued,
        "confirmed",
        previous="waiting_for_confirmation",
        at="2026-05-05T09:00:00Z",
    )

    again = provision_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)

    assert again.result is ProvisionResult.CREATED
    assert again.voucher_code is not None and again.voucher_code != issued.code
    assert again.pretix_voucher_id != issued.pretix_id
    assert pretix_server.voucher_by_code(issued.code) is None
    assert pretix_server.voucher_by_code(again.voucher_code) is not None
    row = voucher_row(ctx.db, issued.grant_id)
    assert (row.state, row.code, row.voucher_type) == (
        VoucherState.CREATED,
        again.voucher_code,
        VoucherType.GRANT,
    )
    assert row.email_state is EmailState.SENT
    first, second = smtp_server.messages
    assert again.voucher_code in plain_text(second)
    assert second.message["Message-ID"] != first.message["Message-ID"]
    assert second.message["Message-ID"] == expected_message_id(
        conference, row.id, row.email_generation
    )


def test_nothing_to_revoke(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    grant_id = make_grant(status="refused", previous_status="waiting_for_confirmation")

    no_voucher = revoke_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    no_grant = revoke_grant_voucher(ctx, grant_id=2_000_000_000, actor=TEST_ACTOR)

    assert no_voucher.result is RevokeResult.NO_VOUCHER
    assert no_grant.result is RevokeResult.GRANT_NOT_FOUND
    assert pretix_server.requests == []


def test_without_pretix_nothing_is_revoked(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx()
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    requests_before = len(pretix_server.requests)

    outcome = revoke_grant_voucher(
        make_ctx(pretix=None), grant_id=issued.grant_id, actor=TEST_ACTOR
    )

    assert outcome.result is RevokeResult.PRETIX_DISABLED
    assert len(pretix_server.requests) == requests_before
    assert voucher_row(ctx.db, issued.grant_id).state is VoucherState.CREATED


def test_the_reconciler_issues_a_new_voucher_to_a_grant_confirmed_again_after_a_revoke(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx()
    issued = issue(ctx, grant_payload)
    refuse(ctx, grant_payload, issued)
    revoke_grant_voucher(ctx, grant_id=issued.grant_id, actor=TEST_ACTOR)
    change_status(
        ctx,
        grant_payload,
        issued,
        "confirmed",
        previous="waiting_for_confirmation",
        at="2026-05-05T09:00:00Z",
    )
    offline = provision_grant_voucher(
        make_ctx(pretix=None), grant_id=issued.grant_id, actor=TEST_ACTOR
    )
    assert offline.result is ProvisionResult.PRETIX_DISABLED

    report = reconcile_once(ctx)

    assert [o.result for o in report.provisioned] == [ProvisionResult.CREATED]
    assert report.provisioned[0].voucher_code != issued.code
