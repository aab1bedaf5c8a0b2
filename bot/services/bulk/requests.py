"""Bulk requests: preview, freeze, decide (exactly once), expire, retry the failed ones.

Every state move of a request is one conditional UPDATE whose RETURNING says who won; every
decision and every refused click is in the audit log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from bot.conferences import ConferenceConfig, pick_conference
from bot.services import dry_run
from bot.services.actors import Actor
from bot.services.audit import add_audit_event
from bot.services.bulk.model import (
    BRANCH_LABEL,
    Branch,
    BulkConferenceError,
    BulkDecision,
    BulkLine,
    BulkPreview,
    BulkRef,
    DecisionResult,
)
from bot.services.context import ServiceContext
from bot.services.provisioning_facts import Facts, load_facts
from bot.services.queries import grant_ref
from bot.storage import (
    BulkItem,
    BulkItemState,
    BulkRequest,
    BulkStatus,
    Conference,
    Grant,
    GrantStatus,
    Source,
)

log = structlog.get_logger(__name__)

SCHEDULER = Actor(Source.SCHEDULER, "bulk-expiry")

# The preview's branches in the words of the dry run, folded into the bulk ones.
_FROM_PLAN: dict[dry_run.Branch, Branch] = {
    dry_run.Branch.NEW: Branch.NEW,
    dry_run.Branch.UPGRADE: Branch.UPGRADE,
    dry_run.Branch.FINISH: Branch.FINISH,
    dry_run.Branch.RETRY: Branch.RETRY,
    dry_run.Branch.EMAIL_ONLY: Branch.EMAIL_ONLY,
    dry_run.Branch.ALREADY_SPEAKER: Branch.SPEAKER,
    dry_run.Branch.ALREADY_GRANT: Branch.DONE,
    dry_run.Branch.HELD: Branch.HELD,
    dry_run.Branch.NO_EMAIL: Branch.NO_EMAIL,
    dry_run.Branch.UNMAILABLE: Branch.NO_EMAIL,
    dry_run.Branch.EMAIL_CHANGED: Branch.EMAIL_CHANGED,
}
# The order of a frozen list: Pretix work first, new vouchers together (one batch a chunk).
_ORDER = {branch: n for n, branch in enumerate(Branch)}


class BulkRequestError(Exception):
    """A bulk request cannot be used for this (unknown, or not finished for a retry)."""


def resolve_conference(ctx: ServiceContext, conference: str | None) -> ConferenceConfig:
    """The conference a bulk request is for; None is fine when only one issues vouchers."""
    pick = pick_conference(ctx.conferences, conference)
    if pick.code is None:
        problem = str(pick.problem)
        which = ": say which one" if pick.suggested else ""
        raise BulkConferenceError(f"{problem[:1].upper()}{problem[1:]}{which}.")
    config = ctx.conferences[pick.code]
    if not config.issue_vouchers:
        raise BulkConferenceError(
            f"{config.name} does not issue vouchers (issue_vouchers = false)."
        )
    return config


def line_of(ctx: ServiceContext, facts: Facts, *, now: dt.datetime) -> BulkLine:
    """A grant's bulk branch as the one provisioning rule decides it for staff."""
    decision = facts.decide(ctx, now=now, background=False, by_staff=True)
    planned = dry_run.branch_of(facts, decision)
    detail = dry_run.branch_detail(facts, planned)
    branch = _FROM_PLAN.get(planned, Branch.OTHER)
    if branch is Branch.OTHER:
        detail = f"{planned.value}: {detail}" if detail else planned.value
    elif planned is dry_run.Branch.UNMAILABLE:
        detail = f"address unusable ({facts.grant.email_problem})"
    elif branch in (Branch.SPEAKER, Branch.DONE) and facts.voucher is not None:
        detail = f"{facts.voucher.voucher_type.value} voucher in place, email sent"
    return BulkLine(facts.ref, branch, detail)


def _candidates(session: Session, conference_id: int) -> list[int]:
    """The confirmed grants of a conference that staff did not dismiss."""
    return list(
        session.scalars(
            select(Grant.id)
            .where(
                Grant.conference_id == conference_id,
                Grant.status == GrantStatus.CONFIRMED,
                Grant.dismissed_at.is_(None),
            )
            .order_by(Grant.id)
        )
    )


def _plan(
    session: Session, ctx: ServiceContext, grant_ids: Sequence[int], *, now: dt.datetime
) -> tuple[BulkLine, ...]:
    facts = load_facts(session, ctx, grant_ids)
    lines = [line_of(ctx, facts[gid], now=now) for gid in grant_ids if gid in facts]
    return tuple(sorted(lines, key=lambda line: (_ORDER[line.branch], line.grant.id)))


