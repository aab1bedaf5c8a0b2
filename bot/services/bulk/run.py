"""Running an approved bulk request: its frozen list, chunk by chunk, under a runner lease.

The runner takes the request with a conditional UPDATE (approved, or running with a lapsed
lease: a crashed run is taken over and resumes the same frozen list, only the items still
pending). Each chunk renews the lease; the lease's own value is the runner's token, so a
runner that lost it notices at its next record and stops. Each grantee is checked again at
its turn (still confirmed, same email, not held, not issued meanwhile) and provisioned
through the one service, `provision_many`, which batches new vouchers, claims and records
each email exactly once, and (with `publish=False`) leaves the per-grantee threads alone.
Several chunks are in flight at a time, so one's emails overlap the next one's Pretix work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from bot.services.actors import Actor
from bot.services.audit import add_audit_event
from bot.services.bulk.model import (
    ACTIONABLE,
    Branch,
    BulkLine,
    BulkProgress,
    BulkRef,
    BulkReporter,
    BulkSummary,
    RunOutcome,
)
from bot.services.bulk.requests import _load, _ref, line_of, request_lines_in
from bot.services.context import ServiceContext
from bot.services.outcomes import EmailResult, ProvisionOutcome, ProvisionResult
from bot.services.provisioning import provision_many
from bot.services.provisioning_facts import Facts, load_facts
from bot.storage import (
    BulkItem,
    BulkItemState,
    BulkRequest,
    BulkStatus,
    Conference,
    GrantStatus,
    Source,
)

log = structlog.get_logger(__name__)

CHUNK = 100  # grantees per chunk: one batch_create, one progress report, one lease renewal
# Chunks in flight at once: one's emails (each claimed, sent, recorded in turn over the
# thread's SMTP connection) overlap the others' Pretix work. 4 measured best on two cores.
PIPELINE = 4
WORKERS = 8  # provisioning threads per chunk (upgrades are one PATCH each)
RESUME_GRACE = dt.timedelta(minutes=1)  # an approved request not started by then is started
RESUMER = Actor(Source.SCHEDULER, "bulk-resume")
_RUNNING = "running"  # an item's result while its chunk is in flight

_ITEMS = cast(Table, BulkItem.__table__)  # the Core table, for an executemany UPDATE
# Results after which the grantee has what the run promised.
_DONE_RESULTS = frozenset(
    {
        ProvisionResult.CREATED,
        ProvisionResult.ADOPTED,
        ProvisionResult.UPGRADED,
        ProvisionResult.ALREADY_SPEAKER,
        ProvisionResult.ALREADY_GRANT,
    }
)
# Results that mean the grant changed (the service decided again): skipped, not failed.
_SKIP_RESULTS = frozenset(
    {
        ProvisionResult.GRANT_NOT_FOUND,
        ProvisionResult.NOT_CONFIRMED,
        ProvisionResult.NO_EMAIL,
        ProvisionResult.HELD,
        ProvisionResult.NOT_ISSUING,
    }
)
_EMAIL_FINE = frozenset(
    {EmailResult.SENT, EmailResult.ALREADY_SENT, EmailResult.NOT_DUE, EmailResult.IN_PROGRESS}
)


def run_lease(ctx: ServiceContext) -> dt.timedelta:
    """How long a runner's hold lasts without renewal: longer than a voucher row's lease, so
    the rows a crashed runner reserved are free again when its request is taken over."""
    return ctx.lease + dt.timedelta(minutes=1)


@dataclass(frozen=True)
class _Item:
    id: int
    grant_id: int
    branch: Branch
    email_key: str | None
    earlier: bool  # an earlier runner of this request had it in flight


@dataclass
class _Result:
    state: BulkItemState
    result: str
    detail: str
    emailed: bool = False  # this run sent its email


@dataclass
class _Counts:
    processed: int = 0
    created: int = 0
    upgraded: int = 0
    emailed: int = 0
    skipped: int = 0
    failed: int = 0

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> _Counts:
        names = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in (stored or {}).items() if k in names})

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _LostLeaseError(Exception):
    """Another runner took the request over: this one stops."""


@dataclass
class _Runner:
    ctx: ServiceContext
    request_id: int
    actor: Actor
    reporter: BulkReporter
    until: dt.datetime
    total: int
    counts: _Counts
    lock: threading.Lock = field(default_factory=threading.Lock)
    lost: bool = False

    def renew(self, session: Session) -> None:
        """Push the lease on (conditional on still holding it), inside `session`."""
        until = self.ctx.clock() + run_lease(self.ctx)
        won = session.execute(
            update(BulkRequest)
            .where(
                BulkRequest.id == self.request_id,
                BulkRequest.status == BulkStatus.RUNNING,
                BulkRequest.run_lease_expires_at == self.until,
            )
            .values(run_lease_expires_at=until)
            .returning(BulkRequest.id)
            .execution_options(synchronize_session=False)
        ).first()
        if won is None:
            self.lost = True
            raise _LostLeaseError
        self.until = until

    def progress(self) -> BulkProgress:
        c = self.counts
        return BulkProgress(
            request_id=self.request_id,
            total=self.total,
            processed=c.processed,
            created=c.created,
            upgraded=c.upgraded,
            emailed=c.emailed,
            skipped=c.skipped,
            failed=c.failed,
        )

    def tell(self, progress: BulkProgress) -> None:
        try:
            self.reporter.progress(progress)
        except Exception:
            log.exception("bulk reporter failed", request=self.request_id)

    def run_chunk(self, items: Sequence[_Item]) -> None:
        if self.lost:
            return
        try:
            self._run_chunk(items)
        except _LostLeaseError:
            log.warning("bulk run lost its lease to another runner", request=self.request_id)
        except Exception as exc:  # the chunk's grantees fail; the run goes on
            log.exception("bulk chunk failed unexpectedly", request=self.request_id)
            reason = (
                f"the bulk run failed unexpectedly ({type(exc).__name__}); the bot's log has "
                "the details. Retry the failed ones when the cause is fixed."
            )
            with contextlib.suppress(_LostLeaseError):
                self.record({i.id: _Result(BulkItemState.FAILED, "error", reason) for i in items})

    def _run_chunk(self, items: Sequence[_Item]) -> None:
        with self.lock, self.ctx.db.transaction() as session:
            self.renew(session)
            session.execute(
                update(BulkItem)
                .where(
                    BulkItem.id.in_([item.id for item in items]),
                    BulkItem.state == BulkItemState.PENDING,
                )
                .values(result=_RUNNING)
                .execution_options(synchronize_session=False)
            )
            facts = load_facts(session, self.ctx, [item.grant_id for item in items])
        now = self.ctx.clock()
        results: dict[int, _Result] = {}
        due: list[_Item] = []
        for item in items:
            found = facts.get(item.grant_id)
            verdict = _recheck(self.ctx, item, found, now=now)
            if verdict is None:
                due.append(item)
            else:
                results[item.id] = verdict
        if due:
            outcomes = provision_many(
                self.ctx,
                grant_ids=[item.grant_id for item in due],
                actor=self.actor,
                workers=WORKERS,
                take_waiting=True,
                publish=False,
                known_facts=facts,  # read above for the re-check: not read a second time
            )
            for item, outcome in zip(due, outcomes, strict=True):
                results[item.id] = self._result_of(outcome)
        self.record(results)

    def _result_of(self, outcome: ProvisionOutcome) -> _Result:
        email = outcome.email
        if outcome.result in _DONE_RESULTS:
            if email is not None and email.result not in _EMAIL_FINE:
                return _Result(
                    BulkItemState.FAILED,
                    f"email_{email.result.value}",
                    f"voucher {outcome.voucher_code or ''} in place, but its email was not "
                    f"sent: {email.detail}",
                )
            sent = email is not None and email.result is EmailResult.SENT
            return _Result(BulkItemState.DONE, outcome.result.value, outcome.message, sent)
        state = BulkItemState.SKIPPED if outcome.result in _SKIP_RESULTS else BulkItemState.FAILED
        return _Result(state, outcome.result.value, outcome.message)

    def record(self, results: dict[int, _Result]) -> None:
        """Store the chunk's results and counts, renewing the lease, in one transaction."""
        counts = _Counts()
        for result in results.values():
            counts.processed += 1
            match result.state:
                case BulkItemState.SKIPPED:
                    counts.skipped += 1
                case BulkItemState.FAILED:
                    counts.failed += 1
            if result.result in (ProvisionResult.CREATED, ProvisionResult.ADOPTED):
                counts.created += 1
            elif result.result == ProvisionResult.UPGRADED:
                counts.upgraded += 1
        counts.emailed = sum(1 for r in results.values() if r.emailed)
        with self.lock:
            with self.ctx.db.transaction() as session:
                self.renew(session)
                if results:
                    session.execute(
                        update(_ITEMS)
                        .where(
                            _ITEMS.c.id == bindparam("b_id"),
                            _ITEMS.c.state == BulkItemState.PENDING.value,
                        )
                        .values(
                            state=bindparam("b_state"),
                            result=bindparam("b_result"),
                            detail=bindparam("b_detail"),
                        ),
                        [
                            {
                                "b_id": item_id,
                                "b_state": r.state.value,
                                "b_result": r.result[:40],
                                "b_detail": r.detail,
                            }
                            for item_id, r in results.items()
                        ],
                    )
                total = self.counts
                for name, value in counts.as_dict().items():
                    setattr(total, name, getattr(total, name) + value)
                session.execute(
                    update(BulkRequest)
                    .where(BulkRequest.id == self.request_id)
                    .values(progress=total.as_dict())
                    .execution_options(synchronize_session=False)
                )
            progress = self.progress()
        self.tell(progress)


