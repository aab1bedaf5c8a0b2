"""Block Kit messages for `/voucher` and the grant status threads, built by pure functions.

Every builder returns a `Message` within Slack's limits (50 blocks, 3,000 characters a text
object) with its notification `text` always set. Everything that comes from data (names,
emails, codes, errors, what a person typed) goes through `escape`, and every mrkdwn text object
is `verbatim`, so a grantee called `<!channel>` or `@here` pings nobody.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, assert_never

from bot.services.outcomes import (
    EmailOutcome,
    EmailResult,
    GrantIntake,
    GrantRef,
    ProvisionOutcome,
    ProvisionResult,
    ResendOutcome,
    RevokeOutcome,
    RevokeResult,
)
from bot.services.status import GrantStatusReport, VoucherView
from bot.storage import GrantStatus, VoucherType

Block: TypeAlias = dict[str, Any]
Outcome: TypeAlias = ProvisionOutcome | RevokeOutcome | ResendOutcome

COMMAND = "/voucher"
RETRY_ACTION = "voucher_retry"
MAX_BLOCKS = 50
TEXT_LIMIT = 3000  # one text object (a section's text, a context element)
FIELD_LIMIT = 2000  # one of a section's fields
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
DETAIL_LIMIT = 1500  # one reason or error: enough to act on, still scannable
FALLBACK_LIMIT = 1000  # the notification text; Slack shortens it further anyway

# One emoji per meaning, everywhere.
_OK = "white_check_mark"
_INFO = "information_source"
_WORKING = "hourglass_flowing_sand"  # we are on it right now
_WAITING = "hourglass"  # waiting for something (Pretix, a retry, the mail server)
_WARNING = "warning"  # a person must look
_FAILED = "x"  # failed; Retry may help
_EMAIL = "email"
_REVOKED = "no_entry_sign"
_LOCKED = "lock"

_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_MAILTO = re.compile(r"^<mailto:([^|>]+)(?:\|[^>]*)?>$")


@dataclass(frozen=True)
class Message:
    """A message ready for `chat.postMessage`, `chat.update` or `respond`."""

    text: str
    blocks: list[dict[str, Any]]

    def as_kwargs(self) -> dict[str, Any]:
        """The `text` and `blocks` keyword arguments of a Slack call."""
        return {"text": self.text, "blocks": self.blocks}


def escape(text: str) -> str:
    """Escape `&`, `<` and `>` so Slack shows data as typed and never parses it as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in "…" when cut.

    Never leaves half an escape (`&am`) or half a `<@U123>` mention at the end.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and len(cut) - amp < len("&amp;") and ";" not in cut[amp:]:
        cut = cut[:amp]
    tag = cut.rfind("<")
    if tag != -1 and len(cut) - tag < 64 and ">" not in cut[tag:]:
        cut = cut[:tag]
    return cut + "…"


# --- Phrases: mrkdwn for the blocks and plain words for the fallback, escaped by construction.


@dataclass(frozen=True)
class _Rich:
    """One phrase rendered twice: mrkdwn for the blocks, plain words for the fallback `text`."""

    md: str = ""
    plain: str = ""


def _rich(*parts: _Rich | str) -> _Rich:
    """Concatenate phrases; a `str` part (wording or data) is escaped, a `_Rich` part is kept."""
    return _Rich(
        "".join(p.md if isinstance(p, _Rich) else escape(p) for p in parts),
        "".join(p.plain if isinstance(p, _Rich) else escape(p) for p in parts),
    )


def _lines(lines: Sequence[_Rich]) -> _Rich:
    return _Rich("\n".join(line.md for line in lines), " ".join(line.plain for line in lines))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sentence(text: str, *, capitalize: bool = False) -> str:
    """One line ending in a full stop, capitalised only when asked."""
    # Only our own wording is capitalised: a message may start with a name or an email address.
    text = _one_line(text)
    if capitalize:
        text = text[:1].upper() + text[1:]
    return text if not text or text[-1] in ".!?…" else text + "."


def _data(text: str, limit: int = DETAIL_LIMIT) -> _Rich:
    shown = truncate(escape(_one_line(text)), limit)
    return _Rich(shown, shown)


