"""The holes found against a real pretix and in review, each reproduced and closed.

Every test here failed before its fix. Pretix, SMTP and the database are real at their
boundaries (the Pretix fake answers like pretix 2026.8, idempotency replays included).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text, update

from bot import migrations
from bot.conferences import ConferenceConfig, Conferences
from bot.pretix import PretixClient
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant, ingest_voucher
from bot.services.notifications import GrantPayload, VoucherPayload
from bot.services.outcomes import EmailResult, ProvisionResult, RevokeResult, VoucherIntake
from bot.services.provisioning import provision_grant_voucher, provision_many
from bot.services.reconciler import reconcile_once
from bot.services.resend import resend_voucher_email
from bot.services.revocation import revoke_grant_voucher
from bot.storage import AuditEvent, ConferenceVoucher, Database, Grant, VoucherState, VoucherType
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_events, record_voucher, seed_co_speaker, voucher_row

PayloadFactory = Callable[..., GrantPayload]


def _later(
    payload: PayloadFactory, grant: GrantPayload, minutes: int, **fields: Any
) -> GrantPayload:
    """The same grant, told again `minutes` later with some fields changed."""
    when = grant.updated_at + dt.timedelta(minutes=minutes)
    values = grant.model_dump(mode="json") | {"updated_at": when.isoformat()} | fields
    return payload(**values)


def _told_speaker(
    ctx: ServiceContext, conference: str, voucher: dict[str, Any], email: str
) -> VoucherIntake:
    """The backend says this person's voucher (as Pretix holds it) is a speaker voucher."""
    payload = VoucherPayload.model_validate(
        {
            "conference": conference,
            "email": email,
            "type": "speaker",
            "code": voucher["code"],
            "pretix_voucher_id": voucher["id"],
        }
    )
    return ingest_voucher(ctx, payload=payload, actor=TEST_ACTOR)


# --- 1. idempotency keys unique across bot databases sharing one Pretix token ------------


@pytest.fixture
def fresh_databases(database_url: str) -> Iterator[Callable[[], Database]]:
    """Brand-new bot databases on the test server (row ids start at 1 in each)."""
    made: list[tuple[str, Database]] = []
    admin = create_engine(
        database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )

    def make() -> Database:
        name = f"vb_copy_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        database = Database.from_url(database_url.rsplit("/", 1)[0] + f"/{name}")
        migrations.upgrade(database.engine)
        made.append((name, database))
        return database

    yield make
    for name, database in made:
        database.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_two_bot_databases_on_one_token_never_replay_each_others_upgrade(
    make_ctx: Callable[..., ServiceContext],
    fresh_databases: Callable[[], Database],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
    grant_payload: PayloadFactory,
) -> None:
    # A staging copy: the same conference, the same grant ids, the same first row ids.
    upgraded = []
    for person in ("ada", "bob"):
        ctx = make_ctx(db=fresh_databases())
        code = f"COSPK{person.upper()}25"
        seeded = pretix_server.seed_voucher(
            code=code, price_mode="percent", value="25.00", tag="co_speaker",
            comment="Co-speaker of talk 42",
        )  # fmt: skip
        email = f"{person}@example.org"
        record_voucher(
            ctx, conference.code, email, type="co_speaker", code=code,
            pretix_voucher_id=seeded["id"],
        )  # fmt: skip
        intake = ingest_grant(ctx, payload=grant_payload(id="1001", email=email), actor=TEST_ACTOR)
        assert intake.grant is not None
        outcome = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
        assert outcome.result is ProvisionResult.UPGRADED, outcome.message
        upgraded.append((seeded["id"], outcome))

    for pretix_id, outcome in upgraded:
        assert outcome.pretix_voucher_id == pretix_id  # its own voucher, not the other's
        stored = pretix_server.voucher(pretix_id)
        assert stored is not None
        assert (stored["price_mode"], stored["value"], stored["tag"]) == ("set", "0.00", "grant")
    patches = [w for w in pretix_server.writes() if w.method == "PATCH"]
    assert len({w.idempotency_key for w in patches}) == 2
    assert not any(w.replayed for w in patches)


def test_a_replayed_answer_about_another_voucher_is_reported_never_recorded(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    pretix_client: PretixClient,
    pretix_event: Any,
    conference: ConferenceConfig,
) -> None:
    from bot.pretix import PretixAnswerMismatch, VoucherUpdate

    first = pretix_server.seed_voucher(code="REPLAYA0001", price_mode="percent", value="25.00")
    second = pretix_server.seed_voucher(code="REPLAYB0002", price_mode="percent", value="25.00")
    key = unique("same-key")
    changes = VoucherUpdate(price_mode="set", value="0.00", tag="grant")
    pretix_client.update_voucher(pretix_event, first["id"], changes, idempotency_key=key)

    with pytest.raises(PretixAnswerMismatch, match="not the one asked for"):
        pretix_client.update_voucher(pretix_event, second["id"], changes, idempotency_key=key)

    still = pretix_server.voucher(second["id"])
    assert still is not None and still["price_mode"] == "percent"


