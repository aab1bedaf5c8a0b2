"""The provisioning rules as one pure function: what to do for a grant, given what is known.

`decide` reads plain facts (no session, no Pretix) and returns a `Decision`. The provisioning
runner calls it under the row lock before it acts, and the reconciler calls it to find the
work that is due: one rule for both, so they can never disagree about what is "due".

The rules (DESIGN.md): only a confirmed, unheld grant with a usable email gets a voucher; a
speaker or grant voucher for the person at that conference is enough; a co-speaker voucher is
upgraded in place; otherwise one is created. A grant whose email changed after its voucher was
issued waits for a person.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from bot.mailer import recipient_problem
from bot.storage import EmailState, GrantStatus, VoucherState, VoucherType


class Action(enum.StrEnum):
    """What the runner must do; `NOTHING` ends the call with the decision's result."""

    NOTHING = "nothing"
    CREATE = "create"  # no row for the person: reserve one and create it in Pretix
    UPGRADE = "upgrade"  # a co-speaker voucher: change it in Pretix to the grant terms
    RESUME = "resume"  # a create or upgrade left half-way: finish it with the same key
    RETRY = "retry"  # a failed row: try again as a new request
    RESTART = "restart"  # a revoked voucher of a grant confirmed again: a new code
    KEEP = "keep"  # the person has a speaker or grant voucher: link it, send the email if due


class Verdict(enum.StrEnum):
    """Why nothing (more) is done, for the outcome the edges render."""

    PROCEED = "proceed"
    HAS_VOUCHER = "has_voucher"  # a speaker or grant voucher is in place; nothing to change
    NOT_CONFIGURED = "not_configured"
    NOT_CONFIRMED = "not_confirmed"
    NO_EMAIL = "no_email"
    HELD = "held"
    WAITS_FOR_STAFF = "waits_for_staff"  # imported with --no-provision; staff must take it
    NOT_ISSUING = "not_issuing"
    UNMAILABLE = "unmailable"
    EMAIL_CHANGED = "email_changed"
    PRETIX_OFF = "pretix_off"
    IN_PROGRESS = "in_progress"
    WAITING = "waiting"  # a retry is scheduled later
    NEEDS_REVIEW = "needs_review"
    REVOKE_UNFINISHED = "revoke_unfinished"
    FAILED = "failed"  # failed for good; staff retry it


@dataclass(frozen=True, kw_only=True)
class GrantFacts:
    """What the rules need to know of a grant."""

    id: int
    status: GrantStatus
    email_key: str | None
    hold_reason: str | None
    name: str = ""
    email: str | None = None
    waits_for_staff: bool = False  # imported with `--no-provision`

    @property
    def email_problem(self) -> str | None:
        """Why no email could be written to this grantee (checked only when work is due)."""
        return recipient_problem(self.name, self.email) if self.email else None


@dataclass(frozen=True, kw_only=True)
class VoucherFacts:
    """What the rules need to know of a voucher row."""

    id: int
    grant_id: int | None
    email_key: str
    voucher_type: VoucherType
    state: VoucherState
    lease_expires_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None
    email_sent_at: dt.datetime | None = None
    email_state: EmailState = EmailState.NOT_DUE


@dataclass(frozen=True, kw_only=True)
class ConferenceFacts:
    """What the rules need to know of the grant's conference and the bot's set-up."""

    configured: bool
    issue_vouchers: bool
    pretix: bool


@dataclass(frozen=True)
class Decision:
    """What to do, and, when nothing is to be done, why."""

    action: Action
    verdict: Verdict = Verdict.PROCEED

    @property
    def acts(self) -> bool:
        """Whether the runner has work (a Pretix request, a link or a due email)."""
        return self.action is not Action.NOTHING


def _nothing(verdict: Verdict) -> Decision:
    return Decision(Action.NOTHING, verdict)


