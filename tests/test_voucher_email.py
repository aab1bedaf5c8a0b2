"""The voucher email: content, retries, crashes, resends and concurrency, over real SMTP."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text, update

from bot.conferences import ConferenceConfig, Conferences
from bot.mailer import OutgoingEmail, SmtpMailer
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailOutcome, EmailResult, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.services.resend import resend_voucher_email
from bot.services.voucher_email import CLAIM_BATCH, deliver_voucher_email, deliver_voucher_emails
from bot.storage import ConferenceVoucher, Database, EmailState, Grant
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer, ReceivedMessage
from tests.helpers import (
    expected_message_id,
    grant_events,
    plain_text,
    record_voucher,
    voucher_row,
)

NOW = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)


class Clock:
    """A settable clock for the services."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def html(mail: ReceivedMessage) -> str:
    body = mail.message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


@pytest.mark.parametrize(
    ("timezone", "shown"),
    [
        ("Europe/Rome", "31 May 2030, 23:59 CEST"),
        ("America/New_York", "31 May 2030, 17:59 EDT"),
        ("UTC", "31 May 2030, 21:59 UTC"),
    ],
)
def test_the_email_carries_code_redemption_link_and_validity_in_the_conference_zone(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    timezone: str,
    shown: str,
) -> None:
    zoned = conference.model_copy(update={"timezone": timezone})
    ctx = make_ctx(conferences=Conferences({zoned.code: zoned}))
    email = f"{unique('jane.')}@example.org"
    grant_id = make_grant(id="4711", full_name="Jane Doe", email=email)

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.email is not None and outcome.email.result is EmailResult.SENT
    code = outcome.voucher_code
    assert code
    link = f"{pretix_server.url}/pycon/pycon2026/redeem?voucher={code}"
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == (email,)
    assert email in str(mail.message["To"]) and "Jane Doe" in str(mail.message["To"])
    assert "grants@pycon.example.org" in str(mail.message["From"])
    assert str(mail.message["Subject"]) == "Your free ticket voucher for PyCon Italia 2026"
    assert mail.message["X-Voucher-Bot-Grant"] == f"{conference.code}/4711"
    assert mail.message["Message-ID"] == outcome.email.message_id
    text = plain_text(mail)
    assert "Hi Jane Doe" in text
    assert code in text and link in text
    assert f"valid until {shown}" in text
    page = html(mail)
    assert code in page and link in page and shown in page


