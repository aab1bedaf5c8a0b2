"""Voucher codes: unguessable, upper-case, without look-alike characters."""

from __future__ import annotations

import secrets

# No 0/O, 1/I/L: codes are read aloud at the registration desk and typed from phones.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 16  # 31**16 is about 2**79: not guessable, still easy to type


def generate_voucher_code() -> str:
    """A fresh random code, generated before any call to Pretix."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
