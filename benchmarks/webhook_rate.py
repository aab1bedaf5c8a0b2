"""Grant webhook intake rate: signed notifications per second accepted by `POST /hooks/grants`.

Each grantee gets two notifications (now waiting for confirmation, then confirmed), sent by
concurrent clients to the bot running as `python app.py` on Postgres; the confirmations start
provisioning in the background against the fakes (Pretix with 50 ms added latency).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import bot_process, conference, conferences_file, database, free_port
from benchmarks.fakes_process import FakesProcess
from benchmarks.slack_ack import SECRET, bot_env
from bot.logs import configure_logging
from bot.webhook import sign


def notification(conf: str, n: int, status: str, previous: str, at: str) -> dict[str, Any]:
    """One grant.updated event."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "grant.updated",
        "occurred_at": at,
        "grant": {
            "id": f"{conf}-{n}",
            "conference": conf,
            "full_name": f"Grantee {n}",
            "email": f"grantee{n}.{conf}@example.org",
            "status": status,
            "previous_status": previous,
            "updated_at": at,
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks webhook_rate")
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")

    fakes = FakesProcess(latency=0.05)
    db = database()
    conf = conference()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/grants"
    waves = [
        [
            notification(
                conf.code, n, "waiting_for_confirmation", "approved", "2026-04-20T09:00:00Z"
            )
            for n in range(args.grants)
        ],
        [
            notification(
                conf.code, n, "confirmed", "waiting_for_confirmation", "2026-05-02T10:00:00Z"
            )
            for n in range(args.grants)
        ],
    ]
    statuses: list[int] = []
    lock = threading.Lock()

    def send(events: list[dict[str, Any]]) -> None:
        with httpx.Client(timeout=30) as http:
            for event in events:
                raw = json.dumps(event).encode()
                stamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-Grants-Timestamp": stamp,
                    "X-Grants-Signature": sign(SECRET, stamp, raw),
                }
                status = http.post(url, content=raw, headers=headers).status_code
                with lock:
                    statuses.append(status)

    with tempfile.TemporaryDirectory() as tmp:
        env = bot_env(
            fakes.endpoints,
            db.engine.url.render_as_string(hide_password=False),
            conferences_file(conf, Path(tmp)),
        )
        with bot_process(env, port):
            started = time.monotonic()
            for wave in waves:  # every grantee's "waiting" before anyone's "confirmed"
                slices = [wave[i :: args.clients] for i in range(args.clients)]
                threads = [threading.Thread(target=send, args=(part,)) for part in slices]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            intake_seconds = time.monotonic() - started
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                stats = fakes.stats()
                if min(stats["vouchers"], stats["emails"]) >= args.grants:
                    break
                time.sleep(0.5)
            provisioned_seconds = time.monotonic() - started
            stats = fakes.stats()
    fakes.stop()
    db.dispose()

    total = len(statuses)
    accepted = statuses.count(202)
    print(f"webhook intake: {total} signed notifications from {args.clients} clients, Postgres")
    rate = total / intake_seconds
    print(f"  intake           {intake_seconds:7.2f} s  ({rate:.0f} notifications/s)")
    print(f"  answers          {accepted} accepted (202), {total - accepted} other")
    print(
        f"  provisioned      {stats['vouchers']} vouchers, {stats['emails']} emails, "
        f"{provisioned_seconds:.1f} s after the first notification"
    )


if __name__ == "__main__":
    main()
