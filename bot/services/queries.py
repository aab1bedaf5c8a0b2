"""Lookups several services share: a grant with its conference, a person's voucher row."""

from __future__ import annotations

from sqlalchemy import Exists, select
from sqlalchemy.orm import Session

from bot.services.outcomes import GrantRef
from bot.storage import (
    Conference,
    ConferenceVoucher,
    Grant,
    VoucherState,
)


def grant_ref(grant: Grant, conference: Conference) -> GrantRef:
    """A detached snapshot of a grant, safe to use after its session has closed."""
    return GrantRef(
        id=grant.id,
        external_id=grant.external_id,
        conference=conference.code,
        conference_id=conference.id,
        conference_name=conference.name,
        full_name=grant.full_name,
        email=grant.email,
        slack_user_id=grant.slack_user_id,
    )


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


def live_voucher_of_person() -> Exists:
    """SQL: the grant's person has a voucher at the grant's conference that was not revoked."""
    return (
        select(ConferenceVoucher.id)
        .where(
            ConferenceVoucher.conference_id == Grant.conference_id,
            ConferenceVoucher.email_key == Grant.email_key,
            ConferenceVoucher.state != VoucherState.REVOKED,
        )
        .exists()
    )