def _conference_row(session: Session, code: str) -> Conference:
    row = session.scalars(select(Conference).where(Conference.code == code)).one_or_none()
    if row is None:  # configured but never synchronised: nothing of it is stored
        raise BulkConferenceError(f"Conference {code!r} is not in the database yet.")
    return row


def preview_bulk(ctx: ServiceContext, *, conference: str | None) -> BulkPreview:
    """What a bulk request would freeze now, by branch; nothing is stored or changed."""
    config = resolve_conference(ctx, conference)
    with ctx.db.sessions() as session:
        try:
            row = _conference_row(session, config.code)
            lines = _plan(session, ctx, _candidates(session, row.id), now=ctx.clock())
        finally:
            session.rollback()
    return BulkPreview(
        conference=config.code,
        conference_name=config.name,
        slack_channel=config.slack_channel,
        lines=lines,
    )


def request_bulk(
    ctx: ServiceContext, *, conference: str | None, actor: Actor, ttl: dt.timedelta
) -> BulkPreview:
    """Freeze the candidates of a conference into a request awaiting approval for `ttl`.

    Nothing due: nothing is stored (the preview's `request` is None and `nothing_to_do`).
    """
    config = resolve_conference(ctx, conference)
    with ctx.db.transaction() as session:
        row = _conference_row(session, config.code)
        return _freeze(
            session, ctx, config, row, _candidates(session, row.id), actor=actor, ttl=ttl
        )


def _freeze(
    session: Session,
    ctx: ServiceContext,
    config: ConferenceConfig,
    conference: Conference,
    grant_ids: Sequence[int],
    *,
    actor: Actor,
    ttl: dt.timedelta,
    retry_of: int | None = None,
) -> BulkPreview:
    now = ctx.clock()
    lines = _plan(session, ctx, grant_ids, now=now)
    preview = BulkPreview(
        conference=config.code,
        conference_name=config.name,
        slack_channel=config.slack_channel,
        lines=lines,
    )
    counts = {branch.value: n for branch, n in preview.counts.items()}
    if preview.nothing_to_do:
        add_audit_event(
            session,
            actor=actor,
            action="bulk_request",
            outcome="nothing_due",
            conference_id=conference.id,
            detail={"counts": counts, "retry_of": retry_of},
        )
        return preview
    request = BulkRequest(
        conference_id=conference.id,
        requested_by=actor.name,
        status=BulkStatus.AWAITING_APPROVAL,
        expires_at=now + ttl,
        slack_channel=config.slack_channel,
        counts=counts,
        retry_of_id=retry_of,
    )
    session.add(request)
    session.flush()
    emails = _frozen_emails(session, [line.grant.id for line in lines])
    session.execute(
        insert(BulkItem),
        [
            {
                "request_id": request.id,
                "grant_id": line.grant.id,
                "position": position,
                "branch": line.branch.value,
                "email_key": emails.get(line.grant.id),
                "state": BulkItemState.PENDING if line.actionable else BulkItemState.SKIPPED,
                "result": None if line.actionable else line.branch.value,
                "detail": line.detail or None,
            }
            for position, line in enumerate(lines)
        ],
    )
    add_audit_event(
        session,
        actor=actor,
        action="bulk_request",
        outcome="awaiting_approval",
        conference_id=conference.id,
        detail={"request": request.id, "counts": counts, "retry_of": retry_of},
    )
    return BulkPreview(
        conference=config.code,
        conference_name=config.name,
        slack_channel=config.slack_channel,
        lines=lines,
        request=_ref(request, conference),
    )


def _frozen_emails(session: Session, grant_ids: list[int]) -> dict[int, str | None]:
    """The address of each grant as it is frozen (the run checks it again)."""
    found: dict[int, str | None] = {}
    for start in range(0, len(grant_ids), 1000):
        for grant_id, email_key in session.execute(
            select(Grant.id, Grant.email_key).where(Grant.id.in_(grant_ids[start : start + 1000]))
        ):
            found[grant_id] = email_key
    return found


def _ref(request: BulkRequest, conference: Conference) -> BulkRef:
    return BulkRef(
        request_id=request.id,
        conference=conference.code,
        conference_name=conference.name,
        status=request.status,
        requested_by=request.requested_by,
        decided_by=request.decided_by,
        decided_at=request.decided_at,
        expires_at=request.expires_at,
        slack_channel=request.slack_channel,
        slack_ts=request.slack_ts,
        retry_of_id=request.retry_of_id,
    )


