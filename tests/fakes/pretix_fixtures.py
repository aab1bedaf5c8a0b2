"""Pytest fixtures around FakePretix: a started server, and clients whose retries never wait."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from bot.pretix import EventRef, PretixClient
from tests.fakes.pretix_server import FakePretix

PYCON_2026 = EventRef("pycon", "pycon2026")
GRANT_QUOTA = 1
TICKET_ITEM = 10

PretixClientFactory = Callable[..., PretixClient]


class RecordingSleep:
    """A `sleep` for PretixClient that records how long it was asked to wait, and returns."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    @property
    def total(self) -> float:
        """Seconds the client would have waited altogether."""
        return sum(self.calls)


@pytest.fixture
def pretix_server() -> Iterator[FakePretix]:
    """A fake pretix with event pycon/pycon2026, quota 1 "Grant tickets", item 10."""
    with FakePretix(
        organizer=PYCON_2026.organizer,
        event=PYCON_2026.event,
        quotas={GRANT_QUOTA: "Grant tickets"},
        items={TICKET_ITEM: "Conference ticket"},
    ) as server:
        yield server


@pytest.fixture
def pretix_event() -> EventRef:
    """The event `pretix_server` serves."""
    return PYCON_2026


@pytest.fixture
def pretix_sleep() -> RecordingSleep:
    """The sleeps `pretix_client` (and the factory's clients) asked for between retries."""
    return RecordingSleep()


@pytest.fixture
def make_pretix_client(
    pretix_server: FakePretix, pretix_sleep: RecordingSleep
) -> Iterator[PretixClientFactory]:
    """Build clients for `pretix_server` with any PretixClient option; closed after the test."""
    with ExitStack() as stack:

        def build(**options: Any) -> PretixClient:
            values: dict[str, Any] = {
                "base_url": pretix_server.url,
                "token": pretix_server.token,
                "timeout": 5.0,
                "sleep": pretix_sleep,
            }
            values.update(options)
            return stack.enter_context(PretixClient(**values))

        yield build


@pytest.fixture
def pretix_client(make_pretix_client: PretixClientFactory) -> PretixClient:
    """A client for `pretix_server` whose retries are instant (see `pretix_sleep`)."""
    return make_pretix_client()
