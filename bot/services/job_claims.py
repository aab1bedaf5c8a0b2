"""Claims of periodic job runs: one bot process runs a job for a period, however many run.

Each replica's scheduler fires the same jobs; before doing the work a job claims its period
(a row keyed by job name and period, e.g. `digest` / `pycon2026:2026-05-02`) with an INSERT
that ignores a conflict. The process whose INSERT made the row does the work; every other
one sees nothing inserted and skips it. The same on Postgres and SQLite.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import delete

from bot.storage import Database, JobClaim, insert_many_ignoring_conflict, utcnow

T = TypeVar("T")


def process_name() -> str:
    """Who claims: this host and process id, as the `claimed_by` of a claim."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def claim_run(db: Database, *, job: str, key: str, by: str, now: dt.datetime | None = None) -> bool:
    """Claim the run of `job` for the period `key`: True for the one process that got it."""
    with db.transaction() as session:
        inserted = insert_many_ignoring_conflict(
            session,
            JobClaim,
            [{"name": job, "key": key, "claimed_by": by, "claimed_at": now or utcnow()}],
            conflict=["name", "key"],
            returning=[JobClaim.name],
        )
    return bool(inserted)


def release_run(db: Database, *, job: str, key: str, by: str) -> bool:
    """Give a claim back (the work failed before anything was done), so a later try may run.

    Only the claimant's own claim is released; True when it was.
    """
    with db.transaction() as session:
        gone = session.execute(
            delete(JobClaim)
            .where(JobClaim.name == job, JobClaim.key == key, JobClaim.claimed_by == by)
            .returning(JobClaim.name)
        ).all()
    return bool(gone)


@dataclass(frozen=True)
class Ran(Generic[T]):
    """What a claimed run returned (`run_claimed` returns None when it did not run)."""

    value: T


def run_claimed(
    db: Database,
    *,
    job: str,
    key: str,
    by: str,
    work: Callable[[], T],
    now: dt.datetime | None = None,
) -> Ran[T] | None:
    """Run `work` if this process claims (`job`, `key`); None when another one has.

    When `work` raises, the claim is given back (and the error raised), so a later pass of
    any process may try again.
    """
    if not claim_run(db, job=job, key=key, by=by, now=now):
        return None
    try:
        return Ran(work())
    except BaseException:
        release_run(db, job=job, key=key, by=by)
        raise
