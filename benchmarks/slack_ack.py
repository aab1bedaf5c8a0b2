"""Ack latency of `/voucher issue` over HTTP: 20 concurrent clients for 30 seconds.

The bot runs as `python app.py` in its own process on Postgres, with Pretix (50 ms added
latency), SMTP and the Slack Web API faked in a third process, so the background work each
command starts (provisioning, email, the answer, the status thread) loads the machine as it
would in production. Prints p50 / p99 / max of the time to the HTTP answer that Slack waits
for (its limit: 3,000 ms).
"""

from __future__ import annotations

import argparse
import http.client
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    bot_process,
    conference,
    conferences_file,
    confirmed_grants,
    database,
    free_port,
    percentile,
)
from benchmarks.fakes_process import (
    SLACK_TOKEN,
    STAFF_GROUP,
    STAFF_USER,
    Endpoints,
    FakesProcess,
)
from bot.commands.voucher import BUSY_BACKLOG
from bot.logs import configure_logging
from tests.fakes.slack_requests import signed_headers, slash_command_body

SECRET = "benchmark-signing-secret"


def bot_env(ends: Endpoints, db_url: str, config: Path) -> dict[str, str]:
    """Settings for the bot process, pointing at the fakes."""
    return {
        "DATABASE_URL": db_url,
        "AUTO_MIGRATE": "false",
        "CONFERENCES_FILE": str(config),
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": ends.slack_api_url,
        "SLACK_STAFF_USERGROUP": STAFF_GROUP,
        "PRETIX_URL": ends.pretix_url,
        "PRETIX_TOKEN": ends.pretix_token,
        "SMTP_HOST": ends.smtp_host,
        "SMTP_PORT": str(ends.smtp_port),
        "SMTP_TLS": "none",
        "EMAIL_FROM": "Grants <grants@pycon.example.org>",
        "GRANTS_WEBHOOK_SECRET": SECRET,
    }


@dataclass
class Load:
    """Closed-loop clients sending signed `/voucher` commands; their latencies in ms."""

    port: int
    slack_url: str
    command: str
    idents: list[str]
    think: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    busy: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, deadline: float) -> None:
        """One staff member sending commands back to back until `deadline`."""
        # http.client, not httpx: the load generator shares the machine's two cores with the
        # bot, so it should cost as little as possible per request.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while time.monotonic() < deadline:
            body = slash_command_body(
                text=f"{self.command} {random.choice(self.idents)}",
                user_id=STAFF_USER,
                response_url=f"{self.slack_url}/response/{uuid.uuid4().hex}",
            )
            headers = signed_headers(body, secret=SECRET)
            started = time.perf_counter()
            connection.request("POST", "/slack/events", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with self.lock:
                self.latencies.append(elapsed)
                if response.status != 200:
                    self.failures.append(response.status)
                elif b"very busy" in answer:
                    self.busy += 1
            if self.think:
                time.sleep(self.think)
        connection.close()

    def run(self, clients: int, seconds: float) -> float:
        """Run `clients` clients for `seconds`; the wall time taken."""
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client, args=(deadline,)) for _ in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks slack_ack")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--grants", type=int, default=300)
    parser.add_argument("--command", default="issue", help="subcommand to send (issue, status)")
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="pause of each client between commands"
    )
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")

    fakes = FakesProcess(latency=0.05)
    db = database()
    conf = conference()
    load = Load(free_port(), fakes.endpoints.slack_url, args.command, [], args.think_ms / 1000)
    load.idents = [ident for _, ident in confirmed_grants(db, conf, args.grants)]
    with tempfile.TemporaryDirectory() as tmp:
        url = db.engine.url.render_as_string(hide_password=False)
        env = bot_env(fakes.endpoints, url, conferences_file(conf, Path(tmp)))
        with bot_process(env, load.port):
            load.client(time.monotonic() + 1.0)  # warm up: connections, the staff cache
            load.latencies.clear()
            load.busy = 0
            wall = load.run(args.clients, args.seconds)
            time.sleep(5)  # let the background work catch up before counting
            stats = fakes.stats()
    fakes.stop()
    db.dispose()

    lat = load.latencies
    print(
        f"slack ack: /voucher {args.command}, {args.clients} concurrent clients for "
        f"{args.seconds:.0f} s ({args.think_ms:.0f} ms pause), {args.grants} grantees, Postgres"
    )
    print(f"  requests         {len(lat)} ({len(lat) / wall:.0f}/s), non-200: {len(load.failures)}")
    print(
        f"  answered busy    {load.busy} (the worker had {BUSY_BACKLOG}+ jobs waiting: "
        "load shed at once instead of queued)"
    )
    print(
        f"  ack latency      p50 {percentile(lat, 0.50):.1f} ms, p99 {percentile(lat, 0.99):.1f} "
        f"ms, max {max(lat):.1f} ms (Slack allows 3000 ms)"
    )
    print(
        f"  background       {stats['vouchers']} vouchers created, {stats['emails']} emails, "
        f"{stats['slack_responses']} answers via response_url so far"
    )


if __name__ == "__main__":
    main()
