"""FakePretix answers as pretix-api.md says real pretix 2026.8 does, checked with raw httpx."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.pretix_server import CODE_ALPHABET, FakePretix

API = "/api/v1/organizers/pycon/events/pycon2026"
VOUCHERS = f"{API}/vouchers/"
SHARED_VOUCHERS = Path("/work/shared/data/vouchers.json")


@pytest.fixture
def http(pretix_server: FakePretix) -> Iterator[httpx.Client]:
    """A plain HTTP client with the fake's write token."""
    with httpx.Client(
        base_url=pretix_server.url, headers={"Authorization": "Token test-token"}, timeout=5
    ) as client:
        yield client


def post(
    http: httpx.Client, body: object, *, key: str | None = None, path: str = VOUCHERS
) -> httpx.Response:
    headers = {"X-Idempotency-Key": key} if key else {}
    return http.post(path, json=body, headers=headers)


def test_codes_are_upper_cased_and_taken_case_insensitively(http: httpx.Client) -> None:
    created = post(http, {"code": "lower-case-01", "price_mode": "set", "value": "0"})
    again = post(http, {"code": "LOWER-CASE-01"})

    assert created.status_code == 201
    assert "location" not in created.headers
    assert created.json()["code"] == "LOWER-CASE-01"
    assert created.json()["value"] == "0.00"
    assert again.status_code == 400
    assert again.content == b'{"non_field_errors":["A voucher with this code already exists."]}'


def test_a_created_voucher_has_every_documented_field(http: httpx.Client) -> None:
    voucher = post(http, {}).json()

    assert list(voucher) == [
        "id", "created", "code", "max_usages", "redeemed", "min_usages", "valid_until",
        "block_quota", "allow_ignore_quota", "price_mode", "value", "item", "variation",
        "quota", "tag", "comment", "subevent", "show_hidden_items", "seat",
        "all_addons_included", "all_bundles_included", "budget", "budget_used",
    ]  # fmt: skip
    assert len(voucher["code"]) == 16 and set(voucher["code"]) <= set(CODE_ALPHABET)
    assert (voucher["price_mode"], voucher["value"], voucher["budget_used"]) == (
        "none",
        None,
        "0.00",
    )


def test_filters_code_tag_and_search(http: httpx.Client, pretix_server: FakePretix) -> None:
    pretix_server.seed_voucher(code="GRANT-AAAA", tag="grant", comment="Jane Doe")
    pretix_server.seed_voucher(code="GRANT-BBBB", tag="Grant")
    pretix_server.seed_voucher(code="SPEAKER-CC", tag="speaker")

    def codes(**params: str) -> list[str]:
        return [v["code"] for v in http.get(VOUCHERS, params=params).json()["results"]]

    assert codes(code="grant-aaaa") == ["GRANT-AAAA"]
    assert codes(code="GRANT") == []
    assert codes(tag="grant") == ["GRANT-AAAA"]
    assert codes(tag="gra") == []
    assert codes(search="jane") == ["GRANT-AAAA"]
    assert codes(search="grant") == ["GRANT-AAAA", "GRANT-BBBB"]
    assert codes(ordering="-code") == ["SPEAKER-CC", "GRANT-BBBB", "GRANT-AAAA"]
    assert codes(unknown="x") == ["GRANT-AAAA", "GRANT-BBBB", "SPEAKER-CC"]


def test_pagination(http: httpx.Client, pretix_server: FakePretix) -> None:
    for n in range(120):
        pretix_server.seed_voucher(code=f"BULK-{n:04d}")

    first = http.get(VOUCHERS, params={"page_size": 100}).json()
    small = http.get(VOUCHERS, params={"page_size": 7, "page": 2}).json()
    last = http.get(VOUCHERS, params={"page": 3}).json()
    past = http.get(VOUCHERS, params={"page": 4})

    assert (first["count"], len(first["results"]), first["previous"]) == (120, 50, None)
    assert first["next"] == f"{pretix_server.url}{VOUCHERS}?page=2&page_size=100"
    assert [v["code"] for v in small["results"]] == [f"BULK-{n:04d}" for n in range(7, 14)]
    assert small["previous"] == f"{pretix_server.url}{VOUCHERS}?page_size=7"
    assert (len(last["results"]), last["next"]) == (20, None)
    assert past.status_code == 404
    assert past.content == b'{"detail":"Invalid page."}'


