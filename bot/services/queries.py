"""Lookups several services share: a grant with its conference, a person's voucher row."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.storage import Conference, ConferenceVoucher, Grant


def grant_with_conference(session: Session, grant_id: int) -> tuple[Grant, Conference] | None:
    """The grant (by internal id) and its conference, or None."""
    found = session.execute(
        select(Grant, Conference)
        .join(Conference, Grant.conference_id == Conference.id)
        .where(Grant.id == grant_id)
    ).one_or_none()
    return None if found is None else (found[0], found[1])


def voucher_of(
    session: Session, *, conference_id: int, email_key: str | None, lock: bool = False
) -> ConferenceVoucher | None:
    """The one voucher row of a person at a conference; `lock` holds it until commit."""
    if email_key is None:
        return None
    query = select(ConferenceVoucher).where(
        ConferenceVoucher.conference_id == conference_id,
        ConferenceVoucher.email_key == email_key,
    )
    return session.scalars(query.with_for_update() if lock else query).one_or_none()
