"""The demo: the real bot (settings, wiring, HTTP app) on local stand-ins, one short story.

Slack, Pretix and SMTP are the fakes the tests use (real HTTP and SMTP servers on
127.0.0.1). The database is SQLite in a temporary folder. Every request reaches the bot as
it would in production: grant notifications signed for `POST /hooks/grants`, slash
commands and button clicks signed as Slack signs them for `POST /slack/events`.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.rule import Rule
from starlette.applications import Starlette

from bot.bootstrap import Bot, build_bot
from bot.logs import configure_logging
from bot.server import create_web_app
from bot.services.actors import Actor
from bot.services.imports import import_grants, import_vouchers
from bot.settings import Settings
from bot.slack.blocks import RETRY_ACTION
from bot.storage import Source
from bot.webhook import sign
from demo.transcript import Interaction, channel_view, email_view, interaction_view, slack_text
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import block_action_body, signed_headers, slash_command_body
from tests.fakes.smtp_server import FakeSmtpServer

DATA = Path(__file__).resolve().parent / "data"
CONFERENCE = "pycon2026"
CHANNEL = "C0GRANTS"
STAFF_CHANNEL = "C0STAFF"
STAFF = "U0DEMOSTAFF"
BOT_TOKEN = "xoxb-demo-token"
SIGNING_SECRET = "demo-signing-secret"
WEBHOOK_SECRET = "demo-webhook-secret"
SENDER = "PyCon Italia Grants <grants@pycon.example.org>"
REPLY_TO = "Financial aid team <financial-aid@pycon.example.org>"
SETTLE_SECONDS = 30.0


def conferences_toml(today: dt.date) -> str:
    """The demo conference; its vouchers stay valid until the end of May next year.

    A fixed date would pass one day, and the bot refuses to issue vouchers already expired.
    """
    return f"""
