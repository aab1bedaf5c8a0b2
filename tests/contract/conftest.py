"""Contract tests: the same client scenarios against a real pretix and against FakePretix.

They run only with PRETIX_CONTRACT=1 and the harness settings in the environment (what
`make test-pretix` does: it starts /work/shared/pretix-server, sources its env file and runs
`pytest -m contract tests/contract`). Under plain `make test` they are skipped.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from bot.pretix import EventRef, Voucher
from tests.contract.targets import Scenario, Target, first_difference, wait_until
from tests.fakes.pretix_server import FakePretix

ENABLE = "PRETIX_CONTRACT"
NEEDED = (
    "PRETIX_URL", "PRETIX_TOKEN", "PRETIX_READONLY_TOKEN", "PRETIX_ORGANIZER", "PRETIX_EVENT",
    "PRETIX_ITEM_ID", "PRETIX_QUOTA_ID",
)  # fmt: skip
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FAKE_TOKEN = "contract-token"
FAKE_READONLY_TOKEN = "contract-readonly-token"
# The real server needs a moment to take the first request's key; nothing shows when it has.
REAL_IN_FLIGHT_DELAY = 0.2
TICKET_PRICE = "100.00"  # the seeded item's price (shared/pretix-server/seed.py)


def contract_enabled() -> bool:
    """True when PRETIX_CONTRACT asks for the contract tests."""
    return os.environ.get(ENABLE, "").strip().lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the contract tests unless PRETIX_CONTRACT=1: plain `make test` needs no pretix."""
    if contract_enabled():
        return
    skip = pytest.mark.skip(
        reason=f"needs a real pretix: run `make test-pretix` (or set {ENABLE}=1 and the "
        "harness env from /tmp/pretix-harness/env)"
    )
    for item in items:
        if item.get_closest_marker("contract") is not None:
            item.add_marker(skip)


@dataclass(frozen=True)
class RealPretix:
    """The harness server's settings, read from the environment once."""

    url: str
    token: str
    readonly_token: str
    event: EventRef
    item: int
    quota: int


@pytest.fixture(scope="session")
def real_pretix() -> RealPretix:
    """The running harness pretix; fails (does not skip) when asked for but unusable."""
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{ENABLE}=1 but {', '.join(missing)} unset: source the harness env file")
    url = os.environ["PRETIX_URL"].rstrip("/")
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS:
        pytest.fail(f"PRETIX_URL {url} is not local: contract tests create and delete vouchers")
    real = RealPretix(
        url=url,
        token=os.environ["PRETIX_TOKEN"],
        readonly_token=os.environ["PRETIX_READONLY_TOKEN"],
        event=EventRef(os.environ["PRETIX_ORGANIZER"], os.environ["PRETIX_EVENT"]),
        item=int(os.environ["PRETIX_ITEM_ID"]),
        quota=int(os.environ["PRETIX_QUOTA_ID"]),
    )
    try:
        answer = httpx.get(
            f"{url}/api/v1/{real.event.path}vouchers/?page_size=1",
            headers={"Authorization": f"Token {real.token}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        pytest.fail(f"no pretix at {url} ({exc!r}): start it with ../shared/pretix-server/up.sh")
    if answer.status_code != 200:
        pytest.fail(f"pretix at {url} answered {answer.status_code} to the voucher list")
    return real


@pytest.fixture
def run_id() -> str:
    """This test's prefix for codes, tags and keys: unique across runs of the real server."""
    return f"CT{uuid.uuid4().hex[:10].upper()}"


@pytest.fixture
def real_target(real_pretix: RealPretix, run_id: str) -> Iterator[Target]:
    """The real pretix; orders made to redeem vouchers are cancelled afterwards."""
    orders: list[str] = []
    with httpx.Client(
        base_url=f"{real_pretix.url}/api/v1/{real_pretix.event.path}",
        headers={"Authorization": f"Token {real_pretix.token}", "Accept-Language": "en"},
        timeout=60,
    ) as admin:

        def redeem(voucher: Voucher, times: int) -> None:
            # An order with `times` positions that use the voucher, as a buyer's would.
            position = {"item": real_pretix.item, "voucher": voucher.code}
            answer = admin.post(
                "orders/",
                json={
                    "email": "contract@example.org",
                    "locale": "en",
                    "sales_channel": "web",
                    "positions": [position] * times,
                },
            )
            assert answer.status_code == 201, answer.text
            orders.append(answer.json()["code"])

        target = Target(
            name="real",
            base_url=real_pretix.url,
            token=real_pretix.token,
            readonly_token=real_pretix.readonly_token,
            event=real_pretix.event,
            item=real_pretix.item,
            quota=real_pretix.quota,
            run=run_id,
            redeem=redeem,
            wait_in_flight=lambda key: time.sleep(REAL_IN_FLIGHT_DELAY),
            slow_next_batch=lambda: None,  # 200 rows take about 1.5 s on the real server
        )
        yield target
        target.close()
        for code in orders:  # gives the quota back; the voucher stays "used"
            admin.post(f"orders/{code}/mark_canceled/", json={})


@pytest.fixture
def fake_target(real_pretix: RealPretix, run_id: str) -> Iterator[Target]:
    """A fresh FakePretix with the real server's organizer, event, item and quota ids."""
    with FakePretix(
        token=FAKE_TOKEN,
        read_only_tokens=[FAKE_READONLY_TOKEN],
        organizer=real_pretix.event.organizer,
        event=real_pretix.event.event,
        quotas={real_pretix.quota: "Conference tickets"},
        items={real_pretix.item: "Conference ticket"},
    ) as fake:

        def redeem(voucher: Voucher, times: int) -> None:
            # The harness's ticket costs 100.00; the grant voucher makes it free.
            fake.redeem(voucher.id, times, discount=TICKET_PRICE)

        def in_flight(key: str) -> None:
            wait_until(lambda: fake.in_flight(key), timeout=10, what=f"key {key} in flight")

        target = Target(
            name="fake",
            base_url=fake.url,
            token=FAKE_TOKEN,
            readonly_token=FAKE_READONLY_TOKEN,
            event=real_pretix.event,
            item=real_pretix.item,
            quota=real_pretix.quota,
            run=run_id,
            redeem=redeem,
            wait_in_flight=in_flight,
            slow_next_batch=lambda: fake.hang_next(
                2.0, path_contains="batch_create", while_processing=True
            ),
        )
        yield target
        target.close()


@pytest.fixture
def against_both(real_target: Target, fake_target: Target) -> Callable[[Scenario], None]:
    """Run a scenario on the real server, then on the fake; their transcripts must match."""

    def run(scenario: Scenario) -> None:
        scenario(real_target)  # the reference: a failure here means the scenario is wrong
        try:
            scenario(fake_target)
        except Exception as exc:
            difference = first_difference(real_target.transcript(), fake_target.transcript())
            raise AssertionError(f"the fake failed where pretix did not; {difference}") from exc
        difference = first_difference(real_target.transcript(), fake_target.transcript())
        assert difference is None, difference

    return run
