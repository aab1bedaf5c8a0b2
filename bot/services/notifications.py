"""Inbound notification shapes (webhook bodies and import rows), as CONTRACT.md defines them."""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.storage import GrantStatus

KNOWN_STATUSES = frozenset(status.value for status in GrantStatus)

# Control (Cc), format (Cf), line (Zl) and paragraph (Zp) separators: none belongs in a name
# that ends up in an email header, a Slack message or a table cell. The zero-width
# (non-)joiners are format characters too, but part of correct spelling in Persian, Hindi
# and other scripts, so they stay.
_NOT_IN_TEXT = frozenset({"Cc", "Cf", "Zl", "Zp"})
_SPELLING_JOINERS = frozenset({"\u200c", "\u200d"})
# Deeper than this, a value is not what the backend sends (and JSON encoders recurse).
MAX_NESTING = 20
# `conference_vouchers.pretix_voucher_id` is a 32-bit integer column.
MAX_DB_INTEGER = 2**31 - 1


def is_control(char: str) -> bool:
    """Whether a character is a control, format or line/paragraph separator character."""
    return unicodedata.category(char) in _NOT_IN_TEXT


def clean_name(text: str) -> str:
    """A person's name on one line: control characters become spaces, runs of space one."""
    spaced = "".join(
        " " if is_control(char) and char not in _SPELLING_JOINERS else char for char in text
    )
    return " ".join(spaced.split())


def unstorable(value: Any) -> str | None:
    """Why a value (text, or JSON made of lists and objects) cannot be stored, or None.

    Postgres refuses NUL characters in text and JSON, text that is not valid Unicode
    (unpaired surrogates, which JSON escapes can produce) and the numbers NaN and Infinity.
    Walked without recursion, so a deeply nested value is an answer, not a crash.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"nested more than {MAX_NESTING} levels deep"
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character (\\x00), which cannot be stored"
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return "contains an unpaired surrogate: not valid Unicode text"
        elif isinstance(item, float) and not math.isfinite(item):
            return "contains a number that is not finite (NaN or Infinity)"
        elif isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
    return None


def _storable(value: Any) -> Any:
    problem = unstorable(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _in_utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("is outside the years a UTC time can have") from None


def _one_line_name(value: str) -> str:
    name = clean_name(value)
    if not name:
        raise ValueError("a name is needed (it is empty once control characters are removed)")
    return name


def _no_controls(value: Any) -> Any:
    if isinstance(value, str) and any(is_control(char) for char in value):
        raise ValueError(
            "an email address must not contain control characters (CR, LF, tab and the like)"
        )
    return value


def read_json_text(text: str) -> Any:
    """JSON given as text (a CSV cell), with the same limits as a JSON body."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None