def _load(session: Session, request_id: int) -> tuple[BulkRequest, Conference] | None:
    found = session.execute(
        select(BulkRequest, Conference)
        .join(Conference, BulkRequest.conference_id == Conference.id)
        .where(BulkRequest.id == request_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    return None if found is None else (found[0], found[1])


def get_request(ctx: ServiceContext, request_id: int) -> BulkRef | None:
    """A stored bulk request as it stands now, or None."""
    with ctx.db.transaction() as session:
        found = _load(session, request_id)
        return None if found is None else _ref(*found)


def request_lines(ctx: ServiceContext, request_id: int) -> BulkPreview | None:
    """A stored request's frozen list with each grantee's state and result (for a CSV)."""
    with ctx.db.transaction() as session:
        return request_lines_in(session, request_id)


def set_slack_message(ctx: ServiceContext, *, request_id: int, channel: str, ts: str) -> None:
    """Remember where a request's preview message is (the Slack side calls this)."""
    with ctx.db.transaction() as session:
        session.execute(
            update(BulkRequest)
            .where(BulkRequest.id == request_id)
            .values(slack_channel=channel, slack_ts=ts)
            .execution_options(synchronize_session=False)
        )


def decide_bulk(
    ctx: ServiceContext,
    *,
    request_id: int,
    actor: Actor,
    approve: bool,
    allow_self_approval: bool,
) -> BulkDecision:
    """Approve or reject a request, exactly once: one conditional UPDATE decides who wins.

    The requester may reject their own request but approve it only with
    `allow_self_approval`. A request past its `expires_at` is expired here (and by
    `expire_due`). The caller checks that `actor` is staff; every outcome is audited.
    """
    action = "bulk_approve" if approve else "bulk_reject"
    now = ctx.clock()
    with ctx.db.transaction() as session:
        found = _load(session, request_id)
        if found is None:
            add_audit_event(
                session,
                actor=actor,
                action=action,
                outcome=DecisionResult.NOT_FOUND.value,
                detail={"request": request_id},
            )
            return BulkDecision(
                result=DecisionResult.NOT_FOUND,
                request=None,
                message=f"There is no bulk request #{request_id}.",
            )
        request, conference = found
        self_approval = approve and request.requested_by == actor.name
        if request.status is BulkStatus.AWAITING_APPROVAL and request.expires_at <= now:
            _expire(session, [request_id], now=now)
        elif (
            request.status is BulkStatus.AWAITING_APPROVAL
            and self_approval
            and not allow_self_approval
        ):
            return _refused(
                session,
                actor,
                action,
                (request, conference),
                result=DecisionResult.SELF_APPROVAL_REFUSED,
                message="You asked for this bulk run; another member of staff must approve it.",
            )
        else:
            won = session.execute(
                update(BulkRequest)
                .where(
                    BulkRequest.id == request_id,
                    BulkRequest.status == BulkStatus.AWAITING_APPROVAL,
                    BulkRequest.expires_at > now,
                )
                .values(
                    status=BulkStatus.APPROVED if approve else BulkStatus.REJECTED,
                    decided_by=actor.name,
                    decided_at=now,
                    updated_at=now,
                )
                .returning(BulkRequest.id)
                .execution_options(synchronize_session=False)
            ).first()
            if won is not None:
                request, conference = _load(session, request_id) or found
                result = DecisionResult.APPROVED if approve else DecisionResult.REJECTED
                add_audit_event(
                    session,
                    actor=actor,
                    action=action,
                    outcome=result.value,
                    conference_id=conference.id,
                    detail={"request": request_id, "self_approved": self_approval},
                )
                verb = "approved" if approve else "rejected"
                return BulkDecision(
                    result=result,
                    request=_ref(request, conference),
                    message=f"Bulk request #{request_id} {verb} by {actor.name}.",
                )
        request, conference = _load(session, request_id) or found
        if request.status is BulkStatus.EXPIRED:
            return _refused(
                session,
                actor,
                action,
                (request, conference),
                result=DecisionResult.EXPIRED,
                message=f"Bulk request #{request_id} expired at "
                f"{request.expires_at:%Y-%m-%d %H:%M} UTC; nothing was done. Ask for a new one.",
            )
        when = f" at {request.decided_at:%H:%M:%S} UTC" if request.decided_at else ""
        verb = "rejected" if request.status is BulkStatus.REJECTED else "approved"
        return _refused(
            session,
            actor,
            action,
            (request, conference),
            result=DecisionResult.ALREADY_DECIDED,
            message=f"Bulk request #{request_id} was already {verb} by {request.decided_by}{when}.",
        )


def _refused(
    session: Session,
    actor: Actor,
    action: str,
    found: tuple[BulkRequest, Conference],
    *,
    result: DecisionResult,
    message: str,
) -> BulkDecision:
    request, conference = found
    add_audit_event(
        session,
        actor=actor,
        action=action,
        outcome=result.value,
        conference_id=conference.id,
        detail={
            "request": request.id,
            "status": request.status.value,
            "decided_by": request.decided_by,
        },
    )
    return BulkDecision(result=result, request=_ref(request, conference), message=message)


def _expire(session: Session, request_ids: list[int] | None, *, now: dt.datetime) -> list[int]:
    """Mark awaiting requests past their time as expired (all of them, or these)."""
    stmt = update(BulkRequest).where(
        BulkRequest.status == BulkStatus.AWAITING_APPROVAL, BulkRequest.expires_at <= now
    )
    if request_ids is not None:
        stmt = stmt.where(BulkRequest.id.in_(request_ids))
    expired = list(
        session.scalars(
            stmt.values(status=BulkStatus.EXPIRED, updated_at=now)
            .returning(BulkRequest.id)
            .execution_options(synchronize_session=False)
        )
    )
    for request_id in expired:
        add_audit_event(
            session,
            actor=SCHEDULER,
            action="bulk_expire",
            outcome="expired",
            detail={"request": request_id},
        )
    return expired


def expire_due(ctx: ServiceContext) -> list[BulkRef]:
    """Expire every awaiting request past its time; each is returned once (edit its message)."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        expired = _expire(session, None, now=now)
        refs = [found for request_id in expired if (found := _load(session, request_id))]
        return [_ref(request, conference) for request, conference in refs]


def retry_failed(
    ctx: ServiceContext, *, request_id: int, actor: Actor, ttl: dt.timedelta
) -> BulkPreview:
    """A new request over the grantees a finished run failed, awaiting approval as any other.

    A second click while that retry awaits approval gets the same retry request back.
    Nothing failed (or nothing due any more): nothing is stored.
    """
    with ctx.db.transaction() as session:
        original = session.scalars(
            select(BulkRequest).where(BulkRequest.id == request_id).with_for_update()
        ).one_or_none()
        if original is None:
            raise BulkRequestError(f"There is no bulk request #{request_id}.")
        if original.status is not BulkStatus.DONE:
            raise BulkRequestError(
                f"Bulk request #{request_id} is {original.status.value.replace('_', ' ')}; "
                "only a finished run's failures can be retried."
            )
        conference = session.get_one(Conference, original.conference_id)
        config = ctx.conference(conference.code)
        if config is None:
            raise BulkConferenceError(f"Conference {conference.code!r} is no longer configured.")
        pending = session.scalars(
            select(BulkRequest.id).where(
                BulkRequest.retry_of_id == request_id,
                BulkRequest.status == BulkStatus.AWAITING_APPROVAL,
                BulkRequest.expires_at > ctx.clock(),
            )
        ).first()
        if pending is not None:
            preview = request_lines_in(session, pending)
            if preview is not None:
                return preview
        failed = list(
            session.scalars(
                select(BulkItem.grant_id)
                .where(BulkItem.request_id == request_id, BulkItem.state == BulkItemState.FAILED)
                .order_by(BulkItem.position)
            )
        )
        return _freeze(
            session, ctx, config, conference, failed, actor=actor, ttl=ttl, retry_of=request_id
        )


def request_lines_in(session: Session, request_id: int) -> BulkPreview | None:
    """`request_lines` inside the caller's transaction."""
    found = _load(session, request_id)
    if found is None:
        return None
    request, conference = found
    rows = session.execute(
        select(BulkItem, Grant)
        .join(Grant, BulkItem.grant_id == Grant.id)
        .where(BulkItem.request_id == request_id)
        .order_by(BulkItem.position)
    ).all()
    return BulkPreview(
        conference=conference.code,
        conference_name=conference.name,
        slack_channel=request.slack_channel,
        lines=tuple(
            BulkLine(
                grant_ref(grant, conference),
                Branch(item.branch),
                item.detail or "",
                item.state,
                item.result,
            )
            for item, grant in rows
        ),
        request=_ref(request, conference),
    )


def label(branch: Branch) -> str:
    """A branch in words."""
    return BRANCH_LABEL[branch]
