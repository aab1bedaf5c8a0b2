"""Shared set-up for benchmarks: a fresh conference on Postgres and the local fakes."""

from __future__ import annotations

import datetime as dt
import math
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bot import migrations
from bot.conferences import ConferenceConfig, Conferences
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.services.actors import Actor
from bot.services.conference_sync import sync_conferences
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.storage import Database, Source

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ACTOR = Actor(Source.CLI, "benchmark")


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
    db: Database,
    conf: ConferenceConfig,
    *,
    pretix: PretixClient | None,
    mailer: SmtpMailer | None,
    url: str,
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


def percentile(samples: list[float], fraction: float) -> float:
    """The value below which `fraction` of the samples fall (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bot_process(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`python app.py` as its own process (as in production), until the block ends."""
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(  # noqa: S603 - our own entry point
        [sys.executable, str(root / "app.py")],
        cwd=root,
        env={**os.environ, **env, "PORT": str(port), "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bot did not start")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def conferences_file(conf: ConferenceConfig, directory: Path) -> Path:
    """Write the conference configuration the bot process reads."""
    path = directory / "conferences.toml"
    path.write_text(
        f"""[conferences.{conf.code}]
name = "{conf.name}"
pretix_organizer = "{conf.pretix_organizer}"
pretix_event = "{conf.pretix_event}"
pretix_quota = {conf.pretix_quota}
voucher_valid_until = {conf.voucher_valid_until.isoformat() if conf.voucher_valid_until else ""}
timezone = "{conf.timezone}"
slack_channel = "{conf.slack_channel}"
""",
        encoding="utf-8",
    )
    return path


def confirmed_grants(db: Database, conf: ConferenceConfig, count: int) -> list[tuple[int, str]]:
    """Store `count` confirmed grants through the intake service: (internal id, backend id)."""
    ctx = services(db, conf, pretix=None, mailer=None, url="http://pretix.invalid")
    idents = []
    for n in range(count):
        payload = GrantPayload.model_validate(
            {
                "id": f"{conf.code}-{n}",
                "conference": conf.code,
                "full_name": f"Grantee {n}",
                "email": f"grantee{n}.{conf.code}@example.org",
                "status": "confirmed",
                "previous_status": "waiting_for_confirmation",
                "updated_at": "2026-05-02T10:00:00Z",
            }
        )
        intake = ingest_grant(ctx, payload=payload, actor=ACTOR)
        assert intake.grant is not None
        idents.append((intake.grant.id, payload.id))
    return idents
