"""Structured logs (structlog) for the bot and the libraries it uses.

Log pipelines are read by more people than the database, and a voucher code is as good as a
free ticket: whatever a log line was given, `redact_personal_data` masks voucher codes, email
addresses and the values of keys that name a person or a code, in structlog's lines and the
libraries' alike, tracebacks included. It is a safety net: log ids, not data, in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog

from bot.services.codes import mask_code, redact_codes

# Keys whose values are a voucher code: shown as `ABCD…`, enough to tell vouchers apart.
CODE_KEYS = frozenset({"code", "voucher_code", "codes"})
# Keys whose values name or reach a person: never shown.
PERSONAL_KEYS = frozenset(
    {
        "email",
        "email_address",
        "email_key",
        "recipient",
        "recipients",
        "rcpt",
        "to",
        "name",
        "full_name",
        "first_name",
        "last_name",
        "real_name",
        "display_name",
    }
)
REDACTED = "[redacted]"

_EMAIL = re.compile(
    r"[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[\w-]+)+"
)
# Postgres names the values of a key or a whole row in its errors' DETAIL.
_PG_KEY = re.compile(r"(Key \([^)]*\)=)\(.*?\)(?= already exists| is (?:not present|still ref))")
_PG_ROW = re.compile(r"(Failing row contains )\(.*\)")


def redact_text(text: str) -> str:
    """`text` with email addresses, bot-made voucher codes and Postgres key values masked."""
    text = _PG_KEY.sub(r"\1(…)", text)
    text = _PG_ROW.sub(r"\1(…)", text)
    text = _EMAIL.sub("[email]", text)
    return redact_codes(text)


def _redact_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if value is None or isinstance(value, bool | int | float):
        return value
    if lowered in PERSONAL_KEYS:
        return REDACTED
    if lowered in CODE_KEYS:
        if isinstance(value, list | tuple | set | frozenset):
            return [mask_code(str(item)) for item in value]
        return mask_code(str(value))
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(key, item) for item in value]
    return redact_text(str(value))


def redact_personal_data(
    _logger: object, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: voucher codes, emails and names masked in every value."""
    return {key: _redact_value(key, value) for key, value in event.items()}


def configure_logging(
    *,
    level: str = "INFO",
    fmt: Literal["console", "json"] = "console",
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging through one renderer: readable or JSON lines.

    Lines go to `stream` (standard error by default), redacted (`redact_personal_data`).
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            # An event below the logger's level is dropped before any work is done for it.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger cached at first use keeps the configuration of that moment for
        # the life of the process, so a later `configure` (a second CLI command run in the
        # same process, a test capturing logs) would not reach it.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text here, in both formats, so that they are redacted too.
            structlog.processors.format_exc_info,
            redact_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request lines from the HTTP client and server are noise at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Start-up chatter: the bot's banner already says where it listens and its schema
    # revision; Alembic's and uvicorn's own lines show only with LOG_LEVEL=DEBUG.
    chatter = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("alembic", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(chatter)
