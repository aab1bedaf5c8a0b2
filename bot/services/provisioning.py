"""The one way a grantee gets a voucher: reserve, then call Pretix, then record; then email.

Never call Pretix inside an open transaction: the reserve step commits a row with a code
generated up front and a lease, the Pretix call happens outside any transaction, and a second
short transaction records the answer. A crash in between leaves a row the reconciler finishes
with the same code, so Pretix never sees a duplicate and never keeps an orphan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.conferences import ConferenceConfig
from bot.pretix import (
    EventRef,
    PretixAuthError,
    PretixClient,
    PretixConflict,
    PretixError,
    PretixNotFound,
    PretixUnavailable,
    PretixValidationError,
    Voucher,
    VoucherCreate,
    VoucherUpdate,
    make_idempotency_key,
)
from bot.services.actors import Actor
from bot.services.audit import add_audit_event, write_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import (
    GrantRef,
    ProvisionOutcome,
    ProvisionResult,
    Step,
)
from bot.services.queries import grant_ref, grant_with_conference, voucher_of
from bot.services.voucher_email import deliver_voucher_email, email_step
from bot.storage import (
    ConferenceVoucher,
    EmailState,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
    insert_ignoring_conflict,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

GRANT_TAG = "grant"
UPGRADE_MARK = "Upgraded to a grant voucher"


@dataclass(frozen=True, kw_only=True)
class _Work:
    """A reserved row whose Pretix side must now be created or upgraded."""

    action: Literal["create", "upgrade"]
    voucher_id: int
    code: str
    generation: int
    pretix_voucher_id: int | None
    grant: GrantRef
    conference: ConferenceConfig
    steps: tuple[Step, ...]

    @property
    def state(self) -> VoucherState:
        """The row state this work reserved, and expects to find when it records."""
        return VoucherState.UPGRADING if self.action == "upgrade" else VoucherState.CREATING

    @property
    def event(self) -> EventRef:
        """The Pretix event of the conference."""
        return EventRef(self.conference.pretix_organizer, self.conference.pretix_event)

    def idempotency_key(self, operation: str, payload: Mapping[str, object]) -> str:
        """Unique per distinct request: event, row, generation and payload all count."""
        event = self.event
        subject = f"{event.organizer}/{event.event}:{self.voucher_id}:{self.generation}"
        return make_idempotency_key(operation, subject, payload)


@dataclass(frozen=True)
class _Done:
    """The reserve step already knows the answer; `voucher_id` is set when email may be due."""

    outcome: ProvisionOutcome
    voucher_id: int | None = None


@dataclass(frozen=True)
class _PretixFailure:
    """A Pretix call that failed; `transient` failures are retried later with backoff."""

    transient: bool
    reason: str


def provision_grant_voucher(
    ctx: ServiceContext, *, grant_id: int, actor: Actor, release_hold: bool = False
) -> ProvisionOutcome:
    """Give a confirmed grantee exactly one voucher and one email; safe to call any number of times.

    `release_hold` is for staff acting by hand: it clears a hold put on a grant whose
    confirmation did not come from `waiting_for_confirmation`.
    """
    decision = _reserve(ctx, grant_id=grant_id, actor=actor, release_hold=release_hold)
    if isinstance(decision, _Work):
        outcome = _run(ctx, decision)
        voucher_id: int | None = decision.voucher_id
    else:
        outcome, voucher_id = decision.outcome, decision.voucher_id
    if voucher_id is not None and outcome.has_voucher:
        email = deliver_voucher_email(ctx, voucher_id=voucher_id)
        outcome = replace(outcome, email=email, steps=(*outcome.steps, email_step(email)))
    write_audit_event(
        ctx.db,
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
    ctx.publish(outcome)
    return outcome


def _reserve(
    ctx: ServiceContext, *, grant_id: int, actor: Actor, release_hold: bool
) -> _Work | _Done:
    now = ctx.clock()
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            return _done(None, ProvisionResult.GRANT_NOT_FOUND, f"There is no grant #{grant_id}.")
        grant, conference = found
        ref = grant_ref(grant, conference)
        if release_hold and grant.hold_reason:
            add_audit_event(
                session,
                actor=actor,
                action="release_hold",
                outcome="released",
                conference_id=conference.id,
                grant_id=grant.id,
                detail={"reason": grant.hold_reason},
            )
            grant.hold_reason = None
        refusal = _refusal(ctx, grant, ref)
        if refusal is not None:
            return refusal
        config = ctx.conference(conference.code)
        assert config is not None  # checked by _refusal
        moved = session.scalars(
            select(ConferenceVoucher).where(
                ConferenceVoucher.conference_id == conference.id,
                ConferenceVoucher.grant_id == grant.id,
                ConferenceVoucher.email_key != grant.email_key,
            )
        ).first()
        if moved is not None:
            return _done(
                ref,
                ProvisionResult.NEEDS_REVIEW,
                f"{ref.full_name}'s email changed to {grant.email} after voucher {moved.code} "
                f"was issued to {moved.email_key}; a person must decide (nothing new was made).",
                moved,
            )
        if ctx.pretix is not None:
            # Insert first: the common case (a new grantee) takes one statement, and the
            # unique key makes concurrent callers wait here for the first one's commit.
            code = ctx.new_code()
            voucher_id = insert_ignoring_conflict(
                session,
                ConferenceVoucher,
                {
                    "conference_id": conference.id,
                    "email_key": grant.email_key,
                    "grant_id": grant.id,
                    "voucher_type": VoucherType.GRANT,
                    "code": code,
                    "state": VoucherState.CREATING,
                    "lease_expires_at": now + ctx.lease,
                    "email_state": EmailState.NOT_DUE,
                },
                conflict=["conference_id", "email_key"],
            )
            if voucher_id is not None:
                step = Step("reserve", ok=True, detail=f"reserved code {code}")
                return _Work(
                    action="create",
                    voucher_id=voucher_id,
                    code=code,
                    generation=0,
                    pretix_voucher_id=None,
                    grant=ref,
                    conference=config,
                    steps=(step,),
                )
        voucher = voucher_of(
            session, conference_id=conference.id, email_key=grant.email_key, lock=True
        )
        if voucher is None:
            return _pretix_off(ref)  # no voucher yet, and no Pretix to make one
        return _decide(ctx, session, voucher=voucher, grant=grant, ref=ref, config=config, now=now)


def _refusal(ctx: ServiceContext, grant: Grant, ref: GrantRef) -> _Done | None:
    """The reasons a grant gets no voucher at all, checked before any row is touched."""
    if ctx.conference(ref.conference) is None:
        return _done(
            ref,
            ProvisionResult.FAILED,
            f"Conference {ref.conference} is no longer in the configuration; nothing was issued.",
        )
    if grant.status is not GrantStatus.CONFIRMED:
        return _done(
            ref,
            ProvisionResult.NOT_CONFIRMED,
            f"{ref.full_name}'s grant is {grant.status.value.replace('_', ' ')}, "
            "not confirmed: no voucher.",
        )
    if not grant.email_key:
        return _done(
            ref, ProvisionResult.NO_EMAIL, f"{ref.full_name}'s grant has no email address."
        )
    if grant.hold_reason:
        return _done(
            ref,
            ProvisionResult.HELD,
            f"{ref.full_name}'s grant is held for staff: {grant.hold_reason}. "
            "Issue it by hand if it is right.",
        )
    config = ctx.conference(ref.conference)
    if config is not None and not config.issue_vouchers:
        return _done(
            ref,
            ProvisionResult.NOT_ISSUING,
            f"{config.name} does not issue vouchers (issue_vouchers = false).",
        )
    return None


def _decide(
    ctx: ServiceContext,
    session: Session,
    *,
    voucher: ConferenceVoucher,
    grant: Grant,
    ref: GrantRef,
    config: ConferenceConfig,
    now: dt.datetime,
) -> _Work | _Done:
    """What to do with the person's existing voucher row (locked by the caller)."""
    if voucher.grant_id is not None and voucher.grant_id != grant.id:
        log.info("voucher belongs to another grant of the same person", voucher=voucher.id)
    elif voucher.grant_id is None:
        voucher.grant_id = grant.id  # a speaker or co-speaker voucher meets its grant
    leased = voucher.lease_expires_at is not None and voucher.lease_expires_at > now
    state, kind = voucher.state, voucher.voucher_type
    if leased and state in (VoucherState.CREATING, VoucherState.UPGRADING, VoucherState.REVOKING):
        return _done(
            ref,
            ProvisionResult.IN_PROGRESS,
            f"{ref.full_name}'s voucher is being provisioned right now; nothing else to do.",
            voucher,
        )
    if state is VoucherState.CREATED and kind in (VoucherType.SPEAKER, VoucherType.GRANT):
        if voucher.email_sent_at is None and voucher.email_state is EmailState.NOT_DUE:
            voucher.email_state = EmailState.PENDING
        result = (
            ProvisionResult.ALREADY_SPEAKER
            if kind is VoucherType.SPEAKER
            else ProvisionResult.ALREADY_GRANT
        )
        noun = "a speaker" if kind is VoucherType.SPEAKER else "a grant"
        return _Done(
            _outcome(
                ref,
                result,
                f"{ref.full_name} already has {noun} voucher ({voucher.code}); no new voucher.",
                voucher,
            ),
            voucher.id,
        )
    if state is VoucherState.NEEDS_REVIEW:
        return _done(
            ref,
            ProvisionResult.NEEDS_REVIEW,
            voucher.last_error or f"{ref.full_name}'s voucher needs a person to decide.",
            voucher,
        )
    if state is VoucherState.REVOKING:
        return _done(
            ref,
            ProvisionResult.NEEDS_REVIEW,
            f"A revocation of {ref.full_name}'s voucher {voucher.code} did not finish; "
            "finish it (revoke) before issuing again.",
            voucher,
        )
    if ctx.pretix is None:
        return _pretix_off(ref)
    steps: list[Step] = []
    if state is VoucherState.REVOKED:
        _restart_as_new_grant_voucher(ctx, voucher)
        steps.append(Step("reserve", ok=True, detail=f"new code {voucher.code} after a revoke"))
    elif state is VoucherState.FAILED:
        voucher.attempts = 0
        voucher.request_generation += 1  # a new request for Pretix, not a replay of the 4xx
        voucher.state = (
            VoucherState.UPGRADING if kind is VoucherType.CO_SPEAKER else VoucherState.CREATING
        )
        steps.append(Step("reserve", ok=True, detail="retrying after an earlier failure"))
    elif state is VoucherState.CREATED:  # a co-speaker voucher: upgrade it in place
        voucher.state = VoucherState.UPGRADING
        steps.append(Step("reserve", ok=True, detail=f"co-speaker voucher {voucher.code} found"))
    else:
        steps.append(Step("reserve", ok=True, detail=f"resuming unfinished {state.value}"))
    voucher.lease_expires_at = now + ctx.lease
    action: Literal["create", "upgrade"] = (
        "upgrade" if voucher.state is VoucherState.UPGRADING else "create"
    )
    return _Work(
        action=action,
        voucher_id=voucher.id,
        code=voucher.code,
        generation=voucher.request_generation,
        pretix_voucher_id=voucher.pretix_voucher_id,
        grant=ref,
        conference=config,
        steps=tuple(steps),
    )


