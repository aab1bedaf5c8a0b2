"""Typed results of the services; the edges render them, in words, for Slack or a terminal."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from bot.storage import VoucherType


class ProvisionResult(enum.StrEnum):
    """How one provisioning call ended for the voucher itself."""

    CREATED = "created"
    ADOPTED = "adopted"
    UPGRADED = "upgraded"
    ALREADY_SPEAKER = "already_speaker"
    ALREADY_GRANT = "already_grant"
    GRANT_NOT_FOUND = "grant_not_found"
    NOT_CONFIRMED = "not_confirmed"
    NO_EMAIL = "no_email"
    HELD = "held"
    NOT_ISSUING = "not_issuing"
    PRETIX_DISABLED = "pretix_disabled"
    IN_PROGRESS = "in_progress"
    RETRY_SCHEDULED = "retry_scheduled"
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"


# Results after which the person has a usable voucher for the conference.
HAS_VOUCHER = frozenset(
    {
        ProvisionResult.CREATED,
        ProvisionResult.ADOPTED,
        ProvisionResult.UPGRADED,
        ProvisionResult.ALREADY_SPEAKER,
        ProvisionResult.ALREADY_GRANT,
    }
)
# Results that a member of staff should look at.
NEEDS_ATTENTION = frozenset(
    {ProvisionResult.NEEDS_REVIEW, ProvisionResult.FAILED, ProvisionResult.HELD}
)


class EmailResult(enum.StrEnum):
    """How the voucher email step ended."""

    SENT = "sent"
    ALREADY_SENT = "already_sent"
    NOT_DUE = "not_due"
    IN_PROGRESS = "in_progress"
    DISABLED = "disabled"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"


class RevokeResult(enum.StrEnum):
    """How a revocation ended."""

    REVOKED = "revoked"
    ALREADY_GONE = "already_gone"
    ALREADY_REVOKED = "already_revoked"
    REDEEMED = "redeemed"
    NOT_REFUSED = "not_refused"
    NO_VOUCHER = "no_voucher"
    NOT_A_GRANT_VOUCHER = "not_a_grant_voucher"
    NEEDS_REVIEW = "needs_review"
    GRANT_NOT_FOUND = "grant_not_found"
    IN_PROGRESS = "in_progress"
    PRETIX_DISABLED = "pretix_disabled"
    RETRY_LATER = "retry_later"
    FAILED = "failed"


@dataclass(frozen=True)
class Step:
    """One thing the service did or decided, in order."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class GrantRef:
    """Enough of a grant to name it in a message."""

    id: int
    external_id: str
    conference: str
    conference_id: int
    conference_name: str
    full_name: str
    email: str | None
    slack_user_id: str | None


@dataclass(frozen=True)
class EmailOutcome:
    """The result of one attempt to deliver (or re-deliver) a voucher email."""

    result: EmailResult
    detail: str
    message_id: str | None = None


@dataclass(frozen=True)
class ProvisionOutcome:
    """Everything one `provision_grant_voucher` call did, for every edge to render."""

    result: ProvisionResult
    message: str
    grant: GrantRef | None
    voucher_code: str | None = None
    voucher_type: VoucherType | None = None
    pretix_voucher_id: int | None = None
    email: EmailOutcome | None = None
    steps: tuple[Step, ...] = field(default_factory=tuple)
    attempt: int | None = None  # which try this was, when Pretix was unavailable
    voucher_id: int | None = None  # the bot's voucher row, when there is one

    @property
    def has_voucher(self) -> bool:
        """Whether the grantee now holds a usable voucher."""
        return self.result in HAS_VOUCHER

    @property
    def needs_attention(self) -> bool:
        """Whether staff should look at this grant."""
        failed_email = self.email is not None and self.email.result is EmailResult.FAILED
        return self.result in NEEDS_ATTENTION or failed_email


@dataclass(frozen=True)
class RevokeOutcome:
    """The result of a revocation request."""

    result: RevokeResult
    message: str
    grant: GrantRef | None
    voucher_code: str | None = None
    steps: tuple[Step, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ResendOutcome:
    """The result of an explicit request to send the voucher email again."""

    ok: bool
    message: str
    grant: GrantRef | None
    voucher_code: str | None = None
    email: EmailOutcome | None = None


class IntakeAction(enum.StrEnum):
    """What an incoming notification did to the stored data."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"
    IGNORED = "ignored"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class GrantIntake:
    """The result of one grant notification."""

    action: IntakeAction
    message: str
    grant: GrantRef | None = None
    provision: bool = False
    held: bool = False
    refused_with_voucher: bool = False


@dataclass(frozen=True)
class VoucherIntake:
    """The result of one voucher notification."""

    action: IntakeAction
    message: str
    needs_person: bool = False  # refused because applying it could be wrong


class HeldResult(enum.StrEnum):
    """How a decision on a held grant ended."""

    ISSUED = "issued"  # the hold was released and provisioning ran (see `provision`)
    DISMISSED = "dismissed"
    ALREADY_DISMISSED = "already_dismissed"
    NOT_HELD = "not_held"  # released (issued) by someone, or never held
    NOT_CONFIRMED = "not_confirmed"
    GRANT_NOT_FOUND = "grant_not_found"
    REASON_MISSING = "reason_missing"


class HeldDecision(enum.StrEnum):
    """Which decision was asked for."""

    ISSUE = "held_issue"
    DISMISS = "held_dismiss"


@dataclass(frozen=True, kw_only=True)
class HeldOutcome:
    """What one decision did; `decided_by`/`decided_at` name who won when this one lost."""

    decision: HeldDecision
    result: HeldResult
    message: str
    grant: GrantRef | None
    decided_by: str | None = None  # an actor label, e.g. "button:U0STAFF1"
    decided_at: dt.datetime | None = None
    reason: str | None = None
    provision: ProvisionOutcome | None = None

    @property
    def done(self) -> bool:
        """Whether this call made the decision (rather than being refused)."""
        return self.result in (HeldResult.ISSUED, HeldResult.DISMISSED)
