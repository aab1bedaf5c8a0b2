"""Finding grants from what staff type, and the read-only status views, on real Postgres."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from bot.conferences import ConferenceConfig, Conferences
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.lookup import Target, TargetKind, parse_target, resolve_grant
from bot.services.notifications import GrantPayload
from bot.services.provisioning import provision_grant_voucher
from bot.services.status import ConferenceSummary, conference_summaries, grant_status
from bot.slack.blocks import unresolved_text
from bot.storage import Database, EmailState, GrantStatus, VoucherState, VoucherType
from tests.conftest import TEST_ACTOR, unique
from tests.helpers import record_voucher


def slack_id() -> str:
    return "U" + uuid.uuid4().hex[:10].upper()


def store(ctx: ServiceContext, payload: GrantPayload) -> int:
    intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
    assert intake.grant is not None, intake.message
    return intake.grant.id


def summary_of(db: Database, code: str) -> ConferenceSummary:
    [summary] = [s for s in conference_summaries(db) if s.code == code]
    return summary


# --- parse_target ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("<@U123|jane>", TargetKind.SLACK_USER, "U123"),
        ("<@U123>", TargetKind.SLACK_USER, "U123"),
        ("  <@W0ABC9|Jane Doe>  ", TargetKind.SLACK_USER, "W0ABC9"),
        ("jane@example.org", TargetKind.EMAIL, "jane@example.org"),
        ("Jane.Doe@Example.ORG", TargetKind.EMAIL, "jane.doe@example.org"),
        ("<mailto:jane@example.org|jane@example.org>", TargetKind.EMAIL, "jane@example.org"),
        ("<mailto:Jane@Example.org>", TargetKind.EMAIL, "jane@example.org"),
        ("1234", TargetKind.GRANT_ID, "1234"),
        ("#1234", TargetKind.GRANT_ID, "1234"),
        (" 1234 ", TargetKind.GRANT_ID, "1234"),
    ],
)
def test_parse_target_understands_mentions_addresses_and_grant_ids(
    text: str, kind: TargetKind, value: str
) -> None:
    assert parse_target(text) == Target(kind, value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "jane doe",
        "<#C123|general>",
        "<@u123>",
        "#",
        "jane@",
        "@jane",
        "x" * 65,
        "<https://example.org|link>",
    ],
)
def test_parse_target_refuses_anything_else(text: str) -> None:
    assert parse_target(text) is None


# --- resolve_grant --------------------------------------------------------------------------


def test_nothing_found_says_so_with_the_reference_and_the_conference(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    target = Target(TargetKind.EMAIL, f"{unique('nobody')}@example.org")

    anywhere = resolve_grant(ctx.db, target)
    there = resolve_grant(ctx.db, target, conference=conference.code)
    labelled = resolve_grant(ctx.db, Target(TargetKind.SLACK_USER, slack_id()), label="@nobody")

    assert (anywhere.grant, anywhere.candidates) == (None, ())
    assert anywhere.problem == f"No grant found for {target.value}."
    assert there.problem == f"No grant found for {target.value} at {conference.code}."
    assert labelled.problem == "No grant found for @nobody."


def test_one_person_with_grants_at_two_conferences_must_say_which(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    grant_payload: Callable[..., GrantPayload],
) -> None:
    last_year = conference.model_copy(update={"code": unique("old"), "name": "PyCon 2025"})
    ctx = make_ctx(
        conferences=Conferences({conference.code: conference, last_year.code: last_year})
    )
    email = f"{unique('jane')}@example.org"
    this_id, old_id = unique(""), unique("")
    this_grant = store(ctx, grant_payload(id=this_id, email=email))
    old_grant = store(ctx, grant_payload(id=old_id, email=email.upper(), conference=last_year.code))
    target = parse_target(f"<mailto:{email}|{email}>")
    assert target is not None

    both = resolve_grant(ctx.db, target)
    picked = resolve_grant(ctx.db, target, conference=last_year.code)

    assert both.grant is None
    assert {g.id for g in both.candidates} == {this_grant, old_grant}
    assert both.problem is not None
    assert f"{conference.code} (grant {this_id})" in both.problem
    assert f"{last_year.code} (grant {old_id})" in both.problem
    # The service says which grants; each edge says how to pick one (Slack: a code).
    assert both.suggested is not None
    assert "Say which conference" in unresolved_text(both)
    assert picked.problem is None
    assert picked.grant is not None and picked.grant.id == old_grant
    assert picked.grant.conference == last_year.code


def test_a_mention_finds_the_grant_by_slack_id_or_by_the_address_slack_gave(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    user = slack_id()
    email = f"{unique('jane')}@example.org"
    by_id = make_grant(slack_user_id=user)
    by_email = make_grant(email=email)
    mention = parse_target(f"<@{user}|jane>")
    assert mention is not None

    only_id = resolve_grant(ctx.db, mention)
    with_email = resolve_grant(ctx.db, mention, email=email.upper())

    assert only_id.grant is not None and only_id.grant.id == by_id
    assert only_id.grant.slack_user_id == user
    assert with_email.grant is None
    assert {g.id for g in with_email.candidates} == {by_id, by_email}


def test_a_grant_id_finds_the_grant(
    ctx: ServiceContext, conference: ConferenceConfig, make_grant: Callable[..., int]
) -> None:
    external = unique("")
    grant_id = make_grant(id=external, full_name="Jim Beam")
    target = parse_target(f"#{external}")
    assert target is not None

    found = resolve_grant(ctx.db, target)

    assert found.problem is None and found.grant is not None
    assert (found.grant.id, found.grant.external_id, found.grant.full_name) == (
        grant_id,
        external,
        "Jim Beam",
    )
    assert (found.grant.conference, found.grant.conference_name) == (
        conference.code,
        conference.name,
    )


# --- grant_status ---------------------------------------------------------------------------


def test_grant_status_tells_the_whole_voucher_story(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    grant_id = make_grant(updated_at="2026-05-02T10:00:00Z")
    issued = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    report = grant_status(ctx.db, grant_id=grant_id)
    last = grant_status(ctx.db, grant_id=grant_id, history=1)

    assert report is not None and last is not None
    assert report.grant.id == grant_id
    assert report.status is GrantStatus.CONFIRMED
    assert report.hold_reason is None
    assert report.confirmed_at == dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC)
    assert report.updated_at == dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC)
    assert report.reply_deadline == dt.datetime(2026, 5, 4, 23, 59, 59, tzinfo=dt.UTC)
    voucher = report.voucher
    assert voucher is not None
    assert voucher.code == issued.voucher_code
    assert voucher.pretix_voucher_id == issued.pretix_voucher_id
    assert (voucher.voucher_type, voucher.original_type) == (VoucherType.GRANT, None)
    assert voucher.state is VoucherState.CREATED
    assert (voucher.email_state, voucher.emails_sent) == (EmailState.SENT, 1)
    assert voucher.email_sent_at is not None
    assert voucher.last_error is None and voucher.email_last_error is None
    assert [(line.action, line.outcome) for line in report.history] == [
        ("grant_intake", "created"),
        ("provision", "created"),
    ]
    assert {line.actor for line in report.history} == {"cli:pytest"}
    assert report.history[0].occurred_at <= report.history[1].occurred_at
    assert [(line.action, line.outcome) for line in last.history] == [("provision", "created")]


def test_grant_status_of_a_held_grant_and_of_no_grant(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    grant_id = make_grant(previous_status="waiting_list")

    report = grant_status(ctx.db, grant_id=grant_id)

    assert report is not None
    assert report.voucher is None
    assert report.hold_reason is not None and "waiting_list" in report.hold_reason
    assert grant_status(ctx.db, grant_id=2_000_000_000) is None


# --- conference_summaries -------------------------------------------------------------------


def test_conference_summary_counts_grants_vouchers_emails_holds_and_gaps(
    ctx: ServiceContext, conference: ConferenceConfig, make_grant: Callable[..., int]
) -> None:
    issued = make_grant()
    make_grant(previous_status="waiting_list")  # held
    make_grant()  # confirmed, never provisioned
    make_grant(status="pending", previous_status=None)
    make_grant(status="refused", previous_status="waiting_for_confirmation")
    provision_grant_voucher(ctx, grant_id=issued, actor=TEST_ACTOR)
    record_voucher(
        ctx,
        conference.code,
        f"{unique('speaker')}@example.org",
        type="speaker",
        code="SPKSUMMARY",
    )

    summary = summary_of(ctx.db, conference.code)

    assert summary.name == conference.name
    assert summary.grants_by_status == Counter({"confirmed": 3, "pending": 1, "refused": 1})
    assert summary.vouchers_by_state == Counter({"created": 2})
    assert summary.vouchers_by_type == Counter({"grant": 1, "speaker": 1})
    assert summary.emails_by_state == Counter({"sent": 1, "not_due": 1})
    assert summary.held == 1
    assert summary.confirmed_without_voucher == 2  # the held one and the forgotten one

    provision_grant_voucher(ctx, grant_id=issued, actor=TEST_ACTOR)  # no change
    assert summary_of(ctx.db, conference.code) == summary


def test_an_empty_conference_has_an_empty_summary(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    summary = summary_of(ctx.db, conference.code)

    assert summary.grants_by_status == Counter()
    assert summary.vouchers_by_state == Counter()
    assert (summary.held, summary.confirmed_without_voucher) == (0, 0)


def test_a_conference_that_does_not_issue_vouchers_shows_grants_but_misses_none(
    ctx: ServiceContext, conference: ConferenceConfig, make_grant: Callable[..., int]
) -> None:
    make_grant()  # confirmed, no voucher: last year's grant, long settled elsewhere
    make_grant(previous_status="waiting_list")  # held, but nobody will issue it
    past = conference.model_copy(update={"issue_vouchers": False})

    [summary] = [
        s for s in conference_summaries(ctx.db, {past.code: past}) if s.code == conference.code
    ]
    [issuing] = [
        s
        for s in conference_summaries(ctx.db, {conference.code: conference})
        if s.code == conference.code
    ]

    assert summary.grants_by_status == Counter({"confirmed": 2})
    assert not summary.issues_vouchers
    assert (summary.held, summary.confirmed_without_voucher) == (0, 0)
    assert issuing.issues_vouchers
    assert (issuing.held, issuing.confirmed_without_voucher) == (1, 2)


def test_several_grants_suggest_the_current_conference_first(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    grant_payload: Callable[..., GrantPayload],
) -> None:
    # Last year's conference is synced after this year's (a higher id, "newer" by row).
    current = conference
    last_year = conference.model_copy(
        update={"code": unique("past"), "name": "PyCon Italia 2025", "issue_vouchers": False}
    )
    configured = Conferences({current.code: current, last_year.code: last_year})
    ctx = make_ctx(conferences=configured)
    email = f"{unique('both')}@example.org"
    for code in (current.code, last_year.code):
        store(ctx, grant_payload(conference=code, email=email))

    resolution = resolve_grant(ctx.db, Target(TargetKind.EMAIL, email), conferences=configured)

    assert resolution.grant is None and resolution.problem is not None
    assert [g.conference for g in resolution.candidates] == [current.code, last_year.code]
    assert resolution.suggested == current.code
    assert unresolved_text(resolution).endswith(f"e.g. `{current.code}`.")
