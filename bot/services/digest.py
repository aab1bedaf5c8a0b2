"""The daily digest of one conference: what still needs a person, urgent first (no Slack here).

`build_digest` reads the database with a fixed number of set-based queries per conference
(never one per grant) and Pretix with one paginated list of the conference's grant-tagged
vouchers, and returns a `Digest` of typed, detached sections. The edges render it: Block Kit
for the channel (`bot.slack.blocks.digest`), plain text for the terminal.

The sections, most urgent first:

- `waiting`: grants waiting for the grantee's confirmation, overdue and due within 48 hours
  first, then by deadline;
- `stuck`: confirmed grantees still without a voucher or its email, with the reason (the
  provisioning rules' verdict, the row's last error);
- `held`: held confirmations nobody dismissed;
- `refused`: grants refused after their voucher was issued (the voucher is still live);
- `recent`: confirmations of the last 24 hours, with their voucher and email state;
- `redemption`: the grant vouchers Pretix lists, how many are redeemed, which are not yet;
- `drift`: one line when Pretix's grant vouchers differ from the bot's records (the drift
  report's summary, from the same records and the same list: `.venv/bin/voucher-bot drift` has the
  details).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session, aliased

from bot.conferences import ConferenceConfig
from bot.pretix import EventRef, PretixError, Voucher
from bot.services.codes import mask_code
from bot.services.context import ServiceContext
from bot.services.drift import BotRecord, compare_listed, load_records, read_records
from bot.services.pretix_work import GRANT_TAG
from bot.services.provisioning_rules import (
    Action,
    ConferenceFacts,
    Decision,
    GrantFacts,
    Verdict,
    VoucherFacts,
    decide,
)
from bot.storage import (
    Conference,
    ConferenceVoucher,
    EmailState,
    Grant,
    GrantStatus,
    VoucherState,
    VoucherType,
)

log = structlog.get_logger(__name__)

CV = ConferenceVoucher
DUE_SOON = dt.timedelta(hours=48)
RECENT = dt.timedelta(hours=24)


class UnknownConferenceError(LookupError):
    """The digest was asked for a conference that is not configured."""


class Urgency(enum.IntEnum):
    """How soon a waiting grantee must answer; lower sorts first."""

    OVERDUE = 0
    DUE_SOON = 1  # within 48 hours
    LATER = 2
    NO_DEADLINE = 3


class PretixState(enum.StrEnum):
    """Whether the redemption section could be read from Pretix."""

    OK = "ok"
    OFF = "off"  # PRETIX_URL / PRETIX_TOKEN not set
    DOWN = "down"  # Pretix did not answer (or refused)


@dataclass(frozen=True, kw_only=True, slots=True)
class DigestGrant:
    """Who a digest line is about."""

    id: int  # the bot's grant id: the value of the grant's buttons
    external_id: str  # the backend's id, as staff type it
    name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingConfirmation:
    """A grantee who was offered the grant and has not confirmed yet."""

    grant: DigestGrant
    reply_sent_at: dt.datetime | None  # when the approval email went out
    deadline: dt.datetime | None
    days_left: int | None  # whole days until the deadline; negative when overdue
    urgency: Urgency


@dataclass(frozen=True, kw_only=True, slots=True)
class RecentConfirmation:
    """A confirmation of the last 24 hours and where its voucher and email stand."""

    grant: DigestGrant
    confirmed_at: dt.datetime
    voucher_type: VoucherType | None  # None: no voucher row yet
    voucher_state: VoucherState | None
    code: str | None  # masked
    email_state: EmailState | None
    held: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class StuckGrant:
    """A confirmed grantee still without a voucher or its email, and why."""

    grant: DigestGrant
    confirmed_at: dt.datetime | None
    reason: str
    verdict: Verdict
    voucher_state: VoucherState | None
    email_state: EmailState | None


@dataclass(frozen=True, kw_only=True, slots=True)
class HeldGrant:
    """A held confirmation waiting for a person's decision (issue or dismiss)."""

    grant: DigestGrant
    confirmed_at: dt.datetime | None
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RefusedWithVoucher:
    """A grant refused after its voucher was issued: revoke it, unless it was used."""

    grant: DigestGrant
    refused_at: dt.datetime  # when the backend said so (the grant's updated_at)
    code: str  # masked
    redeemed: int | None  # from Pretix; None when Pretix could not be read

    @property
    def used(self) -> bool:
        """The voucher was redeemed: it cannot be revoked any more."""
        return bool(self.redeemed)


