"""Property-based tests of everything that parses outside input: any input gets an answer.

The import parsers and the webhook body parser, with arbitrary text and bytes; the webhook
through the real HTTP endpoint with signed requests; the `/voucher` command parser. Never a
traceback, never a 500, never a good row lost among bad ones. Example counts stay small:
the suite must stay fast, and the tests that touch the database share one conference.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.commands.parsing import Action, parse_command
from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.imports import (
    ImportFileError,
    import_grants,
    parse_records,
    read_records,
)
from bot.services.lookup import parse_target
from bot.services.notifications import (
    GrantPayload,
    InvalidBodyError,
    VoucherPayload,
    is_control,
    parse_webhook_body,
)
from bot.storage import Conference, Grant
from tests.conftest import TEST_ACTOR, unique
from tests.test_webhook import deliver, event

PURE = settings(max_examples=80, deadline=None)
WITH_DATABASE = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CONFERENCES = {"pycon2026"}
GRANT_FIELDS = [
    "id",
    "conference",
    "full_name",
    "email",
    "status",
    "previous_status",
    "updated_at",
    "slack_user_id",
    "admin_url",
    "reimbursements",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
grant_like = st.dictionaries(
    st.sampled_from(GRANT_FIELDS) | st.text(max_size=8), json_values, max_size=8
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A directory for the files of every example (each example overwrites its file)."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def parse_file(path: Path) -> None:
    try:
        records = read_records(path)
    except ImportFileError:
        return
    for model in (GrantPayload, VoucherPayload):
        good, errors = parse_records(records, model, conferences=CONFERENCES)
        assert len(good) + len(errors) <= len(records)
        assert all(error.line >= 1 for error in errors)


# --- import parsers -------------------------------------------------------------------------


@PURE
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".json"]))
def test_any_bytes_are_read_or_refused_as_a_file_never_a_traceback(
    scratch: Path, data: bytes, suffix: str
) -> None:
    path = scratch / f"any{suffix}"
    path.write_bytes(data)
    parse_file(path)


@PURE
@given(text=st.text(max_size=300), suffix=st.sampled_from([".csv", ".json"]))
def test_any_text_is_read_or_refused_as_a_file_never_a_traceback(
    scratch: Path, text: str, suffix: str
) -> None:
    path = scratch / f"any{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    parse_file(path)


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(grant_like | json_values, max_size=4), indent=st.none() | st.integers(0, 3))
def test_any_json_list_gives_rows_or_bad_rows_with_their_lines(
    scratch: Path, rows: list[Any], indent: int | None
) -> None:
    path = scratch / "rows.json"
    path.write_text(json.dumps(rows, indent=indent), encoding="utf-8")

    records = read_records(path)
    good, errors = parse_records(records, GrantPayload, conferences=CONFERENCES)

    assert len(records) == len(rows)
    assert len(good) + len(errors) == len(rows)


@PURE
@given(
    rows=st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=12), max_size=6),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_any_csv_cells_give_rows_or_bad_rows_with_their_lines(
    scratch: Path, rows: list[list[str]], line_end: str
) -> None:
    path = scratch / "rows.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end, quoting=csv.QUOTE_ALL)
    writer.writerows([GRANT_FIELDS, *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")

    records = read_records(path)
    good, errors = parse_records(records, GrantPayload, conferences=CONFERENCES)

    assert len(good) + len(errors) == len(records) == len(rows)


# --- a good row among garbage is kept --------------------------------------------------------


def good_grant(code: str) -> dict[str, str]:
    return {
        "id": unique(""),
        "conference": code,
        "full_name": "Jane Doe",
        "email": f"{unique('jane')}@example.org",
        "status": "pending",
        "updated_at": "2026-05-01T10:00:00Z",
    }


def stored_ids(ctx: ServiceContext, code: str) -> set[str]:
    with ctx.db.transaction() as session:
        return set(
            session.scalars(
                select(Grant.external_id)
                .join(Conference, Grant.conference_id == Conference.id)
                .where(Conference.code == code)
            )
        )


@WITH_DATABASE
@given(garbage=st.lists(grant_like | json_values, max_size=5), data=st.data())
def test_a_good_json_row_among_garbage_is_imported(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    scratch: Path,
    garbage: list[Any],
    data: st.DataObject,
) -> None:
    good = good_grant(conference.code)
    rows = list(garbage)
    rows.insert(data.draw(st.integers(0, len(rows))), good)
    path = scratch / "grants.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")

    report = import_grants(ctx, path=path, actor=TEST_ACTOR, provision=False)

    assert report.rows == len(rows)
    assert good["id"] in stored_ids(ctx, conference.code)


# A quote opens a cell that may run over lines, by the CSV rules: garbage here has none.
csv_garbage = st.text(
    st.characters(blacklist_characters='"\r\n', blacklist_categories=["Cs"]), max_size=60
)


@WITH_DATABASE
@given(garbage=st.lists(csv_garbage, max_size=5), data=st.data())
def test_a_good_csv_row_among_garbage_is_imported_and_its_line_is_right(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    scratch: Path,
    garbage: list[str],
    data: st.DataObject,
) -> None:
    good = good_grant(conference.code)
    header = ",".join(good)
    lines = list(garbage)
    position = data.draw(st.integers(0, len(lines)))
    lines.insert(position, ",".join(good.values()))
    path = scratch / "grants.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")

    report = import_grants(ctx, path=path, actor=TEST_ACTOR, provision=False)

    assert good["id"] in stored_ids(ctx, conference.code)
    assert position + 2 not in {error.line for error in report.errors}


# --- the webhook ----------------------------------------------------------------------------


@PURE
@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_webhook_body_parses_or_gives_reasons(raw: bytes) -> None:
    try:
        parse_webhook_body(raw)
    except InvalidBodyError as exc:
        assert exc.reasons and all(":" in reason for reason in exc.reasons)


ANSWERS = {200, 202, 400, 422}


@WITH_DATABASE
@given(body=json_values | grant_like)
def test_any_signed_json_body_gets_an_answer_never_a_500(http: httpx.Client, body: Any) -> None:
    assert deliver(http, json.dumps(body).encode()).status_code in ANSWERS


@WITH_DATABASE
@given(field=st.sampled_from(GRANT_FIELDS), value=json_values)
def test_a_notification_with_any_value_in_one_field_gets_an_answer_never_a_500(
    http: httpx.Client, conference: ConferenceConfig, field: str, value: Any
) -> None:
    body = event(conference.code, status="pending")
    body["grant"][field] = value

    response = deliver(http, json.dumps(body).encode())

    assert response.status_code in ANSWERS, response.text


# --- the slash command ----------------------------------------------------------------------


@PURE
@given(text=st.text(max_size=80))
def test_any_command_text_parses_into_words_without_control_characters(text: str) -> None:
    command = parse_command(text)

    assert isinstance(command.action, Action)
    for word in (command.target, command.conference, command.unknown):
        assert word is None or (word and not any(is_control(c) or c.isspace() for c in word))
    if command.target is not None:
        target = parse_target(command.target)
        assert target is None or not any(is_control(c) for c in target.value)


@PURE
@given(text=st.text(max_size=80))
def test_any_target_text_is_a_target_without_control_characters_or_none(text: str) -> None:
    target = parse_target(text)

    assert target is None or (target.value and not any(is_control(c) for c in target.value))


def test_a_target_with_a_nul_is_no_target() -> None:
    assert parse_target("jane\x00@example.org") is None
    assert parse_target("12\x0034") is None
    assert parse_command("status jane\x00@example.org").target == "jane"
