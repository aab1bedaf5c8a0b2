"""The one way a grantee gets a voucher: decide, reserve, call Pretix, record; then email.

The rules are one pure function (`provisioning_rules.decide`); this module is the mechanics
around it. Never call Pretix inside an open transaction: the reserve step commits a row with a
code generated up front, a lease and a request nonce; the Pretix call happens outside any
transaction; a second short transaction records the answer, if the row is still this
request's (`voucher_row` owns every write). A crash in between leaves a row the reconciler
finishes with the same code and key, so Pretix never sees a duplicate and never keeps an orphan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.services import voucher_row
from bot.services.actors import Actor
from bot.services.audit import AuditRecord, add_audit_event, write_audit_events
from bot.services.context import ServiceContext
from bot.services.outcomes import (
    EmailOutcome,
    EmailResult,
    GrantRef,
    ProvisionOutcome,
    ProvisionResult,
    Step,
)
from bot.services.pretix_work import Ran, Work, create_request, run_batch, run_upgrades, run_work
from bot.services.provisioning_facts import Facts, load_facts, load_one
from bot.services.provisioning_rules import Action, Decision, Verdict
from bot.services.voucher_email import (
    deliver_voucher_email,
    deliver_voucher_emails,
    email_step,
    send_claimed_email,
)
from bot.storage import ConferenceVoucher, Grant, VoucherState, VoucherType

log = structlog.get_logger(__name__)

_RESERVE_TRIES = 3
_BATCH = 100  # rows per Pretix batch_create (1,000 rows took 16 s in one request)
_BATCH_MIN = 10  # fewer new grantees than this go one by one
_UPGRADE_BATCH_MIN = 2  # upgrades are one Pretix conversation each; only their records batch
# Upgrades per batch: each batch runs `workers` Pretix conversations, so large batches keep
# an import of many co-speakers at `workers` at a time (each lease is renewed at its turn).
_UPGRADE_BATCH = 500


def provision_grant_voucher(
    ctx: ServiceContext, *, grant_id: int, actor: Actor, release_hold: bool = False
) -> ProvisionOutcome:
    """Give a confirmed grantee exactly one voucher and one email; safe to call any number of times.

    `release_hold` is for staff acting by hand: it clears a hold put on a grant whose
    confirmation did not come from `waiting_for_confirmation`.
    """
    return provision_many(ctx, grant_ids=[grant_id], actor=actor, release_hold=release_hold)[0]


def provision_many(
    ctx: ServiceContext,
    *,
    grant_ids: Sequence[int],
    actor: Actor,
    workers: int = 4,
    release_hold: bool = False,
    background: bool = False,
    take_waiting: bool = False,
    publish: bool = True,
    on_progress: Callable[[ProvisionOutcome], None] | None = None,
    known_facts: Mapping[int, Facts] | None = None,
) -> list[ProvisionOutcome]:
    """Provision each grant once, `workers` at a time; outcomes come back in input order.

    The facts of all grants are read in a few queries; grants with nothing to do are answered
    from them at once, and only the others go through the reserve / act / record steps, on a
    small thread pool. One grant's failure, however unexpected, never stops the others.

    `take_waiting` (a bulk run) takes grants that wait for staff (imported with
    `--no-provision`) and clears that mark, as `release_hold` (staff by hand) does too, but
    keeps holds and batches new grantees. `publish=False` tells no listener (a bulk run
    reports in its own message and leaves the per-grantee threads alone).

    `known_facts`: the grants' facts as the caller just read them (a bulk run re-checks each
    grantee on them first), instead of reading them again. Every step that acts checks
    them again under its own lock, as it does for facts read here.
    """
    now = ctx.clock()
    by_staff = release_hold or take_waiting
    with ctx.db.transaction() as session:
        facts = (
            load_facts(session, ctx, grant_ids)
            if known_facts is None
            else {g: known_facts[g] for g in grant_ids if g in known_facts}
        )
        if by_staff:
            _take_waiting(session, facts, actor)
    batched: dict[int, ProvisionOutcome] = {}

    def chunk(job: tuple[Action, list[int]]) -> None:
        action, ids = job
        found = [facts[grant_id] for grant_id in ids]
        try:
            batched.update(
                _create_batch(ctx, found)
                if action is Action.CREATE
                else _upgrade_batch(ctx, found, workers=workers)
            )
        except Exception:  # its grants go the single way, which decides again
            log.exception("batch provisioning failed unexpectedly", grants=len(ids))

    def one(grant_id: int) -> ProvisionOutcome:
        done = batched.pop(grant_id, None)
        if done is not None:
            if on_progress is not None:
                on_progress(done)
            return done
        try:
            outcome = _provision(
                ctx,
                grant_id=grant_id,
                facts=facts.get(grant_id),
                actor=actor,
                release_hold=release_hold,
                background=background,
                by_staff=by_staff,
                now=now,
            )
        except Exception as exc:
            log.exception("provisioning failed unexpectedly", grant=grant_id)
            found = facts.get(grant_id)
            outcome = _outcome(
                found.ref if found else None,
                ProvisionResult.FAILED,
                f"Provisioning failed unexpectedly ({type(exc).__name__}); the bot's log has "
                "the details. Retry when the cause is fixed.",
            )
        if on_progress is not None:
            on_progress(outcome)
        return outcome

    chunks = (
        []
        if release_hold
        else _batchable(ctx, facts, grant_ids, now=now, background=background, by_staff=by_staff)
    )
    if workers <= 1 or len(grant_ids) <= 1:
        for ids in chunks:
            chunk(ids)
        outcomes = [one(grant_id) for grant_id in grant_ids]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provision") as pool:
            list(pool.map(chunk, chunks))
            outcomes = list(pool.map(one, grant_ids))
    write_audit_events(ctx.db, [_audit_record(actor, outcome) for outcome in outcomes])
    if publish:
        for outcome in outcomes:
            ctx.publish(outcome)
    return outcomes


def _take_waiting(session: Session, facts: dict[int, Facts], actor: Actor) -> None:
    """Clear the "waits for staff" mark of these grants: staff took them (audited)."""
    waiting = sorted(g for g, found in facts.items() if found.grant.waits_for_staff)
    if not waiting:
        return
    session.execute(
        update(Grant)
        .where(Grant.id.in_(waiting), Grant.waits_for_staff.is_(True))
        .values(waits_for_staff=False)
        .execution_options(synchronize_session=False)
    )
    for grant_id in waiting:
        add_audit_event(
            session,
            actor=actor,
            action="take_waiting_grant",
            outcome="taken",
            conference_id=facts[grant_id].ref.conference_id,
            grant_id=grant_id,
        )


def _provision(
    ctx: ServiceContext,
    *,
    grant_id: int,
    facts: Facts | None,
    actor: Actor,
    release_hold: bool,
    background: bool,
    by_staff: bool,
    now: dt.datetime,
) -> ProvisionOutcome:
    if facts is None:
        return _outcome(None, ProvisionResult.GRANT_NOT_FOUND, f"There is no grant #{grant_id}.")
    releasing = release_hold and facts.hold_reason is not None
    decision = facts.decide(ctx, now=now, background=background, by_staff=by_staff)
    claim: voucher_row.EmailClaim | None = None
    if not decision.acts and not releasing:
        outcome = _answer(facts, decision)  # read-only: nothing to reserve or record
    else:
        reserved = (
            _reserve_known(ctx, facts, decision)
            if decision.action in _ON_KNOWN_FACTS and not releasing
            else None
        ) or _reserve(
            ctx,
            grant_id=grant_id,
            actor=actor,
            releasing=releasing,
            background=background,
            by_staff=by_staff,
        )
        ran = run_work(ctx, reserved) if isinstance(reserved, Work) else Ran(reserved)
        outcome, claim = ran.outcome, ran.email
    return _with_email(ctx, facts, outcome, claim)


def _with_email(
    ctx: ServiceContext,
    facts: Facts,
    outcome: ProvisionOutcome,
    claim: voucher_row.EmailClaim | None,
) -> ProvisionOutcome:
    """The email step: send what was claimed with the record, or whatever is due."""
    if claim is not None:  # claimed when the voucher was recorded, in the same transaction
        email = send_claimed_email(ctx, claim)
    elif outcome.has_voucher:
        email = _already_mailed(facts, outcome) or deliver_voucher_email(
            ctx, voucher_id=_voucher_id(ctx, facts, outcome)
        )
    else:
        return outcome
    return _with_step(outcome, email)


def _with_step(outcome: ProvisionOutcome, email: EmailOutcome) -> ProvisionOutcome:
    return replace(outcome, email=email, steps=(*outcome.steps, email_step(email)))


def _batchable(
    ctx: ServiceContext,
    facts: dict[int, Facts],
    grant_ids: Sequence[int],
    *,
    now: dt.datetime,
    background: bool,
    by_staff: bool,
) -> list[tuple[Action, list[int]]]:
    """New grantees in chunks of one conference, for Pretix's batch_create, and co-speaker
    vouchers to upgrade in chunks recorded together (too few of a kind: none of it)."""
    if ctx.pretix is None:
        return []
    creates: dict[str, list[int]] = {}
    upgrades: list[int] = []
    for grant_id in dict.fromkeys(grant_ids):
        found = facts.get(grant_id)
        if found is None:
            continue
        action = found.decide(ctx, now=now, background=background, by_staff=by_staff).action
        if action is Action.CREATE:
            creates.setdefault(found.ref.conference, []).append(grant_id)
        elif action is Action.UPGRADE:
            upgrades.append(grant_id)
    chunks: list[tuple[Action, list[int]]] = []
    if sum(map(len, creates.values())) >= _BATCH_MIN:
        chunks += [
            (Action.CREATE, ids[start : start + _BATCH])
            for ids in creates.values()
            for start in range(0, len(ids), _BATCH)
        ]
    if len(upgrades) >= _UPGRADE_BATCH_MIN:
        chunks += [
            (Action.UPGRADE, upgrades[start : start + _UPGRADE_BATCH])
            for start in range(0, len(upgrades), _UPGRADE_BATCH)
        ]
    return chunks


def _create_batch(ctx: ServiceContext, chunk: Sequence[Facts]) -> dict[int, ProvisionOutcome]:
    """Reserve a chunk of new grantees in one transaction, create them in one Pretix request.

    Grants whose facts changed since they were read, or whose row appeared meanwhile, are
    left out (they go the single way, which decides again).
    """
    now = ctx.clock()
    with ctx.db.transaction() as session:
        unchanged = _still_as_read(session, chunk)
        new_rows = []
        for found in unchanged:
            code = ctx.new_code()
            new_rows.append(
                voucher_row.NewRow(
                    conference_id=found.ref.conference_id,
                    email_key=found.grant.email_key or "",
                    grant_id=found.grant.id,
                    code=code,
                    payload=_create_payload(found, code),
                )
            )
        tickets = voucher_row.reserve_many(session, new_rows, lease_until=now + ctx.lease)
    works = [
        _work(
            found,
            tickets[found.grant.id],
            "create",
            Step("reserve", ok=True, detail=f"reserved code {tickets[found.grant.id].code}"),
            superseded=None,
        )
        for found in unchanged
        if found.grant.id in tickets
    ]
    if not works:
        return {}
    return _emailed(ctx, works, run_batch(ctx, works))


def _upgrade_batch(
    ctx: ServiceContext, chunk: Sequence[Facts], *, workers: int
) -> dict[int, ProvisionOutcome]:
    """Reserve a chunk of co-speaker vouchers in one transaction, upgrade each in Pretix
    (`workers` at a time), record them in one transaction, then send their emails.

    A row or grant that changed since it was read is left out (it goes the single way,
    which decides again), as `_reserve_known` leaves it.
    """
    now = ctx.clock()
    with ctx.db.transaction() as session:
        by_row: dict[int, tuple[ConferenceVoucher, Facts]] = {}
        for found in _still_as_read(session, chunk):
            if found.voucher is not None:  # two grants on one person's row: the first one
                by_row.setdefault(found.voucher.id, (found.voucher, found))
        unchanged = [by_row[voucher_id] for voucher_id in sorted(by_row)]  # one lock order
        for row, found in unchanged:
            if row.grant_id is None:  # made elsewhere, meets its grant
                voucher_row.link_grant(session, voucher_id=row.id, grant_id=found.grant.id)
        tickets = voucher_row.begin_upgrades(
            session, [row for row, _ in unchanged], now=now, lease_until=now + ctx.lease
        )
    works = [
        _work(
            found,
            tickets[row.id],
            "upgrade",
            Step("reserve", ok=True, detail=f"co-speaker voucher {row.code} found"),
            superseded=row.superseded_code,
        )
        for row, found in unchanged
        if row.id in tickets
    ]
    if not works:
        return {}
    return _emailed(ctx, works, run_upgrades(ctx, works, workers=workers))


def _emailed(
    ctx: ServiceContext, works: Sequence[Work], ran: Sequence[Ran]
) -> dict[int, ProvisionOutcome]:
    """Send the emails a batch made due (claimed ten at a time): the outcomes by grant id."""
    emails = deliver_voucher_emails(
        ctx,
        [
            r.outcome.voucher_id
            for r in ran
            if r.outcome.has_voucher and r.outcome.voucher_id and r.email is None
        ],
    )
    outcomes: dict[int, ProvisionOutcome] = {}
    for work, done in zip(works, ran, strict=True):
        outcome = done.outcome
        email = (
            send_claimed_email(ctx, done.email)  # claimed when recorded (a row adopted alone)
            if done.email is not None
            else emails.get(outcome.voucher_id or 0)
        )
        outcomes[work.grant.id] = outcome if email is None else _with_step(outcome, email)
    return outcomes


def _already_mailed(facts: Facts, outcome: ProvisionOutcome) -> EmailOutcome | None:
    """A kept voucher whose email went out: nothing to claim (the common no-op)."""
    kept = outcome.result in (ProvisionResult.ALREADY_GRANT, ProvisionResult.ALREADY_SPEAKER)
    sent = facts.voucher.email_sent_at if facts.voucher is not None else None
    if not kept or sent is None:
        return None
    return EmailOutcome(
        EmailResult.ALREADY_SENT, f"voucher email already sent on {sent:%Y-%m-%d %H:%M} UTC"
    )


def _voucher_id(ctx: ServiceContext, facts: Facts, outcome: ProvisionOutcome) -> int:
    if outcome.voucher_id is not None:
        return outcome.voucher_id
    assert facts.voucher is not None  # an outcome with a voucher names its row or had one
    return facts.voucher.id


def _still_as_read(session: Session, facts: Sequence[Facts]) -> list[Facts]:
    """The grants whose status, hold and email are as their facts say, held against intake
    (a share lock) until the caller commits: a grant refused, held or given another email
    since its facts were read gets no voucher."""
    current = {
        row.id: (row.status, row.hold_reason, row.email_key)
        for row in session.execute(
            select(Grant.id, Grant.status, Grant.hold_reason, Grant.email_key)
            .where(Grant.id.in_([found.grant.id for found in facts]))
            .with_for_update(read=True)
        )
    }
    return [
        found
        for found in facts
        if current.get(found.grant.id)
        == (found.grant.status, found.grant.hold_reason, found.grant.email_key)
    ]


# The actions `_reserve_known` takes on the facts already read (the common ones).
_ON_KNOWN_FACTS = frozenset({Action.CREATE, Action.UPGRADE})


def _reserve_known(ctx: ServiceContext, facts: Facts, decision: Decision) -> Work | None:
    """The common cases, a new grantee or a co-speaker voucher to upgrade, on the facts just
    read: the grant held against intake and compared (one statement), then the transition.

    The transition is conditional (a new row's unique key on conference and email, an
    upgrade's row unchanged since read): when it loses (another worker, a voucher recorded
    meanwhile), None sends the caller to the full reserve, which reads everything again.
    A voucher linked to its grant on the way stays linked, as the full reserve would do.
    """
    now = ctx.clock()
    with ctx.db.transaction() as session:
        if not _still_as_read(session, [facts]):
            return None
        taken = _take(session, ctx, facts, decision, now=now)
    return taken if isinstance(taken, Work) else None


def _reserve(
    ctx: ServiceContext,
    *,
    grant_id: int,
    actor: Actor,
    releasing: bool,
    background: bool,
    by_staff: bool,
) -> Work | ProvisionOutcome:
    """Decide again on fresh facts and take the row into its request; a lost race re-reads."""
    facts: Facts | None = None
    for _ in range(_RESERVE_TRIES):
        now = ctx.clock()
        with ctx.db.transaction() as session:
            facts = load_one(session, ctx, grant_id, lock=True)
            if facts is None:
                return _outcome(
                    None, ProvisionResult.GRANT_NOT_FOUND, f"There is no grant #{grant_id}."
                )
            if releasing and facts.hold_reason is not None:
                _release_hold(session, facts, actor)
                facts = replace(
                    facts, hold_reason=None, grant=replace(facts.grant, hold_reason=None)
                )
                releasing = False
            decision = facts.decide(ctx, now=now, background=background, by_staff=by_staff)
            reserved = _take(session, ctx, facts, decision, now=now)
            if reserved is not None:
                return reserved
    assert facts is not None  # the loop ran and found the grant
    return _outcome(
        facts.ref,
        ProvisionResult.IN_PROGRESS,
        f"{facts.ref.full_name}'s voucher is being changed by another worker right now; "
        "nothing else to do.",
        facts.voucher,
    )


def _release_hold(session: Session, facts: Facts, actor: Actor) -> None:
    session.execute(
        update(Grant)
        .where(Grant.id == facts.grant.id)
        # An explicit issue by staff also overrides a dismissal (`held_dismiss`); the audit
        # log keeps the dismissal.
        .values(hold_reason=None, dismissed_at=None, dismissed_by=None, dismiss_reason=None)
        .execution_options(synchronize_session=False)
    )
    add_audit_event(
        session,
        actor=actor,
        action="release_hold",
        outcome="released",
        conference_id=facts.ref.conference_id,
        grant_id=facts.grant.id,
        detail={"reason": facts.hold_reason},
    )


def _take(
    session: Session, ctx: ServiceContext, facts: Facts, decision: Decision, *, now: dt.datetime
) -> Work | ProvisionOutcome | None:
    """Apply the decision's reserve transition; None when another worker changed the row."""
    row, lease_until = facts.voucher, now + ctx.lease
    if decision.action is Action.NOTHING:
        return _answer(facts, decision)
    if decision.action is Action.CREATE:
        code = ctx.new_code()
        ticket = voucher_row.reserve_new(
            session,
            conference_id=facts.ref.conference_id,
            email_key=facts.grant.email_key or "",
            grant_id=facts.grant.id,
            code=code,
            payload=_create_payload(facts, code),
            lease_until=lease_until,
        )
        step = Step("reserve", ok=True, detail=f"reserved code {code}")
        return None if ticket is None else _work(facts, ticket, "create", step, superseded=None)
    assert row is not None  # every other action concerns the person's row
    if row.grant_id is None:  # a voucher made elsewhere meets the person's grant
        voucher_row.link_grant(session, voucher_id=row.id, grant_id=facts.grant.id)
    if decision.action is Action.KEEP:
        voucher_row.make_email_due(session, voucher_id=row.id)
        return _answer(facts, Decision(Action.NOTHING, Verdict.HAS_VOUCHER))
    if decision.action is Action.RESTART:
        code = ctx.new_code()
        ticket = voucher_row.restart_after_revoke(
            session,
            row,
            code=code,
            payload=_create_payload(facts, code),
            now=now,
            lease_until=lease_until,
        )
        step = Step("reserve", ok=True, detail=f"new code {code} after a revoke")
        superseded = row.code if row.pretix_voucher_id is None else None
        return (
            None if ticket is None else _work(facts, ticket, "create", step, superseded=superseded)
        )
    if decision.action is Action.UPGRADE:
        ticket = voucher_row.begin_upgrade(session, row, now=now, lease_until=lease_until)
        step = Step("reserve", ok=True, detail=f"co-speaker voucher {row.code} found")
    elif decision.action is Action.RETRY:
        payload = (
            None if row.voucher_type is VoucherType.CO_SPEAKER else _create_payload(facts, row.code)
        )
        ticket = voucher_row.retry_failed(
            session, row, payload=payload, now=now, lease_until=lease_until
        )
        step = Step("reserve", ok=True, detail="retrying after an earlier failure")
    else:
        ticket = voucher_row.resume(session, row, now=now, lease_until=lease_until)
        step = Step("reserve", ok=True, detail=f"resuming unfinished {row.state.value}")
    if ticket is None:
        return None
    action = "upgrade" if ticket.state is VoucherState.UPGRADING else "create"
    return _work(facts, ticket, action, step, superseded=row.superseded_code)


