"""Background jobs (APScheduler 3): the reconciler, the staff list refresh, housekeeping."""

from __future__ import annotations

import datetime as dt

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from bot.bootstrap import Bot
from bot.services.bulk import BulkRef, BulkReporter, NoReporter, expire_due, resume_stalled
from bot.services.housekeeping import purge_old_records
from bot.services.reconciler import reconcile_once

log = structlog.get_logger(__name__)


def build_scheduler(bot: Bot) -> BackgroundScheduler:
    """A scheduler with every periodic job registered, not yet started."""
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
        args=[bot],
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


def _housekeeping(bot: Bot) -> None:
    try:
        purged = purge_old_records(bot.db, now=bot.services.clock())
    except Exception:
        log.exception("housekeeping failed")
        return
    log.info("housekeeping", **purged.__dict__)


def _reconcile(bot: Bot) -> None:
    try:
        reconcile_once(bot.services)
    except Exception:
        log.exception("reconciler pass failed")
