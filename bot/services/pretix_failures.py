"""Pretix failures as small typed values: what kind, whether a retry can help, and why."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from bot.pretix import (
    PretixAnswerMismatch,
    PretixAuthError,
    PretixConflict,
    PretixError,
    PretixNotFound,
    PretixUnavailable,
    PretixValidationError,
    PretixVoucherUsed,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")


class FailureKind(enum.StrEnum):
    """What went wrong with one Pretix call."""

    CODE_TAKEN = "code_taken"
    NOT_FOUND = "not_found"
    REFUSED = "refused"  # a 400: Pretix refused the data
    AUTH = "auth"
    BUSY = "busy"  # 409 after every retry
    UNAVAILABLE = "unavailable"
    USED = "used"  # a redeemed voucher cannot be deleted
    MISMATCH = "mismatch"  # an answer about another voucher (a replayed key)
    UNEXPECTED = "unexpected"  # a bug or an answer nobody foresaw


@dataclass(frozen=True)
class PretixFailure:
    """A Pretix call that failed; `retryable` ones are tried again later with backoff."""

    kind: FailureKind
    retryable: bool
    reason: str


def call_pretix(request: Callable[[], T]) -> T | PretixFailure:
    """Run one Pretix call; every error, the unforeseen ones included, becomes a failure."""
    try:
        return request()
    except PretixValidationError as exc:
        if exc.code_taken:
            return PretixFailure(FailureKind.CODE_TAKEN, False, "the code is taken in Pretix")
        return PretixFailure(
            FailureKind.REFUSED, False, "Pretix refused the voucher: " + "; ".join(exc.messages())
        )
    except PretixConflict as exc:
        return PretixFailure(FailureKind.BUSY, True, f"Pretix was busy (409) and retried: {exc}")
    except PretixUnavailable as exc:
        return PretixFailure(FailureKind.UNAVAILABLE, True, f"Pretix is unavailable: {exc}")
    except PretixAuthError as exc:
        detail = exc.body.get("detail") if isinstance(exc.body, dict) else None
        return PretixFailure(
            FailureKind.AUTH,
            False,
            f"Pretix refused our token ({detail or f'HTTP {exc.status_code}'}): check "
            "PRETIX_TOKEN and the team's voucher permissions, then retry",
        )
    except PretixNotFound as exc:
        return PretixFailure(FailureKind.NOT_FOUND, False, f"not found in Pretix: {exc}")
    except PretixVoucherUsed as exc:
        return PretixFailure(FailureKind.USED, False, str(exc))
    except PretixAnswerMismatch as exc:
        log.error("pretix_answer_mismatch", error=str(exc))  # noqa: TRY400 - no traceback needed
        return PretixFailure(FailureKind.MISMATCH, False, str(exc))
    except PretixError as exc:
        return PretixFailure(FailureKind.REFUSED, False, f"Pretix error: {exc}")
    except Exception as exc:
        log.exception("pretix_call_failed_unexpectedly", error_type=type(exc).__name__)
        return PretixFailure(
            FailureKind.UNEXPECTED,
            True,
            f"unexpected error ({type(exc).__name__}) while talking to Pretix; "
            "the bot's log has the details",
        )
