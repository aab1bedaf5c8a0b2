"""When a digest is due (time zones, DST), and one post per conference and local day."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from bot import migrations
from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.scheduler import DIGEST_CHECK_MINUTES, build_scheduler
from bot.services.digest_schedule import (
    DIGEST_JOB,
    HOUSEKEEPING_JOB,
    digest_due,
    digest_key,
    housekeeping_key,
    run_due_digest,
    scheduled_at,
)
from bot.services.inbox import SLACK
from bot.services.job_claims import claim_run
from bot.storage import Database, InboundEvent, JobClaim, SlackOutbox
from tests.conftest import conferences_toml, unique
from tests.fakes.slack_api import FakeSlack
from tests.helpers import post_slack_outbox

ROME = ZoneInfo("Europe/Rome")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    """A UTC instant."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (case, now in UTC, digest_time, zone, the local date due or None)
DUE_CASES: list[tuple[str, dt.datetime, dt.time, ZoneInfo, dt.date | None]] = [
    ("Rome winter: 09:00 CET is 08:00 UTC", at(2026, 1, 15, 7, 59), dt.time(9), ROME, None),
    ("Rome winter: at 08:00 UTC", at(2026, 1, 15, 8, 0), dt.time(9), ROME, dt.date(2026, 1, 15)),
    ("Rome summer: 09:00 CEST is 07:00 UTC", at(2026, 6, 1, 6, 59), dt.time(9), ROME, None),
    ("Rome summer: at 07:00 UTC", at(2026, 6, 1, 7, 0), dt.time(9), ROME, dt.date(2026, 6, 1)),
    (
        "Rome spring-forward day, 09:00 is already CEST",
        at(2026, 3, 29, 7, 0),
        dt.time(9),
        ROME,
        dt.date(2026, 3, 29),
    ),
    (
        "Rome spring-forward day, 08:59 CEST: not yet",
        at(2026, 3, 29, 6, 59),
        dt.time(9),
        ROME,
        None,
    ),
    (
        "skipped 02:30 on spring-forward day: not at 03:29 CEST",
        at(2026, 3, 29, 1, 29),
        dt.time(2, 30),
        ROME,
        None,
    ),
    (
        "skipped 02:30 on spring-forward day: due at 03:30 CEST (01:30 UTC)",
        at(2026, 3, 29, 1, 30),
        dt.time(2, 30),
        ROME,
        dt.date(2026, 3, 29),
    ),
    (
        "Rome fall-back day, 09:00 is CET again (08:00 UTC)",
        at(2026, 10, 25, 7, 59),
        dt.time(9),
        ROME,
        None,
    ),
    (
        "Rome fall-back day at 08:00 UTC",
        at(2026, 10, 25, 8, 0),
        dt.time(9),
        ROME,
        dt.date(2026, 10, 25),
    ),
    (
        "repeated 02:30 on fall-back day: its first occurrence (00:30 UTC)",
        at(2026, 10, 25, 0, 30),
        dt.time(2, 30),
        ROME,
        dt.date(2026, 10, 25),
    ),
    (
        "repeated 02:30: not before the first one",
        at(2026, 10, 25, 0, 29),
        dt.time(2, 30),
        ROME,
        None,
    ),
    (
        "New York winter: 09:00 EST is 14:00 UTC",
        at(2026, 1, 15, 13, 59),
        dt.time(9),
        NEW_YORK,
        None,
    ),
    (
        "New York summer: 09:00 EDT is 13:00 UTC",
        at(2026, 7, 1, 13, 0),
        dt.time(9),
        NEW_YORK,
        dt.date(2026, 7, 1),
    ),
    (
        "New York: its local date, not UTC's (02:00 UTC is still yesterday evening)",
        at(2026, 7, 2, 2, 0),
        dt.time(9),
        NEW_YORK,
        dt.date(2026, 7, 1),
    ),
    (
        "New York spring-forward 2026-03-08: skipped 02:30 is 07:30 UTC",
        at(2026, 3, 8, 7, 30),
        dt.time(2, 30),
        NEW_YORK,
        dt.date(2026, 3, 8),
    ),
    (
        "late start the same day: still due just before local midnight",
        at(2026, 6, 1, 21, 59),
        dt.time(9),
        ROME,
        dt.date(2026, 6, 1),
    ),
    (
        "next day before its time: yesterday's is not due",
        at(2026, 6, 1, 22, 0),
        dt.time(9),
        ROME,
        None,
    ),
    (
        "a digest late in the evening",
        at(2026, 6, 1, 21, 30),
        dt.time(23, 30),
        ROME,
        dt.date(2026, 6, 1),
    ),
]


