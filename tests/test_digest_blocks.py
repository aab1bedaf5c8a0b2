"""The digest's Block Kit message, CSV and terminal text, from typed digests (no database)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import replace
from typing import Any

from bot.digest_text import CSV_COLUMNS, csv_filename, digest_csv, digest_text
from bot.services.digest import (
    Digest,
    DigestGrant,
    HeldGrant,
    PendingConfirmation,
    PretixState,
    RecentConfirmation,
    Redemption,
    RefusedWithVoucher,
    StuckGrant,
    UnredeemedVoucher,
    days_left,
    urgency,
    waiting_order,
)
from bot.services.home import HomeConference, HomePicture
from bot.services.provisioning_rules import Verdict
from bot.slack.blocks import (
    FALLBACK_LIMIT,
    HELD_DISMISS_ACTION,
    HELD_ISSUE_ACTION,
    MAX_BLOCKS,
    RETRY_ACTION,
    REVOKE_ACTION,
    TEXT_LIMIT,
    Message,
    digest_message,
    render_digest,
)
from bot.slack.blocks.home import home_view
from bot.storage import EmailState, VoucherState, VoucherType

NOW = dt.datetime(2026, 5, 3, 7, 0, tzinfo=dt.UTC)


def person(n: int, name: str | None = None) -> DigestGrant:
    return DigestGrant(id=1000 + n, external_id=str(5000 + n), name=name or f"Grantee {n}")


def pending(n: int, deadline: dt.datetime | None, name: str | None = None) -> PendingConfirmation:
    return PendingConfirmation(
        grant=person(n, name),
        reply_sent_at=NOW - dt.timedelta(days=6),
        deadline=deadline,
        days_left=days_left(deadline, NOW),
        urgency=urgency(deadline, NOW),
    )


def redemption(**changes: Any) -> Redemption:
    values: dict[str, Any] = {
        "pretix": PretixState.OK,
        "problem": None,
        "recorded": 0,
        "listed": 0,
        "redeemed": 0,
        "unredeemed": (),
    }
    return Redemption(**(values | changes))


def digest(**changes: Any) -> Digest:
    values: dict[str, Any] = {
        "conference": "pycon2026",
        "conference_name": "PyCon Italia 2026",
        "channel": "C0GRANTS",
        "timezone": "Europe/Rome",
        "generated_at": NOW,
        "local_date": dt.date(2026, 5, 3),
        "waiting": (),
        "stuck": (),
        "held": (),
        "refused": (),
        "recent": (),
        "redemption": redemption(),
    }
    return Digest(**(values | changes))


def stuck(n: int) -> StuckGrant:
    return StuckGrant(
        grant=person(n),
        confirmed_at=NOW - dt.timedelta(days=1),
        reason="failed: Pretix answered 400 (quota: Invalid pk)",
        verdict=Verdict.PROCEED,
        voucher_state=VoucherState.FAILED,
        email_state=EmailState.NOT_DUE,
    )


def held(n: int) -> HeldGrant:
    return HeldGrant(
        grant=person(n),
        confirmed_at=NOW - dt.timedelta(hours=5),
        reason="confirmed from waiting_list, not from waiting_for_confirmation",
    )


def refused(n: int, redeemed: int | None) -> RefusedWithVoucher:
    return RefusedWithVoucher(
        grant=person(n), refused_at=NOW - dt.timedelta(hours=2), code="7KQ4…", redeemed=redeemed
    )


def validate(message: Message) -> None:
    """The shapes and limits Slack accepts for a channel message."""
    assert message.text.strip() and len(message.text) <= FALLBACK_LIMIT
    assert 1 <= len(message.blocks) <= MAX_BLOCKS
    json.dumps(message.as_kwargs())
    for block in message.blocks:
        kind = block["type"]
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 1 <= len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert block["text"]["type"] == "mrkdwn" and block["text"]["verbatim"] is True
            assert 1 <= len(block["text"]["text"]) <= TEXT_LIMIT
            if "accessory" in block:
                check_button(block["accessory"])
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                assert 1 <= len(element["text"]) <= TEXT_LIMIT
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                check_button(button)
        else:
            assert kind == "divider", kind


def check_button(button: dict[str, Any]) -> None:
    assert button["type"] == "button"
    assert 1 <= len(button["text"]["text"]) <= 75
    assert button["action_id"] and isinstance(button["value"], str)
    assert button.get("style", "primary") in {"primary", "danger"}


def buttons(message: Message) -> list[tuple[str, str]]:
    found = []
    for block in message.blocks:
        if "accessory" in block:
            found.append((block["accessory"]["action_id"], block["accessory"]["value"]))
        if block["type"] == "actions":
            found += [(b["action_id"], b["value"]) for b in block["elements"]]
    return found


def shown(message: Message) -> str:
    texts = []
    for block in message.blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    return "\n".join(texts)


def test_300_pending_grantees_stay_inside_slacks_limits_and_want_the_csv() -> None:
    waiting = tuple(
        sorted(
            (pending(n, NOW + dt.timedelta(hours=n - 20)) for n in range(300)), key=waiting_order
        )
    )
    big = digest(
        waiting=waiting,
        stuck=tuple(stuck(400 + n) for n in range(40)),
        held=tuple(held(500 + n) for n in range(40)),
        refused=tuple(refused(600 + n, None) for n in range(40)),
        recent=tuple(
            RecentConfirmation(
                grant=person(700 + n),
                confirmed_at=NOW - dt.timedelta(minutes=n),
                voucher_type=VoucherType.GRANT,
                voucher_state=VoucherState.CREATED,
                code="ABCD…",
                email_state=EmailState.SENT,
                held=False,
            )
            for n in range(200)
        ),
        redemption=redemption(
            listed=500,
            recorded=500,
            redeemed=10,
            unredeemed=tuple(
                UnredeemedVoucher(grant=person(800 + n), code="WXYZ…", emailed_at=NOW)
                for n in range(490)
            ),
        ),
    )

    rendering = render_digest(big)

    validate(rendering.message)
    assert rendering.cut
    text = shown(rendering.message)
    assert "more (every line is in the CSV file in this thread)" in text
    assert "Waiting for confirmation* (300)" in text
    shown_waiting = text.count("approval email")
    assert f"…and {300 - shown_waiting} more" in text
    rows = list(csv.reader(io.StringIO(digest_csv(big))))
    assert tuple(rows[0]) == CSV_COLUMNS
    sections = [row[0] for row in rows[1:]]
    assert sections.count("waiting") == 300
    assert sections.count("stuck") == sections.count("held") == sections.count("refused") == 40
    assert sections.count("confirmed") == 200 and sections.count("not_redeemed") == 490
    assert csv_filename(big) == "digest-pycon2026-2026-05-03.csv"


def test_overdue_and_due_soon_come_first_with_a_mark() -> None:
    items = [
        pending(1, NOW + dt.timedelta(days=5), "Later"),
        pending(2, None, "Open"),
        pending(3, NOW + dt.timedelta(hours=20), "Soon"),
        pending(4, NOW - dt.timedelta(hours=30), "Late"),
    ]
    message = digest_message(digest(waiting=tuple(sorted(items, key=waiting_order))))
    text = shown(message)
    order = [text.index(f"*{name}*") for name in ("Late", "Soon", "Later", "Open")]
    assert order == sorted(order)
    assert ":x: *Late*" in text and ":warning: *Soon*" in text
    assert "2 days overdue" in text and "no deadline" in text
    assert "1 overdue, 1 due within 48 h" in text


def test_decision_sections_carry_their_buttons_with_the_grant_id() -> None:
    message = digest_message(
        digest(
            stuck=(stuck(1),),
            held=(held(2),),
            refused=(refused(3, 0), refused(4, 1)),
        )
    )
    validate(message)
    assert buttons(message) == [
        (RETRY_ACTION, "1001"),
        (HELD_ISSUE_ACTION, "1002"),
        (HELD_DISMISS_ACTION, "1002"),
        (REVOKE_ACTION, "1003"),
    ]
    text = shown(message)
    assert "the voucher was used: nothing to revoke" in text  # grant 4: no button
    assert "quota: Invalid pk" in text and "waiting_list" in text


def test_only_the_first_decisions_get_buttons_the_rest_are_counted() -> None:
    rendering = render_digest(digest(held=tuple(held(n) for n in range(12))))
    assert len(buttons(rendering.message)) == 10
    assert "…and 7 more" in shown(rendering.message)
    assert rendering.cut


def test_a_small_digest_attaches_nothing() -> None:
    assert not render_digest(digest(held=(held(1),))).cut


def test_names_are_escaped_and_ping_nobody() -> None:
    message = digest_message(digest(held=(replace(held(1), grant=person(1, "<!channel> & Co")),)))
    text = shown(message)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; Co" in text


def test_pretix_down_is_one_line_and_the_digest_still_posts() -> None:
    down = digest(
        held=(held(1),),
        redemption=redemption(pretix=PretixState.DOWN, problem="Pretix answered 503", recorded=4),
    )
    message = digest_message(down)
    validate(message)
    lines = [line for line in shown(message).splitlines() if "Pretix" in line]
    assert lines == [
        ":hourglass: Redemption unknown: Pretix did not answer (Pretix answered 503); "
        "4 grant vouchers in the bot's records."
    ]


def test_an_empty_day_is_one_short_line() -> None:
    message = digest_message(digest(redemption=redemption(listed=12, redeemed=3, recorded=12)))
    validate(message)
    assert len(message.blocks) == 1
    assert "nothing to report" in message.text
    assert "12 grant vouchers in Pretix: 3 redeemed, 9 not yet" in message.text
    assert not render_digest(digest()).cut


def test_terminal_text_shows_every_line_unescaped() -> None:
    text = digest_text(
        digest(
            waiting=tuple(pending(n, NOW + dt.timedelta(days=3)) for n in range(30)),
            held=(replace(held(1), grant=person(1, "Ana & <Bo>")),),
        )
    )
    assert text.splitlines()[0] == "Grants digest · PyCon Italia 2026 · Sun 3 May 2026"
    assert text.count("approval email") == 30
    assert "Ana & <Bo> (grant 5001)" in text
    assert "approval email Mon 27 Apr 09:00" in text  # 07:00 UTC, shown in Rome's time


def test_csv_cells_never_become_formulas() -> None:
    data = digest_csv(digest(held=(replace(held(1), grant=person(1, "=HYPERLINK(1)")),)))
    assert "'=HYPERLINK(1)" in data


DRIFT = (
    "Pretix drift in pycon2026: 1 grant voucher the bot does not know, 1 voucher edited in Pretix."
)


def test_the_drift_line_sits_under_the_redemption_with_where_the_details_are() -> None:
    message = digest_message(digest(held=(held(1),), drift=DRIFT))
    validate(message)
    text = shown(message)
    lines = text.splitlines()
    redemption_at = next(n for n, line in enumerate(lines) if "in Pretix:" in line)
    [drift_line] = [line for line in lines if "Pretix drift" in line]
    assert lines.index(drift_line) > redemption_at
    assert drift_line == (
        f":warning: {DRIFT} Details: `.venv/bin/voucher-bot drift pycon2026` "
        "(or `/voucher drift pycon2026`)."
    )
    assert "drift in Pretix" in message.text  # the notification's counts say so too
    assert message.blocks[-1]["type"] == "context"


def test_a_big_digest_with_drift_stays_inside_slacks_limits() -> None:
    big = digest(
        waiting=tuple(pending(n, NOW + dt.timedelta(hours=n)) for n in range(300)),
        stuck=tuple(stuck(400 + n) for n in range(40)),
        held=tuple(held(500 + n) for n in range(40)),
        refused=tuple(refused(600 + n, None) for n in range(40)),
        recent=tuple(
            RecentConfirmation(
                grant=person(700 + n),
                confirmed_at=NOW - dt.timedelta(minutes=n),
                voucher_type=VoucherType.GRANT,
                voucher_state=VoucherState.CREATED,
                code="ABCD…",
                email_state=EmailState.SENT,
                held=False,
            )
            for n in range(200)
        ),
        drift=DRIFT,
    )
    message = digest_message(big)
    validate(message)
    assert len(message.blocks) <= MAX_BLOCKS
    assert ".venv/bin/voucher-bot drift pycon2026" in shown(message)


def test_a_day_with_only_drift_is_not_the_empty_line() -> None:
    only = digest(drift=DRIFT)
    assert not only.empty
    message = digest_message(only)
    validate(message)
    assert "nothing to report" not in message.text
    assert "drift in Pretix" in message.text and DRIFT in shown(message)
    text = digest_text(only)
    assert text.splitlines()[-1] == (
        f"{DRIFT} Details: .venv/bin/voucher-bot drift pycon2026 (or /voucher drift pycon2026)."
    )
    assert digest(drift=None).empty


def test_app_home_shows_the_drift_line() -> None:
    picture = HomePicture(
        generated_at=NOW,
        conferences=(HomeConference(digest=digest(drift=DRIFT), bulk=()),),
    )
    view = json.dumps(home_view(picture, staff=True), ensure_ascii=False)
    assert DRIFT in view and "`.venv/bin/voucher-bot drift pycon2026`" in view
    quiet = HomePicture(generated_at=NOW, conferences=(HomeConference(digest=digest(), bulk=()),))
    assert "drift" not in json.dumps(home_view(quiet, staff=True)).lower()
