"""Voucher API scenarios through PretixClient, run against the real pretix and FakePretix.

Each scenario asserts what the client makes of the answers (on both servers), and
`against_both` then compares the two wire transcripts: statuses, the compared headers and the
bodies as text, with ids, timestamps and the origin normalised.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from bot.pretix import (
    CODE_TAKEN,
    PretixAnswerMismatch,
    PretixAuthError,
    PretixBatchError,
    PretixError,
    PretixNotFound,
    PretixUnavailable,
    PretixValidationError,
    PretixVoucherUsed,
    Voucher,
    VoucherCreate,
    VoucherUpdate,
)
from tests.contract.targets import ISO_UTC, Scenario, Target

pytestmark = pytest.mark.contract

RunBoth = Callable[[Scenario], None]
GRANT: dict[str, Any] = {
    "price_mode": "set",
    "value": Decimal("0.00"),
    "tag": "grant",
    "comment": "Financial aid grant",
}
CONCURRENT_KEY_BODY = b'{"detail": "Concurrent request with idempotency key."}'
BATCH_ROWS = 200  # enough for the real server to be busy with it for over a second


def grant(t: Target, name: str, **fields: Any) -> VoucherCreate:
    """A grant voucher of this run, validated as the bot would send it."""
    return VoucherCreate.model_validate({"code": t.code(name), "quota": t.quota, **GRANT, **fields})


def unchecked(**fields: Any) -> VoucherCreate:
    """A voucher sent exactly as given (the client's own checks skipped): lower-case codes etc."""
    return VoucherCreate.model_construct(**fields)


def codes(vouchers: list[Voucher]) -> list[str]:
    return [v.code for v in vouchers]


def test_create(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        until = datetime(2030, 5, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=2)))
        made = client.create_voucher(t.event, grant(t, "create", max_usages=2, valid_until=until))
        answer = t.last()
        assert (answer.status, answer.headers.get("location")) == (201, None)
        assert made.code == t.code("CREATE") and made.max_usages == 2 and made.redeemed == 0
        assert (made.price_mode, made.quota, made.item) == ("set", t.quota, None)
        assert made.value == Decimal("0.00")
        assert made.valid_until == until
        assert json.loads(answer.body)["valid_until"] == "2030-05-31T21:59:59Z"

        assert client.get_voucher(t.event, made.id) == made
        assert t.last().body == answer.body  # GET sends the same representation as the 201

        lowered = unchecked(code=t.code("lower").lower(), quota=t.quota)
        lower = client.create_voucher(t.event, lowered)
        assert lower.code == t.code("LOWER")  # stored upper-cased
        assert (lower.tag, lower.comment, lower.price_mode, lower.value) == ("", "", "none", None)

        # price_mode "none" keeps a value that was given: pretix does not clear it.
        kept = client.create_voucher(t.event, grant(t, "none", price_mode="none", value=10))
        assert (kept.price_mode, kept.value) == ("none", Decimal("10.00"))

        refusals: list[tuple[VoucherCreate, dict[str, list[str]]]] = [
            (unchecked(code="AB"), {"code": ["Ensure this field has at least 5 characters."]}),
            (
                unchecked(code=t.code("both"), item=t.item, quota=t.quota),
                {"non_field_errors": [
                    "You cannot select a quota and a specific product at the same time."
                ]},
            ),
            (
                unchecked(code=t.code("item"), item=987654),
                {"item": ['Invalid pk "987654" - object does not exist.']},
            ),
            (
                unchecked(code=t.code("mode"), price_mode="free", quota=t.quota),
                {"price_mode": ['"free" is not a valid choice.']},
            ),
        ]  # fmt: skip
        for voucher, errors in refusals:
            with pytest.raises(PretixValidationError) as refused:
                client.create_voucher(t.event, voucher)
            assert refused.value.errors == errors

    against_both(scenario)


