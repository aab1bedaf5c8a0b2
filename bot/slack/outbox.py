"""The durable path of every message the bot posts or updates in Slack.

Writers enqueue a row (`Outbox.post`, `update`, `reply`, `upload`, `home`), inside their own
transaction when they pass `session`, so a message is never lost with a crash and never sent
for a change that rolled back. The poster (`bot.slack.status.StatusPoster`) delivers rows in
order, retries what Slack refused with backoff and honours `Retry-After` on rate limits.

A top-level message is named by a `ref` (e.g. `bulk:12`, `digest:pycon2026:2026-12-02`); its
`ts` is kept in `slack_messages` once posted, and the rows that update it, reply in its thread
or attach a file to it wait until it is there. An update or a home view that a newer one for
the same message (or user) replaces is dropped unsent: only the latest state goes to Slack,
which keeps a burst of progress updates within Slack's rate limits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.slack.blocks import Message
from bot.storage import (
    Database,
    OutboxKind,
    OutboxState,
    SlackMessage,
    SlackOutbox,
    insert_many_ignoring_conflict,
)

# Kinds whose newer pending row for the same target replaces an older one.
LATEST_WINS = (OutboxKind.UPDATE, OutboxKind.HOME)
# Kinds that act on a posted message and wait until its ts is known.
NEEDS_TS = (OutboxKind.UPDATE, OutboxKind.REPLY, OutboxKind.FILE)


def _no_wake() -> None:
    return None


class Outbox:
    """Enqueues messages for the poster; `wake` (set by the wiring) nudges it to look now."""

    def __init__(self, db: Database, wake: Callable[[], None] = _no_wake) -> None:
        self._db = db
        self.wake = wake

    def post(
        self, *, ref: str, channel: str, message: Message, session: Session | None = None
    ) -> None:
        """A top-level message in `channel`, posted once per `ref` (a repeat updates it)."""
        self._add(session, kind=OutboxKind.POST, ref=ref, channel=channel, message=message)

    def update(self, *, ref: str, message: Message, session: Session | None = None) -> None:
        """Replace the text and blocks of the message posted under `ref` (latest wins)."""
        self._add(session, kind=OutboxKind.UPDATE, ref=ref, message=message)

    def reply(self, *, ref: str, message: Message, session: Session | None = None) -> None:
        """A reply in the thread of the message posted under `ref`."""
        self._add(session, kind=OutboxKind.REPLY, ref=ref, message=message)

    def upload(
        self,
        *,
        ref: str,
        filename: str,
        content: str,
        title: str,
        comment: str | None = None,
        session: Session | None = None,
    ) -> None:
        """A file (e.g. a CSV of a long list) in the thread of the message posted under `ref`."""
        self._add(
            session,
            kind=OutboxKind.FILE,
            ref=ref,
            payload={"filename": filename, "content": content, "title": title, "comment": comment},
        )

    def home(self, *, user: str, view: dict[str, Any], session: Session | None = None) -> None:
        """Publish `user`'s App Home view (latest wins)."""
        self._add(session, kind=OutboxKind.HOME, user=user, payload={"view": view})

    def ts(self, ref: str) -> str | None:
        """The ts of the message posted under `ref`, once Slack has it."""
        with self._db.transaction() as session:
            return session.scalar(select(SlackMessage.ts).where(SlackMessage.ref == ref))

    def _add(
        self,
        session: Session | None,
        *,
        kind: OutboxKind,
        ref: str | None = None,
        user: str | None = None,
        channel: str | None = None,
        message: Message | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        row = SlackOutbox(
            kind=kind,
            ref=ref,
            user=user,
            channel=channel,
            message=message.as_kwargs() if message is not None else payload,
            state=OutboxState.PENDING,
        )
        with self._session(session) as active:
            active.add(row)
        if session is None:
            self.wake()
        # With a caller's session, the row is visible once they commit; the poster's next
        # pass (or their own `wake()` after the commit) delivers it.

    @contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        with self._db.transaction() as own:
            yield own


@dataclass(frozen=True)
class NamedJob:
    """An outbox row that is not a grantee thread, as the poster delivers it."""

    id: int
    kind: OutboxKind
    ref: str | None
    user: str | None
    channel: str | None
    message: dict[str, Any]
    replaced: bool = False  # a newer row for the same message came first: nothing to send


class WaitForPostError(Exception):
    """The message this row acts on is not posted yet (or is being posted right now)."""


def superseded(session: Session, job: NamedJob) -> bool:
    """Whether a newer pending row replaces this one (updates and home views: latest wins)."""
    if job.kind not in LATEST_WINS:
        return False
    target = (
        SlackOutbox.user == job.user
        if job.kind is OutboxKind.HOME
        else (SlackOutbox.ref == job.ref)
    )
    newer: int | None = session.scalar(
        select(SlackOutbox.id)
        .where(
            SlackOutbox.kind == job.kind,
            target,
            SlackOutbox.state == OutboxState.PENDING,
            SlackOutbox.id > job.id,
        )
        .limit(1)
    )
    return newer is not None


def deliver_named(
    db: Database,
    client: WebClient,
    job: NamedJob,
    *,
    now: dt.datetime,
    lease: dt.timedelta,
) -> None:
    """Send one row to Slack; raises what Slack raised (the poster retries it)."""
    if job.kind is OutboxKind.HOME:
        assert job.user is not None
        client.views_publish(user_id=job.user, view=job.message["view"])
        return
    assert job.ref is not None
    if job.kind is OutboxKind.POST:
        _post(db, client, job, now=now, lease=lease)
        return
    channel, ts = _posted(db, job.ref)
    if job.kind is OutboxKind.UPDATE:
        client.chat_update(channel=channel, ts=ts, **job.message)
    elif job.kind is OutboxKind.REPLY:
        client.chat_postMessage(channel=channel, thread_ts=ts, **job.message)
    elif job.kind is OutboxKind.FILE:
        client.files_upload_v2(
            channel=channel,
            thread_ts=ts,
            filename=job.message["filename"],
            content=job.message["content"],
            title=job.message["title"],
            initial_comment=job.message.get("comment"),
        )


def _posted(db: Database, ref: str) -> tuple[str, str]:
    with db.transaction() as session:
        found = session.get(SlackMessage, ref)
        if found is None or found.ts is None:
            raise WaitForPostError(ref)
        return found.channel, found.ts


def _post(
    db: Database, client: WebClient, job: NamedJob, *, now: dt.datetime, lease: dt.timedelta
) -> None:
    """Post once per ref: a repeated post (a retry, a second writer) updates the message."""
    assert job.ref is not None and job.channel is not None
    with db.transaction() as session:
        insert_many_ignoring_conflict(
            session,
            SlackMessage,
            [{"ref": job.ref, "channel": job.channel}],
            conflict=["ref"],
            returning=[SlackMessage.ref],
        )
        found = session.get(SlackMessage, job.ref, with_for_update=True)
        assert found is not None
        if found.ts is not None:
            channel, ts = found.channel, found.ts
        elif found.lease_expires_at is not None and found.lease_expires_at > now:
            raise WaitForPostError(job.ref)
        else:
            found.lease_expires_at = now + lease
            channel, ts = found.channel, None
    if ts is not None:
        client.chat_update(channel=channel, ts=ts, **job.message)
        return
    try:
        answer = client.chat_postMessage(channel=channel, **job.message)
    except Exception:
        with db.transaction() as session:
            session.execute(
                update(SlackMessage)
                .where(SlackMessage.ref == job.ref)
                .values(lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
        raise
    with db.transaction() as session:
        session.execute(
            update(SlackMessage)
            .where(SlackMessage.ref == job.ref)
            .values(ts=str(answer["ts"]), channel=str(answer.get("channel") or channel))
            .values(lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
