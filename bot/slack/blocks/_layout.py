"""Blocks and the `Message` that carries them, kept within Slack's limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from bot.slack.blocks._text import _one_line, _Rich, _rich, truncate

Block: TypeAlias = dict[str, Any]

RETRY_ACTION = "retry"  # CONTRACT.md names it
# The name Retry buttons had before; messages already in Slack still carry it.
LEGACY_RETRY_ACTION = "voucher_retry"
# The other buttons' action_ids (CONTRACT.md names all but the revoke one). The value of the
# held, revoke and retry buttons is the grant id; of the bulk buttons, the bulk request id.
HELD_ISSUE_ACTION = "held_issue"
HELD_DISMISS_ACTION = "held_dismiss"
REVOKE_ACTION = "revoke_voucher"
BULK_APPROVE_ACTION = "bulk_approve"
BULK_REJECT_ACTION = "bulk_reject"
BULK_RETRY_FAILED_ACTION = "bulk_retry_failed"
MAX_BLOCKS = 50
TEXT_LIMIT = 3000  # one text object (a section's text, a context element)
FIELD_LIMIT = 2000  # one of a section's fields
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
FALLBACK_LIMIT = 1000  # the notification text; Slack shortens it further anyway


@dataclass(frozen=True)
class Message:
    """A message ready for `chat.postMessage`, `chat.update` or `respond`."""

    text: str
    blocks: list[dict[str, Any]]

    def as_kwargs(self) -> dict[str, Any]:
        """The `text` and `blocks` keyword arguments of a Slack call."""
        return {"text": self.text, "blocks": self.blocks}


def _mrkdwn(md: str, *, verbatim: bool = True, limit: int = TEXT_LIMIT) -> Block:
    return {"type": "mrkdwn", "text": truncate(md, limit) or "-", "verbatim": verbatim}


def _section(text: _Rich, *, fields: Sequence[_Rich] = (), verbatim: bool = True) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(text.md, verbatim=verbatim)}
    if fields:
        block["fields"] = [_mrkdwn(f.md, limit=FIELD_LIMIT) for f in fields[:MAX_FIELDS]]
    return block


def _context(*parts: _Rich) -> Block:
    return {"type": "context", "elements": [_mrkdwn(p.md) for p in parts[:MAX_CONTEXT_ELEMENTS]]}


def _divider() -> Block:
    return {"type": "divider"}


def _retry_button(grant_id: int) -> Block:
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Retry", "emoji": True},
                "action_id": RETRY_ACTION,
                "value": str(grant_id),
                "style": "primary",
            }
        ],
    }


def _message(fallback: _Rich, blocks: list[Block]) -> Message:
    if len(blocks) > MAX_BLOCKS:
        hidden = len(blocks) - MAX_BLOCKS + 1
        blocks = [*blocks[: MAX_BLOCKS - 1], _context(_rich(f"…and {hidden} more not shown."))]
    text = truncate(_one_line(fallback.plain), FALLBACK_LIMIT) or "Voucher bot"
    return Message(text=text, blocks=blocks)
