"""Grant and voucher intake: what a notification does to the stored data, on real Postgres."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.conferences import ConferenceConfig, Conferences
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant, ingest_voucher
from bot.services.notifications import GrantPayload, VoucherPayload
from bot.services.outcomes import IntakeAction, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.storage import (
    AuditEvent,
    Conference,
    ConferenceVoucher,
    Database,
    EmailState,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
)
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.helpers import grant_events

PayloadFactory = Callable[..., GrantPayload]


def stored_grant(db: Database, conference: str, external_id: str) -> Grant | None:
    with db.transaction() as session:
        return session.scalars(
            select(Grant)
            .join(Conference, Grant.conference_id == Conference.id)
            .where(Conference.code == conference, Grant.external_id == external_id)
        ).one_or_none()


def conference_events(db: Database, conference: str, action: str) -> list[AuditEvent]:
    with db.transaction() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .join(Conference, AuditEvent.conference_id == Conference.id)
                .where(Conference.code == conference, AuditEvent.action == action)
                .order_by(AuditEvent.id)
            )
        )


def stored_voucher(db: Database, conference: str, email_key: str) -> ConferenceVoucher | None:
    with db.transaction() as session:
        return session.scalars(
            select(ConferenceVoucher)
            .join(Conference, ConferenceVoucher.conference_id == Conference.id)
            .where(Conference.code == conference, ConferenceVoucher.email_key == email_key)
        ).one_or_none()


def voucher_payload(conference: str, email: str, **fields: Any) -> VoucherPayload:
    values: dict[str, Any] = {
        "conference": conference,
        "email": email,
        "type": "speaker",
        "code": "SPEAKER0001",
    }
    values.update(fields)
    return VoucherPayload.model_validate(values)


def refusal(grant_payload: PayloadFactory, earlier: GrantPayload) -> GrantPayload:
    """The notification that the grantee of `earlier` refused after confirming."""
    return grant_payload(
        id=earlier.id,
        email=earlier.email,
        status="refused",
        previous_status="confirmed",
        updated_at="2026-05-03T09:30:00Z",
    )


# --- grants ---------------------------------------------------------------------------------


def test_a_new_grant_is_created_with_every_field_stored(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    payload = grant_payload(
        status="waiting_for_confirmation",
        previous_status="approved",
        full_name="Jane Doe",
        slack_user_id="U0JANE",
        admin_url="https://backend.example.org/grants/1",
    )

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.CREATED
    assert (intake.provision, intake.held, intake.refused_with_voucher) == (False, False, False)
    assert intake.grant is not None
    assert (intake.grant.external_id, intake.grant.conference) == (payload.id, conference.code)
    grant = stored_grant(ctx.db, conference.code, payload.id)
    assert grant is not None and grant.id == intake.grant.id
    assert grant.full_name == "Jane Doe"
    assert grant.email == payload.email
    assert grant.status is GrantStatus.WAITING_FOR_CONFIRMATION
    assert grant.previous_status is GrantStatus.APPROVED
    assert grant.slack_user_id == "U0JANE"
    assert grant.admin_url == "https://backend.example.org/grants/1"
    assert grant.source_updated_at == dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC)
    assert grant.applicant_reply_deadline == dt.datetime(2026, 5, 4, 23, 59, 59, tzinfo=dt.UTC)
    assert grant.confirmed_at is None and grant.hold_reason is None
    [event] = grant_events(ctx.db, grant.id, "grant_intake")
    assert (event.outcome, event.actor) == ("created", "cli:pytest")
    assert event.detail is not None
    assert event.detail["status"] == "waiting_for_confirmation"
    assert event.detail["from"] is None


def test_the_same_payload_again_is_unchanged_and_writes_no_audit_event(
    ctx: ServiceContext, grant_payload: PayloadFactory
) -> None:
    payload = grant_payload(status="waiting_for_confirmation", previous_status="approved")
    first = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
    assert first.grant is not None

    again = [ingest_grant(ctx, payload=payload, actor=TEST_ACTOR) for _ in range(3)]

    assert {intake.action for intake in again} == {IntakeAction.UNCHANGED}
    assert all(intake.grant is not None and intake.grant.id == first.grant.id for intake in again)
    assert not any(intake.provision for intake in again)
    assert len(grant_events(ctx.db, first.grant.id)) == 1


def test_a_newer_update_is_applied(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    old = grant_payload(status="approved", previous_status="pending")
    ingest_grant(ctx, payload=old, actor=TEST_ACTOR)
    newer = grant_payload(
        id=old.id,
        email=old.email,
        status="waiting_for_confirmation",
        previous_status="approved",
        full_name="Jane Q. Doe",
        updated_at="2026-05-03T08:00:00+02:00",
    )

    intake = ingest_grant(ctx, payload=newer, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UPDATED
    assert not intake.provision
    grant = stored_grant(ctx.db, conference.code, old.id)
    assert grant is not None
    assert grant.status is GrantStatus.WAITING_FOR_CONFIRMATION
    assert grant.full_name == "Jane Q. Doe"
    assert grant.source_updated_at == dt.datetime(2026, 5, 3, 6, 0, tzinfo=dt.UTC)
    events = grant_events(ctx.db, grant.id, "grant_intake")
    assert [e.outcome for e in events] == ["created", "updated"]
    assert events[1].detail is not None
    assert (events[1].detail["from"], events[1].detail["status"]) == (
        "approved",
        "waiting_for_confirmation",
    )


def test_a_tie_of_updated_at_never_moves_the_status_backwards(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    confirmed = grant_payload(status="confirmed")
    assert ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR).action is IntakeAction.CREATED
    same_time = confirmed.model_copy(
        update={"status": "waiting_for_confirmation", "previous_status": "approved"}
    )

    intake = ingest_grant(ctx, payload=same_time, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.STALE
    assert "same time" in intake.message
    grant = stored_grant(ctx.db, confirmed.conference, confirmed.id)
    assert grant is not None and grant.status is GrantStatus.CONFIRMED


def test_a_tie_of_updated_at_applies_a_forward_move(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    waiting = grant_payload(status="waiting_for_confirmation", previous_status="approved")
    ingest_grant(ctx, payload=waiting, actor=TEST_ACTOR)
    same_time = waiting.model_copy(
        update={"status": "confirmed", "previous_status": "waiting_for_confirmation"}
    )

    intake = ingest_grant(ctx, payload=same_time, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UPDATED and intake.provision
    grant = stored_grant(ctx.db, waiting.conference, waiting.id)
    assert grant is not None and grant.status is GrantStatus.CONFIRMED


def test_a_repeat_of_what_is_stored_is_unchanged_not_stale(
    ctx: ServiceContext, grant_payload: PayloadFactory, pretix_server: FakePretix
) -> None:
    payload = grant_payload(status="approved", previous_status="pending")
    ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UNCHANGED


def test_an_older_update_is_stale_recorded_and_ignored(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    current = grant_payload(status="confirmed", updated_at="2026-05-02T10:00:00Z")
    ingest_grant(ctx, payload=current, actor=TEST_ACTOR)
    older = grant_payload(
        id=current.id,
        email=current.email,
        status="waiting_for_confirmation",
        previous_status="approved",
        full_name="Someone Else",
        updated_at="2026-05-01T10:00:00Z",
    )

    intake = ingest_grant(ctx, payload=older, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.STALE
    assert not intake.provision and not intake.held
    assert "older than what is stored" in intake.message
    grant = stored_grant(ctx.db, conference.code, current.id)
    assert grant is not None
    assert grant.status is GrantStatus.CONFIRMED
    assert grant.full_name == "Jane Doe"
    assert grant.source_updated_at == dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC)
    stale = [e for e in grant_events(ctx.db, grant.id, "grant_intake") if e.outcome == "stale"]
    assert len(stale) == 1
    assert stale[0].detail is not None
    assert stale[0].detail["status"] == "waiting_for_confirmation"
    assert stale[0].detail["event_updated_at"].startswith("2026-05-01T10:00:00")
    assert stale[0].detail["stored_updated_at"].startswith("2026-05-02T10:00:00")


def test_confirmation_from_waiting_for_confirmation_asks_for_provisioning(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    waiting = grant_payload(status="waiting_for_confirmation", previous_status="approved")
    ingest_grant(ctx, payload=waiting, actor=TEST_ACTOR)
    confirmed = grant_payload(
        id=waiting.id,
        email=waiting.email,
        status="confirmed",
        previous_status="waiting_for_confirmation",
        updated_at="2026-05-03T09:30:00Z",
    )

    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UPDATED
    assert intake.provision is True
    assert intake.held is False
    grant = stored_grant(ctx.db, conference.code, waiting.id)
    assert grant is not None
    assert grant.hold_reason is None
    assert grant.confirmed_at == dt.datetime(2026, 5, 3, 9, 30, tzinfo=dt.UTC)
    [_, event] = grant_events(ctx.db, grant.id, "grant_intake")
    assert event.detail is not None and event.detail["provision"] is True


def test_confirmation_from_the_waiting_list_is_held_for_staff(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    listed = grant_payload(status="waiting_list", previous_status="approved")
    ingest_grant(ctx, payload=listed, actor=TEST_ACTOR)
    confirmed = grant_payload(
        id=listed.id,
        email=listed.email,
        status="confirmed",
        previous_status="waiting_list",
        updated_at="2026-05-03T09:30:00Z",
    )

    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UPDATED
    assert intake.held is True
    assert intake.provision is False
    assert "waiting_list" in intake.message
    grant = stored_grant(ctx.db, conference.code, listed.id)
    assert grant is not None
    assert grant.status is GrantStatus.CONFIRMED
    assert grant.hold_reason is not None and "waiting_list" in grant.hold_reason


def test_confirmation_of_an_unknown_grant_without_previous_status_is_held(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    payload = grant_payload(status="confirmed", previous_status=None)

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.CREATED
    assert intake.held is True and intake.provision is False
    grant = stored_grant(ctx.db, conference.code, payload.id)
    assert grant is not None
    assert grant.hold_reason is not None and "unknown status" in grant.hold_reason


def test_without_previous_status_the_stored_status_is_the_origin(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    waiting = grant_payload(status="waiting_for_confirmation", previous_status=None)
    ingest_grant(ctx, payload=waiting, actor=TEST_ACTOR)
    confirmed = grant_payload(
        id=waiting.id,
        email=waiting.email,
        status="confirmed",
        previous_status=None,
        updated_at="2026-05-03T09:30:00Z",
    )

    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UPDATED
    assert intake.provision is True and intake.held is False
    grant = stored_grant(ctx.db, conference.code, waiting.id)
    assert grant is not None and grant.hold_reason is None


def test_a_held_grant_that_is_refused_loses_its_hold(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    held = grant_payload(status="confirmed", previous_status="waiting_list")
    assert ingest_grant(ctx, payload=held, actor=TEST_ACTOR).held
    refused = refusal(grant_payload, held)

    intake = ingest_grant(ctx, payload=refused, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.UPDATED
    assert intake.refused_with_voucher is False  # it never had a voucher
    grant = stored_grant(ctx.db, conference.code, held.id)
    assert grant is not None
    assert (grant.status, grant.hold_reason) == (GrantStatus.REFUSED, None)


def test_an_unknown_status_is_ignored_and_nothing_is_stored(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    payload = grant_payload(status="accepted")

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.IGNORED
    assert "accepted" in intake.message
    assert intake.grant is None
    assert stored_grant(ctx.db, conference.code, payload.id) is None


def test_an_unknown_status_does_not_touch_a_stored_grant(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    known = grant_payload(status="waiting_for_confirmation", previous_status="approved")
    ingest_grant(ctx, payload=known, actor=TEST_ACTOR)
    strange = grant_payload(
        id=known.id, email=known.email, status="frozen", updated_at="2026-05-09T00:00:00Z"
    )

    assert ingest_grant(ctx, payload=strange, actor=TEST_ACTOR).action is IntakeAction.IGNORED
    grant = stored_grant(ctx.db, conference.code, known.id)
    assert grant is not None
    assert grant.status is GrantStatus.WAITING_FOR_CONFIRMATION
    assert grant.source_updated_at == dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC)


def test_an_unknown_conference_is_ignored(
    ctx: ServiceContext, grant_payload: PayloadFactory
) -> None:
    nowhere = unique("nowhere")
    payload = grant_payload(conference=nowhere)

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.IGNORED
    assert nowhere in intake.message
    assert stored_grant(ctx.db, nowhere, payload.id) is None


def test_a_conference_removed_from_the_configuration_is_ignored(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    grant_payload: PayloadFactory,
) -> None:
    old = conference.model_copy(update={"code": unique("old")})
    make_ctx(conferences=Conferences({old.code: old}))  # the row exists in the database
    ctx = make_ctx()  # ... but this configuration no longer has it
    payload = grant_payload(conference=old.code)

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert intake.action is IntakeAction.IGNORED
    assert stored_grant(ctx.db, old.code, payload.id) is None


def test_refusal_after_confirmation_with_a_grant_voucher_is_flagged(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    pretix_server: FakePretix,
) -> None:
    confirmed = grant_payload()
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None and intake.provision
    issued = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    assert issued.result is ProvisionResult.CREATED and issued.voucher_code
    refused = refusal(grant_payload, confirmed)

    flagged = ingest_grant(ctx, payload=refused, actor=TEST_ACTOR)

    assert flagged.action is IntakeAction.UPDATED
    assert flagged.refused_with_voucher is True
    assert flagged.provision is False
    assert issued.voucher_code in flagged.message
    assert "revoke" in flagged.message
    assert pretix_server.voucher_by_code(issued.voucher_code) is not None  # nothing deleted


def test_refusal_of_a_speaker_is_not_flagged(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    confirmed = grant_payload()
    ingest_voucher(
        ctx, payload=voucher_payload(conference.code, str(confirmed.email)), actor=TEST_ACTOR
    )
    intake = ingest_grant(ctx, payload=confirmed, actor=TEST_ACTOR)
    assert intake.grant is not None
    provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    refused = refusal(grant_payload, confirmed)

    flagged = ingest_grant(ctx, payload=refused, actor=TEST_ACTOR)

    assert flagged.action is IntakeAction.UPDATED
    assert flagged.refused_with_voucher is False


def test_email_is_compared_without_case(
    ctx: ServiceContext,
    grant_payload: PayloadFactory,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    local = unique("jane.")
    ingest_voucher(
        ctx,
        payload=voucher_payload(conference.code, f"{local.upper()}@EXAMPLE.ORG", code="SPKCASE01"),
        actor=TEST_ACTOR,
    )
    payload = grant_payload(email=f"{local.title()}@Example.Org")

    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    assert payload.email_key == f"{local}@example.org"
    grant = stored_grant(ctx.db, conference.code, payload.id)
    assert grant is not None and grant.email_key == f"{local}@example.org"
    voucher = stored_voucher(ctx.db, conference.code, f"{local}@example.org")
    assert voucher is not None and voucher.code == "SPKCASE01"
    # One person, whatever the case: the speaker voucher counts, no new voucher is made.
    assert intake.grant is not None
    outcome = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    assert outcome.result is ProvisionResult.ALREADY_SPEAKER
    assert pretix_server.writes() == []


# --- vouchers -------------------------------------------------------------------------------


def test_a_new_voucher_is_recorded(ctx: ServiceContext, conference: ConferenceConfig) -> None:
    email = f"{unique('speaker')}@example.org"

    intake = ingest_voucher(
        ctx,
        payload=voucher_payload(conference.code, email, code="SPKNEW0001", pretix_voucher_id=7),
        actor=TEST_ACTOR,
    )

    assert intake.action is IntakeAction.CREATED
    row = stored_voucher(ctx.db, conference.code, email)
    assert row is not None
    assert (row.voucher_type, row.code, row.pretix_voucher_id) == (
        VoucherType.SPEAKER,
        "SPKNEW0001",
        7,
    )
    assert row.state is VoucherState.CREATED
    assert row.email_state is EmailState.NOT_DUE and row.email_sent_at is None
    assert row.grant_id is None
    [event] = conference_events(ctx.db, conference.code, "voucher_intake")
    assert event.outcome == "created"
    assert event.detail == {"email": email, "type": "speaker", "code": "SPKNEW0001"}


def test_the_same_voucher_again_is_unchanged(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    email = f"{unique('speaker')}@example.org"
    payload = voucher_payload(conference.code, email, code="SPKREPEAT1", pretix_voucher_id=8)
    ingest_voucher(ctx, payload=payload, actor=TEST_ACTOR)

    again = ingest_voucher(ctx, payload=payload, actor=TEST_ACTOR)

    assert again.action is IntakeAction.UNCHANGED
    assert len(conference_events(ctx.db, conference.code, "voucher_intake")) == 1


def test_codes_are_upper_cased_so_a_lower_case_repeat_is_the_same_voucher(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    email = f"{unique('speaker')}@example.org"

    first = ingest_voucher(
        ctx, payload=voucher_payload(conference.code, email, code="spk9lower"), actor=TEST_ACTOR
    )
    again = ingest_voucher(
        ctx, payload=voucher_payload(conference.code, email, code="Spk9Lower"), actor=TEST_ACTOR
    )

    assert (first.action, again.action) == (IntakeAction.CREATED, IntakeAction.UNCHANGED)
    row = stored_voucher(ctx.db, conference.code, email)
    assert row is not None and row.code == "SPK9LOWER"


def test_another_code_for_the_same_person_is_a_conflict_and_the_kept_code_stays(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    email = f"{unique('speaker')}@example.org"
    ingest_voucher(
        ctx, payload=voucher_payload(conference.code, email, code="SPKKEPT01"), actor=TEST_ACTOR
    )

    conflict = ingest_voucher(
        ctx,
        payload=voucher_payload(conference.code, email, type="co_speaker", code="SPKOTHER1"),
        actor=TEST_ACTOR,
    )

    assert conflict.action is IntakeAction.CONFLICT
    assert "SPKKEPT01" in conflict.message and "SPKOTHER1" in conflict.message
    row = stored_voucher(ctx.db, conference.code, email)
    assert row is not None
    assert (row.code, row.voucher_type) == ("SPKKEPT01", VoucherType.SPEAKER)
    events = conference_events(ctx.db, conference.code, "voucher_intake")
    assert [e.outcome for e in events] == ["created", "conflict"]
    assert events[1].detail is not None
    assert (events[1].detail["kept"], events[1].detail["offered"]) == ("SPKKEPT01", "SPKOTHER1")


def test_a_code_already_recorded_for_another_person_is_a_conflict(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    first = f"{unique('speaker')}@example.org"
    second = f"{unique('speaker')}@example.org"
    ingest_voucher(
        ctx, payload=voucher_payload(conference.code, first, code="SHARED0001"), actor=TEST_ACTOR
    )

    intake = ingest_voucher(
        ctx, payload=voucher_payload(conference.code, second, code="SHARED0001"), actor=TEST_ACTOR
    )

    assert intake.action is IntakeAction.CONFLICT
    assert stored_voucher(ctx.db, conference.code, second) is None


def test_the_pretix_id_is_filled_in_later_but_never_replaced(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    email = f"{unique('speaker')}@example.org"
    ingest_voucher(
        ctx, payload=voucher_payload(conference.code, email, code="SPKLATER1"), actor=TEST_ACTOR
    )

    filled = ingest_voucher(
        ctx,
        payload=voucher_payload(conference.code, email, code="SPKLATER1", pretix_voucher_id=42),
        actor=TEST_ACTOR,
    )
    replaced = ingest_voucher(
        ctx,
        payload=voucher_payload(conference.code, email, code="SPKLATER1", pretix_voucher_id=43),
        actor=TEST_ACTOR,
    )

    assert filled.action is IntakeAction.UPDATED
    assert replaced.action is IntakeAction.UNCHANGED
    row = stored_voucher(ctx.db, conference.code, email)
    assert row is not None and row.pretix_voucher_id == 42


def test_email_sent_elsewhere_is_recorded_as_sent(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    at_creation = f"{unique('speaker')}@example.org"
    later = f"{unique('speaker')}@example.org"
    ingest_voucher(
        ctx,
        payload=voucher_payload(
            conference.code, at_creation, code="SPKSENT01", email_sent_at="2026-04-01T10:00:00Z"
        ),
        actor=TEST_ACTOR,
    )
    ingest_voucher(
        ctx, payload=voucher_payload(conference.code, later, code="SPKSENT02"), actor=TEST_ACTOR
    )

    update = ingest_voucher(
        ctx,
        payload=voucher_payload(
            conference.code, later, code="SPKSENT02", email_sent_at="2026-04-02T10:00:00+02:00"
        ),
        actor=TEST_ACTOR,
    )

    assert update.action is IntakeAction.UPDATED
    for email, sent in (
        (at_creation, dt.datetime(2026, 4, 1, 10, 0, tzinfo=dt.UTC)),
        (later, dt.datetime(2026, 4, 2, 8, 0, tzinfo=dt.UTC)),
    ):
        row = stored_voucher(ctx.db, conference.code, email)
        assert row is not None
        assert (row.email_state, row.email_sent_at) == (EmailState.SENT, sent)


@pytest.mark.parametrize(
    ("first", "then", "action", "kept"),
    [
        # Raising a voucher made elsewhere is applied: the backend knows best who speaks.
        ("co_speaker", "speaker", IntakeAction.UPDATED, VoucherType.SPEAKER),
        # Lowering it is refused and left for a person: the bot would otherwise rewrite a
        # speaker's real free voucher in Pretix into a discount (the upstream bug).
        ("speaker", "co_speaker", IntakeAction.CONFLICT, VoucherType.SPEAKER),
        ("speaker", "speaker", IntakeAction.UNCHANGED, VoucherType.SPEAKER),
    ],
)
def test_a_voucher_made_elsewhere_is_raised_but_never_lowered(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    first: str,
    then: str,
    action: IntakeAction,
    kept: VoucherType,
) -> None:
    email = f"{unique('speaker')}@example.org"
    code = unique("SPK").upper()
    given = voucher_payload(conference.code, email, type=first, code=code)
    ingest_voucher(ctx, payload=given, actor=TEST_ACTOR)

    intake = ingest_voucher(
        ctx, payload=voucher_payload(conference.code, email, type=then, code=code), actor=TEST_ACTOR
    )

    assert intake.action is action
    assert intake.needs_person is (action is IntakeAction.CONFLICT)
    row = stored_voucher(ctx.db, conference.code, email)
    assert row is not None and row.voucher_type is kept


def test_a_grant_voucher_keeps_its_type_whatever_a_notification_calls_it(
    ctx: ServiceContext, grant_payload: PayloadFactory, conference: ConferenceConfig
) -> None:
    intake = ingest_grant(ctx, payload=grant_payload(), actor=TEST_ACTOR)
    assert intake.grant is not None and intake.grant.email
    issued = provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
    assert issued.voucher_code is not None
    email = intake.grant.email

    results = [
        ingest_voucher(
            ctx,
            payload=voucher_payload(conference.code, email, type=kind, code=issued.voucher_code),
            actor=TEST_ACTOR,
        ).action
        for kind in ("speaker", "co_speaker")
    ]

    assert results == [IntakeAction.UNCHANGED, IntakeAction.CONFLICT]
    grant_row = stored_voucher(ctx.db, conference.code, email.lower())
    assert grant_row is not None and grant_row.voucher_type is VoucherType.GRANT


def test_a_voucher_for_an_unknown_conference_is_ignored(ctx: ServiceContext) -> None:
    nowhere = unique("nowhere")
    email = f"{unique('speaker')}@example.org"

    intake = ingest_voucher(ctx, payload=voucher_payload(nowhere, email), actor=TEST_ACTOR)

    assert intake.action is IntakeAction.IGNORED
    assert nowhere in intake.message
    assert stored_voucher(ctx.db, nowhere, email) is None
