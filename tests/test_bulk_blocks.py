"""The bulk issuance builders on their output alone: no Slack, no database."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import replace
from typing import Any

import pytest

from bot.slack.blocks import (
    BULK_APPROVE_ACTION,
    BULK_REJECT_ACTION,
    BULK_RETRY_FAILED_ACTION,
    MAX_BLOCKS,
    TEXT_LIMIT,
    BulkCard,
    BulkCounts,
    BulkGrantee,
    BulkPhase,
    BulkReport,
    Message,
    approvers_mention,
    bulk_card_message,
    bulk_preview_csv,
    bulk_summary_message,
    progress_bar,
    wants_csv,
)

EXPIRES = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
NASTY = "<!channel> & Co"


def grantees(count: int, branch: str = "new", *, name: str = "Ada Yilmaz") -> list[BulkGrantee]:
    return [
        BulkGrantee(f"{5000 + i}", f"{name} {i}", f"ada{i}@example.org", branch)
        for i in range(count)
    ]


def card(**fields: Any) -> BulkCard:
    values: dict[str, Any] = {
        "request_id": 12,
        "conference": "pycon2026",
        "conference_name": "PyCon Italia 2026",
        "requested_by": "U0STAFF1",
        "expires_at": EXPIRES,
        "branches": {"new": 3, "co_speaker_upgrade": 1, "speaker": 2, "held": 1},
        "grantees": [
            *grantees(3),
            BulkGrantee("6001", "Bruno Jensen", "bruno@example.org", "co_speaker_upgrade"),
            *grantees(2, "speaker", name="Sara Speaker"),
            BulkGrantee("7001", "Joana Marino", "joana@example.org", "held"),
        ],
        "approvers": "<!subteam^S0STAFF>",
    }
    values.update(fields)
    return BulkCard(**values)


def within_limits(message: Message) -> None:
    assert message.text
    assert len(message.blocks) <= MAX_BLOCKS
    for block in message.blocks:
        text = block.get("text")
        if isinstance(text, dict):
            assert len(text["text"]) <= TEXT_LIMIT
        for element in block.get("elements", []):
            if element.get("type") == "mrkdwn":
                assert len(element["text"]) <= TEXT_LIMIT


def buttons(message: Message) -> list[dict[str, Any]]:
    return [
        element
        for block in message.blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def shown(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False)


def test_preview_counts_branches_names_the_asker_and_the_approvers_and_has_both_buttons() -> None:
    message = bulk_card_message(card())
    within_limits(message)
    text = shown(message)
    assert "*3* new vouchers" in text and "*1* co-speaker upgrade" in text
    assert "2 have a speaker voucher" in text and "1 held for staff" in text
    assert "<@U0STAFF1>" in text and "<!subteam^S0STAFF>" in text
    assert "Ada Yilmaz 0" in text and "Bruno Jensen" in text
    assert "Sara Speaker" not in text  # skipped grantees are counted, not named
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [
        (BULK_APPROVE_ACTION, "12"),
        (BULK_REJECT_ACTION, "12"),
    ]
    assert "4 due" in message.text and "waiting for approval" in message.text


def test_nothing_due_says_so_without_buttons() -> None:
    message = bulk_card_message(
        card(branches={"already_done": 4}, grantees=grantees(4, "already_done"))
    )
    within_limits(message)
    assert buttons(message) == []
    assert "Nothing is due" in shown(message) and "4 already done" in shown(message)
    empty = bulk_card_message(card(branches={}, grantees=[]))
    assert buttons(empty) == [] and "Nothing is due" in shown(empty)
    # Nothing stored (the asker's own answer): no request number, nobody named.
    unstored = bulk_card_message(
        card(request_id=None, requested_by="", branches={"held": 2}, grantees=[])
    )
    assert "#" not in unstored.text and "asked by" not in shown(unstored)
    assert "2 held for staff" in shown(unstored) and buttons(unstored) == []


@pytest.mark.parametrize(
    ("phase", "words"),
    [
        (BulkPhase.APPROVED, "*Approved* by <@U0STAFF2>"),
        (BulkPhase.REJECTED, "*Rejected* by <@U0STAFF2>"),
        (BulkPhase.EXPIRED, "*Expired*"),
    ],
)
def test_a_decided_or_expired_card_says_who_and_when_and_loses_its_buttons(
    phase: BulkPhase, words: str
) -> None:
    decided = dt.datetime(2026, 12, 2, 10, 42, tzinfo=dt.UTC)
    message = bulk_card_message(card(phase=phase, decided_by="button:U0STAFF2", decided_at=decided))
    within_limits(message)
    assert buttons(message) == []
    assert words in shown(message)
    when = decided if phase is not BulkPhase.EXPIRED else EXPIRES
    assert f"<!date^{int(when.timestamp())}^" in shown(message)
    assert phase.value in message.text


def test_progress_shows_a_bar_and_every_count() -> None:
    counts = BulkCounts(
        total=500, handled=250, created=200, upgraded=30, emailed=220, skipped=15, failed=5
    )
    message = bulk_card_message(
        card(phase=BulkPhase.RUNNING, decided_by="U0STAFF2", progress=counts)
    )
    within_limits(message)
    text = shown(message)
    assert progress_bar(250, 500) in text and "250 of 500" in text
    for words in ("created 200", "upgraded 30", "emailed 220", "skipped 15", "failed 5"):
        assert words in text
    assert buttons(message) == []
    done = bulk_card_message(card(phase=BulkPhase.DONE, progress=replace(counts, handled=500)))
    assert "*Done*" in shown(done) and "summary is in this thread" in shown(done)


def test_progress_bar_from_empty_to_full() -> None:
    assert progress_bar(0, 10) == "░" * 20 + " 0 %"
    assert progress_bar(5, 10) == "▓" * 10 + "░" * 10 + " 50 %"
    assert progress_bar(10, 10) == "▓" * 20 + " 100 %"
    assert progress_bar(12, 10) == "▓" * 20 + " 100 %"
    assert progress_bar(0, 0) == "▓" * 20 + " 100 %"


def test_a_preview_for_600_grantees_stays_within_slack_limits_and_wants_the_csv() -> None:
    many = grantees(600, name=NASTY * 20)
    big = card(branches={"new": 600}, grantees=many)
    message = bulk_card_message(big)
    within_limits(message)
    text = shown(message)
    assert "and 585 more" in text and "CSV file in this thread" in text
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; Co" in text
    assert wants_csv(big) and not wants_csv(card())
    rows = list(csv.DictReader(io.StringIO(bulk_preview_csv(many))))
    assert len(rows) == 600
    assert rows[599]["grant_id"] == "5599" and rows[0]["branch"] == "new"
    assert rows[0]["full_name"] == NASTY * 20 + " 0"  # the file carries data as it is, unescaped


def test_csv_cells_never_start_a_formula() -> None:
    rows = list(
        csv.DictReader(
            io.StringIO(bulk_preview_csv([BulkGrantee("1", "=HYPERLINK(1)", "@x", "held")]))
        )
    )
    assert rows[0]["full_name"] == "'=HYPERLINK(1)" and rows[0]["email"] == "'@x"


def test_summary_lists_failures_with_reasons_and_offers_retry_failed() -> None:
    failed = [
        replace(g, detail="Pretix refused the row: quota is full " + "x" * 300)
        for g in grantees(80, name=NASTY)
    ]
    changed = [replace(g, detail="refused since the preview") for g in grantees(3, name="Changed")]
    report = BulkReport(
        request_id=12,
        conference_name="PyCon Italia 2026",
        counts=BulkCounts(total=600, handled=600, created=517, failed=80, skipped=3),
        seconds=4.25,
        failed=failed,
        changed=changed,
    )
    message = bulk_summary_message(report)
    within_limits(message)
    text = shown(message)
    assert "Failed (80)" in text and "quota is full" in text and "more." in text
    assert "Changed since the preview" in text and "refused since the preview" in text
    assert "<!channel>" not in text
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [
        (BULK_RETRY_FAILED_ACTION, "12")
    ]
    assert "4.2 s" in message.text or "4.3 s" in message.text


def test_summary_without_failures_has_no_retry_button() -> None:
    report = BulkReport(12, "PyCon", BulkCounts(total=3, handled=3, created=3, emailed=3), 0.5)
    message = bulk_summary_message(report)
    assert buttons(message) == [] and "failed 0" in message.text


def test_approvers_are_the_staff_group_else_the_allow_listed_staff() -> None:
    assert approvers_mention("S0STAFF", ["U1"]) == "<!subteam^S0STAFF>"
    assert approvers_mention(None, ["U0AAA", "U0BBB", "not-an-id"]) == "<@U0AAA> <@U0BBB>"
    assert approvers_mention(None, []) == ""