@pytest.mark.parametrize(
    ("now", "digest_time", "zone", "due"),
    [case[1:] for case in DUE_CASES],
    ids=[case[0] for case in DUE_CASES],
)
def test_digest_due(
    now: dt.datetime, digest_time: dt.time, zone: ZoneInfo, due: dt.date | None
) -> None:
    assert digest_due(now, digest_time, zone) == due


@pytest.mark.parametrize(
    ("day", "digest_time", "zone"),
    [
        (dt.date(2026, 3, 29), dt.time(2, 30), ROME),
        (dt.date(2026, 3, 29), dt.time(9), ROME),
        (dt.date(2026, 10, 25), dt.time(2, 30), ROME),
        (dt.date(2026, 10, 25), dt.time(9), ROME),
        (dt.date(2026, 3, 8), dt.time(2, 30), NEW_YORK),
        (dt.date(2026, 11, 1), dt.time(1, 30), NEW_YORK),
        (dt.date(2026, 7, 1), dt.time(0, 0), NEW_YORK),
    ],
)
def test_cron_trigger_fires_when_the_digest_becomes_due(
    day: dt.date, digest_time: dt.time, zone: ZoneInfo
) -> None:
    """The scheduler's first fire on a day is the instant `digest_due` starts saying yes."""
    trigger = CronTrigger(hour=digest_time.hour, minute=digest_time.minute, timezone=zone)
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone) - dt.timedelta(seconds=1)

    fires = trigger.get_next_fire_time(None, midnight)

    assert fires is not None
    assert fires.astimezone(UTC) == scheduled_at(day, digest_time, zone)
    assert digest_due(fires, digest_time, zone) == day
    assert digest_due(fires - dt.timedelta(seconds=1), digest_time, zone) != day


def test_housekeeping_key_is_the_utc_date() -> None:
    assert housekeeping_key(dt.datetime(2026, 6, 1, 23, 30, tzinfo=NEW_YORK)) == "2026-06-02"


# --- claims: exactly one winner ------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database.from_url(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    migrations.upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def any_db(request: pytest.FixtureRequest, db: Database, sqlite_db: Database) -> Database:
    return db if request.param == "postgres" else sqlite_db


def test_threads_racing_for_one_day_make_exactly_one_claim(any_db: Database) -> None:
    key = digest_key(unique("conf"), dt.date(2026, 5, 2))
    start = threading.Barrier(8)

    def claim(n: int) -> bool:
        start.wait()
        return claim_run(any_db, job=DIGEST_JOB, key=key, by=f"bot-{n}")

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(claim, range(8)))

    assert won.count(True) == 1
    with any_db.transaction() as session:
        rows = session.scalars(select(JobClaim).where(JobClaim.key == key)).all()
    assert [row.claimed_by for row in rows] == [f"bot-{won.index(True)}"]
    # Another job may claim the same key.
    assert claim_run(any_db, job="other", key=key, by="bot-0")


def make_conference(
    code: str, *, digest_time: dt.time, zone: str = "Europe/Rome"
) -> ConferenceConfig:
    return ConferenceConfig(
        code=code,
        name="PyCon Italia 2026",
        pretix_organizer="pycon",
        pretix_event="pycon2026",
        pretix_quota=1,
        timezone=zone,
        slack_channel="C0GRANTS",
        digest_time=digest_time,
    )


