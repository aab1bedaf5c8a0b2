"""The Bolt app: Web API client with retry handlers, staff, dedupe of re-deliveries, errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import structlog
from slack_bolt import App, BoltContext, BoltRequest, BoltResponse, Respond
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.authorize import Authorize
from slack_bolt.logger.messages import (
    warning_client_prioritized_and_token_skipped,
    warning_token_skipped,
)
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.services.context import ServiceContext
from bot.services.inbox import SLACK, first_delivery
from bot.services.staff import StaffDirectory
from bot.settings import Settings
from bot.slack.blocks import approvers_mention, error_message
from bot.slack.bulk_card import BulkCardPublisher
from bot.slack.edge import SlackEdge
from bot.slack.home import HomeTab
from bot.slack.outbox import Outbox
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


class _TokenNotices(logging.Filter):
    """Drop Bolt's two start-up notices about SLACK_BOT_TOKEN being unused.

    Bolt reads SLACK_BOT_TOKEN from the environment by itself; the bot passes that token in
    its own client and authorizer on purpose, so the notices would only alarm operators.
    """

    EXPECTED = frozenset({warning_client_prioritized_and_token_skipped(), warning_token_skipped()})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.EXPECTED


def build_slack_app(
    settings: Settings, edge: SlackEdge, register: Callable[[App, SlackEdge], None]
) -> App:
    """The Bolt app, with `register` attaching the listeners (HTTP mode; Socket Mode too).

    The adapter does not know the listeners: the wiring (`bot.bootstrap`) passes
    `bot.commands.register`, so imports point down from the edges to this module.
    """
    framework_logger = logging.getLogger("slack_bolt.App")
    if not any(isinstance(f, _TokenNotices) for f in framework_logger.filters):
        framework_logger.addFilter(_TokenNotices())
    signing_secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    )
    app = App(
        client=edge.client,
        authorize=StaticAuthorize(edge.client.token or ""),
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        # Listeners only ack and hand work to our worker, so answering after them is fastest.
        process_before_response=True,
        # Slack may be unreachable at start; `.venv/bin/voucher-bot check` verifies the token.
        token_verification_enabled=False,
        logger=framework_logger,
    )
    app.use(ignore_redeliveries(edge.services.db, edge.worker))
    app.error(error_reporter(edge.worker))
    register(app, edge)
    if not edge.staff.configured:
        log.warning("no staff configured: set SLACK_STAFF_USERGROUP or SLACK_STAFF_USER_IDS")
    return app


def build_edge(
    settings: Settings,
    services: ServiceContext,
    worker: Worker,
    background: Worker | None = None,
) -> SlackEdge:
    """Client, staff directory, workers and outbox for the listeners."""
    client = build_web_client(settings)
    staff = build_staff(settings, client)
    outbox = Outbox(services.db)
    return SlackEdge(
        services=services,
        staff=staff,
        worker=worker,
        client=client,
        outbox=outbox,
        settings=settings,
        background=background or worker,
        bulk=BulkCardPublisher(
            services,
            outbox,
            approvers=approvers_mention(
                settings.slack_staff_usergroup, settings.slack_staff_user_ids
            ),
        ),
        home=HomeTab(services=services, staff=staff, outbox=outbox),
    )


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


def ignore_redeliveries(db: Database, worker: Worker) -> Callable[..., BoltResponse]:
    """Global middleware: a delivery seen before (X-Slack-Retry-Num) is acked and not redone.

    A first delivery is remembered in the background, off the 3-second ack path: Slack only
    redelivers after its own 3-second timeout, long after the row is written. A redelivery
    (it carries X-Slack-Retry-Num) is checked before anything runs.
    """

    def middleware(req: BoltRequest, next: Callable[[], BoltResponse]) -> BoltResponse:
        key = delivery_id(req.body)
        if key is None:
            return next()
        retry = req.headers.get("x-slack-retry-num")
        if not retry:
            worker.submit(
                "remember slack delivery",
                lambda: first_delivery(db, source=SLACK, event_id=key, kind="slack"),
            )
            return next()
        if first_delivery(db, source=SLACK, event_id=key, kind="slack"):
            return next()  # the first delivery never reached us: do the work now
        log.info("slack re-delivery ignored", delivery=key, retry=retry[0])
        return BoltResponse(status=200, body="", headers={"x-slack-no-retry": "1"})

    return middleware


def error_reporter(worker: Worker) -> Callable[..., None]:
    """Bolt's one error handler: log with traceback, tell the person in words (off the loop)."""

    def report_error(
        error: Exception, body: dict[str, Any], respond: Respond | None = None
    ) -> None:
        log.error("slack listener failed", error=str(error), exc_info=error)
        if respond is None or not (body.get("response_url") or "payload" in body):
            return
        message = error_message()
        worker.submit(
            "report error",
            lambda: respond(
                **message.as_kwargs(), response_type="ephemeral", replace_original=False
            ),
        )

    return report_error


class StaticAuthorize(Authorize):
    """One workspace, one bot token: no `auth.test` round trip on the request path."""

    def __init__(self, token: str) -> None:
        self._result = AuthorizeResult(enterprise_id=None, team_id=None, bot_token=token)

    def __call__(
        self,
        *,
        context: BoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        """The same bot token for every request."""
        return self._result
