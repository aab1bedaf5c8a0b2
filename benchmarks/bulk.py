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
import random
import time
from collections import Counter
from typing import Any

from sqlalchemy import create_engine, make_url, text

from benchmarks.common import ACTOR, conference, services
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
    import os

    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    kinds = ["new"] * args.new + ["co_speaker"] * args.upgrades + ["speaker"] * args.speakers
    random.Random(10).shuffle(kinds)
    total = len(kinds)

    fakes = FakesProcess(latency=args.latency_ms / 1000)
    ends = fakes.endpoints

    def wire(
        db: Database, conf: ConferenceConfig
    ) -> tuple[ServiceContext, PretixClient, SmtpMailer]:
        client = PretixClient(base_url=ends.pretix_url, token=ends.pretix_token, timeout=30)
        mailer = SmtpMailer(
            host=ends.smtp_host, port=ends.smtp_port, tls="none",
            sender="Grants <grants@pycon.example.org>", keep_alive=20.0,
        )  # fmt: skip
        return services(db, conf, pretix=client, mailer=mailer, url=ends.pretix_url), client, mailer

    bulk_db = _database(url)
    bulk_conf = conference()
    bulk_ctx, bulk_client, bulk_mailer = wire(bulk_db, bulk_conf)
    _populate(bulk_ctx, bulk_conf, fakes, kinds)

    preview = request_bulk(
        bulk_ctx, conference=bulk_conf.code, actor=REQUESTER, ttl=dt.timedelta(days=1)
    )
    assert preview.request is not None
    before = fakes.stats()
    reporter = ThrottledCount()
    started, cpu_started = time.perf_counter(), time.process_time()
    decision = decide_bulk(
        bulk_ctx, request_id=preview.request.request_id, actor=APPROVER, approve=True,
        allow_self_approval=False,
    )  # fmt: skip
    summary = run_bulk(
        bulk_ctx, request_id=preview.request.request_id, actor=APPROVER, reporter=reporter
    )
    bulk_seconds = time.perf_counter() - started
    bulk_cpu = time.process_time() - cpu_started
    after = fakes.stats()
    bulk_requests, bulk_emails, bulk_connections = _delta(after, before)
    creates = after["requests"].get("POST", 0) - before["requests"].get("POST", 0)
    assert decision.won and summary.ran, (decision, summary)

    print(
        f"bulk: {total} confirmed grantees ({args.new} new, {args.upgrades} co-speaker "
        f"upgrades, {args.speakers} speakers emailed already), Pretix latency "
        f"{args.latency_ms:.0f} ms, database {bulk_db.engine.url.get_backend_name()}"
    )
    print(f"  preview counts   { {b.value: n for b, n in preview.counts.items()} }")
    print(
        f"  bulk run         {bulk_seconds:7.2f} s from approval to summary "
        f"(the bot's CPU {bulk_cpu:.2f} s)"
    )
    print(f"  results          {summary.results}")
    print(
        f"  pretix requests  {bulk_requests} ({creates} POST batch_create for {args.new} "
        f"creates, {after['requests'].get('PATCH', 0) - before['requests'].get('PATCH', 0)} PATCH)"
    )
    print(f"  emails sent      {bulk_emails} over {bulk_connections} SMTP connections")
    slack_calls = 1 + 1 + reporter.updates + 1  # preview, CSV upload, updates, summary reply
    print(
        f"  slack            {reporter.calls} progress reports -> {reporter.updates} message "
        f"updates at one per {THROTTLE:.0f} s; {slack_calls} Slack calls with the preview, its "
        "CSV and the summary reply (counted, no Slack in this benchmark)"
    )
    bulk_client.close()
    bulk_mailer.close()

    if not args.skip_one_by_one:
        one_db = _database(_second_url(url))
        one_conf = conference()
        one_ctx, one_client, one_mailer = wire(one_db, one_conf)
        ids = _populate(one_ctx, one_conf, fakes, kinds)
        before = fakes.stats()
        started = time.perf_counter()
        results = Counter(
            provision_grant_voucher(one_ctx, grant_id=grant_id, actor=ACTOR).result.value
            for grant_id in ids
        )
        one_seconds = time.perf_counter() - started
        after = fakes.stats()
        one_requests, one_emails, one_connections = _delta(after, before)
        one_client.close()
        one_mailer.close()
        one_db.dispose()
        print(
            f"  one at a time    {one_seconds:7.2f} s ({dict(results)}): {one_requests} Pretix "
            f"requests, {one_emails} emails over {one_connections} SMTP connections"
        )
        print(f"  ratio            bulk is {one_seconds / bulk_seconds:.1f}x faster")
    fakes.stop()
    bulk_db.dispose()


if __name__ == "__main__":
    main()
