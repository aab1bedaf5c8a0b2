"""Many stored grants and voucher rows at once, for the read-side benchmarks (digest, reconciler).

The intake service stores about a hundred grants a second; these benchmarks need tens of
thousands in a state the services would have left them in, so the rows are written with
multi-row INSERTs. Every benchmark uses conferences of its own and deletes them at the end.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, text

from bot.conferences import ConferenceConfig, Conferences
from bot.services.conference_sync import sync_conferences
from bot.storage import (
    AuditEvent,
    Conference,
    ConferenceVoucher,
    Database,
    EmailState,
    Grant,
    GrantStatus,
    SlackOutbox,
    VoucherState,
    VoucherType,
)

_CHUNK = 2000


def bench_conference(n: int, *, event: str | None = None) -> ConferenceConfig:
    """A conference of the run's own (its own Pretix event when `event` is given)."""
    code = f"bench{uuid.uuid4().hex[:8]}{n}"
    return ConferenceConfig(
        code=code,
        name=f"Bench Conference {n}",
        pretix_organizer="pycon",
        pretix_event=event or "pycon2026",
        pretix_quota=1,
        voucher_valid_until=dt.datetime(2030, 5, 31, tzinfo=dt.UTC),
        timezone="Europe/Rome",
        slack_channel="C0GRANTS",
    )


def register(db: Database, conferences: Sequence[ConferenceConfig]) -> dict[str, int]:
    """Store the conferences; their ids by code."""
    sync_conferences(db, Conferences({c.code: c for c in conferences}))
    with db.transaction() as session:
        rows = session.execute(
            select(Conference.code, Conference.id).where(
                Conference.code.in_([c.code for c in conferences])
            )
        ).all()
    return {str(code): int(ident) for code, ident in rows}


@dataclass(frozen=True)
class Person:
    """One stored grant and, when it has one, its voucher row."""

    grant: dict[str, Any]
    voucher: dict[str, Any] | None = None


def person(
    conference_id: int,
    n: int,
    *,
    status: GrantStatus,
    now: dt.datetime,
    confirmed_at: dt.datetime | None = None,
    deadline: dt.datetime | None = None,
    hold_reason: str | None = None,
    voucher: VoucherState | None = None,
    email: EmailState = EmailState.SENT,
    pretix_voucher_id: int | None = None,
    code: str | None = None,
) -> Person:
    """A grant (and voucher row) as the services would have stored it."""
    email_key = f"grantee{n}.{conference_id}@example.org"
    grant = {
        "conference_id": conference_id,
        "external_id": str(n),
        "full_name": f"Grantee {n}",
        "email": email_key,
        "email_key": email_key,
        "status": status,
        "previous_status": GrantStatus.WAITING_FOR_CONFIRMATION,
        "applicant_reply_sent_at": now - dt.timedelta(days=10),
        "applicant_reply_deadline": deadline,
        "source_updated_at": confirmed_at or now - dt.timedelta(days=10),
        "confirmed_at": confirmed_at,
        "hold_reason": hold_reason,
        "waits_for_staff": False,
        "created_at": now,
        "updated_at": now,
    }
    if voucher is None:
        return Person(grant)
    row = {
        "conference_id": conference_id,
        "email_key": email_key,
        "voucher_type": VoucherType.GRANT,
        "code": code or f"C{conference_id}X{n:010d}",
        "pretix_voucher_id": pretix_voucher_id,
        "state": voucher,
        "attempts": 1,
        "request_generation": 0,
        "email_state": email,
        "email_sent_at": now - dt.timedelta(days=1) if email is EmailState.SENT else None,
        "email_attempts": 1 if email is EmailState.SENT else 0,
        "email_generation": 0,
        "emails_sent": 1 if email is EmailState.SENT else 0,
        "created_at": now,
        "updated_at": now,
    }
    return Person(grant, row)


def store(db: Database, people: Iterable[Person]) -> int:
    """Insert the grants, then their voucher rows linked to them; how many grants."""
    batch: list[Person] = []
    stored = 0
    for item in people:
        batch.append(item)
        if len(batch) >= _CHUNK:
            stored += _store_chunk(db, batch)
            batch = []
    if batch:
        stored += _store_chunk(db, batch)
    return stored


def _store_chunk(db: Database, batch: list[Person]) -> int:
    with db.transaction() as session:
        ids = session.scalars(
            insert(Grant).returning(Grant.id, sort_by_parameter_order=True),
            [p.grant for p in batch],
        ).all()
        rows = [
            {**p.voucher, "grant_id": grant_id}
            for p, grant_id in zip(batch, ids, strict=True)
            if p.voucher is not None
        ]
        if rows:
            session.execute(insert(ConferenceVoucher), rows)
    return len(batch)


def analyze(db: Database) -> None:
    """Fresh planner statistics, as autovacuum would have them on a running database."""
    if db.is_postgres:
        with db.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE grants; ANALYZE conference_vouchers")
            )


def remove(db: Database, conference_ids: Iterable[int]) -> None:
    """Delete the benchmark's conferences and everything stored under them."""
    ids = list(conference_ids)
    with db.transaction() as session:
        grants = select(Grant.id).where(Grant.conference_id.in_(ids))
        session.execute(delete(SlackOutbox).where(SlackOutbox.grant_id.in_(grants)))
        session.execute(delete(AuditEvent).where(AuditEvent.conference_id.in_(ids)))
        session.execute(delete(AuditEvent).where(AuditEvent.grant_id.in_(grants)))
        session.execute(delete(ConferenceVoucher).where(ConferenceVoucher.conference_id.in_(ids)))
        session.execute(delete(Grant).where(Grant.conference_id.in_(ids)))
        session.execute(delete(Conference).where(Conference.id.in_(ids)))