def _recheck(
    ctx: ServiceContext, item: _Item, found: Facts | None, *, now: dt.datetime
) -> _Result | None:
    """Why a frozen grantee is no longer due (skipped), or None to provision it now."""
    if found is None:
        return _Result(BulkItemState.SKIPPED, "grant_gone", "the grant no longer exists")
    grant = found.grant
    if grant.status is not GrantStatus.CONFIRMED:
        status = grant.status.value.replace("_", " ")
        return _Result(
            BulkItemState.SKIPPED,
            "not_confirmed",
            f"no longer confirmed since the preview ({status})",
        )
    if grant.email_key != item.email_key:
        return _Result(
            BulkItemState.SKIPPED,
            "email_changed",
            "the grant's email changed since the preview; a person decides",
        )
    if found.hold_reason:
        return _Result(
            BulkItemState.SKIPPED, "held", f"held for staff since the preview: {found.hold_reason}"
        )
    now_line = line_of(ctx, found, now=now)
    if now_line.branch in ACTIONABLE:
        return None
    if now_line.branch in (Branch.DONE, Branch.SPEAKER):
        if item.earlier:  # this request's crashed runner finished it before it could record
            return _Result(
                BulkItemState.DONE, "done_earlier", "done by an earlier attempt of this run"
            )
        return _Result(
            BulkItemState.SKIPPED, "issued_meanwhile", "issued since the preview (not by this run)"
        )
    return _Result(BulkItemState.SKIPPED, now_line.branch.value, now_line.detail)