def _restart_as_new_grant_voucher(ctx: ServiceContext, voucher: ConferenceVoucher) -> None:
    """A grant confirmed again after its voucher was revoked gets a fresh code."""
    voucher.code = ctx.new_code()
    voucher.voucher_type = VoucherType.GRANT
    voucher.original_type = None
    voucher.pretix_voucher_id = None
    voucher.state = VoucherState.CREATING
    voucher.attempts = 0
    voucher.last_error = None
    voucher.email_state = EmailState.NOT_DUE
    voucher.email_sent_at = None
    voucher.email_attempts = 0
    voucher.email_generation += 1
    voucher.request_generation += 1


def _run(ctx: ServiceContext, work: _Work) -> ProvisionOutcome:
    """Call Pretix for reserved work, then record what it said."""
    assert ctx.pretix is not None  # _reserve returns _Work only when Pretix is configured
    if work.action == "create":
        return _create(ctx, ctx.pretix, work)
    return _upgrade(ctx, ctx.pretix, work)


def _create(ctx: ServiceContext, pretix: PretixClient, work: _Work) -> ProvisionOutcome:
    config = work.conference
    if config.voucher_valid_until is not None and config.voucher_valid_until <= ctx.clock():
        return _give_up(
            ctx,
            work,
            f"voucher_valid_until of {config.code} ({config.voucher_valid_until:%Y-%m-%d}) "
            "is in the past; fix the configuration, then retry",
        )
    request = VoucherCreate(
        code=work.code,
        comment=(
            f"Financial aid grant {work.grant.external_id} for {work.grant.full_name} "
            f"({config.code}), issued by voucher-bot"
        ),
        **_grant_terms(config),
    )
    event = work.event
    key = work.idempotency_key("create-voucher", request.payload())
    created: Voucher | _PretixFailure = _call(
        lambda: pretix.create_voucher(event, request, idempotency_key=key)
    )
    result = ProvisionResult.CREATED
    if isinstance(created, _PretixFailure) and created.reason.startswith(_CODE_TAKEN):
        # Our code is unguessable, so a voucher with it is ours from an earlier attempt
        # whose answer was lost (crash, timeout, idempotency key forgotten): adopt it.
        found = _call(lambda: pretix.find_voucher_by_code(event, work.code))
        created = (
            _PretixFailure(True, f"Pretix says {work.code} exists but cannot find it")
            if found is None
            else found
        )
        result = ProvisionResult.ADOPTED
    if isinstance(created, _PretixFailure):
        return _failed(ctx, work, created)
    verb = "created" if result is ProvisionResult.CREATED else "adopted existing"
    step = Step("pretix", ok=True, detail=f"{verb} voucher #{created.id} ({created.code})")
    if not _record_created(ctx, work, created, upgraded=False):
        return _superseded(work)
    return _outcome(
        work.grant,
        result,
        f"Grant voucher {created.code} {verb.split(maxsplit=1)[0]} in Pretix "
        f"for {work.grant.full_name}.",
        code=created.code,
        kind=VoucherType.GRANT,
        pretix_id=created.id,
        steps=(*work.steps, step),
    )


