"""The answer to `/voucher status`: one grant's voucher story."""

from __future__ import annotations

import datetime as dt

from bot.services.status import GrantStatusReport, VoucherView
from bot.slack.blocks._layout import Block, Message, _divider, _message, _section
from bot.slack.blocks._text import (
    _INFO,
    _WARNING,
    _code,
    _command,
    _data,
    _icon,
    _label,
    _lines,
    _Rich,
    _rich,
    _who,
)
from bot.storage import GrantStatus, VoucherType


def status_message(report: GrantStatusReport) -> Message:
    """One grant's voucher story: the grant, its voucher, the email and the latest events."""
    grant = report.grant
    grant_fields = [
        _field("Grant", _code(grant.external_id)),
        _field("Status", _words(report.status.value)),
        _field("Email", _data(grant.email, 320) if grant.email else "none"),
        _field("Reply deadline", _when(report.reply_deadline)),
        _field("Confirmed", _when(report.confirmed_at)),
        _field("Updated", _when(report.updated_at)),
    ]
    blocks = [_section(_who(grant), fields=grant_fields)]
    if report.hold_reason:
        blocks.append(_warning("Held for staff:", report.hold_reason))
    if report.dismissed:
        blocks.append(_warning("Dismissed, no voucher:", report.dismissed))
    blocks.append(_divider())
    if report.voucher is None:
        lines = [_rich(_icon(_INFO), "No voucher yet.")]
        if report.status is GrantStatus.CONFIRMED:
            lines.append(_rich("Issue one with ", _command("issue", grant), "."))
        blocks.append(_section(_lines(lines)))
    else:
        blocks.extend(_voucher_blocks(report.voucher))
    if report.history:
        events = [
            _rich(
                _code(_when(line.occurred_at)),
                " ",
                _data(f"{line.action}: {_words(line.outcome)}", 300),
                " · ",
                _data(line.actor, 100),
            )
            for line in report.history
        ]
        blocks += [_divider(), _section(_lines([_label("Latest events"), *events]))]
    return _message(_status_fallback(report), blocks)


def _voucher_blocks(voucher: VoucherView) -> list[Block]:
    kind = _kind(voucher.voucher_type)
    if voucher.original_type is not None:
        kind += f" (upgraded from {_kind(voucher.original_type)})"
    pretix = f"#{voucher.pretix_voucher_id}" if voucher.pretix_voucher_id is not None else "—"
    fields = [
        _field("Type", kind),
        _field("State", _words(voucher.state.value)),
        _field("Pretix id", pretix),
    ]
    if voucher.attempts:
        fields.append(_field("Attempts", str(voucher.attempts)))
    if voucher.next_attempt_at is not None:
        fields.append(_field("Next attempt", _when(voucher.next_attempt_at)))
    blocks = [_section(_rich(_label("Voucher"), " ", _code(voucher.code)), fields=fields)]
    if voucher.last_error:
        blocks.append(_warning("Last error:", voucher.last_error))
    email_fields = [
        _field("Sent at", _when(voucher.email_sent_at)),
        _field("Emails sent", str(voucher.emails_sent)),
    ]
    email_state = _words(voucher.email_state.value)
    blocks.append(_section(_rich(_label("Email"), " ", email_state), fields=email_fields))
    if voucher.email_last_error:
        blocks.append(_warning("Email error:", voucher.email_last_error))
    return blocks


def _status_fallback(report: GrantStatusReport) -> _Rich:
    grant, voucher = report.grant, report.voucher
    head = _rich(
        _data(grant.full_name, 200),
        ", ",
        _data(grant.conference_name, 200),
        ": grant ",
        _words(report.status.value),
    )
    if voucher is None:
        return _rich(head, "; no voucher yet.")
    return _rich(
        head,
        f"; {_kind(voucher.voucher_type)} voucher ",
        _data(voucher.code, 100),
        f" {_words(voucher.state.value)}; email {_words(voucher.email_state.value)}.",
    )


def _warning(label: str, detail: str) -> Block:
    """A section that flags what staff must look at: a hold reason or the last error."""
    return _section(_rich(_icon(_WARNING), _label(label), " ", _data(detail)))


def _field(label: str, value: _Rich | str) -> _Rich:
    return _rich(_label(label), "\n", value)


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is None:  # stored times are UTC; an unlabelled one is too
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _words(value: str) -> str:
    return value.replace("_", " ")


def _kind(value: VoucherType) -> str:
    return value.value.replace("_", "-")