def _take(
    ctx: ServiceContext, request_id: int, actor: Actor
) -> tuple[RunOutcome | None, BulkRef | None, dt.datetime | None, dict[str, Any] | None]:
    """Take the runner's lease: (refusal or None, the request, the lease, stored progress)."""
    now = ctx.clock()
    until = now + run_lease(ctx)
    with ctx.db.transaction() as session:
        found = _load(session, request_id)
        if found is None:
            return RunOutcome.NOT_FOUND, None, None, None
        request, conference = found
        resumed = request.status is BulkStatus.RUNNING  # a runner died: take it over
        values: dict[str, Any] = {"status": BulkStatus.RUNNING, "run_lease_expires_at": until}
        if request.started_at is None:
            values["started_at"] = now
        won = session.execute(
            update(BulkRequest)
            .where(
                BulkRequest.id == request_id,
                or_(
                    BulkRequest.status == BulkStatus.APPROVED,
                    and_(
                        BulkRequest.status == BulkStatus.RUNNING,
                        or_(
                            BulkRequest.run_lease_expires_at.is_(None),
                            BulkRequest.run_lease_expires_at <= now,
                        ),
                    ),
                ),
            )
            .values(**values)
            .returning(BulkRequest.id)
            .execution_options(synchronize_session=False)
        ).first()
        request, conference = _load(session, request_id) or found
        if won is None:
            refusal = {
                BulkStatus.RUNNING: RunOutcome.RUNNING_ELSEWHERE,
                BulkStatus.DONE: RunOutcome.ALREADY_DONE,
            }.get(request.status, RunOutcome.NOT_APPROVED)
            return refusal, _ref(request, conference), None, None
        add_audit_event(
            session,
            actor=actor,
            action="bulk_run",
            outcome="resumed" if resumed else "started",
            conference_id=conference.id,
            detail={"request": request_id, "approved_by": request.decided_by},
        )
        return None, _ref(request, conference), until, request.progress