# --- 2. an upgrade writes every grant term --------------------------------------------------


def test_an_upgraded_co_speaker_voucher_loses_every_extra_right(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    seeded, email = seed_co_speaker(
        ctx,
        pretix_server,
        conference.code,
        "COSPKRIGHTS1",
        allow_ignore_quota=True,
        all_addons_included=True,
        all_bundles_included=True,
        max_usages=3,
        min_usages=2,
        item=10,
    )

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(email=email), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.UPGRADED
    after = pretix_server.voucher(seeded["id"])
    assert after is not None
    assert after["allow_ignore_quota"] is False
    assert after["all_addons_included"] is False
    assert after["all_bundles_included"] is False
    assert (after["max_usages"], after["min_usages"]) == (1, 1)
    assert (after["quota"], after["item"]) == (conference.pretix_quota, None)


# --- 3. a notification never lowers a speaker voucher in Pretix ----------------------------


def test_a_speaker_voucher_called_co_speaker_later_is_never_rewritten_in_pretix(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    seeded = pretix_server.seed_voucher(code="SPEAKERFREE1", price_mode="set", value="0.00")
    email = f"{unique('speaker')}@example.org"
    for kind in ("speaker", "co_speaker"):
        record_voucher(
            ctx, conference.code, email, type=kind, code="SPEAKERFREE1",
            pretix_voucher_id=seeded["id"],
        )  # fmt: skip

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(email=email), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.ALREADY_SPEAKER
    assert [w for w in pretix_server.writes() if w.method == "PATCH"] == []


# --- 4. revoke during a slow create --------------------------------------------------------


def test_a_revoke_during_a_slow_create_leaves_no_orphan_and_no_second_voucher(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx(lease=dt.timedelta(seconds=1))
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    grant_id = intake.grant.id
    pretix_server.hang_next(2.5, method="POST")  # the create queues in front of Pretix
    outcomes: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(
            provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
        )
    )
    worker.start()
    deadline = time.monotonic() + 10
    while pretix_server.count("POST") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    refused = _later(grant_payload, confirmed, 5, status="refused")
    ingest_grant(ctx, payload=refused, actor=TEST_ACTOR)
    time.sleep(1.2)  # the create's lease is over; its request has not landed yet

    revoked = revoke_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    worker.join(timeout=20)

    assert revoked.result in (RevokeResult.ALREADY_GONE, RevokeResult.REVOKED)
    [late] = outcomes
    assert late.result is not ProvisionResult.CREATED
    assert pretix_server.all_vouchers() == []  # the late create was deleted again

    again = _later(
        grant_payload, confirmed, 10, status="confirmed", previous_status="waiting_for_confirmation"
    )
    ingest_grant(
        ctx,
        payload=_later(grant_payload, confirmed, 9, status="waiting_for_confirmation"),
        actor=TEST_ACTOR,
    )
    ingest_grant(ctx, payload=again, actor=TEST_ACTOR)
    reissued = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert reissued.result is ProvisionResult.CREATED
    assert [v["code"] for v in pretix_server.all_vouchers()] == [reissued.voucher_code]


def test_a_create_that_landed_after_its_revoke_is_deleted_before_the_next_voucher(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    grant_id = intake.grant.id
    pretix_server.fail_next(503, times=100, method="POST")
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)  # retry scheduled
    old_code = voucher_row(ctx.db, grant_id).code
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 5, status="refused"), actor=TEST_ACTOR
    )
    pretix_server.reset()
    # The revoke replays the open create to make its outcome certain, then deletes it.
    assert revoke_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        RevokeResult.REVOKED
    )
    assert pretix_server.all_vouchers() == []
    # The timed-out create reached Pretix after all, after the revoke had looked.
    pretix_server.seed_voucher(code=old_code, price_mode="set", value="0.00", tag="grant")

    reissued = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR, release_hold=True)
    assert reissued.result is ProvisionResult.NOT_CONFIRMED  # refused: nothing happens
    ingest_grant(
        ctx,
        payload=_later(grant_payload, confirmed, 9, status="waiting_for_confirmation"),
        actor=TEST_ACTOR,
    )
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 10, status="confirmed"), actor=TEST_ACTOR
    )
    reissued = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert reissued.result is ProvisionResult.CREATED
    assert reissued.voucher_code != old_code
    assert [v["code"] for v in pretix_server.all_vouchers()] == [reissued.voucher_code]


# --- 5. one predicate decides "due": no loop after a revoke and an email change ------------


def test_a_grant_confirmed_again_with_a_new_email_after_a_revoke_does_not_loop(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    grant_id = intake.grant.id
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 5, status="refused"), actor=TEST_ACTOR
    )
    assert revoke_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        RevokeResult.REVOKED
    )
    new_email = f"new.{unique('')}@example.org"
    for minutes, status in ((9, "waiting_for_confirmation"), (10, "confirmed")):
        ingest_grant(
            ctx,
            payload=_later(grant_payload, confirmed, minutes, status=status, email=new_email),
            actor=TEST_ACTOR,
        )

    first = reconcile_once(ctx)
    audits = len(grant_events(ctx.db, grant_id, "provision"))
    passes = [reconcile_once(ctx) for _ in range(3)]

    assert [o.result for o in first.provisioned] == [ProvisionResult.CREATED]
    assert all(report.idle for report in passes)
    assert len(grant_events(ctx.db, grant_id, "provision")) == audits
    assert smtp_server.messages[-1].message["To"].addresses[0].addr_spec == new_email


