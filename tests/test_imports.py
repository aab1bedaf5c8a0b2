"""Imports of grants and vouchers from the sample files, against Postgres, Pretix fake and SMTP.

Every test imports into a conference of its own: the sample files' `pycon2026` is rewritten
to the test's conference code (and `pycon2025`, where a test configures it, to a second one).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.conferences import ConferenceConfig, Conferences
from bot.services.context import ServiceContext
from bot.services.imports import ImportFileError, import_grants, import_vouchers
from bot.services.outcomes import IntakeAction, ProvisionOutcome, ProvisionResult
from bot.storage import (
    Conference,
    ConferenceVoucher,
    Database,
    EmailState,
    Grant,
    VoucherState,
    VoucherType,
)
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import record_voucher, write_file

DATA = Path(__file__).resolve().parent / "data"

# What the sample files hold (see /work/shared/data/README.md).
STATUSES_2026 = {
    "pending": 80,
    "rejected": 60,
    "approved": 10,
    "waiting_for_confirmation": 90,
    "confirmed": 153,
    "refused": 20,
    "waiting_list": 40,
    "waiting_list_maybe": 20,
}
STATUSES_2025 = {"confirmed": 70, "rejected": 30, "refused": 10, "didnt_attend": 10}
HELD_2026 = {"5451", "5452", "5453"}  # confirmed straight from the waiting list
ROWS_2026 = sum(STATUSES_2026.values())
ROWS_2025 = sum(STATUSES_2025.values())
SPEAKERS, CO_SPEAKERS = 6, 9


def localized(tmp_path: Path, name: str, codes: dict[str, str]) -> Path:
    """A copy of a sample file with its conference codes replaced by this test's."""
    text = (DATA / name).read_text(encoding="utf-8")
    for old, new in codes.items():
        text = text.replace(old, new)
    return write_file(tmp_path, name, text)


def statuses(db: Database, conference: str) -> dict[str, int]:
    with db.transaction() as session:
        rows = session.execute(
            select(Grant.status, func.count())
            .join(Conference, Grant.conference_id == Conference.id)
            .where(Conference.code == conference)
            .group_by(Grant.status)
        ).all()
    return {status.value: count for status, count in rows}


def vouchers(db: Database, conference: str) -> list[ConferenceVoucher]:
    with db.transaction() as session:
        return list(
            session.scalars(
                select(ConferenceVoucher)
                .join(Conference, ConferenceVoucher.conference_id == Conference.id)
                .where(Conference.code == conference)
                .order_by(ConferenceVoucher.id)
            )
        )


def grant_row(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": unique(""),
        "full_name": "Jane Doe",
        "email": f"{unique('jane')}@example.org",
        "status": "pending",
        "updated_at": "2026-05-01T10:00:00Z",
    }
    values.update(fields)
    return values


# --- bad rows -------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_line_and_field_and_the_good_row_is_kept(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    tmp_path: Path,
    pretix_server: FakePretix,
) -> None:
    path = localized(tmp_path, "grants-with-errors.csv", {"pycon2026": conference.code})

    report = import_grants(ctx, path=path, actor=TEST_ACTOR)

    assert report.rows == 7
    assert [error.line for error in report.errors] == [2, 3, 4, 5, 6, 7]
    messages = {error.line: error.message for error in report.errors}
    assert "email" in messages[2] and "confirmed" in messages[2]  # no email
    assert messages[3].startswith("status:") and "accepted" in messages[3]
    assert messages[4].startswith("conference:") and "pycon1999" in messages[4]
    assert messages[5].startswith("updated_at:")
    # not pydantic's "Input should be a valid datetime or date, input is too short"
    assert "is not a date and time; use ISO 8601" in messages[5], messages[5]
    assert messages[6].startswith("email:")
    assert messages[7] == "id is empty"  # not pydantic's "Input should be a valid string"
    assert str(report.errors[0]).startswith("line 2: ")
    assert report.actions == Counter({IntakeAction.CREATED: 1})
    assert statuses(ctx.db, conference.code) == {"confirmed": 1}
    [provisioned] = report.provisioned
    assert provisioned.result is ProvisionResult.CREATED
    assert provisioned.grant is not None and provisioned.grant.external_id == "9007"
    assert len(pretix_server.all_vouchers()) == 1


