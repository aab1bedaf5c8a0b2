"""The voucher email one grantee would get, rendered without sending anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.email_content import (
    TEMPLATE_NAMES,
    RenderedEmail,
    VoucherEmailContext,
    redeem_url,
    render_voucher_email,
    template_origin,
)
from bot.services.context import ServiceContext
from bot.services.outcomes import GrantRef
from bot.services.status import grant_status
from bot.storage import VoucherType

# Shown instead of a code when the grantee has no voucher yet: the preview invents none.
PLACEHOLDER_CODE = "NOT-ISSUED-YET"


@dataclass(frozen=True)
class EmailPreview:
    """The rendered email, to whom, and where each template came from (None: bundled)."""

    grant: GrantRef
    email: RenderedEmail
    code_issued: bool
    origins: dict[str, Path | None]


@dataclass(frozen=True)
class PreviewRefused:
    """Why no preview could be rendered, in words."""

    reason: str


def preview_voucher_email(ctx: ServiceContext, *, grant_id: int) -> EmailPreview | PreviewRefused:
    """Render the voucher email of one grant as it would go out now (its code, if issued)."""
    report = grant_status(ctx.db, grant_id=grant_id, history=0)
    if report is None:
        return PreviewRefused(f"there is no grant #{grant_id}")
    config = ctx.conference(report.grant.conference)
    if config is None:
        return PreviewRefused(f"conference {report.grant.conference} is no longer configured")
    voucher = report.voucher
    code = voucher.code if voucher is not None else PLACEHOLDER_CODE
    speaker = voucher is not None and voucher.voucher_type is VoucherType.SPEAKER
    rendered = render_voucher_email(
        VoucherEmailContext(
            grantee_name=report.grant.full_name,
            conference_name=config.name,
            code=code,
            redeem_url=redeem_url(config.shop_url(ctx.pretix_url), code),
            valid_until=config.voucher_valid_until,
            timezone=config.timezone,
            voucher_kind="speaker" if speaker else "grant",
        ),
        templates=config.template_folder,
    )
    return EmailPreview(
        grant=report.grant,
        email=rendered,
        code_issued=voucher is not None,
        origins={name: template_origin(name, config.template_folder) for name in TEMPLATE_NAMES},
    )
