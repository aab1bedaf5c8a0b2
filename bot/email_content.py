"""The voucher email's subject, text and HTML, rendered from Jinja2 templates.

A conference may name its own template folder (`email_templates` in conferences.toml); any
of the three files missing there comes from the bundled ones in bot/templates.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)


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


TEMPLATE_NAMES = ("voucher_email.subject.j2", "voucher_email.txt.j2", "voucher_email.html.j2")


def render_voucher_email(
    context: VoucherEmailContext, *, templates: Path | None = None
) -> RenderedEmail:
    """Render the voucher email for one grantee, from `templates` first, then the bundled ones."""
    env = _environment(templates)
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


def template_problems(folder: Path) -> list[str]:
    """What stops the templates in `folder` (plus the bundled ones) from rendering, in words.

    Checked at start with sample values for every variant, so a typo in a team's template
    stops the bot with a message instead of failing each grantee's email later.
    """
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    sample = VoucherEmailContext(
        grantee_name="Jane Doe",
        conference_name="Sample Conference",
        code="SAMPLE-CODE",
        redeem_url="https://pretix.example.org/org/event/redeem?voucher=SAMPLE-CODE",
        valid_until=datetime(2030, 1, 1, tzinfo=UTC),
        timezone="UTC",
        voucher_kind="grant",
    )
    for kind, resend in itertools.product(_KINDS, (False, True)):
        try:
            render_voucher_email(
                dataclasses.replace(sample, voucher_kind=kind, resend=resend), templates=folder
            )
        except TemplateSyntaxError as exc:
            return [f"{exc.filename or exc.name}, line {exc.lineno}: {exc.message}"]
        except (TemplateError, UnicodeDecodeError) as exc:
            return [f"{folder}: a template does not render ({kind} email): {exc}"]
    return []


_KINDS: tuple[Literal["grant", "speaker"], ...] = ("grant", "speaker")


def template_origin(name: str, templates: Path | None) -> Path | None:
    """The team's file that `name` comes from, or None when the bundled one is used."""
    if templates is not None and (templates / name).is_file():
        return templates / name
    return None


@cache
def _environment(templates: Path | None = None) -> Environment:
    bundled = PackageLoader("bot", "templates")
    loader: BaseLoader = bundled
    if templates is not None:
        # The team's folder first; a file it lacks falls back to the bundled one.
        loader = ChoiceLoader([FileSystemLoader(templates), bundled])
    return Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
