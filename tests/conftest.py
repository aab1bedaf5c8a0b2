"""Shared fixtures: a real Postgres database, and the bot's services wired to local fakes.

Tests share one database; each test makes its own conference code, grant ids and email
addresses, so tests never see each other's rows.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from bot import migrations
from bot.bootstrap import Bot, build_bot
from bot.conferences import ConferenceConfig, Conferences
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.server import create_web_app
from bot.services.actors import Actor
from bot.services.conference_sync import sync_conferences
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.settings import Settings
from bot.storage import Database, Source, describe_connection_error
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_server import FakeSmtpServer

pytest_plugins = [
    "tests.fakes.pretix_fixtures",
    "tests.fakes.smtp_fixtures",
    "tests.fakes.slack_fixtures",
]

DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_ACTOR = Actor(Source.CLI, "pytest")


def postgres_url() -> str:
    """The Postgres database the tests use (TEST_DATABASE_URL, default the local `test`)."""
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


@pytest.fixture(scope="session")
def database_url() -> str:
    """The test database URL, after checking that Postgres answers."""
    url = postgres_url()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.exit(
            f"{describe_connection_error(exc, url)}. For the tests: start Postgres "
            "(pg_ctlcluster --skip-systemctl-redirect 15 main start), create the database, "
            "or set TEST_DATABASE_URL.",
            returncode=3,
        )
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    """The shared test database, migrated to the newest schema once per run."""
    database = Database.from_url(database_url)
    migrations.upgrade(database.engine)
    yield database
    database.dispose()


def unique(prefix: str) -> str:
    """A short id no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def conference(db: Database) -> ConferenceConfig:
    """A conference of this test's own, pointing at the fake Pretix event."""
    return ConferenceConfig(
        code=unique("conf"),
        name="PyCon Italia 2026",
        pretix_organizer="pycon",
        pretix_event="pycon2026",
        pretix_quota=1,
        voucher_valid_until=dt.datetime(2030, 5, 31, 21, 59, 59, tzinfo=dt.UTC),
        timezone="Europe/Rome",
        slack_channel="C0GRANTS",
    )


@pytest.fixture
def make_ctx(
    db: Database,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    pretix_client: PretixClient,
    smtp_mailer: SmtpMailer,
) -> Callable[..., ServiceContext]:
    """Build a service context on the fakes; keyword overrides replace any collaborator."""

    def build(**overrides: Any) -> ServiceContext:
        conferences = overrides.pop("conferences", Conferences({conference.code: conference}))
        database = overrides.pop("db", db)
        sync_conferences(database, conferences)
        values: dict[str, Any] = {
            "db": database,
            "conferences": conferences,
            "pretix": pretix_client,
            "mailer": smtp_mailer,
            "pretix_url": pretix_server.url,
            "message_id_domain": "pycon.example.org",
            "backoff": lambda attempt: dt.timedelta(seconds=30 * attempt),
        }
        values.update(overrides)
        return ServiceContext(**values)

    return build


@pytest.fixture
def ctx(make_ctx: Callable[..., ServiceContext]) -> ServiceContext:
    """Services wired to the local Pretix fake and SMTP server, on Postgres."""
    return make_ctx()


@pytest.fixture
def grant_payload(conference: ConferenceConfig) -> Callable[..., GrantPayload]:
    """Build a grant notification with unique id and email; keywords override fields."""

    def build(**fields: Any) -> GrantPayload:
        ident = unique("")
        values: dict[str, Any] = {
            "id": ident,
            "conference": conference.code,
            "full_name": "Jane Doe",
            "email": f"jane.{ident}@example.org",
            "status": "confirmed",
            "previous_status": "waiting_for_confirmation",
            "applicant_reply_sent_at": "2026-04-20T09:00:00Z",
            "applicant_reply_deadline": "2026-05-04T23:59:59Z",
            "updated_at": "2026-05-02T10:00:00Z",
        }
        values.update(fields)
        return GrantPayload.model_validate(values)

    return build


