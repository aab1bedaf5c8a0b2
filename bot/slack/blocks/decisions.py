"""Decisions staff take with a click: a held grant's Issue / Dismiss, a refused grant's Revoke.

The buttons (`held_buttons`, `revoke_button`) carry the grant id as their value; the thread,
the digest and App Home all use these builders. `dismiss_modal` asks for the reason of a
dismissal; `held_result_message` is the ephemeral answer to the person who clicked, and
`held_thread_reply` / `held_state` what the grant's thread hears of a dismissal.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, assert_never

from bot.services.outcomes import GrantRef, HeldOutcome, HeldResult
from bot.slack.blocks._layout import (
    HELD_DISMISS_ACTION,
    HELD_ISSUE_ACTION,
    REVOKE_ACTION,
    Block,
    Message,
    _context,
    _message,
    _section,
)
from bot.slack.blocks._text import (
    _INFO,
    _REVOKED,
    _WARNING,
    _bold,
    _data,
    _icon,
    _Rich,
    _rich,
    _sentence,
    _who,
)
from bot.slack.blocks.answers import provision_result_message

# The dismissal modal: its callback_id, and where its reason is in `view.state.values`.
DISMISS_VIEW = "held_dismiss_reason"
DISMISS_REASON_BLOCK = "reason"
DISMISS_REASON_INPUT = "reason_input"
MAX_REASON = 500
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,30}$")


def _button(text: str, action_id: str, grant_id: int, *, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id,
        "value": str(grant_id),
    }
    if style is not None:
        button["style"] = style
    return button


def held_buttons(grant_id: int) -> Block:
    """Issue the voucher, or dismiss the grant: one actions block for a held grant."""
    return {
        "type": "actions",
        "block_id": f"held_{grant_id}",
        "elements": [
            _button("Issue voucher", HELD_ISSUE_ACTION, grant_id, style="primary"),
            _button("Dismiss…", HELD_DISMISS_ACTION, grant_id, style="danger"),
        ],
    }


def revoke_button(grant_id: int) -> Block:
    """Revoke the voucher of a grant refused after it was issued."""
    return {
        "type": "actions",
        "block_id": f"revoke_{grant_id}",
        "elements": [_button("Revoke voucher", REVOKE_ACTION, grant_id, style="danger")],
    }


def actor_mention(label: str | None) -> _Rich:
    """Who an audit label names: a Slack user as a mention, anyone else by name."""
    if not label:
        return _Rich("someone", "someone")
    source, _, name = label.partition(":")
    if _SLACK_USER.match(name):
        return _Rich(f"<@{name}>", name)
    where = "the command line" if source == "cli" else source.replace("_", " ")
    return _rich(_data(name or label, 100), f" ({where})")


def _when(moment: dt.datetime | None) -> _Rich:
    if moment is None:
        return _Rich()
    return _rich(f" on {moment.astimezone(dt.UTC):%Y-%m-%d at %H:%M} UTC")


def _decided(outcome: HeldOutcome) -> _Rich:
    """ "by <@U1> on 2026-05-02 at 10:00 UTC", as far as it is known."""
    if outcome.decided_by is None:
        return _Rich()
    return _rich(" by ", actor_mention(outcome.decided_by), _when(outcome.decided_at))


def held_result_message(outcome: HeldOutcome) -> Message:
    """The answer to the member of staff who clicked Issue or Dismiss."""
    if outcome.provision is not None:
        return provision_result_message(outcome.provision)
    grant = outcome.grant
    who = _who(grant) if grant else _Rich("The grant", "The grant")
    lines: list[_Rich]
    match outcome.result:
        case HeldResult.DISMISSED:
            lines = [
                _rich(_icon(_REVOKED), "Dismissed ", who, ": no voucher will be issued."),
                _rich("Reason: ", _data(outcome.reason or "-")),
            ]
        case HeldResult.ALREADY_DISMISSED:
            lines = [
                _rich(_icon(_INFO), who, " was already dismissed", _decided(outcome), "."),
                _rich("Reason: ", _data(outcome.reason or "-")),
            ]
        case HeldResult.NOT_HELD:
            released = (
                _rich(" Its hold was released", _decided(outcome), ".")
                if outcome.decided_by
                else _Rich()
            )
            lines = [_rich(_icon(_INFO), _data(_sentence(outcome.message)), released)]
        case (
            HeldResult.NOT_CONFIRMED
            | HeldResult.GRANT_NOT_FOUND
            | HeldResult.REASON_MISSING
            | HeldResult.ISSUED
        ):
            lines = [_rich(_icon(_WARNING), _data(_sentence(outcome.message)))]
        case _:
            assert_never(outcome.result)
    blocks = [_section(line) for line in lines]
    return _message(lines[0], blocks)


def held_thread_reply(outcome: HeldOutcome) -> Message | None:
    """The thread's reply to a dismissal (an issue is told by provisioning itself)."""
    grant = outcome.grant
    if grant is None or outcome.result is not HeldResult.DISMISSED:
        return None
    line = _rich(_icon(_REVOKED), "Dismissed", _decided(outcome), ": no voucher will be issued.")
    reason = _rich("Reason: ", _data(outcome.reason or "-"))
    return _message(
        _rich(_data(grant.full_name, 200), ": ", line),
        [_section(line), _context(reason)],
    )


def held_state(outcome: HeldOutcome) -> str | None:
    """The thread parent's state line after a dismissal (mrkdwn), else None."""
    if outcome.grant is None or outcome.result is not HeldResult.DISMISSED:
        return None
    return _rich(_icon(_REVOKED), "dismissed", _decided(outcome), ": no voucher").md


def dismiss_modal(*, grant: GrantRef, hold_reason: str | None, metadata: str) -> dict[str, Any]:
    """The modal that asks why a held grant is dismissed (views.open); `metadata` comes back."""
    headline = _rich("Dismiss the held grant of ", _who(grant), "? No voucher will be issued.")
    blocks: list[Block] = [_section(headline)]
    if hold_reason:
        blocks.append(_context(_rich("Held because: ", _data(hold_reason))))
    blocks.append(
        {
            "type": "input",
            "block_id": DISMISS_REASON_BLOCK,
            "label": {"type": "plain_text", "text": "Why? (kept in the grant's record)"},
            "element": {
                "type": "plain_text_input",
                "action_id": DISMISS_REASON_INPUT,
                "multiline": True,
                "min_length": 3,
                "max_length": MAX_REASON,
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": DISMISS_VIEW,
        "title": {"type": "plain_text", "text": "Dismiss held grant"},
        "submit": {"type": "plain_text", "text": "Dismiss"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": metadata,
        "blocks": blocks,
    }


def dismiss_reason(view: dict[str, Any]) -> str:
    """The reason typed into the dismissal modal ("" when missing)."""
    values = (view.get("state") or {}).get("values") or {}
    typed = (values.get(DISMISS_REASON_BLOCK) or {}).get(DISMISS_REASON_INPUT) or {}
    return str(typed.get("value") or "").strip()


def held_line(grant: GrantRef, hold_reason: str | None) -> _Rich:
    """One held grant in a list: who, and why it is held."""
    reason = _rich(": ", _data(hold_reason, 300)) if hold_reason else _Rich()
    return _rich(_bold(grant.full_name), " (grant ", _data(grant.external_id, 64), ")", reason)
