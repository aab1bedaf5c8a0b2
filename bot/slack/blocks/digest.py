"""The daily digest in the conference channel: ONE top-level message within Slack's limits.

Sections come urgent first (see `bot.services.digest`). A long section is cut with a count
("…and 240 more"); `digest_cut` says whether anything was, and then the poster attaches the
full lists (`bot.digest_text.digest_csv`) as one CSV file in the digest's thread. The grants
that need a decision get their buttons: `retry` for a stuck grantee, `held_issue` and
`held_dismiss` for a held one, the revoke button for a refused one whose voucher is unused;
each button's value is the bot's grant id. Only the first few of those get buttons in the
message (the rest are counted, in the CSV and in App Home).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from zoneinfo import ZoneInfo

from bot.digest_text import (
    HELD_TITLE,
    RECENT_TITLE,
    REDEMPTION_TITLE,
    REFUSED_TITLE,
    STUCK_TITLE,
    WAITING_TITLE,
    counts_line,
    drift_commands,
    empty_line,
    grant_label,
    held_words,
    recent_words,
    redemption_summary,
    refused_words,
    stuck_words,
    title,
    unredeemed_name,
    unredeemed_words,
    waiting_words,
)
from bot.services.digest import (
    Digest,
    DigestGrant,
    PendingConfirmation,
    PretixState,
    Urgency,
)
from bot.slack.blocks._layout import (
    HELD_DISMISS_ACTION,
    HELD_ISSUE_ACTION,
    MAX_BLOCKS,
    RETRY_ACTION,
    REVOKE_ACTION,
    TEXT_LIMIT,
    Block,
    Message,
    _context,
    _divider,
    _message,
    _mrkdwn,
)
from bot.slack.blocks._text import (
    _FAILED,
    _INFO,
    _OK,
    _WAITING,
    _WARNING,
    _WORKING,
    _bold,
    _code,
    _data,
    _icon,
    _Rich,
    _rich,
    escape,
)

T = TypeVar("T")

_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")

# Lines of a list section (waiting, recent, unredeemed) shown before the "…and N more".
LIST_LINES = 20
# Grants of a decision section (stuck, held, refused) shown with their buttons.
BUTTON_ROWS = 5
# Unredeemed vouchers named in the message.
REDEMPTION_LINES = 10
_CUT_ROOM = 80  # characters kept free in a section for the "…and N more" line
_HEADER_LIMIT = 150  # a header block's plain text


@dataclass(frozen=True)
class _Cut:
    """A section's shown lines and how many were left out."""

    shown: list[_Rich]
    hidden: int


def _fit(lines: Sequence[_Rich], *, heading: _Rich, most: int) -> _Cut:
    """As many lines as fit in one section text (and at most `most`), the rest counted."""
    shown: list[_Rich] = []
    used = len(heading.md) + _CUT_ROOM
    for line in lines[:most]:
        if used + len(line.md) + 1 > TEXT_LIMIT:
            break
        shown.append(line)
        used += len(line.md) + 1
    return _Cut(shown, len(lines) - len(shown))


def _more(hidden: int) -> _Rich:
    return _rich(f"…and {hidden} more (every line is in the CSV file in this thread)")


def _heading(text: str, count: int) -> _Rich:
    return _rich(_bold(text), f" ({count})")


def _who(grant: DigestGrant) -> _Rich:
    return _rich(_bold(grant.name), " (", _data(grant_label(grant), 100), ")")


def _list_section(
    heading: _Rich, lines: Sequence[_Rich], *, most: int = LIST_LINES
) -> tuple[Block, bool]:
    """One section: the heading and the lines that fit; whether some were cut."""
    cut = _fit(lines, heading=heading, most=most)
    parts = [heading, *cut.shown]
    if cut.hidden:
        parts.append(_more(cut.hidden))
    return {"type": "section", "text": _mrkdwn("\n".join(p.md for p in parts))}, cut.hidden > 0


def _button(label: str, action_id: str, grant_id: int, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "action_id": action_id,
        "value": str(grant_id),
    }
    if style:
        button["style"] = style
    return button


def _with_button(text: _Rich, button: Block | None) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(text.md)}
    if button is not None:
        block["accessory"] = button
    return block


def _decision_section(
    heading: _Rich,
    items: Sequence[T],
    row: Callable[[T], list[Block]],
) -> list[Block]:
    blocks: list[Block] = [{"type": "section", "text": _mrkdwn(heading.md)}]
    for item in items[:BUTTON_ROWS]:
        blocks.extend(row(item))
    if len(items) > BUTTON_ROWS:
        blocks.append(_context(_more(len(items) - BUTTON_ROWS)))
    return blocks


def _waiting_line(item: PendingConfirmation, zone: ZoneInfo) -> _Rich:
    icon = {
        Urgency.OVERDUE: _icon(_FAILED),
        Urgency.DUE_SOON: _icon(_WARNING),
    }.get(item.urgency, _Rich())
    return _rich(icon, _who(item.grant), ": ", waiting_words(item, zone))


@dataclass(frozen=True)
class DigestRendering:
    """The digest's message, and whether it had to leave lines out (then: attach the CSV)."""

    message: Message
    cut: bool


def digest_message(digest: Digest) -> Message:
    """The digest as one top-level message (or the one short line of an empty day)."""
    return render_digest(digest).message


