"""The drift comparison, table-driven, without a database or Pretix."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bot.conferences import ConferenceConfig
from bot.pretix import Voucher
from bot.services.drift import (
    BotRecord,
    DriftKind,
    TermChange,
    compare_vouchers,
    expected_terms,
)
from bot.storage import VoucherState, VoucherType

CONFIG = ConferenceConfig(
    code="pycon2026",
    name="PyCon",
    pretix_organizer="pycon",
    pretix_event="pycon2026",
    pretix_quota=1,
)
TERMS = expected_terms(CONFIG, None)


def voucher(vid: int, code: str, **fields: Any) -> Voucher:
    values: dict[str, Any] = {
        "id": vid,
        "code": code,
        "price_mode": "set",
        "value": Decimal("0.00"),
        "quota": 1,
        "max_usages": 1,
        "tag": "grant",
    }
    values.update(fields)
    return Voucher.model_validate(values)


def record(
    row_id: int,
    code: str,
    pretix_id: int | None,
    *,
    state: VoucherState = VoucherState.CREATED,
    voucher_type: VoucherType = VoucherType.GRANT,
    original_type: VoucherType | None = None,
) -> BotRecord:
    return BotRecord(
        row_id=row_id,
        code=code,
        pretix_voucher_id=pretix_id,
        state=state,
        voucher_type=voucher_type,
        original_type=original_type,
        grant_external_id=f"g{row_id}",
        expected=TERMS,
    )


CASES: list[tuple[str, list[BotRecord], list[Voucher], list[tuple[DriftKind, str]]]] = [
    ("in step", [record(1, "AAAAA1", 11)], [voucher(11, "AAAAA1")], []),
    ("nothing anywhere", [], [], []),
    (
        "unknown grant voucher",
        [],
        [voucher(12, "BBBBB2")],
        [(DriftKind.UNKNOWN, "BBBBB2")],
    ),
    (
        "speaker voucher without the grant tag is not unknown",
        [],
        [voucher(13, "SPEAK1", tag="speaker")],
        [],
    ),
    (
        "a speaker row tagged grant in Pretix is known",
        [record(3, "SPEAK2", 14, voucher_type=VoucherType.SPEAKER)],
        [voucher(14, "SPEAK2")],
        [],
    ),
    ("gone", [record(4, "CCCCC3", 15)], [], [(DriftKind.GONE, "CCCCC3")]),
    (
        "edited value",
        [record(5, "DDDDD4", 16)],
        [voucher(16, "DDDDD4", value=Decimal("10.00"))],
        [(DriftKind.EDITED, "DDDDD4")],
    ),
    (
        "edited quota to item",
        [record(6, "EEEEE5", 17)],
        [voucher(17, "EEEEE5", quota=None, item=10)],
        [(DriftKind.EDITED, "EEEEE5")],
    ),
    (
        "edited max usages and quota bypass",
        [record(7, "FFFFF6", 18)],
        [voucher(18, "FFFFF6", max_usages=5, allow_ignore_quota=True)],
        [(DriftKind.EDITED, "FFFFF6")],
    ),
    (
        "matched by code when the id is not known",
        [record(8, "GGGGG7", None)],
        [voucher(19, "ggggg7")],
        [],
    ),
    (
        "upgraded co-speaker voucher in step",
        [record(9, "COSPK1", 20, original_type=VoucherType.CO_SPEAKER)],
        [voucher(20, "COSPK1")],
        [],
    ),
    (
        "revoked but still in Pretix",
        [record(10, "HHHHH8", 21, state=VoucherState.REVOKED)],
        [voucher(21, "HHHHH8")],
        [(DriftKind.REVOKED_PRESENT, "HHHHH8")],
    ),
    (
        "revoked and gone is fine",
        [record(11, "IIIII9", 22, state=VoucherState.REVOKED)],
        [],
        [],
    ),
    (
        "a row being created is neither gone nor its voucher unknown",
        [record(12, "JJJJJ1", None, state=VoucherState.CREATING)],
        [voucher(23, "JJJJJ1")],
        [],
    ),
    (
        "a failed row is not a grant record, but its voucher is known",
        [record(13, "KKKKK2", 24, state=VoucherState.FAILED)],
        [voucher(24, "KKKKK2")],
        [],
    ),
]


@pytest.mark.parametrize(
    ("records", "vouchers", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_compare_vouchers(
    records: list[BotRecord], vouchers: list[Voucher], expected: list[tuple[DriftKind, str]]
) -> None:
    report = compare_vouchers(conference="pycon2026", records=records, vouchers=vouchers)

    assert [(item.kind, item.code.upper()) for item in report.items] == expected
    assert report.drifted is bool(expected)
    assert (report.summary_line() is None) is not bool(expected)


def test_edited_voucher_names_each_changed_term() -> None:
    report = compare_vouchers(
        conference="pycon2026",
        records=[record(1, "AAAAA1", 11)],
        vouchers=[voucher(11, "AAAAA2", price_mode="percent", value=Decimal("50.00"))],
    )

    [item] = report.items
    assert item.changes == (
        TermChange("price_mode", "set", "percent"),
        TermChange("value", Decimal("0.00"), Decimal("50.00")),
        TermChange("code", "AAAAA1", "AAAAA2"),
    )


def test_redemption_counts_and_summary_line() -> None:
    report = compare_vouchers(
        conference="pycon2026",
        records=[record(1, "AAAAA1", 11), record(2, "BBBBB2", 12), record(3, "CCCCC3", 13)],
        vouchers=[
            voucher(11, "AAAAA1", redeemed=1),
            voucher(12, "BBBBB2"),
            voucher(99, "ZZZZZ9"),
            voucher(98, "YYYYY8"),
        ],
    )

    assert (report.records, report.redeemed, report.not_redeemed) == (3, 1, 1)
    assert report.pretix_grant_vouchers == 4
    assert report.counts() == {DriftKind.UNKNOWN: 2, DriftKind.GONE: 1}
    assert report.summary_line() == (
        "Pretix drift in pycon2026: 2 grant vouchers the bot does not know, "
        "1 voucher gone from Pretix."
    )


def test_expected_terms_follow_the_frozen_request_over_the_configuration() -> None:
    sent = {"price_mode": "set", "value": "0.00", "item": 10, "max_usages": 1, "tag": "grant"}

    terms = expected_terms(CONFIG, sent)

    assert terms["item"] == 10 and terms["quota"] is None
    assert terms["value"] == Decimal("0.00")
    assert terms["allow_ignore_quota"] is False  # not sent: Pretix's default
    assert TERMS["quota"] == 1 and TERMS["allow_ignore_quota"] is False