def test_a_missing_trailing_slash_redirects_reads_and_deletes_and_is_a_404_for_writes(
    http: httpx.Client, pretix_server: FakePretix
) -> None:
    voucher = pretix_server.seed_voucher(code="KEEP-ME-1")
    listed = http.get(f"{VOUCHERS[:-1]}?tag=x")
    deleted = http.delete(f"{VOUCHERS}{voucher['id']}")
    for answer in (listed, deleted):
        assert answer.status_code == 301
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.content == b""
    assert listed.headers["location"] == f"{VOUCHERS}?tag=x"
    assert deleted.headers["location"] == f"{VOUCHERS}{voucher['id']}/"
    created = post(http, {"code": "NO-SLASH"}, path=VOUCHERS[:-1])
    changed = http.patch(f"{VOUCHERS}{voucher['id']}", json={"tag": "x"})
    unknown = http.get(f"{API}/nothing-here")
    for answer in (created, changed, unknown):
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.text.startswith("<!DOCTYPE html>")
    assert pretix_server.all_vouchers() == [voucher]


def test_authentication_and_permission_answers(pretix_server: FakePretix) -> None:
    pretix_server.read_only_tokens.add("reader")

    def answer(method: str, path: str, authorization: str | None) -> tuple[int, bytes]:
        headers = {"Authorization": authorization} if authorization else {}
        response = httpx.request(method, pretix_server.url + path, headers=headers, json={})
        return response.status_code, response.content

    not_provided = b'{"detail":"Authentication credentials were not provided."}'
    invalid = b'{"detail":"Invalid token."}'
    forbidden = b'{"detail":"You do not have permission to perform this action."}'
    assert answer("GET", VOUCHERS, None) == (401, not_provided)
    assert answer("GET", VOUCHERS, "Token nope") == (401, invalid)
    assert answer("GET", VOUCHERS, "Bearer test-token") == (401, invalid)
    assert answer("GET", VOUCHERS, "Token reader")[0] == 200
    assert answer("POST", VOUCHERS, "Token reader") == (403, forbidden)
    unknown_event = "/api/v1/organizers/pycon/events/nope/vouchers/"
    assert answer("GET", unknown_event, "Token test-token") == (403, forbidden)
    assert answer("GET", "/api/v1/organizers/nope/events/", "Token test-token") == (403, forbidden)
    assert pretix_server.all_vouchers() == []