def _bold(text: str) -> _Rich:
    shown = truncate(escape(_one_line(text)), 200)
    return _Rich(f"*{shown}*", shown)


def _code(text: str) -> _Rich:
    shown = truncate(escape(_one_line(text).replace("`", "'")), 200)
    return _Rich(f"`{shown}`", shown)


def _label(text: str) -> _Rich:
    return _Rich(f"*{escape(text)}*", escape(text))


def _icon(name: str) -> _Rich:
    return _Rich(f":{name}: ", "")


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


def _short_code(code: str) -> str:
    return code if len(code) <= 6 else code[:4] + "…"


def _command(sub: str, grant: GrantRef) -> _Rich:
    return _code(f"{COMMAND} {sub} {grant.external_id} {grant.conference}")


def _who(grant: GrantRef) -> _Rich:
    return _rich(_bold(grant.full_name), " (", _data(grant.conference_name, 200), ")")


def _grant_line(grant: GrantRef) -> _Rich:
    parts: list[_Rich | str] = ["Grant ", _code(grant.external_id), " · ", _code(grant.conference)]
    if grant.email:
        parts += [" · ", _data(grant.email, 320)]
    return _rich(*parts)


# --- Blocks.


def _text(md: str, *, verbatim: bool = True, limit: int = TEXT_LIMIT) -> Block:
    return {"type": "mrkdwn", "text": truncate(md, limit) or "-", "verbatim": verbatim}


def _section(text: _Rich, *, fields: Sequence[_Rich] = (), verbatim: bool = True) -> Block:
    block: Block = {"type": "section", "text": _text(text.md, verbatim=verbatim)}
    if fields:
        block["fields"] = [_text(f.md, limit=FIELD_LIMIT) for f in fields[:MAX_FIELDS]]
    return block


def _context(*parts: _Rich) -> Block:
    return {"type": "context", "elements": [_text(p.md) for p in parts[:MAX_CONTEXT_ELEMENTS]]}


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


def _field(label: str, value: _Rich | str) -> _Rich:
    return _rich(_label(label), "\n", value)


def _message(fallback: _Rich, blocks: list[Block]) -> Message:
    if len(blocks) > MAX_BLOCKS:
        hidden = len(blocks) - MAX_BLOCKS + 1
        blocks = [*blocks[: MAX_BLOCKS - 1], _context(_rich(f"…and {hidden} more not shown."))]
    text = truncate(_one_line(fallback.plain), FALLBACK_LIMIT) or "Voucher bot"
    return Message(text=text, blocks=blocks)


def _simple(icon: str, text: _Rich, *, verbatim: bool = True) -> Message:
    return _message(text, [_section(_rich(_icon(icon), text), verbatim=verbatim)])


# --- Command answers.

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
    ("help", "", "this message", ""),
)


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


_WORKING_PHRASES = {
    "issue": "Issuing a voucher for",
    "resend": "Sending the voucher email again to",
    "revoke": "Revoking the grant voucher of",
    "status": "Looking up",
}


def working_message(action: str, target: str) -> Message:
    """The immediate answer while the work runs: `action` is a subcommand or a verb phrase.

    `target` is what the person typed; a `<@U123|name>` mention is shown as a mention.
    """
    phrase = _WORKING_PHRASES.get(action.strip().lower(), action.strip())
    later = " I'll post the result here and in the grant's thread."
    if action.strip().lower() == "status":
        later = ""
    return _simple(_WORKING, _rich(phrase, " ", _target(target), "…", later))


def _target(target: str) -> _Rich:
    target = target.strip()
    if mention := _MENTION.match(target):
        return _Rich(f"<@{mention.group(1)}>", f"<@{mention.group(1)}>")
    if mailto := _MAILTO.match(target):
        return _data(mailto.group(1), 320)
    return _data(target, 200)


def problem_message(text: str) -> Message:
    """One clear problem (no grant found, several grants, no email ...) with a warning sign."""
    return _simple(_WARNING, _data(_sentence(text), TEXT_LIMIT - 20))


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


# --- Outcomes, line by line.