def _grant_terms(config: ConferenceConfig) -> dict[str, Any]:
    """What makes a voucher a grant voucher, for a new one and an upgraded one alike:
    free, one use, only the conference's quota or item, its validity."""
    return {
        "max_usages": 1,
        "price_mode": "set",
        "value": Decimal("0.00"),
        "quota": config.pretix_quota,
        "item": config.pretix_item,
        "valid_until": config.voucher_valid_until,
        "block_quota": config.block_quota,
        "tag": GRANT_TAG,
    }


def _upgrade(ctx: ServiceContext, pretix: PretixClient, work: _Work) -> ProvisionOutcome:
    config = work.conference
    event = work.event
    current: Voucher | _PretixFailure | None
    if work.pretix_voucher_id is not None:
        current = _call(lambda: pretix.get_voucher(event, work.pretix_voucher_id or 0))
    else:
        current = _call(lambda: pretix.find_voucher_by_code(event, work.code))
    if current is None or (
        isinstance(current, _PretixFailure) and current.reason.startswith(_NOT_FOUND)
    ):
        return _review(
            ctx,
            work,
            f"{work.grant.full_name}'s co-speaker voucher {work.code} is not in Pretix; "
            "a person must decide what to issue",
        )
    if isinstance(current, _PretixFailure):
        return _failed(ctx, work, current)
    if current.redeemed > 0:
        return _review(
            ctx,
            work,
            f"{work.grant.full_name}'s co-speaker voucher {current.code} was already used "
            f"({current.redeemed} of {current.max_usages}); it was not changed. "
            "A person must decide (e.g. refund the difference)",
        )
    comment = current.comment or ""
    if UPGRADE_MARK not in comment:
        note = f"{UPGRADE_MARK} for grant {work.grant.external_id} by voucher-bot"
        comment = f"{comment}\n{note}".strip()
    # The full grant terms, not only the price: a co-speaker voucher may unlock every product.
    changes = VoucherUpdate(comment=comment, **_grant_terms(config))
    key = work.idempotency_key("upgrade-voucher", changes.payload())
    pretix_id = current.id
    updated = _call(lambda: pretix.update_voucher(event, pretix_id, changes, idempotency_key=key))
    if isinstance(updated, _PretixFailure):
        return _failed(ctx, work, updated)
    step = Step(
        "pretix",
        ok=True,
        detail=f"voucher #{updated.id} changed to price {updated.price_mode} {updated.value}",
    )
    if not _record_created(ctx, work, updated, upgraded=True):
        return _superseded(work)
    return _outcome(
        work.grant,
        ProvisionResult.UPGRADED,
        f"Co-speaker voucher {updated.code} upgraded to a free grant voucher for "
        f"{work.grant.full_name}.",
        code=updated.code,
        kind=VoucherType.GRANT,
        pretix_id=updated.id,
        steps=(*work.steps, step),
    )


