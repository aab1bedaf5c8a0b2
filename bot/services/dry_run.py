"""Dry runs: what an import or a provisioning would do, by branch, with nothing done.

No Pretix call, no email, nothing stored. A grants import is planned by applying the intake
rules to the file's rows inside a transaction that is always rolled back, then asking the one
provisioning rule (`Facts.decide`) what it would do with the grants as they would then be.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.services.actors import Actor
from bot.services.context import ServiceContext
from bot.services.imports import RowSummary, read_grants
from bot.services.intake import apply_grant
from bot.services.outcomes import GrantRef, ProvisionResult
from bot.services.provisioning_facts import Facts, load_facts
from bot.services.provisioning_rules import Action, Decision, Verdict
from bot.storage import Conference, ConferenceVoucher, VoucherType


class Branch(enum.StrEnum):
    """Where a grant would go; the words are the ones the bulk preview uses."""

    NEW = "new voucher"
    UPGRADE = "co-speaker upgrade"
    FINISH = "finish a half-done voucher"
    RETRY = "retry a failed voucher"
    EMAIL_ONLY = "email only"
    ALREADY_SPEAKER = "already has one (speaker)"
    ALREADY_GRANT = "already has one"
    HELD = "held"
    WAITS_FOR_STAFF = "waits for staff"
    NOT_CONFIRMED = "not confirmed"
    NO_EMAIL = "no email"
    UNMAILABLE = "email address unusable"
    EMAIL_CHANGED = "email changed"
    NOT_ISSUING = "conference not issuing"
    NOT_CONFIGURED = "conference not configured"
    PRETIX_OFF = "Pretix not configured"
    IN_PROGRESS = "in progress elsewhere"
    NEEDS_REVIEW = "needs review"
    REVOKE_UNFINISHED = "revoke unfinished"
    WAITING = "retry scheduled"
    FAILED = "failed, waiting for staff"
    NOT_FOUND = "no such grant"


# How a real run names each provisioning result: in the dry run's words (one mapping, used
# by every summary of what was done or would be done).
RESULT_BRANCH: dict[ProvisionResult, Branch] = {
    ProvisionResult.CREATED: Branch.NEW,
    ProvisionResult.ADOPTED: Branch.FINISH,
    ProvisionResult.UPGRADED: Branch.UPGRADE,
    ProvisionResult.ALREADY_SPEAKER: Branch.ALREADY_SPEAKER,
    ProvisionResult.ALREADY_GRANT: Branch.ALREADY_GRANT,
    ProvisionResult.GRANT_NOT_FOUND: Branch.NOT_FOUND,
    ProvisionResult.NOT_CONFIRMED: Branch.NOT_CONFIRMED,
    ProvisionResult.NO_EMAIL: Branch.NO_EMAIL,
    ProvisionResult.HELD: Branch.HELD,
    ProvisionResult.NOT_ISSUING: Branch.NOT_ISSUING,
    ProvisionResult.PRETIX_DISABLED: Branch.PRETIX_OFF,
    ProvisionResult.IN_PROGRESS: Branch.IN_PROGRESS,
    ProvisionResult.RETRY_SCHEDULED: Branch.WAITING,
    ProvisionResult.NEEDS_REVIEW: Branch.NEEDS_REVIEW,
    ProvisionResult.FAILED: Branch.FAILED,
}


def result_label(result: ProvisionResult) -> str:
    """A provisioning result in the words of the dry run (`new voucher`, not `created`)."""
    return RESULT_BRANCH[result].value


# Branches after which the grantee has (or would have) a voucher, or nothing is wrong.
FINE = frozenset(
    {
        Branch.NEW,
        Branch.UPGRADE,
        Branch.FINISH,
        Branch.RETRY,
        Branch.EMAIL_ONLY,
        Branch.ALREADY_SPEAKER,
        Branch.ALREADY_GRANT,
        Branch.NOT_CONFIRMED,
        Branch.NOT_ISSUING,
        Branch.IN_PROGRESS,
        Branch.WAITING,
    }
)
# Branches that write to Pretix: a voucher is made (or changed into a grant voucher).
ISSUES = frozenset({Branch.NEW, Branch.UPGRADE, Branch.FINISH, Branch.RETRY})

_BY_VERDICT = {
    Verdict.NOT_CONFIGURED: Branch.NOT_CONFIGURED,
    Verdict.NOT_CONFIRMED: Branch.NOT_CONFIRMED,
    Verdict.NO_EMAIL: Branch.NO_EMAIL,
    Verdict.HELD: Branch.HELD,
    Verdict.WAITS_FOR_STAFF: Branch.WAITS_FOR_STAFF,
    Verdict.NOT_ISSUING: Branch.NOT_ISSUING,
    Verdict.UNMAILABLE: Branch.UNMAILABLE,
    Verdict.EMAIL_CHANGED: Branch.EMAIL_CHANGED,
    Verdict.PRETIX_OFF: Branch.PRETIX_OFF,
    Verdict.IN_PROGRESS: Branch.IN_PROGRESS,
    Verdict.WAITING: Branch.WAITING,
    Verdict.NEEDS_REVIEW: Branch.NEEDS_REVIEW,
    Verdict.REVOKE_UNFINISHED: Branch.REVOKE_UNFINISHED,
    Verdict.FAILED: Branch.FAILED,
}


@dataclass(frozen=True)
class Planned:
    """What provisioning would do for one grant."""

    grant: GrantRef | None
    branch: Branch
    detail: str = ""

    @property
    def needs_person(self) -> bool:
        """Whether a member of staff would have to look at this grant."""
        return self.branch not in FINE


def branch_of(facts: Facts, decision: Decision) -> Branch:
    """The branch of one decision, in the words staff know from the bulk preview."""
    row = facts.voucher
    match decision.action:
        case Action.CREATE | Action.RESTART:
            return Branch.NEW
        case Action.UPGRADE:
            return Branch.UPGRADE
        case Action.RESUME:
            return Branch.FINISH
        case Action.RETRY:
            return Branch.RETRY
        case Action.KEEP | Action.NOTHING if decision.verdict in (
            Verdict.PROCEED,
            Verdict.HAS_VOUCHER,
        ):
            assert row is not None  # KEEP and HAS_VOUCHER are about the person's row
            if row.email_sent_at is None:
                return Branch.EMAIL_ONLY
            speaker = row.voucher_type is VoucherType.SPEAKER
            return Branch.ALREADY_SPEAKER if speaker else Branch.ALREADY_GRANT
        case _:
            return _BY_VERDICT.get(decision.verdict, Branch.FAILED)


def branch_detail(facts: Facts, branch: Branch) -> str:
    """What a person reading the plan needs to know about this branch, or ''."""
    row = facts.voucher
    if branch is Branch.HELD:
        return f"held for staff: {facts.hold_reason}"
    if branch is Branch.EMAIL_CHANGED and facts.moved is not None:
        return f"voucher {facts.moved.code} was issued to another address; a person decides"
    if branch is Branch.EMAIL_ONLY and row is not None:
        return f"{row.voucher_type.value} voucher {row.code} exists; its email never went out"
    if branch is Branch.NEW and row is not None:
        return f"a new code replaces revoked voucher {row.code}"
    if row is not None and row.last_error and branch in (Branch.NEEDS_REVIEW, Branch.FAILED):
        return row.last_error
    return ""


def plan_grants(
    session: Session,
    ctx: ServiceContext,
    grant_ids: Sequence[int],
    *,
    release_hold: bool = False,
) -> list[Planned]:
    """What `provision_many` would do for each grant, read in `session`; nothing is changed.

    `release_hold` is staff provisioning by hand: a held grant's hold would be released, so
    the plan is what the rule decides without it (the detail says a hold goes).
    """
    now = ctx.clock()
    found = load_facts(session, ctx, grant_ids)
    plans: list[Planned] = []
    for grant_id in grant_ids:
        facts = found.get(grant_id)
        if facts is None:
            plans.append(Planned(None, Branch.NOT_FOUND, f"there is no grant #{grant_id}"))
            continue
        releasing = release_hold and facts.hold_reason is not None
        if releasing:
            facts = replace(facts, hold_reason=None, grant=replace(facts.grant, hold_reason=None))
        branch = branch_of(
            facts, facts.decide(ctx, now=now, background=False, by_staff=release_hold)
        )
        detail = branch_detail(facts, branch)
        if releasing:
            found_facts = found[grant_id]
            released = f"releases the hold ({found_facts.hold_reason})"
            detail = f"{released}; {detail}" if detail else released
        plans.append(Planned(facts.ref, branch, detail))
    return plans


def plan_provisioning(
    ctx: ServiceContext, grant_ids: Sequence[int], *, release_hold: bool = False
) -> list[Planned]:
    """`plan_grants` in a read-only transaction of its own."""
    with ctx.db.sessions() as session:
        try:
            return plan_grants(session, ctx, grant_ids, release_hold=release_hold)
        finally:
            session.rollback()


@dataclass
class ImportPlan(RowSummary):
    """What a grants import would do: rows by intake action, then provisioning by branch."""

    provisioning: list[Planned] = field(default_factory=list)
    waiting_for_staff: int = 0  # newly confirmed grants left alone (`--no-provision`)

    @property
    def branches(self) -> Counter[Branch]:
        """How many grants would go each way."""
        return Counter(plan.branch for plan in self.provisioning)

    @property
    def issues(self) -> int:
        """How many vouchers provisioning would make (or change) in Pretix."""
        return sum(1 for plan in self.provisioning if plan.branch in ISSUES)


def plan_grant_import(
    ctx: ServiceContext, *, path: Path, actor: Actor, provision: bool = True
) -> ImportPlan:
    """What `import_grants` would do with this file, against the database as it is now.

    The intake rules are applied in a transaction that is rolled back whatever happens, so
    that provisioning is decided on the grants as the import would leave them.
    """
    rows, payloads, errors = read_grants(ctx, path)
    plan = ImportPlan(rows=rows, errors=errors)
    to_provision: list[int] = []
    with ctx.db.sessions() as session:
        try:
            for _line, payload in payloads:
                intake = apply_grant(session, ctx, payload=payload, actor=actor)
                plan.actions[intake.action] += 1
                if intake.held and intake.grant:
                    plan.held.append(intake.grant)
                if intake.refused_with_voucher:
                    plan.notes.append(intake.message)
                if intake.provision and intake.grant:
                    to_provision.append(intake.grant.id)
            session.flush()
            if provision:
                plan.provisioning = plan_grants(session, ctx, to_provision)
            else:
                plan.waiting_for_staff = len(to_provision)
        finally:
            session.rollback()  # a dry run: never commit
    return plan


def conferences_without_speaker_vouchers(ctx: ServiceContext, codes: Collection[str]) -> list[str]:
    """Which of these conferences know no speaker or co-speaker voucher at all.

    Speaker vouchers must be imported before grants: a speaker with a grant whose speaker
    voucher the bot does not know would get a second, grant voucher.
    """
    if not codes:
        return []
    with ctx.db.transaction() as session:
        known = set(
            session.scalars(
                select(Conference.code)
                .join(ConferenceVoucher, ConferenceVoucher.conference_id == Conference.id)
                .where(
                    Conference.code.in_(sorted(codes)),
                    ConferenceVoucher.voucher_type.in_(
                        [VoucherType.SPEAKER, VoucherType.CO_SPEAKER]
                    ),
                )
                .group_by(Conference.code)
                .having(func.count() > 0)
            )
        )
    return sorted(set(codes) - known)
