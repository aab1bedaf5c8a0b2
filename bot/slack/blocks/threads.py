"""The grant's thread in the conference channel: its parent, its replies, what stays quiet."""

from __future__ import annotations

from bot.services.codes import redact_codes
from bot.services.outcomes import (
    EmailOutcome,
    EmailResult,
    GrantIntake,
    GrantRef,
    HeldOutcome,
    ProvisionOutcome,
    ProvisionResult,
    ResendOutcome,
    RevokeOutcome,
    RevokeResult,
)
from bot.slack.blocks._layout import (
    TEXT_LIMIT,
    Block,
    Message,
    _context,
    _message,
    _retry_button,
    _section,
)
from bot.slack.blocks._outcome_lines import (
    Outcome,
    _lines_for,
    _wants_retry,
    for_channel,
)
from bot.slack.blocks._text import (
    _WARNING,
    _bold,
    _code,
    _command,
    _data,
    _icon,
    _lines,
    _Rich,
    _rich,
    _sentence,
    truncate,
)
from bot.slack.blocks.decisions import held_buttons, held_thread_reply, revoke_button

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


def thread_parent(grant: GrantRef, *, state: str) -> Message:
    """The one parent message per grantee and conference; `state` comes from `parent_state`.

    `state` is trusted mrkdwn (already escaped, codes masked, by `parent_state`); do not pass
    raw data.
    """
    headline = _rich(
        _bold(grant.full_name), " confirmed their grant for ", _bold(grant.conference_name)
    )
    state_md = _Rich(truncate(state, TEXT_LIMIT), "")
    blocks = [_section(headline), _context(state_md, _rich("Grant ", _code(grant.external_id)))]
    return _message(headline, blocks)


def thread_reply(outcome: Outcome | HeldOutcome) -> Message | None:
    """One reply in the grant's thread per meaningful step, or None for a no-op.

    The thread is in a channel: voucher codes show their first 4 characters only. A held
    grant's reply carries the Issue / Dismiss buttons.
    """
    if isinstance(outcome, HeldOutcome):
        return held_thread_reply(outcome)
    grant = outcome.grant
    if grant is None or _is_quiet(outcome):
        return None
    lines = _lines_for(for_channel(outcome), named=False)
    held = isinstance(outcome, ProvisionOutcome) and outcome.result is ProvisionResult.HELD
    return _reply(
        grant,
        lines,
        retry=_wants_retry(outcome),
        buttons=held_buttons(grant.id) if held else None,
    )


def intake_reply(intake: GrantIntake) -> Message | None:
    """A thread reply for a grant notification that needs staff, or None."""
    grant = intake.grant
    if grant is None:
        return None
    if intake.held:
        hint = _rich("Decide with the buttons below, or issue it with ", _command("issue", grant))
        buttons = held_buttons(grant.id)
    elif intake.refused_with_voucher:
        # The intake message already says "revoke it if it should go": the button here.
        hint = _rich("Revoke it with the button below, or ", _command("revoke", grant), ".")
        buttons = revoke_button(grant.id)
    else:
        return None
    message = redact_codes(intake.message, ())
    lines = [_rich(_icon(_WARNING), _data(_sentence(message))), hint]
    return _reply(grant, lines, buttons=buttons)


def _reply(
    grant: GrantRef, lines: list[_Rich], *, retry: bool = False, buttons: Block | None = None
) -> Message:
    """The lines, then Retry when it may help (or the decision's buttons); the notification
    text starts with the name."""
    blocks = [_section(_lines(lines))]
    if retry:
        blocks.append(_retry_button(grant.id))
    if buttons is not None:
        blocks.append(buttons)
    return _message(_rich(_data(grant.full_name, 200), ": ", _lines(lines)), blocks)


def _is_quiet(outcome: Outcome) -> bool:
    """Whether the outcome changes nothing the thread should hear about."""
    if isinstance(outcome, ProvisionOutcome):
        return _provision_is_quiet(outcome)
    if isinstance(outcome, RevokeOutcome):
        return outcome.grant is None or outcome.result not in _REVOKE_NEWS
    return _resend_is_quiet(outcome)


def _email_news(email: EmailOutcome | None) -> bool:
    return email is not None and email.result in _EMAIL_NEWS


def _provision_is_quiet(outcome: ProvisionOutcome) -> bool:
    if outcome.grant is None or outcome.result in _QUIET_PROVISION:
        return True
    if outcome.result is ProvisionResult.RETRY_SCHEDULED and (outcome.attempt or 1) > 1:
        return True  # the thread already says Pretix is unavailable; do not repeat it 8 times
    return outcome.result is ProvisionResult.ALREADY_GRANT and not _email_news(outcome.email)


def _resend_is_quiet(outcome: ResendOutcome) -> bool:
    return outcome.grant is None or not (outcome.ok or _email_news(outcome.email))
