"""1,000 confirmed grants provisioned against the Pretix fake (50 ms added latency) and SMTP.

Prints wall time, throughput, the Pretix requests made, the emails sent and the SQL statements
per grant, then runs the same grants again to show that a second run creates and sends
nothing (the no-op pass), and how fast it decides so.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import Engine, event

from benchmarks.common import ACTOR, conference, confirmed_grants, database, peak_rss_mib, services
from benchmarks.fakes_process import FakesProcess
from bot.logs import configure_logging
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.services.provisioning import provision_many


class StatementCounter:
    """Counts the SQL statements an engine sends (BEGIN and COMMIT are not statements)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        with self._lock:
            self.count += 1

    def take(self) -> int:
        """The statements since the last call."""
        with self._lock:
            count, self.count = self.count, 0
        return count


def _delta(after: dict[str, Any], before: dict[str, Any]) -> tuple[int, int]:
    """Pretix requests and emails between two snapshots of the fakes' counters."""
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    return requests, after["emails"] - before["emails"]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks provisioning")
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")

    fakes = FakesProcess(latency=args.latency_ms / 1000)
    ends = fakes.endpoints
    db = database()
    conf = conference()
    client = PretixClient(base_url=ends.pretix_url, token=ends.pretix_token, timeout=30)
    mailer = SmtpMailer(
        host=ends.smtp_host,
        port=ends.smtp_port,
        tls="none",
        sender="Grants <grants@pycon.example.org>",
        keep_alive=20.0,  # as SmtpMailer.from_settings builds it for the bot
    )
    ctx = services(db, conf, pretix=client, mailer=mailer, url=ends.pretix_url)

    started = time.perf_counter()
    grant_ids = [grant_id for grant_id, _ in confirmed_grants(db, conf, args.grants)]
    intake_seconds = time.perf_counter() - started

    statements = StatementCounter(db.engine)
    before = fakes.stats()
    started, cpu_started = time.perf_counter(), time.process_time()
    outcomes = provision_many(ctx, grant_ids=grant_ids, actor=ACTOR, workers=args.workers)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    first_statements = statements.take()
    first = fakes.stats()

    started = time.perf_counter()
    repeat = provision_many(ctx, grant_ids=grant_ids, actor=ACTOR, workers=args.workers)
    again_seconds = time.perf_counter() - started
    again_statements = statements.take()
    second = fakes.stats()
    first_requests, first_emails = _delta(first, before)
    again_requests, again_emails = _delta(second, first)
    client.close()
    mailer.close()
    fakes.stop()
    db.dispose()

    results = dict(Counter(o.result.value for o in outcomes))
    print(
        f"provisioning: {args.grants} confirmed grants, {args.workers} workers, Pretix latency "
        f"{args.latency_ms:.0f} ms, database {db.engine.url.get_backend_name()}"
    )
    print(f"  intake           {intake_seconds:7.2f} s  ({args.grants / intake_seconds:.0f}/s)")
    print(
        f"  provisioning     {seconds:7.2f} s  ({args.grants / seconds:.1f} grants/s; "
        f"the bot's CPU {cpu_seconds:.2f} s, {cpu_seconds / args.grants * 1000:.1f} ms per grant)"
    )
    print(f"  results          {results}")
    print(f"  pretix requests  {first_requests} {first['requests']}")
    print(f"  pretix vouchers  {first['vouchers']}")
    print(f"  emails sent      {first_emails}")
    print(f"  SQL statements   {first_statements} ({first_statements / args.grants:.1f} per grant)")
    unchanged = again_requests == 0 and again_emails == 0
    print(
        f"  second run       {again_seconds:7.2f} s  "
        f"({again_seconds / args.grants * 1000:.2f} ms per grant) "
        f"{dict(Counter(o.result.value for o in repeat))}; new pretix requests "
        f"{again_requests}, new emails {again_emails} "
        f"({'nothing done again' if unchanged else 'WORK DONE TWICE'})"
    )
    print(
        f"  SQL statements   {again_statements} ({again_statements / args.grants:.2f} per grant) "
        "in the second run"
    )
    print(f"  peak RSS         {peak_rss_mib():7.1f} MiB (the bot's process)")


if __name__ == "__main__":
    main()