def _create_payload(facts: Facts, code: str) -> dict[str, Any]:
    assert facts.config is not None  # decide() acts only for configured conferences
    return create_request(facts.config, facts.ref, code).payload()


def _work(
    facts: Facts,
    ticket: voucher_row.Ticket,
    action: str,
    step: Step,
    *,
    superseded: str | None,
) -> Work:
    assert facts.config is not None  # decide() acts only for configured conferences
    return Work(
        action="upgrade" if action == "upgrade" else "create",
        ticket=ticket,
        pretix_voucher_id=(
            facts.voucher.pretix_voucher_id if facts.voucher and superseded is None else None
        ),
        superseded_code=superseded,
        grant=facts.ref,
        conference=facts.config,
        steps=(step,),
    )


def _answer(facts: Facts, decision: Decision) -> ProvisionOutcome:
    """The outcome of a decision that needs no Pretix call, in words."""
    ref, row, name = facts.ref, facts.voucher, facts.ref.full_name
    verdict = decision.verdict
    if verdict is Verdict.HAS_VOUCHER:
        assert row is not None
        speaker = row.voucher_type is VoucherType.SPEAKER
        noun = "a speaker" if speaker else "a grant"
        return _outcome(
            ref,
            ProvisionResult.ALREADY_SPEAKER if speaker else ProvisionResult.ALREADY_GRANT,
            f"{name} already has {noun} voucher ({row.code}); no new voucher.",
            row,
        )
    if verdict is Verdict.EMAIL_CHANGED:
        moved = facts.moved
        assert moved is not None
        return _outcome(
            ref,
            ProvisionResult.NEEDS_REVIEW,
            f"{name}'s email changed to {ref.email} after voucher {moved.code} was issued to "
            f"{moved.email_key}; a person must decide (nothing new was made).",
            moved,
        )
    result, message = _WORDS[verdict](facts)
    return _outcome(ref, result, message, row if verdict in _ABOUT_ROW else None)


