"""One reconciler pass over 100,000 finished voucher rows and 100 unfinished ones: time.

The finished rows are confirmed grantees whose grant voucher was created and emailed. Three
passes are timed, each on its own set of 100 unfinished grantees next to the same finished
rows: voucher emails left pending (the mail server was down), grantees confirmed without a
voucher row yet (the webhook's work was lost), and then an idle pass (nothing to do). The
Pretix fake and the SMTP server run in a process of their own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import Engine, event

from benchmarks.common import database
from benchmarks.fakes_process import FakesProcess
from benchmarks.seeding import analyze, bench_conference, person, register, remove, store
from bot.conferences import Conferences
from bot.logs import configure_logging
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.services.context import ServiceContext
from bot.services.reconciler import ReconcileReport, reconcile_once
from bot.storage import EmailState, GrantStatus, VoucherState, utcnow


class SqlClock:
    """The SQL statements an engine runs and the time they take (the database's share)."""

    def __init__(self, engine: Engine) -> None:
        self.statements = 0
        self.seconds = 0.0
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, _conn: Any, cursor: Any, *_: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, _conn: Any, cursor: Any, *_: Any) -> None:
        elapsed = time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        with self._lock:
            self.statements += 1
            self.seconds += elapsed

    def take(self) -> tuple[int, float]:
        """Statements and seconds since the last call."""
        with self._lock:
            taken = (self.statements, self.seconds)
            self.statements, self.seconds = 0, 0.0
        return taken


def _summary(report: ReconcileReport) -> str:
    provisioned = Counter(o.result.value for o in report.provisioned)
    emails = Counter(e.result.value for e in report.emails)
    return f"provisioned {dict(provisioned) or 0}, emails {dict(emails) or 0}"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks reconciler")
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--unfinished", type=int, default=100)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")

    db = database()
    conf = bench_conference(0)
    ids = register(db, [conf])
    conference_id = ids[conf.code]
    now = utcnow()
    fakes = FakesProcess(latency=0.0)
    ends = fakes.endpoints
    client = PretixClient(base_url=ends.pretix_url, token=ends.pretix_token, timeout=30)
    mailer = SmtpMailer(
        host=ends.smtp_host,
        port=ends.smtp_port,
        tls="none",
        sender="Grants <grants@pycon.example.org>",
        keep_alive=20.0,
    )
    ctx = ServiceContext(
        db=db,
        conferences=Conferences({conf.code: conf}),
        pretix=client,
        mailer=mailer,
        pretix_url=ends.pretix_url,
        message_id_domain="pycon.example.org",
    )
    clock = SqlClock(db.engine)
    try:
        started = time.perf_counter()
        store(
            db,
            (
                person(
                    conference_id,
                    n,
                    status=GrantStatus.CONFIRMED,
                    now=now,
                    confirmed_at=now - dt.timedelta(days=3),
                    voucher=VoucherState.CREATED,
                    email=EmailState.SENT,
                    pretix_voucher_id=10_000_000 + n,
                )
                for n in range(args.finished)
            ),
        )
        analyze(db)
        seeded = time.perf_counter() - started
        print(
            f"reconciler: {args.finished} finished rows, {args.unfinished} unfinished, "
            f"database {db.engine.url.get_backend_name()} (seeded in {seeded:.1f} s)"
        )
        base = args.finished
        kinds = [
            ("pending emails", EmailState.PENDING, VoucherState.CREATED),
            ("confirmed, no voucher row yet", None, None),
        ]
        for offset, (label, email, state) in enumerate(kinds, start=1):
            first = base + offset * args.unfinished
            store(
                db,
                (
                    person(
                        conference_id,
                        n,
                        status=GrantStatus.CONFIRMED,
                        now=now,
                        confirmed_at=now - dt.timedelta(hours=1),
                        voucher=state,
                        email=email or EmailState.NOT_DUE,
                        pretix_voucher_id=None if state is None else 10_000_000 + n,
                    )
                    for n in range(first, first + args.unfinished)
                ),
            )
            clock.take()
            started = time.perf_counter()
            report = reconcile_once(ctx)
            seconds = time.perf_counter() - started
            statements, in_sql = clock.take()
            print(
                f"  {label:31} {seconds * 1000:7.1f} ms ({in_sql * 1000:.1f} ms in "
                f"{statements} SQL statements): {_summary(report)}"
            )
        idle: list[float] = []
        for _ in range(5):
            clock.take()
            started = time.perf_counter()
            report = reconcile_once(ctx)
            idle.append(time.perf_counter() - started)
            assert report.idle
        statements, in_sql = clock.take()
        print(
            f"  {'idle (nothing to do)':31} {statistics.median(idle) * 1000:7.1f} ms median of "
            f"5 ({min(idle) * 1000:.1f}-{max(idle) * 1000:.1f}), {statements // 5} SQL statements"
        )
        stats = fakes.stats()
        print(f"  pretix requests {stats['requests']}, emails sent {stats['emails']}")
    finally:
        client.close()
        mailer.close()
        fakes.stop()
        remove(db, ids.values())
        db.dispose()


if __name__ == "__main__":
    main()
