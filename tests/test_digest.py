"""The digest service: each section's content and order, Pretix read once, statements fixed."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, update

from bot.conferences import ConferenceConfig
from bot.digest_text import digest_text
from bot.pretix import EventRef, PretixClient, VoucherUpdate
from bot.services.context import ServiceContext
from bot.services.digest import (
    PretixState,
    UnknownConferenceError,
    Urgency,
    build_digest,
    days_left,
    stuck_reason,
    urgency,
)
from bot.services.provisioning import provision_grant_voucher
from bot.services.provisioning_rules import Action, Decision, Verdict
from bot.slack.blocks import render_digest
from bot.storage import EmailState, Grant, VoucherState
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import voucher_row

NOW = dt.datetime(2026, 5, 3, 8, 0, tzinfo=dt.UTC)
VOUCHERS = "/vouchers/"


def iso(moment: dt.datetime) -> str:
    """A timestamp as the backend sends it."""
    return moment.isoformat().replace("+00:00", "Z")


@contextmanager
def counting_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs."""
    seen: list[str] = []
    lock = threading.Lock()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        with lock:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "expected", "days"),
    [
        (None, Urgency.NO_DEADLINE, None),
        (NOW - dt.timedelta(days=2, hours=1), Urgency.OVERDUE, -3),
        (NOW - dt.timedelta(minutes=1), Urgency.OVERDUE, -1),
        (NOW + dt.timedelta(hours=1), Urgency.DUE_SOON, 0),
        (NOW + dt.timedelta(hours=48), Urgency.DUE_SOON, 2),
        (NOW + dt.timedelta(hours=49), Urgency.LATER, 2),
        (NOW + dt.timedelta(days=10), Urgency.LATER, 10),
    ],
)
def test_urgency_and_days_left(
    deadline: dt.datetime | None, expected: Urgency, days: int | None
) -> None:
    assert urgency(deadline, NOW) is expected
    assert days_left(deadline, NOW) == days


@pytest.mark.parametrize(
    ("decision", "row", "expected"),
    [
        (Decision(Action.CREATE), {}, "no voucher yet"),
        (Decision(Action.RETRY), {"last_error": "Pretix 400: bad quota"}, "failed: Pretix 400"),
        (Decision(Action.RESUME), {"last_error": None}, "the Pretix request is unfinished"),
        (Decision(Action.UPGRADE), {}, "co-speaker voucher is not upgraded"),
        (Decision(Action.NOTHING, Verdict.NO_EMAIL), {}, "no email address"),
        (Decision(Action.NOTHING, Verdict.PRETIX_OFF), {}, "Pretix is not configured"),
        (Decision(Action.NOTHING, Verdict.EMAIL_CHANGED), {}, "email changed"),
        (Decision(Action.NOTHING, Verdict.NEEDS_REVIEW), {"last_error": "used"}, "review: used"),
        (Decision(Action.NOTHING, Verdict.HAS_VOUCHER), {"email_state": EmailState.SENT}, None),
        (
            Decision(Action.NOTHING, Verdict.HAS_VOUCHER),
            {"email_state": EmailState.NOT_DUE, "email_sent_at": NOW},
            None,
        ),
        (
            Decision(Action.NOTHING, Verdict.HAS_VOUCHER),
            {"email_state": EmailState.FAILED, "email_last_error": "550 no such user"},
            "the voucher email failed: 550 no such user",
        ),
        (
            Decision(Action.NOTHING, Verdict.HAS_VOUCHER),
            {"email_state": EmailState.PENDING},
            "the voucher email is not sent yet",
        ),
        (Decision(Action.NOTHING, Verdict.HELD), {}, None),
        (Decision(Action.NOTHING, Verdict.NOT_ISSUING), {}, None),
        (Decision(Action.CREATE), {"waits_for_staff": True}, "waits for staff"),
    ],
)
def test_stuck_reason(decision: Decision, row: dict[str, Any], expected: str | None) -> None:
    values: dict[str, Any] = {
        "voucher_state": None,
        "email_state": None,
        "email_sent_at": None,
        "last_error": None,
        "email_last_error": None,
        "waits_for_staff": False,
    }
    reason = stuck_reason(decision, **(values | row))
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


# --- sections -----------------------------------------------------------------------------


