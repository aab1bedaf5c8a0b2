"""The App Home tab: staff see the digest's picture live, with its buttons; others a note.

A Home view holds at most 100 blocks; each decision section shows its first `HOME_ROWS`
grants with their buttons (`held_issue` / `held_dismiss`, `retry`, the revoke button) and
counts the rest, which the digest's CSV lists in full.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from bot.digest_text import (
    HELD_TITLE,
    REFUSED_TITLE,
    STUCK_TITLE,
    counts_line,
    grant_label,
    held_words,
    redemption_summary,
    refused_words,
    stuck_words,
)
from bot.services.digest import DigestGrant
from bot.services.home import AwaitingBulk, HomeConference, HomePicture
from bot.slack.blocks._layout import (
    RETRY_ACTION,
    Block,
    Message,
    _context,
    _divider,
    _section,
)
from bot.slack.blocks._text import _INFO, _LOCKED, _bold, _data, _icon, _Rich, _rich
from bot.slack.blocks.decisions import actor_mention, held_buttons, revoke_button
from bot.slack.blocks.digest import drift_line

T = TypeVar("T")

MAX_HOME_BLOCKS = 100
HOME_ROWS = 5  # grants of a decision section shown with their buttons
_HEADER_LIMIT = 150


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:_HEADER_LIMIT]}}


def _who(grant: DigestGrant) -> _Rich:
    return _rich(_bold(grant.name), " (", _data(grant_label(grant), 100), ")")


def _retry(grant_id: int) -> Block:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": "Retry", "emoji": True},
        "action_id": RETRY_ACTION,
        "value": str(grant_id),
        "style": "primary",
    }


def _rows(
    title: str, items: Sequence[T], row: Callable[[T], list[Block]], *, most: int = HOME_ROWS
) -> list[Block]:
    blocks: list[Block] = [_section(_rich(_bold(title), f" ({len(items)})"))]
    for item in items[:most]:
        blocks += row(item)
    if len(items) > most:
        blocks.append(_context(_rich(f"…and {len(items) - most} more (the digest's CSV has all).")))
    return blocks


def _bulk_line(request: AwaitingBulk) -> _Rich:
    by = request.requested_by
    return _rich(
        f"Bulk request #{request.id} by ",
        actor_mention(by if ":" in by else f"slack:{by}"),
        f": {request.grantees} grantees, expires {request.expires_at:%Y-%m-%d %H:%M} UTC",
    )


def _conference_blocks(home: HomeConference) -> list[Block]:
    digest = home.digest
    zone = ZoneInfo(digest.timezone)
    numbers = counts_line(digest) or "nothing waits for a person"
    blocks: list[Block] = [
        _divider(),
        _header(digest.conference_name),
        _context(_rich(numbers), _rich(redemption_summary(digest))),
    ]
    if digest.drift is not None:
        blocks.append(_context(drift_line(digest)))
    if home.bulk:
        lines = [_bulk_line(b) for b in home.bulk[:10]]
        more = len(home.bulk) - len(lines)
        text = _rich(
            _bold("Bulk requests awaiting approval"),
            f" ({len(home.bulk)}): approve or reject them in the channel",
        )
        parts = [text, *lines] + ([_rich(f"…and {more} more")] if more > 0 else [])
        blocks.append(_section(_Rich("\n".join(p.md for p in parts), text.plain)))
    if digest.held:
        blocks += _rows(
            HELD_TITLE,
            digest.held,
            lambda h: [
                _section(_rich(_who(h.grant), ": ", _data(held_words(h, zone), 600))),
                held_buttons(h.grant.id),
            ],
        )
    if digest.stuck:
        blocks += _rows(
            STUCK_TITLE,
            digest.stuck,
            lambda s: [
                {
                    **_section(_rich(_who(s.grant), ": ", _data(stuck_words(s, zone), 600))),
                    "accessory": _retry(s.grant.id),
                }
            ],
        )
    if digest.refused:
        blocks += _rows(
            REFUSED_TITLE,
            digest.refused,
            lambda r: (
                [_section(_rich(_who(r.grant), ": ", refused_words(r, zone)))]
                + ([] if r.used else [revoke_button(r.grant.id)])
            ),
        )
    return blocks


def _notice_blocks(notice: Message | None) -> list[Block]:
    """The answer to the person's last click in Home, without its buttons."""
    if notice is None:
        return []
    kept = [b for b in notice.blocks if b.get("type") in ("section", "context")][:3]
    return [*kept, _divider()] if kept else []


def home_view(
    picture: HomePicture | None, *, staff: bool, notice: Message | None = None
) -> dict[str, Any]:
    """The Home view for one person: the picture and its buttons for staff, a note otherwise."""
    if not staff or picture is None:
        text = _rich(
            _icon(_LOCKED),
            "This is the grants team's voucher bot. It issues free-ticket vouchers to "
            "financial-aid grantees; only grants staff (the staff user group) see the work "
            "here and can act. Ask a grants organiser if you should be one of them.",
        )
        return {"type": "home", "blocks": [_header("Voucher bot"), _section(text)]}
    moment = picture.generated_at.astimezone(dt.UTC)
    blocks: list[Block] = [
        _header("Voucher bot: what needs a person"),
        *_notice_blocks(notice),
        _context(
            _rich(
                _icon(_INFO),
                f"Updated {moment:%Y-%m-%d %H:%M:%S} UTC; refreshed after each change. "
                "Buttons act at once and answer here.",
            )
        ),
    ]
    if not picture.conferences:
        blocks.append(_section(_rich("No conference is configured.")))
    for home in picture.conferences:
        blocks += _conference_blocks(home)
    if len(blocks) > MAX_HOME_BLOCKS:
        hidden = len(blocks) - MAX_HOME_BLOCKS + 1
        blocks = [
            *blocks[: MAX_HOME_BLOCKS - 1],
            _context(_rich(f"…{hidden} more blocks not shown; the digest lists everything.")),
        ]
    return {"type": "home", "blocks": blocks}
