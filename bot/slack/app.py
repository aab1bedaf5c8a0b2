"""The Bolt app: Web API client with retry handlers, staff, dedupe of re-deliveries, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
from slack_bolt import App, BoltRequest, BoltResponse, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot import commands
from bot.services.context import ServiceContext
from bot.services.inbox import SLACK, first_delivery
from bot.services.staff import StaffDirectory
from bot.settings import Settings
from bot.slack.blocks import error_message
from bot.slack.edge import SlackEdge
from bot.storage import Database
from bot.worker import Worker

log = structlog.get_logger(__name__)


def build_web_client(settings: Settings) -> WebClient:
    """A Web API client for SLACK_API_URL that retries rate limits and server errors."""
    assert settings.slack_bot_token is not None
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=str(settings.slack_api_url),
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def build_staff(settings: Settings, client: WebClient) -> StaffDirectory:
    """Staff from SLACK_STAFF_USERGROUP (usergroups.users.list) and SLACK_STAFF_USER_IDS."""

    def members(usergroup: str) -> list[str]:
        try:
            answer = client.usergroups_users_list(usergroup=usergroup)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "plan_upgrade_required":
                log.warning("user groups need a paid Slack plan; only SLACK_STAFF_USER_IDS count")
            raise
        users: list[Any] = answer.get("users") or []
        return [str(user) for user in users]

    return StaffDirectory(
        user_ids=settings.slack_staff_user_ids,
        usergroup=settings.slack_staff_usergroup,
        fetch_members=members,
        ttl_seconds=settings.slack_staff_cache_seconds,
    )


def build_slack_app(settings: Settings, edge: SlackEdge) -> App:
    """The Bolt app with every listener registered (HTTP mode; Socket Mode uses it too)."""
    signing_secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    )
    app = App(
        client=edge.client,
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        # Listeners only ack and hand work to our worker, so answering after them is fastest.
        process_before_response=True,
        # Slack may be unreachable at start; `python -m bot check` verifies the token.
        token_verification_enabled=False,
        logger=None,
    )
    app.use(ignore_redeliveries(edge.services.db))
    app.error(report_error)
    commands.register(app, edge)
    if not edge.staff.configured:
        log.warning("no staff configured: set SLACK_STAFF_USERGROUP or SLACK_STAFF_USER_IDS")
    return app


def build_edge(settings: Settings, services: ServiceContext, worker: Worker) -> SlackEdge:
    """Client, staff directory and worker for the listeners."""
    client = build_web_client(settings)
    return SlackEdge(services, build_staff(settings, client), worker, client)


def delivery_id(body: dict[str, Any]) -> str | None:
    """What identifies one delivery from Slack: the event id, else the trigger id."""
    if "event_id" in body:
        return f"event:{body['event_id']}"
    payload = body.get("payload")
    if isinstance(payload, str):
        try:
            body = json.loads(payload)
        except ValueError:
            return None
    trigger = body.get("trigger_id")
    return f"trigger:{trigger}" if trigger else None


def ignore_redeliveries(db: Database) -> Callable[..., BoltResponse]:
    """Global middleware: a delivery seen before (X-Slack-Retry-Num) is acked and not redone."""

    def middleware(
        req: BoltRequest,
        next: Callable[[], BoltResponse],
    ) -> BoltResponse:
        key = delivery_id(req.body)
        if key is None or first_delivery(db, source=SLACK, event_id=key, kind="slack"):
            return next()
        retry = req.headers.get("x-slack-retry-num", ["0"])[0]
        log.info("slack re-delivery ignored", delivery=key, retry=retry)
        return BoltResponse(status=200, body="", headers={"x-slack-no-retry": "1"})

    return middleware


def report_error(error: Exception, body: dict[str, Any], respond: Respond | None = None) -> None:
    """Bolt's one error handler: log with traceback, tell the person in words."""
    log.error("slack listener failed", error=str(error), exc_info=error)
    if respond is not None and (body.get("response_url") or "payload" in body):
        try:
            respond(
                **error_message().as_kwargs(), response_type="ephemeral", replace_original=False
            )
        except Exception:  # the report itself failed; the log above has the cause
            log.exception("could not tell the user about the error")