[conferences.{CONFERENCE}]
name = "PyCon Italia 2026"
pretix_organizer = "pycon"
pretix_event = "pycon2026"
pretix_quota = 1
voucher_valid_until = {today.year + 1}-05-31T23:59:59+02:00
timezone = "Europe/Rome"
slack_channel = "{CHANNEL}"
"""


@dataclass(frozen=True)
class StandIns:
    """The local Slack workspace, Pretix and mail server."""

    slack: FakeSlack
    pretix: FakePretix
    smtp: FakeSmtpServer


@contextmanager
def stand_ins() -> Iterator[StandIns]:
    """Start the three stand-ins: one staff member, the grants channel, the sample vouchers."""
    with FakeSlack(token=BOT_TOKEN) as slack, FakePretix() as pretix, FakeSmtpServer() as smtp:
        slack.add_user(STAFF, email="alice@pycon.example.org", name="alice", real_name="Alice")
        slack.add_channel(CHANNEL, "grants")
        slack.add_channel(STAFF_CHANNEL, "voucher-staff", is_private=True)
        # The speaker and co-speaker vouchers made elsewhere exist in Pretix already.
        pretix.seed_vouchers_json(DATA / "vouchers.json")
        yield StandIns(slack=slack, pretix=pretix, smtp=smtp)


def demo_settings(workdir: Path, fakes: StandIns) -> Settings:
    """Settings pointing at the stand-ins; the environment and any `.env` are ignored.

    A developer's exported SLACK_APP_TOKEN or DATABASE_URL must never reach real services
    from a demo, hence the env prefix nobody uses.
    """
    conferences = workdir / "conferences.toml"
    conferences.write_text(conferences_toml(dt.datetime.now(dt.UTC).date()), encoding="utf-8")
    return Settings(
        _env_file=None,
        _env_prefix="VOUCHER_BOT_DEMO_IGNORES_THE_ENVIRONMENT_",
        database_url=f"sqlite:///{workdir / 'demo.sqlite3'}",
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fakes.slack.api_url,
        slack_staff_user_ids=[STAFF],
        pretix_url=fakes.pretix.url,
        pretix_token=fakes.pretix.token,
        pretix_max_attempts=1,
        smtp_host=fakes.smtp.host,
        smtp_port=fakes.smtp.port,
        smtp_tls="none",
        email_from=SENDER,
        email_reply_to=REPLY_TO,
        grants_webhook_secret=WEBHOOK_SECRET,
        conferences_file=conferences,
        log_level="ERROR",
    )


@contextmanager
def serve(app: Starlette) -> Iterator[httpx.Client]:
    """The bot's HTTP app under uvicorn on a free port of 127.0.0.1, and a client for it."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="demo-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the bot's HTTP server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Demo:
    """Drives the bot as the backend and a staff member would, and narrates each step."""

    def __init__(self, *, bot: Bot, http: httpx.Client, fakes: StandIns, console: Console) -> None:
        self.bot = bot
        self.http = http
        self.fakes = fakes
        self.console = console
        self.interactions: list[Interaction] = []
        self._events = count(1)
        self._answers = count(1)

    def step(self, text: str) -> None:
        """Say what happens next."""
        self.console.print(f"[bold]▶ {text}[/bold]")

    def confirm(self, grant_id: str, *, previous_status: str = "waiting_for_confirmation") -> None:
        """The conference backend tells the bot a grantee confirmed: a signed webhook."""
        grant = _demo_grant(grant_id)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        grant.update(status="confirmed", previous_status=previous_status, updated_at=now)
        event = {
            "id": f"evt_demo_{next(self._events)}",
            "type": "grant.updated",
            "occurred_at": now,
            "grant": grant,
        }
        raw = json.dumps(event).encode()
        stamp = str(int(time.time()))
        response = self.http.post(
            "/hooks/grants",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "X-Grants-Timestamp": stamp,
                "X-Grants-Signature": sign(WEBHOOK_SECRET, stamp, raw),
            },
        )
        self.console.print(
            f"  POST /hooks/grants (signed) → {response.status_code} {response.json()}",
            markup=False,
        )
        self.settle()

    def command(self, text: str) -> None:
        """A staff member types `/voucher <text>`: a signed slash command."""
        name = f"answer-{next(self._answers)}"
        body = slash_command_body(
            text=text,
            user_id=STAFF,
            user_name="alice",
            channel_id=STAFF_CHANNEL,
            response_url=self.fakes.slack.response_url(name),
        )
        ack = self._post_slack(body)
        self.settle()
        self._record(f"/voucher {text}", ack, name)

    def click(self, action_id: str, label: str) -> None:
        """A staff member clicks the newest button `action_id` in the channel."""
        message, button = _newest_button(self.fakes.slack.messages(CHANNEL), action_id)
        name = f"answer-{next(self._answers)}"
        body = block_action_body(
            action_id=action_id,
            value=button["value"],
            user_id=STAFF,
            response_url=self.fakes.slack.response_url(name),
            message=message,
            channel_id=CHANNEL,
            button_text=label,
        )
        ack = self._post_slack(body)
        self.settle()
        self._record(f"clicks [ {label} ]", ack, name)

    def settle(self) -> None:
        """Wait for the background work, then post what the bot queued for Slack."""
        deadline = time.monotonic() + SETTLE_SECONDS
        assert self.bot.slack is not None
        while time.monotonic() < deadline:
            idle = self.bot.background.join(timeout=SETTLE_SECONDS)
            idle = self.bot.worker.join(timeout=SETTLE_SECONDS) and idle
            posted = self.bot.slack.poster.run_once()
            if idle and not posted:
                return
        raise RuntimeError("the bot did not finish its work in time")

    def _post_slack(self, body: str) -> httpx.Response:
        headers = signed_headers(body, secret=SIGNING_SECRET)
        response = self.http.post("/slack/events", content=body, headers=headers)
        self.console.print(f"  POST /slack/events (signed) → {response.status_code}")
        return response

    def _record(self, did: str, ack: httpx.Response, name: str) -> None:
        answers = []
        if ack.content:
            answers.append(slack_text(str(ack.json().get("text", ""))))
        answers += [slack_text(str(p.get("text", ""))) for p in self.fakes.slack.responses(name)]
        self.interactions.append(Interaction("alice", did, tuple(a for a in answers if a)))


