"""The HTTP side: Starlette app under uvicorn, with the scheduler running beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot import __version__
from bot.bootstrap import Bot
from bot.scheduler import build_scheduler

log = structlog.get_logger(__name__)


def create_web_app(bot: Bot, *, run_scheduler: bool = True) -> Starlette:
    """Routes for health (and, with Slack and the webhook configured, their endpoints)."""

    def healthz(_request: Request) -> JSONResponse:
        body: dict[str, object] = {
            "version": __version__,
            "slack": bot.settings.slack_enabled,
            "pretix": bot.settings.pretix_enabled,
            "email": bot.settings.email_enabled,
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

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        scheduler = build_scheduler(bot) if run_scheduler else None
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=True)

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"])], lifespan=lifespan)


def serve(bot: Bot) -> None:
    """Run the HTTP server until interrupted (uvicorn handles SIGINT and SIGTERM)."""
    app = create_web_app(bot)
    uvicorn.run(
        app,
        host=bot.settings.host,
        port=bot.settings.port,
        log_config=None,  # our logging set-up renders uvicorn's records too
        access_log=False,
        proxy_headers=True,
    )
