"""Background jobs (APScheduler 3): the reconciler, the staff list refresh, housekeeping, digests.

Every replica runs the same scheduler. Jobs that must run once per period whatever the
number of processes (housekeeping, each conference's digest) claim their period in the
database first (`bot.services.job_claims`); the others are safe to run everywhere.
"""

from __future__ import annotations

import datetime as dt

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.services.bulk import BulkRef, BulkReporter, NoReporter, expire_due, resume_stalled
from bot.services.digest_schedule import (
    HOUSEKEEPING_JOB,
    DigestPoster,
    digest_key,
    housekeeping_key,
    run_due_digest,
)
from bot.services.housekeeping import purge_old_records
from bot.services.job_claims import process_name, run_claimed
from bot.services.reconciler import reconcile_once

log = structlog.get_logger(__name__)


# How often every process checks for a digest still due today (after a start, after a failure).
DIGEST_CHECK_MINUTES = 10


def build_scheduler(
    bot: Bot, *, post_digest: DigestPoster | None = None, name: str | None = None
) -> BackgroundScheduler:
    """A scheduler with every periodic job registered, not yet started.

    `post_digest` (default: the bot's own, set when Slack is) posts a conference's digest;
    without one no digest is scheduled. `name` is who claims runs (default: host and pid).
    """
    claimant = name or process_name()
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduler.add_job(
        _reconcile,
        "interval",
        args=[bot],
        seconds=bot.settings.reconcile_interval_seconds,
        id="reconciler",
        max_instances=1,
        coalesce=True,
        # The first pass soon after start picks up whatever a crash left behind.
        next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2),
    )
    scheduler.add_job(
        _housekeeping,
        "cron",
        args=[bot, claimant],
        hour=3,
        minute=30,
        id="housekeeping",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        _bulk,
        "interval",
        args=[bot],
        seconds=BULK_INTERVAL_SECONDS,
        id="bulk",
        max_instances=1,
        coalesce=True,
        next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5),
    )
    poster = post_digest or bot.post_digest
    if poster is not None:
        add_digest_jobs(scheduler, bot, poster=poster, name=claimant)
    if bot.slack is not None:
        staff = bot.slack.edge.staff
        scheduler.add_job(
            staff.refresh,
            "interval",
            seconds=max(bot.settings.slack_staff_cache_seconds // 2, 30),
            id="staff-refresh",
            max_instances=1,
            coalesce=True,
            next_run_time=dt.datetime.now(dt.UTC),
        )
    return scheduler


BULK_INTERVAL_SECONDS = 30  # expiring bulk requests, resuming runs whose runner died


def _bulk_reporter_for(bot: Bot, request: BulkRef) -> BulkReporter:
    """Who hears a resumed bulk run: with Slack, its card (the same message) continues."""
    if bot.slack is None:
        return NoReporter()
    return bot.slack.edge.bulk.reporter(request)


def _bulk(bot: Bot) -> None:
    try:
        expired = expire_due(bot.services)
        if bot.slack is not None:
            for request in expired:  # each once: its card says Expired, buttons gone
                bot.slack.edge.bulk.expired(request)
        resumed = resume_stalled(bot.services, lambda ref: _bulk_reporter_for(bot, ref))
    except Exception:
        log.exception("bulk job failed")
        return
    if expired or resumed:
        log.info("bulk requests", expired=len(expired), resumed=resumed)


def add_digest_jobs(
    scheduler: BackgroundScheduler, bot: Bot, *, poster: DigestPoster, name: str
) -> None:
    """Each conference's digest at its `digest_time` in its `timezone`, and a catch-up check.

    The check runs at start (a bot that was down posts the day's missed digest) and every
    few minutes (a failed post is tried again); the claim makes each day's digest one post.
    """
    conferences = [c for c in bot.conferences.values() if c.slack_channel]
    if not conferences:
        return
    done: set[str] = set()  # days this process saw claimed: no INSERT for them again
    for conference in conferences:
        at = conference.digest_time
        scheduler.add_job(
            _digest,
            CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=conference.zone),
            args=[bot, [conference], poster, name, done],
            id=f"digest:{conference.code}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,  # late is fine: `digest_due` keeps it to the same day
        )
    scheduler.add_job(
        _digest,
        "interval",
        args=[bot, conferences, poster, name, done],
        minutes=DIGEST_CHECK_MINUTES,
        id="digest-check",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=dt.datetime.now(dt.UTC),
    )


def _digest(
    bot: Bot,
    conferences: list[ConferenceConfig],
    poster: DigestPoster,
    name: str,
    done: set[str],
) -> None:
    now = bot.services.clock()
    for conference in conferences:
        if digest_key(conference.code, now.astimezone(conference.zone).date()) in done:
            continue
        try:
            run = run_due_digest(bot.db, conference=conference, now=now, post=poster, by=name)
        except Exception:
            log.exception("digest failed", conference=conference.code)
            continue
        if run is not None:  # posted here or claimed elsewhere: settled for the day
            done.add(digest_key(conference.code, run.day))


def _housekeeping(bot: Bot, name: str) -> None:
    now = bot.services.clock()
    try:
        ran = run_claimed(
            bot.db,
            job=HOUSEKEEPING_JOB,
            key=housekeeping_key(now),
            by=name,
            now=now,
            work=lambda: purge_old_records(bot.db, now=now),
        )
    except Exception:
        log.exception("housekeeping failed")
        return
    if ran is None:
        log.info("housekeeping already run today by another process")
        return
    log.info("housekeeping", **ran.value.__dict__)


def _reconcile(bot: Bot) -> None:
    try:
        reconcile_once(bot.services)
    except Exception:
        log.exception("reconciler pass failed")