def test_field_errors(http: httpx.Client) -> None:
    def errors(body: object) -> bytes:
        response = post(http, body)
        assert response.status_code == 400
        return response.content

    assert errors({"price_mode": "free"}) == b'{"price_mode":["\\"free\\" is not a valid choice."]}'
    assert errors({"item": 999}) == b'{"item":["Invalid pk \\"999\\" - object does not exist."]}'
    assert errors({"code": "abc"}) == b'{"code":["Ensure this field has at least 5 characters."]}'
    assert errors({"item": 10, "quota": 1}) == (
        b'{"non_field_errors":["You cannot select a quota and a specific product at the same'
        b' time."]}'
    )
    malformed = http.post(VOUCHERS, content=b"{nope", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["detail"].startswith("JSON parse error - ")


def test_what_pretix_accepts_silently(http: httpx.Client) -> None:
    answer = post(
        http,
        {
            "code": "ODD-ONE-1",
            "price_mode": "set",
            "value": "-5",
            "max_usages": 0,
            "valid_until": "2001-01-01T00:00:00Z",
            "redeemed": 3,
            "colour": "blue",
        },
    )

    assert answer.status_code == 201
    voucher = answer.json()
    assert (voucher["value"], voucher["max_usages"], voucher["redeemed"]) == ("-5.00", 0, 0)
    assert voucher["valid_until"] == "2001-01-01T00:00:00Z"
    assert "colour" not in voucher


def test_patch_and_delete(http: httpx.Client, pretix_server: FakePretix) -> None:
    pretix_server.seed_voucher(id=1, code="FIRST-CODE", max_usages=3)
    pretix_server.seed_voucher(id=2, code="SECOND-CODE")
    pretix_server.redeem(1, 2)

    renamed = http.patch(f"{VOUCHERS}2/", json={"code": "first-code"})
    lowered = http.patch(f"{VOUCHERS}1/", json={"max_usages": 1})
    changed = http.patch(f"{VOUCHERS}2/", json={"tag": "grant", "redeemed": 5})
    used = http.delete(f"{VOUCHERS}1/")
    deleted = http.delete(f"{VOUCHERS}2/")
    again = http.delete(f"{VOUCHERS}2/")

    assert renamed.status_code == 400 and renamed.json()["non_field_errors"] == [
        "A voucher with this code already exists."
    ]
    assert lowered.status_code == 400 and "non_field_errors" in lowered.json()
    assert changed.status_code == 200
    assert (changed.json()["tag"], changed.json()["redeemed"]) == ("grant", 0)
    assert used.status_code == 403
    assert used.content == (
        b'{"detail":"This voucher can not be deleted as it has already been used."}'
    )
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert again.status_code == 404
    assert again.content == b'{"detail":"No Voucher matches the given query."}'


def test_batch_create_is_all_or_nothing(http: httpx.Client, pretix_server: FakePretix) -> None:
    pretix_server.seed_voucher(code="TAKEN-CODE")
    path = f"{VOUCHERS}batch_create/"

    refused = post(http, [{"code": "NEW-00001"}, {"code": "taken-code"}], path=path)
    duplicate = post(http, [{"code": "NEW-00001"}, {"code": "NEW-00001"}], path=path)
    # A duplicate is only looked for once every row is valid...
    mixed = post(http, [{"code": "NEW-00001"}, {"code": "NEW-00001"}, {"code": "AB"}], path=path)
    # ...and compared as sent: the same code in two cases fails on saving, a 500 page.
    cases = post(http, [{"code": "NEW-00001"}, {"code": "new-00001"}], path=path)
    created = post(http, [{"code": "NEW-00002"}, {"code": "NEW-00001"}], path=path)

    assert refused.status_code == 400
    assert refused.content == (
        b'[{},{"non_field_errors":["A voucher with this code already exists."]}]'
    )
    assert duplicate.content == b'[{},{"code":["Duplicate voucher code in request."]}]'
    assert mixed.content == b'[{},{},{"code":["Ensure this field has at least 5 characters."]}]'
    assert cases.status_code == 500
    assert cases.headers["content-type"].startswith("text/html")
    assert created.status_code == 201
    assert [v["code"] for v in created.json()] == ["NEW-00002", "NEW-00001"]
    assert [v["code"] for v in pretix_server.all_vouchers()] == [
        "TAKEN-CODE",
        "NEW-00002",
        "NEW-00001",
    ]


def test_a_stored_400_is_replayed_for_its_key(
    http: httpx.Client, pretix_server: FakePretix
) -> None:
    bad = post(http, {"code": "FIX-ME-01", "price_mode": "free"}, key="k1")
    fixed_same_key = post(http, {"code": "FIX-ME-01", "price_mode": "set"}, key="k1")
    fixed_new_key = post(http, {"code": "FIX-ME-01", "price_mode": "set"}, key="k2")

    assert bad.status_code == fixed_same_key.status_code == 400
    assert fixed_same_key.content == bad.content
    assert fixed_new_key.status_code == 201
    assert [r.replayed for r in pretix_server.writes()] == [False, True, False]


def test_a_key_is_bound_to_the_token_only(http: httpx.Client, pretix_server: FakePretix) -> None:
    first = post(http, {"code": "FIRST-ONE"}, key="shared")
    other_request = http.patch(f"{VOUCHERS}999/", json={}, headers={"X-Idempotency-Key": "shared"})
    pretix_server.tokens.add("second-token")
    other_token = httpx.post(
        pretix_server.url + VOUCHERS,
        json={"code": "SECOND-ONE"},
        headers={"Authorization": "Token second-token", "X-Idempotency-Key": "shared"},
    )

    assert (other_request.status_code, other_request.content) == (201, first.content)
    assert other_token.status_code == 201 and other_token.json()["code"] == "SECOND-ONE"
    assert len(pretix_server.all_vouchers()) == 2


def test_retryable_answers_are_not_stored(http: httpx.Client, pretix_server: FakePretix) -> None:
    pretix_server.fail_next(503)

    failed = post(http, {"code": "RETRY-ME-1"}, key="k")
    retried = post(http, {"code": "RETRY-ME-1"}, key="k")

    assert failed.status_code == 503
    assert retried.status_code == 201
    assert not pretix_server.writes()[-1].replayed


def test_the_same_key_in_flight_is_a_409(http: httpx.Client, pretix_server: FakePretix) -> None:
    pretix_server.hang_next(0.3, while_processing=True)
    answers: list[httpx.Response] = []
    first = threading.Thread(target=lambda: answers.append(post(http, {"code": "SLOW-1"}, key="k")))
    first.start()
    while not pretix_server.in_flight("k"):
        time.sleep(0.005)

    concurrent = post(http, {"code": "SLOW-1"}, key="k")
    first.join()
    replay = post(http, {"code": "SLOW-1"}, key="k")

    assert concurrent.status_code == 409
    assert concurrent.content == b'{"detail": "Concurrent request with idempotency key."}'
    assert concurrent.headers["retry-after"] == "5"
    assert answers[0].status_code == 201
    assert replay.content == answers[0].content
    assert len(pretix_server.all_vouchers()) == 1


def test_busy_answer_and_dropped_connection(http: httpx.Client, pretix_server: FakePretix) -> None:
    pretix_server.fail_next(409)
    busy = post(http, {"code": "BUSY-ONE"})
    pretix_server.drop_after_processing_next()

    with pytest.raises(httpx.RemoteProtocolError):
        post(http, {"code": "DROP-ONE"}, key="d")

    assert busy.content == (
        b'{"detail":"The server was too busy to process your request. Please try again."}'
    )
    assert busy.headers["retry-after"] == "5"
    assert pretix_server.voucher_by_code("drop-one") is not None
    assert post(http, {"code": "DROP-ONE"}, key="d").status_code == 201  # the stored answer


def test_seed_the_shared_vouchers(pretix_server: FakePretix) -> None:
    seeded = pretix_server.seed_vouchers_json(SHARED_VOUCHERS)

    assert [v["id"] for v in seeded] == list(range(1, 16))
    speakers = [v for v in seeded if v["tag"] == "speaker"]
    co_speakers = [v for v in seeded if v["tag"] == "co_speaker"]
    assert len(speakers) == 6 and {(v["price_mode"], v["value"]) for v in speakers} == {
        ("set", "0.00")
    }
    assert len(co_speakers) == 9 and {(v["price_mode"], v["value"]) for v in co_speakers} == {
        ("percent", "25.00")
    }
    assert pretix_server.voucher_by_code(seeded[0]["code"].lower()) == seeded[0]
    assert pretix_server.seed_voucher(code="NEXT-ONE")["id"] == 16


def test_reset_forgets_everything_but_the_events(pretix_server: FakePretix) -> None:
    pretix_server.seed_voucher(code="GONE-SOON")
    pretix_server.fail_next(500)
    pretix_server.reset()

    with httpx.Client(base_url=pretix_server.url) as http:
        answer = http.get(f"{API}/", headers={"Authorization": "Token test-token"})

    assert answer.status_code == 200
    assert pretix_server.all_vouchers() == []
    assert len(pretix_server.requests) == 1
