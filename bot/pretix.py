"""Pretix REST client: typed models, one error hierarchy, retries and idempotency keys in one place.

How the real server answers (status codes, bodies, idempotency edges) is written down in
pretix-api.md; `tests/fakes/pretix_server.py` models it and the tests run this client against it.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
import structlog
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    model_validator,
)
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from bot import __version__

log = structlog.get_logger(__name__)

USER_AGENT = f"voucher-bot/{__version__}"
CODE_TAKEN = "A voucher with this code already exists."
VOUCHER_USED = "This voucher can not be deleted as it has already been used."
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_MAX = 128
M = TypeVar("M", bound="BaseModel")


@dataclass(frozen=True)
class EventRef:
    """One Pretix event, by organizer and event slug."""

    organizer: str
    event: str

    @property
    def path(self) -> str:
        """The event's address below /api/v1/."""
        return f"organizers/{quote(self.organizer, safe='')}/events/{quote(self.event, safe='')}/"


# --- errors ---------------------------------------------------------------------------------


class PretixError(Exception):
    """Pretix refused or failed a call; the message says what happened, in words."""

    def __init__(self, message: str, *, status_code: int | None = None, body: object = None):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class PretixAuthError(PretixError):
    """401 (token missing or wrong) or 403 (no permission, or an unknown organizer/event)."""

    @property
    def permission_denied(self) -> bool:
        """True for a 403: the token is valid but may not do this (or the slugs are wrong)."""
        return self.status_code == 403


class PretixNotFound(PretixError):  # noqa: N818 - public name other modules use
    """404: no such object, a page past the end, or an address that is not the API."""


FieldErrors = dict[str, list[str]]


class PretixValidationError(PretixError):
    """400: Pretix refused the data; `errors` holds its field errors."""

    def __init__(self, message: str, *, status_code: int | None = 400, body: object = None):
        super().__init__(message, status_code=status_code, body=body)
        self.errors = _normalize(body)

    @property
    def code_taken(self) -> bool:
        """True when Pretix said the voucher code already exists (anywhere in the answer)."""
        rows = self.errors if isinstance(self.errors, list) else [self.errors]
        return any(CODE_TAKEN in msgs for row in rows for msgs in row.values())

    def messages(self) -> list[str]:
        """Human readable lines: "field: message", prefixed with "row N: " for a batch."""
        return _messages(self.errors)


class PretixBatchError(PretixValidationError):
    """400 from batch_create: nothing was created; `row_errors` is aligned with the input."""

    def __init__(self, message: str, *, status_code: int | None = 400, body: object = None):
        super().__init__(message, status_code=status_code, body=body)
        # A dict answer (e.g. a JSON parse error) concerns the whole request, not one row.
        self.row_errors: list[FieldErrors] = self.errors if isinstance(self.errors, list) else []

    def failed_rows(self) -> list[int]:
        """Indexes (in the input) of the rows Pretix refused."""
        return [index for index, errors in enumerate(self.row_errors) if errors]

    def row_messages(self, index: int) -> list[str]:
        """Human readable lines for one refused row."""
        return _messages(self.row_errors[index])

    def code_taken_rows(self) -> list[int]:
        """Indexes of the rows refused only because their code already exists."""
        return [
            index
            for index, errors in enumerate(self.row_errors)
            if errors and all(msgs == [CODE_TAKEN] for msgs in errors.values())
        ]


class PretixAnswerMismatch(PretixError):  # noqa: N818 - public name other modules use
    """A 2xx answer that is not about the voucher asked for, or lacks the asked-for terms.

    Pretix replays a stored answer for any request that reuses a key; such an answer must be
    reported, never recorded.
    """


class PretixConflict(PretixError):  # noqa: N818 - public name other modules use
    """409 (server busy, or the same idempotency key still in flight) after every retry."""


class PretixUnavailable(PretixError):  # noqa: N818 - public name other modules use
    """5xx, 429, timeouts or connection errors after every retry."""


class PretixVoucherUsed(PretixError):  # noqa: N818 - public name other modules use
    """DELETE refused with 403 because the voucher has already been redeemed."""