def run(console: Console) -> None:
    """Start everything, play the story, print the channel and the emails, stop everything."""
    with tempfile.TemporaryDirectory(prefix="voucher-bot-demo-") as tmp, stand_ins() as fakes:
        settings = demo_settings(Path(tmp), fakes)
        configure_logging(level=settings.log_level)
        bot = build_bot(settings)
        try:
            with serve(create_web_app(bot, run_background=False)) as http:
                _intro(console, bot, fakes, http)
                demo = Demo(bot=bot, http=http, fakes=fakes, console=console)
                _story(demo)
                _show(console, demo)
        finally:
            bot.close()


def _intro(console: Console, bot: Bot, fakes: StandIns, http: httpx.Client) -> None:
    console.print(Rule("voucher-bot demo"))
    console.print(
        f"bot: {http.base_url} (SQLite in a temporary folder); stand-ins: "
        f"Slack {fakes.slack.url}, Pretix {fakes.pretix.url}, "
        f"SMTP {fakes.smtp.host}:{fakes.smtp.port}",
        markup=False,
        soft_wrap=True,
    )
    actor = Actor(Source.CLI, "demo")
    vouchers = import_vouchers(bot.services, path=DATA / "vouchers.json", actor=actor)
    grants = import_grants(bot.services, path=DATA / "grants.json", actor=actor)
    console.print(
        f"Loaded conference {CONFERENCE}, {grants.rows} sample grants and {vouchers.rows} "
        "speaker/co-speaker vouchers made elsewhere.\n",
        markup=False,
    )


def _story(demo: Demo) -> None:
    demo.step("Ada Yilmaz confirms her grant: a new voucher and its email")
    demo.confirm("5211")
    demo.step("Bruno Jensen, a co-speaker, confirms: his co-speaker voucher becomes a grant one")
    demo.confirm("5380")
    demo.step("Joana Marino is confirmed straight from the waiting list: held for staff")
    demo.confirm("5141", previous_status="waiting_list")
    demo.step("Alice asks the bot about Ada")
    demo.command("status 5211")
    demo.step("Pretix refuses the next request while Ximena Colombo confirms")
    demo.fakes.pretix.fail_next(401, body={"detail": "Invalid token."}, method="POST")
    demo.confirm("5212")
    demo.step("Pretix works again; Alice clicks Retry on the failure")
    demo.click(RETRY_ACTION, "Retry")


def _show(console: Console, demo: Demo) -> None:
    slack = demo.fakes.slack
    console.print()
    console.print(Rule(f"#grants ({CHANNEL}) as the channel shows it now"))
    updates = [call.args for call in slack.calls("chat.update") if call.error is None]
    for panel in channel_view(slack.messages(CHANNEL), updates):
        console.print(panel)
    console.print(Rule("what Alice saw of her command and click"))
    for interaction in demo.interactions:
        console.print(interaction_view(interaction))
    emails = demo.fakes.smtp.messages
    console.print(Rule(f"emails sent ({len(emails)})"))
    for mail in emails:
        console.print(email_view(mail))
    vouchers = demo.fakes.pretix.all_vouchers()
    grant_vouchers = sum(1 for v in vouchers if v.get("tag") == "grant")
    console.print(
        f"Pretix now holds {len(vouchers)} vouchers, {grant_vouchers} of them grant vouchers. "
        "Demo finished; everything it started is stopped.",
        markup=False,
    )


def _demo_grant(grant_id: str) -> dict[str, Any]:
    grants: list[dict[str, Any]] = json.loads((DATA / "grants.json").read_text(encoding="utf-8"))
    return next(dict(grant) for grant in grants if grant["id"] == grant_id)


def _newest_button(
    messages: list[dict[str, Any]], action_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    for message in reversed(messages):
        for block in message.get("blocks") or []:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    return message, element
    raise LookupError(f"no {action_id} button in the channel")


def main() -> None:
    """Entry point of `python -m demo`."""
    run(Console(width=100, highlight=False))