def test_a_temporary_smtp_refusal_schedules_a_retry_that_the_reconciler_sends_once(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    clock = Clock()
    ctx = make_ctx(clock=clock)
    grant_id = make_grant()
    smtp_server.reject_next(code=451)

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    assert outcome.email is not None
    assert outcome.email.result is EmailResult.RETRY_SCHEDULED
    assert "451" in outcome.email.detail and "12:00:30" in outcome.email.detail
    assert pretix_server.voucher_by_code(outcome.voucher_code or "") is not None
    row = voucher_row(ctx.db, grant_id)
    assert row.email_state is EmailState.PENDING
    assert row.email_attempts == 1
    assert row.email_next_attempt_at == NOW + dt.timedelta(seconds=30)
    assert row.email_last_error is not None and "451" in row.email_last_error
    assert row.email_sent_at is None
    assert smtp_server.messages == []

    clock.advance(seconds=20)
    assert reconcile_once(ctx).emails == []  # not due yet
    clock.advance(seconds=11)
    [sent] = reconcile_once(ctx).emails
    clock.advance(minutes=10)
    later = reconcile_once(ctx)

    assert sent.result is EmailResult.SENT
    assert later.idle
    [mail] = smtp_server.messages
    assert mail.message["Message-ID"] == expected_message_id(conference, row.id, 0)
    assert (outcome.voucher_code or "") in plain_text(mail)
    row = voucher_row(ctx.db, grant_id)
    assert (row.email_state, row.emails_sent, row.email_attempts) == (EmailState.SENT, 1, 0)
    assert row.email_sent_at == NOW + dt.timedelta(seconds=31)
    assert row.email_next_attempt_at is None and row.email_last_error is None


def test_temporary_refusals_stop_after_the_attempt_limit(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    clock = Clock()
    ctx = make_ctx(clock=clock, max_email_attempts=2)
    grant_id = make_grant()
    smtp_server.reject_next(2, code=451)

    first = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    clock.advance(seconds=31)
    [second] = reconcile_once(ctx).emails
    clock.advance(days=1)
    after = reconcile_once(ctx)

    assert first.email is not None and first.email.result is EmailResult.RETRY_SCHEDULED
    assert second.result is EmailResult.FAILED
    assert after.idle
    row = voucher_row(ctx.db, grant_id)
    assert (row.email_state, row.email_attempts) == (EmailState.FAILED, 2)
    assert smtp_server.messages == []


def test_a_permanent_smtp_refusal_fails_is_not_retried_and_a_resend_delivers(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    clock = Clock()
    ctx = make_ctx(clock=clock)
    grant_id = make_grant()
    smtp_server.reject_next(code=550)

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    assert outcome.email is not None and outcome.email.result is EmailResult.FAILED
    assert "550" in outcome.email.detail
    assert outcome.needs_attention
    row = voucher_row(ctx.db, grant_id)
    assert (row.email_state, row.email_attempts) == (EmailState.FAILED, 1)
    assert row.email_next_attempt_at is None

    clock.advance(days=2)
    assert reconcile_once(ctx).idle
    again = deliver_voucher_email(ctx, voucher_id=row.id)
    assert again.result is EmailResult.FAILED and "resend" in again.detail
    assert smtp_server.messages == []

    resent = resend_voucher_email(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert resent.ok, resent.message
    assert resent.voucher_code == outcome.voucher_code
    [mail] = smtp_server.messages
    assert mail.message["Message-ID"] == expected_message_id(conference, row.id, 1)
    row = voucher_row(ctx.db, grant_id)
    assert (row.email_state, row.emails_sent) == (EmailState.SENT, 1)


def test_a_crash_after_the_smtp_server_accepted_resends_with_the_same_message_id(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    clock = Clock()
    ctx = make_ctx(clock=clock)
    grant_id = make_grant()
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    [accepted] = smtp_server.messages
    row = voucher_row(ctx.db, grant_id)
    # What a worker that died between the SMTP answer and the record leaves behind.
    with ctx.db.transaction() as session:
        session.execute(
            update(ConferenceVoucher)
            .where(ConferenceVoucher.id == row.id)
            .values(
                email_state=EmailState.SENDING,
                email_sent_at=None,
                emails_sent=0,
                email_lease_expires_at=NOW + dt.timedelta(minutes=3),
            )
        )

    assert reconcile_once(ctx).idle  # the lease still runs: the sender may be alive
    clock.advance(minutes=4)
    [redelivered] = reconcile_once(ctx).emails

    assert redelivered.result is EmailResult.SENT
    first, second = smtp_server.messages
    assert first is accepted
    assert second.message["Message-ID"] == accepted.message["Message-ID"]
    assert second.message["Message-ID"] == expected_message_id(conference, row.id, 0)
    assert plain_text(second) == plain_text(accepted)
    row = voucher_row(ctx.db, grant_id)
    assert (row.email_state, row.emails_sent, row.email_generation) == (EmailState.SENT, 1, 0)
    assert reconcile_once(ctx).idle


def test_resend_sends_a_second_email_with_a_new_message_id_and_the_same_code(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant()
    issued = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    resent = resend_voucher_email(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert resent.ok
    assert resent.voucher_code == issued.voucher_code
    assert resent.email is not None and resent.email.result is EmailResult.SENT
    assert resent.grant is not None
    assert f"sent again to {resent.grant.email}" in resent.message
    first, second = smtp_server.messages
    row = voucher_row(ctx.db, grant_id)
    assert first.message["Message-ID"] == expected_message_id(conference, row.id, 0)
    assert second.message["Message-ID"] == expected_message_id(conference, row.id, 1)
    assert resent.email.message_id == second.message["Message-ID"]
    assert "(sent again)" in str(second.message["Subject"])
    assert "sending your voucher again" in plain_text(second)
    assert (issued.voucher_code or "") in plain_text(second)
    assert (row.emails_sent, row.email_generation, row.email_state) == (2, 1, EmailState.SENT)
    [event] = grant_events(ctx.db, grant_id, "resend")
    assert event.outcome == "sent"
    assert event.detail is not None and event.detail["code"] == issued.voucher_code


def test_a_failed_resend_leaves_the_first_email_standing(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    clock = Clock()
    ctx = make_ctx(clock=clock)
    grant_id = make_grant()
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    sent_at = voucher_row(ctx.db, grant_id).email_sent_at
    smtp_server.reject_next(code=550)

    refused = resend_voucher_email(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    assert not refused.ok
    assert refused.message.startswith("Not sent: ") and "550" in refused.message
    row = voucher_row(ctx.db, grant_id)
    assert (row.email_state, row.email_sent_at, row.emails_sent) == (EmailState.SENT, sent_at, 1)
    clock.advance(days=1)
    assert reconcile_once(ctx).idle
    assert len(smtp_server.messages) == 1

    assert resend_voucher_email(ctx, grant_id=grant_id, actor=TEST_ACTOR).ok
    assert len(smtp_server.messages) == 2


def test_resend_for_a_grant_without_a_voucher_says_so_and_sends_nothing(
    ctx: ServiceContext, make_grant: Callable[..., int], smtp_server: FakeSmtpServer
) -> None:
    grant_id = make_grant(status="waiting_for_confirmation", previous_status="approved")

    outcome = resend_voucher_email(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    missing = resend_voucher_email(ctx, grant_id=2_000_000_000, actor=TEST_ACTOR)

    assert not outcome.ok
    assert outcome.message == "Jane Doe has no voucher; there is nothing to resend."
    assert outcome.email is None
    assert not missing.ok and missing.message == "There is no grant #2000000000."
    assert smtp_server.messages == []


def test_with_email_off_the_voucher_is_issued_and_a_later_reconcile_sends_the_email(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    offline = make_ctx(mailer=None)
    grant_id = make_grant()

    outcome = provision_grant_voucher(offline, grant_id=grant_id, actor=TEST_ACTOR)

    assert outcome.result is ProvisionResult.CREATED
    assert outcome.email is not None and outcome.email.result is EmailResult.DISABLED
    assert "SMTP_HOST" in outcome.email.detail
    assert not outcome.needs_attention
    assert len(pretix_server.all_vouchers()) == 1
    assert voucher_row(offline.db, grant_id).email_state is EmailState.PENDING
    assert reconcile_once(offline).idle  # still no mailer: nothing to do
    assert smtp_server.messages == []

    [sent] = reconcile_once(make_ctx()).emails

    assert sent.result is EmailResult.SENT
    [mail] = smtp_server.messages
    assert (outcome.voucher_code or "") in plain_text(mail)
    assert len(pretix_server.all_vouchers()) == 1
    assert voucher_row(offline.db, grant_id).email_state is EmailState.SENT


def test_twenty_concurrent_deliveries_of_one_due_email_send_exactly_one_message(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant()
    provision_grant_voucher(make_ctx(mailer=None), grant_id=grant_id, actor=TEST_ACTOR)
    voucher_id = voucher_row(make_ctx().db, grant_id).id
    ctx = make_ctx()
    start = threading.Barrier(20)

    def deliver() -> EmailOutcome:
        start.wait(timeout=10)
        return deliver_voucher_email(ctx, voucher_id=voucher_id)

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(lambda _: deliver(), range(20)))

    results = Counter(outcome.result for outcome in outcomes)
    assert results[EmailResult.SENT] == 1
    assert set(results) <= {EmailResult.SENT, EmailResult.IN_PROGRESS, EmailResult.ALREADY_SENT}
    assert len(smtp_server.messages) == 1
    row = voucher_row(ctx.db, grant_id)
    assert (row.emails_sent, row.email_state) == (1, EmailState.SENT)


def test_no_email_is_due_for_a_speaker_voucher_without_a_grant_or_an_unknown_voucher(
    ctx: ServiceContext, conference: ConferenceConfig, smtp_server: FakeSmtpServer
) -> None:
    email = f"{unique('speaker')}@example.org"
    record_voucher(ctx, conference.code, email, type="speaker", code="SPKMAIL01")
    with ctx.db.transaction() as session:
        voucher_id = session.scalars(
            select(ConferenceVoucher.id).where(ConferenceVoucher.email_key == email)
        ).one()

    speaker = deliver_voucher_email(ctx, voucher_id=voucher_id)
    resent = deliver_voucher_email(ctx, voucher_id=voucher_id, resend=True)
    unknown = deliver_voucher_email(ctx, voucher_id=2_000_000_000)

    assert speaker.result is EmailResult.NOT_DUE
    assert resent.result is EmailResult.NOT_DUE
    assert unknown.result is EmailResult.NOT_DUE and "no voucher #2000000000" in unknown.detail
    assert smtp_server.messages == []


class SteppingClock:
    """A clock that moves on by `step` at every reading (a slow SMTP server, seen from the bot)."""

    def __init__(self, step: dt.timedelta, now: dt.datetime = NOW) -> None:
        self.now, self.step = now, step

    def __call__(self) -> dt.datetime:
        self.now += self.step
        return self.now


class LeaseCheckingMailer:
    """The real mailer, noting for each email how much of its claim's lease was left."""

    def __init__(self, inner: SmtpMailer, db: Database, clock: SteppingClock) -> None:
        self.inner, self.db, self.clock = inner, db, clock
        self.left: list[dt.timedelta] = []

    def send(self, message: OutgoingEmail) -> None:
        voucher_id = int(message.message_id.split(".")[2])  # <voucher.CONF.ID.GEN@domain>
        with self.db.transaction() as session:
            until = session.scalar(
                select(ConferenceVoucher.email_lease_expires_at).where(
                    ConferenceVoucher.id == voucher_id
                )
            )
        assert until is not None
        self.left.append(until - self.clock.now)
        self.inner.send(message)


@pytest.mark.parametrize("step", [dt.timedelta(0), dt.timedelta(seconds=50)])
def test_emails_claimed_together_each_go_out_once_and_never_on_a_half_spent_lease(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
    smtp_mailer: SmtpMailer,
    step: dt.timedelta,
) -> None:
    # Claimed ten at a time; with a clock that moves 50 s per reading (lease 3 min), the
    # second email of a claim would start after half the lease: it is given back unsent,
    # with no attempt counted, and claimed again.
    grants = [make_grant() for _ in range(CLAIM_BATCH + 3)]
    for grant_id in grants:
        provision_grant_voucher(make_ctx(mailer=None), grant_id=grant_id, actor=TEST_ACTOR)
    clock = SteppingClock(step)
    ctx = make_ctx(clock=clock)
    mailer = LeaseCheckingMailer(smtp_mailer, ctx.db, clock)
    ctx = make_ctx(clock=clock, mailer=mailer)
    ids = [voucher_row(ctx.db, grant_id).id for grant_id in grants]

    outcomes = deliver_voucher_emails(ctx, ids)

    assert [outcomes[i].result for i in ids] == [EmailResult.SENT] * len(ids)
    assert len(mailer.left) == len(ids)
    assert min(mailer.left) > ctx.lease / 2
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == len(ids)
    for grant_id in grants:
        row = voucher_row(ctx.db, grant_id)
        assert (row.email_state, row.emails_sent, row.email_attempts) == (EmailState.SENT, 1, 0)
    again = deliver_voucher_emails(ctx, ids)
    assert {outcome.result for outcome in again.values()} == {EmailResult.ALREADY_SENT}
    assert len(smtp_server.messages) == len(ids)


class RecorderKillingMailer:
    """The real mailer; after the first email, the database drops its idle connections (a
    restart, an idle-connection kill), the batch's held recorder among them."""

    def __init__(self, inner: SmtpMailer, db: Database) -> None:
        self.inner, self.db, self.sent = inner, db, 0

    def send(self, message: OutgoingEmail) -> None:
        self.inner.send(message)
        self.sent += 1
        if self.sent == 1:
            with self.db.engine.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "datname = current_database() AND pid <> pg_backend_pid() "
                        "AND state = 'idle'"
                    )
                )
                connection.commit()


def test_a_batch_whose_recorder_connection_dies_still_records_every_email_it_sent(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
    smtp_mailer: SmtpMailer,
) -> None:
    grants = [make_grant() for _ in range(5)]
    for grant_id in grants:
        provision_grant_voucher(make_ctx(mailer=None), grant_id=grant_id, actor=TEST_ACTOR)
    plain = make_ctx()
    if not plain.db.is_postgres:
        pytest.skip("terminating a backend is a Postgres function")
    mailer = RecorderKillingMailer(smtp_mailer, plain.db)
    ctx = make_ctx(mailer=mailer)
    ids = [voucher_row(ctx.db, grant_id).id for grant_id in grants]

    outcomes = deliver_voucher_emails(ctx, ids)

    assert mailer.sent == len(ids)
    assert [outcomes[i].result for i in ids] == [EmailResult.SENT] * len(ids)
    for grant_id in grants:
        row = voucher_row(ctx.db, grant_id)
        assert (row.email_state, row.emails_sent) == (EmailState.SENT, 1)


def test_an_email_that_cannot_be_built_releases_its_claim_as_failed_not_retaken_forever(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant()
    provision_grant_voucher(make_ctx(mailer=None), grant_id=grant_id, actor=TEST_ACTOR)
    ctx = make_ctx()
    with ctx.db.transaction() as session:  # a backend id no header can carry
        session.execute(
            update(Grant).where(Grant.id == grant_id).values(external_id="17\nBcc: x@example.org")
        )

    outcome = deliver_voucher_email(ctx, voucher_id=voucher_row(ctx.db, grant_id).id)

    assert outcome.result is EmailResult.FAILED and "cannot build the email" in outcome.detail
    row = voucher_row(ctx.db, grant_id)
    assert row.email_state is EmailState.FAILED and row.email_lease_expires_at is None
    assert smtp_server.messages == []
