"""Database schema (SQLAlchemy 2 typed models), engine set-up and short transactions."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    false,
    func,
    make_url,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC timestamp on every backend (SQLite forgets the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return _as_utc(value)

    def result_processor(
        self, dialect: Dialect, coltype: Any
    ) -> Callable[[Any], dt.datetime | None]:
        # One call per value instead of TypeDecorator's two (a digest reads thousands).
        impl = self.impl_instance.result_processor(dialect, coltype)
        if impl is None:
            return _as_utc
        return lambda value: _as_utc(impl(value))


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """The same moment in UTC; a naive value (SQLite) is UTC already."""
    if value is None:
        return None
    zone = value.tzinfo
    if zone is dt.UTC:  # what psycopg gives on a UTC session (see create_db_engine)
        return value
    if zone is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class GrantStatus(enum.StrEnum):
    """Grant statuses as the conference backend names them."""

    PENDING = "pending"
    REJECTED = "rejected"
    APPROVED = "approved"
    WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"
    CONFIRMED = "confirmed"
    REFUSED = "refused"
    WAITING_LIST = "waiting_list"
    WAITING_LIST_MAYBE = "waiting_list_maybe"
    DIDNT_ATTEND = "didnt_attend"


# Where each status stands in a grant's life. Notifications are ordered by `updated_at`; when
# two carry the same `updated_at`, only a move to a LATER stage applies ("forward"): a
# decision follows the review, the grantee's reply follows the offer, attendance follows the
# reply. The waiting lists come before the decision they wait for, the "maybe" list before
# the list. Statuses at one stage are alternatives (confirmed or refused, approved or
# rejected): on a tie neither replaces the other and what is stored stays, so a repeated or
# crossed delivery can never move a grant back, nor flip it between the two.
LIFECYCLE_STAGE: dict[GrantStatus, int] = {
    GrantStatus.PENDING: 0,
    GrantStatus.WAITING_LIST_MAYBE: 1,
    GrantStatus.WAITING_LIST: 2,
    GrantStatus.APPROVED: 3,
    GrantStatus.REJECTED: 3,
    GrantStatus.WAITING_FOR_CONFIRMATION: 4,
    GrantStatus.CONFIRMED: 5,
    GrantStatus.REFUSED: 5,
    GrantStatus.DIDNT_ATTEND: 6,
}


def moves_forward(stored: GrantStatus, incoming: GrantStatus) -> bool:
    """Whether `incoming` is at a later stage of the grant lifecycle than `stored`."""
    return LIFECYCLE_STAGE[incoming] > LIFECYCLE_STAGE[stored]


def stale_reason(
    *, stored_at: dt.datetime, stored: GrantStatus, updated_at: dt.datetime, status: GrantStatus
) -> str | None:
    """Why a notification must not change a stored grant, or None when it may.

    An older one never applies; one with the same `updated_at` applies only when it moves
    the grant forward (`moves_forward`).
    """
    if updated_at < stored_at:
        return (
            f"older than what is stored ({updated_at:%Y-%m-%d %H:%M} < {stored_at:%Y-%m-%d %H:%M})"
        )
    if updated_at == stored_at and not moves_forward(stored, status):
        return (
            f"from the same time as what is stored ({stored_at:%Y-%m-%d %H:%M:%S}) and "
            f"{status.value} is not a step forward from {stored.value}"
        )
    return None


class VoucherType(enum.StrEnum):
    """What a conference voucher was made for."""

    SPEAKER = "speaker"
    CO_SPEAKER = "co_speaker"
    GRANT = "grant"


class VoucherState(enum.StrEnum):
    """Where a voucher row is in its life; every non-final state is unfinished work."""

    CREATING = "creating"  # reserved with a code; the Pretix create may or may not have happened
    UPGRADING = "upgrading"  # co-speaker voucher being changed to grant terms in Pretix
    CREATED = "created"  # exists in Pretix with the terms its type says
    NEEDS_REVIEW = "needs_review"  # a person must decide (e.g. co-speaker voucher already used)
    FAILED = "failed"  # gave up after retries or a permanent error; a staff retry restarts it
    REVOKING = "revoking"  # being deleted in Pretix
    REVOKED = "revoked"  # deleted in Pretix


UNFINISHED_VOUCHER_STATES = (VoucherState.CREATING, VoucherState.UPGRADING, VoucherState.REVOKING)


class EmailState(enum.StrEnum):
    """Delivery of the voucher email for one voucher row."""

    NOT_DUE = "not_due"  # nothing to send (e.g. a speaker voucher with no grant)
    PENDING = "pending"  # due, not claimed
    SENDING = "sending"  # claimed by a worker under a lease
    SENT = "sent"
    FAILED = "failed"  # gave up after retries; a staff resend restarts it


class BulkStatus(enum.StrEnum):
    """A bulk issuance request, from preview to done."""

    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    RUNNING = "running"
    DONE = "done"


class OutboxState(enum.StrEnum):
    """A Slack status message waiting to be posted."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Source(enum.StrEnum):
    """Where a request came from, for the audit log."""

    WEBHOOK = "webhook"
    IMPORT = "import"
    SLASH_COMMAND = "slash_command"
    BUTTON = "button"
    CLI = "cli"
    RECONCILER = "reconciler"
    SCHEDULER = "scheduler"