_EMAIL_ICONS: dict[EmailResult, str] = {
    EmailResult.SENT: _EMAIL,
    EmailResult.ALREADY_SENT: _EMAIL,
    EmailResult.NOT_DUE: _INFO,
    EmailResult.IN_PROGRESS: _WAITING,
    EmailResult.DISABLED: _WAITING,
    EmailResult.RETRY_SCHEDULED: _WAITING,
    EmailResult.FAILED: _FAILED,
}
# An email step worth telling the thread about: something happened to the email just now.
_EMAIL_NEWS = frozenset({EmailResult.SENT, EmailResult.RETRY_SCHEDULED, EmailResult.FAILED})
# Provisioning results that change nothing worth a thread reply or a new parent state.
_QUIET_PROVISION = frozenset(
    {
        ProvisionResult.GRANT_NOT_FOUND,
        ProvisionResult.NOT_CONFIRMED,
        ProvisionResult.NOT_ISSUING,
        ProvisionResult.IN_PROGRESS,
    }
)
# Revocation results that changed the voucher or need a person.
_REVOKE_NEWS = frozenset(
    {
        RevokeResult.REVOKED,
        RevokeResult.ALREADY_GONE,
        RevokeResult.REDEEMED,
        RevokeResult.NEEDS_REVIEW,
    }
)


def _email_failed(email: EmailOutcome | None) -> bool:
    return email is not None and email.result is EmailResult.FAILED


def _email_line(email: EmailOutcome) -> _Rich:
    detail = _sentence(email.detail, capitalize=True)
    return _rich(_icon(_EMAIL_ICONS[email.result]), _data(detail))


def _wants_retry(outcome: Outcome) -> bool:
    """Failures the Retry button can fix; a person's decision or a scheduled retry gets none."""
    if outcome.grant is None:
        return False
    if isinstance(outcome, ProvisionOutcome):
        return outcome.result is ProvisionResult.FAILED or _email_failed(outcome.email)
    if isinstance(outcome, ResendOutcome):
        return _email_failed(outcome.email)
    # Revokes get no button: one Retry action would have to guess between issuing and revoking,
    # and a revoke should be a deliberate act, so the answer names the command to run again.
    return False


def _provision_is_quiet(outcome: ProvisionOutcome) -> bool:
    if outcome.grant is None or outcome.result in _QUIET_PROVISION:
        return True
    if outcome.result is ProvisionResult.RETRY_SCHEDULED and (outcome.attempt or 1) > 1:
        return True  # the thread already says Pretix is unavailable; do not repeat it 8 times
    nothing_sent = outcome.email is None or outcome.email.result not in _EMAIL_NEWS
    return outcome.result is ProvisionResult.ALREADY_GRANT and nothing_sent


def _provision_headline(outcome: ProvisionOutcome, *, named: bool) -> _Rich:
    """What happened to the voucher; `named` says whose (outside the grant's own thread)."""
    grant = outcome.grant
    code = _code(outcome.voucher_code or "?")
    whose = _rich(" for ", _who(grant)) if named and grant else _Rich()
    name = _bold(grant.full_name) if grant else _Rich("The grantee", "The grantee")
    pretix = _Rich()
    if outcome.pretix_voucher_id is not None:
        pretix = _rich(f" (Pretix #{outcome.pretix_voucher_id})")
    message = _data(_sentence(outcome.message))
    match outcome.result:
        case ProvisionResult.CREATED:
            return _rich(_icon(_OK), "Grant voucher ", code, " created", whose, pretix, ".")
        case ProvisionResult.ADOPTED:
            return _rich(
                _icon(_OK),
                "Grant voucher ",
                code,
                " created",
                whose,
                pretix,
                " (found in Pretix after an earlier attempt and adopted).",
            )
        case ProvisionResult.UPGRADED:
            return _rich(
                _icon(_OK),
                "Co-speaker voucher ",
                code,
                " upgraded to a free grant voucher",
                whose,
                pretix,
                ".",
            )
        case ProvisionResult.ALREADY_SPEAKER:
            return _rich(
                _icon(_INFO), name, " already has speaker voucher ", code, "; no grant voucher."
            )
        case ProvisionResult.ALREADY_GRANT:
            return _rich(_icon(_INFO), name, " already has grant voucher ", code, ".")
        case (
            ProvisionResult.RETRY_SCHEDULED
            | ProvisionResult.PRETIX_DISABLED
            | ProvisionResult.IN_PROGRESS
        ):
            return _rich(_icon(_WAITING), message)
        case ProvisionResult.NEEDS_REVIEW:
            return _rich(_icon(_WARNING), "Needs a person: ", message)
        case ProvisionResult.FAILED:
            return _rich(_icon(_FAILED), "Failed: ", message)
        case ProvisionResult.HELD | ProvisionResult.NO_EMAIL | ProvisionResult.GRANT_NOT_FOUND:
            return _rich(_icon(_WARNING), message)
        case ProvisionResult.NOT_CONFIRMED | ProvisionResult.NOT_ISSUING:
            return _rich(_icon(_INFO), message)
        case _:
            assert_never(outcome.result)