class Recorder:
    """A digest poster that records what it was asked to post, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dt.date, dt.datetime]] = []
        self.lock = threading.Lock()
        self.posted = threading.Event()
        self.fail_next = False

    def __call__(self, conference: ConferenceConfig, now: dt.datetime) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("Slack is down")
        day = now.astimezone(conference.zone).date()
        with self.lock:
            self.calls.append((conference.code, day, dt.datetime.now(UTC)))
        self.posted.set()

    def days(self) -> list[tuple[str, dt.date]]:
        with self.lock:
            return [(code, day) for code, day, _ in self.calls]


def test_a_failed_post_gives_the_day_back_for_the_next_pass(any_db: Database) -> None:
    conference = make_conference(unique("conf"), digest_time=dt.time(9))
    poster = Recorder()
    poster.fail_next = True
    now = at(2026, 5, 2, 8, 0)

    with pytest.raises(RuntimeError):
        run_due_digest(any_db, conference=conference, now=now, post=poster, by="bot-a")
    again = run_due_digest(any_db, conference=conference, now=now, post=poster, by="bot-b")
    other = run_due_digest(any_db, conference=conference, now=now, post=poster, by="bot-a")

    assert again is not None and again.posted
    assert other is not None and not other.posted
    assert poster.days() == [(conference.code, dt.date(2026, 5, 2))]


# --- the scheduler, on a moved clock -------------------------------------------------------


@pytest.fixture
def make_scheduled_bot(
    tmp_path: Path, make_running_bot: Callable[..., Bot]
) -> Iterator[Callable[..., tuple[Bot, BackgroundScheduler]]]:
    """Build a bot for a conference and its scheduler (only its digest jobs), not started."""
    schedulers: list[BackgroundScheduler] = []

    def build(
        conference: ConferenceConfig, poster: Recorder, *, name: str, **settings: object
    ) -> tuple[Bot, BackgroundScheduler]:
        config = tmp_path / f"{name}.toml"
        config.write_text(conferences_toml(conference), encoding="utf-8")
        bot = make_running_bot(conferences_file=config, **settings)
        scheduler = build_scheduler(bot, post_digest=poster, name=name)
        for job in ("reconciler", "staff-refresh"):  # not what these tests look at
            if scheduler.get_job(job) is not None:
                scheduler.remove_job(job)
        schedulers.append(scheduler)
        return bot, scheduler

    yield build
    for scheduler in schedulers:
        if scheduler.running:
            scheduler.shutdown(wait=True)


def wait_a_little(poster: Recorder, seconds: float = 4.0) -> None:
    poster.posted.wait(seconds)


def test_the_digest_is_posted_at_the_skipped_time_on_spring_forward_day(
    make_scheduled_bot: Callable[..., tuple[Bot, BackgroundScheduler]],
) -> None:
    conference = make_conference(unique("conf"), digest_time=dt.time(2, 30))
    poster = Recorder()
    with time_machine.travel(at(2026, 3, 28, 12, 0), tick=True) as clock:
        _bot, scheduler = make_scheduled_bot(conference, poster, name="bot-a")
        scheduler.start()  # running since the day before: the 28th's is posted at start
        wait_a_little(poster)
        poster.posted.clear()
        clock.move_to(at(2026, 3, 29, 1, 29, 58))  # 03:29:58 CEST; 02:00-03:00 was skipped
        scheduler.wakeup()
        wait_a_little(poster, 6.0)
        scheduler.shutdown(wait=True)

    assert [(code, day) for code, day, _ in poster.calls] == [
        (conference.code, dt.date(2026, 3, 28)),
        (conference.code, dt.date(2026, 3, 29)),
    ]
    assert poster.calls[1][2] >= at(2026, 3, 29, 1, 30)  # 03:30 CEST, not at 03:29:58


def test_a_bot_started_in_the_hour_after_the_skipped_time_posts_from_the_check(
    make_scheduled_bot: Callable[..., tuple[Bot, BackgroundScheduler]],
) -> None:
    """Started at 03:10 CEST, the cron's next 02:30 is tomorrow; the periodic check posts."""
    conference = make_conference(unique("conf"), digest_time=dt.time(2, 30))
    poster = Recorder()
    with time_machine.travel(at(2026, 3, 29, 1, 10), tick=True) as clock:
        _bot, scheduler = make_scheduled_bot(conference, poster, name="bot-a")
        scheduler.start()
        wait_a_little(poster, 1.5)
        assert poster.calls == []  # not due before 03:30 CEST
        clock.move_to(at(2026, 3, 29, 1, 30) + dt.timedelta(minutes=DIGEST_CHECK_MINUTES))
        scheduler.wakeup()
        wait_a_little(poster)
        scheduler.shutdown(wait=True)

    assert poster.days() == [(conference.code, dt.date(2026, 3, 29))]


def test_two_schedulers_racing_for_the_same_day_post_one_digest(
    make_scheduled_bot: Callable[..., tuple[Bot, BackgroundScheduler]],
) -> None:
    conference = make_conference(unique("conf"), digest_time=dt.time(9), zone="America/New_York")
    poster = Recorder()
    with time_machine.travel(at(2026, 7, 1, 12, 59, 59), tick=True):  # 08:59:59 EDT
        schedulers = [
            make_scheduled_bot(conference, poster, name=name)[1] for name in ("bot-a", "bot-b")
        ]
        for scheduler in schedulers:
            scheduler.start()
        wait_a_little(poster)
        for scheduler in schedulers:
            scheduler.wakeup()  # both look again: the day is claimed
        threading.Event().wait(1.0)
        for scheduler in schedulers:
            scheduler.shutdown(wait=True)

    assert poster.days() == [(conference.code, dt.date(2026, 7, 1))]