E = TypeVar("E", bound=enum.StrEnum)
_MISSING: Any = object()


class StrEnumColumn(TypeDecorator[E]):
    """A string column holding one of a StrEnum's values."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E], length: int = 32) -> None:
        super().__init__(length=length)
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None]:
        # A dict lookup per value (a member or its string: they hash alike), not
        # TypeDecorator's wrapper around an Enum call; an unknown value still raises.
        values: dict[str, str] = {m.value: m.value for m in self.enum_type}
        impl = self.impl_instance.bind_processor(dialect)
        enum_type = self.enum_type

        def process(value: Any) -> str | None:
            if value is None:
                return None
            found = values.get(value)
            if found is None:
                found = enum_type(value).value  # not a member: ValueError
            return found if impl is None else impl(found)

        return process

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], E | None]:
        # A dict lookup per value, not TypeDecorator's wrapper around an Enum call.
        members: dict[str | None, E | None] = {m.value: m for m in self.enum_type}
        members[None] = None
        impl = self.impl_instance.result_processor(dialect, coltype)
        enum_type = self.enum_type

        def process(value: Any) -> E | None:
            if impl is not None:
                value = impl(value)
            found = members.get(value, _MISSING)
            return enum_type(value) if found is _MISSING else found  # unknown: ValueError

        return process


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a stable constraint naming convention (Alembic needs names)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class Timestamped:
    """Created and updated times, set by the application clock."""

    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Conference(Timestamped, Base):
    """A conference as configured; rows are synced from the configuration file at start."""

    __tablename__ = "conferences"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    pretix_organizer: Mapped[str] = mapped_column(String(100))
    pretix_event: Mapped[str] = mapped_column(String(100))
    pretix_quota_id: Mapped[int | None]
    pretix_item_id: Mapped[int | None]
    voucher_valid_until: Mapped[dt.datetime | None]
    timezone: Mapped[str] = mapped_column(String(64))
    slack_channel: Mapped[str | None] = mapped_column(String(40))


class Grant(Timestamped, Base):
    """A financial-aid grant as the conference backend last described it."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("conference_id", "external_id"),
        Index("ix_grants_conference_email", "conference_id", "email_key"),
        # The digest reads one conference's grants of one status per section.
        Index("ix_grants_conference_status", "conference_id", "status", "confirmed_at"),
        Index("ix_grants_status", "status"),
        Index("ix_grants_external_id", "external_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conference_id: Mapped[int] = mapped_column(ForeignKey("conferences.id"))
    external_id: Mapped[str] = mapped_column(String(64))
    full_name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320))
    email_key: Mapped[str | None] = mapped_column(String(320))
    slack_user_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[GrantStatus] = mapped_column(StrEnumColumn(GrantStatus, 40))
    previous_status: Mapped[GrantStatus | None] = mapped_column(StrEnumColumn(GrantStatus, 40))
    approved_type: Mapped[str | None] = mapped_column(String(40))
    applicant_reply_sent_at: Mapped[dt.datetime | None]
    applicant_reply_deadline: Mapped[dt.datetime | None]
    source_updated_at: Mapped[dt.datetime]
    confirmed_at: Mapped[dt.datetime | None]
    hold_reason: Mapped[str | None] = mapped_column(Text)
    admin_url: Mapped[str | None] = mapped_column(Text)
    reimbursements: Mapped[list[Any] | None]
    # Imported with `--no-provision`: neither the webhook path nor the reconciler provisions
    # it; `/voucher issue` or a bulk run does (and clears this).
    waits_for_staff: Mapped[bool] = mapped_column(default=False, server_default=false())
    # A held confirmation closed by staff without a voucher (`held_dismiss`): who, when, why.
    dismissed_at: Mapped[dt.datetime | None]
    dismissed_by: Mapped[str | None] = mapped_column(String(100))
    dismiss_reason: Mapped[str | None] = mapped_column(Text)


