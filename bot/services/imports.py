"""Bootstrap imports of grants and vouchers from CSV or JSON files.

Bad rows are reported with their line numbers and skipped; good rows are kept. Importing the
same file twice changes nothing, because intake ignores what it already knows.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from bot.services.actors import Actor
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant, ingest_voucher
from bot.services.notifications import (
    KNOWN_STATUSES,
    GrantPayload,
    VoucherPayload,
    problem_words,
)
from bot.services.outcomes import GrantRef, IntakeAction, ProvisionOutcome
from bot.services.provisioning import provision_many
from bot.services.queries import grant_ref
from bot.storage import Conference, Grant

P = TypeVar("P", bound=BaseModel)


class ImportFileError(Exception):
    """The file as a whole cannot be read (missing, not CSV or JSON, not a list)."""


@dataclass(frozen=True)
class RowError:
    """One rejected row and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class RowSummary:
    """The rows of a file by intake action, its bad rows, held grants and notes."""

    rows: int = 0
    actions: Counter[IntakeAction] = field(default_factory=Counter)
    errors: list[RowError] = field(default_factory=list)
    held: list[GrantRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportReport(RowSummary):
    """What an import did, row by row in summary, plus the provisioning it started."""

    provisioned: list[ProvisionOutcome] = field(default_factory=list)
    needs_person: int = 0  # voucher rows refused because applying them could be wrong
    # Grants of the file held before this import and still held (nothing in it changed them).
    still_held: list[GrantRef] = field(default_factory=list)
    # Why each held grant (newly or still) is held, by grant id: `confirmed from waiting_list...`.
    hold_reasons: dict[int, str] = field(default_factory=dict)


def read_records(path: Path) -> list[tuple[int, Any]]:
    """Each record of a CSV or JSON (list) file with the line it starts on.

    A record that cannot be read at all (a CSV cell over the csv module's limit, a JSON value
    nested too deeply) is an `Unreadable` in its place, so that it is reported by line and
    the records after it are still imported.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = decode_text(data, path)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return _json_records(text, path)
    return _csv_records(text)


@dataclass(frozen=True)
class Unreadable:
    """A record whose text could not be read into fields, and why."""

    reason: str


def decode_text(data: bytes, path: Path) -> str:
    """The file's text (UTF-8, with or without a byte order mark), or a clear ImportFileError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8 (in a spreadsheet: CSV UTF-8) and import it again"
        ) from None


_JSON_SPACE = " \t\r\n"
_JSON_STRUCTURE = re.compile(r'["\[\]{},]')
_JSON_STRING_END = re.compile(r'["\\]')


