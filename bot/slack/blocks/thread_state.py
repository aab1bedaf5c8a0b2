"""The one-line state on a grant thread's parent message, after each outcome."""

from __future__ import annotations

from typing import assert_never

from bot.services.outcomes import (
    EmailOutcome,
    EmailResult,
    GrantIntake,
    HeldOutcome,
    ProvisionOutcome,
    ProvisionResult,
    ResendOutcome,
    RevokeOutcome,
    RevokeResult,
)
from bot.slack.blocks._outcome_lines import Outcome, for_channel
from bot.slack.blocks._text import (
    _FAILED,
    _OK,
    _REVOKED,
    _WAITING,
    _WARNING,
    _WORKING,
    _code,
    _icon,
    _Rich,
    _rich,
)
from bot.slack.blocks.decisions import held_state
from bot.slack.blocks.threads import _provision_is_quiet, _resend_is_quiet


def parent_state(outcome: Outcome | GrantIntake | HeldOutcome) -> str | None:
    """The parent's one-line state after this outcome (mrkdwn), or None when it does not change.

    The parent is in a channel: a voucher code shows its first 4 characters only.
    """
    if isinstance(outcome, GrantIntake):
        return _intake_state(outcome)
    if isinstance(outcome, HeldOutcome):
        return held_state(outcome)
    if isinstance(outcome, ProvisionOutcome):
        return _provision_state(for_channel(outcome))
    if isinstance(outcome, RevokeOutcome):
        return _revoke_state(for_channel(outcome))
    return _resend_state(for_channel(outcome))


def _state(icon: str, *parts: _Rich | str) -> str:
    return _rich(_icon(icon), *parts).md


_HELD_STATE = _state(_WARNING, "held for staff: not issued automatically")


def _short_code(code: str | None) -> _Rich:
    """The (already masked) code, or "?" when the outcome names none."""
    return _code(code or "?")


def _voucher_state(code: str | None, email: EmailOutcome | None, *, speaker: bool) -> str:
    voucher = _rich("speaker voucher " if speaker else "voucher ", _short_code(code))
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
            return _HELD_STATE
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
    code = _short_code(outcome.voucher_code)
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
    if _resend_is_quiet(outcome):
        return None
    return _voucher_state(outcome.voucher_code, outcome.email, speaker=False)


def _intake_state(intake: GrantIntake) -> str | None:
    if intake.grant is None:
        return None
    if intake.held:
        return _HELD_STATE
    if intake.refused_with_voucher:
        return _state(_WARNING, "needs a person: no longer confirmed, voucher still exists")
    if intake.provision:
        return _state(_WORKING, "issuing the voucher")
    return None