def as_stored_json(value: Any) -> Any:
    """A JSON value as it reads back from the database: a whole number is an integer.

    JSON has one kind of number; Python reads `120.0` as a float, Postgres keeps the digits
    and `1.5e300` comes back as an integer. Without this, an unchanged row compares unequal.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: as_stored_json(child) for key, child in value.items()}
    if isinstance(value, list):
        return [as_stored_json(child) for child in value]
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
PersonName = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_one_line_name)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _storable_values(cls, value: Any) -> Any:
        return _storable(value)

    @field_validator("email", mode="before", check_fields=False)
    @classmethod
    def _email_on_one_line(cls, value: Any) -> Any:
        return _no_controls(value)

    @model_validator(mode="before")
    @classmethod
    def _blank_to_none(cls, data: Any) -> Any:
        # CSV cells are never missing, only empty; an empty cell means "not given".
        if isinstance(data, dict):
            return {key: (None if value == "" else value) for key, value in data.items()}
        return data


class GrantPayload(_Payload):
    """A grant as the conference backend describes it (webhook `grant`, or one import row)."""

    id: str = Field(min_length=1, max_length=64)
    conference: str = Field(min_length=1, max_length=50)
    full_name: PersonName
    email: EmailStr | None = None
    status: str = Field(min_length=1, max_length=40)
    previous_status: str | None = Field(default=None, max_length=40)
    applicant_reply_sent_at: UtcDatetime | None = None
    applicant_reply_deadline: UtcDatetime | None = None
    updated_at: UtcDatetime
    slack_user_id: str | None = Field(default=None, pattern=r"^[UW][A-Z0-9]{2,30}$")
    admin_url: str | None = Field(default=None, max_length=2000)
    reimbursements: list[Any] | None = None
    approved_type: str | None = Field(default=None, max_length=40)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("reimbursements", mode="before")
    @classmethod
    def _json_in_text(cls, value: Any) -> Any:
        return _storable(read_json_text(value)) if isinstance(value, str) else value

    @field_validator("reimbursements", mode="after")
    @classmethod
    def _numbers_as_stored(cls, value: list[Any] | None) -> list[Any] | None:
        return None if value is None else as_stored_json(value)

    @model_validator(mode="after")
    def _confirmed_needs_email(self) -> GrantPayload:
        if self.status == GrantStatus.CONFIRMED and not self.email:
            raise ValueError("a confirmed grant needs an email address")
        return self

    @property
    def known_status(self) -> GrantStatus | None:
        """The status, or None when the backend sent one this bot does not know."""
        return GrantStatus(self.status) if self.status in KNOWN_STATUSES else None

    @property
    def email_key(self) -> str | None:
        """The address as compared: one person, whatever the case they typed it in."""
        return self.email.strip().lower() if self.email else None


class VoucherPayload(_Payload):
    """A voucher made elsewhere (usually a speaker voucher), from the webhook or an import."""

    conference: str = Field(min_length=1, max_length=50)
    email: EmailStr
    type: Literal["speaker", "co_speaker", "grant"]
    code: str = Field(min_length=5, max_length=255)
    pretix_voucher_id: int | None = Field(default=None, ge=1, le=MAX_DB_INTEGER)
    email_sent_at: UtcDatetime | None = None

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()  # Pretix stores codes upper-cased

    @property
    def email_key(self) -> str:
        """The address as compared."""
        return self.email.strip().lower()


class WebhookEvent(BaseModel):
    """The envelope of a `POST /hooks/grants` body."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    type: Literal["grant.updated", "voucher.updated"]
    occurred_at: UtcDatetime
    grant: GrantPayload | None = None
    voucher: VoucherPayload | None = None

    @field_validator("id", "type", "occurred_at", mode="before")
    @classmethod
    def _storable_values(cls, value: Any) -> Any:
        return _storable(value)

    @property
    def conference(self) -> str:
        """The conference the event is about."""
        body = self.grant or self.voucher
        assert body is not None  # the validator below makes sure one is there
        return body.conference

    @model_validator(mode="after")
    def _body_matches_type(self) -> WebhookEvent:
        if self.type == "grant.updated" and self.grant is None:
            raise ValueError("a grant.updated event needs a `grant` object")
        if self.type == "voucher.updated" and self.voucher is None:
            raise ValueError("a voucher.updated event needs a `voucher` object")
        return self


class InvalidBodyError(ValueError):
    """A webhook body that is not a notification; `reasons` name each problem by field."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def parse_webhook_body(raw: bytes) -> WebhookEvent:
    """A `POST /hooks/grants` body as an event, or InvalidBodyError saying what is wrong with it."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidBodyError(["body: nested too deeply to read"]) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, huge integers
        raise InvalidBodyError([f"body: not JSON ({exc})"]) from None
    try:
        return WebhookEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidBodyError(validation_reasons(exc)) from None


def validation_reasons(exc: ValidationError) -> list[str]:
    """Each validation error as `field.path: message` (`body` when it is about the whole)."""
    return [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {problem_words(error)}"
        for error in exc.errors()
    ]


def problem_words(error: Mapping[str, Any]) -> str:
    """One validation error in words a person acts on (the webhook's and the imports')."""
    kind = str(error.get("type", ""))
    if kind.startswith(("datetime", "date_", "timezone")):
        return (
            f"{error.get('input')!r} is not a date and time; use ISO 8601 with a time zone, "
            "e.g. 2026-05-02T10:00:00Z"
        )
    return str(error["msg"]).removeprefix("Value error, ")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