class _BrokenJSONError(Exception):
    """The list itself is not valid JSON at `index` (its elements are read one by one)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


def _json_records(text: str, path: Path) -> list[tuple[int, Any]]:
    # json.load loses positions, and a deeply nested value would stop the whole file: the
    # list is split into its elements first (without recursion), then each one is decoded.
    newlines = [match.start() for match in re.finditer("\n", text)]

    def line_of(index: int) -> int:
        return bisect.bisect_left(newlines, index) + 1

    try:
        spans = split_json_list(text)
    except _BrokenJSONError as exc:
        if exc.index < 0:
            raise ImportFileError(f"{path} must hold a JSON list of objects") from None
        raise ImportFileError(
            f"{path}: invalid JSON at line {line_of(exc.index)}: {exc.message}"
        ) from None
    records: list[tuple[int, Any]] = []
    for start, end in spans:
        line = line_of(start)
        try:
            value: Any = json.loads(text[start:end], parse_constant=_not_a_number)
        except json.JSONDecodeError as exc:
            raise ImportFileError(
                f"{path}: invalid JSON at line {line + exc.lineno - 1}: {exc.msg}"
            ) from None
        except RecursionError:
            value = Unreadable("nested too deeply to read")
        except ValueError as exc:  # NaN or Infinity, an integer of thousands of digits
            value = Unreadable(f"not readable as JSON: {exc}")
        records.append((line, value))
    return records


def split_json_list(text: str) -> list[tuple[int, int]]:
    """The (start, end) text spans of a JSON list's elements, found without recursion.

    Raises _BrokenJSONError with index -1 when the text is not a list at all.
    """
    index = _skip_space(text, 0)
    if not text.startswith("[", index):
        raise _BrokenJSONError(-1, "not a list")
    spans: list[tuple[int, int]] = []
    depth = 0
    element: int | None = None  # where the element being read starts
    position = index + 1
    while True:
        match = _JSON_STRUCTURE.search(text, position)
        if match is None:
            raise _BrokenJSONError(len(text), "the list is not closed with ']'")
        at, char = match.start(), match.group()
        if depth == 0 and element is None:
            first = _skip_space(text, position)
            element = first if first < at or char in '"[{' else None
        position = at + 1
        if char == '"':
            position = _string_end(text, at)
        elif char in "[{":
            depth += 1
        elif char in "]}" and depth > 0:
            depth -= 1
        elif char == "}":
            raise _BrokenJSONError(at, "'}' without its '{'")
        elif char == "]" or (char == "," and depth == 0):
            _end_element(spans, element, at, char)
            element = None
            if char == "]":
                break
    if text[position:].strip(_JSON_SPACE):
        raise _BrokenJSONError(_skip_space(text, position), "text after the list's closing ']'")
    return spans


def _end_element(spans: list[tuple[int, int]], element: int | None, at: int, char: str) -> None:
    if element is not None:
        spans.append((element, at))
    elif char == "," or spans:  # "[,": "[1,]" (an empty list "[]" is fine)
        raise _BrokenJSONError(at, f"a value is missing before '{char}'")


def _string_end(text: str, quote: int) -> int:
    position = quote + 1
    while True:
        match = _JSON_STRING_END.search(text, position)
        if match is None:
            raise _BrokenJSONError(quote, "a string is not closed with '\"'")
        if match.group() == '"':
            return match.end()
        position = match.end() + 1  # a backslash: skip the character it escapes


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in _JSON_SPACE:
        index += 1
    return index


def _csv_records(text: str) -> list[tuple[int, Any]]:
    # csv.reader, not DictReader: DictReader skips blank lines without a word, which would
    # shift the line numbers reported for every row after one. A file object with
    # newline="" (not str.splitlines, which also splits at U+2028, U+0085, form feeds...)
    # so that only CR and LF end a line, as in the files spreadsheets write.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportFileError(f"the CSV header line cannot be read: {_csv_problem(exc)}") from None
    if not header:
        raise ImportFileError("the CSV file has no header line")
    records: list[tuple[int, Any]] = []
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            records.append((start, Unreadable(_csv_problem(exc))))
        else:
            if cells:
                record: dict[str | None, Any] = dict(zip(header, cells, strict=False))
                if len(cells) > len(header):
                    record[None] = cells[len(header) :]
                records.append((start, record))
        start = reader.line_num + 1
    return records


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return f"a cell is longer than {csv.field_size_limit()} characters"
    return f"not readable as CSV: {exc}"


def parse_records(
    records: list[tuple[int, Any]], model: type[P], *, conferences: set[str]
) -> tuple[list[tuple[int, P]], list[RowError]]:
    """Validate records into payloads; every bad one becomes a RowError naming its fields."""
    good: list[tuple[int, P]] = []
    errors: list[RowError] = []
    for line, record in records:
        if isinstance(record, Unreadable):
            errors.append(RowError(line, record.reason))
            continue
        if not isinstance(record, dict):
            errors.append(RowError(line, "expected an object with named fields"))
            continue
        if None in record:
            errors.append(RowError(line, "more cells than the header has columns"))
            continue
        try:
            payload = model.model_validate(record)
        except ValidationError as exc:
            errors.append(RowError(line, _describe(exc)))
            continue
        problem = _domain_problem(payload, conferences)
        if problem:
            errors.append(RowError(line, problem))
            continue
        good.append((line, payload))
    good, repeated = drop_repeats(good)
    errors = sorted([*errors, *repeated], key=lambda error: error.line)
    return good, errors


def drop_repeats(rows: list[tuple[int, P]]) -> tuple[list[tuple[int, P]], list[RowError]]:
    """Keep the first row of each grant (or voucher) in a file; report every later one.

    Two rows of one grant in a file would both be applied, the second undoing the first, on
    every import of that file.
    """
    first_line: dict[tuple[str, str, str], int] = {}
    kept: list[tuple[int, P]] = []
    errors: list[RowError] = []
    for line, payload in rows:
        keys = identities(payload)
        seen = next(
            ((field, label, first_line[key]) for field, label, key in keys if key in first_line),
            None,
        )
        if seen is not None:
            field, label, first = seen
            errors.append(
                RowError(
                    line, f"{field}: {label} is also on line {first}; only line {first} is imported"
                )
            )
            continue
        for _field, _label, key in keys:
            first_line[key] = line
        kept.append((line, payload))
    return kept, errors


def identities(payload: BaseModel) -> list[tuple[str, str, tuple[str, str, str]]]:
    """What makes a row one grant or one voucher: (field, words for people, key)."""
    if isinstance(payload, GrantPayload):
        where = payload.conference
        return [("id", f"grant {payload.id} at {where}", ("id", where, payload.id))]
    if isinstance(payload, VoucherPayload):
        where = payload.conference
        return [
            ("email", f"{payload.email_key} at {where}", ("email", where, payload.email_key)),
            ("code", f"{payload.code} at {where}", ("code", where, payload.code)),
        ]
    return []


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if where and error["type"] == "missing":
            parts.append(f"{where} is missing")
            continue
        if where and error.get("input") is None and not error["type"].startswith("value_error"):
            parts.append(f"{where} is empty")  # an empty CSV cell, a JSON null
            continue
        message = problem_words(error)
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _domain_problem(payload: BaseModel, conferences: set[str]) -> str | None:
    conference = getattr(payload, "conference", None)
    if conference not in conferences:
        return f"conference: unknown conference {conference!r}"
    if isinstance(payload, GrantPayload) and payload.status not in KNOWN_STATUSES:
        return f"status: unknown status {payload.status!r}"
    return None


def read_grants(
    ctx: ServiceContext, path: Path
) -> tuple[int, list[tuple[int, GrantPayload]], list[RowError]]:
    """The file's record count, its valid grant rows (with lines) and its bad rows."""
    records = read_records(path)
    payloads, errors = parse_records(records, GrantPayload, conferences=set(ctx.conferences))
    return len(records), payloads, errors


