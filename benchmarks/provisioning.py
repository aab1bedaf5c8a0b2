"""1,000 confirmed grants provisioned against the Pretix fake (50 ms added latency) and SMTP.

Prints wall time, throughput, the Pretix requests made and the emails sent, then runs the
same grants again to show that a second run creates and sends nothing.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from benchmarks.common import ACTOR, conference, confirmed_grants, database, peak_rss_mib, services
from benchmarks.fakes_process import FakesProcess
from bot.logs import configure_logging
from bot.mailer import SmtpMailer
from bot.pretix import PretixClient
from bot.services.provisioning import provision_many


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
    )
    ctx = services(db, conf, pretix=client, mailer=mailer, url=ends.pretix_url)

    started = time.perf_counter()
    grant_ids = [grant_id for grant_id, _ in confirmed_grants(db, conf, args.grants)]
    intake_seconds = time.perf_counter() - started

    started = time.perf_counter()
    outcomes = provision_many(ctx, grant_ids=grant_ids, actor=ACTOR, workers=args.workers)
    seconds = time.perf_counter() - started
    first = fakes.stats()

    started = time.perf_counter()
    repeat = provision_many(ctx, grant_ids=grant_ids, actor=ACTOR, workers=args.workers)
    again_seconds = time.perf_counter() - started
    second = fakes.stats()
    client.close()
    fakes.stop()
    db.dispose()

    results = dict(Counter(o.result.value for o in outcomes))
    print(
        f"provisioning: {args.grants} confirmed grants, {args.workers} workers, Pretix latency "
        f"{args.latency_ms:.0f} ms, database {db.engine.url.get_backend_name()}"
    )
    print(f"  intake           {intake_seconds:7.2f} s  ({args.grants / intake_seconds:.0f}/s)")
    print(f"  provisioning     {seconds:7.2f} s  ({args.grants / seconds:.1f} grants/s)")
    print(f"  results          {results}")
    print(f"  pretix requests  {sum(first['requests'].values())} {first['requests']}")
    print(f"  pretix vouchers  {first['vouchers']}")
    print(f"  emails sent      {first['emails']}")
    print(
        f"  second run       {again_seconds:7.2f} s  "
        f"{dict(Counter(o.result.value for o in repeat))}; pretix requests "
        f"{sum(second['requests'].values())}, emails {second['emails']} (unchanged)"
    )
    print(f"  peak RSS         {peak_rss_mib():7.1f} MiB (the bot's process)")


if __name__ == "__main__":
    main()
