"""The grantee's status thread: outcomes become outbox rows, a poster delivers them to Slack.

Publishing writes one row and wakes the poster; it never waits for Slack, so a Slack outage
never blocks or breaks provisioning. The poster posts the parent message once per grantee
(its `ts` is stored and reused), replies in its thread, updates the parent's state line, and
retries with backoff what Slack refused, rate limits included.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from bot.conferences import Conferences
from bot.services.context import Outcome, retry_backoff
from bot.services.outcomes import GrantIntake
from bot.slack.blocks import (
    intake_reply,
    parent_state,
    redact_payload,
    thread_parent,
    thread_reply,
)
from bot.slack.outbox import NamedJob, WaitForPostError, deliver_named, superseded
from bot.storage import (
    Conference,
    ConferenceVoucher,
    Database,
    Grant,
    OutboxKind,
    OutboxState,
    SlackOutbox,
    SlackThread,
    insert_ignoring_conflict,
    utcnow,
)

log = structlog.get_logger(__name__)

FIRST_STATE = ":hourglass_flowing_sand: in progress"


class StatusOutbox:
    """The outcome listener behind the threads: each outcome worth a word becomes a row."""

    def __init__(self, *, db: Database, conferences: Conferences, wake: Callable[[], None]) -> None:
        self._db = db
        self._conferences = conferences
        self._wake = wake

    def publish(self, outcome: Outcome) -> None:
        """Queue the thread reply and parent state for this outcome, if it has any."""
        grant = outcome.grant
        config = self._conferences.get(grant.conference) if grant else None
        if grant is None or config is None or not config.slack_channel:
            return
        reply = intake_reply(outcome) if isinstance(outcome, GrantIntake) else thread_reply(outcome)
        state = parent_state(outcome)
        if reply is None and state is None:
            return
        with self._db.transaction() as session:
            session.add(
                SlackOutbox(
                    grant_id=grant.id,
                    channel=config.slack_channel,
                    reply=reply.as_kwargs() if reply else None,
                    parent=thread_parent(grant, state=state or FIRST_STATE).as_kwargs(),
                    update_parent=state is not None,
                    state=OutboxState.PENDING,
                )
            )
        self._wake()


@dataclass(frozen=True)
class _Job:
    id: int
    grant_id: int
    channel: str
    reply: dict[str, Any] | None
    parent: dict[str, Any]
    update_parent: bool
    codes: tuple[str, ...]  # the grantee's voucher codes: masked in whatever is posted


class _ParentBusyError(Exception):
    """Another poster is posting this grantee's parent message right now."""