@pytest.mark.parametrize("name", ["grants.json", "grants.csv"])
def test_sample_grants_are_stored_with_every_status_and_the_waiting_list_ones_held(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    tmp_path: Path,
    pretix_server: FakePretix,
    name: str,
) -> None:
    last_year = conference.model_copy(update={"code": unique("old"), "issue_vouchers": False})
    ctx = make_ctx(
        conferences=Conferences({conference.code: conference, last_year.code: last_year})
    )
    path = localized(tmp_path, name, {"pycon2026": conference.code, "pycon2025": last_year.code})

    report = import_grants(ctx, path=path, actor=TEST_ACTOR, provision=False)

    assert report.errors == []
    assert report.rows == ROWS_2026 + ROWS_2025
    assert report.actions == Counter({IntakeAction.CREATED: ROWS_2026 + ROWS_2025})
    assert statuses(ctx.db, conference.code) == STATUSES_2026
    assert statuses(ctx.db, last_year.code) == STATUSES_2025
    assert {(g.conference, g.external_id) for g in report.held} == {
        (conference.code, ident) for ident in HELD_2026
    }
    assert report.provisioned == []
    assert pretix_server.requests == []
    with ctx.db.transaction() as session:
        held = session.scalars(
            select(Grant.external_id)
            .join(Conference, Grant.conference_id == Conference.id)
            .where(Conference.code == conference.code, Grant.hold_reason.is_not(None))
        ).all()
    assert set(held) == HELD_2026


@pytest.mark.parametrize("name", ["grants.json", "grants.csv"])
def test_rows_of_a_conference_not_configured_are_reported_on_their_own_lines(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path, name: str
) -> None:
    path = localized(tmp_path, name, {"pycon2026": conference.code})
    lines = path.read_text(encoding="utf-8").splitlines()

    report = import_grants(ctx, path=path, actor=TEST_ACTOR, provision=False)

    assert report.actions == Counter({IntakeAction.CREATED: ROWS_2026})
    assert len(report.errors) == ROWS_2025
    assert {error.message for error in report.errors} == {
        "conference: unknown conference 'pycon2025'"
    }
    for error in report.errors:
        if name.endswith(".json"):  # the line of the object's opening brace
            assert lines[error.line - 1].strip() == "{"
            assert '"pycon2025"' in lines[error.line + 1]
        else:
            assert ",pycon2025," in lines[error.line - 1]