@dataclass(frozen=True, kw_only=True, slots=True)
class UnredeemedVoucher:
    """A grant voucher Pretix lists as not redeemed yet."""

    grant: DigestGrant | None  # None: the bot's records do not name it
    code: str  # masked
    emailed_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Redemption:
    """The grant vouchers in Pretix (one list call) against the bot's records."""

    pretix: PretixState
    problem: str | None  # why Pretix could not be read
    recorded: int  # grant vouchers the bot's records hold as created
    listed: int  # grant-tagged vouchers Pretix lists
    redeemed: int
    unredeemed: tuple[UnredeemedVoucher, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Digest:
    """One conference's digest at `generated_at`."""

    conference: str
    conference_name: str
    channel: str | None
    timezone: str
    generated_at: dt.datetime
    local_date: dt.date  # the conference's local date at `generated_at`
    waiting: tuple[PendingConfirmation, ...]
    stuck: tuple[StuckGrant, ...]
    held: tuple[HeldGrant, ...]
    refused: tuple[RefusedWithVoucher, ...]
    recent: tuple[RecentConfirmation, ...]
    redemption: Redemption
    # The drift report's one-line summary; None when nothing drifted or Pretix was not read.
    drift: str | None = None

    @property
    def empty(self) -> bool:
        """Nothing to report: nobody waits, nothing needs a person, nobody confirmed today,
        nothing drifted in Pretix.

        The redemption totals alone are not news; an empty digest still shows them.
        """
        return not (
            self.waiting or self.stuck or self.held or self.refused or self.recent or self.drift
        )

    @property
    def overdue(self) -> int:
        """Waiting grantees whose deadline has passed."""
        return sum(1 for p in self.waiting if p.urgency is Urgency.OVERDUE)

    @property
    def due_soon(self) -> int:
        """Waiting grantees whose deadline is within 48 hours."""
        return sum(1 for p in self.waiting if p.urgency is Urgency.DUE_SOON)


# --- pure rules, tested table-driven ----------------------------------------------------------


def urgency(deadline: dt.datetime | None, now: dt.datetime) -> Urgency:
    """Overdue, due within 48 hours, later, or no deadline at all."""
    if deadline is None:
        return Urgency.NO_DEADLINE
    if deadline < now:
        return Urgency.OVERDUE
    if deadline - now <= DUE_SOON:
        return Urgency.DUE_SOON
    return Urgency.LATER


def days_left(deadline: dt.datetime | None, now: dt.datetime) -> int | None:
    """Whole days until the deadline (rounded down: 0 on its last day, -1 a day late)."""
    if deadline is None:
        return None
    return (deadline - now) // _DAY  # floor division of exact microseconds


_DAY = dt.timedelta(days=1)
_FAR = dt.datetime.max.replace(tzinfo=dt.UTC)


def waiting_order(item: PendingConfirmation) -> tuple[int, dt.datetime, str]:
    """Urgent first, then the nearest deadline, then by name."""
    return (item.urgency, item.deadline or _FAR, item.grant.name.casefold())


def email_done(state: EmailState | None, sent_at: dt.datetime | None) -> bool:
    """The voucher email went out (or the import says it did): nothing more to send."""
    return state is EmailState.SENT or sent_at is not None


def stuck_reason(
    decision: Decision,
    *,
    voucher_state: VoucherState | None,
    email_state: EmailState | None,
    email_sent_at: dt.datetime | None,
    last_error: str | None,
    email_last_error: str | None,
    waits_for_staff: bool,
    email_problem: str | None = None,
) -> str | None:
    """Why a confirmed, unheld grantee has no voucher or email yet, or None when all is done."""
    verdict, action = decision.verdict, decision.action
    if verdict is Verdict.HAS_VOUCHER or action is Action.KEEP:
        if email_done(email_state, email_sent_at):
            return None
        if email_state is EmailState.FAILED:
            return _with(email_last_error, "the voucher email failed")
        if action is Action.KEEP and email_state is EmailState.NOT_DUE:
            return "the voucher is linked, its email not sent yet"
        return _with(email_last_error, "the voucher email is not sent yet")
    if verdict in (Verdict.NOT_CONFIGURED, Verdict.NOT_CONFIRMED, Verdict.HELD):
        return None  # not a confirmed, unheld grant of a configured conference
    if verdict is Verdict.NOT_ISSUING:
        return None
    if waits_for_staff:
        return "imported with --no-provision: waits for staff to issue it"
    reasons = {
        Verdict.NO_EMAIL: "no email address",
        Verdict.UNMAILABLE: f"the email address cannot be used ({email_problem or 'invalid'})",
        Verdict.EMAIL_CHANGED: "the email changed after the voucher was issued: a person decides",
        Verdict.PRETIX_OFF: "Pretix is not configured",
        Verdict.IN_PROGRESS: "being provisioned right now",
        Verdict.WAITING: _with(last_error, "waiting for the next attempt"),
        Verdict.NEEDS_REVIEW: _with(last_error, "needs review"),
        Verdict.REVOKE_UNFINISHED: "a revoke of the voucher is unfinished",
        Verdict.FAILED: _with(last_error, "failed"),
    }
    if verdict in reasons:
        return reasons[verdict]
    by_action = {
        Action.CREATE: "no voucher yet",
        Action.RETRY: _with(last_error, "failed"),
        Action.RESUME: _with(last_error, "the Pretix request is unfinished"),
        Action.UPGRADE: "the co-speaker voucher is not upgraded yet",
        Action.RESTART: "the voucher was revoked; the grant is confirmed again",
    }
    return by_action.get(action, f"voucher {voucher_state or 'missing'}")


def _with(error: str | None, what: str) -> str:
    return f"{what}: {error}" if error else what


# --- reading ------------------------------------------------------------------------------


def build_digest(ctx: ServiceContext, *, conference: str, now: dt.datetime) -> Digest:
    """The digest of one configured conference at `now` (aware).

    Seven SQL statements whatever the number of grants, and one paginated Pretix list of the
    conference's grant-tagged vouchers (`iter_vouchers(event, tag="grant")`), which serves
    the redemption section, the refused grants' redemption and the drift line alike. Pretix
    being off or down is said in the redemption section; the digest is still built.

    With Pretix configured, the bot's voucher records (the drift report's, which also name
    the holders of the created grant vouchers) are read in the same transaction, BEFORE the
    list: a voucher the bot creates meanwhile then has no record yet and is not listed, where
    the other order would call it gone. A voucher the list names and the records do not
    costs one more statement: the records are read again, in case its row was reserved
    while the pages came (`drift.compare_listed`).
    """
    config = ctx.conference(conference)
    if config is None:
        raise UnknownConferenceError(conference)
    records: list[BotRecord] | None = None
    with ctx.db.transaction() as session:
        conference_id = session.connection().execute(_CONFERENCE_ID, {"code": conference}).scalar()
        if conference_id is None:  # configured but never synced: nothing stored yet
            sections = _Sections((), (), (), (), (), _Issued(0, {}))
            records = []
        else:
            sections = _read_sections(session, ctx, config, conference_id, now)
            if ctx.pretix is not None:
                records = load_records(session, config, conference_id=conference_id)
    issued = sections.issued if records is None else _issued_from(records)
    vouchers, state, problem = _pretix_vouchers(ctx, config)
    drift = (
        None
        if vouchers is None or records is None
        else compare_listed(
            conference=config.code,
            records=records,
            vouchers=vouchers,
            read_again=lambda: read_records(ctx, config, conference_id=conference_id),
        ).summary_line()
    )
    return Digest(
        conference=config.code,
        conference_name=config.name,
        channel=config.slack_channel,
        timezone=config.timezone,
        generated_at=now,
        local_date=now.astimezone(config.zone).date(),
        waiting=sections.waiting,
        stuck=sections.stuck,
        held=sections.held,
        refused=_refused(sections.refused, vouchers),
        recent=sections.recent,
        redemption=_redemption(issued, vouchers, state, problem),
        drift=drift,
    )


@dataclass(frozen=True, slots=True)
class _RefusedRow:
    grant: DigestGrant
    refused_at: dt.datetime
    code: str
    pretix_voucher_id: int | None


# A created grant voucher's grant (id, backend id, name) and when its email went out.
_Holder = tuple[int | None, str | None, str | None, dt.datetime | None]


@dataclass(frozen=True, slots=True)
class _Issued:
    """The grant vouchers the bot created: how many, and (when Pretix will be read) whose
    each one is, by Pretix id."""

    count: int
    holders: dict[int, _Holder]


@dataclass(frozen=True, slots=True)
class _Sections:
    waiting: tuple[PendingConfirmation, ...]
    stuck: tuple[StuckGrant, ...]
    held: tuple[HeldGrant, ...]
    refused: tuple[_RefusedRow, ...]
    recent: tuple[RecentConfirmation, ...]
    issued: _Issued


def _read_sections(
    session: Session,
    ctx: ServiceContext,
    config: ConferenceConfig,
    conference_id: int,
    now: dt.datetime,
) -> _Sections:
    issuing = config.issue_vouchers
    connection = session.connection()  # Core rows: no ORM loading for plain columns
    return _Sections(
        waiting=_waiting(connection, conference_id, now),
        stuck=_stuck(connection, ctx, conference_id, now) if issuing else (),
        held=_held(connection, conference_id) if issuing else (),
        refused=_refused_rows(connection, conference_id),
        recent=_recent(connection, conference_id, now),
        # With Pretix, the holders come from the drift records (one statement for both).
        issued=_issued_count(connection, conference_id) if ctx.pretix is None else _Issued(0, {}),
    )


# --- the statements: built once (bound parameters), run on the session's connection ------

# The voucher row of the grant's person at the grant's conference.
_PERSON = and_(CV.conference_id == Grant.conference_id, CV.email_key == Grant.email_key)
_OF_CONFERENCE = Grant.conference_id == bindparam("conference_id")

_CONFERENCE_ID = select(Conference.id).where(Conference.code == bindparam("code"))

_WAITING = select(
    Grant.id,
    Grant.external_id,
    Grant.full_name,
    Grant.applicant_reply_sent_at,
    Grant.applicant_reply_deadline,
).where(_OF_CONFERENCE, Grant.status == GrantStatus.WAITING_FOR_CONFIRMATION)

# Confirmed, unheld, undismissed grants whose person has no finished voucher and email: a
# superset (no row, a row not created, a created row whose email is not done); the
# provisioning rule and `stuck_reason` decide, on the same facts.
_MOVED = aliased(CV)
_FINISHED = and_(
    CV.state == VoucherState.CREATED,
    CV.voucher_type.in_([VoucherType.SPEAKER, VoucherType.GRANT]),
    or_(CV.email_state == EmailState.SENT, CV.email_sent_at.is_not(None)),
)
_STUCK = (
    select(
        Grant.id,
        Grant.external_id,
        Grant.full_name,
        Grant.email,
        Grant.email_key,
        Grant.confirmed_at,
        Grant.waits_for_staff,
        CV.id,
        CV.grant_id,
        CV.voucher_type,
        CV.state,
        CV.lease_expires_at,
        CV.next_attempt_at,
        CV.last_error,
        CV.email_state,
        CV.email_sent_at,
        CV.email_last_error,
        _MOVED.id,
        _MOVED.state,
    )
    .outerjoin(CV, _PERSON)
    .outerjoin(
        _MOVED,
        and_(
            _MOVED.grant_id == Grant.id,
            _MOVED.email_key != Grant.email_key,
            _MOVED.state != VoucherState.REVOKED,
        ),
    )
    .where(
        _OF_CONFERENCE,
        Grant.status == GrantStatus.CONFIRMED,
        Grant.hold_reason.is_(None),
        Grant.dismissed_at.is_(None),
        or_(CV.id.is_(None), ~_FINISHED),
    )
    .order_by(Grant.confirmed_at, Grant.id)
)

_HELD = (
    select(Grant.id, Grant.external_id, Grant.full_name, Grant.confirmed_at, Grant.hold_reason)
    .where(
        _OF_CONFERENCE,
        Grant.status == GrantStatus.CONFIRMED,
        Grant.hold_reason.is_not(None),
        Grant.dismissed_at.is_(None),
    )
    .order_by(Grant.confirmed_at, Grant.id)
)

_REFUSED = (
    select(
        Grant.id,
        Grant.external_id,
        Grant.full_name,
        Grant.source_updated_at,
        CV.code,
        CV.pretix_voucher_id,
    )
    .join(CV, _PERSON)
    .where(
        _OF_CONFERENCE,
        Grant.status == GrantStatus.REFUSED,
        CV.voucher_type == VoucherType.GRANT,
        CV.state == VoucherState.CREATED,
    )
    .order_by(Grant.source_updated_at, Grant.id)
)

_RECENT = (
    select(
        Grant.id,
        Grant.external_id,
        Grant.full_name,
        Grant.confirmed_at,
        Grant.hold_reason,
        CV.voucher_type,
        CV.state,
        CV.code,
        CV.email_state,
    )
    .outerjoin(CV, _PERSON)
    .where(
        _OF_CONFERENCE,
        Grant.status == GrantStatus.CONFIRMED,
        Grant.confirmed_at >= bindparam("since"),
        Grant.confirmed_at <= bindparam("now"),
    )
    .order_by(Grant.confirmed_at.desc(), Grant.id)
)

# How many grant vouchers the bot created (Pretix off: nobody to name).
_ISSUED_COUNT = (
    select(func.count())
    .select_from(CV)
    .where(
        CV.conference_id == bindparam("conference_id"),
        CV.voucher_type == VoucherType.GRANT,
        CV.state == VoucherState.CREATED,
        CV.pretix_voucher_id.is_not(None),
    )
)


def _waiting(
    connection: Connection, conference_id: int, now: dt.datetime
) -> tuple[PendingConfirmation, ...]:
    items = [
        PendingConfirmation(
            grant=DigestGrant(id=gid, external_id=ext, name=name),
            reply_sent_at=sent,
            deadline=deadline,
            days_left=days_left(deadline, now),
            urgency=urgency(deadline, now),
        )
        for gid, ext, name, sent, deadline in connection.execute(
            _WAITING, {"conference_id": conference_id}
        ).all()
    ]
    items.sort(key=waiting_order)
    return tuple(items)


def _stuck(
    connection: Connection, ctx: ServiceContext, conference_id: int, now: dt.datetime
) -> tuple[StuckGrant, ...]:
    """Confirmed, unheld, undismissed grants whose person has no finished voucher and email,
    and why (see `_STUCK`)."""
    rows = connection.execute(_STUCK, {"conference_id": conference_id}).all()
    facts = ConferenceFacts(configured=True, issue_vouchers=True, pretix=ctx.pretix is not None)
    stuck: dict[int, StuckGrant] = {}
    for (
        gid,
        ext,
        name,
        email,
        email_key,
        confirmed_at,
        waits,
        vid,
        v_grant,
        v_type,
        v_state,
        v_lease,
        v_next,
        v_error,
        e_state,
        e_sent,
        e_error,
        moved_id,
        moved_state,
    ) in rows:
        if gid in stuck:
            continue  # a second moved row of the same grant
        grant_facts = GrantFacts(
            id=gid,
            status=GrantStatus.CONFIRMED,
            email_key=email_key,
            hold_reason=None,
            name=name,
            email=email,
        )
        voucher = (
            None
            if vid is None
            else VoucherFacts(
                id=vid,
                grant_id=v_grant,
                email_key=email_key or "",
                voucher_type=v_type,
                state=v_state,
                lease_expires_at=v_lease,
                next_attempt_at=v_next,
                email_sent_at=e_sent,
                email_state=e_state,
            )
        )
        moved_facts = (
            None
            if moved_id is None
            else VoucherFacts(
                id=moved_id,
                grant_id=gid,
                email_key="",
                voucher_type=VoucherType.GRANT,
                state=moved_state,
            )
        )
        decision = decide(
            grant=grant_facts, voucher=voucher, moved=moved_facts, conference=facts, now=now
        )
        reason = stuck_reason(
            decision,
            voucher_state=v_state,
            email_state=e_state,
            email_sent_at=e_sent,
            last_error=v_error,
            email_last_error=e_error,
            waits_for_staff=waits,
            email_problem=grant_facts.email_problem
            if decision.verdict is Verdict.UNMAILABLE
            else None,
        )
        if reason is None:
            continue
        stuck[gid] = StuckGrant(
            grant=DigestGrant(id=gid, external_id=ext, name=name),
            confirmed_at=confirmed_at,
            reason=reason,
            verdict=decision.verdict,
            voucher_state=v_state,
            email_state=e_state,
        )
    return tuple(stuck.values())


def _held(connection: Connection, conference_id: int) -> tuple[HeldGrant, ...]:
    return tuple(
        HeldGrant(
            grant=DigestGrant(id=gid, external_id=ext, name=name),
            confirmed_at=confirmed,
            reason=reason or "",
        )
        for gid, ext, name, confirmed, reason in connection.execute(
            _HELD, {"conference_id": conference_id}
        ).all()
    )


def _refused_rows(connection: Connection, conference_id: int) -> tuple[_RefusedRow, ...]:
    return tuple(
        _RefusedRow(DigestGrant(id=gid, external_id=ext, name=name), refused_at, code, pretix_id)
        for gid, ext, name, refused_at, code, pretix_id in connection.execute(
            _REFUSED, {"conference_id": conference_id}
        ).all()
    )


def _recent(
    connection: Connection, conference_id: int, now: dt.datetime
) -> tuple[RecentConfirmation, ...]:
    rows = connection.execute(
        _RECENT, {"conference_id": conference_id, "since": now - RECENT, "now": now}
    ).all()
    return tuple(
        RecentConfirmation(
            grant=DigestGrant(id=gid, external_id=ext, name=name),
            confirmed_at=confirmed,
            voucher_type=kind,
            voucher_state=state,
            code=mask_code(code) if code else None,
            email_state=email_state,
            held=hold is not None,
        )
        for gid, ext, name, confirmed, hold, kind, state, code, email_state in rows
        if confirmed is not None
    )


def _issued_count(connection: Connection, conference_id: int) -> _Issued:
    """How many grant vouchers the bot created at this conference. One statement."""
    count = connection.execute(_ISSUED_COUNT, {"conference_id": conference_id}).scalar()
    return _Issued(count or 0, {})


def _issued_from(records: Iterable[BotRecord]) -> _Issued:
    """The created grant vouchers among the drift records, by Pretix id, with their holders."""
    found: dict[int, _Holder] = {
        r.pretix_voucher_id: (r.grant_id, r.grant_external_id, r.full_name, r.email_sent_at)
        for r in records
        if r.is_grant_record and r.pretix_voucher_id is not None
    }
    return _Issued(len(found), found)


def _pretix_vouchers(
    ctx: ServiceContext, config: ConferenceConfig
) -> tuple[list[Voucher] | None, PretixState, str | None]:
    """Every grant-tagged voucher of the event: ONE paginated list call, never one per voucher."""
    if ctx.pretix is None:
        return None, PretixState.OFF, "Pretix is not configured"
    event = EventRef(config.pretix_organizer, config.pretix_event)
    try:
        return list(ctx.pretix.iter_vouchers(event, tag=GRANT_TAG)), PretixState.OK, None
    except PretixError as exc:
        log.warning("digest: pretix list failed", conference=config.code, error=str(exc))
        return None, PretixState.DOWN, str(exc)


def _refused(
    rows: Iterable[_RefusedRow],
    vouchers: Sequence[Voucher] | None,
) -> tuple[RefusedWithVoucher, ...]:
    redeemed = None if vouchers is None else {v.id: v.redeemed for v in vouchers}
    return tuple(
        RefusedWithVoucher(
            grant=row.grant,
            refused_at=row.refused_at,
            code=mask_code(row.code),
            redeemed=None
            if redeemed is None or row.pretix_voucher_id is None
            else redeemed.get(row.pretix_voucher_id),
        )
        for row in rows
    )


def _redemption(
    issued: _Issued,
    vouchers: Sequence[Voucher] | None,
    state: PretixState,
    problem: str | None,
) -> Redemption:
    if vouchers is None:
        return Redemption(
            pretix=state,
            problem=problem,
            recorded=issued.count,
            listed=0,
            redeemed=0,
            unredeemed=(),
        )
    unredeemed: list[UnredeemedVoucher] = []
    for voucher in vouchers:
        if voucher.redeemed:
            continue
        gid, ext, name, sent = issued.holders.get(voucher.id, (None, None, None, None))
        unredeemed.append(
            UnredeemedVoucher(
                grant=None
                if gid is None
                else DigestGrant(id=gid, external_id=ext or "", name=name or ""),
                code=mask_code(voucher.code),
                emailed_at=sent,
            )
        )
    return Redemption(
        pretix=state,
        problem=problem,
        recorded=issued.count,
        listed=len(vouchers),
        redeemed=sum(1 for v in vouchers if v.redeemed),
        unredeemed=tuple(unredeemed),
    )