class ConferenceVoucher(Timestamped, Base):
    """The one voucher a person has at a conference, and the state of its provisioning."""

    __tablename__ = "conference_vouchers"
    __table_args__ = (
        UniqueConstraint("conference_id", "email_key"),
        UniqueConstraint("conference_id", "code"),
        Index("ix_conference_vouchers_state_next", "state", "next_attempt_at"),
        Index("ix_conference_vouchers_email_state_next", "email_state", "email_next_attempt_at"),
        Index("ix_conference_vouchers_grant_id", "grant_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conference_id: Mapped[int] = mapped_column(ForeignKey("conferences.id"))
    email_key: Mapped[str] = mapped_column(String(320))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id", ondelete="SET NULL"))
    voucher_type: Mapped[VoucherType] = mapped_column(StrEnumColumn(VoucherType, 16))
    original_type: Mapped[VoucherType | None] = mapped_column(StrEnumColumn(VoucherType, 16))
    code: Mapped[str] = mapped_column(String(255))
    pretix_voucher_id: Mapped[int | None]
    state: Mapped[VoucherState] = mapped_column(StrEnumColumn(VoucherState, 20))
    lease_expires_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Bumped whenever a failed row is tried again (or revoked): part of every Pretix
    # idempotency key, so a request fixed after a 4xx is a new request to Pretix.
    request_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    # A random value drawn with each request generation and part of every idempotency key:
    # two bot databases that share one Pretix token (a staging copy, a restore) number their
    # rows alike, and Pretix would replay one database's answer to the other.
    request_nonce: Mapped[str | None] = mapped_column(String(32))
    # The code a revoked voucher had before the grant was confirmed again: a create for it may
    # have landed in Pretix after the revoke looked, so the next create deletes it first.
    superseded_code: Mapped[str | None] = mapped_column(String(255))
    # The body of the create request reserved for this generation, frozen: a resumed create
    # (after a crash or a timeout) sends exactly the same request with the same key, and a
    # revoke can replay it to learn whether it landed.
    request_payload: Mapped[dict[str, Any] | None]
    email_state: Mapped[EmailState] = mapped_column(StrEnumColumn(EmailState, 16))
    email_sent_at: Mapped[dt.datetime | None]
    email_lease_expires_at: Mapped[dt.datetime | None]
    email_attempts: Mapped[int] = mapped_column(default=0)
    email_next_attempt_at: Mapped[dt.datetime | None]
    email_last_error: Mapped[str | None] = mapped_column(Text)
    email_generation: Mapped[int] = mapped_column(default=0)
    emails_sent: Mapped[int] = mapped_column(default=0)


class BulkRequest(Timestamped, Base):
    """A staff request to issue many vouchers at once, waiting for a second person's approval.

    Its frozen candidate list is `BulkItem` rows; `status` moves awaiting_approval ->
    approved -> running -> done, or to rejected / expired, each move a conditional UPDATE.
    """

    __tablename__ = "bulk_requests"
    __table_args__ = (Index("ix_bulk_requests_status", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conference_id: Mapped[int] = mapped_column(ForeignKey("conferences.id"))
    requested_by: Mapped[str] = mapped_column(String(64))
    status: Mapped[BulkStatus] = mapped_column(StrEnumColumn(BulkStatus, 24))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime]
    slack_channel: Mapped[str | None] = mapped_column(String(40))
    slack_ts: Mapped[str | None] = mapped_column(String(40))
    summary: Mapped[dict[str, Any] | None]
    # The request this one retries (`bulk_retry_failed`), if any.
    retry_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("bulk_requests.id", ondelete="SET NULL")
    )
    # Counts by preview branch when the list was frozen, and by outcome while it runs.
    counts: Mapped[dict[str, Any] | None]
    progress: Mapped[dict[str, Any] | None]
    # The runner's lease: a crashed run is taken over once it lapses, and resumes.
    run_lease_expires_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class BulkItemState(enum.StrEnum):
    """One grantee of a bulk request."""

    PENDING = "pending"  # frozen, not run yet
    DONE = "done"  # provisioned (or found done) by the run
    SKIPPED = "skipped"  # not due at preview, or changed since: nothing done
    FAILED = "failed"  # the run tried and failed; `bulk_retry_failed` takes these


class BulkItem(Base):
    """One grantee frozen into a bulk request at preview time, and what the run did for them."""

    __tablename__ = "bulk_items"
    __table_args__ = (
        UniqueConstraint("request_id", "grant_id"),
        Index("ix_bulk_items_request_state", "request_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("bulk_requests.id", ondelete="CASCADE"))
    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"))
    position: Mapped[int]
    branch: Mapped[str] = mapped_column(String(32))  # the preview branch
    email_key: Mapped[str | None] = mapped_column(String(320))  # the address at preview
    state: Mapped[BulkItemState] = mapped_column(StrEnumColumn(BulkItemState, 16))
    result: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)


class JobClaim(Base):
    """A periodic job's run claimed by one bot process: (job, key) is run at most once.

    The key names the period, e.g. a conference and its local date for the digest; the first
    process to insert the row runs the job, every other one sees the conflict and skips it.
    """

    __tablename__ = "job_claims"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    claimed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str] = mapped_column(String(100))


class AuditEvent(Base):
    """Append-only record of who did what, from where, and how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_grant_id", "grant_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    source: Mapped[Source] = mapped_column(StrEnumColumn(Source, 20))
    action: Mapped[str] = mapped_column(String(50))
    outcome: Mapped[str] = mapped_column(String(50))
    conference_id: Mapped[int | None] = mapped_column(ForeignKey("conferences.id"))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any] | None]


class InboundEvent(Base):
    """An inbound notification's id, so a re-delivery is recognised and ignored."""

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    result: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any] | None]