def _held(facts: Facts) -> tuple[ProvisionResult, str]:
    return (
        ProvisionResult.HELD,
        f"{facts.ref.full_name}'s grant is held for staff: {facts.hold_reason}. "
        "Issue it by hand if it is right.",
    )


def _not_confirmed(facts: Facts) -> tuple[ProvisionResult, str]:
    status = facts.grant.status.value.replace("_", " ")
    return (
        ProvisionResult.NOT_CONFIRMED,
        f"{facts.ref.full_name}'s grant is {status}, not confirmed: no voucher.",
    )


def _review(facts: Facts) -> tuple[ProvisionResult, str]:
    row = facts.voucher
    return (
        ProvisionResult.NEEDS_REVIEW,
        (row.last_error if row else None)
        or f"{facts.ref.full_name}'s voucher needs a person to decide.",
    )


def _failed(facts: Facts) -> tuple[ProvisionResult, str]:
    row = facts.voucher
    reason = row.last_error if row and row.last_error else "it failed earlier"
    return (
        ProvisionResult.FAILED,
        f"{facts.ref.full_name}'s voucher is waiting for a retry by staff: {reason}",
    )


_PRETIX_OFF = (
    "Pretix is not configured (set PRETIX_URL and PRETIX_TOKEN); the voucher will be "
    "issued once it is."
)

