"""Conference configuration: a TOML file with one table per conference, validated at start."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.email_content import template_problems
from bot.settings import ConfigError
from bot.storage import Conference

CODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,49}$"
NO_TARGET = "set pretix_quota or pretix_item: a voucher must never unlock every product"
TABLE = "conferences"


def column_limit(name: str) -> int:
    """The length of the `conferences` column a setting is stored in (bot.storage)."""
    length = getattr(Conference.__table__.c[name].type, "length", None)
    assert isinstance(length, int), f"conferences.{name} is not a bounded text column"
    return length


class ConferenceConfig(BaseModel):
    """One conference: where its vouchers live in Pretix and where its status goes in Slack."""

    # Strict: TOML has types, and `pretix_quota = true` or `issue_vouchers = "false"` is a
    # mistake to point out, not a value to convert.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    code: str = Field(pattern=CODE_PATTERN, max_length=column_limit("code"))
    name: str = Field(min_length=1, max_length=column_limit("name"))
    pretix_organizer: str = Field(min_length=1, max_length=column_limit("pretix_organizer"))
    pretix_event: str = Field(min_length=1, max_length=column_limit("pretix_event"))
    pretix_quota: int | None = Field(default=None, ge=1)
    pretix_item: int | None = Field(default=None, ge=1)
    voucher_valid_until: dt.datetime | None = None
    timezone: str = Field(default="UTC", max_length=column_limit("timezone"))
    slack_channel: str | None = Field(default=None, max_length=column_limit("slack_channel"))
    digest_time: dt.time = dt.time(9, 0)
    issue_vouchers: bool = True
    block_quota: bool = False
    pretix_shop_url: str | None = None
    # The team's own voucher email templates; relative to the conference file's folder.
    # Any file missing there comes from the bundled ones (bot/templates).
    email_templates: str | None = Field(default=None, min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use e.g. Europe/Rome)") from None
        return value

    @field_validator("voucher_valid_until")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a UTC offset, e.g. 2026-05-31T23:59:59+02:00")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ConferenceConfig:
        if self.pretix_quota is None and self.pretix_item is None:
            raise ValueError(NO_TARGET)
        if self.pretix_quota is not None and self.pretix_item is not None:
            raise ValueError("set pretix_quota or pretix_item, not both (Pretix refuses both)")
        return self

    @property
    def template_folder(self) -> Path | None:
        """The folder of the team's email templates, if the conference names one."""
        return Path(self.email_templates) if self.email_templates else None

    @property
    def zone(self) -> ZoneInfo:
        """The conference's time zone, for dates shown to people."""
        return ZoneInfo(self.timezone)

    def shop_url(self, pretix_url: str | None) -> str | None:
        """The public shop address, where a voucher is redeemed."""
        if self.pretix_shop_url:
            return self.pretix_shop_url.rstrip("/") + "/"
        if pretix_url is None:
            return None
        return f"{pretix_url.rstrip('/')}/{self.pretix_organizer}/{self.pretix_event}/"


@dataclass(frozen=True)
class Conferences(Mapping[str, ConferenceConfig]):
    """The configured conferences by code."""

    by_code: Mapping[str, ConferenceConfig]
    source: Path | None = None

    def __getitem__(self, code: str) -> ConferenceConfig:
        return self.by_code[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_code)

    def __len__(self) -> int:
        return len(self.by_code)


def load_conferences(path: Path, *, required: bool) -> Conferences:
    """Read and validate the conference file; a missing optional file means no conferences."""
    if not path.exists():
        if required:
            raise ConfigError([f"CONFERENCES_FILE: {path} does not exist"])
        return Conferences(by_code={}, source=None)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"CONFERENCES_FILE: cannot read {path}: {exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                f"CONFERENCES_FILE: {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on "
                f"line {line}); save it as UTF-8"
            ]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"CONFERENCES_FILE: cannot read {path}: {exc}"]) from None
    return parse_conferences(data, source=path)


def unknown_top_level(data: Mapping[str, Any]) -> list[str]:
    """Each top-level key or table other than `conferences`, as a problem in words."""
    problems = []
    for key, value in data.items():
        if key == TABLE:
            continue
        if isinstance(value, Mapping):
            problems.append(f"unknown table [{key}]: conferences are [conferences.<code>] tables")
        else:
            problems.append(
                f"unknown setting {key} outside any table: settings go in a "
                "[conferences.<code>] table (the bot's own settings are environment variables)"
            )
    return problems


def parse_conferences(data: Mapping[str, Any], *, source: Path | None = None) -> Conferences:
    """Validate `[conferences.<code>]` tables; every bad field is named in one ConfigError."""
    where = str(source) if source else "conferences"
    problems = [f"{where}: {problem}" for problem in unknown_top_level(data)]
    tables = data.get(TABLE, {})
    if not isinstance(tables, Mapping):
        raise ConfigError([*problems, f"{where}: expected [conferences.<code>] tables"])
    if not tables and not problems:
        problems.append(f"{where}: no conferences: add a [conferences.<code>] table for each")
    parsed: dict[str, ConferenceConfig] = {}
    for code, table in tables.items():
        if not isinstance(table, Mapping):
            problems.append(f"{where}: conferences.{code} must be a table")
            continue
        values = {"code": code, **table}
        folder = values.get("email_templates")
        if isinstance(folder, str) and folder and source is not None:
            # Relative to the file that names it, so the bot finds it from any directory.
            values["email_templates"] = str((source.parent / folder).resolve())
        try:
            parsed[code] = config = ConferenceConfig.model_validate(values)
        except ValidationError as exc:
            errors = exc.errors()
            for error in errors:
                field = ".".join(str(part) for part in error["loc"]) or "(conference)"
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{where}: conferences.{code}.{field}: {message}")
            # Pydantic skips the whole-conference checks once a field failed; the most
            # important one (what a voucher unlocks) is repeated here so it is not missed.
            if all(error["loc"] for error in errors) and not (
                table.get("pretix_quota") or table.get("pretix_item")
            ):
                problems.append(f"{where}: conferences.{code}: {NO_TARGET}")
            continue
        if config.template_folder is not None:
            problems.extend(
                f"{where}: conferences.{code}.email_templates: {problem}"
                for problem in template_problems(config.template_folder)
            )
    if problems:
        raise ConfigError(problems)
    return Conferences(by_code=parsed, source=source)


@dataclass(frozen=True)
class ConferencePick:
    """Which conference a request means (digest, drift, bulk), or why it names none."""

    code: str | None
    problem: str | None = None
    suggested: str | None = None  # a code to offer when several conferences issue vouchers


def pick_conference(
    conferences: Mapping[str, ConferenceConfig], given: str | None
) -> ConferencePick:
    """The conference named, or the only configured one that issues vouchers.

    The one rule for every `[conference]` that may be left out (CONTRACT.md): the digest,
    the drift report and bulk requests, in Slack and on the command line.
    """
    if given is not None:
        code = given.strip().lower()
        if code in conferences:
            return ConferencePick(code)
        known = ", ".join(sorted(conferences)) or "none configured"
        return ConferencePick(None, f"unknown conference {given!r} (configured: {known})")
    issuing = sorted(code for code, conf in conferences.items() if conf.issue_vouchers)
    if len(issuing) == 1:
        return ConferencePick(issuing[0])
    if not issuing:
        return ConferencePick(None, "no configured conference issues vouchers")
    return ConferencePick(
        None, f"several conferences issue vouchers ({', '.join(issuing)})", issuing[0]
    )
