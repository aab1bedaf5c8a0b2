"""Shared set-up for benchmarks: a fresh conference on Postgres and the local fakes."""

from __future__ import annotations

import datetime as dt
import os
import resource
import uuid

from bot import migrations
from bot.conferences import ConferenceConfig, Conferences
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.services.conference_sync import sync_conferences
from bot.services.context import ServiceContext
from bot.storage import Database

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def database() -> Database:
    """The benchmark database (BENCH_DATABASE_URL, else TEST_DATABASE_URL, else local `test`)."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)
    db = Database.from_url(url)
    migrations.upgrade(db.engine)
    return db


def conference() -> ConferenceConfig:
    """A conference of the run's own, so runs never see each other's rows."""
    return ConferenceConfig(
        code=f"bench{uuid.uuid4().hex[:10]}",
        name="PyCon Italia 2026",
        pretix_organizer="pycon",
        pretix_event="pycon2026",
        pretix_quota=1,
        voucher_valid_until=dt.datetime(2030, 5, 31, tzinfo=dt.UTC),
        timezone="Europe/Rome",
        slack_channel="C0GRANTS",
    )


def services(
    db: Database, conf: ConferenceConfig, *, pretix: PretixClient, mailer: SmtpMailer, url: str
) -> ServiceContext:
    """Service context wired to the fakes."""
    conferences = Conferences({conf.code: conf})
    sync_conferences(db, conferences)
    return ServiceContext(
        db=db,
        conferences=conferences,
        pretix=pretix,
        mailer=mailer,
        pretix_url=url,
        message_id_domain="pycon.example.org",
    )


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