# --- 6. an email goes only to the address its voucher was reserved for --------------------


def test_a_pending_email_is_not_sent_to_a_changed_address(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    smtp_server: FakeSmtpServer,
) -> None:
    no_mail = make_ctx(mailer=None)
    confirmed = grant_payload()
    intake = ingest_grant(no_mail, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    created = provision_grant_voucher(no_mail, grant_id=intake.grant.id, actor=TEST_ACTOR)
    assert created.result is ProvisionResult.CREATED  # the email waits: SMTP is off
    changed = f"someone.else.{unique('')}@example.org"
    ingest_grant(
        no_mail, payload=_later(grant_payload, confirmed, 5, email=changed), actor=TEST_ACTOR
    )

    ctx = make_ctx()
    reports = [reconcile_once(ctx) for _ in range(2)]
    outcome = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)

    assert smtp_server.messages == []
    assert all(report.idle for report in reports)
    assert outcome.result is ProvisionResult.NEEDS_REVIEW
    assert "email changed" in outcome.message


# --- 7. a co-speaker voucher is never mailed as a free ticket ------------------------------


def test_resending_a_co_speaker_voucher_is_refused_with_the_reason(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    _, email = seed_co_speaker(ctx, pretix_server, conference.code, "COSPKHELD25")
    grant_id = make_grant(email=email, previous_status="approved")  # held: not upgraded
    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        ProvisionResult.HELD
    )

    resent = resend_voucher_email(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert resent.ok is False
    assert "co-speaker voucher" in resent.message and "discount" in resent.message
    assert smtp_server.messages == []


# --- 8. one grant's surprise never stops the others ----------------------------------------


class _ExplodingTransport(httpx.HTTPTransport):
    """A network stack with a bug: any request carrying `marker` raises a plain error."""

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.marker = marker

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.marker in request.content:
            raise RuntimeError("a bug below the Pretix client")
        return super().handle_request(request)


def test_an_unexpected_error_counts_as_an_attempt_and_never_stops_the_others(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    codes = iter(["BOOM" + uuid.uuid4().hex[:8].upper()] + [
        "OK" + uuid.uuid4().hex[:10].upper() for _ in range(10)
    ])  # fmt: skip
    client = PretixClient(
        base_url=pretix_server.url,
        token=pretix_server.token,
        transport=_ExplodingTransport(b"BOOM"),
        sleep=lambda _: None,
    )
    ctx = make_ctx(pretix=client, new_code=lambda: next(codes), max_attempts=2)
    grant_ids = [make_grant() for _ in range(3)]

    outcomes = provision_many(ctx, grant_ids=grant_ids, actor=TEST_ACTOR, workers=1)

    assert [o.result for o in outcomes] == [
        ProvisionResult.RETRY_SCHEDULED, ProvisionResult.CREATED, ProvisionResult.CREATED,
    ]  # fmt: skip
    assert "Unexpected error (RuntimeError)" in outcomes[0].message
    assert voucher_row(ctx.db, grant_ids[0]).attempts == 1
    last = provision_grant_voucher(ctx, grant_id=grant_ids[0], actor=TEST_ACTOR)
    assert last.result is ProvisionResult.FAILED
    row = voucher_row(ctx.db, grant_ids[0])
    assert row.state is VoucherState.FAILED and "RuntimeError" in (row.last_error or "")
    client.close()


# --- 9. no voucher whose email can never be built --------------------------------------------


def test_no_voucher_is_reserved_for_a_grantee_no_email_can_be_addressed_to(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    grant_id = make_grant()
    with ctx.db.transaction() as session:  # a row stored before names were cleaned at intake
        session.execute(
            update(Grant).where(Grant.id == grant_id).values(full_name="Jane\r\nBcc: x@evil")
        )

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NEEDS_REVIEW
    assert "no email can be" in outcome.message
    assert pretix_server.writes() == []
    assert reconcile_once(ctx).idle


# --- 16. a busy Pretix on revoke is said as such -------------------------------------------


def test_a_busy_pretix_on_revoke_is_reported_as_busy_not_as_a_refusal(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 5, status="refused"), actor=TEST_ACTOR
    )
    pretix_server.fail_next(409, times=100, method="DELETE")

    outcome = revoke_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)

    assert outcome.result is RevokeResult.RETRY_LATER
    assert "busy" in outcome.message and "refused" not in outcome.message
    row = voucher_row(ctx.db, intake.grant.id)
    assert row.state is VoucherState.CREATED


def test_no_audit_flood_from_held_or_review_grants(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    held = make_grant(previous_status="approved")
    reconcile_once(ctx)
    with ctx.db.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.grant_id == held)
        )
    assert count == 1  # the intake only


