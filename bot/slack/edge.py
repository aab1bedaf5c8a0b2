"""What every Slack listener receives: the services, staff, the worker and the Slack client."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk import WebClient

from bot.services.context import ServiceContext
from bot.services.staff import StaffDirectory
from bot.worker import Worker


@dataclass(frozen=True)
class SlackEdge:
    """The collaborators of the Slack handlers, built once in `bot.slack.app`."""

    services: ServiceContext
    staff: StaffDirectory
    worker: Worker
    client: WebClient
