"""Drift: the grant vouchers Pretix holds against the bot's records of them.

Pretix is edited by people too. The report finds grant-tagged vouchers the bot does not know,
records whose Pretix voucher is gone (deleted, or no longer tagged `grant`), vouchers whose
terms were changed in Pretix (price, value, quota or item, max usages, quota bypass, code,
tag) and vouchers the bot revoked that are still there; it also counts redemptions.

`compare_vouchers` is the pure comparison; `drift_report` reads the records (one SELECT),
THEN Pretix (one paginated list call, `?tag=grant`), and calls it. That order matters: the
bot reserves a voucher's row (with its code) before it asks Pretix to create the voucher, so
a record read first is in Pretix by the time the list is made; read after the list, a record
created meanwhile would look gone. A row reserved after the read can still be listed on a
later page of the same list (it looks unknown), and one the bot revokes meanwhile looks gone:
either sends `compare_listed` to read the records once more, which drops the unknowns a
record now names and the gone ones the bot itself revoked. The digest reads the same records
(`load_records`) inside its own transaction, before its one list call, and compares them to
that list the same way.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from bot.conferences import ConferenceConfig, pick_conference
from bot.pretix import EventRef, Voucher
from bot.services.context import ServiceContext
from bot.services.pretix_work import GRANT_TAG, grant_terms
from bot.storage import Conference, ConferenceVoucher, Grant, VoucherState, VoucherType

# The terms a person could change in Pretix that change what a grant voucher gives.
COMPARED_TERMS = (
    "price_mode",
    "value",
    "quota",
    "item",
    "max_usages",
    "allow_ignore_quota",
    "tag",
)
# What Pretix stores for a compared term a create request leaves out.
PRETIX_DEFAULTS: dict[str, object] = {
    "price_mode": "none",
    "value": None,
    "quota": None,
    "item": None,
    "max_usages": 1,
    "allow_ignore_quota": False,
    "tag": "",
}
# Rows whose Pretix side is being made, changed or deleted right now: not drift.
IN_FLIGHT = (VoucherState.CREATING, VoucherState.UPGRADING, VoucherState.REVOKING)


class DriftError(Exception):
    """The report cannot be made (Pretix not configured, unknown conference); in words."""


class DriftKind(enum.StrEnum):
    """What is wrong with one voucher."""

    UNKNOWN = "unknown"  # tagged grant in Pretix, no record in the bot
    GONE = "gone"  # the bot's record points at a voucher Pretix no longer lists as grant
    EDITED = "edited"  # its terms in Pretix differ from what the bot sent
    REVOKED_PRESENT = "revoked_present"  # the bot revoked it, Pretix still has it


@dataclass(frozen=True)
class TermChange:
    """One term that differs: what the bot sent, what Pretix holds now."""

    term: str
    expected: object
    actual: object


@dataclass(frozen=True, kw_only=True, slots=True)
class BotRecord:
    """What the bot knows of one voucher of the conference (a `conference_vouchers` row)."""

    row_id: int
    code: str
    pretix_voucher_id: int | None
    state: VoucherState
    voucher_type: VoucherType
    original_type: VoucherType | None = None
    grant_id: int | None = None  # the bot's grant id (None: no grant, or it was deleted)
    grant_external_id: str | None = None
    full_name: str | None = None
    email_sent_at: dt.datetime | None = None  # when the voucher email went out
    # The terms the bot sent (frozen create request, else the grant terms).
    expected: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_grant_record(self) -> bool:
        """A grant voucher the bot made or upgraded, and believes exists in Pretix."""
        return self.voucher_type is VoucherType.GRANT and self.state is VoucherState.CREATED


@dataclass(frozen=True, kw_only=True)
class DriftItem:
    """One voucher that drifted."""

    kind: DriftKind
    code: str
    pretix_voucher_id: int | None
    grant_external_id: str | None = None
    full_name: str | None = None
    changes: tuple[TermChange, ...] = ()
    redeemed: int = 0


@dataclass(frozen=True, kw_only=True)
class DriftReport:
    """Pretix's grant vouchers of one conference against the bot's records."""

    conference: str
    items: tuple[DriftItem, ...]
    pretix_grant_vouchers: int  # grant-tagged vouchers Pretix lists
    records: int  # the bot's grant records (created)
    redeemed: int  # of the records found in Pretix, used at least once
    not_redeemed: int  # of the records found in Pretix, not used yet

    @property
    def drifted(self) -> bool:
        """Whether anything differs between Pretix and the bot."""
        return bool(self.items)

    def of_kind(self, kind: DriftKind) -> list[DriftItem]:
        """The items of one kind, in report order."""
        return [item for item in self.items if item.kind is kind]

    def counts(self) -> dict[DriftKind, int]:
        """How many items of each kind (kinds with none left out), in DriftKind order."""
        found = {kind: len(self.of_kind(kind)) for kind in DriftKind}
        return {kind: count for kind, count in found.items() if count}

    def summary_line(self) -> str | None:
        """One line for the digest when something drifted, else None."""
        if not self.drifted:
            return None
        parts = [_COUNT_WORDS[kind](count) for kind, count in self.counts().items()]
        return f"Pretix drift in {self.conference}: {', '.join(parts)}."


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


_COUNT_WORDS = {
    DriftKind.UNKNOWN: lambda n: _plural(
        n, "grant voucher the bot does not know", "grant vouchers the bot does not know"
    ),
    DriftKind.GONE: lambda n: _plural(n, "voucher gone from Pretix", "vouchers gone from Pretix"),
    DriftKind.EDITED: lambda n: _plural(n, "voucher edited in Pretix", "vouchers edited in Pretix"),
    DriftKind.REVOKED_PRESENT: lambda n: _plural(
        n, "revoked voucher still in Pretix", "revoked vouchers still in Pretix"
    ),
}


def compare_vouchers(
    *, conference: str, records: Sequence[BotRecord], vouchers: Iterable[Voucher]
) -> DriftReport:
    """Compare Pretix vouchers with the bot's records; pure.

    A voucher matches a record by Pretix id, else by code (case-insensitive). Only vouchers
    tagged `grant` can be unknown: speaker and co-speaker vouchers are not grant vouchers.
    Records in flight (being created, upgraded or revoked) are never drift.
    """
    listed = list(vouchers)
    by_id = {v.id: v for v in listed}
    by_code = {v.code.upper(): v for v in listed}
    matched: set[int] = set()
    items: list[DriftItem] = []
    redeemed = not_redeemed = records_count = 0
    for record in records:
        voucher = _match(record, by_id, by_code)
        if voucher is not None:
            matched.add(voucher.id)
        if record.state in IN_FLIGHT:
            continue
        if record.state is VoucherState.REVOKED:
            if voucher is not None and voucher.tag == GRANT_TAG:
                items.append(_item(DriftKind.REVOKED_PRESENT, record, voucher))
            continue
        if not record.is_grant_record:
            continue
        records_count += 1
        if voucher is None:
            items.append(_item(DriftKind.GONE, record, None))
            continue
        if voucher.redeemed > 0:
            redeemed += 1
        else:
            not_redeemed += 1
        if changes := _changes(record, voucher):
            items.append(_item(DriftKind.EDITED, record, voucher, changes))
    grant_tagged = [v for v in listed if v.tag == GRANT_TAG]
    items.extend(
        DriftItem(kind=DriftKind.UNKNOWN, code=v.code, pretix_voucher_id=v.id, redeemed=v.redeemed)
        for v in grant_tagged
        if v.id not in matched
    )
    return DriftReport(
        conference=conference,
        items=tuple(items),
        pretix_grant_vouchers=len(grant_tagged),
        records=records_count,
        redeemed=redeemed,
        not_redeemed=not_redeemed,
    )


def _match(
    record: BotRecord, by_id: Mapping[int, Voucher], by_code: Mapping[str, Voucher]
) -> Voucher | None:
    if record.pretix_voucher_id is not None and record.pretix_voucher_id in by_id:
        return by_id[record.pretix_voucher_id]
    return by_code.get(record.code.upper())


def _changes(record: BotRecord, voucher: Voucher) -> tuple[TermChange, ...]:
    changes: list[TermChange] = []
    expected = record.expected
    for term in COMPARED_TERMS:
        if term in expected:
            actual = _actual(voucher, term)
            if not _same(expected[term], actual):
                changes.append(TermChange(term, expected[term], actual))
    if voucher.code.upper() != record.code.upper():
        changes.append(TermChange("code", record.code, voucher.code))
    return tuple(changes)


def _actual(voucher: Voucher, term: str) -> object:
    value: object = getattr(voucher, term)
    return "" if term == "tag" and value is None else value


def _same(expected: object, actual: object) -> bool:
    if expected == actual:  # the usual case, and what the Decimal reading would say too
        return True
    if isinstance(expected, Decimal | str) and isinstance(actual, Decimal):
        try:
            return Decimal(str(expected)) == actual
        except ArithmeticError:
            return False
    return False


def _item(
    kind: DriftKind,
    record: BotRecord,
    voucher: Voucher | None,
    changes: tuple[TermChange, ...] = (),
) -> DriftItem:
    return DriftItem(
        kind=kind,
        code=voucher.code if voucher is not None else record.code,
        pretix_voucher_id=voucher.id if voucher is not None else record.pretix_voucher_id,
        grant_external_id=record.grant_external_id,
        full_name=record.full_name,
        changes=changes,
        redeemed=voucher.redeemed if voucher is not None else 0,
    )


def expected_terms(config: ConferenceConfig, sent: Mapping[str, Any] | None) -> dict[str, object]:
    """The compared terms the bot asked for: the frozen create request, else the grant terms.

    A frozen request omits fields it did not set (a quota voucher has no item): an absent
    term is what Pretix makes of it, its default.
    """
    if sent is not None:
        terms: dict[str, object] = {
            term: sent.get(term, PRETIX_DEFAULTS[term]) for term in COMPARED_TERMS
        }
        if terms["value"] is not None:
            terms["value"] = Decimal(str(terms["value"]))
        return terms
    base = grant_terms(config)
    return {term: base.get(term) for term in COMPARED_TERMS}


_CV = ConferenceVoucher
# Built once: every voucher row of one conference, with its grant's names; by the conference's
# id when the caller has it (the planner then knows how many rows that is: joined on the code,
# it expected a few dozen and probed the grants' key once per row), else by its code.
_RECORDS_OF = (
    select(
        _CV.id,
        _CV.code,
        _CV.pretix_voucher_id,
        _CV.state,
        _CV.voucher_type,
        _CV.original_type,
        _CV.request_payload,
        _CV.email_sent_at,
        Grant.id,
        Grant.external_id,
        Grant.full_name,
    )
    .outerjoin(Grant, Grant.id == _CV.grant_id)
    .order_by(_CV.id)
)
_RECORDS_BY_ID = _RECORDS_OF.where(_CV.conference_id == bindparam("conference_id"))
_RECORDS_BY_CODE = _RECORDS_OF.join(Conference, Conference.id == _CV.conference_id).where(
    Conference.code == bindparam("conference")
)


def load_records(
    session: Session, config: ConferenceConfig, *, conference_id: int | None = None
) -> list[BotRecord]:
    """Every voucher row of the conference that could match a grant voucher; one SELECT
    (give `conference_id` when it is known: a better plan for a large conference).

    Speaker and co-speaker rows are loaded too, so a grant-tagged voucher the bot knows under
    another type is not called unknown, nor one whose row is being created right now. Read
    them BEFORE listing Pretix (see the module's docstring), in the caller's transaction.
    """
    # An upgrade sends the grant terms, never a frozen create request; rows without a frozen
    # request (imported, upgraded) all expect the same terms: made once, shared read-only.
    grant_expected = MappingProxyType(expected_terms(config, None))
    return [
        BotRecord(
            row_id=row_id,
            code=code,
            pretix_voucher_id=pretix_id,
            state=state,
            voucher_type=voucher_type,
            original_type=original_type,
            grant_id=grant_id,
            grant_external_id=external_id,
            full_name=full_name,
            email_sent_at=email_sent_at,
            expected=grant_expected
            if original_type or payload is None
            else expected_terms(config, payload),
        )
        for (
            row_id,
            code,
            pretix_id,
            state,
            voucher_type,
            original_type,
            payload,
            email_sent_at,
            grant_id,
            external_id,
            full_name,
        ) in (
            session.connection().execute(_RECORDS_BY_CODE, {"conference": config.code})
            if conference_id is None
            else session.connection().execute(_RECORDS_BY_ID, {"conference_id": conference_id})
        ).all()
    ]


def compare_listed(
    *,
    conference: str,
    records: Sequence[BotRecord],
    vouchers: Sequence[Voucher],
    read_again: Callable[[], Sequence[BotRecord]],
) -> DriftReport:
    """Compare records read BEFORE the list with the list; explain unknowns by a second read.

    A row reserved after the records were read can be listed on a later page of the same
    list (the bot made it while the pages came): it looked unknown; a voucher the bot revoked
    meanwhile looked gone. When unknown or gone vouchers turn up, the records are read once
    more (`read_again`, one statement): the unknowns a record now names and the gone ones
    whose record is no longer a live grant voucher are dropped. Only those: the second read
    never adds drift, since a voucher created after the list was made is in no page at all.
    """
    report = compare_vouchers(conference=conference, records=records, vouchers=vouchers)
    if not (report.of_kind(DriftKind.UNKNOWN) or report.of_kind(DriftKind.GONE)):
        return report
    later = read_again()
    ids = {r.pretix_voucher_id for r in later if r.pretix_voucher_id is not None}
    codes = {r.code.upper() for r in later}
    # A record the bot revoked (or is revoking) since the first read: its voucher is gone
    # from Pretix because the bot deleted it, not drift.
    still_grant = {(r.code.upper(), r.pretix_voucher_id) for r in later if r.is_grant_record}

    def explained(item: DriftItem) -> bool:
        if item.kind is DriftKind.UNKNOWN:
            return item.pretix_voucher_id in ids or item.code.upper() in codes
        if item.kind is DriftKind.GONE:
            return (item.code.upper(), item.pretix_voucher_id) not in still_grant
        return False

    items = tuple(item for item in report.items if not explained(item))
    return replace(report, items=items)


def drift_report(ctx: ServiceContext, *, conference: str) -> DriftReport:
    """The conference's drift: the bot's records first, then Pretix's grant vouchers.

    Raises DriftError when the conference is not configured or Pretix is not; PretixError
    when Pretix cannot be read. (The digest does not call this: it compares the records it
    read with the list it made, `load_records` and `compare_vouchers`.)
    """
    config = ctx.conference(conference)
    if config is None:
        configured = ", ".join(sorted(ctx.conferences)) or "none configured"
        raise DriftError(f"unknown conference {conference!r} (configured: {configured})")
    if ctx.pretix is None:
        raise DriftError("Pretix is not configured (set PRETIX_URL and PRETIX_TOKEN)")
    with ctx.db.transaction() as session:
        records = load_records(session, config)
    event = EventRef(config.pretix_organizer, config.pretix_event)
    vouchers = list(ctx.pretix.iter_vouchers(event, tag=GRANT_TAG))
    return compare_listed(
        conference=config.code,
        records=records,
        vouchers=vouchers,
        read_again=lambda: read_records(ctx, config),
    )


def read_records(
    ctx: ServiceContext, config: ConferenceConfig, *, conference_id: int | None = None
) -> list[BotRecord]:
    """`load_records` in a transaction of its own."""
    with ctx.db.transaction() as session:
        return load_records(session, config, conference_id=conference_id)


def drift_conference(ctx: ServiceContext, given: str | None) -> str:
    """The conference a drift request is about: the one given, else the only one that issues.

    Raises DriftError naming the choices when none is given and several (or none) issue.
    """
    pick = pick_conference(ctx.conferences, given)
    if pick.code is None:
        raise DriftError(f"{pick.problem}: say which" if pick.suggested else str(pick.problem))
    return pick.code
