"""The provisioning service, every branch, against real Postgres, the Pretix fake and SMTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import update

from bot.conferences import ConferenceConfig, Conferences
from bot.pretix import PretixClient
from bot.services.audit import write_audit_event
from bot.services.codes import ALPHABET, LENGTH
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailResult, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.storage import (
    EmailState,
    Grant,
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


def test_confirmed_grant_gets_one_voucher_created_with_grant_terms(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    grant_id = make_grant(id="1234", full_name="Jane Doe")

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    assert outcome.email is not None and outcome.email.result is EmailResult.SENT
    [post] = pretix_server.writes()
    assert (post.method, post.path) == ("POST", VOUCHERS)
    assert post.headers["authorization"] == "Token test-token"
    assert post.idempotency_key
    body = post.json
    assert body["code"] == outcome.voucher_code
    assert len(body["code"]) == LENGTH and set(body["code"]) <= set(ALPHABET)
    assert body["max_usages"] == 1
    assert body["price_mode"] == "set"
    assert body["value"] == "0.00"
    assert body["tag"] == "grant"
    assert body["quota"] == 1
    assert body.get("item") is None
    assert dt.datetime.fromisoformat(body["valid_until"]) == conference.voucher_valid_until
    assert "1234" in body["comment"] and "Jane Doe" in body["comment"]
    [stored] = pretix_server.all_vouchers()
    assert stored["code"] == outcome.voucher_code and stored["id"] == outcome.pretix_voucher_id

    row = voucher_row(ctx.db, grant_id)
    assert row.state is VoucherState.CREATED
    assert row.voucher_type is VoucherType.GRANT
    assert row.pretix_voucher_id == stored["id"]
    assert row.email_state is EmailState.SENT and row.emails_sent == 1

    [mail] = smtp_server.messages
    assert outcome.grant is not None
    assert mail.rcpt_tos == (outcome.grant.email,)
    assert mail.message["Message-ID"] == expected_message_id(conference, row.id, 0)
    assert outcome.voucher_code is not None
    assert outcome.voucher_code in plain_text(mail)


def test_provisioning_again_changes_nothing(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant()
    first = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    again = [provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR) for _ in range(3)]

    assert {o.result for o in again} == {ProvisionResult.ALREADY_GRANT}
    assert {o.voucher_code for o in again} == {first.voucher_code}
    assert {o.email.result for o in again if o.email} == {EmailResult.ALREADY_SENT}
    assert len(pretix_server.writes()) == 1
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize(
    "status", ["pending", "approved", "waiting_for_confirmation", "refused", "waiting_list"]
)
def test_only_confirmed_grants_get_vouchers(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    status: str,
) -> None:
    grant_id = make_grant(status=status, previous_status="approved")

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NOT_CONFIRMED
    assert "not confirmed" in outcome.message
    assert pretix_server.requests == []


def test_unknown_grant_is_a_reported_no_op(ctx: ServiceContext, pretix_server: FakePretix) -> None:
    outcome = provision_grant_voucher(ctx, grant_id=2_000_000_000, actor=TEST_ACTOR)
    assert outcome.result is ProvisionResult.GRANT_NOT_FOUND
    assert pretix_server.requests == []


def test_grant_without_email_gets_nothing(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    grant_id = make_grant()
    with ctx.db.transaction() as session:  # data from before email was required
        session.execute(
            update(Grant).where(Grant.id == grant_id).values(email=None, email_key=None)
        )

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NO_EMAIL
    assert pretix_server.requests == []


def test_confirmation_from_waiting_list_is_held_until_staff_issue_it(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant(previous_status="waiting_list")

    held = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert held.result is ProvisionResult.HELD
    assert "waiting_list" in held.message
    assert pretix_server.requests == []

    issued = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR, release_hold=True)
    assert issued.result is ProvisionResult.CREATED
    assert len(smtp_server.messages) == 1
    assert "release_hold" in [event.action for event in grant_events(ctx.db, grant_id)]


def test_existing_speaker_voucher_means_no_new_voucher_but_one_email(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    email = f"{unique('speaker')}@example.org"
    record_voucher(
        ctx, conference.code, email, type="speaker", code="SPEAKERCODE1", pretix_voucher_id=1
    )
    grant_id = make_grant(email=email)

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    again = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.ALREADY_SPEAKER
    assert outcome.voucher_code == "SPEAKERCODE1"
    assert outcome.email is not None and outcome.email.result is EmailResult.SENT
    assert again.email is not None and again.email.result is EmailResult.ALREADY_SENT
    assert pretix_server.writes() == []
    [mail] = smtp_server.messages
    assert "SPEAKERCODE1" in plain_text(mail)
    assert "speaker" in str(mail.message["Subject"]).lower()


def test_speaker_voucher_already_emailed_elsewhere_is_not_emailed_again(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    email = f"{unique('speaker')}@example.org"
    record_voucher(
        ctx,
        conference.code,
        email,
        type="speaker",
        code="SPEAKERCODE2",
        email_sent_at="2026-04-01T10:00:00Z",
    )
    outcome = provision_grant_voucher(ctx, grant_id=make_grant(email=email), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.ALREADY_SPEAKER
    assert outcome.email is not None and outcome.email.result is EmailResult.ALREADY_SENT
    assert smtp_server.messages == []


def test_a_voucher_at_another_conference_does_not_count(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    grant_payload: Callable[..., object],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    last_year = conference.model_copy(update={"code": unique("old"), "name": "PyCon 2025"})
    ctx = make_ctx(
        conferences=Conferences({conference.code: conference, last_year.code: last_year})
    )
    email = f"{unique('returning')}@example.org"
    record_voucher(ctx, last_year.code, email, type="speaker", code="LASTYEAR01")

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(email=email), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    assert outcome.voucher_code != "LASTYEAR01"


def test_co_speaker_voucher_is_upgraded_in_pretix_to_grant_terms(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    seeded = pretix_server.seed_voucher(
        code="COSPEAK7GV5RZ",
        price_mode="percent",
        value="25.00",
        tag="co_speaker",
        comment="Co-speaker of talk 42",
    )
    email = f"{unique('cospeaker')}@example.org"
    record_voucher(
        ctx,
        conference.code,
        email,
        type="co_speaker",
        code="COSPEAK7GV5RZ",
        pretix_voucher_id=seeded["id"],
        email_sent_at="2026-03-01T10:00:00Z",
    )
    grant_id = make_grant(email=email)

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.UPGRADED
    [patch] = pretix_server.writes()
    assert (patch.method, patch.path) == ("PATCH", f"{VOUCHERS}{seeded['id']}/")
    assert patch.idempotency_key
    assert patch.json["price_mode"] == "set"
    assert patch.json["value"] == "0.00"
    assert patch.json["tag"] == "grant"
    assert patch.json["comment"].startswith("Co-speaker of talk 42\nUpgraded to a grant voucher")
    # The full grant terms: one use, the conference's quota only, its validity.
    assert patch.json["max_usages"] == 1
    assert patch.json["quota"] == conference.pretix_quota
    assert patch.json["item"] is None
    assert dt.datetime.fromisoformat(patch.json["valid_until"]) == conference.voucher_valid_until
    after = pretix_server.voucher(seeded["id"])
    assert after is not None
    assert (after["price_mode"], after["value"], after["tag"]) == ("set", "0.00", "grant")
    assert len(pretix_server.all_vouchers()) == 1  # upgraded in place, nothing new

    row = voucher_row(ctx.db, grant_id)
    assert (row.voucher_type, row.original_type) == (VoucherType.GRANT, VoucherType.CO_SPEAKER)
    assert row.state is VoucherState.CREATED
    # The co-speaker email went out earlier; the grant email goes out anyway, once.
    [mail] = smtp_server.messages
    assert "COSPEAK7GV5RZ" in plain_text(mail)
    assert row.email_generation == 1

    again = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert again.result is ProvisionResult.ALREADY_GRANT
    assert len(pretix_server.writes()) == 1 and len(smtp_server.messages) == 1


def test_used_co_speaker_voucher_is_left_alone_and_reported(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    seeded = pretix_server.seed_voucher(code="COSPEAKUSED1", price_mode="percent", value="25.00")
    pretix_server.redeem(seeded["id"])
    email = f"{unique('cospeaker')}@example.org"
    record_voucher(
        ctx,
        conference.code,
        email,
        type="co_speaker",
        code="COSPEAKUSED1",
        pretix_voucher_id=seeded["id"],
    )
    grant_id = make_grant(email=email)

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NEEDS_REVIEW
    assert outcome.needs_attention
    assert "already used" in outcome.message
    assert pretix_server.writes() == []
    assert pretix_server.voucher(seeded["id"])["price_mode"] == "percent"  # type: ignore[index]
    assert smtp_server.messages == []
    assert voucher_row(ctx.db, grant_id).voucher_type is VoucherType.CO_SPEAKER

    requests_before = len(pretix_server.requests)
    again = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert again.result is ProvisionResult.NEEDS_REVIEW
    assert len(pretix_server.requests) == requests_before


def test_item_instead_of_quota(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    by_item = conference.model_copy(update={"pretix_quota": None, "pretix_item": 10})
    ctx = make_ctx(conferences=Conferences({by_item.code: by_item}))

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    [post] = pretix_server.writes()
    assert post.json["item"] == 10
    assert post.json.get("quota") is None


def test_voucher_validity_in_the_past_is_refused_before_pretix(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    expired = conference.model_copy(
        update={"voucher_valid_until": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}
    )
    ctx = make_ctx(conferences=Conferences({expired.code: expired}))

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.FAILED
    assert "in the past" in outcome.message
    assert pretix_server.writes() == []


def test_conference_that_does_not_issue_vouchers(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    archived = conference.model_copy(update={"issue_vouchers": False})
    ctx = make_ctx(conferences=Conferences({archived.code: archived}))

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NOT_ISSUING
    assert pretix_server.requests == []


def test_pretix_server_error_is_retried_with_the_same_idempotency_key(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    pretix_server.fail_next(500, method="POST")
    pretix_server.fail_next(429, retry_after=2, method="POST")

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    posts = [r for r in pretix_server.requests if r.method == "POST"]
    assert len(posts) == 3
    assert len({r.idempotency_key for r in posts}) == 1
    assert len(pretix_server.all_vouchers()) == 1


def test_pretix_outage_schedules_a_retry_that_the_reconciler_finishes_with_the_same_code(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    now = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
    clock = [now]
    ctx = make_ctx(clock=lambda: clock[0])
    grant_id = make_grant()
    pretix_server.fail_next(503, times=100, method="POST")

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.RETRY_SCHEDULED
    assert "will retry" in outcome.message.lower()
    row = voucher_row(ctx.db, grant_id)
    assert (row.state, row.attempts) == (VoucherState.CREATING, 1)
    assert row.next_attempt_at == now + dt.timedelta(seconds=30)
    assert smtp_server.messages == []
    reserved_code = row.code

    assert reconcile_once(ctx).idle  # not due yet
    pretix_server.reset()
    clock[0] = now + dt.timedelta(seconds=31)
    report = reconcile_once(ctx)

    [done] = report.provisioned
    assert done.result is ProvisionResult.CREATED
    assert done.voucher_code == reserved_code
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1


def test_retries_stop_after_the_limit_and_the_row_is_marked_failed(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx(max_attempts=2)
    grant_id = make_grant()
    pretix_server.fail_next(503, times=1000, method="POST")

    first = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    second = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert first.result is ProvisionResult.RETRY_SCHEDULED
    assert second.result is ProvisionResult.FAILED
    assert "gave up after 2 attempts" in second.message.lower()
    assert voucher_row(ctx.db, grant_id).state is VoucherState.FAILED


def test_rejected_token_fails_clearly_without_retrying_then_a_staff_retry_succeeds(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    grant_id = make_grant()
    pretix_server.fail_next(401, body={"detail": "Invalid token."}, method="POST")

    failed = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert failed.result is ProvisionResult.FAILED
    assert "PRETIX_TOKEN" in failed.message
    assert pretix_server.count("POST") == 1
    row = voucher_row(ctx.db, grant_id)
    assert row.state is VoucherState.FAILED

    retried = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert retried.result is ProvisionResult.CREATED
    assert retried.voucher_code == row.code


def test_pretix_field_errors_are_reported_in_words(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    wrong_quota = conference.model_copy(update={"pretix_quota": 999})
    ctx = make_ctx(conferences=Conferences({wrong_quota.code: wrong_quota}))

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.FAILED
    assert "quota" in outcome.message and "999" in outcome.message
    assert pretix_server.all_vouchers() == []


def test_lost_answer_and_forgotten_idempotency_key_adopts_the_existing_voucher(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., PretixClient],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    clock = [dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)]
    impatient = make_ctx(clock=lambda: clock[0], pretix=make_pretix_client(max_attempts=1))
    grant_id = make_grant()
    # Pretix creates the voucher but the answer never arrives.
    pretix_server.drop_after_processing_next(method="POST")
    lost = provision_grant_voucher(impatient, grant_id=grant_id, actor=TEST_ACTOR)
    assert lost.result is ProvisionResult.RETRY_SCHEDULED
    [created_in_pretix] = pretix_server.all_vouchers()

    ctx = make_ctx(clock=lambda: clock[0])
    pretix_server.expire_idempotency_keys()  # a day later: the key no longer protects us
    clock[0] += dt.timedelta(days=1)
    [adopted] = reconcile_once(ctx).provisioned

    assert adopted.result is ProvisionResult.ADOPTED
    assert adopted.pretix_voucher_id == created_in_pretix["id"]
    assert pretix_server.all_vouchers() == [created_in_pretix]
    assert voucher_row(ctx.db, grant_id).pretix_voucher_id == created_in_pretix["id"]
    assert len(smtp_server.messages) == 1


def test_without_pretix_nothing_is_reserved_and_the_reconciler_issues_later(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    offline = make_ctx(pretix=None)
    grant_id = make_grant()

    outcome = provision_grant_voucher(offline, grant_id=grant_id, actor=TEST_ACTOR)
    assert outcome.result is ProvisionResult.PRETIX_DISABLED
    assert "PRETIX_URL" in outcome.message

    [issued] = reconcile_once(make_ctx()).provisioned
    assert issued.result is ProvisionResult.CREATED
    assert issued.grant is not None and issued.grant.id == grant_id


def test_every_call_writes_an_audit_event(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    grant_id = make_grant()
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    write_audit_event(ctx.db, actor=TEST_ACTOR, action="note", outcome="ok", grant_id=grant_id)

    provisions = [e for e in grant_events(ctx.db, grant_id) if e.action == "provision"]
    assert [e.outcome for e in provisions] == ["created", "already_grant"]
    assert all(e.actor == "cli:pytest" for e in provisions)
    assert provisions[0].detail is not None and provisions[0].detail["email"] == "sent"


def test_value_is_exactly_zero_in_pretix(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)
    [voucher] = pretix_server.all_vouchers()
    assert Decimal(voucher["value"]) == Decimal("0.00")
    assert voucher["max_usages"] == 1 and voucher["redeemed"] == 0


def test_an_email_change_after_issuing_does_not_make_a_second_voucher(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    grant_payload: Callable[..., object],
    pretix_server: FakePretix,
) -> None:
    grant_id = make_grant(id="7001", updated_at="2026-05-02T10:00:00Z")
    first = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    with ctx.db.transaction() as session:  # the backend now sends a new address
        session.execute(
            update(Grant)
            .where(Grant.id == grant_id)
            .values(email="jane.new@example.org", email_key="jane.new@example.org")
        )

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NEEDS_REVIEW
    assert outcome.voucher_code == first.voucher_code
    assert "email changed" in outcome.message
    assert len(pretix_server.all_vouchers()) == 1


def test_an_upgraded_co_speaker_voucher_unlocks_only_the_grant_product(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    # Made elsewhere: 25% off anything, three uses, no expiry.
    seeded = pretix_server.seed_voucher(
        code="COSPKSCOPE1", price_mode="percent", value="25.00", max_usages=3
    )
    email = f"{unique('cospeaker')}@example.org"
    record_voucher(
        ctx, conference.code, email, type="co_speaker", code="COSPKSCOPE1",
        pretix_voucher_id=seeded["id"],
    )  # fmt: skip

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(email=email), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.UPGRADED
    after = pretix_server.voucher(seeded["id"])
    assert after is not None
    assert (after["quota"], after["item"], after["max_usages"]) == (
        conference.pretix_quota,
        None,
        1,
    )
    assert (after["price_mode"], after["value"]) == ("set", "0.00")
    assert after["valid_until"] is not None


def test_a_worker_that_outlived_its_lease_records_nothing_and_sends_no_second_email(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    import threading

    start = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
    slow = make_ctx(clock=lambda: start)
    seeded = pretix_server.seed_voucher(
        code="COSPKLEASE1", price_mode="percent", value="25.00", tag="co_speaker"
    )
    email = f"{unique('cospeaker')}@example.org"
    record_voucher(
        slow, conference.code, email, type="co_speaker", code="COSPKLEASE1",
        pretix_voucher_id=seeded["id"], email_sent_at="2026-03-01T10:00:00Z",
    )  # fmt: skip
    grant_id = make_grant(email=email)
    # Worker A's PATCH sits in a queue in front of Pretix for a while ...
    pretix_server.hang_next(1.5, method="PATCH")
    outcomes: list[object] = []
    worker_a = threading.Thread(
        target=lambda: outcomes.append(
            provision_grant_voucher(slow, grant_id=grant_id, actor=TEST_ACTOR)
        )
    )
    worker_a.start()
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    while pretix_server.count("PATCH") < 1:
        assert dt.datetime.now(dt.UTC) < deadline
    # ... so long that its lease runs out and worker B does the upgrade and sends the email.
    later = start + slow.lease + dt.timedelta(seconds=1)
    taken_over = provision_grant_voucher(
        make_ctx(clock=lambda: later), grant_id=grant_id, actor=TEST_ACTOR
    )
    worker_a.join(timeout=20)

    assert taken_over.result is ProvisionResult.UPGRADED
    [late] = outcomes
    assert late.result is ProvisionResult.IN_PROGRESS  # type: ignore[attr-defined]
    assert len(smtp_server.messages) == 1
    row = voucher_row(slow.db, grant_id)
    assert (row.voucher_type, row.original_type) == (VoucherType.GRANT, VoucherType.CO_SPEAKER)
    assert row.email_generation == 1


def test_after_fixing_a_refused_token_retry_is_a_new_request_not_a_replay(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    make_pretix_client: Callable[..., PretixClient],
) -> None:
    pretix_server.read_only_tokens.add("team-token")
    ctx = make_ctx(pretix=make_pretix_client(token="team-token"))
    grant_id = make_grant()

    refused = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert refused.result is ProvisionResult.FAILED
    # The organiser gives the token's team write permission, then presses Retry.
    pretix_server.read_only_tokens.discard("team-token")
    pretix_server.tokens.add("team-token")
    retried = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR, release_hold=True)

    assert retried.result is ProvisionResult.CREATED
    assert len(pretix_server.all_vouchers()) == 1
    keys = [r.idempotency_key for r in pretix_server.requests if r.method == "POST"]
    assert len(keys) == 2 and keys[0] != keys[1]
