"""What every Slack listener receives: the services, staff, the worker and the Slack client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from slack_bolt import Respond
from slack_sdk import WebClient

from bot.services.context import ServiceContext
from bot.services.staff import StaffDirectory
from bot.settings import Settings
from bot.slack.blocks import Message, error_message
from bot.slack.bulk_card import BulkCardPublisher
from bot.slack.home import HomeTab
from bot.slack.outbox import Outbox
from bot.worker import Worker

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class SlackEdge:
    """The collaborators of the Slack handlers, built once in `bot.slack.app`."""

    services: ServiceContext
    staff: StaffDirectory
    worker: Worker
    client: WebClient
    outbox: Outbox  # every message posted or updated in a channel goes through it
    settings: Settings
    background: Worker  # long work (a bulk run) that must not hold up answers to people
    bulk: BulkCardPublisher  # the bulk requests' cards in the conference channels
    home: HomeTab | None = None  # App Home; clicks there have no response_url

    def answer_later(self, name: str, respond: Respond, work: Callable[[], Message]) -> None:
        """Run `work` on the worker and send its answer; a failure is logged and told, in words."""

        def job() -> None:
            try:
                message = work()
            except Exception:
                log.exception("background command failed", job=name)
                message = error_message()
            respond(**message.as_kwargs(), response_type="ephemeral", replace_original=False)

        self.worker.submit(name, job)
