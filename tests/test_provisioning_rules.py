"""The provisioning rules, table-driven, without a database (DESIGN.md rules 1-4, holds, moves)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bot.services.provisioning_rules import (
    Action,
    ConferenceFacts,
    Decision,
    GrantFacts,
    Verdict,
    VoucherFacts,
    decide,
)
from bot.storage import EmailState, GrantStatus, VoucherState, VoucherType

NOW = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
SOON = NOW + dt.timedelta(minutes=2)
AGO = NOW - dt.timedelta(minutes=2)
GRANT_ID = 7


def grant(**fields: Any) -> GrantFacts:
    values: dict[str, Any] = {
        "id": GRANT_ID,
        "status": GrantStatus.CONFIRMED,
        "email_key": "jane@example.org",
        "hold_reason": None,
    }
    return GrantFacts(**(values | fields))


def row(**fields: Any) -> VoucherFacts:
    values: dict[str, Any] = {
        "id": 1,
        "grant_id": GRANT_ID,
        "email_key": "jane@example.org",
        "voucher_type": VoucherType.GRANT,
        "state": VoucherState.CREATED,
        "email_sent_at": AGO,
        "email_state": EmailState.SENT,
    }
    return VoucherFacts(**(values | fields))


def conf(**fields: bool) -> ConferenceFacts:
    return ConferenceFacts(
        **({"configured": True, "issue_vouchers": True, "pretix": True} | fields)
    )


ON = conf()
BAD_NAME = grant(name="Jane\r\nBcc: x@evil", email="jane@example.org")
NOTHING = Action.NOTHING
S, T, V, G, E = VoucherState, VoucherType, Verdict, GrantStatus, EmailState

CASES: list[tuple[str, dict[str, Any], Decision]] = [
    # rule 1: only a confirmed, unheld grant with a usable email gets anything
    ("refused", {"grant": grant(status=G.REFUSED)}, Decision(NOTHING, V.NOT_CONFIRMED)),
    ("no email", {"grant": grant(email_key=None)}, Decision(NOTHING, V.NO_EMAIL)),
    ("held", {"grant": grant(hold_reason="from approved")}, Decision(NOTHING, V.HELD)),
    ("unmailable", {"grant": BAD_NAME}, Decision(NOTHING, V.UNMAILABLE)),
    ("unmailable, done", {"grant": BAD_NAME, "voucher": row()}, Decision(NOTHING, V.HAS_VOUCHER)),
    ("not configured", {"conference": conf(configured=False)},
     Decision(NOTHING, V.NOT_CONFIGURED)),
    ("last year", {"conference": conf(issue_vouchers=False)},
     Decision(NOTHING, V.NOT_ISSUING)),
    # rule 4: nothing yet -> create (or wait for Pretix to be configured)
    ("new", {}, Decision(Action.CREATE)),
    ("new, pretix off", {"conference": conf(pretix=False)},
     Decision(NOTHING, V.PRETIX_OFF)),
    # rule 2: a speaker or grant voucher is enough
    ("grant done", {"voucher": row()}, Decision(NOTHING, V.HAS_VOUCHER)),
    ("speaker done", {"voucher": row(voucher_type=T.SPEAKER)}, Decision(NOTHING, V.HAS_VOUCHER)),
    ("speaker, unlinked", {"voucher": row(voucher_type=T.SPEAKER, grant_id=None,
                                          email_sent_at=None, email_state=E.NOT_DUE)},
     Decision(Action.KEEP)),
    ("speaker, email never due", {"voucher": row(voucher_type=T.SPEAKER, email_sent_at=None,
                                                 email_state=E.NOT_DUE)}, Decision(Action.KEEP)),
    ("another grant's voucher", {"voucher": row(grant_id=99)}, Decision(NOTHING, V.HAS_VOUCHER)),
    # rule 3: a co-speaker voucher is upgraded in place
    ("co-speaker", {"voucher": row(voucher_type=T.CO_SPEAKER)}, Decision(Action.UPGRADE)),
    # unfinished work
    ("creating, leased", {"voucher": row(state=S.CREATING, lease_expires_at=SOON)},
     Decision(NOTHING, V.IN_PROGRESS)),
    ("creating, lease over", {"voucher": row(state=S.CREATING, lease_expires_at=AGO)},
     Decision(Action.RESUME)),
    ("upgrading, crashed", {"voucher": row(state=S.UPGRADING)}, Decision(Action.RESUME)),
    ("revoking, leased", {"voucher": row(state=S.REVOKING, lease_expires_at=SOON)},
     Decision(NOTHING, V.IN_PROGRESS)),
    ("revoking, died", {"voucher": row(state=S.REVOKING)}, Decision(NOTHING, V.REVOKE_UNFINISHED)),
    ("revoked", {"voucher": row(state=S.REVOKED)}, Decision(Action.RESTART)),
    ("failed", {"voucher": row(state=S.FAILED)}, Decision(Action.RETRY)),
    ("needs review", {"voucher": row(state=S.NEEDS_REVIEW)}, Decision(NOTHING, V.NEEDS_REVIEW)),
    # the email changed after the voucher was issued: a person decides
    ("email moved", {"moved": row(email_key="old@example.org")},
     Decision(NOTHING, V.EMAIL_CHANGED)),
    ("email moved after a revoke", {"moved": row(email_key="old@example.org", state=S.REVOKED)},
     Decision(Action.CREATE)),
    # imported with --no-provision: the webhook path and the reconciler leave it to staff
    ("waits for staff", {"grant": grant(waits_for_staff=True)},
     Decision(NOTHING, V.WAITS_FOR_STAFF)),
    ("waits for staff, has a co-speaker voucher",
     {"grant": grant(waits_for_staff=True), "voucher": row(voucher_type=T.CO_SPEAKER)},
     Decision(NOTHING, V.WAITS_FOR_STAFF)),
    ("waits for staff, held", {"grant": grant(waits_for_staff=True, hold_reason="x")},
     Decision(NOTHING, V.HELD)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, given: dict[str, Any], expected: Decision) -> None:
    facts: dict[str, Any] = {"grant": grant(), "voucher": None, "moved": None, "conference": ON}
    assert decide(**(facts | given), now=NOW) == expected


BACKGROUND: list[tuple[str, VoucherFacts, Decision]] = [
    ("failed rows wait for staff", row(state=S.FAILED), Decision(NOTHING, V.FAILED)),
    ("a scheduled retry waits", row(state=S.CREATING, next_attempt_at=SOON),
     Decision(NOTHING, V.WAITING)),
    ("a due retry runs", row(state=S.CREATING, next_attempt_at=AGO), Decision(Action.RESUME)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "voucher", "expected"), BACKGROUND, ids=[c[0] for c in BACKGROUND]
)
def test_decide_in_the_background(name: str, voucher: VoucherFacts, expected: Decision) -> None:
    decided = decide(
        grant=grant(), voucher=voucher, moved=None, conference=ON, now=NOW,
        background=True, respect_schedule=True,
    )  # fmt: skip
    assert decided == expected


BY_STAFF: list[tuple[str, dict[str, Any], Decision]] = [
    ("a waiting grant is taken", {"grant": grant(waits_for_staff=True)}, Decision(Action.CREATE)),
    ("a waiting co-speaker is upgraded",
     {"grant": grant(waits_for_staff=True), "voucher": row(voucher_type=T.CO_SPEAKER)},
     Decision(Action.UPGRADE)),
    ("a waiting grant that is held stays held",
     {"grant": grant(waits_for_staff=True, hold_reason="from approved")},
     Decision(NOTHING, V.HELD)),
    ("a waiting grant already done", {"grant": grant(waits_for_staff=True), "voucher": row()},
     Decision(NOTHING, V.HAS_VOUCHER)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "given", "expected"), BY_STAFF, ids=[c[0] for c in BY_STAFF])
def test_decide_for_staff(name: str, given: dict[str, Any], expected: Decision) -> None:
    facts: dict[str, Any] = {"grant": grant(), "voucher": None, "moved": None, "conference": ON}
    assert decide(**(facts | given), now=NOW, by_staff=True) == expected


def test_the_reconciler_leaves_a_grant_waiting_for_staff_alone() -> None:
    decided = decide(
        grant=grant(waits_for_staff=True), voucher=None, moved=None, conference=ON, now=NOW,
        background=True, respect_schedule=True,
    )  # fmt: skip
    assert decided == Decision(NOTHING, V.WAITS_FOR_STAFF)


def test_a_decision_acts_exactly_when_there_is_work() -> None:
    assert not Decision(NOTHING, V.HAS_VOUCHER).acts
    assert all(Decision(action).acts for action in Action if action is not NOTHING)