def _normalize(body: object) -> FieldErrors | list[FieldErrors]:
    """Pretix's 400 body as field -> messages (a list of those, aligned, for a batch)."""
    if isinstance(body, list):
        return [_field_errors(row) for row in body]
    return _field_errors(body)


def _field_errors(body: object) -> FieldErrors:
    if not isinstance(body, dict):
        return {"non_field_errors": [str(body)]}
    return {
        str(field): [str(m) for m in msgs] if isinstance(msgs, list) else [str(msgs)]
        for field, msgs in body.items()
    }


def _messages(errors: FieldErrors | list[FieldErrors]) -> list[str]:
    if isinstance(errors, list):
        return [f"row {i}: {line}" for i, row in enumerate(errors) for line in _messages(row)]
    return [
        msg if field in {"non_field_errors", "detail"} else f"{field}: {msg}"
        for field, msgs in errors.items()
        for msg in msgs
    ]


# --- models ---------------------------------------------------------------------------------

PriceMode = Literal["none", "set", "subtract", "percent"]


def _money_json(value: Decimal) -> str:
    return f"{value:.2f}"


# Pretix stores money with 2 decimal places (max 13 digits) and sends it as a string.
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=13, decimal_places=2),
    PlainSerializer(_money_json, return_type=str, when_used="json-unless-none"),
]
# Pretix trims and upper-cases codes: do it up front so the code we store is the one it stores.
VoucherCode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=5, max_length=255)
]