# --- found in review of the rewrite -----------------------------------------------------------


def test_a_grant_refused_while_its_batch_runs_gets_no_voucher(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    first, second = grant_payload(), grant_payload()
    ids = []
    for payload in (first, second):
        intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)

    def refuse_the_second(outcome: Any) -> None:
        if outcome.grant and outcome.grant.id == ids[0]:
            refused = _later(grant_payload, second, 5, status="refused")
            ingest_grant(ctx, payload=refused, actor=TEST_ACTOR)

    outcomes = provision_many(
        ctx, grant_ids=ids, actor=TEST_ACTOR, workers=1, on_progress=refuse_the_second
    )

    assert [o.result for o in outcomes] == [ProvisionResult.CREATED, ProvisionResult.NOT_CONFIRMED]
    assert len(pretix_server.all_vouchers()) == 1
    assert [m.rcpt_tos for m in smtp_server.messages] == [(first.email,)]


def test_a_revoke_never_settles_a_create_that_may_still_land(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., PretixClient],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx(pretix=make_pretix_client(timeout=0.5, max_attempts=1))
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    grant_id = intake.grant.id
    # Pretix takes the create, holds its key and works on it after the client gave up.
    pretix_server.hang_next(2.0, method="POST", while_processing=True)
    timed_out = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert timed_out.result is ProvisionResult.RETRY_SCHEDULED
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 5, status="refused"), actor=TEST_ACTOR
    )

    early = revoke_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert early.result is RevokeResult.RETRY_LATER
    assert "still running" in early.message
    assert voucher_row(ctx.db, grant_id).state is not VoucherState.REVOKED
    time.sleep(2.2)
    late = revoke_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert late.result is RevokeResult.REVOKED
    assert pretix_server.all_vouchers() == []
    assert voucher_row(ctx.db, grant_id).state is VoucherState.REVOKED


def test_a_co_speaker_notification_after_the_upgrade_keeps_the_grant_email_due(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    ctx = make_ctx()
    seeded, email = seed_co_speaker(ctx, pretix_server, conference.code, "COSPKMERGE1")
    grant_id = make_grant(email=email)
    upgraded = provision_grant_voucher(make_ctx(mailer=None), grant_id=grant_id, actor=TEST_ACTOR)
    assert upgraded.result is ProvisionResult.UPGRADED
    # The backend re-announces the co-speaker voucher it mailed in March.
    mailed = "2026-03-01T10:00:00Z"
    record_voucher(ctx, conference.code, email, type="co_speaker", code="COSPKMERGE1",
                   pretix_voucher_id=seeded["id"], email_sent_at=mailed)  # fmt: skip

    reconcile_once(ctx)

    assert [m.rcpt_tos for m in smtp_server.messages] == [(email,)]  # the grant email


def test_a_speaker_notification_during_an_unfinished_upgrade_stops_it(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., PretixClient],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    start = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
    ctx = make_ctx(clock=lambda: start, pretix=make_pretix_client(max_attempts=1))
    seeded, email = seed_co_speaker(ctx, pretix_server, conference.code, "SPKLATE0001")
    grant_id = make_grant(email=email)
    pretix_server.fail_next(503, method="PATCH")
    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        ProvisionResult.RETRY_SCHEDULED
    )

    told = _told_speaker(ctx, conference.code, seeded, email)
    reconcile_once(make_ctx(clock=lambda: start + dt.timedelta(hours=2)))

    assert told.needs_person and "stopped" in told.message
    row = voucher_row(ctx.db, grant_id)
    assert (row.voucher_type, row.state) == (VoucherType.SPEAKER, VoucherState.CREATED)
    after = pretix_server.voucher(seeded["id"])
    assert after is not None and after["tag"] != "grant"  # never rewritten to grant terms


def test_a_resumed_create_is_the_same_request_whatever_the_configuration_says_now(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., PretixClient],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    start = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
    ctx = make_ctx(clock=lambda: start, pretix=make_pretix_client(max_attempts=1))
    grant_id = make_grant()
    pretix_server.drop_after_processing_next(method="POST")  # done, the answer lost
    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        ProvisionResult.RETRY_SCHEDULED
    )
    fixed = conference.model_copy(
        update={"voucher_valid_until": dt.datetime(2031, 1, 31, 22, 59, 59, tzinfo=dt.UTC)}
    )
    later = make_ctx(
        clock=lambda: start + dt.timedelta(hours=2),
        conferences=Conferences({conference.code: fixed}),
    )

    reconcile_once(later)

    posts = [w for w in pretix_server.writes() if w.method == "POST"]
    assert len(posts) == 2 and len({p.idempotency_key for p in posts}) == 1
    assert posts[1].replayed and posts[1].json == posts[0].json
    assert voucher_row(ctx.db, grant_id).state is VoucherState.CREATED


