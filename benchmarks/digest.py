"""The digest of 10,000 grants across 3 conferences: time, SQL statements, Pretix requests.

Each conference has its own Pretix event in a fake Pretix of its own process, holding the
grant vouchers the bot's rows name (a third of them redeemed). The digests are built first
without Pretix (the database part alone), then with it; the same again for a tenth of the
grants, to show that the SQL statements do not grow with the grants and the Pretix requests
grow with the pages (50 vouchers a page), not one per voucher.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

from benchmarks.common import database
from benchmarks.provisioning import StatementCounter
from benchmarks.seeding import Person, analyze, bench_conference, person, register, remove, store
from bot.conferences import ConferenceConfig, Conferences
from bot.digest_text import digest_csv
from bot.logs import configure_logging
from bot.pretix import PretixClient
from bot.services.context import ServiceContext
from bot.services.digest import build_digest
from bot.slack.blocks import render_digest
from bot.storage import Database, EmailState, GrantStatus, VoucherState, utcnow
from tests.fakes.pretix_server import FakePretix

VoucherSeed = tuple[str, int, str, int]  # event, id, code, redeemed


def _serve_pretix(conn: Connection, events: list[str], vouchers: list[VoucherSeed]) -> None:
    with FakePretix() as pretix:
        for event in events:
            pretix.add_event("pycon", event, quotas={1: "Grant tickets"})
        for event, voucher_id, code, redeemed in vouchers:
            pretix.seed_voucher(
                event=event,
                id=voucher_id,
                code=code,
                tag="grant",
                price_mode="set",
                value="0.00",
                quota=1,  # the grant terms the bot sends: no drift
                redeemed=redeemed,
            )
        conn.send((pretix.url, pretix.token))
        while (command := conn.recv()) != "stop":
            assert command == "stats"
            conn.send(dict(Counter(r.method for r in pretix.requests)))
        conn.send("stopped")


class PretixProcess:
    """The fake Pretix, seeded, in a process of its own."""

    def __init__(self, events: list[str], vouchers: list[VoucherSeed]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_pretix, args=(child, events, vouchers), daemon=True
        )
        self._process.start()
        self.url, self.token = self._conn.recv()

    def gets(self) -> int:
        """GET requests received so far."""
        self._conn.send("stats")
        return int(self._conn.recv().get("GET", 0))

    def stop(self) -> None:
        """Stop the server and the process."""
        self._conn.send("stop")
        self._conn.recv()
        self._process.join(timeout=10)


@dataclass
class Seeded:
    """One set of conferences with their grants stored."""

    conferences: list[ConferenceConfig]
    ids: dict[str, int]
    grants: int
    vouchers: list[VoucherSeed]


def _people(
    conference_id: int, event: str, count: int, now: dt.datetime, next_id: Iterator[int]
) -> tuple[list[Person], list[VoucherSeed]]:
    """A conference's grants as a grants team would have them mid-season."""
    people: list[Person] = []
    vouchers: list[VoucherSeed] = []
    for n in range(count):
        kind = n % 10
        if kind in (0, 1):  # offered: deadlines from 3 days ago to 14 days ahead
            deadline = now + dt.timedelta(hours=(n * 7) % (17 * 24) - 72)
            people.append(
                person(
                    conference_id,
                    n,
                    status=GrantStatus.WAITING_FOR_CONFIRMATION,
                    now=now,
                    deadline=deadline,
                )
            )
        elif kind <= 7 or n % 30 == 28:  # confirmed with a voucher (or refused after it)
            voucher_id = next(next_id)
            code = f"B{voucher_id:015d}"
            recent = n % 50 == 2
            confirmed = now - dt.timedelta(hours=3 if recent else 24 * (n % 20 + 2))
            refused = kind == 8
            people.append(
                person(
                    conference_id,
                    n,
                    status=GrantStatus.REFUSED if refused else GrantStatus.CONFIRMED,
                    now=now,
                    confirmed_at=confirmed,
                    voucher=VoucherState.CREATED,
                    email=EmailState.SENT,
                    pretix_voucher_id=voucher_id,
                    code=code,
                )
            )
            vouchers.append((event, voucher_id, code, 1 if n % 3 == 0 else 0))
        elif n % 30 == 8:  # confirmed, nothing issued yet
            people.append(
                person(
                    conference_id,
                    n,
                    status=GrantStatus.CONFIRMED,
                    now=now,
                    confirmed_at=now - dt.timedelta(days=2),
                )
            )
        elif n % 30 == 18:  # held for staff
            people.append(
                person(
                    conference_id,
                    n,
                    status=GrantStatus.CONFIRMED,
                    now=now,
                    confirmed_at=now - dt.timedelta(days=1),
                    hold_reason="confirmed from waiting_list, not from waiting_for_confirmation",
                )
            )
        else:
            people.append(person(conference_id, n, status=GrantStatus.PENDING, now=now))
    return people, vouchers


