"""What provisioning knows of grants before it decides: read in bulk, a few queries per batch.

A `Facts` is a detached snapshot of one grant, its conference, the person's voucher row and
any live row tied to the grant under another email; `provisioning_rules.decide` reads it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.outcomes import GrantRef
from bot.services.provisioning_rules import (
    ConferenceFacts,
    Decision,
    GrantFacts,
    VoucherFacts,
    decide,
)
from bot.services.queries import grant_ref
from bot.storage import Conference, ConferenceVoucher, Grant, VoucherState

CV = ConferenceVoucher
_CHUNK = 500


@dataclass(frozen=True, kw_only=True)
class Facts:
    """One grant as provisioning sees it, detached from any session."""

    ref: GrantRef
    grant: GrantFacts
    hold_reason: str | None
    voucher: ConferenceVoucher | None  # detached copy of the person's row
    moved: ConferenceVoucher | None  # detached copy of a live row under another email
    config: ConferenceConfig | None

    def decide(
        self,
        ctx: ServiceContext,
        *,
        now: dt.datetime,
        background: bool,
        respect_schedule: bool = False,
        by_staff: bool = False,
    ) -> Decision:
        """The one rule, applied to these facts."""
        return decide(
            grant=self.grant,
            voucher=_voucher_facts(self.voucher),
            moved=_voucher_facts(self.moved),
            conference=ConferenceFacts(
                configured=self.config is not None,
                issue_vouchers=self.config is not None and self.config.issue_vouchers,
                pretix=ctx.pretix is not None,
            ),
            now=now,
            background=background,
            respect_schedule=respect_schedule,
            by_staff=by_staff,
        )


def _voucher_facts(row: ConferenceVoucher | None) -> VoucherFacts | None:
    if row is None:
        return None
    return VoucherFacts(
        id=row.id,
        grant_id=row.grant_id,
        email_key=row.email_key,
        voucher_type=row.voucher_type,
        state=row.state,
        lease_expires_at=row.lease_expires_at,
        next_attempt_at=row.next_attempt_at,
        email_sent_at=row.email_sent_at,
        email_state=row.email_state,
    )


def load_facts(
    session: Session, ctx: ServiceContext, grant_ids: Sequence[int], *, lock: bool = False
) -> dict[int, Facts]:
    """Facts for each of the grants that exist, by grant id (a few queries per 500 grants).

    `lock` holds the grant rows against intake (FOR SHARE) until the caller's commit.
    """
    facts: dict[int, Facts] = {}
    for start in range(0, len(grant_ids), _CHUNK):
        facts |= _load_chunk(session, ctx, grant_ids[start : start + _CHUNK], lock=lock)
    return facts


def _load_chunk(
    session: Session, ctx: ServiceContext, grant_ids: Sequence[int], *, lock: bool
) -> dict[int, Facts]:
    query = (
        select(Grant, Conference)
        .join(Conference, Grant.conference_id == Conference.id)
        .where(Grant.id.in_(grant_ids))
    )
    if lock:
        query = query.with_for_update(read=True, of=Grant)
    pairs = session.execute(query).all()
    if not pairs:
        return {}
    people = {(g.conference_id, g.email_key) for g, _ in pairs if g.email_key}
    by_person: dict[tuple[int, str], ConferenceVoucher] = {}
    if people:
        for row in session.scalars(
            select(CV).where(tuple_(CV.conference_id, CV.email_key).in_(sorted(people)))
        ):
            by_person[(row.conference_id, row.email_key)] = row
    email_of = {grant.id: grant.email_key for grant, _ in pairs}
    moved_by_grant: dict[int, ConferenceVoucher] = {}
    for row in session.scalars(
        select(CV).where(CV.grant_id.in_(grant_ids), CV.state != VoucherState.REVOKED)
    ):
        if row.grant_id is not None and row.email_key != email_of.get(row.grant_id):
            moved_by_grant.setdefault(row.grant_id, row)
    session.expunge_all()
    facts: dict[int, Facts] = {}
    for grant, conference in pairs:
        config = ctx.conference(conference.code)
        facts[grant.id] = Facts(
            ref=grant_ref(grant, conference),
            grant=GrantFacts(
                id=grant.id,
                status=grant.status,
                email_key=grant.email_key,
                hold_reason=grant.hold_reason,
                name=grant.full_name,
                email=grant.email,
                waits_for_staff=grant.waits_for_staff,
            ),
            hold_reason=grant.hold_reason,
            voucher=by_person.get((grant.conference_id, grant.email_key or "")),
            moved=moved_by_grant.get(grant.id),
            config=config,
        )
    return facts


def load_one(
    session: Session, ctx: ServiceContext, grant_id: int, *, lock: bool = False
) -> Facts | None:
    """Facts for one grant, or None when there is no such grant."""
    return load_facts(session, ctx, [grant_id], lock=lock).get(grant_id)
