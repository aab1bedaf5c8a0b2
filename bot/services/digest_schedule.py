"""When a conference's daily digest is due, and the run that posts it once per local day.

`digest_due` is the pure decision. A digest is due from the conference's `digest_time` on a
local day until that day ends, so a bot that was down at that time posts it when it starts,
the same day only. The wall time is read the way APScheduler's CronTrigger fires it: a time
that does not exist (the hour skipped when clocks go forward) is the moment it would have
been in the old offset (02:30 on a spring-forward day in Europe/Rome is 03:30 CEST), and a
time that happens twice (clocks go back) is its first occurrence.

(CronTrigger gives that instant when it computes the day's fire before the clocks change, as a
running scheduler does; one started inside the hour after a skipped time moves to the next
day, and the scheduler's periodic check posts it instead.)

`run_due_digest` claims the day (`job_claims`) before it posts: however many bot processes
fire, one posts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import structlog

from bot.conferences import ConferenceConfig
from bot.services.job_claims import run_claimed
from bot.storage import Database

log = structlog.get_logger(__name__)

DIGEST_JOB = "digest"
HOUSEKEEPING_JOB = "housekeeping"

# Posts a conference's digest as of `now` (the instant its local day was claimed; the day is
# `now` in the conference's zone). The Slack side does it, through the outbox.
DigestPoster = Callable[[ConferenceConfig, dt.datetime], object]


def scheduled_at(day: dt.date, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The instant (UTC) of wall time `at` on local `day`, as CronTrigger fires it."""
    # fold=0: a repeated time is its first occurrence; a skipped one keeps the old offset.
    return dt.datetime.combine(day, at.replace(tzinfo=None, fold=0), tzinfo=tz).astimezone(dt.UTC)


def digest_due(now_utc: dt.datetime, digest_time: dt.time, tz: ZoneInfo) -> dt.date | None:
    """The local date whose digest is due at `now_utc`, or None (not yet today).

    Due from today's `digest_time` until local midnight: yesterday's is never due today.
    """
    today = now_utc.astimezone(tz).date()
    return today if now_utc >= scheduled_at(today, digest_time, tz) else None


def digest_key(conference: str, day: dt.date) -> str:
    """The claim key of one conference's digest on one local day."""
    return f"{conference}:{day.isoformat()}"


def housekeeping_key(now_utc: dt.datetime) -> str:
    """The claim key of the nightly housekeeping: its UTC date."""
    return now_utc.astimezone(dt.UTC).date().isoformat()


@dataclass(frozen=True)
class DigestRun:
    """A due digest: its local date, and whether this process posted it."""

    day: dt.date
    posted: bool  # False: another process had claimed the day


def run_due_digest(
    db: Database,
    *,
    conference: ConferenceConfig,
    now: dt.datetime,
    post: DigestPoster,
    by: str,
) -> DigestRun | None:
    """Post the conference's digest if one is due and no process has claimed the day.

    None when none is due. When posting raises, the claim is given back (and the error
    raised) so that a later pass can try again that day.
    """
    day = digest_due(now, conference.digest_time, conference.zone)
    if day is None:
        return None
    ran = run_claimed(
        db,
        job=DIGEST_JOB,
        key=digest_key(conference.code, day),
        by=by,
        now=now,
        work=lambda: post(conference, now),
    )
    if ran is not None:
        log.info("digest posted", conference=conference.code, day=day.isoformat())
    return DigestRun(day=day, posted=ran is not None)
