"""`POST /hooks/grants`: signed notifications from the conference backend (CONTRACT.md).

Signature and timestamp first (401), then the body's shape (400), then the conference (422);
the event id is remembered in the same transaction as its effect, so a re-delivery answers
200 "duplicate" and changes nothing. Provisioning runs after the answer (202).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from bot.services.actors import Actor
from bot.services.context import ServiceContext
from bot.services.inbox import receive_webhook_event
from bot.services.notifications import InvalidBodyError, parse_webhook_body
from bot.services.outcomes import GrantIntake
from bot.services.provisioning import provision_grant_voucher
from bot.storage import Source
from bot.worker import Worker

log = structlog.get_logger(__name__)

TOLERANCE_SECONDS = 300
# Past this many queued provisioning jobs the webhook stops adding more (see below).
BACKLOG_LIMIT = 500
WEBHOOK_ACTOR = Actor(Source.WEBHOOK, "conference-backend")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Grants-Signature` value for a body: `v1=` + HMAC-SHA256 of `v1:<ts>:<body>`."""
    message = b"v1:" + timestamp.encode() + b":" + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_problem(
    secret: str, *, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> str | None:
    """Why a delivery's signature is not acceptable, or None when it is."""
    if not timestamp or not signature:
        return "missing X-Grants-Timestamp or X-Grants-Signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return "X-Grants-Timestamp is not unix seconds"
    if abs(now - sent) > TOLERANCE_SECONDS:
        return "stale timestamp (more than 300 seconds away from now)"
    # Bytes, not str: compare_digest refuses non-ASCII text, which a forger could send.
    expected = sign(secret, timestamp, body).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return "signature does not match"
    return None


def grants_webhook(
    *,
    services: ServiceContext,
    worker: Worker,
    secret: str | None,
    clock: Callable[[], float] = time.time,
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """The Starlette endpoint, bound to its collaborators."""

    async def endpoint(request: Request) -> JSONResponse:
        if secret is None:
            return JSONResponse(
                {
                    "status": "disabled",
                    "error": "set GRANTS_WEBHOOK_SECRET to accept notifications",
                },
                status_code=503,
            )
        body = await request.body()
        problem = signature_problem(
            secret,
            timestamp=request.headers.get("x-grants-timestamp"),
            signature=request.headers.get("x-grants-signature"),
            body=body,
            now=clock(),
        )
        if problem is not None:
            log.warning("grant webhook refused", reason=problem)
            return JSONResponse({"status": "unauthorized", "error": problem}, status_code=401)
        try:
            event = parse_webhook_body(body)
        except InvalidBodyError as exc:
            return JSONResponse({"status": "invalid", "errors": exc.reasons}, status_code=400)
        conference = event.conference
        if services.conference(conference) is None:
            return JSONResponse(
                {"status": "unknown_conference", "error": f"unknown conference {conference!r}"},
                status_code=422,
            )
        receipt = await run_in_threadpool(
            receive_webhook_event, services, event=event, actor=WEBHOOK_ACTOR
        )
        if receipt.duplicate:
            return JSONResponse({"status": "duplicate"}, status_code=200)
        intake = receipt.intake
        if isinstance(intake, GrantIntake) and intake.provision and intake.grant is not None:
            grant_id = intake.grant.id
            if worker.backlog >= BACKLOG_LIMIT:
                # The grant is stored as confirmed: the reconciler's next pass issues it.
                log.warning("webhook burst: provisioning left to the reconciler", grant=grant_id)
            else:
                worker.submit(
                    f"provision grant {grant_id}",
                    lambda: provision_grant_voucher(
                        services, grant_id=grant_id, actor=WEBHOOK_ACTOR
                    ),
                )
        result = intake.action.value if intake else None
        log.info("grant webhook accepted", event_id=event.id, result=result)
        return JSONResponse({"status": "accepted", "result": result}, status_code=202)

    return endpoint
