"""The voucher email's subject, text and HTML, rendered from Jinja2 templates in bot/templates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Literal
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@dataclass(frozen=True)
class VoucherEmailContext:
    """What the voucher email says; `valid_until` is shown in the conference's `timezone`."""

    grantee_name: str
    conference_name: str
    code: str
    redeem_url: str | None
    valid_until: datetime | None
    timezone: str
    voucher_kind: Literal["grant", "speaker"]
    resend: bool = False

    def __post_init__(self) -> None:
        if self.valid_until is not None and self.valid_until.tzinfo is None:
            raise ValueError("valid_until needs a time zone, or it is shown at the wrong time")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None


@dataclass(frozen=True)
class RenderedEmail:
    """A subject line and the two bodies of one email."""

    subject: str
    text: str
    html: str


def render_voucher_email(context: VoucherEmailContext) -> RenderedEmail:
    """Render the voucher email for one grantee."""
    env = _environment()
    values = {
        "greeting_name": " ".join(context.grantee_name.split()) or "there",
        "conference": " ".join(context.conference_name.split()),
        "code": context.code,
        "redeem_url": context.redeem_url,
        "valid_until": _format_validity(context.valid_until, context.timezone),
        "speaker": context.voucher_kind == "speaker",
        "resend": context.resend,
    }
    # A line break in a subject would be refused as a header; collapse all whitespace.
    subject = " ".join(env.get_template("voucher_email.subject.j2").render(values).split())
    return RenderedEmail(
        subject=subject,
        text=env.get_template("voucher_email.txt.j2").render(values),
        html=env.get_template("voucher_email.html.j2").render(values, subject=subject),
    )


def redeem_url(shop_url: str | None, code: str) -> str | None:
    """Pretix's redemption link for a voucher, e.g. https://pretix.eu/org/event/redeem?voucher=X."""
    if not shop_url:
        return None
    query = urlencode({"voucher": code}, quote_via=quote)
    return f"{shop_url.rstrip('/')}/redeem?{query}"


def _format_validity(valid_until: datetime | None, timezone: str) -> str | None:
    if valid_until is None:
        return None
    local = valid_until.astimezone(ZoneInfo(timezone))
    # Built by hand rather than with %d/%B so that it reads the same under any locale.
    month = _MONTHS[local.month - 1]
    return f"{local.day} {month} {local.year}, {local:%H:%M} {local.tzname()}"


_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("bot", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
