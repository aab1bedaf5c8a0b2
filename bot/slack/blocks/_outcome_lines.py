"""What an issue, revoke or resend outcome says, line by line: for staff and for the thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeAlias, assert_never, overload

from bot.services.codes import mask_code, redact_codes
from bot.services.outcomes import (
    EmailOutcome,
    EmailResult,
    GrantRef,
    ProvisionOutcome,
    ProvisionResult,
    ResendOutcome,
    RevokeOutcome,
    RevokeResult,
    Step,
)
from bot.slack.blocks._text import (
    _EMAIL,
    _FAILED,
    _INFO,
    _OK,
    _REVOKED,
    _WAITING,
    _WARNING,
    _bold,
    _code,
    _command,
    _data,
    _icon,
    _Rich,
    _rich,
    _sentence,
    _who,
)

Outcome: TypeAlias = ProvisionOutcome | RevokeOutcome | ResendOutcome


@overload
def for_channel(outcome: ProvisionOutcome) -> ProvisionOutcome: ...
@overload
def for_channel(outcome: RevokeOutcome) -> RevokeOutcome: ...
@overload
def for_channel(outcome: ResendOutcome) -> ResendOutcome: ...
@overload
def for_channel(outcome: Outcome) -> Outcome: ...
def for_channel(outcome: Outcome) -> Outcome:
    """The outcome as a channel message may tell it: every voucher code masked (`ABCD…`).

    A code is as good as a free ticket and a channel is read by many: its code, and any other
    code the service's free text names (message, email detail, steps), shows 4 characters only.
    Answers to the member of staff who asked (ephemeral) render the outcome itself.
    """
    codes = [outcome.voucher_code]

    def hide(text: str) -> str:
        return redact_codes(text, codes)

    code = mask_code(outcome.voucher_code) if outcome.voucher_code else None
    if isinstance(outcome, RevokeOutcome):
        steps = _hide_steps(outcome.steps, hide)
        return replace(outcome, message=hide(outcome.message), voucher_code=code, steps=steps)
    email = outcome.email
    if email is not None:
        email = replace(email, detail=hide(email.detail))
    if isinstance(outcome, ProvisionOutcome):
        return replace(
            outcome,
            message=hide(outcome.message),
            voucher_code=code,
            email=email,
            steps=_hide_steps(outcome.steps, hide),
        )
    return replace(outcome, message=hide(outcome.message), voucher_code=code, email=email)


def _hide_steps(steps: tuple[Step, ...], hide: Callable[[str], str]) -> tuple[Step, ...]:
    return tuple(replace(step, detail=hide(step.detail)) for step in steps)


_EMAIL_ICONS: dict[EmailResult, str] = {
    EmailResult.SENT: _EMAIL,
    EmailResult.ALREADY_SENT: _EMAIL,
    EmailResult.NOT_DUE: _INFO,
    EmailResult.IN_PROGRESS: _WAITING,
    EmailResult.DISABLED: _WAITING,
    EmailResult.RETRY_SCHEDULED: _WAITING,
    EmailResult.FAILED: _FAILED,
}


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


def _whose(preposition: str, grant: GrantRef | None, *, named: bool) -> _Rich:
    """Whose voucher it is, said only when `named` (outside the grant's own thread)."""
    return _rich(preposition, _who(grant)) if named and grant else _Rich()


def _issue_hint(grant: GrantRef) -> _Rich:
    """What to run for a grant held for staff, once they find it is right."""
    return _rich("If it is right, issue it with ", _command("issue", grant), ".")


def _provision_headline(outcome: ProvisionOutcome, *, named: bool) -> _Rich:
    """What happened to the voucher; `named` says whose (outside the grant's own thread)."""
    grant = outcome.grant
    code = _code(outcome.voucher_code or "?")
    whose = _whose(" for ", grant, named=named)
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
        lines.append(_issue_hint(grant))
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
    code = _code(outcome.voucher_code or "?")
    whose = _whose(" of ", outcome.grant, named=named)
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
        whose = _whose(" for ", grant, named=named)
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
