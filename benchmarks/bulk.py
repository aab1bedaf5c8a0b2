"""A bulk run over 1,000 confirmed grantees against one-at-a-time provisioning, in one run.

1,000 confirmed grantees (850 new, 100 co-speaker vouchers to upgrade, 50 speakers whose
speaker voucher was emailed already), the Pretix fake with 50 ms added per request, a local
SMTP server. The same grantees, stored on a second database with a conference of their own,
are then provisioned one at a time through the service (`provision_grant_voucher` per grant,
the upstream way). Prints the wall time from approval to summary, Pretix requests, SMTP
connections, what the Slack message would see, and the ratio.

Slack is not in this benchmark: the run's reporter counts its progress calls and the updates
they would become at one per 2 s (as the Slack reporter throttles them), plus the preview
post, the CSV upload, the final update and the summary reply.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, make_url, text

from benchmarks.common import ACTOR, DEFAULT_URL, conference, services
from benchmarks.fakes_process import FakesProcess
from bot import migrations
from bot.conferences import ConferenceConfig
from bot.logs import configure_logging
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.services.actors import Actor
from bot.services.bulk import BulkProgress, BulkSummary, decide_bulk, request_bulk, run_bulk
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant, ingest_voucher
from bot.services.notifications import GrantPayload, VoucherPayload
from bot.services.provisioning import provision_grant_voucher
from bot.storage import Database, Source

REQUESTER = Actor(Source.SLASH_COMMAND, "U0REQUEST")
APPROVER = Actor(Source.BUTTON, "U0APPROVE")
THROTTLE = 2.0  # seconds between two updates of the Slack progress message


class ThrottledCount:
    """The reporter: counts progress calls and the Slack updates they would become."""

    def __init__(self) -> None:
        self.calls = 0
        self.updates = 0
        self._last = -THROTTLE

    def progress(self, progress: BulkProgress) -> None:
        self.calls += 1
        now = time.monotonic()
        if now - self._last >= THROTTLE:
            self.updates += 1
            self._last = now

    def finished(self, summary: BulkSummary) -> None:
        self.updates += 1  # the final state of the progress message, always sent


def _database(url: str) -> Database:
    db = Database.from_url(url)
    migrations.upgrade(db.engine)
    return db


def _second_url(url: str) -> str:
    """The same server, a database of its own (created when missing)."""
    parsed = make_url(url)
    name = f"{parsed.database}_one_by_one"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


def _populate(
    ctx: ServiceContext, conf: ConferenceConfig, fakes: FakesProcess, kinds: list[str]
) -> list[int]:
    """Store the speaker and co-speaker vouchers, then the confirmed grants: their ids."""
    co = [n for n, kind in enumerate(kinds) if kind == "co_speaker"]
    seeded = fakes.seed_vouchers(
        [
            {"code": f"CO{conf.code.upper()}{n}", "price_mode": "percent", "value": "25.00",
             "tag": "co_speaker"}
            for n in co
        ]
    )  # fmt: skip
    pretix_ids = {n: voucher["id"] for n, voucher in zip(co, seeded, strict=True)}
    sent = dt.datetime(2026, 4, 1, tzinfo=dt.UTC).isoformat()
    for n, kind in enumerate(kinds):
        if kind == "new":
            continue
        fields: dict[str, Any] = {
            "conference": conf.code,
            "email": _email(conf, n),
            "type": kind,
            "code": f"{'CO' if kind == 'co_speaker' else 'SP'}{conf.code.upper()}{n}",
        }
        if kind == "co_speaker":
            fields["pretix_voucher_id"] = pretix_ids[n]
        else:
            fields["email_sent_at"] = sent
        ingest_voucher(ctx, payload=VoucherPayload.model_validate(fields), actor=ACTOR)
    ids = []
    for n in range(len(kinds)):
        payload = GrantPayload.model_validate(
            {
                "id": f"{conf.code}-{n}",
                "conference": conf.code,
                "full_name": f"Grantee {n}",
                "email": _email(conf, n),
                "status": "confirmed",
                "previous_status": "waiting_for_confirmation",
                "updated_at": "2026-05-02T10:00:00Z",
            }
        )
        intake = ingest_grant(ctx, payload=payload, actor=ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)
    return ids


def _email(conf: ConferenceConfig, n: int) -> str:
    return f"grantee{n}.{conf.code}@example.org"


def _delta(after: dict[str, Any], before: dict[str, Any]) -> tuple[int, int, int]:
    """Pretix requests, emails and SMTP connections between two snapshots of the fakes."""
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    peers = after["smtp_peers"][len(before["smtp_peers"]) :]
    return requests, len(peers), len(set(peers))


@dataclass(frozen=True)
class _Phase:
    seconds: float
    cpu: float
    requests: int
    posts: int
    patches: int
    emails: int
    connections: int
    results: dict[str, int]
    updates: int = 0
    progress_calls: int = 0
    counts: dict[str, int] | None = None


def _wire(
    fakes: FakesProcess, db: Database, conf: ConferenceConfig
) -> tuple[ServiceContext, PretixClient, SmtpMailer]:
    ends = fakes.endpoints
    client = PretixClient(base_url=ends.pretix_url, token=ends.pretix_token, timeout=30)
    mailer = SmtpMailer(
        host=ends.smtp_host, port=ends.smtp_port, tls="none",
        sender="Grants <grants@pycon.example.org>", keep_alive=20.0,
    )  # fmt: skip
    return services(db, conf, pretix=client, mailer=mailer, url=ends.pretix_url), client, mailer


def _measured(
    fakes: FakesProcess, before: dict[str, Any], started: float, cpu: float, **fields: Any
) -> _Phase:
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    after = fakes.stats()
    requests, emails, connections = _delta(after, before)

    def method(name: str) -> int:
        return int(after["requests"].get(name, 0) - before["requests"].get(name, 0))

    return _Phase(
        seconds=seconds,
        cpu=cpu_seconds,
        requests=requests,
        posts=method("POST"),
        patches=method("PATCH"),
        emails=emails,
        connections=connections,
        **fields,
    )


def _bulk_phase(fakes: FakesProcess, url: str, kinds: list[str]) -> _Phase:
    db = _database(url)
    conf = conference()
    ctx, client, mailer = _wire(fakes, db, conf)
    _populate(ctx, conf, fakes, kinds)
    preview = request_bulk(ctx, conference=conf.code, actor=REQUESTER, ttl=dt.timedelta(days=1))
    assert preview.request is not None
    request_id = preview.request.request_id
    reporter = ThrottledCount()
    before = fakes.stats()
    started, cpu = time.perf_counter(), time.process_time()
    decision = decide_bulk(
        ctx, request_id=request_id, actor=APPROVER, approve=True, allow_self_approval=False
    )
    summary = run_bulk(ctx, request_id=request_id, actor=APPROVER, reporter=reporter)
    phase = _measured(
        fakes,
        before,
        started,
        cpu,
        results=summary.results,
        updates=reporter.updates,
        progress_calls=reporter.calls,
        counts={branch.value: n for branch, n in preview.counts.items()},
    )
    assert decision.won and summary.all_good, (decision, summary)
    client.close()
    mailer.close()
    db.dispose()
    return phase


def _one_by_one_phase(fakes: FakesProcess, url: str, kinds: list[str]) -> _Phase:
    db = _database(_second_url(url))
    conf = conference()
    ctx, client, mailer = _wire(fakes, db, conf)
    ids = _populate(ctx, conf, fakes, kinds)
    before = fakes.stats()
    started, cpu = time.perf_counter(), time.process_time()
    results = Counter(
        provision_grant_voucher(ctx, grant_id=grant_id, actor=ACTOR).result.value
        for grant_id in ids
    )
    phase = _measured(fakes, before, started, cpu, results=dict(results))
    client.close()
    mailer.close()
    db.dispose()
    return phase


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks bulk")
    parser.add_argument("--new", type=int, default=850)
    parser.add_argument("--upgrades", type=int, default=100)
    parser.add_argument("--speakers", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--skip-one-by-one", action="store_true", help="only the bulk run (no comparison)"
    )
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)
    kinds = ["new"] * args.new + ["co_speaker"] * args.upgrades + ["speaker"] * args.speakers
    random.Random(10).shuffle(kinds)
    fakes = FakesProcess(latency=args.latency_ms / 1000)
    try:
        bulk = _bulk_phase(fakes, url, kinds)
        one = None if args.skip_one_by_one else _one_by_one_phase(fakes, url, kinds)
    finally:
        fakes.stop()
    print(
        f"bulk: {len(kinds)} confirmed grantees ({args.new} new, {args.upgrades} co-speaker "
        f"upgrades, {args.speakers} speakers emailed already), Pretix latency "
        f"{args.latency_ms:.0f} ms, Postgres"
    )
    print(f"  preview          {bulk.counts}")
    print(
        f"  bulk run         {bulk.seconds:7.2f} s from approval to summary (the bot's CPU "
        f"{bulk.cpu:.2f} s): {bulk.results}"
    )
    print(
        f"  pretix requests  {bulk.requests}: {bulk.posts} POST (batch_create, {args.new} "
        f"creates), {bulk.patches} PATCH (upgrades), {bulk.requests - bulk.posts - bulk.patches} "
        "GET (an upgrade reads its voucher first)"
    )
    print(f"  emails           {bulk.emails} over {bulk.connections} SMTP connections")
    slack_calls = 1 + 1 + bulk.updates + 1  # preview, CSV upload, updates, summary reply
    print(
        f"  slack            {bulk.progress_calls} progress reports -> {bulk.updates} message "
        f"updates at one per {THROTTLE:.0f} s; {slack_calls} Slack calls with the preview, its "
        "CSV and the summary reply (counted: no Slack in this benchmark)"
    )
    if one is not None:
        print(
            f"  one at a time    {one.seconds:7.2f} s (the bot's CPU {one.cpu:.2f} s): "
            f"{one.results}; {one.requests} Pretix requests, {one.emails} emails over "
            f"{one.connections} SMTP connections"
        )
        print(f"  ratio            the bulk run is {one.seconds / bulk.seconds:.1f}x faster")


if __name__ == "__main__":
    main()
