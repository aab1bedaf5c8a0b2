"""The one writer of a voucher row's states, leases, attempts, generations and email columns.

Every change is a named transition: one conditional UPDATE (or INSERT) that says whether it
won. A transition that lost changed nothing, and its caller must not act on the row: another
worker, a revoke or a person got there first. Nobody else writes these columns.

A request to Pretix is reserved as a `Ticket`: the state it runs in, the code, the request
generation and the nonce. Only the holder of a live ticket can record the answer, and a new
generation (a retry after a failure, a revoke) draws a new nonce, so its idempotency key is new.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from bot.pretix import EventRef, KeyScope
from bot.storage import (
    Conference,
    ConferenceVoucher,
    EmailState,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
    insert_ignoring_conflict,
    insert_many_ignoring_conflict,
)

CV = ConferenceVoucher
# Transitions are Core UPDATEs on the table: no ORM objects are involved, and the ORM's
# bulk-update machinery costs more CPU than the statement itself.
TABLE: Table = ConferenceVoucher.__table__  # type: ignore[assignment]  # it is a Table
GRANTS: Table = Grant.__table__  # type: ignore[assignment]
CONFERENCES: Table = Conference.__table__  # type: ignore[assignment]

# Voucher types whose email the bot sends: a co-speaker voucher is a discount, never
# announced as a free ticket (it is upgraded to a grant voucher first).
MAILABLE_TYPES = (VoucherType.GRANT, VoucherType.SPEAKER)


def new_nonce() -> str:
    """A fresh random nonce for one request generation."""
    return secrets.token_hex(16)


@dataclass(frozen=True, kw_only=True)
class Ticket:
    """A Pretix request reserved on a voucher row; its holder alone may record the answer."""

    voucher_id: int
    state: VoucherState  # the state the request runs in: creating, upgrading or revoking
    code: str
    generation: int
    nonce: str
    payload: dict[str, Any] | None = None  # the frozen body of a create

    def key_scope(self, event: EventRef) -> KeyScope:
        """The idempotency key scope of this request (event, row, generation and nonce)."""
        subject = f"{event.organizer}/{event.event}:v{self.voucher_id}:g{self.generation}"
        return KeyScope(subject=subject, nonce=self.nonce)

    def holds(self) -> ColumnElement[bool]:
        """SQL: the row is still in this ticket's request."""
        return and_(
            CV.id == self.voucher_id,
            CV.state == self.state,
            CV.code == self.code,
            CV.request_generation == self.generation,
            CV.request_nonce == self.nonce,
        )