def _provision_lines(outcome: ProvisionOutcome, *, named: bool) -> list[_Rich]:
    lines = [_provision_headline(outcome, named=named)]
    if outcome.email is not None:
        lines.append(_email_line(outcome.email))
    grant = outcome.grant
    if grant is None:
        return lines
    if outcome.result is ProvisionResult.HELD:
        lines.append(_rich("If it is right, issue it with ", _command("issue", grant), "."))
    elif outcome.result is ProvisionResult.NO_EMAIL:
        lines.append(
            _rich("Add the address in the grants backend, then run ", _command("issue", grant), ".")
        )
    elif outcome.result is ProvisionResult.FAILED:
        lines.append(
            _rich("Fix the cause, then press Retry or run ", _command("issue", grant), ".")
        )
    if _email_failed(outcome.email):
        lines.append(_rich("Press Retry or run ", _command("resend", grant), " to send it again."))
    return lines


def _revoke_headline(outcome: RevokeOutcome, *, named: bool) -> _Rich:
    grant = outcome.grant
    code = _code(outcome.voucher_code or "?")
    whose = _rich(" of ", _who(grant)) if named and grant else _Rich()
    message = _data(_sentence(outcome.message))
    match outcome.result:
        case RevokeResult.REVOKED:
            return _rich(_icon(_REVOKED), "Voucher ", code, whose, " revoked: deleted in Pretix.")
        case RevokeResult.ALREADY_GONE:
            return _rich(
                _icon(_REVOKED),
                "Voucher ",
                code,
                whose,
                " revoked: it was already gone from Pretix.",
            )
        case RevokeResult.REDEEMED | RevokeResult.NEEDS_REVIEW:
            return _rich(_icon(_WARNING), "Needs a person: ", message)
        case (
            RevokeResult.ALREADY_REVOKED
            | RevokeResult.NO_VOUCHER
            | RevokeResult.NOT_A_GRANT_VOUCHER
        ):
            return _rich(_icon(_INFO), message)
        case RevokeResult.NOT_REFUSED | RevokeResult.GRANT_NOT_FOUND | RevokeResult.PRETIX_DISABLED:
            return _rich(_icon(_WARNING), message)
        case RevokeResult.IN_PROGRESS | RevokeResult.RETRY_LATER:
            return _rich(_icon(_WAITING), message)
        case RevokeResult.FAILED:
            return _rich(_icon(_FAILED), "Failed: ", message)
        case _:
            assert_never(outcome.result)


def _revoke_lines(outcome: RevokeOutcome, *, named: bool) -> list[_Rich]:
    lines = [_revoke_headline(outcome, named=named)]
    grant = outcome.grant
    if grant is not None and outcome.result is RevokeResult.RETRY_LATER:
        lines.append(_rich("To try again: ", _command("revoke", grant), "."))
    elif grant is not None and outcome.result is RevokeResult.FAILED:
        lines.append(_rich("Fix the cause, then run ", _command("revoke", grant), " again."))
    return lines


def _resend_lines(outcome: ResendOutcome, *, named: bool) -> list[_Rich]:
    grant = outcome.grant
    email = outcome.email
    if outcome.ok:
        to = _rich(" to ", _data(grant.email, 320)) if grant and grant.email else _Rich()
        whose = _rich(" for ", _who(grant)) if named and grant else _Rich()
        code = _code(outcome.voucher_code or "?")
        return [_rich(_icon(_EMAIL), "Voucher email with ", code, " sent again", to, whose, ".")]
    icon = _EMAIL_ICONS[email.result] if email else _INFO if grant else _WARNING
    lines = [_rich(_icon(icon), _data(_sentence(outcome.message)))]
    if grant is not None and _email_failed(email):
        lines.append(_rich("Press Retry or run ", _command("resend", grant), " again."))
    return lines


