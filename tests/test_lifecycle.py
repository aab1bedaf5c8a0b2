"""The grant lifecycle order that breaks ties between notifications with one `updated_at`."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from bot.storage import LIFECYCLE_STAGE, GrantStatus, moves_forward, stale_reason

S = GrantStatus

# Every pair that is a forward move, by hand, so a change of the order shows up here.
FORWARD = {
    (S.PENDING, S.WAITING_LIST_MAYBE),
    (S.PENDING, S.WAITING_LIST),
    (S.PENDING, S.APPROVED),
    (S.PENDING, S.REJECTED),
    (S.PENDING, S.WAITING_FOR_CONFIRMATION),
    (S.PENDING, S.CONFIRMED),
    (S.PENDING, S.REFUSED),
    (S.PENDING, S.DIDNT_ATTEND),
    (S.WAITING_LIST_MAYBE, S.WAITING_LIST),
    (S.WAITING_LIST_MAYBE, S.APPROVED),
    (S.WAITING_LIST_MAYBE, S.REJECTED),
    (S.WAITING_LIST_MAYBE, S.WAITING_FOR_CONFIRMATION),
    (S.WAITING_LIST_MAYBE, S.CONFIRMED),
    (S.WAITING_LIST_MAYBE, S.REFUSED),
    (S.WAITING_LIST_MAYBE, S.DIDNT_ATTEND),
    (S.WAITING_LIST, S.APPROVED),
    (S.WAITING_LIST, S.REJECTED),
    (S.WAITING_LIST, S.WAITING_FOR_CONFIRMATION),
    (S.WAITING_LIST, S.CONFIRMED),
    (S.WAITING_LIST, S.REFUSED),
    (S.WAITING_LIST, S.DIDNT_ATTEND),
    (S.APPROVED, S.WAITING_FOR_CONFIRMATION),
    (S.APPROVED, S.CONFIRMED),
    (S.APPROVED, S.REFUSED),
    (S.APPROVED, S.DIDNT_ATTEND),
    (S.REJECTED, S.WAITING_FOR_CONFIRMATION),
    (S.REJECTED, S.CONFIRMED),
    (S.REJECTED, S.REFUSED),
    (S.REJECTED, S.DIDNT_ATTEND),
    (S.WAITING_FOR_CONFIRMATION, S.CONFIRMED),
    (S.WAITING_FOR_CONFIRMATION, S.REFUSED),
    (S.WAITING_FOR_CONFIRMATION, S.DIDNT_ATTEND),
    (S.CONFIRMED, S.DIDNT_ATTEND),
    (S.REFUSED, S.DIDNT_ATTEND),
}


@pytest.mark.parametrize(
    ("stored", "incoming"), list(itertools.product(GrantStatus, repeat=2)), ids=str
)
def test_a_tie_applies_only_a_forward_move(stored: GrantStatus, incoming: GrantStatus) -> None:
    assert moves_forward(stored, incoming) is ((stored, incoming) in FORWARD)


def test_every_status_has_a_stage() -> None:
    assert set(LIFECYCLE_STAGE) == set(GrantStatus)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (S.CONFIRMED, S.REFUSED),
        (S.APPROVED, S.REJECTED),
        (S.CONFIRMED, S.CONFIRMED),
    ],
)
def test_statuses_at_one_stage_never_replace_each_other_on_a_tie(
    a: GrantStatus, b: GrantStatus
) -> None:
    assert not moves_forward(a, b) and not moves_forward(b, a)


NOON = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("stored", "updated_at", "incoming", "applies"),
    [
        (S.CONFIRMED, NOON - SECOND, S.DIDNT_ATTEND, False),  # older: never
        (S.CONFIRMED, NOON, S.WAITING_FOR_CONFIRMATION, False),  # tie, backwards
        (S.CONFIRMED, NOON, S.REFUSED, False),  # tie, same stage
        (S.CONFIRMED, NOON, S.CONFIRMED, False),  # tie, same status (other fields differ)
        (S.WAITING_FOR_CONFIRMATION, NOON, S.CONFIRMED, True),  # tie, forward
        (S.CONFIRMED, NOON + SECOND, S.WAITING_FOR_CONFIRMATION, True),  # newer: always
    ],
)
def test_stale_reason(
    stored: GrantStatus, updated_at: dt.datetime, incoming: GrantStatus, applies: bool
) -> None:
    reason = stale_reason(stored_at=NOON, stored=stored, updated_at=updated_at, status=incoming)
    assert (reason is None) is applies