def test_an_adopted_voucher_with_other_terms_goes_to_a_person(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    code = "ADOPT" + uuid.uuid4().hex[:11].upper()
    codes = iter([code])
    ctx = replace(ctx, new_code=lambda: next(codes))
    pretix_server.seed_voucher(code=code, price_mode="percent", value="25.00")  # not our terms

    outcome = provision_grant_voucher(ctx, grant_id=make_grant(), actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.NEEDS_REVIEW
    assert "other terms" in outcome.message


def test_no_email_for_a_grant_refused_after_its_voucher_was_made(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    smtp_server: FakeSmtpServer,
) -> None:
    confirmed = grant_payload()
    no_mail = make_ctx(mailer=None)
    intake = ingest_grant(no_mail, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    created = provision_grant_voucher(no_mail, grant_id=intake.grant.id, actor=TEST_ACTOR)
    assert created.result is ProvisionResult.CREATED  # the email waits: SMTP is off
    ctx = make_ctx()
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 5, status="refused"), actor=TEST_ACTOR
    )

    reconcile_once(ctx)

    assert smtp_server.messages == []


def test_a_revoke_that_died_half_way_is_finished_by_the_reconciler(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ctx = make_ctx(lease=dt.timedelta(seconds=1))
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    ingest_grant(
        ctx, payload=_later(grant_payload, confirmed, 5, status="refused"), actor=TEST_ACTOR
    )
    pretix_server.hang_next(3.0, method="DELETE")
    client = PretixClient(base_url=pretix_server.url, token=pretix_server.token, timeout=0.3,
                          max_attempts=1)  # fmt: skip
    dying = make_ctx(lease=dt.timedelta(seconds=1), pretix=client)
    assert revoke_grant_voucher(dying, grant_id=intake.grant.id, actor=TEST_ACTOR).result is (
        RevokeResult.RETRY_LATER
    )
    client.close()
    with ctx.db.transaction() as session:  # as if the process died before it released the row
        session.execute(
            update(ConferenceVoucher)
            .where(ConferenceVoucher.id == voucher_row(ctx.db, intake.grant.id).id)
            .values(state=VoucherState.REVOKING)
        )
    time.sleep(3.2)

    report = reconcile_once(ctx)

    [finished] = report.revoked
    assert finished.result in (RevokeResult.REVOKED, RevokeResult.ALREADY_GONE)
    assert pretix_server.all_vouchers() == []
    assert voucher_row(ctx.db, intake.grant.id).state is VoucherState.REVOKED


def test_retry_after_a_person_fixed_a_case_in_review_tries_again(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    from bot.services.retry import retry_grant

    email = f"{unique('review')}@example.org"
    record_voucher(ctx, conference.code, email, type="co_speaker", code="COSPKGONE01")
    grant_id = make_grant(email=email)
    missing = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert missing.result is ProvisionResult.NEEDS_REVIEW  # not in Pretix
    pretix_server.seed_voucher(code="COSPKGONE01", price_mode="percent", value="25.00")

    retried = retry_grant(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert retried.result is ProvisionResult.UPGRADED


# --- many new grantees at once: Pretix's batch_create ---------------------------------------


def _confirmed(ctx: ServiceContext, grant_payload: PayloadFactory, count: int) -> list[int]:
    return [grant_id for _, grant_id in _confirmed_payloads(ctx, grant_payload, count)]


def _confirmed_payloads(
    ctx: ServiceContext, grant_payload: PayloadFactory, count: int
) -> list[tuple[GrantPayload, int]]:
    """`count` confirmed grants, stored: each one's notification and its id."""
    made = []
    for _ in range(count):
        payload = grant_payload()
        intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
        assert intake.grant is not None
        made.append((payload, intake.grant.id))
    return made


def test_many_new_grantees_are_created_in_one_batch_and_each_emailed_once(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ids = _confirmed(ctx, grant_payload, 12)

    outcomes = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=4)
    again = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=4)

    assert {o.result for o in outcomes} == {ProvisionResult.CREATED}
    assert [w.path.rsplit("/", 2)[-2] for w in pretix_server.writes()] == ["batch_create"]
    assert {v["code"] for v in pretix_server.all_vouchers()} == {o.voucher_code for o in outcomes}
    assert len(smtp_server.wait_for(12)) == 12
    assert {o.result for o in again} == {ProvisionResult.ALREADY_GRANT}
    assert len(pretix_server.writes()) == 1 and len(smtp_server.messages) == 12


def test_a_batch_row_pretix_refuses_is_set_aside_and_the_rest_created_once(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    ids = _confirmed(ctx, grant_payload, 10)
    row_errors: list[dict[str, list[str]]] = [{} for _ in ids]
    row_errors[3] = {"item": ['Invalid pk "999" - object does not exist.']}
    pretix_server.fail_next(400, body=row_errors, path_contains="batch_create")

    outcomes = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=1)

    results = [o.result for o in outcomes]
    assert results[3] is ProvisionResult.FAILED and "999" in outcomes[3].message
    assert results[:3] + results[4:] == [ProvisionResult.CREATED] * 9
    assert len(pretix_server.all_vouchers()) == 9
    assert pretix_server.count("POST", "/batch_create/") == 2  # refused, then the other nine
    assert voucher_row(ctx.db, ids[3]).state is VoucherState.FAILED


def test_a_batch_whose_answer_was_lost_is_finished_one_by_one_without_duplicates(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., PretixClient],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    start = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
    ctx = make_ctx(clock=lambda: start, pretix=make_pretix_client(max_attempts=1))
    ids = _confirmed(ctx, grant_payload, 10)
    pretix_server.drop_after_processing_next(path_contains="batch_create")  # done, answer lost

    first = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=1)
    later = make_ctx(clock=lambda: start + dt.timedelta(hours=2))
    report = reconcile_once(later)

    assert {o.result for o in first} == {ProvisionResult.RETRY_SCHEDULED}
    assert {o.result for o in report.provisioned} == {ProvisionResult.ADOPTED}
    assert len(pretix_server.all_vouchers()) == 10
    assert len(smtp_server.wait_for(10)) == 10


def test_a_revoke_during_a_batch_still_running_at_pretix_leaves_no_orphan(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., PretixClient],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    clock = [dt.datetime.now(dt.UTC)]
    ctx = make_ctx(clock=lambda: clock[0], pretix=make_pretix_client(timeout=0.5, max_attempts=1))
    made = _confirmed_payloads(ctx, grant_payload, 10)
    payloads, ids = [payload for payload, _ in made], [grant_id for _, grant_id in made]
    # Pretix takes the batch, holds its key and works on it after the client gave up.
    pretix_server.hang_next(2.0, path_contains="batch_create", while_processing=True)
    assert {o.result for o in provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=1)} == {
        ProvisionResult.RETRY_SCHEDULED
    }
    code = voucher_row(ctx.db, ids[0]).code
    ingest_grant(ctx, payload=_later(grant_payload, payloads[0], 5, status="refused"),
                 actor=TEST_ACTOR)  # fmt: skip
    revoke_grant_voucher(ctx, grant_id=ids[0], actor=TEST_ACTOR)
    time.sleep(2.5)  # the batch is done at Pretix now, the revoked code among its vouchers

    clock[0] += dt.timedelta(minutes=2)
    report = reconcile_once(ctx)

    assert report.late_vouchers_deleted == 1
    assert code not in {v["code"] for v in pretix_server.all_vouchers()}
    assert voucher_row(ctx.db, ids[0]).state is VoucherState.REVOKED


class _SlowMailer:
    """A mailer behind a slow relay: each email takes `step` on the shared clock."""

    def __init__(self, inner: Any, clock: list[dt.datetime], step: dt.timedelta, hook: Any):
        self.inner, self.clock, self.step, self.hook, self.sent = inner, clock, step, hook, 0

    def send(self, message: Any) -> None:
        self.sent += 1
        self.clock[0] += self.step
        self.hook(self.sent)
        self.inner.send(message)


def test_a_batch_claims_its_emails_in_tens_close_to_their_sending(
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    smtp_mailer: Any,
) -> None:
    clock = [dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)]
    ctx = make_ctx(clock=lambda: clock[0])
    made = _confirmed_payloads(ctx, grant_payload, 12)
    payloads, ids = [payload for payload, _ in made], [grant_id for _, grant_id in made]
    other_replica = make_ctx(clock=lambda: clock[0], pretix=None)

    def meanwhile(sent: int) -> None:
        if sent == 2:  # staff refuse the last grantee while the chunk's emails go out
            refused = _later(grant_payload, payloads[-1], 5, status="refused")
            ingest_grant(ctx, payload=refused, actor=TEST_ACTOR)
        if sent == 11:  # 11 emails x 20 s: longer than a lease; another replica's pass
            reconcile_once(other_replica)

    slow = _SlowMailer(smtp_mailer, clock, dt.timedelta(seconds=20), meanwhile)
    provision_many(make_ctx(clock=lambda: clock[0], mailer=slow), grant_ids=ids,
                   actor=TEST_ACTOR, workers=1)  # fmt: skip

    received = [m.rcpt_tos[0] for m in smtp_server.wait_for(11)]
    time.sleep(0.3)
    assert len(smtp_server.messages) == 11 and len(set(received)) == 11  # no email twice
    assert payloads[-1].email not in received  # refused before its turn: no email