_CODE_TAKEN = "code taken:"
_NOT_FOUND = "not found"


def _call(request: Callable[[], T]) -> T | _PretixFailure:
    """Run one Pretix call and turn its errors into a transient or permanent failure."""
    try:
        return request()
    except PretixValidationError as exc:
        if exc.code_taken:
            return _PretixFailure(False, f"{_CODE_TAKEN} {exc}")
        return _PretixFailure(False, "Pretix refused the voucher: " + "; ".join(exc.messages()))
    except (PretixUnavailable, PretixConflict) as exc:
        return _PretixFailure(True, f"Pretix is unavailable: {exc}")
    except PretixAuthError as exc:
        return _PretixFailure(
            False,
            f"Pretix refused our token ({exc}); check PRETIX_TOKEN and the team's voucher "
            "permissions, then retry",
        )
    except PretixNotFound as exc:
        return _PretixFailure(False, f"{_NOT_FOUND} in Pretix: {exc}")
    except PretixError as exc:
        return _PretixFailure(False, f"Pretix error: {exc}")


@contextmanager
def _settling(ctx: ServiceContext, work: _Work) -> Iterator[ConferenceVoucher | None]:
    """The reserved row, locked, if it is still this work's to record; else None.

    A worker whose lease ran out (a very slow Pretix) may find that another worker took the
    row over and finished it: it must then record nothing, or it would undo that work (and,
    for an upgrade, clear the email already sent).
    """
    with ctx.db.transaction() as session:
        row = session.get(ConferenceVoucher, work.voucher_id, with_for_update=True)
        assert row is not None  # voucher rows are never deleted
        ours = (
            row.state is work.state
            and row.code == work.code
            and row.request_generation == work.generation
        )
        if not ours:
            log.warning("voucher row settled by another worker", voucher=work.voucher_id)
        yield row if ours else None
        if ours:
            row.lease_expires_at = None


