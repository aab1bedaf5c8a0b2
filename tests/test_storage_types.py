"""The column types read back what was stored: aware UTC datetimes, enum members; on both
databases. The digest runs on the embedded SQLite file too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import literal, literal_column, select, text
from sqlalchemy.exc import StatementError

from bot import migrations
from bot.services.context import ServiceContext
from bot.services.digest import build_digest
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.storage import (
    Conference,
    ConferenceVoucher,
    Database,
    EmailState,
    GrantStatus,
    StrEnumColumn,
    UTCDateTime,
    VoucherState,
    VoucherType,
    insert_many_ignoring_conflict,
)
from tests.conftest import TEST_ACTOR, unique

ROME_SUMMER = dt.timezone(dt.timedelta(hours=2))


@pytest.fixture(params=["postgresql", "sqlite"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgresql":
        yield request.getfixturevalue("db")
        return
    database = Database.from_url(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    migrations.upgrade(database.engine)
    yield database
    database.dispose()


def test_datetimes_come_back_aware_in_utc(any_db: Database) -> None:
    moment = dt.datetime(2026, 5, 3, 10, 30, tzinfo=ROME_SUMMER)
    with any_db.engine.connect() as connection:
        value = connection.execute(select(literal(moment, UTCDateTime()))).scalar_one()
        nothing = connection.execute(select(literal(None, UTCDateTime()))).scalar_one()
    assert value == moment and value.tzinfo is dt.UTC
    assert value.hour == 8
    assert nothing is None


def test_enum_columns_come_back_as_members_and_refuse_unknown_values(any_db: Database) -> None:
    column = StrEnumColumn(GrantStatus, 40)
    with any_db.engine.connect() as connection:
        member = connection.execute(select(literal_column("'confirmed'", column))).scalar_one()
        nothing = connection.execute(select(literal_column("NULL", column))).scalar_one()
        assert member is GrantStatus.CONFIRMED and nothing is None
        with pytest.raises(ValueError, match="not-a-status"):
            connection.execute(select(literal_column("'not-a-status'", column))).scalar_one()


def test_postgres_sessions_run_in_utc(db: Database) -> None:
    with db.engine.connect() as connection:
        assert connection.execute(text("SHOW TimeZone")).scalar_one() == "UTC"


def test_the_digest_on_sqlite(
    tmp_path: Path,
    make_ctx: Callable[..., ServiceContext],
    grant_payload: Callable[..., GrantPayload],
) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    migrations.upgrade(database.engine)
    ctx = make_ctx(db=database, pretix=None)
    now = dt.datetime(2026, 5, 3, 8, 0, tzinfo=dt.UTC)
    held = grant_payload(full_name="Hal Held", previous_status="waiting_list")
    waiting = grant_payload(
        full_name="Wes Waiting",
        status="waiting_for_confirmation",
        previous_status="approved",
        applicant_reply_deadline="2026-05-04T07:00:00Z",
        updated_at="2026-04-30T10:00:00Z",
    )
    for payload in (held, waiting):
        ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)

    digest = build_digest(ctx, conference=next(iter(ctx.conferences)), now=now)

    assert [h.grant.name for h in digest.held] == ["Hal Held"]
    [pending] = digest.waiting
    assert pending.deadline == dt.datetime(2026, 5, 4, 7, 0, tzinfo=dt.UTC)
    assert pending.deadline is not None and pending.deadline.tzinfo is dt.UTC
    assert pending.days_left == 0
    database.dispose()


def test_many_rows_inserted_at_once_keep_their_types_and_skip_conflicts(any_db: Database) -> None:
    when = dt.datetime(2026, 5, 3, 10, 30, tzinfo=ROME_SUMMER)
    with any_db.transaction() as session:
        conference = Conference(
            code=unique("conf"), name="C", pretix_organizer="o", pretix_event="e", timezone="UTC"
        )
        session.add(conference)
        session.flush()
        conference_id = conference.id

    def row(n: int, **fields: Any) -> dict[str, Any]:
        return {
            "conference_id": conference_id,
            "email_key": f"person{n}@example.org",
            "voucher_type": VoucherType.GRANT,
            "code": f"CODE{n}",
            "state": VoucherState.CREATING,
            "lease_expires_at": when,
            "email_state": EmailState.NOT_DUE,
            "request_payload": {"code": f"CODE{n}", "value": "0.00", "n": [n]},
            **fields,
        }

    with any_db.transaction() as session:
        first = insert_many_ignoring_conflict(
            session, ConferenceVoucher, [row(1)], conflict=["conference_id", "email_key"],
            returning=[ConferenceVoucher.email_key],
        )  # fmt: skip
    with any_db.transaction() as session:
        many = insert_many_ignoring_conflict(
            session,
            ConferenceVoucher,
            [row(1, code="OTHER"), row(2), row(3, state="revoked")],  # 1 is there already
            conflict=["conference_id", "email_key"],
            returning=[ConferenceVoucher.email_key, ConferenceVoucher.code],
        )
    with any_db.transaction() as session:
        stored = {
            v.email_key: v
            for v in session.scalars(
                select(ConferenceVoucher).where(ConferenceVoucher.conference_id == conference_id)
            )
        }
        with pytest.raises(StatementError, match="not-a-state"):
            insert_many_ignoring_conflict(
                session, ConferenceVoucher, [row(4), row(5, state="not-a-state")],
                conflict=["conference_id", "email_key"], returning=[ConferenceVoucher.id],
            )  # fmt: skip

    assert [tuple(r) for r in first] == [("person1@example.org",)]
    assert sorted(tuple(r) for r in many) == [
        ("person2@example.org", "CODE2"),
        ("person3@example.org", "CODE3"),
    ]
    assert stored["person1@example.org"].code == "CODE1"  # the conflict changed nothing
    three = stored["person3@example.org"]
    assert (three.state, three.voucher_type) == (VoucherState.REVOKED, VoucherType.GRANT)
    assert three.lease_expires_at == when and three.lease_expires_at.tzinfo is dt.UTC
    assert three.request_payload == {"code": "CODE3", "value": "0.00", "n": [3]}
    assert (three.attempts, three.email_generation) == (0, 0)  # column defaults applied


def _conference_id(database: Database) -> int:
    with database.transaction() as session:
        conference = Conference(
            code=unique("conf"), name="C", pretix_organizer="o", pretix_event="e", timezone="UTC"
        )
        session.add(conference)
        session.flush()
        return conference.id


def _voucher(conference_id: int, key: str, payload: Any = None) -> dict[str, Any]:
    return {
        "conference_id": conference_id,
        "email_key": key,
        "voucher_type": VoucherType.GRANT,
        "code": unique("CODE"),
        "state": VoucherState.CREATING,
        "email_state": EmailState.NOT_DUE,
        "request_payload": payload,
    }


def test_many_rows_at_once_refuse_a_string_too_long_for_its_column(db: Database) -> None:
    conference_id = _conference_id(db)
    too_long = "x" * 321 + "@example.org"  # the column holds 320; a cast would cut it short

    with pytest.raises(StatementError), db.transaction() as session:
        insert_many_ignoring_conflict(
            session,
            ConferenceVoucher,
            [_voucher(conference_id, too_long + "a"), _voucher(conference_id, too_long + "b")],
            conflict=["conference_id", "email_key"],
            returning=[ConferenceVoucher.id],
        )


def test_many_rows_at_once_keep_json_lists_as_values(any_db: Database) -> None:
    conference_id = _conference_id(any_db)
    with any_db.transaction() as session:
        inserted = insert_many_ignoring_conflict(
            session,
            ConferenceVoucher,
            [
                _voucher(conference_id, "a@example.org", ["a", "b"]),
                _voucher(conference_id, "b@example.org", {"x": 1}),
            ],
            conflict=["conference_id", "email_key"],
            returning=[ConferenceVoucher.email_key],
        )
        stored = {
            v.email_key: v.request_payload
            for v in session.scalars(
                select(ConferenceVoucher).where(ConferenceVoucher.conference_id == conference_id)
            )
        }

    assert len(inserted) == 2
    assert stored == {"a@example.org": ["a", "b"], "b@example.org": {"x": 1}}