def waiting(make_grant: Callable[..., int], name: str, deadline: dt.datetime | None) -> int:
    return make_grant(
        full_name=name,
        status="waiting_for_confirmation",
        previous_status="approved",
        applicant_reply_sent_at=iso(NOW - dt.timedelta(days=7)),
        applicant_reply_deadline=iso(deadline) if deadline else None,
        updated_at=iso(NOW - dt.timedelta(days=7)),
    )


def test_waiting_grantees_overdue_and_due_within_48_hours_first(
    ctx: ServiceContext, make_grant: Callable[..., int], conference: ConferenceConfig
) -> None:
    later = waiting(make_grant, "Later Lee", NOW + dt.timedelta(days=9))
    none = waiting(make_grant, "Open Olsen", None)
    soon = waiting(make_grant, "Soon Sato", NOW + dt.timedelta(hours=30))
    overdue = waiting(make_grant, "Late Lopez", NOW - dt.timedelta(days=1, hours=2))

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert [p.grant.id for p in digest.waiting] == [overdue, soon, later, none]
    assert [p.urgency for p in digest.waiting] == [
        Urgency.OVERDUE,
        Urgency.DUE_SOON,
        Urgency.LATER,
        Urgency.NO_DEADLINE,
    ]
    assert [p.days_left for p in digest.waiting] == [-2, 1, 9, None]
    assert digest.waiting[0].reply_sent_at == NOW - dt.timedelta(days=7)
    assert digest.waiting[0].grant.name == "Late Lopez"
    assert (digest.overdue, digest.due_soon) == (1, 1)
    assert not digest.empty


def test_recent_confirmations_with_their_voucher_and_email_state(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    smtp_server: FakeSmtpServer,
) -> None:
    done = make_grant(full_name="Ada Done", updated_at=iso(NOW - dt.timedelta(hours=3)))
    provision_grant_voucher(ctx, grant_id=done, actor=TEST_ACTOR)
    fresh = make_grant(full_name="Bo Fresh", updated_at=iso(NOW - dt.timedelta(hours=1)))
    make_grant(full_name="Old Confirm", updated_at=iso(NOW - dt.timedelta(hours=25)))

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert [r.grant.id for r in digest.recent] == [fresh, done]
    fresh_line, done_line = digest.recent
    assert fresh_line.voucher_state is None and fresh_line.email_state is None
    assert done_line.voucher_state is VoucherState.CREATED
    assert done_line.email_state is EmailState.SENT
    code = voucher_row(ctx.db, done).code
    assert done_line.code == code[:4] + "…"