def _lines_for(outcome: Outcome, *, named: bool) -> list[_Rich]:
    if isinstance(outcome, ProvisionOutcome):
        return _provision_lines(outcome, named=named)
    if isinstance(outcome, RevokeOutcome):
        return _revoke_lines(outcome, named=named)
    return _resend_lines(outcome, named=named)


def _answer(outcome: Outcome) -> Message:
    lines = _lines_for(outcome, named=True)
    blocks = [_section(_lines(lines))]
    if outcome.grant is not None:
        blocks.append(_context(_grant_line(outcome.grant)))
        if _wants_retry(outcome):
            blocks.append(_retry_button(outcome.grant.id))
    return _message(_lines(lines), blocks)


def provision_result_message(outcome: ProvisionOutcome) -> Message:
    """The answer to the member of staff who asked to issue a voucher."""
    return _answer(outcome)


def resend_result_message(outcome: ResendOutcome) -> Message:
    """The answer to the member of staff who asked to send the voucher email again."""
    return _answer(outcome)


def revoke_result_message(outcome: RevokeOutcome) -> Message:
    """The answer to the member of staff who asked to revoke a voucher."""
    return _answer(outcome)


# --- /voucher status.


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
        blocks.append(
            _section(
                _rich(_icon(_WARNING), _label("Held for staff:"), " ", _data(report.hold_reason))
            )
        )
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
        blocks.append(
            _section(_rich(_icon(_WARNING), _label("Last error:"), " ", _data(voucher.last_error)))
        )
    email_fields = [
        _field("Sent at", _when(voucher.email_sent_at)),
        _field("Emails sent", str(voucher.emails_sent)),
    ]
    email_state = _words(voucher.email_state.value)
    blocks.append(_section(_rich(_label("Email"), " ", email_state), fields=email_fields))
    if voucher.email_last_error:
        blocks.append(
            _section(
                _rich(_icon(_WARNING), _label("Email error:"), " ", _data(voucher.email_last_error))
            )
        )
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


# --- The grant's thread in the conference channel.


def thread_parent(grant: GrantRef, *, state: str) -> Message:
    """The one parent message per grantee and conference; `state` comes from `parent_state`.

    `state` is trusted mrkdwn (already escaped by `parent_state`); do not pass raw data.
    """
    headline = _rich(
        _bold(grant.full_name), " confirmed their grant for ", _bold(grant.conference_name)
    )
    state_md = _Rich(truncate(state, TEXT_LIMIT), "")
    blocks = [_section(headline), _context(state_md, _rich("Grant ", _code(grant.external_id)))]
    return _message(headline, blocks)


def parent_state(outcome: Outcome | GrantIntake) -> str | None:
    """The parent's one-line state after this outcome (mrkdwn), or None when it does not change."""
    if isinstance(outcome, GrantIntake):
        return _intake_state(outcome)
    if isinstance(outcome, ProvisionOutcome):
        return _provision_state(outcome)
    if isinstance(outcome, RevokeOutcome):
        return _revoke_state(outcome)
    return _resend_state(outcome)


def _state(icon: str, *parts: _Rich | str) -> str:
    return _rich(_icon(icon), *parts).md


def _voucher_state(code: str | None, email: EmailOutcome | None, *, speaker: bool) -> str:
    voucher = _rich("speaker voucher " if speaker else "voucher ", _code(_short_code(code or "?")))
    result = email.result if email is not None else EmailResult.NOT_DUE
    match result:
        case EmailResult.SENT | EmailResult.ALREADY_SENT:
            return _state(_OK, voucher, " emailed")
        case EmailResult.NOT_DUE:
            return _state(_OK, voucher, " ready")
        case EmailResult.IN_PROGRESS:
            return _state(_WAITING, voucher, " ready, email being sent")
        case EmailResult.DISABLED:
            return _state(_WAITING, voucher, " ready, email waits until email is configured")
        case EmailResult.RETRY_SCHEDULED:
            return _state(_WAITING, voucher, " ready, email will be retried")
        case EmailResult.FAILED:
            return _state(_WARNING, "needs a person: ", voucher, " ready, email failed")
        case _:
            assert_never(result)