def decide(
    *,
    grant: GrantFacts,
    voucher: VoucherFacts | None,
    moved: VoucherFacts | None,
    conference: ConferenceFacts,
    now: dt.datetime,
    background: bool = False,
    respect_schedule: bool = False,
    by_staff: bool = False,
) -> Decision:
    """The one provisioning rule.

    `voucher` is the person's row at the conference (by the grant's current email), `moved`
    a live row tied to this grant under another email. `background` is the reconciler: it
    leaves failed rows to staff; with `respect_schedule` it also waits for a row's next
    scheduled attempt (when it looks for due work; the work it then took is not waiting).
    `by_staff` is a person acting (`/voucher issue`, `provision`, Retry, a bulk run): only
    they take a grant that waits for staff (imported with `--no-provision`); the webhook path
    and the reconciler leave it alone.
    """
    refusal = _refusal(grant, conference, by_staff=by_staff)
    if refusal is not None:
        return refusal
    if moved is not None and moved.state is not VoucherState.REVOKED:
        return _nothing(Verdict.EMAIL_CHANGED)
    if voucher is None:
        decision = Decision(Action.CREATE) if conference.pretix else _nothing(Verdict.PRETIX_OFF)
    else:
        decision = _existing(
            grant, voucher, conference, now=now, background=background, schedule=respect_schedule
        )
    # Never reserve (or upgrade, or link for an email) a voucher whose email can never be
    # built; the check is costly, so it runs only when there is work.
    if decision.acts and grant.email_problem:
        return _nothing(Verdict.UNMAILABLE)
    return decision


def _refusal(grant: GrantFacts, conference: ConferenceFacts, *, by_staff: bool) -> Decision | None:
    """The reasons a grant gets no voucher at all, before any row is looked at."""
    if not conference.configured:
        return _nothing(Verdict.NOT_CONFIGURED)
    if grant.status is not GrantStatus.CONFIRMED:
        return _nothing(Verdict.NOT_CONFIRMED)
    if not grant.email_key:
        return _nothing(Verdict.NO_EMAIL)
    if grant.hold_reason:
        return _nothing(Verdict.HELD)
    if not conference.issue_vouchers:
        return _nothing(Verdict.NOT_ISSUING)
    if grant.waits_for_staff and not by_staff:
        return _nothing(Verdict.WAITS_FOR_STAFF)
    return None


def _existing(
    grant: GrantFacts,
    voucher: VoucherFacts,
    conference: ConferenceFacts,
    *,
    now: dt.datetime,
    background: bool,
    schedule: bool,
) -> Decision:
    state, kind = voucher.state, voucher.voucher_type
    leased = voucher.lease_expires_at is not None and voucher.lease_expires_at > now
    if leased and state in (VoucherState.CREATING, VoucherState.UPGRADING, VoucherState.REVOKING):
        return _nothing(Verdict.IN_PROGRESS)
    if state is VoucherState.CREATED and kind in (VoucherType.SPEAKER, VoucherType.GRANT):
        if _keep_has_work(grant, voucher):
            return Decision(Action.KEEP)
        return _nothing(Verdict.HAS_VOUCHER)
    if state is VoucherState.NEEDS_REVIEW:
        return _nothing(Verdict.NEEDS_REVIEW)
    if state is VoucherState.REVOKING:
        return _nothing(Verdict.REVOKE_UNFINISHED)
    if not conference.pretix:
        return _nothing(Verdict.PRETIX_OFF)
    if state is VoucherState.REVOKED:
        return Decision(Action.RESTART)
    if state is VoucherState.FAILED:
        return _nothing(Verdict.FAILED) if background else Decision(Action.RETRY)
    if state is VoucherState.CREATED:  # a co-speaker voucher
        return Decision(Action.UPGRADE)
    waiting = voucher.next_attempt_at is not None and voucher.next_attempt_at > now
    if schedule and waiting:
        return _nothing(Verdict.WAITING)
    return Decision(Action.RESUME)


def _keep_has_work(grant: GrantFacts, voucher: VoucherFacts) -> bool:
    """A kept voucher still needs its grant linked, or its first email made due."""
    if voucher.grant_id is None:
        return True
    return (
        voucher.grant_id == grant.id
        and voucher.email_sent_at is None
        and voucher.email_state is EmailState.NOT_DUE
    )
