"""Pytest fixtures around FakeSlack: a started fake workspace, and a WebClient pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from tests.fakes.slack_api import FakeSlack

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
STAFF_USER = "U0STAFF1"
STAFF_USER_2 = "U0STAFF2"
GUEST_USER = "U0GUEST"
STAFF_GROUP = "S0STAFF"
STAFF_CHANNEL = "C0STAFF"
GRANTS_CHANNEL = "C0GRANTS"


@pytest.fixture
def slack_api() -> Iterator[FakeSlack]:
    """A fake workspace: two staff members in user group S0STAFF, a guest, two channels."""
    with FakeSlack(token=BOT_TOKEN) as fake:
        fake.add_user(
            STAFF_USER, email="alice@pycon.example.org", name="alice", real_name="Alice Rossi"
        )
        fake.add_user(
            STAFF_USER_2, email="bob@pycon.example.org", name="bob", real_name="Bob Bianchi"
        )
        fake.add_user(GUEST_USER, email="guest@example.org", name="guest", real_name="Gina Guest")
        fake.add_usergroup(STAFF_GROUP, [STAFF_USER, STAFF_USER_2])
        fake.add_channel(STAFF_CHANNEL, "voucher-staff", is_private=True)
        fake.add_channel(GRANTS_CHANNEL, "grants")
        yield fake


@pytest.fixture
def slack_client(slack_api: FakeSlack) -> WebClient:
    """The real slack_sdk WebClient on the fake, retrying 429 and 500/503 as the bot should.

    A 429 waits Retry-After plus up to a second of jitter (slack_sdk's rule, so give small
    `retry_after` values); a server error waits 50 ms instead of slack_sdk's 0.5-1.5 s.
    """
    return WebClient(
        token=BOT_TOKEN,
        base_url=slack_api.api_url,
        timeout=5,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(
                max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.05)
            ),
        ],
    )