def _pending(ctx: ServiceContext, request_id: int) -> tuple[list[_Item], int, int]:
    """The items still pending (in order), how many the run acts on, how many are settled."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            select(
                BulkItem.id, BulkItem.grant_id, BulkItem.branch, BulkItem.email_key, BulkItem.result
            )
            .where(BulkItem.request_id == request_id, BulkItem.state == BulkItemState.PENDING)
            .order_by(BulkItem.position)
        ).all()
        actionable = [branch.value for branch in ACTIONABLE]
        total = session.scalar(
            select(func.count())
            .select_from(BulkItem)
            .where(BulkItem.request_id == request_id, BulkItem.branch.in_(actionable))
        )
    items = [
        _Item(row.id, row.grant_id, Branch(row.branch), row.email_key, row.result == _RUNNING)
        for row in rows
    ]
    return items, int(total or 0), int(total or 0) - len(items)


def run_bulk(
    ctx: ServiceContext,
    *,
    request_id: int,
    actor: Actor,
    reporter: BulkReporter,
    chunk_size: int = CHUNK,
    pipeline: int = PIPELINE,
) -> BulkSummary:
    """Run an approved request (or take over a crashed run of it) to its end.

    Never provisions more than the frozen list; a grantee that changed since the preview is
    skipped and listed. `reporter` hears the progress after each chunk and the summary once.
    """
    started = time.perf_counter()
    refusal, ref, until, stored = _take(ctx, request_id, actor)
    if refusal is not None or until is None or ref is None:
        summary = _refused(ctx, refusal or RunOutcome.NOT_FOUND, ref, request_id)
        _finished(reporter, summary, request_id)
        return summary
    items, total, settled = _pending(ctx, request_id)
    counts = _Counts.of(stored)
    counts.processed = max(counts.processed, settled)
    runner = _Runner(ctx, request_id, actor, reporter, until, total, counts)
    runner.tell(runner.progress())
    chunks = [items[start : start + chunk_size] for start in range(0, len(items), chunk_size)]
    with ThreadPoolExecutor(max_workers=max(pipeline, 1), thread_name_prefix="bulk") as pool:
        list(pool.map(runner.run_chunk, chunks))
    if runner.lost:
        summary = BulkSummary(
            outcome=RunOutcome.LOST_LEASE,
            request=ref,
            progress=runner.progress(),
            seconds=time.perf_counter() - started,
            message=f"Bulk request #{request_id} was taken over by another runner.",
        )
    else:
        summary = _finish(ctx, runner, actor, seconds=time.perf_counter() - started)
    _finished(reporter, summary, request_id)
    return summary


def _finished(reporter: BulkReporter, summary: BulkSummary, request_id: int) -> None:
    try:
        reporter.finished(summary)
    except Exception:
        log.exception("bulk reporter failed", request=request_id)


def _refused(
    ctx: ServiceContext, refusal: RunOutcome, ref: BulkRef | None, request_id: int
) -> BulkSummary:
    messages = {
        RunOutcome.NOT_FOUND: f"There is no bulk request #{request_id}.",
        RunOutcome.NOT_APPROVED: f"Bulk request #{request_id} is not approved"
        + (f" ({ref.status.value.replace('_', ' ')})" if ref else "")
        + "; nothing was done.",
        RunOutcome.RUNNING_ELSEWHERE: f"Bulk request #{request_id} is running already.",
        RunOutcome.ALREADY_DONE: f"Bulk request #{request_id} has run already.",
    }
    if refusal is RunOutcome.ALREADY_DONE:
        return _summary_of(ctx, request_id, RunOutcome.ALREADY_DONE, messages[refusal])
    return BulkSummary(outcome=refusal, request=ref, message=messages[refusal])


def _finish(ctx: ServiceContext, runner: _Runner, actor: Actor, *, seconds: float) -> BulkSummary:
    now = ctx.clock()
    with runner.lock, ctx.db.transaction() as session:
        try:
            runner.renew(session)
        except _LostLeaseError:
            return BulkSummary(
                outcome=RunOutcome.LOST_LEASE,
                request=None,
                progress=runner.progress(),
                seconds=seconds,
                message=f"Bulk request #{runner.request_id} was taken over by another runner.",
            )
        results = {
            str(result): int(count)
            for result, count in session.execute(
                select(BulkItem.result, func.count())
                .where(BulkItem.request_id == runner.request_id)
                .group_by(BulkItem.result)
            )
        }
        stored = {
            "counts": runner.counts.as_dict(),
            "results": results,
            "seconds": round(seconds, 3),
        }
        session.execute(
            update(BulkRequest)
            .where(BulkRequest.id == runner.request_id)
            .values(
                status=BulkStatus.DONE,
                finished_at=now,
                run_lease_expires_at=None,
                summary=stored,
                progress=runner.counts.as_dict(),
            )
            .execution_options(synchronize_session=False)
        )
        found = _load(session, runner.request_id)
        add_audit_event(
            session,
            actor=actor,
            action="bulk_run",
            outcome="done",
            conference_id=found[1].id if found else None,
            detail={"request": runner.request_id, **runner.counts.as_dict()},
        )
    return _summary_of(ctx, runner.request_id, RunOutcome.DONE, "", seconds=seconds)


def _summary_of(
    ctx: ServiceContext, request_id: int, outcome: RunOutcome, message: str, *, seconds: float = 0
) -> BulkSummary:
    """The summary of a finished request, read back from its items."""
    with ctx.db.transaction() as session:
        preview = request_lines_in(session, request_id)
        found = _load(session, request_id)
    assert preview is not None and found is not None
    request = found[0]
    counts = _Counts.of(request.progress)
    lines = preview.lines
    failed = tuple(line for line in lines if line.state is BulkItemState.FAILED)
    skipped = tuple(
        line for line in lines if line.state is BulkItemState.SKIPPED and line.actionable
    )
    results: dict[str, int] = {}
    for line in lines:
        if line.result is not None:
            results[line.result] = results.get(line.result, 0) + 1
    total = sum(1 for line in lines if line.actionable)
    return BulkSummary(
        outcome=outcome,
        request=preview.request,
        progress=BulkProgress(
            request_id=request_id,
            total=total,
            processed=total - sum(1 for li in lines if li.state is BulkItemState.PENDING),
            created=counts.created,
            upgraded=counts.upgraded,
            emailed=counts.emailed,
            skipped=counts.skipped,
            failed=counts.failed,
        ),
        failed=failed,
        skipped=skipped,
        seconds=seconds or float((request.summary or {}).get("seconds", 0)),
        message=message,
        results=results,
    )


def resume_stalled(ctx: ServiceContext, reporter_for: Callable[[BulkRef], BulkReporter]) -> int:
    """Run the requests of the configured conferences whose runner died (lease lapsed) or
    that were approved and never started; how many this call ran (the background job)."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        stalled = list(
            session.scalars(
                select(BulkRequest.id)
                .join(Conference, BulkRequest.conference_id == Conference.id)
                .where(
                    Conference.code.in_(list(ctx.conferences)),
                    or_(
                        and_(
                            BulkRequest.status == BulkStatus.RUNNING,
                            or_(
                                BulkRequest.run_lease_expires_at.is_(None),
                                BulkRequest.run_lease_expires_at <= now,
                            ),
                        ),
                        and_(
                            BulkRequest.status == BulkStatus.APPROVED,
                            BulkRequest.decided_at <= now - RESUME_GRACE,
                        ),
                    ),
                )
                .order_by(BulkRequest.id)
            )
        )
        refs = [_ref(*found) for request_id in stalled if (found := _load(session, request_id))]
    ran = 0
    for ref in refs:
        summary = run_bulk(
            ctx, request_id=ref.request_id, actor=RESUMER, reporter=reporter_for(ref)
        )
        ran += summary.ran
    return ran


__all__ = ["BulkLine", "resume_stalled", "run_bulk", "run_lease"]
