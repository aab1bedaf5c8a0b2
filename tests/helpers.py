"""Plain helpers that several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.intake import ingest_voucher
from bot.services.notifications import VoucherPayload
from bot.storage import AuditEvent, ConferenceVoucher, Database, Grant
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import ReceivedMessage


def voucher_row(db: Database, grant_id: int) -> ConferenceVoucher:
    """The voucher row of a grant's person (its conference and email key)."""
    with db.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        return session.scalars(
            select(ConferenceVoucher).where(
                ConferenceVoucher.conference_id == grant.conference_id,
                ConferenceVoucher.email_key == grant.email_key,
            )
        ).one()


def grant_external_id(db: Database, grant_id: int) -> str:
    """The id the grants backend gave a stored grant (what staff type in commands)."""
    with db.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        return grant.external_id


def grant_events(db: Database, grant_id: int, action: str | None = None) -> list[AuditEvent]:
    """A grant's audit events, oldest first; only those of `action` when it is given."""
    query = select(AuditEvent).where(AuditEvent.grant_id == grant_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    with db.transaction() as session:
        return list(session.scalars(query.order_by(AuditEvent.id)))


def record_voucher(ctx: ServiceContext, conference: str, email: str, **fields: object) -> None:
    """Record a voucher made elsewhere (speaker, co-speaker) through the intake service."""
    payload = VoucherPayload.model_validate({"conference": conference, "email": email, **fields})
    ingest_voucher(ctx, payload=payload, actor=TEST_ACTOR)


def seed_co_speaker(
    ctx: ServiceContext,
    pretix: FakePretix,
    conference: str,
    code: str,
    *,
    email: str | None = None,
    **terms: Any,
) -> tuple[dict[str, Any], str]:
    """A 25 %-off co-speaker voucher made elsewhere: in Pretix, and told to the bot.

    Returns the voucher as Pretix holds it and the co-speaker's email address.
    """
    seeded = pretix.seed_voucher(
        code=code, **({"price_mode": "percent", "value": "25.00", "tag": "co_speaker"} | terms)
    )
    address = email or f"{unique('cospeaker')}@example.org"
    record_voucher(
        ctx, conference, address, type="co_speaker", code=code, pretix_voucher_id=seeded["id"]
    )
    return seeded, address


def plain_text(mail: ReceivedMessage) -> str:
    """The plain-text part of a received email."""
    body = mail.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def expected_message_id(conference: ConferenceConfig, voucher_id: int, generation: int) -> str:
    """The Message-ID of a voucher email; the generation counts resends."""
    return f"<voucher.{conference.code}.{voucher_id}.{generation}@pycon.example.org>"


def post_slack_outbox(bot: Bot) -> None:
    """Post everything waiting in the bot's Slack outbox, as its background poster would."""
    assert bot.slack is not None
    while bot.slack.poster.run_once():
        pass


def write_file(directory: Path, name: str, text: str) -> Path:
    """Write `text` as UTF-8 to `directory / name` and return that path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path