def lease_over(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: nobody (alive) holds the row's Pretix lease."""
    return or_(CV.lease_expires_at.is_(None), CV.lease_expires_at <= now)


def email_due(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: the voucher email was never sent, nobody alive is sending it, and it can go out.

    It goes only to the address the voucher was reserved for (a grant whose email changed
    since waits for a person), and only while the grant is confirmed and not held.
    The claim and the reconciler's search share this one rule.
    """
    return _email_due(now)


def _email_due(now: Any) -> ColumnElement[bool]:
    # Core columns (no ORM plugin), so the claim can be one prebuilt statement; `now` is a
    # value or a bound parameter.
    lease = TABLE.c.email_lease_expires_at
    return and_(
        _EMAIL_DUE_ALWAYS,
        or_(_EMAIL_PENDING, and_(_EMAIL_SENDING, or_(lease.is_(None), lease <= now))),
    )


def _addressed_as_reserved() -> ColumnElement[bool]:
    # An alias of its own, so it never correlates with a Grant the caller joined.
    grant = GRANTS.alias("addressed_grant")
    return exists(
        select(grant.c.id)
        .where(
            grant.c.id == TABLE.c.grant_id,
            grant.c.email_key == TABLE.c.email_key,
            grant.c.email.is_not(None),
            grant.c.status == GrantStatus.CONFIRMED,
            grant.c.hold_reason.is_(None),
        )
        # OFFSET keeps Postgres from turning this into a join it may start from the grants
        # side: it stays a subplan, one primary-key probe per voucher row already chosen.
        # Without statistics (a new database, no autovacuum yet) the planner started from
        # every confirmed grant and probed the vouchers for each: a claim of ten emails cost
        # seconds of server CPU once a few thousand vouchers existed.
        .offset(0)
    )


# The parts of the rule that do not depend on the time, built once (building SQL
# expressions costs more CPU than running them on the hot path).
_EMAIL_DUE_ALWAYS = and_(
    TABLE.c.state == VoucherState.CREATED,
    TABLE.c.voucher_type.in_(MAILABLE_TYPES),
    TABLE.c.email_sent_at.is_(None),
    _addressed_as_reserved(),
)
_EMAIL_PENDING = TABLE.c.email_state == EmailState.PENDING
_EMAIL_SENDING = TABLE.c.email_state == EmailState.SENDING


def _won(session: Session, where: ColumnElement[bool], values: dict[str, Any]) -> bool:
    row = session.execute(update(TABLE).where(where).values(**values).returning(CV.id)).first()
    return row is not None


# --- reserving a Pretix request --------------------------------------------------------------


def reserve_new(
    session: Session,
    *,
    conference_id: int,
    email_key: str,
    grant_id: int,
    code: str,
    payload: dict[str, Any],
    lease_until: dt.datetime,
) -> Ticket | None:
    """Insert the person's grant voucher row in `creating`; None when the person has a row."""
    row = NewRow(
        conference_id=conference_id,
        email_key=email_key,
        grant_id=grant_id,
        code=code,
        payload=payload,
    )
    return reserve_many(session, [row], lease_until=lease_until).get(grant_id)


@dataclass(frozen=True, kw_only=True)
class NewRow:
    """A grant voucher row to reserve in a batch."""

    conference_id: int
    email_key: str
    grant_id: int
    code: str
    payload: dict[str, Any]


def reserve_many(
    session: Session, rows: list[NewRow], *, lease_until: dt.datetime
) -> dict[int, Ticket]:
    """Insert many grant voucher rows in `creating` with one statement; tickets by grant id.

    A person who has a row already gets none (the caller sends that grant the single way).
    """
    values = []
    # One order for every replica, so two batches over the same people never deadlock.
    for row in sorted(rows, key=lambda r: (r.conference_id, r.email_key)):
        values.append(
            {
                "conference_id": row.conference_id,
                "email_key": row.email_key,
                "grant_id": row.grant_id,
                "voucher_type": VoucherType.GRANT,
                "code": row.code,
                "state": VoucherState.CREATING,
                "lease_expires_at": lease_until,
                "email_state": EmailState.NOT_DUE,
                "request_nonce": new_nonce(),
                "request_payload": row.payload,
                "attempts": 0,
                "request_generation": 0,
                "email_attempts": 0,
                "email_generation": 0,
                "emails_sent": 0,
            }
        )
    inserted = insert_many_ignoring_conflict(
        session,
        CV,
        values,
        conflict=["conference_id", "email_key"],
        returning=[CV.id, CV.grant_id, CV.request_nonce],
    )
    by_grant = {row.grant_id: row for row in rows}
    return {
        grant_id: Ticket(
            voucher_id=voucher_id,
            state=VoucherState.CREATING,
            code=by_grant[grant_id].code,
            generation=0,
            nonce=nonce,
            payload=by_grant[grant_id].payload,
        )
        for voucher_id, grant_id, nonce in inserted
    }


def _begin(
    session: Session,
    row: ConferenceVoucher,
    *,
    state: VoucherState,
    now: dt.datetime,
    lease_until: dt.datetime,
    fresh: bool,
    payload: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Ticket | None:
    """Move the row (as the caller read it) into a request, if nobody changed it meanwhile.

    `fresh` starts a new request generation with a new nonce; otherwise the request resumes
    with the same key, so Pretix replays the answer of an attempt that did land.
    """
    generation = row.request_generation + 1 if fresh else row.request_generation
    nonce = new_nonce() if fresh or row.request_nonce is None else row.request_nonce
    code = (extra or {}).get("code", row.code)
    values: dict[str, Any] = {
        "state": state,
        "lease_expires_at": lease_until,
        "request_generation": generation,
        "request_nonce": nonce,
        **(extra or {}),
    }
    if fresh:
        values |= {"attempts": 0, "next_attempt_at": None, "last_error": None}
        if state is not VoucherState.REVOKING:  # a revoke keeps the create it may replay
            values["request_payload"] = payload
    else:
        payload = row.request_payload
    # Unchanged since the caller read it: the type too, so a speaker notification that
    # landed meanwhile makes an upgrade lose instead of rewriting a speaker's voucher.
    unchanged = and_(
        CV.id == row.id,
        CV.state == row.state,
        CV.code == row.code,
        CV.voucher_type == row.voucher_type,
        CV.original_type.is_(None)
        if row.original_type is None
        else CV.original_type == row.original_type,
        CV.request_generation == row.request_generation,
        lease_over(now),
    )
    if not _won(session, unchanged, values):
        return None
    return Ticket(
        voucher_id=row.id,
        state=state,
        code=code,
        generation=generation,
        nonce=nonce,
        payload=payload,
    )


def resume(
    session: Session, row: ConferenceVoucher, *, now: dt.datetime, lease_until: dt.datetime
) -> Ticket | None:
    """Take over a `creating` or `upgrading` row whose worker died or backed off."""
    return _begin(session, row, state=row.state, now=now, lease_until=lease_until, fresh=False)


def begin_upgrade(
    session: Session, row: ConferenceVoucher, *, now: dt.datetime, lease_until: dt.datetime
) -> Ticket | None:
    """Start upgrading a co-speaker voucher in Pretix to the grant terms."""
    return _begin(
        session, row, state=VoucherState.UPGRADING, now=now, lease_until=lease_until, fresh=True
    )


def begin_upgrades(
    session: Session,
    rows: Sequence[ConferenceVoucher],
    *,
    now: dt.datetime,
    lease_until: dt.datetime,
) -> dict[int, Ticket]:
    """`begin_upgrade` for many co-speaker rows in two statements; tickets by voucher id.

    Each row moves only if it is as the caller read it (as `begin_upgrade` requires); a row
    that changed meanwhile gets no ticket (the caller sends it the single way). Rows are
    updated in id order (a caller linking rows first links them in that order too), so two
    batches over the same people never deadlock.
    """
    if not rows:
        return {}
    fresh = {row.id: new_nonce() for row in rows}
    session.connection().execute(
        _BEGIN_UPGRADE,
        [
            {
                "u_id": row.id,
                "u_state": row.state.value,
                "u_code": row.code,
                "u_type": row.voucher_type.value,
                "u_original": row.original_type.value if row.original_type else None,
                "u_generation": row.request_generation,
                "u_next_generation": row.request_generation + 1,
                "u_nonce": fresh[row.id],
                "u_now": now,
                "u_until": lease_until,
            }
            for row in sorted(rows, key=lambda r: r.id)
        ],
    )
    # A random nonce of our own on the row, in the upgrading state: this batch moved it (the
    # UPDATE holds the row's lock until commit, so nobody changed it since).
    won = {
        voucher_id
        for voucher_id, nonce in session.execute(
            select(CV.id, CV.request_nonce).where(
                CV.id.in_(list(fresh)), CV.state == VoucherState.UPGRADING
            )
        )
        if fresh[voucher_id] == nonce
    }
    return {
        row.id: Ticket(
            voucher_id=row.id,
            state=VoucherState.UPGRADING,
            code=row.code,
            generation=row.request_generation + 1,
            nonce=fresh[row.id],
            payload=None,
        )
        for row in rows
        if row.id in won
    }


# `_begin` of an upgrade, for an executemany: built once, values bound per row.
_BEGIN_UPGRADE = (
    update(TABLE)
    .where(
        TABLE.c.id == bindparam("u_id"),
        TABLE.c.state == bindparam("u_state"),
        TABLE.c.code == bindparam("u_code"),
        TABLE.c.voucher_type == bindparam("u_type"),
        TABLE.c.original_type.is_not_distinct_from(
            bindparam("u_original", type_=TABLE.c.original_type.type)
        ),
        TABLE.c.request_generation == bindparam("u_generation"),
        or_(TABLE.c.lease_expires_at.is_(None), TABLE.c.lease_expires_at <= bindparam("u_now")),
    )
    .values(
        state=VoucherState.UPGRADING,
        lease_expires_at=bindparam("u_until"),
        request_generation=bindparam("u_next_generation"),
        request_nonce=bindparam("u_nonce"),
        attempts=0,
        next_attempt_at=None,
        last_error=None,
        request_payload=None,
    )
)


def retry_failed(
    session: Session,
    row: ConferenceVoucher,
    *,
    payload: dict[str, Any] | None,
    now: dt.datetime,
    lease_until: dt.datetime,
) -> Ticket | None:
    """Start a failed row's request again, as a new request (never a replay of the failure).

    `payload` is the create's new body (None for a co-speaker voucher's upgrade).
    """
    state = (
        VoucherState.UPGRADING
        if row.voucher_type is VoucherType.CO_SPEAKER
        else VoucherState.CREATING
    )
    return _begin(
        session, row, state=state, now=now, lease_until=lease_until, fresh=True, payload=payload
    )


def restart_after_revoke(
    session: Session,
    row: ConferenceVoucher,
    *,
    code: str,
    payload: dict[str, Any],
    now: dt.datetime,
    lease_until: dt.datetime,
) -> Ticket | None:
    """A grant confirmed again after its voucher was revoked gets a new grant voucher code.

    The old code is kept as `superseded_code`: a create for it may still have landed in
    Pretix after the revoke looked, and the new create deletes such a voucher first.
    """
    return _begin(
        session,
        row,
        state=VoucherState.CREATING,
        now=now,
        lease_until=lease_until,
        fresh=True,
        payload=payload,
        extra={
            "code": code,
            "superseded_code": row.code if row.pretix_voucher_id is None else None,
            "voucher_type": VoucherType.GRANT,
            "original_type": None,
            "pretix_voucher_id": None,
            "email_state": EmailState.NOT_DUE,
            "email_sent_at": None,
            "email_attempts": 0,
            "email_next_attempt_at": None,
            "email_last_error": None,
            "email_generation": row.email_generation + 1,
        },
    )


def begin_revoke(
    session: Session, row: ConferenceVoucher, *, now: dt.datetime, lease_until: dt.datetime
) -> Ticket | None:
    """Start deleting the row's voucher in Pretix; each revoke is a new request."""
    return _begin(
        session, row, state=VoucherState.REVOKING, now=now, lease_until=lease_until, fresh=True
    )


def stop_upgrade_for_speaker(session: Session, row: ConferenceVoucher, *, now: dt.datetime) -> bool:
    """The backend says a co-speaker voucher whose upgrade has not finished is a speaker's:
    the upgrade stops (a new generation, so its resumed request records nothing)."""
    return _won(
        session,
        and_(
            CV.id == row.id,
            CV.state.in_([VoucherState.UPGRADING, VoucherState.FAILED]),
            CV.voucher_type == VoucherType.CO_SPEAKER,
            CV.original_type.is_(None),
            CV.request_generation == row.request_generation,
            lease_over(now),
        ),
        {
            "voucher_type": VoucherType.SPEAKER,
            "state": VoucherState.CREATED,
            "request_generation": row.request_generation + 1,
            "request_nonce": new_nonce(),
            "lease_expires_at": None,
            "attempts": 0,
            "next_attempt_at": None,
            "last_error": None,
        },
    )


# --- recording what Pretix said -------------------------------------------------------------


# What every record of a voucher Pretix made or upgraded sets: its request is over.
_RECORDED: dict[str, Any] = {
    "state": VoucherState.CREATED,
    "lease_expires_at": None,
    "attempts": 0,
    "next_attempt_at": None,
    "last_error": None,
    "superseded_code": None,
}
# And an upgrade: the row becomes a grant voucher whose email goes out, even if a
# co-speaker one did.
_UPGRADED: dict[str, Any] = {
    "original_type": TABLE.c.voucher_type,
    "voucher_type": VoucherType.GRANT,
    "email_sent_at": None,
    "email_attempts": 0,
    "email_next_attempt_at": None,
    "email_last_error": None,
    "email_generation": TABLE.c.email_generation + 1,
    "email_state": case(
        (TABLE.c.grant_id.is_not(None), EmailState.PENDING), else_=EmailState.NOT_DUE
    ),
}
# A create's email is due unless an email for the row went out already.
_CREATED_EMAIL = case(
    (and_(TABLE.c.grant_id.is_not(None), TABLE.c.email_sent_at.is_(None)), EmailState.PENDING),
    else_=EmailState.NOT_DUE,
)


def record_created(
    session: Session, ticket: Ticket, *, pretix_voucher_id: int, code: str, upgraded: bool
) -> bool:
    """The voucher exists in Pretix with the grant terms; its email becomes due."""
    values: dict[str, Any] = {**_RECORDED, "pretix_voucher_id": pretix_voucher_id, "code": code}
    values |= _UPGRADED if upgraded else {"email_state": _CREATED_EMAIL}
    return _won(session, ticket.holds(), values)


def record_many_created(session: Session, made: list[tuple[Ticket, int, str]]) -> set[int]:
    """Record many creates (ticket, Pretix id, code) in two statements; the rows that are now
    recorded as those vouchers (a row no longer in its ticket's request is left alone)."""
    if not made:
        return set()
    session.execute(
        update(TABLE)
        .where(
            CV.id == bindparam("b_id"),
            CV.state == VoucherState.CREATING,
            CV.code == bindparam("b_code"),
            CV.request_generation == bindparam("b_generation"),
            CV.request_nonce == bindparam("b_nonce"),
        )
        .values(
            **_RECORDED,
            pretix_voucher_id=bindparam("b_pretix_id"),
            code=bindparam("b_new_code"),
            email_state=_CREATED_EMAIL,
        ),
        [
            {
                "b_id": ticket.voucher_id,
                "b_code": ticket.code,
                "b_generation": ticket.generation,
                "b_nonce": ticket.nonce,
                "b_pretix_id": pretix_id,
                "b_new_code": code,
            }
            for ticket, pretix_id, code in made
        ],
    )
    wanted = {ticket.voucher_id: (pretix_id, ticket.nonce) for ticket, pretix_id, _ in made}
    return {
        voucher_id
        for voucher_id, pretix_id, nonce in session.execute(
            select(CV.id, CV.pretix_voucher_id, CV.request_nonce).where(
                CV.id.in_(list(wanted)), CV.state == VoucherState.CREATED
            )
        )
        if wanted[voucher_id] == (pretix_id, nonce)
    }


def record_superseded_gone(session: Session, ticket: Ticket) -> bool:
    """The superseded code of a restarted row is not (or no longer) in Pretix."""
    return _won(session, ticket.holds(), {"superseded_code": None})


def record_transient_failure(
    session: Session,
    ticket: Ticket,
    *,
    reason: str,
    max_attempts: int,
    now: dt.datetime,
    backoff: Callable[[int], dt.timedelta],
) -> tuple[int, dt.datetime | None] | None:
    """Count a failed attempt: (attempts, retry time), or at `max_attempts` (attempts, None)
    and the row fails for good. None when the request is no longer this ticket's."""
    current = session.execute(
        select(CV.attempts).where(ticket.holds()).with_for_update()
    ).scalar_one_or_none()
    if current is None:
        return None
    attempts = current + 1
    retry_at = None if attempts >= max_attempts else now + backoff(attempts)
    _won(
        session,
        ticket.holds(),
        {
            "attempts": attempts,
            "last_error": reason,
            "lease_expires_at": None,
            "next_attempt_at": retry_at,
            "state": VoucherState.FAILED if retry_at is None else ticket.state,
        },
    )
    return attempts, retry_at


def settle(session: Session, ticket: Ticket, *, state: VoucherState, reason: str) -> bool:
    """End the request in `failed` or `needs_review`, with the reason for a person."""
    assert state in (VoucherState.FAILED, VoucherState.NEEDS_REVIEW)
    return _won(
        session,
        ticket.holds(),
        {"state": state, "last_error": reason, "lease_expires_at": None, "next_attempt_at": None},
    )


# When a revoked code whose create was never recorded is looked up again: a request can
# stay in flight at Pretix (a batch still running), never longer than its key lives (24 h).
TOMBSTONE_CHECKS = (
    dt.timedelta(minutes=1),
    dt.timedelta(minutes=10),
    dt.timedelta(hours=1),
    dt.timedelta(hours=6),
    dt.timedelta(hours=25),
)


def finish_revoke(session: Session, ticket: Ticket, *, tombstone: bool, now: dt.datetime) -> bool:
    """The voucher is gone from Pretix.

    With `tombstone` (its create was never recorded), the code is kept as `superseded_code`
    and looked up again later (`TOMBSTONE_CHECKS`): a create still in flight could land.
    """
    values: dict[str, Any] = {
        "state": VoucherState.REVOKED,
        "last_error": None,
        "lease_expires_at": None,
    }
    if tombstone:
        values |= {
            "superseded_code": ticket.code,
            "attempts": 0,
            "next_attempt_at": now + TOMBSTONE_CHECKS[0],
        }
    return _won(session, ticket.holds(), values)


def tombstones_due(session: Session, *, now: dt.datetime, limit: int) -> list[ConferenceVoucher]:
    """Revoked rows whose code is due to be looked up again, taken from the other replicas."""
    rows = list(
        session.scalars(
            select(CV)
            .where(
                CV.state == VoucherState.REVOKED,
                CV.superseded_code.is_not(None),
                CV.next_attempt_at <= now,
            )
            .order_by(CV.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    _push(session, [row.id for row in rows], {"next_attempt_at": now + dt.timedelta(minutes=5)})
    return rows


def tombstone_checked(session: Session, row: ConferenceVoucher, *, now: dt.datetime) -> bool:
    """One more look-up of a revoked code done; the last one forgets it."""
    checks = row.attempts + 1
    values: dict[str, Any] = (
        {"attempts": checks, "next_attempt_at": now + TOMBSTONE_CHECKS[checks]}
        if checks < len(TOMBSTONE_CHECKS)
        else {"attempts": 0, "next_attempt_at": None, "superseded_code": None}
    )
    return _won(
        session,
        and_(
            CV.id == row.id,
            CV.state == VoucherState.REVOKED,
            CV.superseded_code == row.superseded_code,
        ),
        values,
    )


def abandon_revoke(session: Session, ticket: Ticket, *, back_to: VoucherState, reason: str) -> bool:
    """The voucher stays (used, or Pretix unavailable): the row returns to where it was."""
    return _won(
        session,
        ticket.holds(),
        {"state": back_to, "last_error": reason, "lease_expires_at": None},
    )


def extend_lease(session: Session, ticket: Ticket, *, now: dt.datetime, until: dt.datetime) -> bool:
    """Hold the row's request a while longer, right before its Pretix call; False when the
    lease ran out already (another worker may have taken the row, or a person changed it)."""
    return _won(
        session,
        and_(ticket.holds(), CV.lease_expires_at.is_not(None), CV.lease_expires_at > now),
        {"lease_expires_at": until},
    )


def push_back(session: Session, voucher_ids: list[int], *, until: dt.datetime) -> None:
    """Hide rows this replica is about to work on from the other replicas' next pass."""
    _push(session, voucher_ids, {"next_attempt_at": until})


def _push(session: Session, voucher_ids: list[int], values: dict[str, Any]) -> None:
    if voucher_ids:
        session.execute(update(TABLE).where(CV.id.in_(voucher_ids)).values(**values))


# --- the person's row and its grant -----------------------------------------------------------


def link_grant(session: Session, *, voucher_id: int, grant_id: int) -> bool:
    """A voucher made elsewhere (a speaker's or co-speaker's) meets the person's grant."""
    return _won(session, and_(CV.id == voucher_id, CV.grant_id.is_(None)), {"grant_id": grant_id})


def make_email_due(session: Session, *, voucher_id: int) -> bool:
    """A created voucher whose email never went out: it is due now."""
    return _won(
        session,
        and_(
            CV.id == voucher_id,
            CV.state == VoucherState.CREATED,
            CV.voucher_type.in_(MAILABLE_TYPES),
            CV.email_sent_at.is_(None),
            CV.email_state == EmailState.NOT_DUE,
        ),
        {"email_state": EmailState.PENDING},
    )


def record_external_voucher(
    session: Session,
    *,
    conference_id: int,
    email_key: str,
    kind: VoucherType,
    code: str,
    pretix_voucher_id: int | None,
    email_sent_at: dt.datetime | None,
) -> int | None:
    """Insert a voucher made elsewhere (a speaker voucher); None when the person has a row."""
    return insert_ignoring_conflict(
        session,
        CV,
        {
            "conference_id": conference_id,
            "email_key": email_key,
            "voucher_type": kind,
            "code": code,
            "pretix_voucher_id": pretix_voucher_id,
            "state": VoucherState.CREATED,
            "email_state": EmailState.SENT if email_sent_at else EmailState.NOT_DUE,
            "email_sent_at": email_sent_at,
        },
        conflict=["conference_id", "email_key"],
    )


def merge_external_voucher(
    session: Session,
    *,
    voucher_id: int,
    pretix_voucher_id: int | None,
    kind: VoucherType,
    raise_to: VoucherType | None,
    email_sent_at: dt.datetime | None,
) -> bool:
    """What a later notification adds to a known voucher made elsewhere; True if it changed.

    Its email date only counts for a row still of the notified type and never changed by the
    bot: the email of a voucher the bot upgraded is the bot's own (the grant email).
    """
    changed = False
    if pretix_voucher_id is not None:
        changed |= _won(
            session,
            and_(CV.id == voucher_id, CV.pretix_voucher_id.is_(None)),
            {"pretix_voucher_id": pretix_voucher_id},
        )
    if raise_to is not None:
        changed |= _won(
            session,
            and_(
                CV.id == voucher_id,
                CV.state == VoucherState.CREATED,
                CV.voucher_type == VoucherType.CO_SPEAKER,
                CV.original_type.is_(None),
            ),
            {"voucher_type": raise_to},
        )
    if email_sent_at is not None:
        changed |= _won(
            session,
            and_(
                CV.id == voucher_id,
                CV.email_sent_at.is_(None),
                CV.voucher_type == kind,
                CV.original_type.is_(None),
                CV.state == VoucherState.CREATED,
            ),
            {"email_sent_at": email_sent_at, "email_state": EmailState.SENT},
        )
    return changed


# --- the voucher email ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EmailClaim:
    """A won claim on a voucher's email: what to send, to whom, as which generation."""

    voucher_id: int
    code: str
    kind: VoucherType
    generation: int
    to_name: str
    to_address: str
    grant_external_id: str
    conference_id: int
    conference_code: str


def claim_email(
    session: Session,
    *,
    voucher_id: int,
    now: dt.datetime,
    lease_until: dt.datetime,
    resend: bool,
) -> EmailClaim | None:
    """Claim the email (or, with `resend`, a new sending of it); None when not ours."""
    if resend:
        lease = TABLE.c.email_lease_expires_at
        due = and_(
            TABLE.c.state == VoucherState.CREATED,
            TABLE.c.voucher_type.in_(MAILABLE_TYPES),
            or_(TABLE.c.email_state != EmailState.SENDING, lease.is_(None), lease <= now),
            _addressed_as_reserved(),
        )
        statement = _claim_statement(due, email_generation=TABLE.c.email_generation + 1)
    else:
        statement = _CLAIM_DUE
    claims = _claim(session, [voucher_id], statement, now=now, lease_until=lease_until)
    return claims[0] if claims else None


def claim_emails(
    session: Session,
    *,
    voucher_ids: Sequence[int],
    now: dt.datetime,
    lease_until: dt.datetime,
) -> list[EmailClaim]:
    """Claim the due emails among these vouchers in one UPDATE; the claims won, in the order
    of `voucher_ids`."""
    claims = {
        claim.voucher_id: claim
        for claim in _claim(
            session, list(voucher_ids), _CLAIM_DUE, now=now, lease_until=lease_until
        )
    }
    return [claims[voucher_id] for voucher_id in voucher_ids if voucher_id in claims]


def give_back_email(session: Session, claim: EmailClaim) -> None:
    """A claim that will not be sent now goes back to pending, unsent, no attempt counted."""
    session.execute(
        update(TABLE)
        .where(_claimed(claim))
        .values(email_state=EmailState.PENDING, email_lease_expires_at=None)
    )


def _claim_statement(due: ColumnElement[bool], **values: Any) -> Any:
    """The claim UPDATE of the vouchers `c_ids` (an expanding parameter) that are `due`."""
    return (
        update(TABLE)
        .where(TABLE.c.id.in_(bindparam("c_ids", expanding=True)), due)
        .values(
            email_state=EmailState.SENDING,
            email_lease_expires_at=bindparam("c_until", type_=TABLE.c.email_lease_expires_at.type),
            **values,
        )
        .returning(
            TABLE.c.id,
            TABLE.c.code,
            TABLE.c.voucher_type,
            TABLE.c.email_generation,
            TABLE.c.conference_id,
            TABLE.c.grant_id,
            TABLE.c.email_key,
        )
    )


# Built once, Core only: a batch claims ten emails per statement, and building and keying
# this UPDATE cost more CPU than running it.
_CLAIM_DUE = _claim_statement(
    _email_due(bindparam("c_now", type_=TABLE.c.email_lease_expires_at.type))
)
_ADDRESSES = (
    select(
        GRANTS.c.id,
        GRANTS.c.email_key,
        GRANTS.c.full_name,
        GRANTS.c.email,
        GRANTS.c.external_id,
        CONFERENCES.c.code,
    )
    .join(CONFERENCES, CONFERENCES.c.id == GRANTS.c.conference_id)
    .where(GRANTS.c.id.in_(bindparam("a_ids", expanding=True)))
)


def _claim(
    session: Session,
    voucher_ids: list[int],
    statement: Any,
    *,
    now: dt.datetime,
    lease_until: dt.datetime,
) -> list[EmailClaim]:
    connection = session.connection()
    rows = connection.execute(
        statement, {"c_ids": voucher_ids, "c_now": now, "c_until": lease_until}
    ).all()
    if not rows:
        return []
    # The claim required the grant's email to be the one the voucher was reserved for; read
    # it with that same condition, so an address changed this instant is never used.
    grants = {
        grant.id: grant
        for grant in connection.execute(
            _ADDRESSES, {"a_ids": sorted({row.grant_id for row in rows})}
        )
    }
    claims: list[EmailClaim] = []
    lost: list[EmailClaim] = []
    for row in rows:
        grant = grants.get(row.grant_id)
        claim = EmailClaim(
            voucher_id=row.id,
            code=row.code,
            kind=VoucherType(row.voucher_type),
            generation=row.email_generation,
            conference_id=row.conference_id,
            conference_code=grant.code if grant else "",
            to_name=grant.full_name if grant else "",
            to_address=(grant.email if grant and grant.email_key == row.email_key else None) or "",
            grant_external_id=grant.external_id if grant else "",
        )
        (claims if claim.to_address else lost).append(claim)
    for claim in lost:
        give_back_email(session, claim)
    return claims


def record_email_sent(session: Session, claim: EmailClaim, *, now: dt.datetime) -> bool:
    """The SMTP server accepted the message."""
    found = (
        session.connection()
        .execute(  # a Core statement: no ORM step needed
            _RECORD_SENT,
            {"r_id": claim.voucher_id, "r_generation": claim.generation, "r_now": now},
        )
        .first()
    )
    return found is not None


# Built once: it runs once per email, and building and keying an UPDATE costs more CPU than
# sending it to the database. Core columns only (no ORM plugin), values bound per call.
_RECORD_SENT = (
    update(TABLE)
    .where(
        TABLE.c.id == bindparam("r_id"),
        TABLE.c.email_state == EmailState.SENDING,
        TABLE.c.email_generation == bindparam("r_generation"),
    )
    .values(
        email_state=EmailState.SENT,
        email_sent_at=bindparam("r_now"),
        emails_sent=TABLE.c.emails_sent + 1,
        email_lease_expires_at=None,
        email_attempts=0,
        email_next_attempt_at=None,
        email_last_error=None,
    )
    .returning(TABLE.c.id)
)


def release_email(
    session: Session,
    claim: EmailClaim,
    *,
    error: str,
    permanent: bool,
    max_attempts: int,
    retry_at: dt.datetime,
) -> EmailState | None:
    """Give a failed send back: retry later, stop for good, or (a resend) keep `sent`."""
    attempts = CV.email_attempts + 1
    state = case(
        (CV.email_sent_at.is_not(None), EmailState.SENT),
        (or_(attempts >= max_attempts, true() if permanent else false()), EmailState.FAILED),
        else_=EmailState.PENDING,
    )
    row = session.execute(
        update(CV)
        .where(_claimed(claim))
        .values(
            email_attempts=attempts,
            email_last_error=error,
            email_lease_expires_at=None,
            email_state=state,
            email_next_attempt_at=case(
                (state == EmailState.PENDING, retry_at), else_=CV.email_next_attempt_at
            ),
        )
        .returning(CV.email_state)
        .execution_options(synchronize_session=False)
    ).first()
    return None if row is None else EmailState(row[0])


def _claimed(claim: EmailClaim) -> ColumnElement[bool]:
    return and_(
        CV.id == claim.voucher_id,
        CV.email_state == EmailState.SENDING,
        CV.email_generation == claim.generation,
    )


def reopen_failed_email(session: Session, *, conference_id: int, email_key: str) -> bool:
    """A staff Retry makes an email that gave up due again."""
    return _won(
        session,
        and_(
            CV.conference_id == conference_id,
            CV.email_key == email_key,
            CV.state == VoucherState.CREATED,
            CV.email_state == EmailState.FAILED,
            CV.email_sent_at.is_(None),
        ),
        {"email_state": EmailState.PENDING, "email_attempts": 0, "email_next_attempt_at": None},
    )


def reopen_for_retry(session: Session, *, conference_id: int, email_key: str) -> bool:
    """A person looked at a row waiting for review and asks to try again: it becomes failed,
    which a staff retry starts as a new request."""
    return _won(
        session,
        and_(
            CV.conference_id == conference_id,
            CV.email_key == email_key,
            CV.state == VoucherState.NEEDS_REVIEW,
        ),
        {"state": VoucherState.FAILED},
    )


def push_back_emails(session: Session, voucher_ids: list[int], *, until: dt.datetime) -> None:
    """Hide due emails this replica is about to send from the other replicas' next pass."""
    _push(session, voucher_ids, {"email_next_attempt_at": until})