class SlackThread(Timestamped, Base):
    """The parent message of a grantee's status thread in the conference channel."""

    __tablename__ = "slack_threads"

    id: Mapped[int] = mapped_column(primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), unique=True)
    channel: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str | None] = mapped_column(String(40))
    lease_expires_at: Mapped[dt.datetime | None]


class OutboxKind(enum.StrEnum):
    """What an outbox row asks of Slack."""

    THREAD = "thread"  # a grantee's status thread: parent posted once, reply, parent update
    POST = "post"  # a top-level message in `channel`; its ts is kept under `ref`
    UPDATE = "update"  # chat.update of the message kept under `ref` (latest row wins)
    REPLY = "reply"  # a reply in the thread of the message kept under `ref`
    FILE = "file"  # a file (CSV) in the thread of the message kept under `ref`
    HOME = "home"  # views.publish of `user`'s App Home (latest row wins)


class SlackOutbox(Timestamped, Base):
    """A message for Slack, kept until Slack has it (retried on failure, rate-aware).

    Every message the bot posts or updates goes through here: grantee threads (`grant_id`),
    and messages named by `ref` (a bulk preview, a digest, a home view).
    """

    __tablename__ = "slack_outbox"
    __table_args__ = (
        Index("ix_slack_outbox_state_next", "state", "next_attempt_at"),
        Index("ix_slack_outbox_ref", "ref"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[OutboxKind] = mapped_column(
        StrEnumColumn(OutboxKind, 16), default=OutboxKind.THREAD, server_default="thread"
    )
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"))
    ref: Mapped[str | None] = mapped_column(String(100))
    user: Mapped[str | None] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(40))
    reply: Mapped[dict[str, Any] | None]
    parent: Mapped[dict[str, Any] | None]
    message: Mapped[dict[str, Any] | None]
    update_parent: Mapped[bool] = mapped_column(default=False)
    state: Mapped[OutboxState] = mapped_column(StrEnumColumn(OutboxState, 16))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    lease_expires_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class SlackMessage(Timestamped, Base):
    """A top-level message the bot posted, by the name (`ref`) its outbox rows use."""

    __tablename__ = "slack_messages"

    ref: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str | None] = mapped_column(String(40))
    lease_expires_at: Mapped[dt.datetime | None]


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for Postgres (psycopg 3) or the embedded SQLite file.

    `hide_parameters`: bound values (names, emails, voucher codes) never appear in an error's
    text or an echoed statement, so a traceback in the logs carries no personal data or codes.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "checkin", _sqlite_on_checkin)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    engine = create_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
    )
    event.listen(engine, "connect", _postgres_on_connect)
    return engine


