"""Revoking a grant voucher after the grantee refused: delete it in Pretix unless it was used."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import select

from bot.pretix import (
    EventRef,
    KeyScope,
    PretixClient,
    PretixConflict,
    PretixError,
    PretixNotFound,
    PretixUnavailable,
    PretixValidationError,
    PretixVoucherUsed,
    VoucherCreate,
)
from bot.services import voucher_row
from bot.services.actors import Actor
from bot.services.audit import write_audit_event
from bot.services.context import ServiceContext
from bot.services.outcomes import GrantRef, RevokeOutcome, RevokeResult, Step
from bot.services.queries import grant_ref, grant_with_conference, voucher_of
from bot.storage import (
    Conference,
    ConferenceVoucher,
    GrantStatus,
    VoucherState,
    VoucherType,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class _Revoking:
    ticket: voucher_row.Ticket
    pretix_voucher_id: int | None
    create: voucher_row.Ticket | None  # a create whose outcome is unknown: replayed first
    event: EventRef
    grant: GrantRef
    previous_state: VoucherState

    @property
    def code(self) -> str:
        return self.ticket.code


def revoke_grant_voucher(ctx: ServiceContext, *, grant_id: int, actor: Actor) -> RevokeOutcome:
    """Delete the grant voucher of a grant that is no longer confirmed; report a used one."""
    claimed = _claim(ctx, grant_id=grant_id)
    outcome = claimed if isinstance(claimed, RevokeOutcome) else _delete(ctx, claimed)
    write_audit_event(
        ctx.db,
        actor=actor,
        action="revoke",
        outcome=outcome.result.value,
        conference_id=outcome.grant.conference_id if outcome.grant else None,
        grant_id=outcome.grant.id if outcome.grant else None,
        detail={"message": outcome.message, "code": outcome.voucher_code},
    )
    ctx.publish(outcome)
    return outcome


def _claim(ctx: ServiceContext, *, grant_id: int) -> _Revoking | RevokeOutcome:
    now = ctx.clock()
    with ctx.db.transaction() as session:
        found = grant_with_conference(session, grant_id)
        if found is None:
            return RevokeOutcome(
                RevokeResult.GRANT_NOT_FOUND, f"There is no grant #{grant_id}.", None
            )
        grant, conference = found
        ref = grant_ref(grant, conference)
        if grant.status is GrantStatus.CONFIRMED:
            return RevokeOutcome(
                RevokeResult.NOT_REFUSED,
                f"{ref.full_name}'s grant is still confirmed; only a grant that was refused "
                "(or otherwise withdrawn) after confirmation can lose its voucher.",
                ref,
            )
        voucher = voucher_of(
            session, conference_id=conference.id, email_key=grant.email_key, lock=True
        )
        if voucher is None:
            return RevokeOutcome(
                RevokeResult.NO_VOUCHER, f"{ref.full_name} has no voucher to revoke.", ref
            )
        refusal = _refusal(
            voucher,
            ref,
            now_leased=bool(voucher.lease_expires_at and voucher.lease_expires_at > now),
        )
        if refusal is not None:
            return refusal
        config = ctx.conference(conference.code)
        if ctx.pretix is None or config is None:
            return RevokeOutcome(
                RevokeResult.PRETIX_DISABLED,
                "Pretix is not configured (PRETIX_URL, PRETIX_TOKEN); nothing was revoked.",
                ref,
                voucher.code,
            )
        previous = voucher.state
        if previous is VoucherState.REVOKING:  # a revoke that crashed half-way
            previous = VoucherState.CREATED if voucher.pretix_voucher_id else VoucherState.CREATING
        create = _uncertain_create(voucher)
        ticket = voucher_row.begin_revoke(session, voucher, now=now, lease_until=now + ctx.lease)
        if ticket is None:
            return RevokeOutcome(
                RevokeResult.IN_PROGRESS,
                f"Voucher {voucher.code} is being worked on right now.",
                ref,
                voucher.code,
            )
        return _Revoking(
            ticket=ticket,
            pretix_voucher_id=voucher.pretix_voucher_id,
            create=create,
            event=EventRef(config.pretix_organizer, config.pretix_event),
            grant=ref,
            previous_state=previous,
        )


def _uncertain_create(voucher: ConferenceVoucher) -> voucher_row.Ticket | None:
    """The row's create request, when it may have landed in Pretix without being recorded.

    A create that timed out may still be processed by Pretix after a lookup by code found
    nothing; replaying the very same request (same body, same key) makes its outcome certain.
    """
    if (
        voucher.pretix_voucher_id is not None
        or voucher.request_payload is None
        or voucher.request_nonce is None
        or voucher.state not in (VoucherState.CREATING, VoucherState.FAILED)
    ):
        return None
    return voucher_row.Ticket(
        voucher_id=voucher.id,
        state=VoucherState.CREATING,
        code=voucher.code,
        generation=voucher.request_generation,
        nonce=voucher.request_nonce,
        payload=voucher.request_payload,
    )


def _landed(pretix: PretixClient, work: _Revoking) -> int | None:
    """The Pretix id of the row's voucher, if it exists, after making an open create certain.

    Replaying the create answers with the stored result if it landed, creates it now if it
    never did (it is deleted right after), or says 409 while it is still in flight.
    """
    if work.create is not None and work.create.payload is not None:
        request = VoucherCreate.model_validate(work.create.payload)
        try:
            created = pretix.create_voucher(
                work.event, request, idempotency_key=work.create.key_scope(work.event)
            )
        except PretixValidationError as exc:
            if not exc.code_taken:
                return None  # the stored refusal of the original: it never existed
        else:
            return created.id
    found = pretix.find_voucher_by_code(work.event, work.code)
    return found.id if found else None


def _refusal(
    voucher: ConferenceVoucher, ref: GrantRef, *, now_leased: bool
) -> RevokeOutcome | None:
    """Vouchers that revoke must leave alone, each with the reason in words."""
    code = voucher.code
    if voucher.state is VoucherState.REVOKED:
        return RevokeOutcome(
            RevokeResult.ALREADY_REVOKED, f"Voucher {code} was already revoked.", ref, code
        )
    if now_leased:
        return RevokeOutcome(
            RevokeResult.IN_PROGRESS, f"Voucher {code} is being worked on right now.", ref, code
        )
    if voucher.voucher_type is not VoucherType.GRANT:
        return RevokeOutcome(
            RevokeResult.NOT_A_GRANT_VOUCHER,
            f"{ref.full_name}'s voucher {code} is a {voucher.voucher_type.value.replace('_', '-')} "
            "voucher, not a grant voucher; it was left alone.",
            ref,
            code,
        )
    if voucher.original_type is VoucherType.CO_SPEAKER:
        return RevokeOutcome(
            RevokeResult.NEEDS_REVIEW,
            f"Voucher {code} was upgraded from {ref.full_name}'s co-speaker voucher; deleting it "
            "would also take the co-speaker discount away. A person must decide.",
            ref,
            code,
        )
    return None


def _delete(ctx: ServiceContext, work: _Revoking) -> RevokeOutcome:
    assert ctx.pretix is not None
    pretix = ctx.pretix
    steps: list[Step] = []
    try:
        voucher_id = work.pretix_voucher_id
        if voucher_id is None:
            # The create was never recorded: it may have landed, or still land.
            voucher_id = _landed(pretix, work)
        if voucher_id is None:
            return _finish(
                ctx, work, RevokeResult.ALREADY_GONE, f"{work.code} is not in Pretix.", steps
            )
        current = pretix.get_voucher(work.event, voucher_id)
        if current.redeemed > 0:
            return _keep(
                ctx,
                work,
                f"Voucher {work.code} was already used ({current.redeemed}x); it was not "
                "deleted. A person must decide what to do.",
            )
        pretix.delete_voucher(
            work.event, voucher_id, idempotency_key=work.ticket.key_scope(work.event)
        )
        steps.append(Step("pretix", ok=True, detail=f"deleted voucher #{voucher_id}"))
    except PretixNotFound:
        return _finish(
            ctx, work, RevokeResult.ALREADY_GONE, f"Voucher {work.code} was already gone.", steps
        )
    except PretixVoucherUsed:
        return _keep(ctx, work, f"Voucher {work.code} was used meanwhile; it was not deleted.")
    except PretixConflict as exc:
        _release(ctx, work, f"Pretix was busy: {exc}")
        in_flight = "idempotency key" in str(exc)
        return RevokeOutcome(
            RevokeResult.RETRY_LATER,
            "The create of this voucher is still running at Pretix; nothing changed, try the "
            "revoke again in a minute."
            if in_flight
            else "Pretix was too busy to answer (409) and stayed busy through every retry; "
            "nothing changed, try the revoke again in a minute.",
            work.grant,
            work.code,
        )
    except PretixUnavailable as exc:
        _release(ctx, work, f"Pretix is unavailable: {exc}")
        return RevokeOutcome(
            RevokeResult.RETRY_LATER,
            f"Pretix is unavailable ({exc}); nothing changed, try the revoke again later.",
            work.grant,
            work.code,
        )
    except PretixError as exc:
        _release(ctx, work, str(exc))
        return RevokeOutcome(
            RevokeResult.FAILED, f"Pretix refused the revoke: {exc}", work.grant, work.code
        )
    return _finish(
        ctx, work, RevokeResult.REVOKED, f"Voucher {work.code} deleted in Pretix.", steps
    )


def _finish(
    ctx: ServiceContext, work: _Revoking, result: RevokeResult, message: str, steps: list[Step]
) -> RevokeOutcome:
    with ctx.db.transaction() as session:
        won = voucher_row.finish_revoke(
            session, work.ticket, tombstone=work.pretix_voucher_id is None, now=ctx.clock()
        )
    if not won:
        return _taken_over(work)
    return RevokeOutcome(result, message, work.grant, work.code, tuple(steps))


def sweep_revoked_codes(ctx: ServiceContext, *, limit: int = 25) -> int:
    """Look up again the revoked codes whose create was never recorded; delete what landed.

    Returns how many late vouchers were deleted. A used one is left and logged for a person.
    """
    if ctx.pretix is None:
        return 0
    pretix, now = ctx.pretix, ctx.clock()
    with ctx.db.transaction() as session:
        rows = voucher_row.tombstones_due(session, now=now, limit=limit)
        conferences = {c.id: c.code for c in session.scalars(select(Conference))}
    deleted = 0
    for row in rows:
        config = ctx.conference(conferences.get(row.conference_id, ""))
        code = row.superseded_code
        if config is None or code is None:
            continue
        event = EventRef(config.pretix_organizer, config.pretix_event)
        try:
            found = pretix.find_voucher_by_code(event, code)
            if found is not None and found.redeemed == 0:
                scope = KeyScope(subject=f"sweep:v{row.id}", nonce=voucher_row.new_nonce())
                pretix.delete_voucher(event, found.id, idempotency_key=scope)
                deleted += 1
                log.warning("deleted a voucher that landed after its revoke", voucher=row.id)
            elif found is not None:
                log.error("a revoked voucher landed late and was used", voucher=row.id)
        except PretixNotFound:
            pass
        except PretixError:
            log.warning("could not look up a revoked code; trying later", voucher=row.id)
            continue
        with ctx.db.transaction() as session:
            voucher_row.tombstone_checked(session, row, now=ctx.clock())
    return deleted


def _taken_over(work: _Revoking) -> RevokeOutcome:
    return RevokeOutcome(
        RevokeResult.IN_PROGRESS,
        f"Another revoke of {work.code} took over while this one waited for Pretix.",
        work.grant,
        work.code,
    )


def _keep(ctx: ServiceContext, work: _Revoking, message: str) -> RevokeOutcome:
    """A used voucher stays; it goes back to `created` and waits for a person."""
    _release(ctx, work, message)
    return RevokeOutcome(RevokeResult.REDEEMED, message, work.grant, work.code)


def _release(ctx: ServiceContext, work: _Revoking, error: str) -> None:
    with ctx.db.transaction() as session:
        voucher_row.abandon_revoke(session, work.ticket, back_to=work.previous_state, reason=error)