def test_duplicate_code_is_refused_whatever_its_case(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        first = client.create_voucher(t.event, grant(t, "dup"))
        with pytest.raises(PretixValidationError) as refused:
            client.create_voucher(t.event, unchecked(code=t.code("dup").lower(), quota=t.quota))
        assert refused.value.code_taken
        assert refused.value.errors == {"non_field_errors": [CODE_TAKEN]}

        other = client.create_voucher(t.event, grant(t, "dup-other"))
        with pytest.raises(PretixValidationError) as renamed:
            client.update_voucher(
                t.event, other.id, VoucherUpdate.model_construct(code=t.code("dup").lower())
            )
        assert renamed.value.code_taken
        # Its own code, in another case, is no clash.
        same = VoucherUpdate.model_construct(code=t.code("dup-other").lower())
        assert client.update_voucher(t.event, other.id, same).code == other.code

        assert client.find_voucher_by_code(t.event, t.code("dup").lower()) == first

    against_both(scenario)


def test_batch_create_is_all_or_nothing_with_aligned_row_errors(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        client.create_voucher(t.event, grant(t, "taken"))
        tag = f"batch-{t.run}"
        rows = [grant(t, "b1", tag=tag), grant(t, "taken", tag=tag), grant(t, "b2", tag=tag)]
        with pytest.raises(PretixBatchError) as refused:
            client.batch_create_vouchers(t.event, rows)
        assert refused.value.row_errors == [{}, {"non_field_errors": [CODE_TAKEN]}, {}]
        assert refused.value.failed_rows() == refused.value.code_taken_rows() == [1]
        assert list(client.iter_vouchers(t.event, tag=tag)) == []  # nothing was created

        twice = [grant(t, "d1", tag=tag), grant(t, "d2", tag=tag), grant(t, "d1", tag=tag)]
        with pytest.raises(PretixBatchError) as duplicate:
            client.batch_create_vouchers(t.event, twice)
        assert duplicate.value.row_errors == [
            {}, {}, {"code": ["Duplicate voucher code in request."]}
        ]  # fmt: skip
        assert duplicate.value.code_taken_rows() == []

        # pretix compares the codes as sent: the same code in two cases gets past that check
        # and breaks the unique index on saving, a 500. (The client sends codes upper-cased.)
        cases = [grant(t, "d3", tag=tag), unchecked(code=t.code("d3").lower(), tag=tag)]
        with pytest.raises(PretixUnavailable) as server_error:
            client.batch_create_vouchers(t.event, cases)
        assert server_error.value.status_code == 500

        # Field errors come first: with one, the duplicate in the request is not reported.
        mixed = [grant(t, "e1", tag=tag), grant(t, "e1", tag=tag), unchecked(code="AB")]
        with pytest.raises(PretixBatchError) as field_error:
            client.batch_create_vouchers(t.event, mixed)
        assert field_error.value.row_errors == [
            {}, {}, {"code": ["Ensure this field has at least 5 characters."]}
        ]  # fmt: skip
        assert list(client.iter_vouchers(t.event, tag=tag)) == []

        # The bot's way on: send again without the refused rows.
        made = client.batch_create_vouchers(t.event, [rows[0], rows[2]])
        assert codes(made) == [t.code("B1"), t.code("B2")]
        assert list(client.iter_vouchers(t.event, tag=tag)) == made

    against_both(scenario)


def test_patch(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        voucher = client.create_voucher(t.event, grant(t, "patch"))
        until = datetime(2031, 1, 1, tzinfo=UTC)
        changes = VoucherUpdate(
            price_mode="percent",
            value=Decimal("50"),
            tag="grant-changed",
            comment=None,
            max_usages=3,
            valid_until=until,
        )
        changed = client.update_voucher(t.event, voucher.id, changes)
        assert (changed.price_mode, changed.tag) == ("percent", "grant-changed")
        assert changed.value == Decimal("50.00")
        assert (changed.comment, changed.max_usages, changed.valid_until) == ("", 3, until)
        assert changed.model_dump(exclude={*changes.model_fields_set}) == voucher.model_dump(
            exclude={*changes.model_fields_set}
        )

        # Back to "none": pretix keeps the value it had.
        plain = client.update_voucher(t.event, voucher.id, VoucherUpdate(price_mode="none"))
        assert (plain.price_mode, plain.value) == ("none", Decimal("50.00"))
        cleared = client.update_voucher(t.event, voucher.id, VoucherUpdate(valid_until=None))
        assert cleared.valid_until is None

        with pytest.raises(PretixValidationError) as refused:
            client.update_voucher(t.event, voucher.id, VoucherUpdate(item=t.item))
        assert refused.value.messages() == [
            "You cannot select a quota and a specific product at the same time."
        ]

        gone = client.create_voucher(t.event, grant(t, "patch-gone"))
        client.delete_voucher(t.event, gone.id)
        with pytest.raises(PretixNotFound):
            client.update_voucher(t.event, gone.id, VoucherUpdate(tag="x"))

    against_both(scenario)


def test_delete_redeemed_unused_and_gone(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        used = client.create_voucher(t.event, grant(t, "used", max_usages=3))
        t.redeem(used, 2)
        assert client.get_voucher(t.event, used.id).redeemed == 2

        with pytest.raises(PretixVoucherUsed) as refused:
            client.delete_voucher(t.event, used.id)
        assert refused.value.status_code == 403
        with pytest.raises(PretixValidationError) as lowered:
            client.update_voucher(t.event, used.id, VoucherUpdate(max_usages=1))
        assert lowered.value.messages() == [
            "This voucher has already been redeemed 2 times. You cannot reduce the maximum "
            "number of usages below this number."
        ]
        assert client.update_voucher(t.event, used.id, VoucherUpdate(max_usages=2)).max_usages == 2

        unused = client.create_voucher(t.event, grant(t, "unused"))
        client.delete_voucher(t.event, unused.id)
        assert t.last().status == 204 and t.last().body == b""
        with pytest.raises(PretixNotFound, match="No Voucher matches the given query"):
            client.delete_voucher(t.event, unused.id)
        with pytest.raises(PretixNotFound):
            client.get_voucher(t.event, unused.id)

    against_both(scenario)


def test_list_filters(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        tag = f"Grant-{t.run}"
        a, b, c, d = client.batch_create_vouchers(
            t.event,
            [
                grant(t, "fa", tag=tag, comment="first"),
                grant(t, "fb", tag=tag.lower(), comment="second"),
                grant(t, "fc", tag="other", comment=f"a needle-{t.run.lower()} here"),
                grant(t, "fd", tag=f"{tag}-x", comment="fourth", max_usages=2),
            ],
        )
        assert client.find_voucher_by_code(t.event, t.code("fa").lower()) == a
        assert client.find_voucher_by_code(t.event, t.code("f")) is None  # exact, not a prefix
        assert list(client.iter_vouchers(t.event, code=t.code("fb").lower())) == [b]
        assert list(client.iter_vouchers(t.event, tag=tag)) == [a]  # case-sensitive, exact
        assert list(client.iter_vouchers(t.event, tag=tag.lower())) == [b]
        assert list(client.iter_vouchers(t.event, tag=tag[:-1])) == []
        assert list(client.iter_vouchers(t.event, search=t.run.lower())) == [a, b, c, d]
        assert list(client.iter_vouchers(t.event, search=f"NEEDLE-{t.run}")) == [c]
        assert list(client.iter_vouchers(t.event, search=f"grant-{t.run}".upper())) == [a, b, d]
        assert list(client.iter_vouchers(t.event, search=t.run, max_usages=2)) == [d]
        assert list(client.iter_vouchers(t.event, search=t.run, ordering="-code")) == [d, c, b, a]
        assert list(client.iter_vouchers(t.event, tag=tag, unknown_filter="x")) == [a]

    against_both(scenario)


def test_pagination(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        tag = f"page-{t.run}"
        made = client.batch_create_vouchers(
            t.event, [grant(t, f"p{i:02d}", tag=tag) for i in range(53)]
        )
        start = len(t.exchanges)
        assert list(client.iter_vouchers(t.event, tag=tag)) == made  # by id: creation order
        first, second = (json.loads(ex.body) for ex in t.exchanges[start:])
        assert (first["count"], len(first["results"]), len(second["results"])) == (53, 50, 3)
        assert first["next"] == f"{t.base_url}/api/v1/{t.event.path}vouchers/?page=2&tag={tag}"
        assert second["previous"] == f"{t.base_url}/api/v1/{t.event.path}vouchers/?tag={tag}"
        assert (first["previous"], second["next"]) == (None, None)

        start = len(t.exchanges)
        assert list(client.iter_vouchers(t.event, tag=tag, page_size=20)) == made
        assert len(t.exchanges) - start == 3
        start = len(t.exchanges)
        assert list(client.iter_vouchers(t.event, tag=tag, page_size=500)) == made
        assert len(t.exchanges) - start == 2  # page_size can only lower the 50

        assert list(client.iter_vouchers(t.event, tag=tag, page=2)) == made[50:]
        with pytest.raises(PretixNotFound, match="Invalid page"):
            list(client.iter_vouchers(t.event, tag=tag, page=3))

    against_both(scenario)


def test_idempotency_replays_a_201_for_any_path_and_body_of_the_same_token(
    against_both: RunBoth,
) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        key = t.key("created")
        made = client.create_voucher(t.event, grant(t, "idem-a"), idempotency_key=key)
        original = t.last()
        # Pretix replays the stored answer to another request; the client sees that the
        # answer is not about the voucher it asked for and refuses it.
        with pytest.raises(PretixAnswerMismatch, match="not the one asked for"):
            client.create_voucher(t.event, grant(t, "idem-b", tag="x"), idempotency_key=key)
        assert (t.last().status, t.last().body) == (original.status, original.body)
        assert client.create_voucher(t.event, grant(t, "idem-a"), idempotency_key=key) == made

        # Another path, another method: still the stored 201.
        client.delete_voucher(t.event, made.id, idempotency_key=key)
        assert (t.last().status, t.last().body) == (201, original.body)
        with pytest.raises(PretixError, match="not the JSON list"):
            client.batch_create_vouchers(t.event, [grant(t, "idem-c")], idempotency_key=key)
        assert client.get_voucher(t.event, made.id) == made  # not deleted
        for name in ("idem-b", "idem-c"):
            assert client.find_voucher_by_code(t.event, t.code(name)) is None

        # The key belongs to the token: another token's request with it is its own.
        reader = t.client(token=t.readonly_token)
        with pytest.raises(PretixAuthError) as refused:
            reader.create_voucher(t.event, grant(t, "idem-d"), idempotency_key=key)
        assert refused.value.permission_denied

        # A DELETE's 204 is replayed too, instead of the 404 a second delete would get.
        doomed = client.create_voucher(t.event, grant(t, "idem-e"))
        client.delete_voucher(t.event, doomed.id, idempotency_key=t.key("delete"))
        client.delete_voucher(t.event, doomed.id, idempotency_key=t.key("delete"))
        assert [ex.status for ex in t.exchanges[-2:]] == [204, 204]

    against_both(scenario)


def test_idempotency_replays_a_400_byte_for_byte(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        client = t.client()
        client.create_voucher(t.event, grant(t, "taken"))
        key = t.key("refused")
        with pytest.raises(PretixValidationError) as first:
            client.create_voucher(t.event, grant(t, "taken"), idempotency_key=key)
        refused = t.last()
        # Fixing the request but keeping the key gets the stored refusal again.
        with pytest.raises(PretixValidationError) as again:
            client.create_voucher(t.event, grant(t, "fixed"), idempotency_key=key)
        assert again.value.code_taken and first.value.code_taken
        assert (t.last().status, t.last().body) == (400, refused.body)
        assert client.find_voucher_by_code(t.event, t.code("fixed")) is None

        fixed = client.create_voucher(t.event, grant(t, "fixed"), idempotency_key=t.key("fixed"))
        assert fixed.code == t.code("FIXED")

    against_both(scenario)


def test_same_key_while_the_first_request_runs_gets_409_then_the_replay(
    against_both: RunBoth,
) -> None:
    def scenario(t: Target) -> None:
        tag = f"conc-{t.run}"
        rows = [grant(t, f"c{i:03d}", tag=tag) for i in range(BATCH_ROWS)]
        key = t.key("concurrent")
        results: list[list[Voucher]] = []

        def first_request() -> None:
            results.append(t.client().batch_create_vouchers(t.event, rows, idempotency_key=key))

        t.slow_next_batch()
        first = threading.Thread(target=first_request, name=f"contract-{t.name}")
        first.start()
        t.wait_in_flight(key)
        waits: list[float] = []

        def sleep(seconds: float) -> None:  # wait for the first request, not the 5 s asked
            waits.append(seconds)
            first.join(timeout=60)

        retried = t.client(max_attempts=2, sleep=sleep).batch_create_vouchers(
            t.event, rows, idempotency_key=key
        )
        first.join(timeout=60)
        assert not first.is_alive()
        assert waits == [5.0]
        assert results == [retried] and len(retried) == BATCH_ROWS
        conflict, done, replay = t.exchanges[-3:]
        assert (conflict.status, conflict.headers.get("retry-after")) == (409, "5")
        assert conflict.body == CONCURRENT_KEY_BODY  # Django's JsonResponse: note the spaces
        assert (done.status, replay.status, replay.body) == (201, 201, done.body)
        assert len(list(t.client().iter_vouchers(t.event, tag=tag))) == BATCH_ROWS

    against_both(scenario)


def test_timestamps_are_iso_utc(against_both: RunBoth) -> None:
    def scenario(t: Target) -> None:
        made = t.client().create_voucher(t.event, grant(t, "ts"))
        assert made.created is not None
        assert abs(made.created - datetime.now(UTC)) < timedelta(minutes=5)
        created = json.loads(t.last().body)["created"]
        assert re.fullmatch(ISO_UTC, created), created

    against_both(scenario)