def _provision_state(outcome: ProvisionOutcome) -> str | None:
    if _provision_is_quiet(outcome):
        return None
    if outcome.has_voucher:
        speaker = outcome.result is ProvisionResult.ALREADY_SPEAKER
        return _voucher_state(outcome.voucher_code, outcome.email, speaker=speaker)
    match outcome.result:
        case ProvisionResult.NO_EMAIL:
            return _state(_WARNING, "needs a person: the grant has no email address")
        case ProvisionResult.HELD:
            return _state(_WARNING, "held for staff: not issued automatically")
        case ProvisionResult.PRETIX_DISABLED:
            return _state(_WAITING, "waiting for Pretix to be configured")
        case ProvisionResult.RETRY_SCHEDULED:
            return _state(_WAITING, "waiting for Pretix; will retry")
        case ProvisionResult.NEEDS_REVIEW:
            return _state(_WARNING, "needs a person")
        case ProvisionResult.FAILED:
            return _state(_FAILED, "failed; Retry is in the thread")
        case _:
            return None


def _revoke_state(outcome: RevokeOutcome) -> str | None:
    if outcome.grant is None:
        return None
    code = _code(_short_code(outcome.voucher_code or "?"))
    match outcome.result:
        case RevokeResult.REVOKED | RevokeResult.ALREADY_GONE:
            return _state(_REVOKED, "voucher ", code, " revoked")
        case RevokeResult.REDEEMED:
            return _state(_WARNING, "needs a person: voucher ", code, " was used, not revoked")
        case RevokeResult.NEEDS_REVIEW:
            return _state(_WARNING, "needs a person: revoke ", code, " by hand or keep it")
        case _:
            return None


def _resend_state(outcome: ResendOutcome) -> str | None:
    if outcome.grant is None:
        return None
    if outcome.ok:
        return _voucher_state(outcome.voucher_code, outcome.email, speaker=False)
    if outcome.email is not None and outcome.email.result in _EMAIL_NEWS:
        return _voucher_state(outcome.voucher_code, outcome.email, speaker=False)
    return None


def _intake_state(intake: GrantIntake) -> str | None:
    if intake.grant is None:
        return None
    if intake.held:
        return _state(_WARNING, "held for staff: not issued automatically")
    if intake.refused_with_voucher:
        return _state(_WARNING, "needs a person: no longer confirmed, voucher still exists")
    if intake.provision:
        return _state(_WORKING, "issuing the voucher")
    return None


def thread_reply(outcome: Outcome) -> Message | None:
    """One reply in the grant's thread per meaningful step, or None for a no-op."""
    grant = outcome.grant
    if grant is None:
        return None
    if isinstance(outcome, ProvisionOutcome) and _provision_is_quiet(outcome):
        return None
    if isinstance(outcome, RevokeOutcome) and outcome.result not in _REVOKE_NEWS:
        return None
    if isinstance(outcome, ResendOutcome) and not (
        outcome.ok or (outcome.email is not None and outcome.email.result in _EMAIL_NEWS)
    ):
        return None
    lines = _lines_for(outcome, named=False)
    blocks = [_section(_lines(lines))]
    if _wants_retry(outcome):
        blocks.append(_retry_button(grant.id))
    return _message(_rich(_data(grant.full_name, 200), ": ", _lines(lines)), blocks)


def intake_reply(intake: GrantIntake) -> Message | None:
    """A thread reply for a grant notification that needs staff, or None."""
    grant = intake.grant
    if grant is None:
        return None
    if intake.held:
        hint = _rich("If it is right, issue it with ", _command("issue", grant), ".")
    elif intake.refused_with_voucher:
        hint = _rich("Run ", _command("revoke", grant), " if it should go.")
    else:
        return None
    lines = [_rich(_icon(_WARNING), _data(_sentence(intake.message))), hint]
    return _message(
        _rich(_data(grant.full_name, 200), ": ", _lines(lines)), [_section(_lines(lines))]
    )