def test_stuck_grantees_with_the_reason(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ctx = make_ctx(max_attempts=1)
    failed = make_grant(full_name="Fay Failed", updated_at=iso(NOW - dt.timedelta(days=3)))
    pretix_server.fail_next(400, body={"quota": ['Invalid pk "1"']}, method="POST")
    provision_grant_voucher(ctx, grant_id=failed, actor=TEST_ACTOR)
    untouched = make_grant(full_name="Una Untouched", updated_at=iso(NOW - dt.timedelta(days=2)))
    done = make_grant(full_name="Don Done", updated_at=iso(NOW - dt.timedelta(days=2)))
    provision_grant_voucher(ctx, grant_id=done, actor=TEST_ACTOR)

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    by_id = {s.grant.id: s for s in digest.stuck}
    assert set(by_id) == {failed, untouched}
    assert by_id[failed].voucher_state is VoucherState.FAILED
    assert "failed" in by_id[failed].reason and "quota" in by_id[failed].reason
    assert by_id[untouched].reason == "no voucher yet"
    assert [s.grant.id for s in digest.stuck] == [failed, untouched]  # oldest first


def test_held_confirmations_leave_once_dismissed(
    ctx: ServiceContext, make_grant: Callable[..., int], conference: ConferenceConfig
) -> None:
    held = make_grant(full_name="Hal Held", previous_status="waiting_list")
    dismissed = make_grant(full_name="Dee Dismissed", previous_status="waiting_list")
    with ctx.db.transaction() as session:
        session.execute(
            update(Grant)
            .where(Grant.id == dismissed)
            .values(dismissed_at=NOW, dismissed_by="U0STAFF", dismiss_reason="duplicate")
        )

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert [h.grant.id for h in digest.held] == [held]
    assert "waiting_list" in digest.held[0].reason
    assert not any(s.grant.id in (held, dismissed) for s in digest.stuck)


def test_refused_after_issue_with_the_redemption_from_pretix(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    grant_payload: Callable[..., Any],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    from bot.services.intake import ingest_grant

    ids = {}
    for name in ("Rae Refused", "Uma Used"):
        payload = grant_payload(full_name=name, updated_at=iso(NOW - dt.timedelta(days=5)))
        intake = ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
        assert intake.grant is not None
        provision_grant_voucher(ctx, grant_id=intake.grant.id, actor=TEST_ACTOR)
        refusal = payload.model_copy(
            update={"status": "refused", "updated_at": NOW - dt.timedelta(days=1)}
        )
        ingest_grant(ctx, payload=refusal, actor=TEST_ACTOR)
        ids[name] = intake.grant.id
    used_row = voucher_row(ctx.db, ids["Uma Used"])
    assert used_row.pretix_voucher_id is not None
    pretix_server.redeem(used_row.pretix_voucher_id)

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    by_id = {r.grant.id: r for r in digest.refused}
    assert set(by_id) == set(ids.values())
    assert by_id[ids["Rae Refused"]].redeemed == 0 and not by_id[ids["Rae Refused"]].used
    assert by_id[ids["Uma Used"]].used
    assert by_id[ids["Uma Used"]].code == used_row.code[:4] + "…"


def test_redemption_from_one_paginated_list_call(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    grants = [
        make_grant(full_name=f"Grantee {n}", updated_at=iso(NOW - dt.timedelta(days=4)))
        for n in range(3)
    ]
    for grant_id in grants:
        provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    redeemed = voucher_row(ctx.db, grants[0]).pretix_voucher_id
    assert redeemed is not None
    pretix_server.redeem(redeemed)
    for n in range(120):  # another bot's grant vouchers, or speakers': pages of them
        pretix_server.seed_voucher(tag="grant" if n % 2 else "speaker")
    before = pretix_server.count("GET", VOUCHERS)

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    lists = [r for r in pretix_server.requests if r.method == "GET" and VOUCHERS in r.path]
    assert len(lists) - before == 2  # 63 grant vouchers, 50 a page: one call, two pages
    assert lists[-2].query == {"tag": "grant"}
    assert lists[-1].query.get("page") == "2"
    redemption = digest.redemption
    assert redemption.pretix is PretixState.OK
    assert (redemption.recorded, redemption.listed, redemption.redeemed) == (3, 63, 1)
    named = [u.grant.id for u in redemption.unredeemed if u.grant is not None]
    assert named == grants[1:]
    assert len(redemption.unredeemed) == 62


def test_pretix_off_or_down_is_said_and_the_digest_still_built(
    make_ctx: Callable[..., ServiceContext],
    make_pretix_client: Callable[..., Any],
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
) -> None:
    off = build_digest(make_ctx(pretix=None), conference=conference.code, now=NOW)
    assert off.redemption.pretix is PretixState.OFF

    ctx = make_ctx(pretix=make_pretix_client(max_attempts=2))
    waiting(make_grant, "Wes Waiting", NOW + dt.timedelta(days=3))
    pretix_server.fail_next(503, times=2, method="GET", path_contains=VOUCHERS)
    down = build_digest(ctx, conference=conference.code, now=NOW)
    assert down.redemption.pretix is PretixState.DOWN
    assert down.redemption.problem and "503" in down.redemption.problem
    assert len(down.waiting) == 1


def test_the_digest_says_in_one_line_what_drifted_in_pretix_from_its_one_list(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    pretix_client: PretixClient,
    pretix_event: EventRef,
    smtp_server: FakeSmtpServer,
) -> None:
    edited, fine = (
        make_grant(full_name=name, updated_at=iso(NOW - dt.timedelta(days=4)))
        for name in ("Ed Edited", "Fin Fine")
    )
    for grant_id in (edited, fine):
        provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    edited_id = voucher_row(ctx.db, edited).pretix_voucher_id
    assert edited_id is not None
    pretix_client.update_voucher(pretix_event, edited_id, VoucherUpdate(max_usages=5))
    hand_made = pretix_server.seed_voucher(tag="grant", price_mode="set", value="0.00", quota=1)
    before = pretix_server.count("GET", VOUCHERS)

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert pretix_server.count("GET", VOUCHERS) - before == 1  # one list serves everything
    assert digest.drift == (
        f"Pretix drift in {conference.code}: 1 grant voucher the bot does not know, "
        "1 voucher edited in Pretix."
    )
    assert (digest.redemption.recorded, digest.redemption.listed) == (2, 3)
    named = {u.grant.id for u in digest.redemption.unredeemed if u.grant is not None}
    assert named == {edited, fine}
    assert hand_made["code"][:4] + "…" in {u.code for u in digest.redemption.unredeemed}
    command = f".venv/bin/voucher-bot drift {conference.code}"
    assert f"{digest.drift} Details: {command}" in digest_text(digest)
    blocks = json.dumps(render_digest(digest).message.blocks, ensure_ascii=False)
    assert "1 voucher edited in Pretix." in blocks and f"`{command}`" in blocks


def test_no_drift_line_when_pretix_matches_the_records_or_is_not_read(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ctx = make_ctx()
    grant_id = make_grant(full_name="Fin Fine", updated_at=iso(NOW - dt.timedelta(days=4)))
    provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert digest.drift is None and digest.redemption.recorded == 1
    assert "drift" not in digest_text(digest).lower()
    assert "drift" not in json.dumps(render_digest(digest).message.blocks).lower()
    pretix_server.seed_voucher(tag="grant", price_mode="set", value="0.00", quota=1)
    assert build_digest(make_ctx(pretix=None), conference=conference.code, now=NOW).drift is None
    pretix_server.fail_next(400, method="GET", path_contains=VOUCHERS)
    down = build_digest(ctx, conference=conference.code, now=NOW)
    assert down.redemption.pretix is PretixState.DOWN and down.drift is None


def test_a_drifted_day_is_not_an_empty_day(
    ctx: ServiceContext, conference: ConferenceConfig, pretix_server: FakePretix
) -> None:
    pretix_server.seed_voucher(tag="grant", price_mode="set", value="0.00", quota=1)

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert digest.drift is not None and not digest.empty
    assert "drift in Pretix" in render_digest(digest).message.text


def test_a_voucher_made_while_the_digest_lists_pretix_is_no_drift(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    """The records are read in the digest's transaction before its list call: a voucher
    the bot makes while the list is on its way is in neither, so it is not called gone."""
    done = make_grant(full_name="Don Done", updated_at=iso(NOW - dt.timedelta(days=4)))
    provision_grant_voucher(ctx, grant_id=done, actor=TEST_ACTOR)
    late = make_grant(full_name="Lee Late", updated_at=iso(NOW - dt.timedelta(days=4)))
    pretix_server.call_while_answering_next(
        lambda: provision_grant_voucher(ctx, grant_id=late, actor=TEST_ACTOR),
        method="GET",
        path_contains=VOUCHERS,
    )

    digest = build_digest(ctx, conference=conference.code, now=NOW)

    assert voucher_row(ctx.db, late).state is VoucherState.CREATED
    assert digest.drift is None
    assert (digest.redemption.recorded, digest.redemption.listed) == (1, 1)


def test_unknown_conference_is_refused(ctx: ServiceContext) -> None:
    with pytest.raises(UnknownConferenceError):
        build_digest(ctx, conference=unique("nope"), now=NOW)


def test_a_day_with_nothing_to_report_is_empty(
    ctx: ServiceContext, conference: ConferenceConfig
) -> None:
    digest = build_digest(ctx, conference=conference.code, now=NOW)
    assert digest.empty
    assert digest.local_date == dt.date(2026, 5, 3)


def test_statement_count_does_not_grow_with_the_grants(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
) -> None:
    ctx = make_ctx(pretix=None)

    def statements() -> int:
        with counting_statements(ctx.db.engine) as seen:
            build_digest(ctx, conference=conference.code, now=NOW)
        return len(seen)

    empty = statements()
    for n in range(30):
        waiting(make_grant, f"W {n}", NOW + dt.timedelta(days=n - 3))
        make_grant(full_name=f"C {n}", updated_at=iso(NOW - dt.timedelta(hours=n)))
        make_grant(full_name=f"H {n}", previous_status="waiting_list")
    assert statements() == empty == 7


def test_statement_count_with_pretix_does_not_grow_either(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    smtp_server: FakeSmtpServer,
) -> None:
    def statements() -> int:
        with counting_statements(ctx.db.engine) as seen:
            build_digest(ctx, conference=conference.code, now=NOW)
        return len(seen)

    empty = statements()
    for n in range(10):
        grant_id = make_grant(full_name=f"V {n}", updated_at=iso(NOW - dt.timedelta(days=2)))
        provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
        waiting(make_grant, f"W {n}", NOW + dt.timedelta(days=n - 3))
    digest_with_vouchers = build_digest(ctx, conference=conference.code, now=NOW)
    assert digest_with_vouchers.redemption.recorded == 10
    assert statements() == empty == 7