def test_json_errors_name_the_line_where_each_bad_object_starts(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    good = grant_row(conference=code)
    no_date = grant_row(conference=code)
    del no_date["updated_at"]
    no_email = grant_row(conference=code, status="confirmed", email=None)
    fields = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in no_date.items()]
    text = "\n".join(
        [
            "[",  # line 1
            "  " + json.dumps(good) + ",",  # 2
            "  {",  # 3: an object spread over lines 3 to 9
            ",\n".join(fields),  # 4 to 8
            "  },",  # 9
            '  "just a string",',  # 10
            "",  # 11
            "  " + json.dumps(no_email),  # 12
            "]",
        ]
    )
    path = write_file(tmp_path, "grants.json", text)

    report = import_grants(ctx, path=path, actor=TEST_ACTOR, provision=False)

    assert report.rows == 4
    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (3, "updated_at is missing"),
        (10, "expected an object with named fields"),
        (12, "a confirmed grant needs an email address"),
    ]
    assert report.actions == Counter({IntakeAction.CREATED: 1})
    assert statuses(ctx.db, code) == {"pending": 1}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("object.json", '{"id": "1", "conference": "x"}', "must hold a JSON list"),
        ("number.json", "42\n", "must hold a JSON list"),
        ("broken.json", '[\n  {"id": "1",\n  }\n]', "invalid JSON at line 3"),
        ("unclosed.json", '[\n  {"id": "1"}\n  {"id": "2"}\n]', "invalid JSON at line 3"),
    ],
)
def test_a_json_file_that_is_not_a_list_of_objects_is_refused_whole(
    ctx: ServiceContext, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write_file(tmp_path, name, text)

    with pytest.raises(ImportFileError, match=expected):
        import_grants(ctx, path=path, actor=TEST_ACTOR)


def test_a_missing_file_is_refused(ctx: ServiceContext, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot read"):
        import_grants(ctx, path=tmp_path / "nowhere.csv", actor=TEST_ACTOR)


def test_a_csv_file_without_a_header_is_refused(ctx: ServiceContext, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="no header"):
        import_grants(ctx, path=write_file(tmp_path, "empty.csv", ""), actor=TEST_ACTOR)


def test_a_csv_row_with_more_cells_than_the_header_is_reported(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    text = (
        "id,conference,full_name,email,status,updated_at\n"
        f"{unique('')},{code},Jane Doe,{unique('a')}@example.org,pending,2026-05-01T10:00:00Z\n"
        f"{unique('')},{code},Jane Doe,{unique('b')}@example.org,pending,2026-05-01T10:00:00Z,x\n"
        f"{unique('')},{code},Jim Doe,{unique('c')}@example.org,approved,2026-05-01T10:00:00Z\n"
    )

    report = import_grants(ctx, path=write_file(tmp_path, "g.csv", text), actor=TEST_ACTOR)

    assert [(e.line, e.message) for e in report.errors] == [
        (3, "more cells than the header has columns")
    ]
    assert statuses(ctx.db, code) == {"pending": 1, "approved": 1}


def test_csv_line_numbers_count_physical_lines_of_quoted_cells_crlf_and_a_bom(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    rows = [
        "id,conference,full_name,email,status,updated_at",
        f'{unique("")},{code},"Jane\nDoe",{unique("a")}@example.org,pending,2026-05-01T10:00:00Z',
        f"{unique('')},{code},Bad Date,{unique('b')}@example.org,pending,soon",
        f"{unique('')},{code},Bad Status,{unique('c')}@example.org,maybe,2026-05-01T10:00:00Z",
    ]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode())

    report = import_grants(ctx, path=path, actor=TEST_ACTOR)

    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (4, "updated_at"),
        (5, "status"),
    ]
    assert statuses(ctx.db, code) == {"pending": 1}


def test_csv_line_numbers_stay_right_after_a_blank_line(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    text = (
        "id,conference,full_name,email,status,updated_at\n"
        f"{unique('')},{code},Jane Doe,{unique('a')}@example.org,pending,2026-05-01T10:00:00Z\n"
        "\n"
        f"{unique('')},{code},Bad Date,{unique('b')}@example.org,pending,soon\n"
    )

    report = import_grants(ctx, path=write_file(tmp_path, "g.csv", text), actor=TEST_ACTOR)

    assert [error.line for error in report.errors] == [4]


# --- the whole sample, provisioned ----------------------------------------------------------


def test_sample_import_provisions_every_confirmed_grant_once_and_a_second_import_does_nothing(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    tmp_path: Path,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    codes = {"pycon2026": conference.code}
    voucher_file = localized(tmp_path, "vouchers.json", codes)
    grant_file = localized(tmp_path, "grants.csv", codes)
    pretix_server.seed_vouchers_json(voucher_file)
    made_elsewhere = import_vouchers(ctx, path=voucher_file, actor=TEST_ACTOR)
    assert made_elsewhere.errors == []
    assert made_elsewhere.actions == Counter({IntakeAction.CREATED: SPEAKERS + CO_SPEAKERS})
    progress: list[ProvisionOutcome] = []

    report = import_grants(
        ctx, path=grant_file, actor=TEST_ACTOR, workers=4, on_progress=progress.append
    )

    confirmed = STATUSES_2026["confirmed"] - len(HELD_2026)
    assert report.actions == Counter({IntakeAction.CREATED: ROWS_2026})
    assert len(report.errors) == ROWS_2025
    assert {g.external_id for g in report.held} == HELD_2026
    assert len(report.provisioned) == len(progress) == confirmed
    assert Counter(o.result for o in report.provisioned) == Counter(
        {
            ProvisionResult.CREATED: confirmed - SPEAKERS - CO_SPEAKERS,
            ProvisionResult.UPGRADED: CO_SPEAKERS,
            ProvisionResult.ALREADY_SPEAKER: SPEAKERS,
        }
    )
    assert all(o.email is not None and o.email.result.value == "sent" for o in report.provisioned)
    new_vouchers = confirmed - SPEAKERS - CO_SPEAKERS
    # New vouchers go to Pretix in batches of at most 100 (batch_create), never one by one.
    assert (
        pretix_server.count("POST")
        == pretix_server.count("POST", "/batch_create/")
        == -(-new_vouchers // 100)
    )
    assert pretix_server.count("PATCH") == CO_SPEAKERS
    assert pretix_server.count("DELETE") == 0
    in_pretix = pretix_server.all_vouchers()
    assert len(in_pretix) == confirmed
    assert Counter(v["tag"] for v in in_pretix) == Counter(
        {"grant": new_vouchers + CO_SPEAKERS, "speaker": SPEAKERS}
    )
    rows = vouchers(ctx.db, conference.code)
    assert len(rows) == confirmed
    assert {row.state for row in rows} == {VoucherState.CREATED}
    assert {row.email_state for row in rows} == {EmailState.SENT}
    assert Counter((row.voucher_type, row.original_type) for row in rows) == Counter(
        {
            (VoucherType.GRANT, None): new_vouchers,
            (VoucherType.GRANT, VoucherType.CO_SPEAKER): CO_SPEAKERS,
            (VoucherType.SPEAKER, None): SPEAKERS,
        }
    )
    with ctx.db.transaction() as session:
        held_emails = set(
            session.scalars(
                select(Grant.email_key)
                .join(Conference, Grant.conference_id == Conference.id)
                .where(Conference.code == conference.code, Grant.external_id.in_(HELD_2026))
            )
        )
    assert len(held_emails) == len(HELD_2026)
    assert not held_emails & {row.email_key for row in rows}
    mails = smtp_server.messages
    assert len(mails) == confirmed
    assert len({mail.rcpt_tos for mail in mails}) == confirmed  # one each, nobody twice
    writes, sent = len(pretix_server.writes()), len(mails)

    again = import_grants(ctx, path=grant_file, actor=TEST_ACTOR, workers=4)
    vouchers_again = import_vouchers(ctx, path=voucher_file, actor=TEST_ACTOR)

    assert again.actions == Counter({IntakeAction.UNCHANGED: ROWS_2026})
    assert again.held == [] and again.provisioned == []
    assert vouchers_again.actions == Counter({IntakeAction.UNCHANGED: SPEAKERS + CO_SPEAKERS})
    assert len(pretix_server.writes()) == writes
    assert len(smtp_server.messages) == sent
    upgraded = [row for row in vouchers(ctx.db, conference.code) if row.original_type]
    assert {row.voucher_type for row in upgraded} == {VoucherType.GRANT}  # not downgraded


# --- vouchers -------------------------------------------------------------------------------


def test_voucher_import_reports_bad_rows_and_conflicts_with_their_lines(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    email = f"{unique('speaker')}@example.org"
    owner = f"{unique('owner')}@example.org"
    record_voucher(ctx, code, owner, type="speaker", code="SPKTAKEN01")
    rows = [
        {"conference": code, "email": email, "type": "speaker", "code": "SPKIMPORT1"},
        {"conference": code, "email": f"{unique('k')}@example.org", "type": "keynote",
         "code": "KEYNOTE001"},
        {"conference": code, "email": email, "type": "speaker", "code": "SPKIMPORT2"},
        {"conference": code, "email": "not-an-address", "type": "speaker", "code": "SPKBAD0001"},
        {"conference": "pycon1999", "email": email, "type": "speaker", "code": "SPKOLD0001"},
        {"conference": code, "email": f"{unique('late')}@example.org", "type": "speaker",
         "code": "SPKTAKEN01"},
    ]  # fmt: skip
    text = "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n"

    report = import_vouchers(ctx, path=write_file(tmp_path, "v.json", text), actor=TEST_ACTOR)

    assert report.rows == 6
    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (3, "type"),
        (4, "email"),  # the same person as on line 2, with another code
        (5, "email"),
        (6, "conference"),
    ]
    assert "also on line 2" in report.errors[1].message
    assert report.actions == Counter({IntakeAction.CREATED: 1, IntakeAction.CONFLICT: 1})
    [note] = report.notes
    assert note.startswith("line 7: ") and "SPKTAKEN01" in note
    assert {row.code for row in vouchers(ctx.db, code)} == {"SPKIMPORT1", "SPKTAKEN01"}


# --- hostile and awkward files --------------------------------------------------------------

CSV_HEADER = "id,conference,full_name,email,status,updated_at"


def csv_line(code: str, name: str = "Jane Doe", **fields: str) -> str:
    values = {
        "id": unique(""),
        "conference": code,
        "full_name": name,
        "email": f"{unique('j')}@example.org",
        "status": "pending",
        "updated_at": "2026-05-01T10:00:00Z",
    }
    values.update(fields)
    return ",".join(values[column] for column in CSV_HEADER.split(","))


def test_a_csv_cell_over_the_csv_modules_limit_is_a_bad_row_not_a_traceback(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    text = "\n".join(
        [
            CSV_HEADER,
            csv_line(code),
            csv_line(code, name="x" * (200 * 1024)),  # line 3
            csv_line(code, status="approved"),
        ]
    )

    report = import_grants(ctx, path=write_file(tmp_path, "g.csv", text), actor=TEST_ACTOR)

    assert [error.line for error in report.errors] == [3]
    assert "cell" in report.errors[0].message
    assert statuses(ctx.db, code) == {"pending": 1, "approved": 1}


def test_a_line_separator_inside_a_csv_cell_does_not_split_the_row(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    text = "\n".join(
        [
            CSV_HEADER,
            csv_line(code, name="Jane\u2028Doe"),
            csv_line(code, name="Form\x0cFeed", status="approved"),
            csv_line(code, status="soon"),  # line 4
        ]
    )

    report = import_grants(ctx, path=write_file(tmp_path, "g.csv", text), actor=TEST_ACTOR)

    assert report.rows == 3
    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [(4, "status")]
    assert statuses(ctx.db, code) == {"pending": 1, "approved": 1}
    with ctx.db.transaction() as session:
        names = set(
            session.scalars(
                select(Grant.full_name)
                .join(Conference, Grant.conference_id == Conference.id)
                .where(Conference.code == code)
            )
        )
    assert names == {"Jane Doe", "Form Feed"}


def test_a_nul_in_a_csv_row_is_a_bad_row_and_the_rest_is_imported(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    text = "\n".join(
        [CSV_HEADER, csv_line(code, name="Ja\x00ne"), csv_line(code), csv_line(code, "\x00")]
    )

    report = import_grants(ctx, path=write_file(tmp_path, "g.csv", text), actor=TEST_ACTOR)

    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (2, "full_name"),
        (4, "full_name"),
    ]
    assert statuses(ctx.db, code) == {"pending": 1}


def test_deeply_nested_json_is_a_bad_row_and_the_rest_is_imported(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    deep = "[" * 50_000 + "]" * 50_000
    nested = json.dumps(grant_row(conference=code)).replace(
        '"status"', f'"reimbursements": [{deep}], "status"', 1
    )
    text = "\n".join(
        [
            "[",
            "  " + json.dumps(grant_row(conference=code)) + ",",
            "  " + nested + ",",  # line 3
            "  " + deep + ",",  # line 4
            "  " + json.dumps(grant_row(conference=code, status="approved")),
            "]",
        ]
    )

    report = import_grants(ctx, path=write_file(tmp_path, "g.json", text), actor=TEST_ACTOR)

    assert [error.line for error in report.errors] == [3, 4]
    assert all("nested" in error.message for error in report.errors)
    assert statuses(ctx.db, code) == {"pending": 1, "approved": 1}


def test_json_numbers_that_are_not_numbers_are_bad_rows(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    nan = json.dumps(grant_row(conference=code)).replace(
        '"status"', '"reimbursements": [NaN], "status"', 1
    )
    huge = json.dumps(grant_row(conference=code)).replace(
        '"status"', '"reimbursements": [' + "9" * 5000 + '], "status"', 1
    )
    text = "[\n" + ",\n".join([nan, huge, json.dumps(grant_row(conference=code))]) + "\n]"

    report = import_grants(ctx, path=write_file(tmp_path, "g.json", text), actor=TEST_ACTOR)

    assert [error.line for error in report.errors] == [2, 3]
    assert statuses(ctx.db, code) == {"pending": 1}


@pytest.mark.parametrize("name", ["grants.csv", "grants.json"])
def test_a_file_that_is_not_utf8_is_refused_with_the_line_not_a_traceback(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path, name: str
) -> None:
    good = csv_line(conference.code) if name.endswith(".csv") else "["
    path = tmp_path / name
    path.write_bytes(f"{CSV_HEADER}\n{good}\n".encode() + "Zoë Doe\n".encode("latin-1"))

    with pytest.raises(ImportFileError, match=r"not UTF-8.*line 3.*save it as UTF-8"):
        import_grants(ctx, path=path, actor=TEST_ACTOR)


def test_duplicate_grant_ids_in_one_file_are_bad_rows_naming_the_first_line(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    ident = unique("")
    text = "\n".join(
        [
            CSV_HEADER,
            csv_line(code, id=ident, status="waiting_for_confirmation"),  # line 2
            csv_line(code, status="approved"),
            csv_line(code, id=ident, status="rejected"),  # line 4
            csv_line(code, id=ident, name="Other Name"),  # line 5
        ]
    )
    path = write_file(tmp_path, "g.csv", text)

    report = import_grants(ctx, path=path, actor=TEST_ACTOR)
    again = import_grants(ctx, path=path, actor=TEST_ACTOR)

    assert [(e.line, e.message) for e in report.errors] == [
        (4, f"id: grant {ident} at {code} is also on line 2; only line 2 is imported"),
        (5, f"id: grant {ident} at {code} is also on line 2; only line 2 is imported"),
    ]
    assert statuses(ctx.db, code) == {"waiting_for_confirmation": 1, "approved": 1}
    assert again.actions == Counter({IntakeAction.UNCHANGED: 2})


def test_duplicate_vouchers_in_one_file_are_bad_rows_naming_the_first_line(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    email = f"{unique('speaker')}@example.org"
    rows = [
        {"conference": code, "email": email, "type": "speaker", "code": "DUPCODE001"},
        {"conference": code, "email": email.upper(), "type": "speaker", "code": "DUPCODE002"},
        {"conference": code, "email": f"{unique('o')}@example.org", "type": "speaker",
         "code": "dupcode001"},
    ]  # fmt: skip
    text = "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n"

    report = import_vouchers(ctx, path=write_file(tmp_path, "v.json", text), actor=TEST_ACTOR)

    assert [(e.line, e.message.split(";")[0]) for e in report.errors] == [
        (3, f"email: {email} at {code} is also on line 2"),
        (4, f"code: DUPCODE001 at {code} is also on line 2"),
    ]
    assert report.actions == Counter({IntakeAction.CREATED: 1})


def test_importing_the_same_file_twice_changes_nothing_whatever_the_spelling_of_values(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    rows = [
        grant_row(conference=code, updated_at="2026-05-01T12:00:00+02:00"),
        grant_row(conference=code, email=f"{unique('Jane')}@EXAMPLE.org"),
        grant_row(conference=code, reimbursements=[{"amount": 1.5e300, "rate": 1e20}]),
        grant_row(conference=code, reimbursements=[{"amount": 120.0, "share": 0.1}]),
        grant_row(conference=code, full_name="  Jane \t Doe\r\n", previous_status="unknown"),
    ]
    path = write_file(tmp_path, "g.json", json.dumps(rows, indent=2))

    first = import_grants(ctx, path=path, actor=TEST_ACTOR)
    again = import_grants(ctx, path=path, actor=TEST_ACTOR)

    assert first.actions == Counter({IntakeAction.CREATED: len(rows)})
    assert again.actions == Counter({IntakeAction.UNCHANGED: len(rows)})


def test_reimbursements_in_a_csv_cell_are_read_as_json(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    code = conference.code
    header = CSV_HEADER + ",reimbursements"
    text = "\n".join(
        [
            header,
            csv_line(code) + ',"[{""kind"": ""travel"", ""amount"": 120}]"',
            csv_line(code) + ",[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
            csv_line(code) + ",not json",
            csv_line(code) + ",",
        ]
    )
    path = write_file(tmp_path, "g.csv", text)

    report = import_grants(ctx, path=path, actor=TEST_ACTOR)
    again = import_grants(ctx, path=path, actor=TEST_ACTOR)

    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (3, "reimbursements"),
        (4, "reimbursements"),
    ]
    assert report.actions == Counter({IntakeAction.CREATED: 2})
    assert again.actions == Counter({IntakeAction.UNCHANGED: 2})


def test_a_missing_or_null_required_field_is_named_in_words(
    ctx: ServiceContext, conference: ConferenceConfig, tmp_path: Path
) -> None:
    rows = [
        {k: v for k, v in grant_row(conference=conference.code).items() if k != "id"},
        grant_row(conference=conference.code, id=None),
        grant_row(conference=conference.code, updated_at=None),
    ]
    path = write_file(tmp_path, "grants.json", json.dumps(rows, indent=1))

    report = import_grants(ctx, path=path, actor=TEST_ACTOR)

    assert [error.message for error in report.errors] == [
        "id is missing",
        "id is empty",
        "updated_at is empty",
    ]