def _superseded(work: _Work) -> ProvisionOutcome:
    return _outcome(
        work.grant,
        ProvisionResult.IN_PROGRESS,
        f"Another worker took over {work.grant.full_name}'s voucher {work.code} while this "
        "one waited for Pretix; its result stands.",
        code=work.code,
        steps=(*work.steps, Step("record", ok=True, detail="left to the worker that took over")),
    )


def _record_created(ctx: ServiceContext, work: _Work, voucher: Voucher, *, upgraded: bool) -> bool:
    """Record what Pretix made; False when another worker owns the row now."""
    with _settling(ctx, work) as row:
        if row is None:
            return False
        row.pretix_voucher_id = voucher.id
        row.code = voucher.code
        row.state = VoucherState.CREATED
        row.attempts = 0
        row.next_attempt_at = None
        row.last_error = None
        if upgraded:
            row.original_type = row.voucher_type
            row.voucher_type = VoucherType.GRANT
            row.email_sent_at = None  # the grant email goes out even if a co-speaker one did
            row.email_state = EmailState.NOT_DUE
            row.email_attempts = 0
            row.email_generation += 1
        due = row.grant_id is not None and row.email_sent_at is None
        if due and row.email_state is EmailState.NOT_DUE:
            row.email_state = EmailState.PENDING
        return True