# --- many co-speaker vouchers at once: upgraded one by one, recorded together --------------


def _co_speakers(
    ctx: ServiceContext,
    pretix_server: FakePretix,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    count: int,
) -> list[tuple[dict[str, Any], str, int]]:
    """`count` co-speakers whose grant was confirmed: (Pretix voucher, email, grant id)."""
    made = []
    for _ in range(count):
        seeded, email = seed_co_speaker(ctx, pretix_server, conference.code, unique("COSPK"))
        made.append((seeded, email, make_grant(email=email)))
    return made


def test_many_co_speaker_vouchers_are_upgraded_recorded_and_each_emailed_once(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    from sqlalchemy import event

    made = _co_speakers(ctx, pretix_server, make_grant, conference, 4)
    ids = [grant_id for _, _, grant_id in made]
    many: list[str] = []  # statements sent once for many rows

    def seen(*args: Any) -> None:
        statement, executemany = args[2], args[5]
        if executemany and statement.startswith("UPDATE conference_vouchers SET state"):
            many.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", seen)
    try:
        outcomes = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=4)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", seen)
    again = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=4)

    assert [o.result for o in outcomes] == [ProvisionResult.UPGRADED] * 4
    assert len(many) == 1  # reserved together (one statement for the four rows)
    assert [o.email.result for o in outcomes if o.email] == [EmailResult.SENT] * 4
    for seeded, _, grant_id in made:
        after = pretix_server.voucher(seeded["id"])
        assert after is not None
        assert (after["price_mode"], after["value"], after["tag"]) == ("set", "0.00", "grant")
        row = voucher_row(ctx.db, grant_id)
        assert (row.voucher_type, row.original_type) == (VoucherType.GRANT, VoucherType.CO_SPEAKER)
        assert (row.state, row.email_sent_at is not None) == (VoucherState.CREATED, True)
    assert pretix_server.count("PATCH") == 4
    assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(4)) == sorted(e for _, e, _ in made)
    assert {o.result for o in again} == {ProvisionResult.ALREADY_GRANT}
    time.sleep(0.2)
    assert pretix_server.count("PATCH") == 4 and len(smtp_server.messages) == 4


