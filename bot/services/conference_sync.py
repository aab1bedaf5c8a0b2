"""Keep the conferences table in step with the configuration file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.conferences import Conferences
from bot.storage import Conference, Database, insert_ignoring_conflict


def sync_conferences(db: Database, conferences: Conferences) -> None:
    """Insert or update one row per configured conference; rows of removed ones stay."""
    with db.transaction() as session:
        for code, config in conferences.items():
            values: dict[str, Any] = {
                "name": config.name,
                "pretix_organizer": config.pretix_organizer,
                "pretix_event": config.pretix_event,
                "pretix_quota_id": config.pretix_quota,
                "pretix_item_id": config.pretix_item,
                "voucher_valid_until": config.voucher_valid_until,
                "timezone": config.timezone,
                "slack_channel": config.slack_channel,
            }
            # Replicas starting together must not trip over each other's insert.
            inserted = insert_ignoring_conflict(
                session, Conference, {"code": code, **values}, conflict=["code"]
            )
            if inserted is not None:
                continue
            row = session.scalars(
                select(Conference).where(Conference.code == code).with_for_update()
            ).one()
            for name, value in values.items():
                if getattr(row, name) != value:
                    setattr(row, name, value)
