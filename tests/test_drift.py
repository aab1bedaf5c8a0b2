"""The drift report against the Pretix fake and Postgres; the CLI and `/voucher drift`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.pretix import EventRef, PretixClient, Voucher, VoucherUpdate
from bot.services.context import ServiceContext
from bot.services.digest import build_digest
from bot.services.drift import (
    DriftError,
    DriftKind,
    compare_vouchers,
    drift_conference,
    drift_report,
    load_records,
)
from bot.services.outcomes import RevokeResult
from bot.services.provisioning import provision_grant_voucher, provision_many
from bot.services.revocation import revoke_grant_voucher
from bot.storage import Database, Grant, GrantStatus, utcnow
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import PAGE_SIZE, FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GUEST_USER, SIGNING_SECRET, STAFF_USER
from tests.fakes.slack_requests import signed_headers, slash_command_body
from tests.helpers import record_voucher, voucher_row
from tests.test_cli import run_cli


@contextmanager
def count_statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements run on `db` inside the block."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def issue(ctx: ServiceContext, make_grant: Callable[..., int]) -> tuple[int, int]:
    """A confirmed grant with its voucher issued through the bot: (grant id, Pretix id)."""
    grant_id = make_grant()
    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert outcome.pretix_voucher_id is not None, outcome.message
    return grant_id, outcome.pretix_voucher_id


@pytest.fixture
def drifted(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    pretix_client: PretixClient,
    pretix_event: EventRef,
) -> dict[str, Any]:
    """Four issued grant vouchers: one edited in Pretix, one deleted, one redeemed, one fine;
    plus a grant voucher made by hand in Pretix and a speaker voucher the bot knows."""
    edited, deleted, redeemed, fine = (issue(ctx, make_grant) for _ in range(4))
    pretix_client.update_voucher(
        pretix_event, edited[1], VoucherUpdate(value=Decimal("20.00"), max_usages=3)
    )
    pretix_client.delete_voucher(pretix_event, deleted[1])
    pretix_server.redeem(redeemed[1])
    unknown = pretix_server.seed_voucher(
        tag="grant", price_mode="set", value="0.00", quota=1, code=unique("HAND").upper()
    )
    speaker = pretix_server.seed_voucher(tag="speaker", price_mode="set", value="0.00")
    record_voucher(
        ctx,
        next(iter(ctx.conferences)),
        f"{unique('speaker')}@example.org",
        type="speaker",
        code=speaker["code"],
        pretix_voucher_id=speaker["id"],
    )
    return {
        "edited": edited,
        "deleted": deleted,
        "redeemed": redeemed,
        "fine": fine,
        "unknown": unknown,
    }


def test_drift_finds_unknown_edited_and_deleted_vouchers_and_counts_redemptions(
    ctx: ServiceContext, conference: ConferenceConfig, drifted: dict[str, Any]
) -> None:
    report = drift_report(ctx, conference=conference.code)

    found = {(item.kind, item.pretix_voucher_id) for item in report.items}
    assert found == {
        (DriftKind.EDITED, drifted["edited"][1]),
        (DriftKind.GONE, drifted["deleted"][1]),
        (DriftKind.UNKNOWN, drifted["unknown"]["id"]),
    }
    [edited] = report.of_kind(DriftKind.EDITED)
    assert {(c.term, str(c.expected), str(c.actual)) for c in edited.changes} == {
        ("value", "0.00", "20.00"),
        ("max_usages", "1", "3"),
    }
    [gone] = report.of_kind(DriftKind.GONE)
    assert gone.code == voucher_row(ctx.db, drifted["deleted"][0]).code
    assert (report.records, report.redeemed, report.not_redeemed) == (4, 1, 2)
    assert report.pretix_grant_vouchers == 4  # three of the bot's and the one made by hand
    assert report.summary_line() == (
        f"Pretix drift in {conference.code}: 1 grant voucher the bot does not know, "
        "1 voucher gone from Pretix, 1 voucher edited in Pretix."
    )


def test_drift_reads_pretix_in_one_paginated_list_and_the_database_in_one_statement_or_two(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    issued = [issue(ctx, make_grant) for _ in range(3)]
    for _ in range(PAGE_SIZE + 5):  # more than one page of grant vouchers
        pretix_server.seed_voucher(tag="grant", price_mode="set", value="0.00", quota=1)
    pretix_server.seed_voucher(tag="speaker", price_mode="set", value="0.00")
    pretix_server.requests.clear()

    with count_statements(ctx.db) as statements:
        report = drift_report(ctx, conference=conference.code)

    # One read of the records, and one more since unknown vouchers turned up (a row reserved
    # while the pages came would explain some); never one per voucher.
    assert len(statements) == 2
    lists = [r for r in pretix_server.requests if r.method == "GET"]
    assert len(lists) == 2 == len(pretix_server.requests)
    assert all(r.query.get("tag") == "grant" for r in lists)
    assert len(report.of_kind(DriftKind.UNKNOWN)) == PAGE_SIZE + 5
    assert report.records == len(issued) and report.not_redeemed == len(issued)


def test_records_compared_with_vouchers_already_listed_ask_pretix_nothing(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    grant_id, pretix_id = issue(ctx, make_grant)
    with ctx.db.transaction() as session:
        records = load_records(session, conference)
    listed = [Voucher.model_validate(v) for v in pretix_server.all_vouchers()]
    pretix_server.requests.clear()

    report = compare_vouchers(conference=conference.code, records=records, vouchers=listed)

    assert pretix_server.requests == []
    assert not report.drifted and report.records == 1
    assert report.summary_line() is None
    [record] = records
    assert (record.grant_id, record.pretix_voucher_id) == (grant_id, pretix_id)
    assert record.email_sent_at is not None  # the voucher email went out
    gone = compare_vouchers(conference=conference.code, records=records, vouchers=[])
    assert [item.pretix_voucher_id for item in gone.of_kind(DriftKind.GONE)] == [pretix_id]


def test_drift_needs_pretix_and_a_known_conference(
    make_ctx: Callable[..., ServiceContext], conference: ConferenceConfig
) -> None:
    without_pretix = make_ctx(pretix=None)
    with pytest.raises(DriftError, match="Pretix is not configured"):
        drift_report(without_pretix, conference=conference.code)
    with pytest.raises(DriftError, match="unknown conference"):
        drift_report(without_pretix, conference="nosuchconf")
    assert drift_conference(without_pretix, None) == conference.code
    with pytest.raises(DriftError, match="unknown conference"):
        drift_conference(without_pretix, "nosuchconf")


# --- the command line ---------------------------------------------------------------------


def test_cli_drift_prints_what_drifted_and_exits_1(
    bot_env: dict[str, str], conference: ConferenceConfig, drifted: dict[str, Any]
) -> None:
    result = run_cli(bot_env, "drift", conference.code)

    assert result.returncode == 1, result.stderr
    assert "1 voucher edited in Pretix" in result.stdout
    assert "value 0.00 -> 20.00" in result.stdout
    assert "gone from Pretix" in result.stdout
    assert drifted["unknown"]["code"] in result.stdout
    assert "1 redeemed" in result.stdout


def test_cli_drift_exit_codes_when_clean_and_for_bad_input(
    bot_env: dict[str, str],
    conference: ConferenceConfig,
    ctx: ServiceContext,
    make_grant: Callable[..., int],
) -> None:
    issue(ctx, make_grant)

    clean = run_cli(bot_env, "drift", conference.code)
    everything = run_cli(bot_env, "drift")
    unknown = run_cli(bot_env, "drift", "nosuchconf")
    without = {k: v for k, v in bot_env.items() if k not in ("PRETIX_URL", "PRETIX_TOKEN")}
    no_pretix = run_cli(without, "drift")

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{conference.code}: no drift (1 grant vouchers in Pretix, 1 bot records" in clean.stdout
    assert everything.returncode == 0 and "no drift" in everything.stdout
    assert unknown.returncode == 2 and "nosuchconf" in unknown.stderr
    assert no_pretix.returncode == 2, no_pretix.stdout + no_pretix.stderr
    assert "Pretix is not configured" in no_pretix.stderr


# --- /voucher drift -----------------------------------------------------------------------


def slash(http: httpx.Client, slack_api: FakeSlack, text: str, user: str) -> tuple[Any, str]:
    name = unique("resp")
    body = slash_command_body(text=text, user_id=user, response_url=slack_api.response_url(name))
    response = http.post(
        "/slack/events", content=body, headers=signed_headers(body, secret=SIGNING_SECRET)
    )
    assert response.status_code == 200
    return response.json(), name


def test_slash_drift_answers_staff_with_the_report_in_blocks(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    conference: ConferenceConfig,
    drifted: dict[str, Any],
) -> None:
    ack, name = slash(http, slack_api, f"drift {conference.code}", STAFF_USER)
    assert "Comparing" in ack["text"]
    running_bot.worker.join(timeout=10)
    [answer] = slack_api.wait_for_response(name, count=1, timeout=10)

    assert answer["response_type"] == "ephemeral"
    shown = json.dumps(answer["blocks"], ensure_ascii=False)
    assert "edited in Pretix" in answer["text"]
    assert "value 0.00 → 20.00" in shown and "max_usages 1 → 3" in shown
    assert drifted["unknown"]["code"][:4] in shown
    assert drifted["unknown"]["code"] not in shown  # codes are masked
    assert len(answer["blocks"]) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in answer["blocks"])


def test_slash_drift_is_for_staff_only(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    ack, _ = slash(http, slack_api, f"drift {conference.code}", GUEST_USER)
    running_bot.worker.join(timeout=5)

    assert "staff" in ack["text"].lower()
    assert pretix_server.requests == []


def test_slash_drift_names_the_problem_for_an_unknown_conference(
    http: httpx.Client, slack_api: FakeSlack, running_bot: Bot
) -> None:
    _ack, name = slash(http, slack_api, "drift nosuchconf", STAFF_USER)
    running_bot.worker.join(timeout=10)
    [answer] = slack_api.wait_for_response(name, count=1, timeout=10)

    assert "unknown conference" in answer["text"].lower()


def test_a_hand_made_grant_voucher_told_to_the_bot_is_no_longer_unknown(
    ctx: ServiceContext, conference: ConferenceConfig, pretix_server: FakePretix
) -> None:
    made = pretix_server.seed_voucher(tag="grant", price_mode="set", value="0.00", quota=1)
    assert [i.kind for i in drift_report(ctx, conference=conference.code).items] == [
        DriftKind.UNKNOWN
    ]

    record_voucher(
        ctx,
        conference.code,
        f"{unique('grantee')}@example.org",
        type="grant",
        code=made["code"],
        pretix_voucher_id=made["id"],
    )

    report = drift_report(ctx, conference=conference.code)
    assert not report.drifted and report.records == 1


def test_a_voucher_made_while_pretix_lists_is_not_called_gone(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    """The records are read before the list: a voucher the bot makes while Pretix's page is
    on its way is in neither (its row is reserved after the read), so it is no drift."""
    issue(ctx, make_grant)
    late = make_grant()
    made: list[int | None] = []
    pretix_server.call_while_answering_next(
        lambda: made.append(
            provision_grant_voucher(ctx, grant_id=late, actor=TEST_ACTOR).pretix_voucher_id
        ),
        method="GET",
        path_contains="/vouchers/",
    )

    report = drift_report(ctx, conference=conference.code)

    assert made and made[0] is not None  # the bot made it while the list was answered
    assert report.items == () and report.records == 1
    assert drift_report(ctx, conference=conference.code).records == 2


@pytest.mark.parametrize("through", ["drift report", "digest"])
def test_a_voucher_made_while_the_pages_come_and_listed_on_a_later_page_is_not_unknown(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    through: str,
) -> None:
    """Records first, then the list: a voucher the bot makes while page 1 is on its way has
    no record in the first read, and is listed on page 2. One more read of the records
    explains it; it is no drift."""
    grants = [make_grant() for _ in range(PAGE_SIZE + 1)]  # two pages of the bot's vouchers
    provision_many(ctx, grant_ids=grants, actor=TEST_ACTOR)
    late = make_grant()
    made: list[int | None] = []
    pretix_server.call_while_answering_next(
        lambda: made.append(
            provision_grant_voucher(ctx, grant_id=late, actor=TEST_ACTOR).pretix_voucher_id
        ),
        method="GET",
        path_contains="/vouchers/",
    )

    if through == "digest":
        digest = build_digest(ctx, conference=conference.code, now=utcnow())
        assert digest.redemption.listed == PAGE_SIZE + 2  # page 2 held the late voucher
        assert digest.drift is None
    else:
        report = drift_report(ctx, conference=conference.code)
        assert report.pretix_grant_vouchers == PAGE_SIZE + 2  # page 2 held the late voucher
        assert report.items == ()
    assert made and made[0] is not None  # the bot made it while the list was answered


def test_a_voucher_the_bot_revokes_while_the_pages_come_is_not_called_gone(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
) -> None:
    """Records first, then the list: a voucher revoked between the two is a CREATED record
    missing from the list. The second read shows the bot revoked it; it is no drift."""
    kept, _ = issue(ctx, make_grant)
    revoked, _ = issue(ctx, make_grant)
    with ctx.db.transaction() as session:  # the backend refused it since (intake's effect)
        session.execute(update(Grant).where(Grant.id == revoked).values(status=GrantStatus.REFUSED))
    done: list[object] = []
    pretix_server.call_while_answering_next(
        lambda: done.append(revoke_grant_voucher(ctx, grant_id=revoked, actor=TEST_ACTOR)),
        method="GET",
        path_contains="/vouchers/",
        before=True,
    )

    report = drift_report(ctx, conference=conference.code)

    assert done and getattr(done[0], "result", None) is RevokeResult.REVOKED, done
    assert report.items == ()
    assert kept
