"""Posting a conference's digest: one top-level message through the outbox, the CSV in its thread.

The one entry point for the scheduled job, `/voucher digest` and `python -m bot digest --post`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog

from bot.digest_text import csv_filename, digest_csv
from bot.services.context import ServiceContext
from bot.services.digest import Digest, build_digest
from bot.slack.blocks import digest_file_comment, render_digest
from bot.slack.outbox import Outbox

log = structlog.get_logger(__name__)

SCHEDULED = "0"  # the last part of the scheduled digest's ref: one a conference and local day


@dataclass(frozen=True)
class DigestPost:
    """What `post_digest` did."""

    digest: Digest
    ref: str | None  # the outbox name of the message; None when nothing was posted
    csv_attached: bool
    skipped: str | None = None  # why nothing was posted (an empty day silenced, no channel)

    @property
    def posted(self) -> bool:
        """The message was enqueued (the poster delivers it)."""
        return self.ref is not None


def digest_ref(conference: str, local_date: dt.date, n: str) -> str:
    """`digest:pycon2026:2026-05-03:0`: the scheduled one is `0`, one asked for is its time."""
    return f"digest:{conference}:{local_date.isoformat()}:{n}"


def post_digest(
    outbox: Outbox,
    ctx: ServiceContext,
    conference: str,
    now: dt.datetime,
    scheduled: bool,
    *,
    post_empty: bool = True,
) -> DigestPost:
    """Build the conference's digest at `now` and enqueue it in its `slack_channel`.

    For the scheduler: `post_digest(bot.slack.outbox, bot.services, code, now, True,
    post_empty=bot.settings.digest_post_empty)`, after claiming the day. The scheduled digest
    is named `digest:<conference>:<local date>:0`, so a second call for the same day updates
    that one message instead of posting another; one asked for (`scheduled=False`:
    `/voucher digest`, the CLI's `--post`) is named by its time and never counts as the
    day's scheduled digest. `post_empty=False` silences a scheduled digest with nothing to
    report (one asked for always posts, if only its one short line).

    The message and, when it had to cut a list, the CSV of every line (in its thread) are
    enqueued in one transaction; the outbox's poster delivers them, retrying Slack failures.
    Raises `UnknownConferenceError` for a conference that is not configured.
    """
    digest = build_digest(ctx, conference=conference, now=now)
    if digest.channel is None:
        log.warning("digest not posted: no slack_channel", conference=conference)
        return DigestPost(digest, None, False, skipped="the conference has no slack_channel")
    if scheduled and digest.empty and not post_empty:
        log.info("empty digest not posted (DIGEST_POST_EMPTY=false)", conference=conference)
        return DigestPost(digest, None, False, skipped="nothing to report (DIGEST_POST_EMPTY)")
    n = SCHEDULED if scheduled else str(int(now.timestamp() * 1000))
    ref = digest_ref(conference, digest.local_date, n)
    rendering = render_digest(digest)
    with ctx.db.transaction() as session:
        outbox.post(ref=ref, channel=digest.channel, message=rendering.message, session=session)
        if rendering.cut:
            outbox.upload(
                ref=ref,
                filename=csv_filename(digest),
                content=digest_csv(digest),
                title=f"Digest {digest.conference} {digest.local_date.isoformat()}",
                comment=digest_file_comment(digest),
                session=session,
            )
    outbox.wake()
    log.info("digest enqueued", conference=conference, ref=ref, csv=rendering.cut)
    return DigestPost(digest, ref, rendering.cut)