def _failed(ctx: ServiceContext, work: _Work, failure: _PretixFailure) -> ProvisionOutcome:
    if not failure.transient:
        return _give_up(ctx, work, failure.reason.removeprefix(_CODE_TAKEN).strip())
    with _settling(ctx, work) as row:
        if row is None:
            return _superseded(work)
        row.attempts += 1
        row.last_error = failure.reason
        attempts = row.attempts
        if attempts >= ctx.max_attempts:
            row.state = VoucherState.FAILED
        else:
            retry_at = row.next_attempt_at = ctx.clock() + ctx.backoff(attempts)
    if attempts >= ctx.max_attempts:
        return _failure_outcome(
            work,
            f"gave up after {attempts} attempts: {failure.reason}",
            ProvisionResult.FAILED,
            attempt=attempts,
        )
    return _failure_outcome(
        work,
        f"{failure.reason}. Will retry at {retry_at:%H:%M:%S} UTC "
        f"(attempt {attempts} of {ctx.max_attempts}).",
        ProvisionResult.RETRY_SCHEDULED,
        attempt=attempts,
    )


def _give_up(ctx: ServiceContext, work: _Work, reason: str) -> ProvisionOutcome:
    """A permanent failure: the row waits for a person to fix the cause and retry."""
    return _settle_as(ctx, work, VoucherState.FAILED, reason, ProvisionResult.FAILED)


def _review(ctx: ServiceContext, work: _Work, reason: str) -> ProvisionOutcome:
    """Leave the voucher as it is and ask a person to decide."""
    return _settle_as(ctx, work, VoucherState.NEEDS_REVIEW, reason, ProvisionResult.NEEDS_REVIEW)


def _settle_as(
    ctx: ServiceContext,
    work: _Work,
    state: VoucherState,
    reason: str,
    result: ProvisionResult,
) -> ProvisionOutcome:
    with _settling(ctx, work) as row:
        if row is None:
            return _superseded(work)
        row.state = state
        row.last_error = reason
    return _failure_outcome(work, reason, result)


def _failure_outcome(
    work: _Work, reason: str, result: ProvisionResult, *, attempt: int | None = None
) -> ProvisionOutcome:
    step = Step("pretix", ok=False, detail=reason)
    outcome = _outcome(
        work.grant,
        result,
        reason[:1].upper() + reason[1:],
        code=work.code,
        pretix_id=work.pretix_voucher_id,
        steps=(*work.steps, step),
    )
    return replace(outcome, attempt=attempt)


def _pretix_off(ref: GrantRef) -> _Done:
    return _done(
        ref,
        ProvisionResult.PRETIX_DISABLED,
        "Pretix is not configured (set PRETIX_URL and PRETIX_TOKEN); the voucher will be "
        "issued once it is.",
    )


def _done(
    ref: GrantRef | None,
    result: ProvisionResult,
    message: str,
    voucher: ConferenceVoucher | None = None,
) -> _Done:
    return _Done(_outcome(ref, result, message, voucher))


def _outcome(
    ref: GrantRef | None,
    result: ProvisionResult,
    message: str,
    voucher: ConferenceVoucher | None = None,
    *,
    code: str | None = None,
    kind: VoucherType | None = None,
    pretix_id: int | None = None,
    steps: tuple[Step, ...] = (),
) -> ProvisionOutcome:
    if voucher is not None:
        code, kind, pretix_id = voucher.code, voucher.voucher_type, voucher.pretix_voucher_id
    if not steps:
        steps = (Step("decide", ok=result not in (ProvisionResult.FAILED,), detail=message),)
    return ProvisionOutcome(
        result=result,
        message=message,
        grant=ref,
        voucher_code=code,
        voucher_type=kind,
        pretix_voucher_id=pretix_id,
        steps=steps,
    )