def _postgres_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Timestamps come back in UTC (psycopg then gives datetime.UTC itself, which UTCDateTime
    # passes through instead of converting each value); the moments are the same either way.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET TIME ZONE 'UTC'")
    cursor.close()
    dbapi_connection.commit()


_NO_DATABASE = re.compile(r'database "[^"]*" does not exist')
_NO_ROLE = re.compile(r'role "[^"]*" does not exist')
_NO_SERVER = (
    "connection refused",
    "could not translate host name",
    "name or service not known",
    "timeout expired",
    "no route to host",
    "network is unreachable",
    "server closed the connection",
    "no such file or directory",  # a Unix socket path with no server behind it
)


def describe_connection_error(exc: BaseException, url: str | URL) -> str:
    """Why the database at `url` cannot be used, in words, with what to do about it.

    "Does not exist" (the server answers; create the database) is told apart from "not
    reachable" (nothing answers; start the server or fix the host and port).
    """
    target = make_url(url) if isinstance(url, str) else url
    detail = str(getattr(exc, "orig", None) or exc)
    first_line = " ".join(detail.split("\n", 1)[0].split())
    if target.get_backend_name() == "sqlite":
        return f"the SQLite database {target.database} cannot be used: {first_line}"
    host, port = target.host or "localhost", target.port or 5432
    user, name = target.username or "postgres", target.database or ""
    where = f"{host}:{port}"
    if _NO_DATABASE.search(detail):
        return (
            f'the server at {where} answers, but database "{name}" does not exist: create it '
            f"(createdb -h {host} -p {port} -U {user} {name}) or point DATABASE_URL at one "
            "that exists"
        )
    if _NO_ROLE.search(detail) or "authentication failed" in detail:
        return (
            f'the server at {where} answers, but refuses user "{user}": check the user and '
            "password in DATABASE_URL"
        )
    if any(marker in detail.lower() for marker in _NO_SERVER):
        return (
            f"Postgres is not reachable at {where} ({first_line}): start it, or fix the host "
            "and port in DATABASE_URL"
        )
    return f"the database at {where} cannot be used: {first_line}"


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy issue BEGIN itself (below) and keep foreign keys honest.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    _use_wal(cursor)
    cursor.close()


SQLITE_BUSY_TIMEOUT = 30.0  # seconds a connection waits for another one's write lock


def _use_wal(cursor: Any) -> None:
    # WAL is a property of the file, so only the first connection switches it; the switch
    # needs the write lock and SQLite's busy timeout does not cover that pragma (replicas
    # starting together saw "database is locked"), so it waits here instead.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    delay = 0.01
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        else:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _sqlite_on_checkin(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # A connection lent in autocommit (`Database.autocommit`) comes back with pysqlite's own
    # implicit transactions switched on again (SQLAlchemy resets the isolation level to the
    # driver's default); give it back to SQLAlchemy's explicit BEGIN, as on connect.
    if dbapi_connection.isolation_level is not None:
        dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Any) -> None:
    # SQLite has no SELECT ... FOR UPDATE: taking the write lock at BEGIN serialises writers,
    # which gives the same guarantee for the single-process embedded set-up. A connection in
    # autocommit (`Database.autocommit`) begins nothing: each statement is its own transaction.
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and its session factory; `transaction()` is the unit of work."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Database:
        """Connect to the given SQLAlchemy URL."""
        return cls(create_db_engine(url))

    @property
    def is_postgres(self) -> bool:
        """Whether row locks (FOR UPDATE, SKIP LOCKED) are real."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A short transaction: commits on success, rolls back on any exception."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def autocommit(self) -> Iterator[Session]:
        """One connection, held, on which each statement commits on its own.

        For a loop of single-statement writes that must each be durable at once (the record
        of every email sent): no pool checkout, BEGIN or COMMIT per write. Never for work
        that needs two statements to stand or fall together.
        """
        with (
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
            Session(bind=connection) as session,
        ):
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def insert_many_ignoring_conflict(
    session: Session,
    model: type[Base],
    rows: list[dict[str, Any]],
    *,
    conflict: list[str],
    returning: list[Any],
) -> list[Any]:
    """One multi-row INSERT ... ON CONFLICT DO NOTHING: the `returning` of the rows inserted."""
    if not rows:
        return []
    table: Table = model.__table__  # type: ignore[assignment]  # a mapped class's is a Table
    on_postgres = session.get_bind().dialect.name == "postgresql"
    names = tuple(rows[0])
    if (
        on_postgres
        and len(rows) > 1
        and all(tuple(row) == names for row in rows)
        and _fit(table, names, rows)
    ):
        statement = _unnest_insert(
            table, names, tuple(conflict), tuple(column.name for column in returning)
        )
        arrays = {f"u_{name}": [row[name] for row in rows] for name in names}
        return list(session.connection().execute(statement, arrays).all())
    dialect = postgresql if on_postgres else sqlite
    # Core columns and one executemany: SQLAlchemy's "insertmanyvalues" sends the rows as
    # multi-row INSERTs from one cached statement (building a 100-row VALUES clause by hand
    # cost more CPU than the insert itself), and RETURNING names the rows inserted.
    stmt = (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=conflict)
        .returning(*(table.c[column.name] for column in returning))
    )
    return list(session.execute(stmt, rows).all())


def _fit(table: Table, names: tuple[str, ...], rows: list[dict[str, Any]]) -> bool:
    """Every string fits its column: the array casts would cut a longer one short (an explicit
    cast to VARCHAR(n) truncates), where the row-by-row INSERT refuses it."""
    for name in names:
        length = getattr(table.c[name].type, "length", None)
        if length is not None:
            for row in rows:
                value = row[name]
                if isinstance(value, str) and len(value) > length:
                    return False
    return True


@functools.lru_cache(maxsize=16)
def _unnest_insert(
    table: Table, names: tuple[str, ...], conflict: tuple[str, ...], returning: tuple[str, ...]
) -> Any:
    """INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT DO NOTHING RETURNING.

    Postgres only. One short statement with one parameter per column, whatever the number of
    rows: psycopg caches its parsing, where a VALUES list of 100 rows x 15 columns was parsed
    again at every call (about 40 ms of CPU for 100 vouchers).
    """
    # psycopg's dialect casts each parameter to its array type (`::VARCHAR(16)[]`); one
    # dimension, so a JSON value that is a list stays one value.
    arrays = [
        bindparam(f"u_{name}", type_=postgresql.ARRAY(table.c[name].type, dimensions=1))
        for name in names
    ]
    rows = func.unnest(*arrays).table_valued(*names).render_derived(name="new_rows")
    return (
        postgresql.insert(table)
        .from_select(list(names), select(*(rows.c[name] for name in names)))
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(*(table.c[name] for name in returning))
    )


def insert_ignoring_conflict(
    session: Session, model: type[Base], values: Mapping[str, Any], *, conflict: list[str]
) -> int | None:
    """INSERT ... ON CONFLICT DO NOTHING on Postgres and SQLite: the new row's id, or None."""
    # RETURNING, not rowcount: drivers report -1 for some INSERTs, which reads as "inserted".
    rows = insert_many_ignoring_conflict(
        session,
        model,
        [dict(values)],
        conflict=conflict,
        returning=list(model.__mapper__.primary_key),
    )
    return int(rows[0][0]) if rows else None
