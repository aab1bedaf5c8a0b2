"""`/voucher` text into a small typed command."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.services.notifications import is_control


class Action(enum.StrEnum):
    """The subcommands of `/voucher`."""

    ISSUE = "issue"
    STATUS = "status"
    RESEND = "resend"
    REVOKE = "revoke"
    BULK = "bulk"  # `bulk [conference]`: no person, only a conference
    DIGEST = "digest"  # `digest [conference]`: its listener is bot.commands.digest
    DRIFT = "drift"
    HELP = "help"


@dataclass(frozen=True)
class VoucherCommand:
    """A parsed `/voucher` request; `unknown` holds a subcommand nobody knows."""

    action: Action
    target: str | None = None
    conference: str | None = None
    unknown: str | None = None


def parse_command(text: str) -> VoucherCommand:
    """`issue <@U1|jane> pycon2026` -> VoucherCommand(ISSUE, "<@U1|jane>", "pycon2026")."""
    words = command_words(text)
    if not words:
        return VoucherCommand(Action.HELP)
    try:
        action = Action(words[0].lower())
    except ValueError:
        return VoucherCommand(Action.HELP, unknown=words[0])
    if action is Action.BULK:
        return VoucherCommand(action, conference=words[1].lower() if len(words) > 1 else None)
    target = words[1] if len(words) > 1 else None
    conference = words[2].lower() if len(words) > 2 else None
    return VoucherCommand(action, target, conference)


def command_words(text: str) -> list[str]:
    """The words of a command; control characters (NUL, escapes, line breaks) separate them."""
    return "".join(" " if is_control(char) else char for char in text).split()
