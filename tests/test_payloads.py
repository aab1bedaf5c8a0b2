"""The notification shapes at the edge: names, addresses and text the database can store.

Pure validation, no database: the webhook and both imports validate through these models.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bot.services.notifications import (
    GrantPayload,
    VoucherPayload,
    WebhookEvent,
    clean_name,
)


def grant(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": "1234",
        "conference": "pycon2026",
        "full_name": "Jane Doe",
        "email": "jane@example.org",
        "status": "confirmed",
        "previous_status": "waiting_for_confirmation",
        "updated_at": "2026-05-02T10:00:00Z",
    }
    values.update(fields)
    return values


def voucher(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "conference": "pycon2026",
        "email": "speaker@example.org",
        "type": "speaker",
        "code": "SPEAKER123",
    }
    values.update(fields)
    return values


def event(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": "evt_1",
        "type": "grant.updated",
        "occurred_at": "2026-05-02T10:00:00Z",
        "grant": grant(),
    }
    values.update(fields)
    return values


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(part) for part in error["loc"]) for error in exc.errors()}


# --- names (item 9) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Jane Doe", "Jane Doe"),
        ("Jane\r\nDoe", "Jane Doe"),
        ("Jane\nDoe", "Jane Doe"),
        ("Jane\rDoe", "Jane Doe"),
        ("Jane\tDoe", "Jane Doe"),
        ("  Jane \r\n\t  Doe \n", "Jane Doe"),
        ("Jane\u2028Doe", "Jane Doe"),  # line separator
        ("Jane\u2029Doe", "Jane Doe"),  # paragraph separator
        ("Jane\x85Doe", "Jane Doe"),  # next line (C1 control)
        ("Jane\x0bDoe\x0c", "Jane Doe"),  # vertical tab, form feed
        ("Jane\x1b[31mDoe", "Jane [31mDoe"),  # escape
        ("Jane\u202eeoD", "Jane eoD"),  # right-to-left override (format)
        ("\ufeffJane Doe", "Jane Doe"),  # byte order mark (format)
        ("Jane\u00a0Doe", "Jane Doe"),  # no-break space: a run of space like any other
        ("Zoë Ñúñez-Łukasz", "Zoë Ñúñez-Łukasz"),
        # zero-width non-joiner inside a Persian name: part of the spelling
        ("\u0645\u0647\u062f\u06cc\u200c\u0632\u0627\u062f\u0647",) * 2,
        ("李 小龍", "李 小龍"),
    ],
)
def test_names_lose_control_characters_and_runs_of_space(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean
    assert GrantPayload.model_validate(grant(full_name=raw)).full_name == clean


@pytest.mark.parametrize("raw", ["", "   ", "\r\n", "\t\u2028\u2029\x85", "\u202e\ufeff"])
def test_a_name_that_is_empty_once_cleaned_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GrantPayload.model_validate(grant(full_name=raw))
    assert error_fields(caught.value) == {"full_name"}


@pytest.mark.parametrize(
    "email",
    [
        "jane@example.org\r\n",
        "jane@example.org\n",
        "\tjane@example.org",
        "jane@example.org\r\nBcc: everyone@example.org",
        "ja\rne@example.org",
        "jane@example.org\x7f",
        "jane@example.org\u2028",
    ],
)
def test_an_email_address_with_control_characters_is_refused(email: str) -> None:
    with pytest.raises(ValidationError) as grant_error:
        GrantPayload.model_validate(grant(email=email))
    with pytest.raises(ValidationError) as voucher_error:
        VoucherPayload.model_validate(voucher(email=email))
    assert error_fields(grant_error.value) == {"email"}
    assert error_fields(voucher_error.value) == {"email"}


def test_an_email_address_with_plain_spaces_around_it_is_kept() -> None:
    assert GrantPayload.model_validate(grant(email="  jane@example.org ")).email == (
        "jane@example.org"
    )


# --- text the database cannot store (item 10) -----------------------------------------------


GRANT_TEXT_FIELDS = [
    "id",
    "conference",
    "full_name",
    "email",
    "status",
    "previous_status",
    "applicant_reply_sent_at",
    "applicant_reply_deadline",
    "updated_at",
    "slack_user_id",
    "admin_url",
    "approved_type",
]


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("field", GRANT_TEXT_FIELDS)
def test_unstorable_text_in_any_grant_field_is_refused_by_name(field: str, bad: str) -> None:
    values = grant(admin_url="https://backend.example.org/grants/1", slack_user_id="U0123")
    values[field] = f"{values.get(field) or 'x'}{bad}tail"

    with pytest.raises(ValidationError) as caught:
        GrantPayload.model_validate(values)

    assert error_fields(caught.value) == {field}


@pytest.mark.parametrize(
    "reimbursements",
    [
        [{"kind": "travel\x00", "amount": 100}],
        [{"kind\x00": "travel"}],
        ["\ud800"],
        [{"nested": [[["deep\x00"]]]}],
        [float("nan")],
        [{"amount": float("inf")}],
    ],
)
def test_unstorable_values_inside_reimbursements_are_refused(reimbursements: list[Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        GrantPayload.model_validate(grant(reimbursements=reimbursements))
    assert error_fields(caught.value) == {"reimbursements"}


def test_reimbursements_nested_too_deeply_are_refused_not_a_crash() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValidationError) as caught:
        GrantPayload.model_validate(grant(reimbursements=[deep]))
    assert error_fields(caught.value) == {"reimbursements"}


def test_reasonable_reimbursements_are_kept() -> None:
    value = [{"kind": "travel", "amount": 120.5, "approved": True, "notes": None}]
    assert GrantPayload.model_validate(grant(reimbursements=value)).reimbursements == value


@pytest.mark.parametrize("field", ["conference", "email", "code"])
def test_a_nul_in_any_voucher_field_is_refused_by_name(field: str) -> None:
    values = voucher()
    values[field] = values[field] + "\x00"
    with pytest.raises(ValidationError) as caught:
        VoucherPayload.model_validate(values)
    assert error_fields(caught.value) == {field}


def test_a_nul_in_the_event_id_or_type_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookEvent.model_validate(event(id="evt_\x00"))
    assert error_fields(caught.value) == {"id"}
    with pytest.raises(ValidationError) as caught:
        WebhookEvent.model_validate(event(type="grant.updated\x00"))
    assert error_fields(caught.value) == {"type"}


def test_a_nul_inside_the_grant_of_an_event_names_the_nested_field() -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookEvent.model_validate(event(grant=grant(admin_url="https://x.example/\x00")))
    assert error_fields(caught.value) == {"grant.admin_url"}


def test_a_pretix_voucher_id_beyond_the_column_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        VoucherPayload.model_validate(voucher(pretix_voucher_id=2**31))
    assert error_fields(caught.value) == {"pretix_voucher_id"}


def test_times_are_kept_in_utc() -> None:
    payload = GrantPayload.model_validate(grant(updated_at="2026-05-02T12:00:00+02:00"))
    assert payload.updated_at.utcoffset() is not None
    assert payload.updated_at.isoformat() == "2026-05-02T10:00:00+00:00"


def test_a_time_that_cannot_be_put_in_utc_is_refused_not_a_crash() -> None:
    with pytest.raises(ValidationError) as caught:
        GrantPayload.model_validate(grant(updated_at="0001-01-01T00:00:00+14:00"))
    assert error_fields(caught.value) == {"updated_at"}
