"""A bulk request's one message in the conference channel, kept current through the outbox.

`BulkCardPublisher` posts the preview (and the CSV of a long list in its thread), draws the
decided and expired states, and makes the `SlackBulkReporter` a run reports to. The card is
named `bulk:<request id>` in the outbox, so every later state (a decision, the progress of a
run resumed after a crash, the expiry job) edits the same message, and the summary and the
CSV go to its thread. The per-grantee threads are never touched by a bulk run.

The reporter updates the card at most once every `min_interval` seconds (2 by default), so a
run over 1,000 grantees makes a handful of `chat.update` calls, not one per grantee.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import select

from bot.services.bulk import (
    BulkLine,
    BulkPreview,
    BulkProgress,
    BulkRef,
    BulkReporter,
    BulkSummary,
    NoReporter,
    request_lines,
)
from bot.services.context import ServiceContext
from bot.slack.blocks import (
    BulkCard,
    BulkCounts,
    BulkGrantee,
    BulkPhase,
    BulkReport,
    bulk_card_message,
    bulk_preview_csv,
    bulk_summary_message,
    wants_csv,
)
from bot.slack.outbox import Outbox
from bot.storage import BulkStatus, OutboxKind, OutboxState, SlackMessage, SlackOutbox

log = structlog.get_logger(__name__)

MIN_UPDATE_SECONDS = 2.0

_PHASES = {
    BulkStatus.AWAITING_APPROVAL: BulkPhase.AWAITING,
    BulkStatus.APPROVED: BulkPhase.APPROVED,
    BulkStatus.REJECTED: BulkPhase.REJECTED,
    BulkStatus.EXPIRED: BulkPhase.EXPIRED,
    BulkStatus.RUNNING: BulkPhase.RUNNING,
    BulkStatus.DONE: BulkPhase.DONE,
}


def card_ref(request_id: int) -> str:
    """The outbox name of a bulk request's message."""
    return f"bulk:{request_id}"


def grantee(line: BulkLine) -> BulkGrantee:
    """One line of a bulk request as the builders show it."""
    return BulkGrantee(
        external_id=line.grant.external_id,
        full_name=line.grant.full_name,
        email=line.grant.email,
        branch=line.branch.value,
        detail=line.detail or line.result or None,
    )


def build_card(
    request: BulkRef,
    lines: Sequence[BulkLine],
    *,
    approvers: str,
    progress: BulkProgress | None = None,
    phase: BulkPhase | None = None,
) -> BulkCard:
    """The card of `request` over its frozen `lines`, in the request's phase (or `phase`)."""
    branches: dict[str, int] = {}
    for line in lines:
        branches[line.branch.value] = branches.get(line.branch.value, 0) + 1
    return BulkCard(
        request_id=request.request_id,
        conference=request.conference,
        conference_name=request.conference_name,
        requested_by=request.requested_by,
        expires_at=request.expires_at,
        branches=branches,
        grantees=[grantee(line) for line in lines],
        approvers=approvers,
        phase=phase or _PHASES[request.status],
        decided_by=request.decided_by,
        decided_at=request.decided_at,
        progress=counts(progress) if progress is not None else None,
        retry_of=request.retry_of_id,
    )


def counts(progress: BulkProgress) -> BulkCounts:
    """A run's progress as the builders count it."""
    return BulkCounts(
        total=progress.total,
        handled=progress.processed,
        created=progress.created,
        upgraded=progress.upgraded,
        emailed=progress.emailed,
        skipped=progress.skipped,
        failed=progress.failed,
    )


