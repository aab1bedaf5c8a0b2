"""What `/voucher` answers the person who ran it: help, refusals, progress, problems, results."""

from __future__ import annotations

import re

from bot.services.lookup import MENTION, Resolution
from bot.services.outcomes import GrantRef, ProvisionOutcome, ResendOutcome, RevokeOutcome
from bot.slack.blocks._layout import (
    TEXT_LIMIT,
    Message,
    _context,
    _message,
    _retry_button,
    _section,
)
from bot.slack.blocks._outcome_lines import Outcome, _lines_for, _wants_retry
from bot.slack.blocks._text import (
    _FAILED,
    _LOCKED,
    _WARNING,
    _WORKING,
    COMMAND,
    _code,
    _data,
    _icon,
    _label,
    _lines,
    _Rich,
    _rich,
    _sentence,
)

_MAILTO = re.compile(r"^<mailto:([^|>]+)(?:\|[^>]*)?>$")

_SUBCOMMANDS: tuple[tuple[str, str, str, str], ...] = (
    (
        "issue",
        "<@user|email|grant id> [conference]",
        "issue the grantee's voucher and email it (upgrades a co-speaker voucher)",
        "issue @jane",
    ),
    (
        "status",
        "<@user|email|grant id> [conference]",
        "the grant, its voucher, the email and the latest events",
        "status jane@example.com",
    ),
    (
        "resend",
        "<@user|email|grant id> [conference]",
        "send the voucher email again, same code",
        "resend 1234 pycon2026",
    ),
    (
        "revoke",
        "<@user|email|grant id> [conference]",
        "delete the grant voucher of a grant refused after confirmation",
        "revoke 1234 pycon2026",
    ),
    (
        "bulk",
        "[conference]",
        "preview a voucher for everyone due one; a second member of staff approves it",
        "bulk pycon2026",
    ),
    (
        "digest",
        "[conference]",
        "post the conference's digest in its channel now",
        "digest pycon2026",
    ),
    (
        "drift",
        "[conference]",
        "Pretix grant vouchers against the bot's records: unknown, gone or edited ones",
        "drift pycon2026",
    ),
    ("help", "", "this message", ""),
)

_WORKING_PHRASES = {
    "issue": "Issuing a voucher for",
    "resend": "Sending the voucher email again to",
    "revoke": "Revoking the grant voucher of",
    "status": "Looking up",
}


def _simple(icon: str, text: _Rich, *, verbatim: bool = True) -> Message:
    return _message(text, [_section(_rich(_icon(icon), text), verbatim=verbatim)])


def help_message(command: str = COMMAND) -> Message:
    """Every subcommand with an example, and who may use them."""
    entries = [
        _rich(
            "• ",
            _code(f"{command} {name} {args}".strip()),
            f" — {what}.",
            _rich(" E.g. ", _code(f"{command} {example}")) if example else "",
        )
        for name, args, what, example in _SUBCOMMANDS
    ]
    title = _rich(_label(f"{command}: Pretix vouchers for financial-aid grantees"))
    notes = _rich(
        "A mention works when the person's Slack email is the grant's email, or when the grant "
        "names their Slack account. Add the conference code when a person has grants at several "
        "conferences. Only grants staff can run these commands."
    )
    fallback = _rich(f"{command} subcommands: ", ", ".join(name for name, *_ in _SUBCOMMANDS), ".")
    return _message(fallback, [_section(title), _section(_lines(entries)), _context(notes)])


def unknown_subcommand_message(word: str, command: str = COMMAND) -> Message:
    """The help, headed by a note that `word` is not a subcommand."""
    problem = problem_message(f"unknown subcommand {word!r}")
    help_ = help_message(command)
    return Message(f"Unknown subcommand {word!r}. {help_.text}", [*problem.blocks, *help_.blocks])


def not_staff_message() -> Message:
    """A polite refusal for someone outside the grants staff."""
    return _simple(
        _LOCKED,
        _rich(
            "Sorry, only grants staff (the staff user group) can use ",
            _code(COMMAND),
            ". Ask a grants organiser if something needs doing.",
        ),
    )


def working_message(action: str, target: str) -> Message:
    """The immediate answer while the work runs: `action` is a subcommand or a verb phrase.

    `target` is what the person typed; a `<@U123|name>` mention is shown as a mention.
    """
    subcommand = action.strip().lower()
    phrase = _WORKING_PHRASES.get(subcommand, action.strip())
    later = " I'll post the result here and in the grant's thread."
    if subcommand == "status":
        later = ""
    return _simple(_WORKING, _rich(phrase, " ", _target(target), "…", later))


def _target(target: str) -> _Rich:
    target = target.strip()
    if mention := MENTION.match(target):
        return _Rich(f"<@{mention.group(1)}>", f"<@{mention.group(1)}>")
    if mailto := _MAILTO.match(target):
        return _data(mailto.group(1), 320)
    return _data(target, 200)


def problem_message(text: str) -> Message:
    """One clear problem (no grant found, several grants, no email ...) with a warning sign."""
    return _simple(_WARNING, _data(_sentence(text), TEXT_LIMIT - 20))


def unresolved_text(resolution: Resolution) -> str:
    """Why a reference names no one grant, in Slack's words: several grants name a code."""
    text = resolution.problem or "No grant found."
    if resolution.suggested is not None:
        text += f" Say which conference, e.g. `{resolution.suggested}`."
    return text


def error_message() -> Message:
    """The answer of the global error handler: nothing sensitive, and what to do next."""
    # Fixed wording without data: not verbatim, so Slack links the #grants-tech channel.
    return _simple(
        _FAILED,
        _rich(
            "Something went wrong on our side; nothing was changed twice. "
            "It was logged — try again, or ask in #grants-tech."
        ),
        verbatim=False,
    )


def provision_result_message(outcome: ProvisionOutcome) -> Message:
    """The answer to the member of staff who asked to issue a voucher."""
    return _result_message(outcome)


def resend_result_message(outcome: ResendOutcome) -> Message:
    """The answer to the member of staff who asked to send the voucher email again."""
    return _result_message(outcome)


def revoke_result_message(outcome: RevokeOutcome) -> Message:
    """The answer to the member of staff who asked to revoke a voucher."""
    return _result_message(outcome)


def _result_message(outcome: Outcome) -> Message:
    lines = _lines_for(outcome, named=True)
    blocks = [_section(_lines(lines))]
    if outcome.grant is not None:
        blocks.append(_context(_grant_line(outcome.grant)))
        if _wants_retry(outcome):
            blocks.append(_retry_button(outcome.grant.id))
    return _message(_lines(lines), blocks)


def _grant_line(grant: GrantRef) -> _Rich:
    parts: list[_Rich | str] = ["Grant ", _code(grant.external_id), " · ", _code(grant.conference)]
    if grant.email:
        parts += [" · ", _data(grant.email, 320)]
    return _rich(*parts)