class StatusPoster:
    """Delivers outbox rows to Slack from a background thread (and `run_once` for tests)."""

    def __init__(
        self,
        *,
        db: Database,
        client: WebClient,
        conferences: Conferences,
        max_attempts: int = 10,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        poll_seconds: float = 5.0,
        clock: Callable[[], dt.datetime] = utcnow,
        backoff: Callable[[int], dt.timedelta] = retry_backoff,
    ) -> None:
        self._db = db
        self._client = client
        self._codes = list(conferences)
        self._max_attempts = max_attempts
        self._lease = lease
        self._poll = poll_seconds
        self._clock = clock
        self._backoff = backoff
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Ask the poster to look at the outbox now."""
        self._wakeup.set()

    def start(self) -> None:
        """Run the delivery loop in a daemon thread."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="slack-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the current row and stop."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                delivered = self.run_once()
            except Exception:  # a database hiccup must not end the loop; try again later
                log.exception("status poster pass failed")
                delivered = 0
            if delivered == 0:
                self._wakeup.wait(self._poll)
                self._wakeup.clear()

    def run_once(self, *, limit: int = 20) -> int:
        """Deliver up to `limit` rows that are due; the number of rows handled."""
        handled = 0
        while handled < limit and (job := self._claim_next()) is not None:
            if isinstance(job, NamedJob):
                if not job.replaced:
                    self._deliver_named(job)
            else:
                self._deliver(job)
            handled += 1
        return handled

    def _claim_next(self) -> _Job | NamedJob | None:
        """The oldest due row, leased just before it is delivered (not a batch up front)."""
        now = self._clock()
        with self._db.transaction() as session:
            ours = or_(
                SlackOutbox.grant_id.is_(None),  # a named message (bulk, digest, home)
                SlackOutbox.grant_id.in_(
                    select(Grant.id)
                    .join(Conference, Grant.conference_id == Conference.id)
                    .where(Conference.code.in_(self._codes))  # like the reconciler: ours only
                ),
            )
            row = session.scalars(
                select(SlackOutbox)
                .where(
                    ours,
                    SlackOutbox.state == OutboxState.PENDING,
                    or_(SlackOutbox.next_attempt_at.is_(None), SlackOutbox.next_attempt_at <= now),
                    or_(
                        SlackOutbox.lease_expires_at.is_(None),
                        SlackOutbox.lease_expires_at < now,
                    ),
                )
                .order_by(SlackOutbox.id)
                .limit(1)
                .with_for_update(skip_locked=True, of=SlackOutbox)
            ).first()
            if row is None:
                return None
            row.lease_expires_at = now + self._lease
            if row.kind is not OutboxKind.THREAD:
                named = NamedJob(
                    row.id, row.kind, row.ref, row.user, row.channel, row.message or {}
                )
                if superseded(session, named):  # a newer update of the same message replaces it
                    row.state = OutboxState.SENT
                    row.lease_expires_at = None
                    row.last_error = "replaced by a newer update before it was sent"
                    return replace(named, replaced=True)
                return named
            assert row.grant_id is not None and row.channel is not None and row.parent is not None
            codes = _voucher_codes(session, row.grant_id)
            return _Job(
                row.id,
                row.grant_id,
                row.channel,
                row.reply,
                row.parent,
                row.update_parent,
                codes,
            )

    def _deliver_named(self, job: NamedJob) -> None:
        try:
            deliver_named(self._db, self._client, job, now=self._clock(), lease=self._lease)
        except WaitForPostError:  # its message is not posted yet: look again shortly
            self._update_row(
                job,
                lease_expires_at=None,
                next_attempt_at=self._clock() + dt.timedelta(seconds=2),
            )
            return
        except SlackApiError as exc:
            self._failed(
                job,
                f"Slack answered {exc.response.get('error', exc.response.status_code)}",
                retry_after=_retry_after(exc),
            )
            return
        except (SlackClientError, OSError) as exc:
            self._failed(job, f"Slack unreachable: {exc}")
            return
        self._update_row(job, state=OutboxState.SENT, lease_expires_at=None, last_error=None)

    def _deliver(self, job: _Job) -> None:
        # The builders already mask codes; this is the last step before the channel, for rows
        # queued by an older version or text that named a code the builders did not know.
        reply = redact_payload(job.reply, job.codes) if job.reply is not None else None
        parent = redact_payload(job.parent, job.codes)
        try:
            ts, fresh = self._parent_ts(job, parent)
            if reply is not None:
                self._client.chat_postMessage(channel=job.channel, thread_ts=ts, **reply)
                # The reply is out: a retry (say the parent update fails) must not repeat it.
                self._update_row(job, reply=None)
            if job.update_parent and not fresh:
                self._client.chat_update(channel=job.channel, ts=ts, **parent)
        except _ParentBusyError:  # look again shortly, without counting an attempt
            self._update_row(
                job,
                lease_expires_at=None,
                next_attempt_at=self._clock() + dt.timedelta(seconds=2),
                last_error=None,
            )
            return
        except SlackApiError as exc:
            self._failed(
                job, f"Slack answered {exc.response.get('error', exc.response.status_code)}"
            )
            return
        except (SlackClientError, OSError) as exc:
            self._failed(job, f"Slack unreachable: {exc}")
            return
        self._update_row(job, state=OutboxState.SENT, lease_expires_at=None, last_error=None)

    def _update_row(self, job: _Job | NamedJob, **values: Any) -> None:
        with self._db.transaction() as session:
            session.execute(
                update(SlackOutbox)
                .where(SlackOutbox.id == job.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def _parent_ts(self, job: _Job, parent: dict[str, Any]) -> tuple[str, bool]:
        """The thread's parent ts, posting the parent first if there is none yet."""
        now = self._clock()
        with self._db.transaction() as session:
            insert_ignoring_conflict(
                session,
                SlackThread,
                {"grant_id": job.grant_id, "channel": job.channel},
                conflict=["grant_id"],
            )
            thread = session.scalars(
                select(SlackThread).where(SlackThread.grant_id == job.grant_id).with_for_update()
            ).one()
            if thread.ts is not None:
                return thread.ts, False
            if thread.lease_expires_at is not None and thread.lease_expires_at > now:
                raise _ParentBusyError
            thread.lease_expires_at = now + self._lease
            thread_id, channel = thread.id, thread.channel
        try:
            answer = self._client.chat_postMessage(channel=channel, **parent)
        except Exception:
            self._release_thread(thread_id)
            raise
        ts = str(answer["ts"])
        with self._db.transaction() as session:
            row = session.get(SlackThread, thread_id, with_for_update=True)
            assert row is not None
            row.ts = ts
            row.lease_expires_at = None
        return ts, True

    def _release_thread(self, thread_id: int) -> None:
        with self._db.transaction() as session:
            row = session.get(SlackThread, thread_id, with_for_update=True)
            if row is not None:
                row.lease_expires_at = None

    def _failed(
        self, job: _Job | NamedJob, error: str, *, retry_after: dt.timedelta | None = None
    ) -> None:
        with self._db.transaction() as session:
            row = session.get(SlackOutbox, job.id, with_for_update=True)
            assert row is not None
            row.attempts += 1
            row.last_error = error
            row.lease_expires_at = None
            if row.attempts >= self._max_attempts:
                row.state = OutboxState.FAILED
                log.error("status update dropped after retries", outbox=job.id, error=error)
                return
            backoff = self._backoff(row.attempts)
            row.next_attempt_at = self._clock() + max(backoff, retry_after or backoff)
        log.warning("status update not posted; will retry", outbox=job.id, error=error)


def _retry_after(exc: SlackApiError) -> dt.timedelta | None:
    """Slack's `Retry-After` on a rate-limited call (after the client's own retries)."""
    if exc.response.status_code != 429:
        return None
    value = (exc.response.headers or {}).get("Retry-After") or (exc.response.headers or {}).get(
        "retry-after"
    )
    try:
        return dt.timedelta(seconds=max(int(str(value)), 1))
    except (TypeError, ValueError):
        return dt.timedelta(seconds=30)


def _voucher_codes(session: Session, grant_id: int) -> tuple[str, ...]:
    """The codes of the grantee's vouchers at the grant's conference (theirs by grant or email)."""
    grant = session.get(Grant, grant_id)
    if grant is None:
        return ()
    person = ConferenceVoucher.conference_id == grant.conference_id
    mine = ConferenceVoucher.grant_id == grant_id
    if grant.email_key is not None:
        mine = or_(mine, and_(person, ConferenceVoucher.email_key == grant.email_key))
    return tuple(session.scalars(select(ConferenceVoucher.code).where(mine)))
