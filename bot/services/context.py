"""The collaborators every service receives, wired once in `bot.bootstrap`."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from bot.conferences import ConferenceConfig, Conferences
from bot.mailer import Mailer
from bot.pretix import PretixClient
from bot.services.codes import generate_voucher_code
from bot.services.outcomes import (
    GrantIntake,
    HeldOutcome,
    ProvisionOutcome,
    ResendOutcome,
    RevokeOutcome,
)
from bot.storage import Database, utcnow

log = structlog.get_logger(__name__)

Outcome = ProvisionOutcome | RevokeOutcome | ResendOutcome | GrantIntake | HeldOutcome


class OutcomeListener(Protocol):
    """Told about every finished service call (the Slack status thread listens here)."""

    def publish(self, outcome: Outcome) -> None:
        """Receive one outcome; must not raise and must not block for long."""


class NoListener:
    """The listener used when nothing (e.g. Slack) wants to hear about outcomes."""

    def publish(self, outcome: Outcome) -> None:
        """Ignore the outcome."""


class Listeners:
    """Several listeners as one (the grantee's thread and App Home hear every outcome)."""

    def __init__(self, *listeners: OutcomeListener) -> None:
        self._listeners = listeners

    def publish(self, outcome: Outcome) -> None:
        """Tell each listener; one failing never keeps the outcome from the others."""
        for listener in self._listeners:
            try:
                listener.publish(outcome)
            except Exception:
                log.exception("outcome listener failed", outcome=type(outcome).__name__)


def retry_backoff(attempt: int) -> dt.timedelta:
    """Exponential backoff with full jitter: about 30 s, 1 min, 2 min ... capped at 1 h."""
    ceiling = min(30.0 * 2 ** max(attempt - 1, 0), 3600.0)
    return dt.timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311


@dataclass
class ServiceContext:
    """Database, Pretix, mail and policy knobs, passed to every service call."""

    db: Database
    conferences: Conferences
    pretix: PretixClient | None
    mailer: Mailer | None
    pretix_url: str | None = None
    message_id_domain: str = "voucher-bot.invalid"
    lease: dt.timedelta = dt.timedelta(minutes=3)
    max_attempts: int = 8
    max_email_attempts: int = 8
    clock: Callable[[], dt.datetime] = utcnow
    new_code: Callable[[], str] = generate_voucher_code
    backoff: Callable[[int], dt.timedelta] = retry_backoff
    listener: OutcomeListener = field(default_factory=NoListener)

    def conference(self, code: str) -> ConferenceConfig | None:
        """The configuration of a conference, or None when it is no longer configured."""
        return self.conferences.get(code)

    def publish(self, outcome: Outcome) -> None:
        """Tell the listener; a listener failure never breaks the service that finished."""
        try:
            self.listener.publish(outcome)
        except Exception:
            log.exception("outcome listener failed", outcome=type(outcome).__name__)
