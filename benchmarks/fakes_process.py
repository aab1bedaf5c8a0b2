"""Run the Pretix fake, the SMTP server and the Slack fake in a process of their own.

In the benchmark's process they would compete with the bot for the same interpreter lock and
the figures would measure the fakes; in their own process they behave like remote servers.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_server import FakeSmtpServer

SLACK_TOKEN = "xoxb-benchmark"
STAFF_USER = "U0BENCH1"
STAFF_GROUP = "S0BENCH"


@dataclass(frozen=True)
class Endpoints:
    """Where the fakes listen."""

    pretix_url: str
    pretix_token: str
    smtp_host: str
    smtp_port: int
    slack_api_url: str
    slack_url: str


def _serve(conn: Connection, latency: float) -> None:
    with (
        FakePretix(latency=latency) as pretix,
        FakeSmtpServer() as smtp,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        slack.add_user(STAFF_USER, email="staff@pycon.example.org", name="staff")
        slack.add_usergroup(STAFF_GROUP, [STAFF_USER])
        conn.send(
            Endpoints(pretix.url, pretix.token, smtp.host, smtp.port, slack.api_url, slack.url)
        )
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(
                    {
                        "requests": dict(Counter(r.method for r in pretix.requests)),
                        "vouchers": len(pretix.all_vouchers()),
                        "emails": len(smtp.messages),
                        "slack_calls": len(slack.calls()),
                        "slack_responses": len(slack.responses()),
                        "smtp_peers": [m.peer for m in smtp.messages],
                    }
                )
            elif isinstance(command, tuple) and command[0] == "seed":
                conn.send([pretix.seed_voucher(**fields) for fields in command[1]])
            elif command == "stop":
                conn.send("stopped")
                return


class FakesProcess:
    """Start the fakes in a child process; ask it for counts; stop it."""

    def __init__(self, *, latency: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency), daemon=True)
        self._process.start()
        self.endpoints: Endpoints = self._conn.recv()

    def stats(self) -> dict[str, Any]:
        """Requests Pretix received (by method), vouchers, emails, Slack calls and answers, the
        SMTP peer (one per connection) of each email received."""
        self._conn.send("stats")
        answer: dict[str, Any] = self._conn.recv()
        return answer

    def seed_vouchers(self, vouchers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Put vouchers made elsewhere straight into the Pretix fake; returns them as JSON."""
        self._conn.send(("seed", vouchers))
        answer: list[dict[str, Any]] = self._conn.recv()
        return answer

    def stop(self) -> None:
        """Stop the servers and the process."""
        self._conn.send("stop")
        self._conn.recv()
        self._process.join(timeout=10)