def render_digest(digest: Digest) -> DigestRendering:
    """The message and whether it cut anything."""
    if digest.empty:
        line = _rich(_icon(_INFO), empty_line(digest))
        return DigestRendering(
            _message(line, [{"type": "section", "text": _mrkdwn(line.md)}]), cut=False
        )
    cut = any(len(s) > BUTTON_ROWS for s in (digest.stuck, digest.held, digest.refused))
    zone = ZoneInfo(digest.timezone)
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": title(digest)[:_HEADER_LIMIT], "emoji": True},
        },
        _context(_rich(counts_line(digest))),
    ]
    if digest.waiting:
        block, cut_here = _list_section(
            _heading(WAITING_TITLE, len(digest.waiting)),
            [_waiting_line(p, zone) for p in digest.waiting],
        )
        blocks += [_divider(), block]
        cut = cut or cut_here
    if digest.stuck:
        blocks += [_divider()]
        blocks += _decision_section(
            _heading(STUCK_TITLE, len(digest.stuck)),
            digest.stuck,
            lambda s: [
                _with_button(
                    _rich(_who(s.grant), ": ", _data(stuck_words(s, zone), 600)),
                    _button("Retry", RETRY_ACTION, s.grant.id, "primary"),
                )
            ],
        )
    if digest.held:
        blocks += [_divider()]
        blocks += _decision_section(
            _heading(HELD_TITLE, len(digest.held)),
            digest.held,
            lambda h: [
                _with_button(_rich(_who(h.grant), ": ", _data(held_words(h, zone), 600)), None),
                {
                    "type": "actions",
                    "elements": [
                        _button("Issue voucher", HELD_ISSUE_ACTION, h.grant.id, "primary"),
                        _button("Dismiss", HELD_DISMISS_ACTION, h.grant.id),
                    ],
                },
            ],
        )
    if digest.refused:
        blocks += [_divider()]
        blocks += _decision_section(
            _heading(REFUSED_TITLE, len(digest.refused)),
            digest.refused,
            lambda r: [
                _with_button(
                    _rich(_who(r.grant), ": ", refused_words(r, zone)),
                    None
                    if r.used
                    else _button("Revoke voucher", REVOKE_ACTION, r.grant.id, "danger"),
                )
            ],
        )
    if digest.recent:
        block, cut_here = _list_section(
            _heading(RECENT_TITLE, len(digest.recent)),
            [_rich(_who(c.grant), ": ", recent_words(c, zone)) for c in digest.recent],
        )
        blocks += [_divider(), block]
        cut = cut or cut_here
    block, cut_here = _redemption_block(digest, zone)
    blocks += [_divider(), block]
    if digest.drift is not None:
        blocks.append(_context(drift_line(digest)))
    cut = cut or cut_here or len(blocks) > MAX_BLOCKS
    message = _message(_rich(title(digest), ": ", counts_line(digest)), blocks)
    return DigestRendering(message, cut=cut)


def _redemption_block(digest: Digest, zone: ZoneInfo) -> tuple[Block, bool]:
    summary = redemption_summary(digest)
    redemption = digest.redemption
    if redemption.pretix is not PretixState.OK:
        return _context(_rich(_icon(_WAITING), summary)), False
    lines = [
        _rich(
            _bold(unredeemed_name(u)),
            f" ({grant_label(u.grant)})" if u.grant else "",
            ": ",
            unredeemed_words(u, zone),
        )
        for u in redemption.unredeemed
    ]
    heading = _rich(_bold(REDEMPTION_TITLE), " · ", summary)
    return _list_section(heading, lines, most=REDEMPTION_LINES)


def drift_line(digest: Digest) -> _Rich:
    """The one drift line, with the commands that show the details."""
    cli, slash = drift_commands(digest)
    return _rich(
        _icon(_WARNING),
        _data(digest.drift or "", 1500),
        " Details: ",
        _code(cli),
        " (or ",
        _code(slash),
        ").",
    )


def digest_cut(digest: Digest) -> bool:
    """Whether the message leaves lines out: then the CSV goes in its thread."""
    return render_digest(digest).cut


def digest_file_comment(digest: Digest) -> str:
    """The words that come with the CSV file in the thread."""
    return escape(f"Every line of the {digest.conference_name} digest, {digest.local_date}.")


def _channel(channel: str) -> _Rich:
    if _CHANNEL_ID.fullmatch(channel):
        return _Rich(f"<#{channel}>", channel)
    return _rich(channel)


def digest_posted_message(digest: Digest, *, csv_attached: bool) -> Message:
    """The asker's answer: the digest was posted (enqueued) in the conference channel."""
    where = _channel(digest.channel or "-")
    summary = "nothing to report" if digest.empty else counts_line(digest)
    line = _rich(
        _icon(_OK),
        "Posted the digest of ",
        _bold(digest.conference_name),
        " in ",
        where,
        f": {summary}",
        " (every line in the CSV file in its thread)." if csv_attached else ".",
    )
    return _message(line, [{"type": "section", "text": _mrkdwn(line.md)}])


def digest_not_posted_message(digest: Digest, reason: str) -> Message:
    """The asker's answer when the digest could not be posted (e.g. no channel configured)."""
    line = _rich(
        _icon(_WARNING),
        "The digest of ",
        _bold(digest.conference_name),
        f" was not posted: {reason}.",
    )
    return _message(line, [{"type": "section", "text": _mrkdwn(line.md)}])


def digest_working_message(conference_name: str) -> Message:
    """The immediate answer to `/voucher digest` while the digest is built."""
    line = _rich(_icon(_WORKING), "Building the digest of ", _bold(conference_name), "…")
    return _message(line, [{"type": "section", "text": _mrkdwn(line.md)}])