class BulkCardPublisher:
    """Puts bulk requests' cards in their conference channels, through the outbox.

    The expiry job calls `expired`, a resumed run takes its reporter from `reporter_for`:
    both draw the same `bulk:<id>` message the preview posted.
    """

    def __init__(
        self,
        services: ServiceContext,
        outbox: Outbox,
        *,
        approvers: str,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_UPDATE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._services = services
        self._outbox = outbox
        self.approvers = approvers
        self._clock = clock
        self._min_interval = min_interval
        self._sleep = sleep

    def post_preview(self, preview: BulkPreview) -> bool:
        """Post the preview card (and the CSV of a long list in its thread); False if no channel."""
        request = preview.request
        if request is None or not preview.slack_channel:
            return False
        card = build_card(request, preview.lines, approvers=self.approvers)
        ref = card_ref(request.request_id)
        self._outbox.post(ref=ref, channel=preview.slack_channel, message=bulk_card_message(card))
        if wants_csv(card):
            self._outbox.upload(
                ref=ref,
                filename=f"bulk-{request.request_id}-{request.conference}.csv",
                content=bulk_preview_csv(card.grantees),
                title=f"Bulk issuance #{request.request_id}: the whole list",
                comment=f"All {len(preview.lines):,} grantees of bulk issuance "
                f"#{request.request_id}, due or skipped, with their branch.",
            )
        return True

    def show(self, request_id: int) -> BulkRef | None:
        """Redraw the card in the request's current state (decided, expired...).

        Only a request whose card was posted (or is queued) has one to redraw: a request made
        elsewhere (a test, a script) gets no edit waiting for a message that never comes.
        """
        if not self._has_card(card_ref(request_id)):
            return None
        stored = request_lines(self._services, request_id)
        if stored is None or stored.request is None:
            return None
        card = build_card(stored.request, stored.lines, approvers=self.approvers)
        self._outbox.update(ref=card_ref(request_id), message=bulk_card_message(card))
        return stored.request

    def expired(self, request: BulkRef) -> None:
        """The expiry job's word: the card says Expired, its buttons gone."""
        self.show(request.request_id)

    def reporter_for(self, request_id: int, *, just_updated: bool = False) -> BulkReporter:
        """The reporter of a run (or a resumed run) over `request_id`: it edits the same card.

        `just_updated`: the card was edited a moment ago (the approval), so the first
        progress update waits the usual interval. A request without a card (run from the
        command line) reports to nobody here.
        """
        stored = request_lines(self._services, request_id)
        if stored is None or stored.request is None or not self._has_card(card_ref(request_id)):
            return NoReporter()
        return SlackBulkReporter(
            self,
            stored.request,
            stored.lines,
            last_update=self._clock() if just_updated else None,
        )

    def reporter(self, request: BulkRef) -> BulkReporter:
        """`resume_stalled`'s reporter factory: a resumed run continues the same card."""
        return self.reporter_for(request.request_id)

    def _has_card(self, ref: str) -> bool:
        with self._services.db.transaction() as session:
            posted = session.scalar(select(SlackMessage.ref).where(SlackMessage.ref == ref))
            queued = session.scalar(
                select(SlackOutbox.id).where(
                    SlackOutbox.ref == ref,
                    SlackOutbox.kind == OutboxKind.POST,
                    SlackOutbox.state == OutboxState.PENDING,
                )
            )
        return posted is not None or queued is not None

    # --- used by the reporter -------------------------------------------------------------

    def _progress(
        self, request: BulkRef, lines: Sequence[BulkLine], progress: BulkProgress, phase: BulkPhase
    ) -> None:
        card = build_card(request, lines, approvers=self.approvers, progress=progress, phase=phase)
        self._outbox.update(ref=card_ref(request.request_id), message=bulk_card_message(card))

    def _summary(self, summary: BulkSummary, conference_name: str, request_id: int) -> None:
        progress = summary.progress
        report = BulkReport(
            request_id=request_id,
            conference_name=conference_name,
            counts=counts(progress) if progress is not None else BulkCounts(total=0),
            seconds=summary.seconds,
            failed=[grantee(line) for line in summary.failed],
            changed=[grantee(line) for line in summary.skipped],
        )
        self._outbox.reply(ref=card_ref(request_id), message=bulk_summary_message(report))


class SlackBulkReporter:
    """The `BulkReporter` of a run: one card updated at most every 2 s, a summary at the end."""

    def __init__(
        self,
        publisher: BulkCardPublisher,
        request: BulkRef,
        lines: Sequence[BulkLine],
        *,
        last_update: float | None,
    ) -> None:
        self._publisher = publisher
        self._request = request
        self._lines = tuple(lines)
        self._last_update = last_update
        self._lock = threading.Lock()
        self.updates = 0  # cards queued by this reporter (for tests and the benchmark)

    def progress(self, progress: BulkProgress) -> None:
        """Queue a card update unless one went out less than `min_interval` ago."""
        publisher = self._publisher
        with self._lock:
            now = publisher._clock()
            if self._last_update is not None and now - self._last_update < publisher._min_interval:
                return
            self._last_update = now
            self.updates += 1
        publisher._progress(self._request, self._lines, progress, BulkPhase.RUNNING)

    def finished(self, summary: BulkSummary) -> None:
        """The final card (after the 2 s pause since the last one) and the summary reply."""
        publisher = self._publisher
        if not summary.ran or summary.progress is None:
            log.info("bulk run ended without a summary", outcome=summary.outcome.value)
            return
        with self._lock:
            if self._last_update is not None:
                wait = publisher._min_interval - (publisher._clock() - self._last_update)
                if wait > 0:
                    publisher._sleep(wait)
            self._last_update = publisher._clock()
            self.updates += 1
        request = summary.request or self._request
        publisher._progress(request, self._lines, summary.progress, BulkPhase.DONE)
        publisher._summary(summary, request.conference_name, request.request_id)


__all__ = [
    "MIN_UPDATE_SECONDS",
    "BulkCardPublisher",
    "SlackBulkReporter",
    "build_card",
    "card_ref",
    "counts",
    "grantee",
]