def test_a_used_co_speaker_voucher_among_many_goes_to_a_person_the_rest_are_upgraded(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    made = _co_speakers(ctx, pretix_server, make_grant, conference, 3)
    used, used_email, used_grant = made[1]
    pretix_server.redeem(used["id"])

    outcomes = provision_many(
        ctx, grant_ids=[grant_id for _, _, grant_id in made], actor=TEST_ACTOR, workers=2
    )

    assert [o.result for o in outcomes] == [
        ProvisionResult.UPGRADED,
        ProvisionResult.NEEDS_REVIEW,
        ProvisionResult.UPGRADED,
    ]
    assert "already used" in outcomes[1].message
    assert voucher_row(ctx.db, used_grant).state is VoucherState.NEEDS_REVIEW
    after = pretix_server.voucher(used["id"])
    assert after is not None and after["price_mode"] == "percent"  # left as it was
    received = [m.rcpt_tos[0] for m in smtp_server.wait_for(2)]
    time.sleep(0.2)
    assert len(smtp_server.messages) == 2 and used_email not in received


def test_a_co_speaker_row_changed_after_its_facts_were_read_is_decided_again(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    from bot.services.provisioning_facts import load_facts

    made = _co_speakers(ctx, pretix_server, make_grant, conference, 3)
    ids = [grant_id for _, _, grant_id in made]
    with ctx.db.transaction() as session:
        read = load_facts(session, ctx, ids)  # as a bulk run reads them for its re-check
    speaker, speaker_email, _ = made[0]
    # Meanwhile the backend says the first one is a speaker after all (a free voucher).
    told = _told_speaker(ctx, conference.code, speaker, speaker_email)
    assert not told.needs_person

    outcomes = provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=2, known_facts=read)

    assert [o.result for o in outcomes] == [
        ProvisionResult.ALREADY_SPEAKER,
        ProvisionResult.UPGRADED,
        ProvisionResult.UPGRADED,
    ]
    after = pretix_server.voucher(speaker["id"])
    assert after is not None and after["tag"] != "grant"  # never rewritten to grant terms
    assert pretix_server.count("PATCH") == 2


def test_a_co_speaker_batch_taken_over_while_pretix_answers_is_emailed_once(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    clock = [dt.datetime.now(dt.UTC)]
    ctx = make_ctx(clock=lambda: clock[0])
    made = _co_speakers(ctx, pretix_server, make_grant, conference, 3)

    def another_replica_takes_over() -> None:  # this worker looks dead: its leases lapsed
        clock[0] += dt.timedelta(minutes=10)
        reconcile_once(make_ctx(clock=lambda: clock[0]))

    pretix_server.call_while_answering_next(another_replica_takes_over, method="PATCH")
    outcomes = provision_many(
        ctx, grant_ids=[grant_id for _, _, grant_id in made], actor=TEST_ACTOR, workers=1
    )

    # The other replica replayed the first PATCH (same key), did the others, recorded them and
    # sent their emails; this worker records nothing and says so, as a single upgrade would.
    assert [o.result for o in outcomes] == [ProvisionResult.IN_PROGRESS] * 3
    assert all("took over" in o.message for o in outcomes)
    received = sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(3))
    time.sleep(0.3)
    assert len(smtp_server.messages) == 3 and received == sorted(e for _, e, _ in made)
    for seeded, _, grant_id in made:
        after = pretix_server.voucher(seeded["id"])
        assert after is not None and after["tag"] == "grant"
        row = voucher_row(ctx.db, grant_id)
        assert (row.state, row.voucher_type) == (VoucherState.CREATED, VoucherType.GRANT)


# --- the email claim's plan, on a database without statistics ------------------------------


def _relations_outside_subplans(node: dict[str, Any], in_subplan: bool = False) -> set[str]:
    """The tables a plan reads other than inside a subplan (a per-row probe)."""
    in_subplan = in_subplan or node.get("Parent Relationship") == "SubPlan"
    found = set() if in_subplan or "Relation Name" not in node else {node["Relation Name"]}
    for child in node.get("Plans", []):
        found |= _relations_outside_subplans(child, in_subplan)
    return found


def test_the_email_claim_starts_from_the_claimed_rows_on_a_database_without_statistics(
    fresh_databases: Callable[[], Database],
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    from sqlalchemy import event

    from bot.services import voucher_row as rows

    db = fresh_databases()  # never analyzed: the planner guesses every table is tiny
    ctx = make_ctx(db=db, mailer=None)
    ids = _confirmed(ctx, grant_payload, 150)
    provision_many(ctx, grant_ids=ids, actor=TEST_ACTOR, workers=2)  # 150 emails now due
    claims: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("UPDATE conference_vouchers SET email_state"):
            claims.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    with db.transaction() as session:
        vouchers = list(
            session.scalars(select(ConferenceVoucher.id).order_by(ConferenceVoucher.id))
        )
        now = dt.datetime.now(dt.UTC)
        won = rows.claim_emails(
            session, voucher_ids=vouchers[:10], now=now, lease_until=now + dt.timedelta(minutes=5)
        )
    event.remove(db.engine, "before_cursor_execute", capture)
    assert len(won) == 10 and len(claims) == 1

    statement, parameters = claims[0]
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        explained = cursor.fetchone()
        assert explained is not None
        plan = explained[0][0]["Plan"]
    finally:
        raw.rollback()
        raw.close()
    # Read by their ids first; each one's grant probed by its key (before: every confirmed
    # grant first, the vouchers probed for each, seconds of server CPU per claim).
    assert _relations_outside_subplans(plan) == {"conference_vouchers"}


def test_a_batch_upgrade_whose_lease_ran_out_before_its_turn_leaves_pretix_alone(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    conference: ConferenceConfig,
) -> None:
    ctx = make_ctx(lease=dt.timedelta(seconds=1))
    made = _co_speakers(ctx, pretix_server, make_grant, conference, 3)
    last, last_email, last_grant = made[-1]

    def slow_pretix_then_a_speaker_notice() -> None:
        time.sleep(1.3)  # the batch's other leases run out meanwhile
        _told_speaker(ctx, conference.code, last, last_email)

    pretix_server.call_while_answering_next(slow_pretix_then_a_speaker_notice, method="PATCH")
    outcomes = provision_many(
        ctx, grant_ids=[grant_id for _, _, grant_id in made], actor=TEST_ACTOR, workers=1
    )

    assert outcomes[0].result is ProvisionResult.UPGRADED
    assert outcomes[-1].result is not ProvisionResult.UPGRADED
    after = pretix_server.voucher(last["id"])
    assert after is not None and after["tag"] != "grant"  # the speaker's voucher as it was
    assert voucher_row(ctx.db, last_grant).voucher_type is VoucherType.SPEAKER


def test_two_grants_on_one_co_speaker_row_upgrade_it_once(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    _seeded, email = seed_co_speaker(ctx, pretix_server, conference.code, unique("COSPK"))
    first, second = make_grant(email=email), make_grant(email=email)  # one person, two grants

    outcomes = provision_many(ctx, grant_ids=[first, second], actor=TEST_ACTOR, workers=2)

    assert [o.result for o in outcomes] == [
        ProvisionResult.UPGRADED,
        ProvisionResult.ALREADY_GRANT,
    ]
    assert pretix_server.count("PATCH") == 1
    assert len(smtp_server.wait_for(1)) == 1
    time.sleep(0.2)
    assert len(smtp_server.messages) == 1


def test_an_unexpected_error_in_one_batch_upgrade_never_stops_the_others(
    fresh_databases: Callable[[], Database],
    make_ctx: Callable[..., ServiceContext],
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    db = fresh_databases()  # a database of its own: its trigger touches no other test
    ctx = make_ctx(db=db)
    made = []
    for _ in range(3):
        seeded, email = seed_co_speaker(ctx, pretix_server, conference.code, unique("COSPK"))
        intake = ingest_grant(ctx, payload=grant_payload(email=email), actor=TEST_ACTOR)
        assert intake.grant is not None
        made.append((seeded, email, intake.grant.id))
    broken = made[1][0]
    pretix_server.fail_next(404, method="GET", path_contains=f"/vouchers/{broken['id']}/")
    with db.engine.begin() as connection:  # the database refuses that row's review state
        connection.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE UPDATE ON conference_vouchers FOR EACH ROW "
                "WHEN (NEW.state = 'needs_review') EXECUTE FUNCTION refuse()"
            )
        )

    outcomes = provision_many(
        ctx, grant_ids=[grant_id for _, _, grant_id in made], actor=TEST_ACTOR, workers=2
    )

    assert [o.result for o in outcomes] == [
        ProvisionResult.UPGRADED,
        ProvisionResult.FAILED,
        ProvisionResult.UPGRADED,
    ]
    assert "unexpectedly" in outcomes[1].message
    received = sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(2))
    assert received == sorted([made[0][1], made[2][1]])