_WORDS: dict[Verdict, Callable[[Facts], tuple[ProvisionResult, str]]] = {
    Verdict.NOT_CONFIGURED: lambda f: (
        ProvisionResult.FAILED,
        f"Conference {f.ref.conference} is no longer in the configuration; nothing was issued.",
    ),
    Verdict.NOT_CONFIRMED: _not_confirmed,
    Verdict.NO_EMAIL: lambda f: (
        ProvisionResult.NO_EMAIL,
        f"{f.ref.full_name}'s grant has no email address.",
    ),
    Verdict.HELD: _held,
    Verdict.WAITS_FOR_STAFF: lambda f: (
        ProvisionResult.HELD,
        f"{f.ref.full_name}'s grant was imported with --no-provision and waits for staff: "
        "issue it by hand (/voucher issue) or in a bulk run.",
    ),
    Verdict.NOT_ISSUING: lambda f: (
        ProvisionResult.NOT_ISSUING,
        f"{f.config.name if f.config else f.ref.conference_name} does not issue vouchers "
        "(issue_vouchers = false).",
    ),
    Verdict.UNMAILABLE: lambda f: (
        ProvisionResult.NEEDS_REVIEW,
        f"{f.ref.full_name}'s grant has an address or name no email can be written to "
        f"({f.grant.email_problem}); no voucher was made. Fix the grant, then retry.",
    ),
    Verdict.PRETIX_OFF: lambda f: (ProvisionResult.PRETIX_DISABLED, _PRETIX_OFF),
    Verdict.IN_PROGRESS: lambda f: (
        ProvisionResult.IN_PROGRESS,
        f"{f.ref.full_name}'s voucher is being provisioned right now; nothing else to do.",
    ),
    Verdict.WAITING: lambda f: (
        ProvisionResult.RETRY_SCHEDULED,
        f"{f.ref.full_name}'s voucher is waiting for its next scheduled attempt.",
    ),
    Verdict.NEEDS_REVIEW: _review,
    Verdict.REVOKE_UNFINISHED: lambda f: (
        ProvisionResult.NEEDS_REVIEW,
        f"A revocation of {f.ref.full_name}'s voucher "
        f"{f.voucher.code if f.voucher else ''} did not finish; finish it (revoke) before "
        "issuing again.",
    ),
    Verdict.FAILED: _failed,
}
_ABOUT_ROW = frozenset(
    {
        Verdict.IN_PROGRESS,
        Verdict.WAITING,
        Verdict.NEEDS_REVIEW,
        Verdict.REVOKE_UNFINISHED,
        Verdict.FAILED,
    }
)


def _outcome(
    ref: GrantRef | None,
    result: ProvisionResult,
    message: str,
    voucher: ConferenceVoucher | None = None,
) -> ProvisionOutcome:
    return ProvisionOutcome(
        result=result,
        message=message,
        grant=ref,
        voucher_code=voucher.code if voucher else None,
        voucher_type=voucher.voucher_type if voucher else None,
        pretix_voucher_id=voucher.pretix_voucher_id if voucher else None,
        voucher_id=voucher.id if voucher else None,
        steps=(Step("decide", ok=result is not ProvisionResult.FAILED, detail=message),),
    )


def _audit_record(actor: Actor, outcome: ProvisionOutcome) -> AuditRecord:
    return AuditRecord(
        actor=actor,
        action="provision",
        outcome=outcome.result.value,
        conference_id=outcome.grant.conference_id if outcome.grant else None,
        grant_id=outcome.grant.id if outcome.grant else None,
        detail={
            "message": outcome.message,
            "code": outcome.voucher_code,
            "email": outcome.email.result.value if outcome.email else None,
            "steps": [f"{s.name}: {s.detail}" for s in outcome.steps],
        },
    )
