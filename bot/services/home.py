"""What App Home shows staff: the digest's picture of each conference, live, plus the bulk
requests waiting for a second person's approval (no Slack here).

The digest's data comes from `bot.services.digest.build_digest` (the same queries, one Pretix
list per conference); this module only adds the one read-only query of bulk requests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from bot.services.context import ServiceContext
from bot.services.digest import Digest, build_digest
from bot.storage import BulkItem, BulkRequest, BulkStatus, Conference


@dataclass(frozen=True, kw_only=True)
class AwaitingBulk:
    """A bulk request waiting for approval (approve or reject it where it was posted)."""

    id: int
    requested_by: str  # the requester's Slack user id (or CLI name)
    created_at: dt.datetime
    expires_at: dt.datetime
    grantees: int  # frozen into the request at preview


@dataclass(frozen=True, kw_only=True)
class HomeConference:
    """One conference as App Home shows it."""

    digest: Digest
    bulk: tuple[AwaitingBulk, ...]


@dataclass(frozen=True, kw_only=True)
class HomePicture:
    """Every configured conference at `generated_at`."""

    generated_at: dt.datetime
    conferences: tuple[HomeConference, ...]


def awaiting_bulk_requests(
    ctx: ServiceContext, *, now: dt.datetime
) -> dict[str, tuple[AwaitingBulk, ...]]:
    """Unexpired bulk requests awaiting approval, by conference code, oldest first (one query)."""
    grantees = (
        select(func.count(BulkItem.id))
        .where(BulkItem.request_id == BulkRequest.id)
        .correlate(BulkRequest)
        .scalar_subquery()
    )
    with ctx.db.transaction() as session:
        rows = session.execute(
            select(
                Conference.code,
                BulkRequest.id,
                BulkRequest.requested_by,
                BulkRequest.created_at,
                BulkRequest.expires_at,
                grantees,
            )
            .join(Conference, BulkRequest.conference_id == Conference.id)
            .where(
                BulkRequest.status == BulkStatus.AWAITING_APPROVAL,
                BulkRequest.expires_at > now,
            )
            .order_by(BulkRequest.created_at, BulkRequest.id)
        ).all()
    found: dict[str, list[AwaitingBulk]] = {}
    for code, ident, by, created, expires, count in rows:
        found.setdefault(code, []).append(
            AwaitingBulk(
                id=ident,
                requested_by=by,
                created_at=created,
                expires_at=expires,
                grantees=int(count or 0),
            )
        )
    return {code: tuple(items) for code, items in found.items()}


def home_picture(ctx: ServiceContext, *, now: dt.datetime) -> HomePicture:
    """The digest of every configured conference, with its bulk requests awaiting approval."""
    bulk = awaiting_bulk_requests(ctx, now=now)
    return HomePicture(
        generated_at=now,
        conferences=tuple(
            HomeConference(
                digest=build_digest(ctx, conference=code, now=now), bulk=bulk.get(code, ())
            )
            for code in ctx.conferences
        ),
    )
