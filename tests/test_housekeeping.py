"""Short-lived rows go after their keeping time; everything else stays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select

from bot.services.context import ServiceContext
from bot.services.housekeeping import purge_old_records
from bot.services.inbox import GRANTS_WEBHOOK, SLACK
from bot.storage import InboundEvent, OutboxState, SlackOutbox
from tests.conftest import unique


def test_old_slack_delivery_ids_and_posted_updates_are_purged(
    ctx: ServiceContext, make_grant: Callable[..., int]
) -> None:
    now = dt.datetime(2026, 6, 1, 3, 30, tzinfo=dt.UTC)
    old, recent = now - dt.timedelta(days=8), now - dt.timedelta(days=1)
    grant_id = make_grant()
    ids = {name: unique(name) for name in ("old-slack", "new-slack", "old-webhook")}
    with ctx.db.transaction() as session:
        for source, name, at in (
            (SLACK, "old-slack", old),
            (SLACK, "new-slack", recent),
            (GRANTS_WEBHOOK, "old-webhook", old - dt.timedelta(days=300)),
        ):
            session.add(
                InboundEvent(
                    source=source, event_id=ids[name], kind="k", result="done", received_at=at
                )
            )
        for state, age in ((OutboxState.SENT, 40), (OutboxState.SENT, 2), (OutboxState.FAILED, 40)):
            session.add(
                SlackOutbox(
                    grant_id=grant_id,
                    channel="C0GRANTS",
                    parent={"text": "parent"},
                    state=state,
                    updated_at=now - dt.timedelta(days=age),
                )
            )

    purged = purge_old_records(ctx.db, now=now)

    assert purged.slack_deliveries >= 1 and purged.sent_posts >= 1
    with ctx.db.transaction() as session:
        kept = set(
            session.scalars(
                select(InboundEvent.event_id).where(InboundEvent.event_id.in_(ids.values()))
            )
        )
        posts = session.scalars(select(SlackOutbox).where(SlackOutbox.grant_id == grant_id)).all()
    assert kept == {ids["new-slack"], ids["old-webhook"]}
    assert sorted((p.state.value, (now - p.updated_at).days) for p in posts) == [
        ("failed", 40),
        ("sent", 2),
    ]