# https://docs.pretix.eu/dev/api/resources/vouchers.html#voucher-resource
class Voucher(BaseModel):
    """A voucher as Pretix returns it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int
    code: str
    created: AwareDatetime | None = None
    max_usages: int = 1
    redeemed: int = 0
    min_usages: int = 1
    valid_until: AwareDatetime | None = None
    block_quota: bool = False
    allow_ignore_quota: bool = False
    price_mode: PriceMode = "none"
    value: Decimal | None = None
    item: int | None = None
    variation: int | None = None
    quota: int | None = None
    tag: str | None = None
    comment: str | None = None
    subevent: int | None = None
    show_hidden_items: bool = True
    seat: str | None = None
    all_addons_included: bool = False
    all_bundles_included: bool = False
    budget: Decimal | None = None
    budget_used: Decimal = Decimal("0.00")


# https://docs.pretix.eu/dev/api/resources/vouchers.html#post--api-v1-organizers-(organizer)-events-(event)-vouchers-
class VoucherCreate(BaseModel):
    """A voucher to create; refuses what Pretix would silently accept although it is wrong."""

    model_config = ConfigDict(extra="forbid")

    code: VoucherCode
    max_usages: int = Field(default=1, ge=1)
    min_usages: int = Field(default=1, ge=1)
    price_mode: PriceMode
    value: Money | None = None
    item: int | None = None
    quota: int | None = None
    valid_until: AwareDatetime | None = None
    tag: str | None = Field(default=None, max_length=255)
    comment: str | None = None
    block_quota: bool = False
    allow_ignore_quota: bool = False
    all_addons_included: bool = False
    all_bundles_included: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.price_mode != "none" and self.value is None:
            raise ValueError(f"value is required with price_mode {self.price_mode!r}")
        _check_terms(self.price_mode, self.value, self.item, self.quota)
        return self

    def payload(self) -> dict[str, Any]:
        """The JSON body for Pretix (money as "0.00", datetimes ISO 8601, unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


# https://docs.pretix.eu/dev/api/resources/vouchers.html#patch--api-v1-organizers-(organizer)-events-(event)-vouchers-(id)-
class VoucherUpdate(BaseModel):
    """Changes to a voucher (PATCH); only the fields given are sent.

    `tag=None` or `comment=None` clears them (sent as ""), `valid_until=None` removes the limit.
    """

    model_config = ConfigDict(extra="forbid")

    code: VoucherCode | None = None
    max_usages: int | None = Field(default=None, ge=1)
    min_usages: int | None = Field(default=None, ge=1)
    price_mode: PriceMode | None = None
    value: Money | None = None
    item: int | None = None
    variation: int | None = None
    quota: int | None = None
    subevent: int | None = None
    valid_until: AwareDatetime | None = None
    tag: str | None = Field(default=None, max_length=255)
    comment: str | None = None
    block_quota: bool | None = None
    allow_ignore_quota: bool | None = None
    show_hidden_items: bool | None = None
    all_addons_included: bool | None = None
    all_bundles_included: bool | None = None
    budget: Money | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = self.model_fields_set
        not_nullable = {
            "code", "max_usages", "min_usages", "price_mode", "block_quota", "allow_ignore_quota",
            "show_hidden_items", "all_addons_included", "all_bundles_included",
        }  # fmt: skip
        if nulled := sorted(name for name in given & not_nullable if getattr(self, name) is None):
            raise ValueError(f"Pretix cannot set {', '.join(nulled)} to null")
        if "value" in given and self.value is None and self.price_mode not in {None, "none"}:
            raise ValueError(f"value is required with price_mode {self.price_mode!r}")
        _check_terms(self.price_mode, self.value, self.item, self.quota)
        return self

    def payload(self) -> dict[str, Any]:
        """The JSON body for Pretix: only the fields that were set."""
        body = self.model_dump(mode="json", include=self.model_fields_set)
        for text in ("tag", "comment"):
            if text in body and body[text] is None:
                body[text] = ""  # Pretix refuses null for its text fields; "" clears them
        return body


def _check_terms(
    price_mode: str | None, value: Decimal | None, item: int | None, quota: int | None
) -> None:
    if price_mode == "percent" and value is not None and value > 100:
        raise ValueError("a percent value cannot exceed 100")
    if item is not None and quota is not None:
        raise ValueError("set item or quota, not both (Pretix refuses both)")


def _localized(name: Mapping[str, str]) -> str:
    return name.get("en") or next(iter(name.values()), "")


# https://docs.pretix.eu/dev/api/resources/events.html#event-resource
class PretixEvent(BaseModel):
    """The few event fields the bot checks."""

    slug: str
    name: dict[str, str]
    live: bool
    testmode: bool = False
    currency: str | None = None
    date_from: AwareDatetime | None = None
    has_subevents: bool = False

    @property
    def display_name(self) -> str:
        """The English name, or any name Pretix has."""
        return _localized(self.name)


# https://docs.pretix.eu/dev/api/resources/quotas.html#quota-resource
class PretixQuota(BaseModel):
    """A quota: how many tickets of which items exist."""

    id: int
    name: str
    size: int | None
    items: list[int]


# https://docs.pretix.eu/dev/api/resources/items.html#item-resource
class PretixItem(BaseModel):
    """A product (item) in the shop."""

    id: int
    name: dict[str, str]
    active: bool

    @property
    def display_name(self) -> str:
        """The English name, or any name Pretix has."""
        return _localized(self.name)


# --- idempotency keys -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyScope:
    """What makes a write the bot's own: the row and request it belongs to, and its nonce.

    The nonce is random, drawn when the request is reserved and stored with it, so a second
    bot database that numbers its rows alike (a staging copy, a restore) never sends the
    same key for another request on the same token.
    """

    subject: str
    nonce: str


def make_idempotency_key(*, method: str, path: str, scope: KeyScope, payload: object) -> str:
    """A key unique per distinct request: readable subject, then a sha256 of everything.

    Pretix binds a key to the token only and replays the stored answer for any request that
    reuses it, so the hash covers the method, the path, the subject, the nonce and the body.
    """
    canonical = json.dumps(
        {
            "method": method,
            "path": path,
            "subject": scope.subject,
            "nonce": scope.nonce,
            "payload": payload,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._@:-]", "_", f"{method.lower()}:{scope.subject}")
    return f"{readable[: _KEY_MAX - len(digest) - 1]}:{digest}"


IdempotencyKey = str | KeyScope | None

# Fields whose value in an answer must equal what a write asked for. Text fields are left out
# (Pretix may normalise them), and so are fields Pretix computes.
_CHECKED_FIELDS = (
    "max_usages", "min_usages", "price_mode", "value", "item", "variation", "quota",
    "valid_until", "block_quota", "allow_ignore_quota", "all_addons_included",
    "all_bundles_included", "tag", "subevent", "show_hidden_items", "budget",
)  # fmt: skip


def _check_answer(
    answer: Voucher,
    *,
    asked: Mapping[str, object],
    voucher_id: int | None = None,
    code: str | None = None,
) -> None:
    """Raise PretixAnswerMismatch unless the answer is the voucher asked for, as asked."""
    problem = answer_problem(answer, asked=asked, voucher_id=voucher_id, code=code)
    if problem is not None:
        raise PretixAnswerMismatch(
            f"Pretix answered with a voucher that is not the one asked for ({problem}): "
            "probably a replayed answer to another request with the same idempotency key"
        )


def answer_problem(
    answer: Voucher,
    *,
    asked: Mapping[str, object],
    voucher_id: int | None = None,
    code: str | None = None,
) -> str | None:
    """How a voucher differs from the one asked for (id, code, terms), or None."""
    problems = []
    if voucher_id is not None and answer.id != voucher_id:
        problems.append(f"voucher #{answer.id} instead of #{voucher_id}")
    if code is not None and answer.code.upper() != code.strip().upper():
        problems.append("another voucher code")
    got = answer.model_dump(mode="json")
    for name in _CHECKED_FIELDS:
        if name in asked and not _same(got.get(name), asked[name]):
            problems.append(f"{name} {got.get(name)!r} instead of {asked[name]!r}")
    return "; ".join(problems) if problems else None


def _same(got: object, asked: object) -> bool:
    if got == asked:
        return True
    if isinstance(asked, str) and isinstance(got, str) and asked and got:
        try:  # money ("0.00" vs "0") and datetimes ("...Z" vs "+00:00") compare by value
            return Decimal(asked) == Decimal(got)
        except ArithmeticError:
            pass
        try:
            return datetime.fromisoformat(asked) == datetime.fromisoformat(got)
        except ValueError:
            return False
    return asked == "" and got is None  # "" clears a text field; Pretix may answer null


# --- retries --------------------------------------------------------------------------------


class _TransientError(Exception):
    """An answer worth retrying; turned into a public error when the attempts run out."""

    def __init__(self, reason: str, response: httpx.Response | None = None) -> None:
        super().__init__(reason)
        self.response = response
        self.retry_after = _retry_after(response) if response is not None else None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by Retry-After (delta-seconds or any HTTP-date); None if unreadable."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # "-0000" and asctime dates come back naive; HTTP-dates are always UTC (RFC 9110 5.6.7).
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _RetryAfterOrBackoff(wait_base):
    """Wait what the server asked for (capped), else exponential backoff with jitter."""

    def __init__(self, max_retry_after: float) -> None:
        self._cap = max_retry_after
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.5)

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, _TransientError) and error.retry_after is not None:
            return min(error.retry_after, self._cap)
        return self._backoff(retry_state)


