"""Text for the blocks: escaping, cutting, one emoji per meaning, and phrases rendered twice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.services.codes import redact_codes
from bot.services.outcomes import GrantRef

COMMAND = "/voucher"
DETAIL_LIMIT = 1500  # one reason or error: enough to act on, still scannable

# One emoji per meaning, everywhere.
_OK = "white_check_mark"
_INFO = "information_source"
_WORKING = "hourglass_flowing_sand"  # we are on it right now
_WAITING = "hourglass"  # waiting for something (Pretix, a retry, the mail server)
_WARNING = "warning"  # a person must look
_FAILED = "x"  # failed; Retry may help
_EMAIL = "email"
_REVOKED = "no_entry_sign"
_LOCKED = "lock"


def escape(text: str) -> str:
    """Escape `&`, `<` and `>` so Slack shows data as typed and never parses it as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def redact_payload(payload: Any, codes: Iterable[str | None]) -> Any:
    """A copy of a message payload (dicts, lists, strings) with `redact_codes` on every string."""
    known = list(codes)
    if isinstance(payload, str):
        return redact_codes(payload, known)
    if isinstance(payload, dict):
        return {key: redact_payload(value, known) for key, value in payload.items()}
    if isinstance(payload, list):
        return [redact_payload(item, known) for item in payload]
    return payload


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in "…" when cut.

    Never leaves half an escape (`&am`) or half a `<@U123>` mention at the end.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and len(cut) - amp < len("&amp;") and ";" not in cut[amp:]:
        cut = cut[:amp]
    tag = cut.rfind("<")
    if tag != -1 and len(cut) - tag < 64 and ">" not in cut[tag:]:
        cut = cut[:tag]
    return cut + "…"


# --- Phrases: mrkdwn for the blocks and plain words for the fallback, escaped by construction.


@dataclass(frozen=True)
class _Rich:
    """One phrase rendered twice: mrkdwn for the blocks, plain words for the fallback `text`."""

    md: str = ""
    plain: str = ""


def _rich(*parts: _Rich | str) -> _Rich:
    """Concatenate phrases; a `str` part (wording or data) is escaped, a `_Rich` part is kept."""
    return _Rich(
        "".join(p.md if isinstance(p, _Rich) else escape(p) for p in parts),
        "".join(p.plain if isinstance(p, _Rich) else escape(p) for p in parts),
    )


def _lines(lines: Sequence[_Rich]) -> _Rich:
    return _Rich("\n".join(line.md for line in lines), " ".join(line.plain for line in lines))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sentence(text: str, *, capitalize: bool = False) -> str:
    """One line ending in a full stop, capitalised only when asked."""
    # Only our own wording is capitalised: a message may start with a name or an email address.
    text = _one_line(text)
    if capitalize:
        text = text[:1].upper() + text[1:]
    return text if not text or text[-1] in ".!?…" else text + "."


def _data(text: str, limit: int = DETAIL_LIMIT) -> _Rich:
    shown = truncate(escape(_one_line(text)), limit)
    return _Rich(shown, shown)


def _bold(text: str) -> _Rich:
    shown = truncate(escape(_one_line(text)), 200)
    return _Rich(f"*{shown}*", shown)


def _code(text: str) -> _Rich:
    shown = truncate(escape(_one_line(text).replace("`", "'")), 200)
    return _Rich(f"`{shown}`", shown)


def _label(text: str) -> _Rich:
    return _Rich(f"*{escape(text)}*", escape(text))


def _icon(name: str) -> _Rich:
    return _Rich(f":{name}: ", "")


def _command(sub: str, grant: GrantRef) -> _Rich:
    return _code(f"{COMMAND} {sub} {grant.external_id} {grant.conference}")


def _who(grant: GrantRef) -> _Rich:
    return _rich(_bold(grant.full_name), " (", _data(grant.conference_name, 200), ")")