def import_grants(
    ctx: ServiceContext,
    *,
    path: Path,
    actor: Actor,
    provision: bool = True,
    workers: int = 4,
    on_progress: Callable[[ProvisionOutcome], None] | None = None,
    on_row: Callable[[], None] | None = None,
    on_stage: Callable[[str, int], None] | None = None,
) -> ImportReport:
    """Import grants; newly confirmed ones are provisioned unless `provision` is False.

    `on_stage` hears ("storing", rows) before the rows are stored and ("provisioning",
    grants) before provisioning starts; `on_row` each stored row, `on_progress` each outcome.
    """
    rows, payloads, errors = read_grants(ctx, path)
    report = ImportReport(rows=rows, errors=errors)
    if on_stage is not None:
        on_stage("storing", len(payloads))
    to_provision: list[int] = []
    for _line, payload in payloads:
        intake = ingest_grant(ctx, payload=payload, actor=actor, wait_for_staff=not provision)
        report.actions[intake.action] += 1
        if intake.held and intake.grant:
            report.held.append(intake.grant)
        if intake.refused_with_voucher:
            report.notes.append(intake.message)
        if intake.provision and intake.grant:
            to_provision.append(intake.grant.id)
        if on_row is not None:
            on_row()
    keys = {(payload.conference, payload.id) for _line, payload in payloads}
    newly = {grant.id for grant in report.held}
    for grant, reason in held_grants(ctx, keys):
        report.hold_reasons[grant.id] = reason
        if grant.id not in newly:
            report.still_held.append(grant)
    if provision and to_provision:
        if on_stage is not None:
            on_stage("provisioning", len(to_provision))
        report.provisioned = provision_many(
            ctx, grant_ids=to_provision, actor=actor, workers=workers, on_progress=on_progress
        )
    return report


def held_grants(ctx: ServiceContext, keys: set[tuple[str, str]]) -> list[tuple[GrantRef, str]]:
    """The grants among `keys` (conference code, grant id) held for staff, with the reason."""
    if not keys:
        return []
    with ctx.db.transaction() as session:
        found = session.execute(
            select(Grant, Conference)
            .join(Conference, Grant.conference_id == Conference.id)
            .where(
                Grant.hold_reason.is_not(None),
                Grant.dismissed_at.is_(None),
                Conference.code.in_(sorted({code for code, _id in keys})),
                Grant.external_id.in_(sorted({ident for _code, ident in keys})),
            )
            .order_by(Conference.code, Grant.external_id)
        ).all()
        return [
            (grant_ref(grant, conference), grant.hold_reason or "")
            for grant, conference in found
            if (conference.code, grant.external_id) in keys
        ]


def import_vouchers(
    ctx: ServiceContext,
    *,
    path: Path,
    actor: Actor,
    on_row: Callable[[], None] | None = None,
    on_stage: Callable[[str, int], None] | None = None,
) -> ImportReport:
    """Import vouchers made elsewhere (speaker and co-speaker vouchers)."""
    records = read_records(path)
    payloads, errors = parse_records(records, VoucherPayload, conferences=set(ctx.conferences))
    report = ImportReport(rows=len(records), errors=errors)
    if on_stage is not None:
        on_stage("storing", len(payloads))
    for line, payload in payloads:
        intake = ingest_voucher(ctx, payload=payload, actor=actor)
        report.actions[intake.action] += 1
        if intake.action is IntakeAction.CONFLICT:
            report.notes.append(f"line {line}: {intake.message}")
            if intake.needs_person:
                report.needs_person += 1
        if on_row is not None:
            on_row()
    return report
