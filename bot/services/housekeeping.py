"""Housekeeping: forget what is only kept for a short while (Slack delivery ids, sent posts).

Webhook event ids and the audit log are kept: they are the record of what the backend said
and what the bot did.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete

from bot.services.inbox import SLACK
from bot.storage import Database, InboundEvent, OutboxState, SlackOutbox

# Slack redelivers within minutes; a week is plenty to recognise a retry.
KEEP_SLACK_DELIVERIES = dt.timedelta(days=7)
# Posted status updates are in Slack itself; the rows help with a week of debugging.
KEEP_SENT_POSTS = dt.timedelta(days=30)


@dataclass(frozen=True)
class Purged:
    """How many rows one pass removed."""

    slack_deliveries: int
    sent_posts: int


def purge_old_records(db: Database, *, now: dt.datetime) -> Purged:
    """Delete Slack delivery ids and posted status updates that are past their keeping time."""
    with db.transaction() as session:
        deliveries = session.execute(
            delete(InboundEvent)
            .where(
                InboundEvent.source == SLACK,
                InboundEvent.received_at < now - KEEP_SLACK_DELIVERIES,
            )
            .returning(InboundEvent.id)
        ).all()
        posts = session.execute(
            delete(SlackOutbox)
            .where(
                SlackOutbox.state == OutboxState.SENT,
                SlackOutbox.updated_at < now - KEEP_SENT_POSTS,
            )
            .returning(SlackOutbox.id)
        ).all()
    return Purged(slack_deliveries=len(deliveries), sent_posts=len(posts))