def seed(db: Database, total: int, now: dt.datetime, next_id: Iterator[int], label: str) -> Seeded:
    """Three conferences sharing `total` grants."""
    conferences = [bench_conference(n, event=f"{label}ev{n}") for n in range(3)]
    ids = register(db, conferences)
    vouchers: list[VoucherSeed] = []
    stored = 0
    for n, conf in enumerate(conferences):
        share = total // 3 + (1 if n < total % 3 else 0)
        people, seeds = _people(ids[conf.code], conf.pretix_event, share, now, next_id)
        stored += store(db, people)
        vouchers += seeds
    return Seeded(conferences, ids, stored, vouchers)


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(
    ctx: ServiceContext, seeded: Seeded, counter: StatementCounter, repeat: int
) -> tuple[float, int, list[int]]:
    """Median time of building the three digests, statements per round, section sizes."""
    times: list[float] = []
    statements: set[int] = set()
    sizes: list[int] = []
    now = utcnow()
    for _ in range(repeat):
        counter.take()
        started = time.perf_counter()
        digests = [build_digest(ctx, conference=c.code, now=now) for c in seeded.conferences]
        times.append(time.perf_counter() - started)
        statements.add(counter.take())
        sizes = [
            len(d.waiting) + len(d.stuck) + len(d.held) + len(d.refused) + len(d.recent)
            for d in digests
        ]
    assert len(statements) == 1, statements
    return _median_ms(times), statements.pop(), sizes


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks digest")
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")

    db = database()
    now = utcnow()
    ids = iter(range(1, 10**9))
    sets = [
        seed(db, args.grants // 10, now, ids, "s"),
        seed(db, args.grants, now, ids, "l"),
    ]
    analyze(db)
    pretix = PretixProcess(
        [c.pretix_event for s in sets for c in s.conferences],
        [v for s in sets for v in s.vouchers],
    )
    client = PretixClient(base_url=pretix.url, token=pretix.token, timeout=30)
    counter = StatementCounter(db.engine)
    print(f"digest: 3 conferences, database {db.engine.url.get_backend_name()}")
    try:
        for seeded in sets:
            conferences = Conferences({c.code: c for c in seeded.conferences})
            offline = ServiceContext(db=db, conferences=conferences, pretix=None, mailer=None)
            online = ServiceContext(db=db, conferences=conferences, pretix=client, mailer=None)
            db_ms, db_statements, sizes = measure(offline, seeded, counter, args.repeat)
            before = pretix.gets()
            full_ms, full_statements, _ = measure(online, seeded, counter, args.repeat)
            requests = (pretix.gets() - before) // args.repeat
            digests = [build_digest(online, conference=c.code, now=now) for c in seeded.conferences]
            started = time.perf_counter()
            for d in digests:
                render_digest(d)
                digest_csv(d)
            render_ms = (time.perf_counter() - started) * 1000
            vouchers = len(seeded.vouchers)
            per_event = Counter(event for event, *_ in seeded.vouchers)
            pages = sum(-(-count // 50) for count in per_event.values())
            print(
                f"  {seeded.grants:>6} grants ({vouchers} grant vouchers in Pretix; "
                f"lines per digest {sizes})"
            )
            print(
                f"    database part   {db_ms:7.1f} ms for the 3 digests (median of {args.repeat}), "
                f"{db_statements} SQL statements ({db_statements // 3} per conference)"
            )
            print(
                f"    with Pretix     {full_ms:7.1f} ms, {full_statements} SQL statements, "
                f"{requests} Pretix requests ({pages} pages of at most 50 vouchers)"
            )
            print(f"    rendering       {render_ms:7.1f} ms (Block Kit and CSV of the 3)")
    finally:
        client.close()
        pretix.stop()
        remove(db, [i for s in sets for i in s.ids.values()])
        db.dispose()


if __name__ == "__main__":
    main()
