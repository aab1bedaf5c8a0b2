"""Wiring: settings in, a ready bot (database, Pretix, mail, services) out. The one place."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog
from slack_bolt import App

from bot import commands, migrations
from bot.conferences import ConferenceConfig, Conferences, load_conferences
from bot.mailer import SmtpMailer, message_id_domain
from bot.pretix import PretixClient
from bot.services.conference_sync import sync_conferences
from bot.services.context import Listeners, ServiceContext
from bot.services.digest_schedule import DigestPoster
from bot.settings import PRETIX_MAX_RETRY_AFTER, Settings
from bot.slack.app import build_edge, build_slack_app
from bot.slack.digest_post import DigestPost, post_digest
from bot.slack.edge import SlackEdge
from bot.slack.outbox import Outbox
from bot.slack.status import StatusOutbox, StatusPoster
from bot.storage import Database
from bot.worker import Worker

log = structlog.get_logger(__name__)


@dataclass(kw_only=True)
class SlackRuntime:
    """The Slack side, when SLACK_BOT_TOKEN is set: listeners' edge, Bolt app, status poster."""

    edge: SlackEdge
    app: App
    poster: StatusPoster
    outbox: Outbox


@dataclass(kw_only=True)
class Bot:
    """Everything a running bot (or one CLI command) needs, built from settings."""

    settings: Settings
    conferences: Conferences
    db: Database
    pretix: PretixClient | None
    mailer: SmtpMailer | None
    services: ServiceContext
    worker: Worker
    background: Worker
    slack: SlackRuntime | None
    # Posts a conference's daily digest (bot.scheduler); None: no digest is scheduled.
    post_digest: DigestPoster | None = None

    def close(self) -> None:
        """Finish background jobs, then release connections (HTTP pool, database pool)."""
        if self.slack is not None and self.slack.edge.home is not None:
            self.slack.edge.home.close()
        self.worker.shutdown(wait=True)
        self.background.shutdown(wait=True)
        if self.pretix is not None:
            self.pretix.close()
        if self.mailer is not None:
            self.mailer.close()
        self.db.dispose()


def build_bot(
    settings: Settings,
    *,
    migrate: bool | None = None,
    sync: bool = True,
) -> Bot:
    """Load the conferences, connect, migrate (unless told not to) and wire the services.

    `sync` copies the conference configuration into the database; `check` turns it off so
    that it can report on a database it must not change.
    """
    explicit = "conferences_file" in settings.model_fields_set
    conferences = load_conferences(settings.conferences_file, required=explicit)
    db = Database.from_url(settings.database_url)
    if settings.auto_migrate if migrate is None else migrate:
        migrations.upgrade(db.engine)
    if sync:
        sync_conferences(db, conferences)
    pretix = None
    if settings.pretix_url is not None and settings.pretix_token is not None:
        pretix = PretixClient(
            base_url=str(settings.pretix_url),
            token=settings.pretix_token.get_secret_value(),
            timeout=settings.pretix_timeout_seconds,
            max_attempts=settings.pretix_max_attempts,
            max_retry_after=PRETIX_MAX_RETRY_AFTER,
        )
    mailer = SmtpMailer.from_settings(settings) if settings.email_enabled else None
    services = ServiceContext(
        db=db,
        conferences=conferences,
        pretix=pretix,
        mailer=mailer,
        pretix_url=str(settings.pretix_url) if settings.pretix_url else None,
        message_id_domain=(
            message_id_domain(settings.email_from) if settings.email_from else "voucher-bot.invalid"
        ),
        lease=dt.timedelta(seconds=settings.work_lease_seconds),
        max_attempts=settings.max_provisioning_attempts,
        max_email_attempts=settings.max_provisioning_attempts,
    )
    # Two pools: answers to people (commands, buttons) never queue behind a burst of
    # webhook provisioning, which the reconciler would finish anyway.
    worker = Worker(max_workers=4)
    background = Worker(max_workers=4)
    slack = None
    if settings.slack_enabled:
        edge = build_edge(settings, services, worker, background)
        poster = StatusPoster(db=db, client=edge.client, conferences=conferences)
        edge.outbox.wake = poster.wake
        # Every outcome, from any edge (CLI included), goes to the grantee's thread.
        thread = StatusOutbox(db=db, conferences=conferences, wake=poster.wake)
        # App Home refreshes its viewers after any outcome too (debounced).
        services.listener = thread if edge.home is None else Listeners(thread, edge.home)
        slack = SlackRuntime(
            edge=edge,
            app=build_slack_app(settings, edge, commands.register),
            poster=poster,
            outbox=edge.outbox,
        )
    return Bot(
        settings=settings,
        conferences=conferences,
        db=db,
        pretix=pretix,
        mailer=mailer,
        services=services,
        worker=worker,
        background=background,
        slack=slack,
        post_digest=(
            scheduled_digest_poster(settings, services, slack.outbox) if slack is not None else None
        ),
    )


def scheduled_digest_poster(
    settings: Settings, services: ServiceContext, outbox: Outbox
) -> DigestPoster:
    """What the scheduler calls once it claimed a conference's day: the scheduled digest."""

    def post(conference: ConferenceConfig, now: dt.datetime) -> DigestPost:
        return post_digest(
            outbox, services, conference.code, now, True, post_empty=settings.digest_post_empty
        )

    return post


def startup_summary(bot: Bot) -> str:
    """One message saying what runs, where, and which settings turn on what is off."""
    settings = bot.settings
    url = bot.db.engine.url.render_as_string(hide_password=True)
    codes = ", ".join(bot.conferences) or "none (create conferences.toml, see README)"
    lines = [
        f"voucher-bot on http://{settings.host}:{settings.port} "
        f"(database {url}; conferences: {codes})"
    ]
    lines.extend(f"  {item}" for item in settings.disabled_features())
    return "\n".join(lines)
