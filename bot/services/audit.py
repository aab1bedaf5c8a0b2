"""The append-only audit log: who did what, from where, and how it ended."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import insert
from sqlalchemy.orm import Session

from bot.services.actors import Actor
from bot.storage import AuditEvent, Database, utcnow

log = structlog.get_logger(__name__)


def add_audit_event(
    session: Session,
    *,
    actor: Actor,
    action: str,
    outcome: str,
    conference_id: int | None = None,
    grant_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit event inside the caller's transaction."""
    session.add(
        AuditEvent(
            actor=actor.label,
            source=actor.source,
            action=action,
            outcome=outcome,
            conference_id=conference_id,
            grant_id=grant_id,
            detail=detail,
        )
    )
    # The detail (voucher codes, addresses) stays in the audit table: a code is a free ticket
    # and log pipelines are read by more people than the database.
    log.info("audit", actor=actor.label, action=action, outcome=outcome, grant_id=grant_id)


def write_audit_event(
    db: Database,
    *,
    actor: Actor,
    action: str,
    outcome: str,
    conference_id: int | None = None,
    grant_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit event in a transaction of its own."""
    with db.transaction() as session:
        add_audit_event(
            session,
            actor=actor,
            action=action,
            outcome=outcome,
            conference_id=conference_id,
            grant_id=grant_id,
            detail=detail,
        )


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One audit event to append."""

    actor: Actor
    action: str
    outcome: str
    conference_id: int | None = None
    grant_id: int | None = None
    detail: dict[str, Any] | None = None


def write_audit_events(db: Database, records: Sequence[AuditRecord]) -> None:
    """Append many audit events in one transaction and one INSERT (a batch, a no-op pass)."""
    if not records:
        return
    with db.transaction() as session:
        session.execute(
            insert(AuditEvent),
            [
                {
                    "occurred_at": utcnow(),
                    "actor": r.actor.label,
                    "source": r.actor.source,
                    "action": r.action,
                    "outcome": r.outcome,
                    "conference_id": r.conference_id,
                    "grant_id": r.grant_id,
                    "detail": r.detail,
                }
                for r in records
            ],
        )
    for r in records:
        log.info(
            "audit", actor=r.actor.label, action=r.action, outcome=r.outcome, grant_id=r.grant_id
        )
