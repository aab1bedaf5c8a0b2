"""The answer to `/voucher drift`: what differs between Pretix and the bot, by kind."""

from __future__ import annotations

from collections.abc import Sequence

from bot.services.codes import mask_code
from bot.services.drift import DriftItem, DriftKind, DriftReport, TermChange
from bot.slack.blocks._layout import TEXT_LIMIT, Block, Message, _context, _message, _section
from bot.slack.blocks._text import (
    _OK,
    _WARNING,
    _WORKING,
    _code,
    _data,
    _icon,
    _label,
    _lines,
    _Rich,
    _rich,
)

# Items listed per kind; the rest is counted (the CLI lists them all).
SHOWN_PER_KIND = 15
# Room kept in a section for the "…and N more" line.
_MORE_ROOM = 120

KIND_TITLES = {
    DriftKind.UNKNOWN: "Grant vouchers in Pretix the bot does not know",
    DriftKind.GONE: "Bot records whose Pretix voucher is gone (deleted, or no longer tagged grant)",
    DriftKind.EDITED: "Vouchers whose terms were changed in Pretix",
    DriftKind.REVOKED_PRESENT: "Vouchers the bot revoked that Pretix still has",
}


def drift_working_message(conference: str | None) -> Message:
    """The immediate answer to `/voucher drift` while Pretix is read."""
    where = _rich(" for ", _code(conference)) if conference else _rich()
    text = _rich(
        _icon(_WORKING), "Comparing Pretix's grant vouchers with the bot's records", where, "…"
    )
    return _message(text, [_section(text)])


def drift_message(report: DriftReport) -> Message:
    """The drift report of one conference, within Slack's limits; codes masked."""
    conference = report.conference
    if report.drifted:
        head = _rich(
            _icon(_WARNING), _label("Drift"), " between Pretix and the bot in ", _code(conference)
        )
    else:
        head = _rich(
            _icon(_OK), _label("No drift"), ": Pretix and the bot agree in ", _code(conference)
        )
    totals = _rich(
        f"{report.pretix_grant_vouchers} grant vouchers in Pretix · {report.records} bot "
        f"records · {report.redeemed} redeemed · {report.not_redeemed} not redeemed yet"
    )
    blocks: list[Block] = [_section(head), _context(totals)]
    for kind in DriftKind:
        items = report.of_kind(kind)
        if items:
            blocks.append(_section(_kind_section(KIND_TITLES[kind], items)))
    if report.drifted:
        blocks.append(
            _context(
                _rich(
                    "Full list: ", _code(f".venv/bin/voucher-bot drift {conference}"), " (exit 1)."
                )
            )
        )
    fallback = _rich(report.summary_line() or f"No drift in {conference}.")
    return _message(fallback, blocks)


def _kind_section(title: str, items: Sequence[DriftItem]) -> _Rich:
    lines: list[_Rich] = [_label(f"{title} ({len(items)})")]
    used = len(lines[0].md)
    shown = 0
    for item in items[:SHOWN_PER_KIND]:
        line = _item_line(item)
        if used + len(line.md) + 1 > TEXT_LIMIT - _MORE_ROOM:
            break
        lines.append(line)
        used += len(line.md) + 1
        shown += 1
    if shown < len(items):
        lines.append(_rich(f"…and {len(items) - shown} more."))
    return _lines(lines)


def _item_line(item: DriftItem) -> _Rich:
    parts: list[_Rich | str] = ["• ", _code(mask_code(item.code))]
    if item.pretix_voucher_id is not None:
        parts.append(f" (Pretix #{item.pretix_voucher_id})")
    if item.grant_external_id is not None:
        parts += [", grant ", _code(item.grant_external_id)]
    if item.full_name:
        parts += [" ", _data(item.full_name, 100)]
    if item.changes:
        parts += [": ", _data("; ".join(_change(change) for change in item.changes), 600)]
    if item.redeemed:
        parts.append(f" — redeemed {item.redeemed} times" if item.redeemed > 1 else " — redeemed")
    return _rich(*parts)


def _change(change: TermChange) -> str:
    if change.term == "code":
        return f"code {mask_code(str(change.expected))} → {mask_code(str(change.actual))}"
    return f"{change.term} {_shown(change.expected)} → {_shown(change.actual)}"


def _shown(value: object) -> str:
    if value is None or value == "":
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)
