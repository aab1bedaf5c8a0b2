"""The HTTP side: Starlette under uvicorn, with the scheduler, worker and poster beside it.

Routes: `POST /slack/events` (Bolt, on the event loop: its listeners only ack and hand work
to a worker), `POST /hooks/grants` (the conference backend), `GET /healthz`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import structlog
import uvicorn
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import __version__
from bot.bootstrap import Bot
from bot.scheduler import build_scheduler
from bot.webhook import grants_webhook

log = structlog.get_logger(__name__)


def create_web_app(bot: Bot, *, run_background: bool = True) -> Starlette:
    """Routes for Slack, the grant webhook and health; background jobs run in the lifespan."""
    settings = bot.settings

    def healthz(_request: Request) -> JSONResponse:
        body: dict[str, Any] = {
            "version": __version__,
            "slack": settings.slack_enabled,
            "pretix": settings.pretix_enabled,
            "email": settings.email_enabled,
        }
        try:
            with bot.db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("health check: database unavailable", error=str(exc))
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable", **body}, status_code=503
            )
        return JSONResponse({"status": "ok", "database": "ok", **body})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route(
            "/hooks/grants",
            grants_webhook(
                services=bot.services,
                worker=bot.background,
                secret=(
                    settings.grants_webhook_secret.get_secret_value()
                    if settings.grants_webhook_secret
                    else None
                ),
            ),
            methods=["POST"],
        ),
    ]
    if bot.slack is not None and settings.slack_signing_secret is not None:
        # Without a signing secret (Socket Mode only) nothing could verify HTTP requests:
        # the route is not there at all rather than open to anyone.
        routes.append(Route("/slack/events", slack_endpoint(bot.slack.app), methods=["POST"]))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not run_background:
            yield
            return
        scheduler = build_scheduler(bot)
        scheduler.start()
        socket_mode = None
        if bot.slack is not None:
            bot.slack.poster.start()
            if settings.slack_app_token is not None:
                socket_mode = SocketMode(bot.slack.app, settings.slack_app_token.get_secret_value())
                socket_mode.start()
        try:
            yield
        finally:
            if socket_mode is not None:
                socket_mode.stop()
            scheduler.shutdown(wait=True)
            if bot.slack is not None:
                bot.slack.poster.stop()

    return Starlette(routes=routes, lifespan=lifespan)


class SocketMode:
    """Socket Mode beside HTTP: connects in the background and keeps trying until it can.

    Slack may be unreachable when the bot starts; the webhook and the reconciler must not
    wait for it, so the first connection is retried with backoff (the SDK reconnects by
    itself once connected).
    """

    def __init__(self, app: App, app_token: str) -> None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        self._handler = SocketModeHandler(app, app_token)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._connect, name="socket-mode", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        """Begin connecting."""
        self._thread.start()

    def stop(self) -> None:
        """Stop trying and close the connection."""
        self._stopping.set()
        self._thread.join(timeout=10)
        if self.connected.is_set():
            self._handler.close()  # type: ignore[no-untyped-call]

    def _connect(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                self._handler.connect()  # type: ignore[no-untyped-call]
            except Exception as exc:  # noqa: BLE001 - any failure: log it and try again later
                log.warning("Socket Mode connection failed; retrying", error=str(exc), delay=delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            self.connected.set()
            log.info("connected to Slack in Socket Mode")
            return


def slack_endpoint(app: App) -> Any:
    """Bolt's dispatch, on the event loop itself.

    Every listener only parses, checks staff (in memory), acks and hands the work to the
    worker; nothing on this path waits for the network (see StaffDirectory and
    StaticAuthorize). Handing each request to a thread instead costs two thread switches
    under the interpreter lock, which tripled the p99 ack latency under load (README).
    """

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        return to_starlette_response(app.dispatch(to_bolt_request(request, body)))

    return endpoint


def serve(bot: Bot) -> None:
    """Run the HTTP server until interrupted (uvicorn handles SIGINT and SIGTERM).

    A stop by SIGINT or SIGTERM is a clean stop: once uvicorn has shut down it raises the
    signal again, and `_stopped` turns it into exit status 0 (not "killed by a signal", which
    `make run` and process supervisors report as a failure).
    """
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _run_uvicorn(bot)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, _frame: FrameType | None) -> None:
    log.info("stopped by signal", signal=signal.Signals(signum).name)
    raise SystemExit(0)


def _run_uvicorn(bot: Bot) -> None:
    uvicorn.run(
        create_web_app(bot),
        host=bot.settings.host,
        port=bot.settings.port,
        log_config=None,  # our logging set-up renders uvicorn's records too
        access_log=False,
        proxy_headers=True,
    )
