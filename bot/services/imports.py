"""Bootstrap imports of grants and vouchers from CSV or JSON files.

Bad rows are reported with their line numbers and skipped; good rows are kept. Importing the
same file twice changes nothing, because intake ignores what it already knows.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bot.services.actors import Actor
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant, ingest_voucher
from bot.services.notifications import KNOWN_STATUSES, GrantPayload, VoucherPayload
from bot.services.outcomes import GrantRef, IntakeAction, ProvisionOutcome
from bot.services.provisioning import provision_many

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
class ImportReport:
    """What an import did, row by row in summary, plus the provisioning it started."""

    rows: int = 0
    actions: Counter[IntakeAction] = field(default_factory=Counter)
    errors: list[RowError] = field(default_factory=list)
    held: list[GrantRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provisioned: list[ProvisionOutcome] = field(default_factory=list)


def read_records(path: Path) -> list[tuple[int, Any]]:
    """Each record of a CSV or JSON (list) file with the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return _json_records(text, path)
    return _csv_records(text)


def _json_records(text: str, path: Path) -> list[tuple[int, Any]]:
    # json.load loses positions; decoding element by element keeps each one's line number.
    decoder = json.JSONDecoder()
    index = _skip_space(text, 0)
    if not text.startswith("[", index):
        raise ImportFileError(f"{path} must hold a JSON list of objects")
    index = _skip_space(text, index + 1)
    records: list[tuple[int, Any]] = []
    while not text.startswith("]", index):
        line = text.count("\n", 0, index) + 1
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise ImportFileError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        records.append((line, value))
        index = _skip_space(text, index)
        if text.startswith(",", index):
            index = _skip_space(text, index + 1)
        elif not text.startswith("]", index):
            line = text.count("\n", 0, index) + 1
            raise ImportFileError(f"{path}: invalid JSON at line {line}: expected ',' or ']'")
    return records


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _csv_records(text: str) -> list[tuple[int, Any]]:
    # csv.reader, not DictReader: DictReader skips blank lines without a word, which would
    # shift the line numbers reported for every row after one.
    reader = csv.reader(text.splitlines(keepends=True))
    header = next(reader, None)
    if not header:
        raise ImportFileError("the CSV file has no header line")
    records: list[tuple[int, Any]] = []
    start = reader.line_num + 1
    for cells in reader:
        if cells:
            record: dict[str | None, Any] = dict(zip(header, cells, strict=False))
            if len(cells) > len(header):
                record[None] = cells[len(header) :]
            records.append((start, record))
        start = reader.line_num + 1
    return records


def parse_records(
    records: list[tuple[int, Any]], model: type[P], *, conferences: set[str]
) -> tuple[list[tuple[int, P]], list[RowError]]:
    """Validate records into payloads; every bad one becomes a RowError naming its fields."""
    good: list[tuple[int, P]] = []
    errors: list[RowError] = []
    for line, record in records:
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
    return good, errors


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _domain_problem(payload: BaseModel, conferences: set[str]) -> str | None:
    conference = getattr(payload, "conference", None)
    if conference not in conferences:
        return f"conference: unknown conference {conference!r}"
    if isinstance(payload, GrantPayload) and payload.status not in KNOWN_STATUSES:
        return f"status: unknown status {payload.status!r}"
    return None


def import_grants(
    ctx: ServiceContext,
    *,
    path: Path,
    actor: Actor,
    provision: bool = True,
    workers: int = 4,
    on_progress: Callable[[ProvisionOutcome], None] | None = None,
) -> ImportReport:
    """Import grants; newly confirmed ones are provisioned unless `provision` is False."""
    records = read_records(path)
    payloads, errors = parse_records(records, GrantPayload, conferences=set(ctx.conferences))
    report = ImportReport(rows=len(records), errors=errors)
    to_provision: list[int] = []
    for _line, payload in payloads:
        intake = ingest_grant(ctx, payload=payload, actor=actor)
        report.actions[intake.action] += 1
        if intake.held and intake.grant:
            report.held.append(intake.grant)
        if intake.refused_with_voucher:
            report.notes.append(intake.message)
        if intake.provision and intake.grant:
            to_provision.append(intake.grant.id)
    if provision and to_provision:
        report.provisioned = provision_many(
            ctx, grant_ids=to_provision, actor=actor, workers=workers, on_progress=on_progress
        )
    return report


def import_vouchers(ctx: ServiceContext, *, path: Path, actor: Actor) -> ImportReport:
    """Import vouchers made elsewhere (speaker and co-speaker vouchers)."""
    records = read_records(path)
    payloads, errors = parse_records(records, VoucherPayload, conferences=set(ctx.conferences))
    report = ImportReport(rows=len(records), errors=errors)
    for line, payload in payloads:
        intake = ingest_voucher(ctx, payload=payload, actor=actor)
        report.actions[intake.action] += 1
        if intake.action is IntakeAction.CONFLICT:
            report.notes.append(f"line {line}: {intake.message}")
    return report