@pytest.fixture
def make_grant(
    ctx: ServiceContext, grant_payload: Callable[..., GrantPayload]
) -> Callable[..., int]:
    """Store a grant through the intake service and return its internal id."""

    def build(**fields: Any) -> int:
        intake = ingest_grant(ctx, payload=grant_payload(**fields), actor=TEST_ACTOR)
        assert intake.grant is not None, intake.message
        return intake.grant.id

    return build


def conferences_toml(*conferences: ConferenceConfig) -> str:
    """The configuration file text for these conferences (what an operator would write)."""
    lines: list[str] = []
    for conf in conferences:
        lines.append(f"[conferences.{conf.code}]")
        for name, value in conf.model_dump(exclude={"code"}, exclude_none=True).items():
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, int):
                rendered = str(value)
            elif isinstance(value, dt.datetime | dt.time):
                rendered = value.isoformat()
            else:
                rendered = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f"{name} = {rendered}")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def bot_env(
    tmp_path: Path,
    database_url: str,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    slack_api: FakeSlack,
) -> dict[str, str]:
    """Environment for running the bot as a separate process against the local fakes."""
    from tests.fakes.slack_fixtures import BOT_TOKEN, SIGNING_SECRET, STAFF_GROUP

    config = tmp_path / "conferences.toml"
    config.write_text(conferences_toml(conference), encoding="utf-8")
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {
        **keep,
        "DATABASE_URL": database_url,
        "CONFERENCES_FILE": str(config),
        "PRETIX_URL": pretix_server.url,
        "PRETIX_TOKEN": pretix_server.token,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_TLS": "none",
        "EMAIL_FROM": "PyCon Italia Grants <grants@pycon.example.org>",
        "LOG_FORMAT": "json",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api.api_url,
        "SLACK_STAFF_USERGROUP": STAFF_GROUP,
    }


WEBHOOK_SECRET = "test-webhook-secret"


@pytest.fixture
def make_bot_settings(
    tmp_path: Path,
    database_url: str,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    slack_api: FakeSlack,
) -> Callable[..., Settings]:
    """Settings for a whole bot on the fakes (Slack, Pretix, SMTP); keywords override."""

    # Imported here: a module that pytest_plugins names must not be imported before it.
    from tests.fakes.slack_fixtures import BOT_TOKEN, SIGNING_SECRET, STAFF_GROUP

    def build(**overrides: Any) -> Settings:
        config = tmp_path / "conferences.toml"
        config.write_text(conferences_toml(conference), encoding="utf-8")
        values: dict[str, Any] = {
            "database_url": database_url,
            "auto_migrate": False,
            "slack_bot_token": BOT_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack_api.api_url,
            "slack_staff_usergroup": STAFF_GROUP,
            "pretix_url": pretix_server.url,
            "pretix_token": pretix_server.token,
            "pretix_max_attempts": 2,
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_tls": "none",
            "email_from": "PyCon Italia Grants <grants@pycon.example.org>",
            "grants_webhook_secret": WEBHOOK_SECRET,
            "conferences_file": config,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def make_running_bot(
    db: Database, make_bot_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Bot]]:
    """Build whole bots (as `python app.py` does) on the fakes; closed after the test."""
    bots: list[Bot] = []

    def build(**overrides: Any) -> Bot:
        bot = build_bot(make_bot_settings(**overrides))
        bots.append(bot)
        return bot

    yield build
    for bot in bots:
        bot.close()


@pytest.fixture
def running_bot(make_running_bot: Callable[..., Bot]) -> Bot:
    """A whole bot on the fakes, background threads not started (tests drive them)."""
    return make_running_bot()


@contextmanager
def serve_app(app: Starlette) -> Iterator[httpx.Client]:
    """Serve an ASGI app under uvicorn on a free local port; yield a client for it."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bot-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the bot's server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def http(running_bot: Bot) -> Iterator[httpx.Client]:
    """The bot's real HTTP app under uvicorn on a free local port, and a client for it."""
    with serve_app(create_web_app(running_bot, run_background=False)) as client:
        yield client
