"""PretixClient against FakePretix over real HTTP: requests, answers, errors, retries, keys."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bot.pretix import (
    EventRef,
    KeyScope,
    PretixAuthError,
    PretixBatchError,
    PretixClient,
    PretixConflict,
    PretixError,
    PretixNotFound,
    PretixUnavailable,
    PretixValidationError,
    PretixVoucherUsed,
    Voucher,
    VoucherCreate,
    VoucherUpdate,
    make_idempotency_key,
)
from tests.fakes.pretix_fixtures import (
    GRANT_QUOTA,
    PYCON_2026,
    TICKET_ITEM,
    PretixClientFactory,
    RecordingSleep,
)
from tests.fakes.pretix_server import FakePretix

VOUCHERS_PATH = "/api/v1/organizers/pycon/events/pycon2026/vouchers/"


GRANT_FIELDS: dict[str, object] = {
    "code": "GRANT-0001",
    "price_mode": "set",
    "value": Decimal("0.00"),
    "quota": GRANT_QUOTA,
    "tag": "grant",
    "comment": "Financial aid grant 1234",
}


def grant_voucher(code: str = "GRANT-0001", **fields: object) -> VoucherCreate:
    return VoucherCreate.model_validate(GRANT_FIELDS | {"code": code} | fields)


# --- each call: the request it sends and what it makes of the answer --------------------------


def test_create_voucher_sends_the_documented_request(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    valid_until = datetime(2030, 5, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=2)))
    voucher = pretix_client.create_voucher(
        pretix_event,
        grant_voucher("grant-lower-01", valid_until=valid_until),
        idempotency_key="create:1",
    )

    [request] = pretix_server.requests
    assert request.method == "POST"
    assert request.path == VOUCHERS_PATH
    assert request.headers["authorization"] == "Token test-token"
    assert request.headers["user-agent"].startswith("voucher-bot/")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept-language"] == "en"  # error texts are matched in English
    assert request.idempotency_key == "create:1"
    assert request.json == {
        "code": "GRANT-LOWER-01",
        "max_usages": 1,
        "price_mode": "set",
        "value": "0.00",
        "quota": 1,
        "valid_until": "2030-05-31T23:59:59+02:00",
        "tag": "grant",
        "comment": "Financial aid grant 1234",
        "block_quota": False,
        "allow_ignore_quota": False,
        "min_usages": 1,
        "all_addons_included": False,
        "all_bundles_included": False,
    }
    assert isinstance(voucher, Voucher)
    assert voucher.id == 1
    assert voucher.code == "GRANT-LOWER-01"
    assert voucher.value == Decimal("0.00")
    assert voucher.quota == GRANT_QUOTA
    assert voucher.item is None
    assert voucher.valid_until == valid_until
    assert voucher.redeemed == 0
    assert voucher.created is not None
    assert voucher.created.tzinfo is not None
    stored = pretix_server.voucher_by_code("grant-lower-01")
    assert stored is not None
    assert stored["valid_until"] == "2030-05-31T21:59:59Z"
    assert (stored["id"], stored["value"], stored["quota"]) == (1, "0.00", 1)


def test_every_write_carries_a_fresh_idempotency_key_when_none_is_given(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    created = pretix_client.create_voucher(pretix_event, grant_voucher("GRANT-0001"))
    pretix_client.update_voucher(pretix_event, created.id, VoucherUpdate(max_usages=2))
    pretix_client.delete_voucher(pretix_event, created.id)
    pretix_client.batch_create_vouchers(pretix_event, [grant_voucher("GRANT-0002")])
    pretix_client.get_voucher(pretix_event, 2)

    writes = pretix_server.writes()
    assert [w.method for w in writes] == ["POST", "PATCH", "DELETE", "POST"]
    keys = [w.idempotency_key for w in writes]
    assert all(keys) and len(set(keys)) == 4
    assert all(len(key or "") <= 128 for key in keys)
    get = pretix_server.requests[-1]
    assert get.method == "GET" and get.idempotency_key is None


def test_get_voucher(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(id=7, code="CO-SPEAKER-7", price_mode="percent", value="25.00")

    voucher = pretix_client.get_voucher(pretix_event, 7)

    assert (voucher.id, voucher.code, voucher.price_mode) == (7, "CO-SPEAKER-7", "percent")
    assert voucher.value == Decimal("25.00")
    assert pretix_server.requests[-1].path == f"{VOUCHERS_PATH}7/"


def test_get_unknown_voucher_is_not_found(
    pretix_client: PretixClient, pretix_event: EventRef
) -> None:
    with pytest.raises(PretixNotFound) as raised:
        pretix_client.get_voucher(pretix_event, 999)
    assert raised.value.status_code == 404
    assert raised.value.body == {"detail": "No Voucher matches the given query."}
    assert "No Voucher matches the given query." in str(raised.value)


def test_find_voucher_by_code_is_case_insensitive(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(code="GRANT ABC 12")
    pretix_server.seed_voucher(code="GRANT-ABC-12X")

    found = pretix_client.find_voucher_by_code(pretix_event, "grant abc 12")

    assert found is not None and found.code == "GRANT ABC 12"
    assert pretix_server.requests[-1].query == {"code": "grant abc 12"}
    assert pretix_client.find_voucher_by_code(pretix_event, "NOPE-00000") is None


def test_update_voucher_sends_only_the_changed_fields(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(
        id=8, code="CO-SPEAKER-8", price_mode="percent", value="25.00", tag="co_speaker"
    )

    updated = pretix_client.update_voucher(
        pretix_event,
        8,
        VoucherUpdate(price_mode="set", value=Decimal("0"), tag="grant", comment=None),
        idempotency_key="upgrade:8",
    )

    request = pretix_server.requests[-1]
    assert (request.method, request.path) == ("PATCH", f"{VOUCHERS_PATH}8/")
    assert request.idempotency_key == "upgrade:8"
    assert request.json == {"price_mode": "set", "value": "0.00", "tag": "grant", "comment": ""}
    assert (updated.price_mode, updated.value, updated.tag) == ("set", Decimal("0.00"), "grant")
    assert updated.code == "CO-SPEAKER-8"


def test_renaming_onto_a_taken_code_is_code_taken(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(id=1, code="FIRST-CODE")
    pretix_server.seed_voucher(id=2, code="SECOND-CODE")

    with pytest.raises(PretixValidationError) as raised:
        pretix_client.update_voucher(pretix_event, 2, VoucherUpdate(code="first-code"))
    assert raised.value.code_taken


def test_delete_voucher(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(id=3, code="DELETE-ME")

    pretix_client.delete_voucher(pretix_event, 3, idempotency_key="delete:3")

    assert pretix_server.all_vouchers() == []
    request = pretix_server.requests[-1]
    assert (request.method, request.path, request.status) == ("DELETE", f"{VOUCHERS_PATH}3/", 204)
    with pytest.raises(PretixNotFound):
        pretix_client.delete_voucher(pretix_event, 3)


def test_deleting_a_redeemed_voucher_is_voucher_used_not_auth(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(id=4, code="USED-CODE")
    pretix_server.redeem(4)

    with pytest.raises(PretixVoucherUsed) as raised:
        pretix_client.delete_voucher(pretix_event, 4)
    assert not isinstance(raised.value, PretixAuthError)
    assert raised.value.status_code == 403
    assert pretix_server.count("DELETE") == 1
    assert pretix_server.voucher(4) is not None


def test_iter_vouchers_follows_next_over_many_pages(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    for n in range(120):
        pretix_server.seed_voucher(code=f"BULK-{n:04d}", tag="grant" if n % 2 else "other")

    everything = list(pretix_client.iter_vouchers(pretix_event))
    assert [v.code for v in everything] == [f"BULK-{n:04d}" for n in range(120)]
    assert pretix_server.count("GET") == 3  # 50 + 50 + 20

    grants = list(pretix_client.iter_vouchers(pretix_event, page_size=20, tag="grant"))
    assert len(grants) == 60 and all(v.tag == "grant" for v in grants)
    pages = pretix_server.requests[3:]
    assert len(pages) == 3
    assert pages[0].query == {"tag": "grant", "page_size": "20"}
    assert pages[1].query == {"page": "2", "page_size": "20", "tag": "grant"}


def test_iter_vouchers_sends_filters_as_pretix_expects(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(id=1, code="USED-ONE")
    pretix_server.seed_voucher(id=2, code="FRESH-ONE")
    pretix_server.redeem(1)

    active = list(pretix_client.iter_vouchers(pretix_event, active=True, ordering="-id"))

    assert [v.code for v in active] == ["FRESH-ONE"]
    assert pretix_server.requests[-1].query == {"active": "true", "ordering": "-id"}


def test_next_links_to_another_origin_are_followed_on_our_own(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.site_url = "http://pretix.internal:8000"  # a misconfigured SITE_URL
    for n in range(60):
        pretix_server.seed_voucher(code=f"BULK-{n:04d}")

    with capture_logs() as logs:
        vouchers = list(pretix_client.iter_vouchers(pretix_event))

    assert len(vouchers) == 60
    assert [r.headers["host"] for r in pretix_server.requests] == [pretix_server.url[7:]] * 2
    assert [entry["event"] for entry in logs] == ["pretix_next_url_other_origin"]


def test_batch_create_vouchers(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    vouchers = pretix_client.batch_create_vouchers(
        pretix_event, [grant_voucher(f"BATCH-{n:03d}") for n in range(3)], idempotency_key="b:1"
    )

    assert [v.code for v in vouchers] == ["BATCH-000", "BATCH-001", "BATCH-002"]
    request = pretix_server.requests[-1]
    assert request.path == f"{VOUCHERS_PATH}batch_create/"
    assert [row["code"] for row in request.json] == ["BATCH-000", "BATCH-001", "BATCH-002"]
    assert pretix_client.batch_create_vouchers(pretix_event, []) == []
    assert len(pretix_server.requests) == 1


def test_batch_errors_are_aligned_with_the_input_and_nothing_is_created(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(code="TAKEN-CODE")
    rows = [
        grant_voucher("BATCH-000"),
        grant_voucher("taken-code"),
        grant_voucher("BATCH-000"),
        grant_voucher("BATCH-003", quota=None, item=999),
    ]

    with pytest.raises(PretixBatchError) as raised:
        pretix_client.batch_create_vouchers(pretix_event, rows)

    error = raised.value
    assert isinstance(error, PretixValidationError)
    # Row 2 repeats row 0, but pretix looks for duplicates only once every row is valid.
    assert error.row_errors == [
        {},
        {"non_field_errors": ["A voucher with this code already exists."]},
        {},
        {"item": ['Invalid pk "999" - object does not exist.']},
    ]
    assert error.failed_rows() == [1, 3]
    assert error.code_taken_rows() == [1]
    assert error.code_taken
    assert error.messages() == [
        "row 1: A voucher with this code already exists.",
        'row 3: item: Invalid pk "999" - object does not exist.',
    ]
    assert [v["code"] for v in pretix_server.all_vouchers()] == ["TAKEN-CODE"]

    with pytest.raises(PretixBatchError) as again:
        pretix_client.batch_create_vouchers(pretix_event, [rows[0], rows[2]])
    assert again.value.row_errors == [{}, {"code": ["Duplicate voucher code in request."]}]


def test_event_quota_item_organizers_and_events(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.add_event("pycon", "pycon2025")
    pretix_server.add_event("europython", "ep2026")

    event = pretix_client.get_event(pretix_event)
    quota = pretix_client.get_quota(pretix_event, GRANT_QUOTA)
    item = pretix_client.get_item(pretix_event, TICKET_ITEM)

    assert (event.slug, event.live, event.display_name) == ("pycon2026", True, "pycon2026")
    assert (quota.id, quota.name, quota.size, quota.items) == (1, "Grant tickets", None, [10])
    assert (item.id, item.display_name, item.active) == (10, "Conference ticket", True)
    assert pretix_client.list_organizer_slugs() == ["europython", "pycon"]
    assert pretix_client.list_event_slugs("pycon") == ["pycon2025", "pycon2026"]
    assert [r.path for r in pretix_server.requests] == [
        "/api/v1/organizers/pycon/events/pycon2026/",
        "/api/v1/organizers/pycon/events/pycon2026/quotas/1/",
        "/api/v1/organizers/pycon/events/pycon2026/items/10/",
        "/api/v1/organizers/",
        "/api/v1/organizers/pycon/events/",
    ]
    with pytest.raises(PretixNotFound):
        pretix_client.get_quota(pretix_event, 99)


# --- errors that no retry can change -------------------------------------------------------------


def test_duplicate_code_is_code_taken(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(code="GRANT-0001")

    with pytest.raises(PretixValidationError) as raised:
        pretix_client.create_voucher(pretix_event, grant_voucher("grant-0001"))

    error = raised.value
    assert error.code_taken
    assert error.status_code == 400
    assert error.errors == {"non_field_errors": ["A voucher with this code already exists."]}
    assert error.messages() == ["A voucher with this code already exists."]
    assert pretix_server.count("POST") == 1


def test_field_errors_read_as_field_and_message(
    pretix_client: PretixClient, pretix_event: EventRef
) -> None:
    with pytest.raises(PretixValidationError) as raised:
        pretix_client.create_voucher(pretix_event, grant_voucher(quota=None, item=999))
    assert not raised.value.code_taken
    assert raised.value.messages() == ['item: Invalid pk "999" - object does not exist.']
    assert 'item: Invalid pk "999"' in str(raised.value)


def test_wrong_token_is_an_auth_error_without_retry(
    make_pretix_client: PretixClientFactory,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    pretix_event: EventRef,
) -> None:
    client = make_pretix_client(token="wrong-token")

    with pytest.raises(PretixAuthError) as raised:
        client.create_voucher(pretix_event, grant_voucher())

    assert raised.value.status_code == 401
    assert not raised.value.permission_denied
    assert "Invalid token." in str(raised.value)
    assert len(pretix_server.requests) == 1
    assert pretix_sleep.calls == []


def test_unknown_event_is_permission_denied(
    pretix_client: PretixClient, pretix_server: FakePretix
) -> None:
    with pytest.raises(PretixAuthError) as raised:
        pretix_client.get_event(EventRef("pycon", "pycon1999"))

    assert raised.value.permission_denied
    assert raised.value.body == {"detail": "You do not have permission to perform this action."}
    assert "organizer or event slug does not exist" in str(raised.value)
    assert len(pretix_server.requests) == 1


def test_read_only_token_cannot_create(
    make_pretix_client: PretixClientFactory, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.read_only_tokens.add("read-only")
    client = make_pretix_client(token="read-only")

    assert client.find_voucher_by_code(pretix_event, "GRANT-0001") is None
    with pytest.raises(PretixAuthError) as raised:
        client.create_voucher(pretix_event, grant_voucher())
    assert raised.value.permission_denied
    assert pretix_server.count("POST") == 1


def test_a_wrong_base_path_gets_a_clear_not_found(
    make_pretix_client: PretixClientFactory, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    client = make_pretix_client(base_url=pretix_server.url + "/pretix")

    with pytest.raises(PretixNotFound) as raised:
        client.get_event(pretix_event)

    assert "404 web page" in str(raised.value)
    assert "PRETIX_URL" in str(raised.value)
    assert isinstance(raised.value.body, str) and raised.value.body.startswith("<!DOCTYPE html>")
    assert len(pretix_server.requests) == 1


# --- retries ------------------------------------------------------------------------------------


def test_a_500_is_retried_with_the_same_key(
    pretix_client: PretixClient,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    pretix_event: EventRef,
) -> None:
    pretix_server.fail_next(500)

    with capture_logs() as logs:
        voucher = pretix_client.create_voucher(pretix_event, grant_voucher())

    posts = pretix_server.writes()
    assert [p.status for p in posts] == [500, 201]
    assert posts[0].idempotency_key == posts[1].idempotency_key is not None
    assert len(pretix_sleep.calls) == 1
    assert 0.5 <= pretix_sleep.calls[0] <= 1.0  # first backoff step: 0.5 s plus up to 0.5 jitter
    assert [v["id"] for v in pretix_server.all_vouchers()] == [voucher.id]
    [entry] = logs
    assert entry["event"] == "pretix_retry"
    assert (entry["method"], entry["path"], entry["attempt"]) == ("POST", VOUCHERS_PATH, 1)
    assert entry["log_level"] == "warning"


@pytest.mark.parametrize(
    ("status", "retry_after"), [(503, 7), (429, 2), (409, None), (502, None), (504, 3)]
)
def test_transient_answers_are_retried_honouring_retry_after(
    pretix_client: PretixClient,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    status: int,
    retry_after: int | None,
) -> None:
    pretix_server.fail_next(status, retry_after=retry_after)

    pretix_client.create_voucher(PYCON_2026, grant_voucher())

    expected = {503: 7.0, 429: 2.0, 409: 5.0, 504: 3.0}  # 409: pretix's busy Retry-After: 5
    if status in expected:
        assert pretix_sleep.calls == [expected[status]]
    else:
        assert len(pretix_sleep.calls) == 1 and pretix_sleep.calls[0] <= 1.0
    assert [w.status for w in pretix_server.writes()] == [status, 201]
    assert len(pretix_server.all_vouchers()) == 1


def test_retry_after_is_capped_and_may_be_a_date(
    make_pretix_client: PretixClientFactory,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    pretix_event: EventRef,
) -> None:
    client = make_pretix_client(max_retry_after=10.0)
    pretix_server.fail_next(503, retry_after=3600)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    pretix_server.fail_next(503, retry_after=later, method="GET")

    client.create_voucher(pretix_event, grant_voucher())
    client.get_voucher(pretix_event, 1)

    assert pretix_sleep.calls[0] == 10.0
    assert 2.0 <= pretix_sleep.calls[1] <= 4.0


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _rfc850(when: datetime) -> str:
    month = _MONTHS[when.month - 1]
    return f"{_LONG_DAYS[when.weekday()]}, {when:%d}-{month}-{when:%y %H:%M:%S} GMT"


def _asctime(when: datetime) -> str:
    return f"{_DAYS[when.weekday()]} {_MONTHS[when.month - 1]} {when.day:>2} {when:%H:%M:%S %Y}"


IN_20_S = "in 20 s"  # expected: the seconds until a date 20 s ahead (dates have 1 s resolution)
BACKOFF = "backoff"  # expected: Retry-After unreadable, so the first backoff step (0.5-1.0 s)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (lambda at: "7", 7.0),
        (lambda at: "0", 0.0),
        (lambda at: "2.5", 2.5),
        (lambda at: "-3", 0.0),
        (lambda at: format_datetime(at, usegmt=True), IN_20_S),  # IMF-fixdate
        (lambda at: format_datetime(at.replace(tzinfo=None)), IN_20_S),  # "... -0000"
        (lambda at: format_datetime(at.astimezone(timezone(timedelta(hours=2)))), IN_20_S),
        (_rfc850, IN_20_S),
        (_asctime, IN_20_S),
        (lambda at: format_datetime(at - timedelta(hours=1), usegmt=True), 0.0),  # past
        (lambda at: _asctime(at - timedelta(hours=1)), 0.0),
        (lambda at: "soon", BACKOFF),
        (lambda at: "", BACKOFF),
        (lambda at: "nan", BACKOFF),
        (lambda at: "Sun, 99 Foo 2026 25:61:00 GMT", BACKOFF),
    ],
    ids=[
        "seconds", "zero", "fraction", "negative", "imf-fixdate", "minus-0000", "offset",
        "rfc850", "asctime", "past-date", "past-asctime", "garbage", "empty", "nan", "bad-date",
    ],
)  # fmt: skip
def test_retry_after_every_form(
    pretix_client: PretixClient,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    header: Callable[[datetime], str],
    expected: float | str,
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    pretix_server.fail_next(503, retry_after=header(at))

    pretix_client.create_voucher(PYCON_2026, grant_voucher())

    [wait] = pretix_sleep.calls
    if expected == IN_20_S:
        assert 17.0 <= wait <= 20.0
    elif expected == BACKOFF:
        assert 0.5 <= wait <= 1.0
    else:
        assert wait == expected
    assert [w.status for w in pretix_server.writes()] == [503, 201]


def test_backoff_grows_and_gives_up_after_max_attempts(
    make_pretix_client: PretixClientFactory,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    pretix_event: EventRef,
) -> None:
    client = make_pretix_client(max_attempts=4)
    pretix_server.fail_next(500, times=4)

    with pytest.raises(PretixUnavailable) as raised:
        client.create_voucher(pretix_event, grant_voucher())

    assert raised.value.status_code == 500
    assert "after 4 attempt(s)" in str(raised.value)
    assert pretix_server.count("POST") == 4
    assert len({w.idempotency_key for w in pretix_server.writes()}) == 1
    assert len(pretix_sleep.calls) == 3
    for step, waited in enumerate(pretix_sleep.calls):
        assert 0.5 * 2**step <= waited <= 0.5 * 2**step + 0.5
    assert pretix_server.all_vouchers() == []


def test_a_409_that_stays_is_a_conflict(
    pretix_client: PretixClient,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    pretix_event: EventRef,
) -> None:
    pretix_server.fail_next(409, times=5)

    with pytest.raises(PretixConflict) as raised:
        pretix_client.create_voucher(pretix_event, grant_voucher())

    assert raised.value.status_code == 409
    assert "too busy" in str(raised.value)
    assert pretix_sleep.calls == [5.0] * 4
    assert pretix_server.count("POST") == 5


def test_a_timeout_is_retried_and_creates_one_voucher(
    make_pretix_client: PretixClientFactory, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    client = make_pretix_client(timeout=0.2)
    pretix_server.hang_next(30, method="POST")  # stop() ends the hang after the test

    voucher = client.create_voucher(pretix_event, grant_voucher())

    posts = pretix_server.writes()
    assert len(posts) == 2
    assert posts[0].status is None and posts[1].status == 201
    assert posts[0].idempotency_key == posts[1].idempotency_key
    assert [v["id"] for v in pretix_server.all_vouchers()] == [voucher.id]


def test_a_timeout_while_pretix_works_ends_in_the_stored_answer(
    make_pretix_client: PretixClientFactory, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    """The retry meets 409 "concurrent request" until pretix finishes, then gets a replay."""
    key = "create:slow"

    def wait_for_pretix(seconds: float) -> None:
        waits.append(seconds)
        while pretix_server.in_flight(key):  # a real client sleeps `seconds`; here, until done
            time.sleep(0.01)

    waits: list[float] = []
    client = make_pretix_client(timeout=0.2, sleep=wait_for_pretix)
    pretix_server.hang_next(0.5, method="POST", while_processing=True)

    voucher = client.create_voucher(pretix_event, grant_voucher(), idempotency_key=key)

    statuses = [(w.status, w.replayed) for w in pretix_server.writes()]
    assert statuses[0] == (201, False)  # pretix finished; the client had given up
    assert statuses[-1] == (201, True)
    assert all(status == 409 for status, _ in statuses[1:-1])
    assert 0.5 <= waits[0] <= 1.0  # after the timeout: backoff
    assert all(w == 5.0 for w in waits[1:])  # after each 409: its Retry-After
    assert [v["id"] for v in pretix_server.all_vouchers()] == [voucher.id]


def test_a_dropped_connection_after_pretix_acted_replays_the_same_voucher(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.drop_after_processing_next(method="POST")

    voucher = pretix_client.create_voucher(pretix_event, grant_voucher())

    first, second = pretix_server.writes()
    assert first.dropped and not first.replayed
    assert second.replayed and second.status == 201
    assert first.idempotency_key == second.idempotency_key
    assert [v["id"] for v in pretix_server.all_vouchers()] == [voucher.id]


def test_connection_refused_is_unavailable_after_every_attempt(pretix_event: EventRef) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    sleep = RecordingSleep()
    with (
        PretixClient(
            base_url=f"http://127.0.0.1:{port}", token="t", max_attempts=3, sleep=sleep
        ) as client,
        pytest.raises(PretixUnavailable) as raised,
    ):
        client.get_event(pretix_event)
    assert raised.value.status_code is None
    assert "ConnectError" in str(raised.value)
    assert isinstance(raised.value.__cause__, Exception)
    assert len(sleep.calls) == 2


def test_400_401_403_404_are_never_retried(
    pretix_client: PretixClient,
    pretix_server: FakePretix,
    pretix_sleep: RecordingSleep,
    pretix_event: EventRef,
) -> None:
    for status, error in [
        (400, PretixValidationError),
        (401, PretixAuthError),
        (403, PretixAuthError),
        (404, PretixNotFound),
    ]:
        pretix_server.fail_next(status)
        with pytest.raises(error):
            pretix_client.get_voucher(pretix_event, 1)
    assert pretix_server.count("GET") == 4
    assert pretix_sleep.calls == []


# --- idempotency keys ---------------------------------------------------------------------------


def test_the_same_key_twice_replays_the_same_voucher(
    pretix_client: PretixClient, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    request = grant_voucher()
    key = _key(payload=request.payload())

    first = pretix_client.create_voucher(pretix_event, request, idempotency_key=key)
    second = pretix_client.create_voucher(pretix_event, request, idempotency_key=key)

    assert first == second
    assert len(pretix_server.all_vouchers()) == 1
    assert [w.replayed for w in pretix_server.writes()] == [False, True]


def _key(
    subject: str = "pycon2026:v42:g0",
    payload: object = None,
    *,
    method: str = "POST",
    path: str = "/api/v1/organizers/pycon/events/pycon2026/vouchers/",
    nonce: str = "n1",
) -> str:
    return make_idempotency_key(
        method=method,
        path=path,
        scope=KeyScope(subject=subject, nonce=nonce),
        payload=grant_voucher().payload() if payload is None else payload,
    )


def test_make_idempotency_key_is_deterministic_and_distinct() -> None:
    payload = grant_voucher().payload()
    key = _key(payload=payload)

    assert key == _key(payload=dict(payload))
    assert key.startswith("post:pycon2026:v42:g0:")
    assert len(key) <= 128
    others = {
        _key("pycon2026:v43:g0", payload),
        _key(payload=payload, method="PATCH"),
        _key(payload=payload, path="/api/v1/organizers/pycon/events/pycon2026/vouchers/7/"),
        _key(payload=payload, nonce="n2"),
        _key(payload=payload | {"max_usages": 2}),
        _key(payload=grant_voucher("GRANT-0002").payload()),
    }
    assert key not in others and len(others) == 6


def test_long_or_odd_subjects_stay_short_ascii_and_unique() -> None:
    key_a = _key("x" * 200 + "a", {})
    key_b = _key("x" * 200 + "b", {})
    odd = _key("zoë rossi@example.org\n", {})

    assert len(key_a) == len(key_b) == 128
    assert key_a != key_b
    assert odd.isascii() and " " not in odd and "\n" not in odd


# --- the models refuse what pretix would silently accept ------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"value": Decimal("-1")}, "greater than or equal to 0"),
        ({"price_mode": "percent", "value": Decimal("150")}, "percent value cannot exceed 100"),
        ({"max_usages": 0}, "greater than or equal to 1"),
        ({"item": TICKET_ITEM, "quota": GRANT_QUOTA}, "not both"),
        ({"value": None}, "value is required"),
        ({"value": Decimal("0.001")}, "decimal places"),
        ({"code": "ABC"}, "at least 5 characters"),
        ({"valid_until": datetime(2030, 1, 1)}, "timezone"),  # noqa: DTZ001 - the point
        ({"price_mode": "free"}, "price_mode"),
        ({"redeemed": 1}, "Extra inputs are not permitted"),
    ],
)
def test_voucher_create_refuses(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VoucherCreate.model_validate(GRANT_FIELDS | fields)


def test_voucher_create_payload_format() -> None:
    payload = grant_voucher(
        "  grant-ab12 ",
        price_mode="percent",
        value=Decimal("25"),
        valid_until=datetime(2030, 5, 31, 21, 59, tzinfo=UTC),
        tag=None,
        comment=None,
    ).payload()

    assert payload == {
        "code": "GRANT-AB12",
        "max_usages": 1,
        "price_mode": "percent",
        "value": "25.00",
        "quota": 1,
        "valid_until": "2030-05-31T21:59:00Z",
        "block_quota": False,
        "allow_ignore_quota": False,
        "min_usages": 1,
        "all_addons_included": False,
        "all_bundles_included": False,
    }
    assert grant_voucher(price_mode="none", value=None).payload()["price_mode"] == "none"


def test_voucher_update_refuses_and_sends_only_what_was_set() -> None:
    assert VoucherUpdate().payload() == {}
    assert VoucherUpdate(valid_until=None, code="new-code").payload() == {
        "valid_until": None,
        "code": "NEW-CODE",
    }
    for fields in [
        {"value": Decimal("-0.01")},
        {"max_usages": 0},
        {"price_mode": "percent", "value": Decimal("100.01")},
        {"item": 1, "quota": 2},
        {"max_usages": None},
        {"price_mode": "set", "value": None},
        {"redeemed": 0},
    ]:
        with pytest.raises(ValidationError):
            VoucherUpdate.model_validate(fields)


def test_an_unreadable_answer_is_a_pretix_error(
    make_pretix_client: PretixClientFactory, pretix_server: FakePretix, pretix_event: EventRef
) -> None:
    pretix_server.seed_voucher(id=1, code="ODD-PRICE", price_mode="none")
    pretix_server.fail_next(200, body={"id": "not a number"}, method="GET")

    with pytest.raises(PretixError, match="cannot read"):
        make_pretix_client().get_voucher(pretix_event, 1)