# --- client ---------------------------------------------------------------------------------


class PretixClient:
    """Synchronous client for the Pretix REST API (vouchers, events, quotas, items)."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout: float = 10.0,
        max_attempts: int = 5,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._wait = _RetryAfterOrBackoff(max_retry_after)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1/",
            headers={
                "Authorization": f"Token {token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Language": "en",  # error texts such as CODE_TAKEN are matched in English
            },
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # vouchers

    def create_voucher(
        self, event: EventRef, voucher: VoucherCreate, *, idempotency_key: IdempotencyKey = None
    ) -> Voucher:
        """Create one voucher; Pretix answers with the full object (checked against the request)."""
        response = self._request(
            "POST", f"{event.path}vouchers/", body=voucher.payload(), key=idempotency_key
        )
        created = _parse(Voucher, response)
        _check_answer(created, asked=voucher.payload(), code=voucher.code)
        return created

    def batch_create_vouchers(
        self,
        event: EventRef,
        vouchers: Sequence[VoucherCreate],
        *,
        idempotency_key: IdempotencyKey = None,
    ) -> list[Voucher]:
        """Create all vouchers or none; a refusal raises PretixBatchError with per-row errors."""
        if not vouchers:
            return []
        body = [voucher.payload() for voucher in vouchers]
        try:
            response = self._request(
                "POST", f"{event.path}vouchers/batch_create/", body=body, key=idempotency_key
            )
        except PretixValidationError as exc:
            raise PretixBatchError(str(exc), status_code=exc.status_code, body=exc.body) from None
        created = [_parse(Voucher, row) for row in _json(response, list)]
        if len(created) != len(vouchers):
            raise PretixAnswerMismatch(
                f"Pretix answered a batch of {len(vouchers)} with {len(created)} vouchers"
            )
        for answer, asked, request in zip(created, body, vouchers, strict=True):
            _check_answer(answer, asked=asked, code=request.code)
        return created

    def get_voucher(self, event: EventRef, voucher_id: int) -> Voucher:
        """One voucher by its Pretix id."""
        voucher = _parse(Voucher, self._request("GET", f"{event.path}vouchers/{voucher_id}/"))
        _check_answer(voucher, asked={}, voucher_id=voucher_id)
        return voucher

    def find_voucher_by_code(self, event: EventRef, code: str) -> Voucher | None:
        """The voucher with this code (Pretix compares codes case-insensitively), or None."""
        response = self._request("GET", f"{event.path}vouchers/", params={"code": code})
        results = _json(response).get("results", [])
        matches = [row for row in results if str(row.get("code", "")).upper() == code.upper()]
        return _parse(Voucher, matches[0]) if matches else None

    def update_voucher(
        self,
        event: EventRef,
        voucher_id: int,
        changes: VoucherUpdate,
        *,
        idempotency_key: IdempotencyKey = None,
        code: str | None = None,
    ) -> Voucher:
        """Change the given fields of a voucher (PATCH); returns the full object.

        The answer must be the voucher asked for (its id, and `code` when given) with the
        changes applied; anything else (a replayed answer to another request) raises
        PretixAnswerMismatch.
        """
        payload = changes.payload()
        response = self._request(
            "PATCH", f"{event.path}vouchers/{voucher_id}/", body=payload, key=idempotency_key
        )
        updated = _parse(Voucher, response)
        _check_answer(updated, asked=payload, voucher_id=voucher_id, code=changes.code or code)
        return updated

    def delete_voucher(
        self, event: EventRef, voucher_id: int, *, idempotency_key: IdempotencyKey = None
    ) -> None:
        """Delete a voucher; a redeemed one raises PretixVoucherUsed."""
        self._request("DELETE", f"{event.path}vouchers/{voucher_id}/", key=idempotency_key)

    def iter_vouchers(
        self, event: EventRef, *, page_size: int | None = None, **filters: str | int | bool
    ) -> Iterator[Voucher]:
        """Every voucher matching the filters (code, tag, search, ...), page after page."""
        params = {name: _param(value) for name, value in filters.items()}
        if page_size is not None:
            params["page_size"] = str(page_size)
        for row in self._paginate(f"{event.path}vouchers/", params):
            yield _parse(Voucher, row)

    # event set-up, for `check`

    def get_event(self, event: EventRef) -> PretixEvent:
        """The event; a 403 means no permission or no such organizer/event."""
        return _parse(PretixEvent, self._request("GET", event.path))

    def get_quota(self, event: EventRef, quota_id: int) -> PretixQuota:
        """One quota of the event."""
        return _parse(PretixQuota, self._request("GET", f"{event.path}quotas/{quota_id}/"))

    def get_item(self, event: EventRef, item_id: int) -> PretixItem:
        """One product (item) of the event."""
        return _parse(PretixItem, self._request("GET", f"{event.path}items/{item_id}/"))

    def list_organizer_slugs(self) -> list[str]:
        """Slugs of the organizers this token can see."""
        return [str(row["slug"]) for row in self._paginate("organizers/", {})]

    def list_event_slugs(self, organizer: str) -> list[str]:
        """Slugs of the organizer's events."""
        path = f"organizers/{quote(organizer, safe='')}/events/"
        return [str(row["slug"]) for row in self._paginate(path, {})]

    # plumbing

    def _paginate(self, path: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        url: httpx.URL | str | None = path
        query: Mapping[str, str] | None = params
        while url is not None:
            page = _json(self._request("GET", url, params=query))
            yield from page.get("results", [])
            url, query = self._next_url(page.get("next")), None  # `next` carries the query

    def _next_url(self, link: object) -> httpx.URL | None:
        if not isinstance(link, str) or not link:
            return None
        url, base = httpx.URL(link), self._http.base_url
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            # A misconfigured SITE_URL behind a proxy; never send the token to another origin.
            log.warning("pretix_next_url_other_origin", next=link, base=str(base))
            url = base.copy_with(raw_path=url.raw_path)
        return url

    def _request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        key: IdempotencyKey = None,
    ) -> httpx.Response:
        request = self._http.build_request(method, url, params=params, json=body)
        if method in _WRITES:
            # One key for every attempt of this call, so a retry can never act twice.
            if isinstance(key, KeyScope):
                key = make_idempotency_key(
                    method=method, path=request.url.path, scope=key, payload=body
                )
            request.headers["X-Idempotency-Key"] = key or f"voucher-bot:{uuid.uuid4().hex}"
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_TransientError),
            sleep=self._sleep,
            before_sleep=lambda state: _log_retry(request, state),
            reraise=True,
        )
        try:
            return retrying(self._send, request)
        except _TransientError as exc:
            attempts = retrying.statistics.get("attempt_number", self._max_attempts)
            raise _exhausted(request, exc, attempts) from exc.__cause__

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._http.send(request)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _TransientError(f"Pretix did not answer ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if status in {409, 429} or status >= 500:
            raise _TransientError(f"Pretix answered {status}", response)
        if status >= 400:
            raise _error_for(response)
        return response


def _log_retry(request: httpx.Request, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "pretix_retry",
        method=request.method,
        path=request.url.path,
        attempt=state.attempt_number,
        reason=str(error),
        wait_seconds=round(state.next_action.sleep, 3) if state.next_action else None,
    )


def _where(request: httpx.Request) -> str:
    return f"{request.method} {request.url.path}"


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _exhausted(request: httpx.Request, error: _TransientError, attempts: int) -> PretixError:
    response = error.response
    message = f"{error} to {_where(request)}, still after {attempts} attempt(s)"
    if response is None:
        return PretixUnavailable(message)
    body = _body(response)
    if isinstance(body, dict) and "detail" in body:
        message += f": {body['detail']}"
    cls = PretixConflict if response.status_code == 409 else PretixUnavailable
    return cls(message, status_code=response.status_code, body=body)


def _error_for(response: httpx.Response) -> PretixError:
    """The public error for a 4xx answer that no retry can change."""
    status, body, where = response.status_code, _body(response), _where(response.request)
    detail = body.get("detail") if isinstance(body, dict) else None
    cls: type[PretixError] = PretixError
    message = f"Pretix answered {status} to {where}: {body}"
    if status == 400:
        cls = PretixValidationError
        message = f"Pretix refused {where}: {'; '.join(_messages(_normalize(body)))}"
    elif status == 401:
        cls = PretixAuthError
        message = f"Pretix refused the token for {where}: {detail} (check PRETIX_TOKEN)"
    elif status == 403 and detail == VOUCHER_USED:
        cls, message = PretixVoucherUsed, f"Pretix refused {where}: {detail}"
    elif status == 403:
        cls = PretixAuthError
        message = (
            f"Pretix refused {where}: {detail} Either the token's team lacks the permission "
            "(event.vouchers:write for changes) or the organizer or event slug does not exist; "
            "Pretix answers 403 for both."
        )
    elif status == 404 and not isinstance(body, dict):
        cls = PretixNotFound
        message = (
            f"Pretix answered {where} with a 404 web page, not the API: the address is wrong "
            "(check PRETIX_URL; API paths need their trailing slash)."
        )
    elif status == 404:
        cls, message = PretixNotFound, f"Pretix found nothing at {where}: {detail}"
    return cls(message, status_code=status, body=body)


def _json(response: httpx.Response, kind: type[dict[str, Any]] | type[list[Any]] = dict) -> Any:
    """The decoded body, which must be a JSON object (or list) for a successful call."""
    body = _body(response)
    if not isinstance(body, kind):
        raise PretixError(
            f"Pretix answered {_where(response.request)} with {body!r:.200}, "
            f"not the JSON {kind.__name__} the API sends",
            status_code=response.status_code,
            body=body,
        )
    return body


def _parse(model: type[M], data: httpx.Response | object) -> M:
    raw = _json(data) if isinstance(data, httpx.Response) else data
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise PretixError(f"Pretix sent a {model.__name__} this client cannot read: {exc}") from exc


def _param(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
