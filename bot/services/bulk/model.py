"""The bulk issuance vocabulary: branches, a frozen request's lines, decisions, progress.

Plain frozen dataclasses and enums, detached from any session, for every edge to render
(the CLI and the Slack builders).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from bot.services.outcomes import GrantRef
from bot.storage import BulkItemState, BulkStatus


class Branch(enum.StrEnum):
    """Where a grant of a bulk request goes, as the preview counts it (stored in BulkItem)."""

    NEW = "new"  # a new grant voucher (also: a new code after a revoke)
    UPGRADE = "co_speaker_upgrade"  # a co-speaker voucher upgraded to grant terms
    EMAIL_ONLY = "email_only"  # a voucher exists, its email never went out
    FINISH = "finish"  # a create or upgrade left half-way, finished with the same key
    RETRY = "retry"  # a voucher that failed earlier, tried again
    SPEAKER = "speaker"  # a speaker voucher in place, its email sent: nothing to do
    DONE = "already_done"  # a grant voucher in place, its email sent: nothing to do
    HELD = "held"  # held for staff (a confirmation not from waiting_for_confirmation)
    NO_EMAIL = "no_email"  # the grant has no (usable) email address
    EMAIL_CHANGED = "email_changed"  # a voucher went to another address; a person decides
    OTHER = "other"  # anything else the rule says (the line's detail says what)


# Branches a run acts on; every other branch is frozen as skipped.
ACTIONABLE = frozenset({Branch.NEW, Branch.UPGRADE, Branch.EMAIL_ONLY, Branch.FINISH, Branch.RETRY})
# Branches that write to Pretix.
PRETIX_WORK = frozenset({Branch.NEW, Branch.UPGRADE, Branch.FINISH, Branch.RETRY})

BRANCH_LABEL: dict[Branch, str] = {
    Branch.NEW: "new voucher",
    Branch.UPGRADE: "co-speaker upgrade",
    Branch.EMAIL_ONLY: "email only",
    Branch.FINISH: "finish a half-done voucher",
    Branch.RETRY: "retry a failed voucher",
    Branch.SPEAKER: "speaker voucher",
    Branch.DONE: "already done",
    Branch.HELD: "held",
    Branch.NO_EMAIL: "no email",
    Branch.EMAIL_CHANGED: "email changed",
    Branch.OTHER: "other",
}


class BulkConferenceError(Exception):
    """The conference of a bulk request cannot be chosen (unknown, several, not issuing)."""


@dataclass(frozen=True)
class BulkLine:
    """One grantee of a preview or a run: its branch and, once run, what happened."""

    grant: GrantRef
    branch: Branch
    detail: str = ""
    state: BulkItemState = BulkItemState.PENDING
    result: str | None = None  # a ProvisionResult value, or why it was skipped

    @property
    def actionable(self) -> bool:
        """Whether the run acts on this grantee."""
        return self.branch in ACTIONABLE


@dataclass(frozen=True, kw_only=True)
class BulkRef:
    """A stored bulk request, enough to find and name its Slack message."""

    request_id: int
    conference: str
    conference_name: str
    status: BulkStatus
    requested_by: str
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    expires_at: dt.datetime
    slack_channel: str | None = None
    slack_ts: str | None = None
    retry_of_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class BulkPreview:
    """A bulk request's frozen list (or, read-only, what it would be), by branch.

    `request` is None for a read-only preview, and when nothing is due (nothing stored).
    """

    conference: str
    conference_name: str
    slack_channel: str | None
    lines: tuple[BulkLine, ...]
    request: BulkRef | None = None

    @property
    def counts(self) -> Counter[Branch]:
        """How many grantees go each way."""
        return Counter(line.branch for line in self.lines)

    @property
    def to_do(self) -> int:
        """How many grantees the run would act on."""
        return sum(1 for line in self.lines if line.actionable)

    @property
    def nothing_to_do(self) -> bool:
        """Nothing is due: no buttons, no approval."""
        return self.to_do == 0

    @property
    def skipped(self) -> tuple[BulkLine, ...]:
        """The grantees a run leaves alone, each with why."""
        return tuple(line for line in self.lines if not line.actionable)


class DecisionResult(enum.StrEnum):
    """How an approve or reject click on a bulk request ended."""

    APPROVED = "approved"
    REJECTED = "rejected"
    SELF_APPROVAL_REFUSED = "self_approval_refused"
    EXPIRED = "expired"
    ALREADY_DECIDED = "already_decided"  # someone else decided first: `winner` names them
    NOT_FOUND = "not_found"


@dataclass(frozen=True, kw_only=True)
class BulkDecision:
    """The result of `decide_bulk`; `request` is the request as it now stands."""

    result: DecisionResult
    request: BulkRef | None
    message: str

    @property
    def won(self) -> bool:
        """This click decided the request (it must now run, or say it was rejected)."""
        return self.result in (DecisionResult.APPROVED, DecisionResult.REJECTED)

    @property
    def winner(self) -> str | None:
        """Who decided the request (for the loser of a race)."""
        return self.request.decided_by if self.request else None


@dataclass(frozen=True, kw_only=True)
class BulkProgress:
    """Counts while a run goes, after each chunk."""

    request_id: int
    total: int  # the grantees the run acts on (the frozen actionable list)
    processed: int  # of those, how many are no longer pending
    created: int = 0
    upgraded: int = 0
    emailed: int = 0
    skipped: int = 0  # changed since the preview (or frozen as skipped: see BulkSummary)
    failed: int = 0

    @property
    def fraction(self) -> float:
        """How far the run is, 0..1."""
        return 1.0 if self.total == 0 else min(self.processed / self.total, 1.0)


class RunOutcome(enum.StrEnum):
    """How a `run_bulk` call ended."""

    DONE = "done"  # this call ran the request to its end
    NOT_APPROVED = "not_approved"  # awaiting, rejected or expired: nothing runs
    RUNNING_ELSEWHERE = "running_elsewhere"  # another runner holds the lease
    ALREADY_DONE = "already_done"
    LOST_LEASE = "lost_lease"  # another runner took over half-way (this one stopped)
    NOT_FOUND = "not_found"


@dataclass(frozen=True, kw_only=True)
class BulkSummary:
    """What a run did: counts, and every grantee it did not provision with why."""

    outcome: RunOutcome
    request: BulkRef | None
    progress: BulkProgress | None = None
    failed: tuple[BulkLine, ...] = ()  # tried and failed; `retry_failed` takes these
    skipped: tuple[BulkLine, ...] = ()  # changed since the preview: nothing done
    seconds: float = 0.0
    message: str = ""
    results: dict[str, int] = field(default_factory=dict)  # by result value

    @property
    def ran(self) -> bool:
        """This call ran the request to its end."""
        return self.outcome is RunOutcome.DONE

    @property
    def all_good(self) -> bool:
        """Nothing failed (skipped grantees changed since the preview; a person may look)."""
        return self.ran and not self.failed


class BulkReporter(Protocol):
    """Told how a run goes: the CLI draws a progress bar, Slack updates one message.

    Called from the runner's thread; must not raise (a failure is logged and ignored) and
    must not block for long.
    """

    def progress(self, progress: BulkProgress) -> None:
        """After each chunk (and once at the start)."""

    def finished(self, summary: BulkSummary) -> None:
        """Once, when the run ended (whatever the outcome)."""


class NoReporter:
    """A reporter that tells nobody."""

    def progress(self, progress: BulkProgress) -> None:
        """Ignore the progress."""

    def finished(self, summary: BulkSummary) -> None:
        """Ignore the summary."""
