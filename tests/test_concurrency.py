"""Many callers at once, and a process killed mid-call: still one voucher and one email."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.outcomes import ProvisionOutcome, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.storage import ConferenceVoucher, VoucherState
from tests.conftest import TEST_ACTOR
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_external_id

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], bool], *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_twenty_threads_provisioning_one_grant_make_one_voucher_and_one_email(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant()
    pretix_server.latency = 0.05  # widen the window in which the callers overlap
    start = threading.Barrier(20)

    def call(_: int) -> ProvisionOutcome:
        start.wait()
        return provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(call, range(20)))

    results = Counter(outcome.result for outcome in outcomes)
    assert results[ProvisionResult.CREATED] == 1
    assert set(results) <= {
        ProvisionResult.CREATED,
        ProvisionResult.IN_PROGRESS,
        ProvisionResult.ALREADY_GRANT,
    }
    assert pretix_server.count("POST", "/vouchers/") == 1
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1
    assert len({o.voucher_code for o in outcomes if o.voucher_code}) == 1


def test_two_processes_provisioning_one_grant_make_one_voucher_and_one_email(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    bot_env: dict[str, str],
) -> None:
    grant_id = make_grant()
    pretix_server.latency = 0.2
    command = [sys.executable, "-m", "bot", "provision", grant_external_id(ctx.db, grant_id)]
    command += ["--conference", conference.code]

    processes = [
        subprocess.Popen(command, cwd=ROOT, env=bot_env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60)[0] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    assert pretix_server.count("POST", "/vouchers/") == 1
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1
    assert sum("created in Pretix" in output for output in outputs) == 1


@pytest.mark.slow
def test_process_killed_during_the_pretix_call_is_finished_later_with_the_same_code(
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    bot_env: dict[str, str],
) -> None:
    ctx = make_ctx()
    grant_id = make_grant()
    # Pretix holds the request for a moment and creates the voucher after it: the process is
    # killed in between, after it reserved its code and before it recorded Pretix's answer.
    pretix_server.hang_next(1.5, method="POST", while_processing=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "provision", grant_external_id(ctx.db, grant_id)],
        cwd=ROOT,
        env=bot_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: pretix_server.count("POST", "/vouchers/") == 1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    wait_until(lambda: len(pretix_server.all_vouchers()) == 1, timeout=10)
    [in_pretix] = pretix_server.all_vouchers()

    with ctx.db.transaction() as session:
        row = session.scalars(
            select(ConferenceVoucher).where(ConferenceVoucher.grant_id == grant_id)
        ).one()
    assert row.state is VoucherState.CREATING
    assert row.code == in_pretix["code"]
    assert row.lease_expires_at is not None

    # While the dead process's lease runs, nobody else touches the row.
    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        ProvisionResult.IN_PROGRESS
    )
    # Later (and after Pretix forgot the idempotency key) the reconciler adopts it.
    pretix_server.expire_idempotency_keys()
    later = row.lease_expires_at + dt.timedelta(seconds=1)
    [finished] = reconcile_once(make_ctx(clock=lambda: later)).provisioned

    assert finished.result is ProvisionResult.ADOPTED
    assert finished.voucher_code == in_pretix["code"]
    assert pretix_server.all_vouchers() == [in_pretix]
    assert len(smtp_server.messages) == 1
