"""The act and record steps of provisioning: one reserved request to Pretix, then its answer.

Runs outside any transaction. Every answer is checked against the request by the client (a
replayed answer about another voucher is an error, never recorded), and recorded only while
the row is still this request's (`voucher_row.Ticket`). A create whose row was revoked or
restarted meanwhile deletes what it made, so Pretix keeps no orphan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import structlog
from sqlalchemy.orm import Session

from bot.conferences import ConferenceConfig
from bot.pretix import (
    EventRef,
    KeyScope,
    PretixBatchError,
    PretixClient,
    Voucher,
    VoucherCreate,
    VoucherUpdate,
    answer_problem,
)
from bot.services import voucher_row
from bot.services.context import ServiceContext
from bot.services.outcomes import GrantRef, ProvisionOutcome, ProvisionResult, Step
from bot.services.pretix_failures import FailureKind, PretixFailure, call_pretix
from bot.storage import ConferenceVoucher, VoucherState, VoucherType

log = structlog.get_logger(__name__)

GRANT_TAG = "grant"
UPGRADE_MARK = "Upgraded to a grant voucher"


def grant_terms(config: ConferenceConfig) -> dict[str, Any]:
    """Every field that decides what a grant voucher unlocks, for a create and an upgrade.

    Free, one use, only the conference's quota or item, its validity, no quota bypass, no
    add-ons or bundles included: a co-speaker voucher upgraded in place loses every other right.
    """
    return {
        "max_usages": 1,
        "min_usages": 1,
        "price_mode": "set",
        "value": Decimal("0.00"),
        "quota": config.pretix_quota,
        "item": config.pretix_item,
        "valid_until": config.voucher_valid_until,
        "block_quota": config.block_quota,
        "allow_ignore_quota": False,
        "all_addons_included": False,
        "all_bundles_included": False,
        "tag": GRANT_TAG,
    }


def create_request(config: ConferenceConfig, grant: GrantRef, code: str) -> VoucherCreate:
    """The create request of a grant voucher; frozen on the row when it is reserved."""
    return VoucherCreate(
        code=code,
        comment=(
            f"Financial aid grant {grant.external_id} for {grant.full_name} "
            f"({config.code}), issued by voucher-bot"
        ),
        **grant_terms(config),
    )


@dataclass(frozen=True, kw_only=True)
class Work:
    """A reserved request whose Pretix side must now be created or upgraded."""

    action: Literal["create", "upgrade"]
    ticket: voucher_row.Ticket
    pretix_voucher_id: int | None
    superseded_code: str | None
    grant: GrantRef
    conference: ConferenceConfig
    steps: tuple[Step, ...]

    @property
    def event(self) -> EventRef:
        """The Pretix event of the conference."""
        return EventRef(self.conference.pretix_organizer, self.conference.pretix_event)

    @property
    def code(self) -> str:
        """The voucher code the request is about."""
        return self.ticket.code


@dataclass(frozen=True)
class Ran:
    """What reserved work came to, and the email claim taken when it was recorded."""

    outcome: ProvisionOutcome
    email: voucher_row.EmailClaim | None = None


def run_work(ctx: ServiceContext, work: Work) -> Ran:
    """Call Pretix for reserved work, then record what it said (and claim the email)."""
    assert ctx.pretix is not None  # work is reserved only when Pretix is configured
    if work.action == "create":
        ran = _create(ctx, ctx.pretix, work)
    else:
        ran = _upgrade(ctx, ctx.pretix, work)
    return ran if isinstance(ran, Ran) else Ran(ran)


def _expired(ctx: ServiceContext, config: ConferenceConfig) -> str | None:
    """Why no voucher can be made for the conference now, or None."""
    if config.voucher_valid_until is not None and config.voucher_valid_until <= ctx.clock():
        return (
            f"voucher_valid_until of {config.code} ({config.voucher_valid_until:%Y-%m-%d}) "
            "is in the past; fix the configuration, then retry"
        )
    return None


def _request_of(work: Work) -> VoucherCreate:
    # The body frozen when the request was reserved: a resumed create is the same request,
    # with the same key, whatever changed in the configuration since.
    frozen = work.ticket.payload
    if frozen is not None:
        return VoucherCreate.model_validate(frozen)
    return create_request(work.conference, work.grant, work.code)


def _create(ctx: ServiceContext, pretix: PretixClient, work: Work) -> ProvisionOutcome | Ran:
    expired = _expired(ctx, work.conference)
    if expired is not None:
        return _settle(ctx, work, VoucherState.FAILED, expired)
    if work.superseded_code is not None:
        cleared = _clear_superseded(ctx, pretix, work)
        if cleared is not None:
            return cleared
    request = _request_of(work)
    event, scope = work.event, work.ticket.key_scope(work.event)
    created = call_pretix(lambda: pretix.create_voucher(event, request, idempotency_key=scope))
    result = ProvisionResult.CREATED
    if isinstance(created, PretixFailure) and created.kind is FailureKind.CODE_TAKEN:
        # Our code is unguessable, so a voucher with it is ours from an earlier attempt
        # whose answer was lost (crash, timeout, idempotency key forgotten): adopt it.
        found = call_pretix(lambda: pretix.find_voucher_by_code(event, work.code))
        created = (
            PretixFailure(
                FailureKind.UNAVAILABLE, True, "Pretix says the code exists but cannot find it"
            )
            if found is None
            else found
        )
        result = ProvisionResult.ADOPTED
        problem = (
            None
            if isinstance(created, PretixFailure)
            else answer_problem(created, asked=request.payload(), code=work.code)
        )
        if problem is not None:
            return _settle(
                ctx,
                work,
                VoucherState.NEEDS_REVIEW,
                f"a voucher with the reserved code {work.code} exists in Pretix with other "
                f"terms ({problem}); it was not adopted. A person must check it",
            )
    if isinstance(created, PretixFailure):
        return _failed(ctx, work, created)
    recorded = _record(ctx, work, created, upgraded=False)
    if recorded is None:
        return _lost_create(ctx, pretix, work, created)
    return _made(recorded, work, created, result)


def _made(recorded: _Recorded, work: Work, created: Voucher, result: ProvisionResult) -> Ran:
    verb = "created" if result is ProvisionResult.CREATED else "adopted existing"
    return _done(
        recorded,
        work,
        result=result,
        message=f"Grant voucher {created.code} {verb.split(maxsplit=1)[0]} in Pretix "
        f"for {work.grant.full_name}.",
        voucher=created,
        step=Step("pretix", ok=True, detail=f"{verb} voucher #{created.id} ({created.code})"),
    )


def run_batch(ctx: ServiceContext, works: Sequence[Work]) -> list[Ran]:
    """Create many reserved vouchers of one event with Pretix's batch_create; aligned.

    All or nothing at Pretix: on a 400, a row whose code exists already goes the single way
    (it is adopted), a row Pretix refuses fails with its reason, and the rest is sent again.
    An answer that did not arrive leaves every row to be resumed one by one, with its own
    frozen request and key ("code exists" then adopts it). Records are written in one
    transaction, each still only if its row is this request's.
    """
    assert ctx.pretix is not None  # work is reserved only when Pretix is configured
    pretix = ctx.pretix
    done: dict[int, Ran] = {}
    expired = _expired(ctx, works[0].conference) if works else None
    pending = [] if expired else list(works)
    for work in works if expired else ():
        done[work.ticket.voucher_id] = Ran(_settle(ctx, work, VoucherState.FAILED, expired or ""))
    while pending:
        answer = call_pretix(partial(_send_batch, pretix, tuple(pending)))
        if (
            isinstance(answer, PretixBatchError)
            and answer.failed_rows()
            and len(answer.row_errors) == len(pending)
        ):
            refused, taken = set(answer.failed_rows()), set(answer.code_taken_rows())
            for index in sorted(refused):
                work = pending[index]
                if index in taken:  # the single way adopts it if its terms are ours
                    done[work.ticket.voucher_id] = _ran(_create(ctx, pretix, work))
                    continue
                reason = "Pretix refused the voucher: " + "; ".join(answer.row_messages(index))
                done[work.ticket.voucher_id] = Ran(_settle(ctx, work, VoucherState.FAILED, reason))
            pending = [work for index, work in enumerate(pending) if index not in refused]
            continue
        if isinstance(answer, list):
            done |= _record_batch(ctx, pretix, pending, answer)
        elif isinstance(answer, PretixFailure) and answer.kind is FailureKind.MISMATCH:
            # Pretix answered about other vouchers (a replay?): settle each row the single
            # way, with its own key; a voucher with its code is adopted only with our terms.
            for work in pending:
                done[work.ticket.voucher_id] = _ran(_create(ctx, pretix, work))
        else:
            failure = answer if isinstance(answer, PretixFailure) else _whole_refusal(answer)
            for work in pending:
                done[work.ticket.voucher_id] = Ran(_failed(ctx, work, failure))
        break
    return [done[work.ticket.voucher_id] for work in works]


def _send_batch(pretix: PretixClient, works: Sequence[Work]) -> list[Voucher] | PretixBatchError:
    event = works[0].event
    nonces = hashlib.sha256("".join(w.ticket.nonce for w in works).encode()).hexdigest()
    scope = KeyScope(
        subject=f"{event.organizer}/{event.event}:batch:v{works[0].ticket.voucher_id}+{len(works)}",
        nonce=nonces[:32],
    )
    try:
        return pretix.batch_create_vouchers(
            event, [_request_of(work) for work in works], idempotency_key=scope
        )
    except PretixBatchError as exc:
        return exc


def _whole_refusal(error: PretixBatchError) -> PretixFailure:
    return PretixFailure(
        FailureKind.REFUSED, False, "Pretix refused the batch: " + "; ".join(error.messages())
    )


def _record_batch(
    ctx: ServiceContext, pretix: PretixClient, works: Sequence[Work], created: Sequence[Voucher]
) -> dict[int, Ran]:
    """Record a batch in one transaction and a few statements.

    The emails become due, and each is claimed only right before it is sent: a claim taken
    for the whole chunk could run out (and be taken over) while the earlier ones are sent,
    and would not see a grant refused meanwhile.
    """
    with ctx.db.transaction() as session:
        won = voucher_row.record_many_created(
            session,
            [(w.ticket, v.id, v.code) for w, v in zip(works, created, strict=True)],
        )
    return {
        work.ticket.voucher_id: (
            _made(_Recorded(None), work, voucher, ProvisionResult.CREATED)
            if work.ticket.voucher_id in won
            else _ran(_lost_create(ctx, pretix, work, voucher))
        )
        for work, voucher in zip(works, created, strict=True)
    }


def _ran(result: ProvisionOutcome | Ran) -> Ran:
    return result if isinstance(result, Ran) else Ran(result)


def _clear_superseded(
    ctx: ServiceContext, pretix: PretixClient, work: Work
) -> ProvisionOutcome | None:
    """Delete a voucher with the revoked code that landed after the revoke looked."""
    old = work.superseded_code
    assert old is not None
    event = work.event
    found = call_pretix(lambda: pretix.find_voucher_by_code(event, old))
    if isinstance(found, PretixFailure):
        return _failed(ctx, work, found)
    if found is not None:
        if found.redeemed > 0:
            return _settle(
                ctx,
                work,
                VoucherState.NEEDS_REVIEW,
                f"the revoked voucher {old} exists in Pretix after all and was used; "
                "a person must decide before a new one is issued",
            )
        gone = call_pretix(
            lambda: pretix.delete_voucher(
                event, found.id, idempotency_key=work.ticket.key_scope(event)
            )
        )
        if isinstance(gone, PretixFailure) and gone.kind is not FailureKind.NOT_FOUND:
            return _failed(ctx, work, gone)
        log.warning(
            "deleted a voucher that landed after its revoke", voucher=work.ticket.voucher_id
        )
    with ctx.db.transaction() as session:
        voucher_row.record_superseded_gone(session, work.ticket)
    return None


def _upgrade(ctx: ServiceContext, pretix: PretixClient, work: Work) -> ProvisionOutcome | Ran:
    updated = _upgrade_in_pretix(ctx, pretix, work)
    if not isinstance(updated, Voucher):
        return updated
    recorded = _record(ctx, work, updated, upgraded=True)
    if recorded is None:
        return _superseded(work)
    return _upgraded(recorded, work, updated)


def run_upgrades(ctx: ServiceContext, works: Sequence[Work], *, workers: int) -> list[Ran]:
    """Upgrade many reserved co-speaker vouchers, `workers` Pretix conversations at a time,
    then record every upgrade that landed in one transaction; aligned with `works`.

    Each upgrade is the single one's request (its lease renewed right before it starts, then
    read, check, PATCH with its own key); only the record is shared, each row's still
    conditional on its ticket. Its email is left due, for the caller to claim and send.
    """
    assert ctx.pretix is not None  # work is reserved only when Pretix is configured
    pretix = ctx.pretix
    with ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(works))), thread_name_prefix="upgrade"
    ) as pool:
        answers = list(pool.map(partial(_upgrade_in_turn, ctx, pretix), works))
    won: set[int] = set()
    with ctx.db.transaction() as session:
        for work, answer in zip(works, answers, strict=True):
            if isinstance(answer, Voucher) and voucher_row.record_created(
                session, work.ticket, pretix_voucher_id=answer.id, code=answer.code, upgraded=True
            ):
                won.add(work.ticket.voucher_id)
    ran: list[Ran] = []
    for work, answer in zip(works, answers, strict=True):
        if not isinstance(answer, Voucher):
            ran.append(Ran(answer))
        elif work.ticket.voucher_id in won:
            ran.append(_upgraded(_Recorded(None), work, answer))
        else:
            log.warning("voucher row settled by another worker", voucher=work.ticket.voucher_id)
            ran.append(Ran(_superseded(work)))
    return ran


def _upgrade_in_turn(
    ctx: ServiceContext, pretix: PretixClient, work: Work
) -> Voucher | ProvisionOutcome:
    """One upgrade of a batch, when its turn comes: only while its lease still holds (a
    slow Pretix must not let a late PATCH rewrite a row another worker or a speaker
    notification took meanwhile), and never stopping the others on an unexpected error."""
    try:
        now = ctx.clock()
        with ctx.db.transaction() as session:
            held = voucher_row.extend_lease(session, work.ticket, now=now, until=now + ctx.lease)
        if not held:
            return _superseded(work)
        return _upgrade_in_pretix(ctx, pretix, work)
    except Exception as exc:
        log.exception("upgrade failed unexpectedly", voucher=work.ticket.voucher_id)
        return _outcome(
            work,
            ProvisionResult.FAILED,
            f"Provisioning failed unexpectedly ({type(exc).__name__}); the bot's log has the "
            "details. Retry when the cause is fixed.",
            Step("pretix", ok=False, detail=f"failed unexpectedly ({type(exc).__name__})"),
        )


def _upgrade_in_pretix(
    ctx: ServiceContext, pretix: PretixClient, work: Work
) -> Voucher | ProvisionOutcome:
    """Read the co-speaker voucher, check it may change, PATCH it to the grant terms: the
    voucher as Pretix now holds it, or the outcome of a case that stops (settled here)."""
    event = work.event
    known_id = work.pretix_voucher_id
    current: Voucher | PretixFailure | None
    if known_id is not None:
        current = call_pretix(lambda: pretix.get_voucher(event, known_id))
    else:
        current = call_pretix(lambda: pretix.find_voucher_by_code(event, work.code))
    if current is None or (
        isinstance(current, PretixFailure) and current.kind is FailureKind.NOT_FOUND
    ):
        return _settle(
            ctx,
            work,
            VoucherState.NEEDS_REVIEW,
            f"{work.grant.full_name}'s co-speaker voucher {work.code} is not in Pretix; "
            "a person must decide what to issue",
        )
    if isinstance(current, PretixFailure):
        return _failed(ctx, work, current)
    if current.redeemed > 0:
        return _settle(
            ctx,
            work,
            VoucherState.NEEDS_REVIEW,
            f"{work.grant.full_name}'s co-speaker voucher {current.code} was already used "
            f"({current.redeemed} of {current.max_usages}); it was not changed. "
            "A person must decide (e.g. refund the difference)",
        )
    comment = current.comment or ""
    if UPGRADE_MARK not in comment:
        note = f"{UPGRADE_MARK} for grant {work.grant.external_id} by voucher-bot"
        comment = f"{comment}\n{note}".strip()
    changes = VoucherUpdate(comment=comment, **grant_terms(work.conference))
    scope, pretix_id = work.ticket.key_scope(event), current.id
    updated = call_pretix(
        lambda: pretix.update_voucher(
            event, pretix_id, changes, idempotency_key=scope, code=work.code
        )
    )
    if isinstance(updated, PretixFailure):
        return _failed(ctx, work, updated)
    return updated


def _upgraded(recorded: _Recorded, work: Work, updated: Voucher) -> Ran:
    return _done(
        recorded,
        work,
        result=ProvisionResult.UPGRADED,
        message=f"Co-speaker voucher {updated.code} upgraded to a free grant voucher for "
        f"{work.grant.full_name}.",
        voucher=updated,
        step=Step(
            "pretix",
            ok=True,
            detail=f"voucher #{updated.id} changed to price {updated.price_mode} {updated.value}",
        ),
    )


@dataclass(frozen=True)
class _Recorded:
    email: voucher_row.EmailClaim | None


def _record(
    ctx: ServiceContext, work: Work, voucher: Voucher, *, upgraded: bool
) -> _Recorded | None:
    """Record the voucher and, in the same transaction, claim its email; None when lost."""
    with ctx.db.transaction() as session:
        return _record_in(session, ctx, work, voucher, upgraded=upgraded, now=ctx.clock())


def _record_in(
    session: Session,
    ctx: ServiceContext,
    work: Work,
    voucher: Voucher,
    *,
    upgraded: bool,
    now: dt.datetime,
) -> _Recorded | None:
    won = voucher_row.record_created(
        session,
        work.ticket,
        pretix_voucher_id=voucher.id,
        code=voucher.code,
        upgraded=upgraded,
    )
    if not won:
        log.warning("voucher row settled by another worker", voucher=work.ticket.voucher_id)
        return None
    claim = (
        voucher_row.claim_email(
            session,
            voucher_id=work.ticket.voucher_id,
            now=now,
            lease_until=now + ctx.lease,
            resend=False,
        )
        if ctx.mailer is not None
        else None
    )
    return _Recorded(claim)


def _lost_create(
    ctx: ServiceContext, pretix: PretixClient, work: Work, created: Voucher
) -> ProvisionOutcome:
    """Our create landed but the row is no longer this request's: keep no orphan.

    When the row now points at another code (restarted) or was revoked meanwhile, the voucher
    just made is nobody's: delete it. When another worker recorded this very voucher (a
    takeover after a lost lease), it stays.
    """
    with ctx.db.transaction() as session:
        row = session.get(ConferenceVoucher, work.ticket.voucher_id)
        orphan = row is None or (
            row.code.upper() != created.code.upper()
            or row.state in (VoucherState.REVOKED, VoucherState.REVOKING)
        )
    if not orphan:
        return _superseded(work)
    event = work.event
    gone = call_pretix(
        lambda: pretix.delete_voucher(
            event, created.id, idempotency_key=work.ticket.key_scope(event)
        )
    )
    deleted = not isinstance(gone, PretixFailure) or gone.kind is FailureKind.NOT_FOUND
    log.warning(
        "create landed after its row was revoked or restarted",
        voucher=work.ticket.voucher_id,
        deleted=deleted,
    )
    detail = (
        "the voucher it made was deleted again"
        if deleted
        else f"deleting the voucher it made failed ({gone.reason if gone else ''}): "
        "delete it in Pretix by hand"
    )
    return _outcome(
        work,
        ProvisionResult.NEEDS_REVIEW if not deleted else ProvisionResult.IN_PROGRESS,
        f"{work.grant.full_name}'s voucher was revoked or replaced while Pretix created "
        f"{created.code}; {detail}.",
        Step("record", ok=deleted, detail=detail),
    )


def _failed(ctx: ServiceContext, work: Work, failure: PretixFailure) -> ProvisionOutcome:
    if not failure.retryable:
        return _settle(ctx, work, VoucherState.FAILED, failure.reason)
    with ctx.db.transaction() as session:
        counted = voucher_row.record_transient_failure(
            session,
            work.ticket,
            reason=failure.reason,
            max_attempts=ctx.max_attempts,
            now=ctx.clock(),
            backoff=ctx.backoff,
        )
    if counted is None:
        return _superseded(work)
    attempts, retry_at = counted
    if retry_at is None:
        return _failure(
            work,
            f"gave up after {attempts} attempts: {failure.reason}",
            ProvisionResult.FAILED,
            attempt=attempts,
        )
    return _failure(
        work,
        f"{failure.reason}. Will retry at {retry_at:%H:%M:%S} UTC "
        f"(attempt {attempts} of {ctx.max_attempts}).",
        ProvisionResult.RETRY_SCHEDULED,
        attempt=attempts,
    )


def _settle(ctx: ServiceContext, work: Work, state: VoucherState, reason: str) -> ProvisionOutcome:
    """A permanent failure, or a case for a person: the row waits for staff."""
    with ctx.db.transaction() as session:
        won = voucher_row.settle(session, work.ticket, state=state, reason=reason)
    if not won:
        return _superseded(work)
    result = (
        ProvisionResult.NEEDS_REVIEW
        if state is VoucherState.NEEDS_REVIEW
        else ProvisionResult.FAILED
    )
    return _failure(work, reason, result)


def _superseded(work: Work) -> ProvisionOutcome:
    return _outcome(
        work,
        ProvisionResult.IN_PROGRESS,
        f"Another worker took over {work.grant.full_name}'s voucher {work.code} while this "
        "one waited for Pretix; its result stands.",
        Step("record", ok=True, detail="left to the worker that took over"),
    )


def _failure(
    work: Work, reason: str, result: ProvisionResult, *, attempt: int | None = None
) -> ProvisionOutcome:
    outcome = _outcome(
        work, result, reason[:1].upper() + reason[1:], Step("pretix", ok=False, detail=reason)
    )
    return replace(outcome, attempt=attempt)


def _done(
    recorded: _Recorded,
    work: Work,
    *,
    result: ProvisionResult,
    message: str,
    voucher: Voucher,
    step: Step,
) -> Ran:
    outcome = _outcome(work, result, message, step)
    return Ran(
        replace(
            outcome,
            voucher_code=voucher.code,
            voucher_type=VoucherType.GRANT,
            pretix_voucher_id=voucher.id,
        ),
        recorded.email,
    )


def _outcome(work: Work, result: ProvisionResult, message: str, step: Step) -> ProvisionOutcome:
    return ProvisionOutcome(
        result=result,
        message=message,
        grant=work.grant,
        voucher_code=work.code,
        pretix_voucher_id=work.pretix_voucher_id,
        voucher_id=work.ticket.voucher_id,
        steps=(*work.steps, step),
    )
