"""Voucher codes: unguessable, upper-case, without look-alike characters."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

# No 0/O, 1/I/L: codes are read aloud at the registration desk and typed from phones.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 16  # 31**16 is about 2**79: not guessable, still easy to type


def generate_voucher_code() -> str:
    """A fresh random code, generated before any call to Pretix."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


SHOWN_CHARS = 4  # what a channel message or a log line shows of a code: enough to tell them apart

# A code the bot generated, wherever a free text names it (a step, another voucher, an error).
OUR_CODE = re.compile(rf"(?<![A-Za-z0-9])[{ALPHABET}]{{{LENGTH}}}(?![A-Za-z0-9])")


def mask_code(code: str) -> str:
    """The code as a channel or a log may show it: its first 4 characters and "…" (`ABCD…`).

    A code is as good as a free ticket, so a short one (made elsewhere) shows at most half.
    """
    return code[: min(SHOWN_CHARS, len(code) // 2)] + "…"


def redact_codes(text: str, codes: Iterable[str | None] = ()) -> str:
    """`text` with each of `codes`, and anything shaped like a bot-made code, masked.

    Apply it to raw text before escaping and cutting, so no part of a code survives a cut.
    """
    known = sorted({code for code in codes if code}, key=len, reverse=True)
    if known:
        alternatives = "|".join(re.escape(code) for code in known)
        pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        text = pattern.sub(lambda match: mask_code(match.group()), text)
    return OUR_CODE.sub(lambda match: mask_code(match.group()), text)