def test_a_bot_that_starts_late_posts_the_missed_digest_once_and_never_yesterdays(
    make_scheduled_bot: Callable[..., tuple[Bot, BackgroundScheduler]],
) -> None:
    conference = make_conference(unique("conf"), digest_time=dt.time(9))
    poster = Recorder()
    with time_machine.travel(at(2026, 5, 2, 10, 0), tick=True):  # 12:00 CEST, it was down
        bot, first = make_scheduled_bot(conference, poster, name="bot-a")
        first.start()
        wait_a_little(poster)
        first.shutdown(wait=True)
        # A second replica (or a restart) later that day: the day is taken.
        _, second = make_scheduled_bot(conference, poster, name="bot-b")
        second.start()
        threading.Event().wait(1.0)
        second.shutdown(wait=True)
    assert poster.days() == [(conference.code, dt.date(2026, 5, 2))]

    # Down all of 3 May; started on 4 May before 09:00: nothing for the 3rd, nor yet the 4th.
    poster.posted.clear()
    with time_machine.travel(at(2026, 5, 4, 6, 0), tick=True):  # 08:00 CEST
        _, third = make_scheduled_bot(conference, poster, name="bot-c")
        third.start()
        wait_a_little(poster, 1.5)
        third.shutdown(wait=True)
    assert poster.days() == [(conference.code, dt.date(2026, 5, 2))]
    with bot.db.transaction() as session:
        keys = session.scalars(
            select(JobClaim.key).where(
                JobClaim.name == DIGEST_JOB, JobClaim.key.startswith(conference.code)
            )
        ).all()
    assert keys == [digest_key(conference.code, dt.date(2026, 5, 2))]


def test_housekeeping_runs_once_a_day_across_replicas(
    tmp_path: Path, make_scheduled_bot: Callable[..., tuple[Bot, BackgroundScheduler]]
) -> None:
    conference = make_conference(unique("conf"), digest_time=dt.time(9))
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"  # its own database: the key is the date
    poster = Recorder()
    with time_machine.travel(at(2026, 6, 1, 3, 29, 58), tick=True):
        schedulers = [
            make_scheduled_bot(conference, poster, name=name, database_url=url, auto_migrate=True)
            for name in ("bot-a", "bot-b")
        ]
        bot = schedulers[0][0]
        with bot.db.transaction() as session:
            session.add(
                InboundEvent(
                    source=SLACK,
                    event_id="old-delivery",
                    kind="event",
                    result="done",
                    received_at=at(2026, 5, 20),
                )
            )
        for _, scheduler in schedulers:
            scheduler.start()
        threading.Event().wait(3.5)
        for _, scheduler in schedulers:
            scheduler.shutdown(wait=True)
    with bot.db.transaction() as session:
        claims = session.scalars(select(JobClaim).where(JobClaim.name == HOUSEKEEPING_JOB)).all()
        left = session.scalars(select(InboundEvent.event_id)).all()
    assert [(c.key, c.claimed_by in ("bot-a", "bot-b")) for c in claims] == [("2026-06-01", True)]
    assert left == []  # the claimant purged


def test_two_bots_enqueue_one_scheduled_digest_message_for_the_day(
    tmp_path: Path, make_running_bot: Callable[..., Bot], slack_api: FakeSlack
) -> None:
    """The real poster: two whole bots, one outbox message `digest:<conf>:<date>:0`."""
    conference = make_conference(unique("conf"), digest_time=dt.time(9)).model_copy(
        update={"name": unique("Digest Conf ")}
    )
    config = tmp_path / "digest-conference.toml"  # make_bot_settings writes conferences.toml
    config.write_text(conferences_toml(conference), encoding="utf-8")
    with time_machine.travel(at(2026, 5, 2, 7, 30), tick=True):  # 09:30 CEST: due, at start
        bots = [make_running_bot(conferences_file=config) for _ in range(2)]
        assert all(bot.post_digest is not None for bot in bots)
        schedulers = [build_scheduler(bot, name=f"bot-{n}") for n, bot in enumerate(bots)]
        for scheduler in schedulers:
            for job in ("reconciler", "staff-refresh"):
                scheduler.remove_job(job)
            scheduler.start()
        ref = f"digest:{conference.code}:2026-05-02:0"
        deadline = time.monotonic() + 10
        rows: list[SlackOutbox] = []
        while time.monotonic() < deadline and not rows:
            with bots[0].db.transaction() as session:
                rows = list(session.scalars(select(SlackOutbox).where(SlackOutbox.ref == ref)))
            time.sleep(0.1)
        time.sleep(1.0)  # let the other scheduler's pass finish too
        for scheduler in schedulers:
            scheduler.shutdown(wait=True)
    with bots[0].db.transaction() as session:
        claims = session.scalars(
            select(JobClaim.claimed_by).where(
                JobClaim.name == DIGEST_JOB,
                JobClaim.key == digest_key(conference.code, dt.date(2026, 5, 2)),
            )
        ).all()
    assert [(row.kind, row.channel) for row in rows] == [("post", "C0GRANTS")]
    assert len(claims) == 1
    post_slack_outbox(bots[0])  # delivered: Slack sees one top-level digest message
    [posted] = [c for c in slack_api.calls("chat.postMessage") if conference.name in c.args["text"]]
    assert posted.args["channel"] == "C0GRANTS" and "thread_ts" not in posted.args
