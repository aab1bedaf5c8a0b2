"""`make standins`: local Slack, Pretix and SMTP for trying the command line by hand.

The fakes the tests use (tests/fakes), set up to match a conference file (by default
conferences.example.toml): each conference's Pretix organizer, event and quota or item, and
its Slack channel; a staff user group; the speaker and co-speaker vouchers of
demo/data/vouchers.json already in Pretix. It prints the `.env` lines that point the bot at
them, then serves until Ctrl-C or SIGTERM. Nothing leaves 127.0.0.1.

    make standins                                  # terminal 1
    .venv/bin/voucher-bot check                    # terminal 2, with the printed .env
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_server import FakeSmtpServer

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EXAMPLE_CONFERENCES = ROOT / "conferences.example.toml"
PRETIX_TOKEN = "standin-pretix-token"
BOT_TOKEN = "xoxb-standin-token"
SIGNING_SECRET = "standin-signing-secret"
STAFF_GROUP = "S0STAFF"
STAFF_USER = "U0STAFF"
STAFF_EMAIL = "alice@pycon.example.org"
SENDER = "PyCon Italia Grants <grants@pycon.example.org>"
READY = "# stand-ins ready: paste the lines above into .env; Ctrl-C stops them"


@dataclass(frozen=True)
class ConferenceSetup:
    """What one conference of the file needs from the stand-ins."""

    code: str
    name: str
    organizer: str
    event: str
    quota: int | None
    item: int | None
    slack_channel: str | None


def read_conferences(path: Path) -> list[ConferenceSetup]:
    """The conferences of a conferences.toml, as far as Pretix and Slack are concerned."""
    tables: dict[str, dict[str, Any]] = tomllib.loads(path.read_text(encoding="utf-8")).get(
        "conferences", {}
    )
    return [
        ConferenceSetup(
            code=code,
            name=str(table.get("name", code)),
            organizer=str(table["pretix_organizer"]),
            event=str(table["pretix_event"]),
            quota=_optional_int(table.get("pretix_quota")),
            item=_optional_int(table.get("pretix_item")),
            slack_channel=table.get("slack_channel"),
        )
        for code, table in tables.items()
    ]


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


@dataclass(frozen=True)
class StandIns:
    """The running stand-ins."""

    slack: FakeSlack
    pretix: FakePretix
    smtp: FakeSmtpServer

    def env_lines(self) -> list[str]:
        """The settings that point the bot at these stand-ins, as `.env` lines."""
        return [
            f"PRETIX_URL={self.pretix.url}",
            f"PRETIX_TOKEN={self.pretix.token}",
            f"SMTP_HOST={self.smtp.host}",
            f"SMTP_PORT={self.smtp.port}",
            "SMTP_TLS=none",
            f'EMAIL_FROM="{SENDER}"',
            f"SLACK_BOT_TOKEN={self.slack.token}",
            f"SLACK_SIGNING_SECRET={SIGNING_SECRET}",
            f"SLACK_API_URL={self.slack.api_url}",
            f"SLACK_STAFF_USERGROUP={STAFF_GROUP}",
        ]


@contextmanager
def stand_ins(conferences: list[ConferenceSetup], vouchers: Path) -> Iterator[StandIns]:
    """Start Slack, Pretix and SMTP set up for `conferences`, with `vouchers` in Pretix."""
    pretix = FakePretix(token=PRETIX_TOKEN, quotas={}, items={})
    for conference in conferences:
        pretix.add_event(
            conference.organizer,
            conference.event,
            name=conference.name,
            quotas={conference.quota: "Grant tickets"} if conference.quota is not None else {},
            items={conference.item: "Conference ticket"} if conference.item is not None else {},
        )
    _seed_vouchers(pretix, conferences, vouchers)
    slack = FakeSlack(token=BOT_TOKEN)
    slack.add_user(STAFF_USER, email=STAFF_EMAIL, name="alice", real_name="Alice")
    slack.add_usergroup(STAFF_GROUP, [STAFF_USER])
    for conference in conferences:
        if conference.slack_channel:
            slack.add_channel(conference.slack_channel, f"grants-{conference.code}")
    with slack, pretix, FakeSmtpServer() as smtp:
        yield StandIns(slack=slack, pretix=pretix, smtp=smtp)


def _seed_vouchers(pretix: FakePretix, conferences: list[ConferenceSetup], vouchers: Path) -> None:
    """The vouchers made elsewhere, each in the event of its row's conference."""
    rows: list[dict[str, Any]] = json.loads(vouchers.read_text(encoding="utf-8"))
    events = {conference.code: conference for conference in conferences}
    for code in sorted({str(row["conference"]) for row in rows}):
        conference = events.get(code)
        if conference is None:
            continue  # a conference the file does not name: the bot would not know it either
        with tempfile.TemporaryDirectory(prefix="voucher-bot-standins-") as tmp:
            subset = Path(tmp) / "vouchers.json"
            subset.write_text(json.dumps([r for r in rows if r["conference"] == code]), "utf-8")
            pretix.seed_vouchers_json(
                subset, organizer=conference.organizer, event=conference.event
            )


def _wait_for_stop() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM."""
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    while not stop.wait(0.5):
        pass


def _say(*lines: str) -> None:
    """Lines on standard output, at once (a reader waits for the ready line)."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m demo.standins` (`make standins`)."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.standins",
        description="Local Slack, Pretix and SMTP stand-ins for the bot's command line.",
    )
    parser.add_argument(
        "--conferences",
        type=Path,
        default=EXAMPLE_CONFERENCES,
        help="the conference file to match (default: conferences.example.toml)",
    )
    parser.add_argument(
        "--vouchers",
        type=Path,
        default=DATA / "vouchers.json",
        help="vouchers made elsewhere, put into Pretix (default: demo/data/vouchers.json)",
    )
    args = parser.parse_args(argv)
    try:
        conferences = read_conferences(args.conferences)
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        sys.stderr.write(f"cannot read the conference file {args.conferences}: {exc}\n")
        return 2
    with stand_ins(conferences, args.vouchers) as fakes:
        events = ", ".join(f"{c.organizer}/{c.event}" for c in conferences) or "none"
        _say(
            f"# Pretix {fakes.pretix.url} (events {events}), "
            f"Slack {fakes.slack.url} (staff group {STAFF_GROUP}: {STAFF_USER}), "
            f"SMTP {fakes.smtp.host}:{fakes.smtp.port}",
            *fakes.env_lines(),
            READY,
        )
        _wait_for_stop()
        _say(
            f"# stopped: Pretix holds {len(fakes.pretix.all_vouchers())} vouchers, "
            f"the mail server received {len(fakes.smtp.messages)} emails"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
