"""`POST /hooks/grants` exactly as CONTRACT.md says, against the real HTTP app."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.server import create_web_app
from bot.storage import ConferenceVoucher, Grant, GrantStatus, InboundEvent, VoucherType
from bot.webhook import sign
from tests.conftest import WEBHOOK_SECRET, serve_app, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import post_slack_outbox


def event(conference: str, **grant: Any) -> dict[str, Any]:
    ident = grant.pop("id", unique(""))
    body: dict[str, Any] = {
        "id": unique("evt_"),
        "type": "grant.updated",
        "occurred_at": "2026-05-02T10:00:00Z",
        "grant": {
            "id": ident,
            "conference": conference,
            "full_name": "Jane Doe",
            "email": f"jane.{ident}@example.org",
            "status": "confirmed",
            "previous_status": "waiting_for_confirmation",
            "applicant_reply_sent_at": "2026-04-20T09:00:00Z",
            "applicant_reply_deadline": "2026-05-04T23:59:59Z",
            "updated_at": "2026-05-02T10:00:00Z",
        },
    }
    body["grant"].update(grant)
    return body


def deliver(
    http: httpx.Client,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Grants-Timestamp": stamp,
        "X-Grants-Signature": sign(secret, stamp, raw),
    }
    return http.post("/hooks/grants", content=raw, headers=headers)


def grant_by_ident(bot: Bot, ident: str) -> Grant | None:
    with bot.db.transaction() as session:
        return session.scalars(select(Grant).where(Grant.external_id == ident)).one_or_none()


def test_confirmation_is_accepted_provisioned_and_threaded(
    http: httpx.Client,
    running_bot: Bot,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    slack_api: FakeSlack,
) -> None:
    body = event(conference.code)

    response = deliver(http, body)

    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    running_bot.background.join(timeout=20)
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1
    post_slack_outbox(running_bot)
    parent, *replies = slack_api.calls("chat.postMessage")
    assert "Jane Doe" in parent.args["text"] and "confirmed their grant" in parent.args["text"]
    assert replies and all(r.args["thread_ts"] == parent.response["ts"] for r in replies)
    [update] = slack_api.calls("chat.update")[-1:]
    assert update.args["ts"] == parent.response["ts"]  # the parent shows the latest state


def test_bad_or_stale_signature_is_refused_and_nothing_is_stored(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig, pretix_server: FakePretix
) -> None:
    body = event(conference.code)
    ident = body["grant"]["id"]

    forged = deliver(http, body, secret="guess")
    stale = deliver(http, body, timestamp=int(time.time()) - 301)
    unsigned = http.post("/hooks/grants", json=body)

    assert [forged.status_code, stale.status_code, unsigned.status_code] == [401, 401, 401]
    assert "stale" in stale.json()["error"]
    running_bot.background.join(timeout=5)
    assert grant_by_ident(running_bot, ident) is None
    assert pretix_server.requests == []


def test_malformed_bodies_get_400_with_reasons(
    http: httpx.Client, conference: ConferenceConfig
) -> None:
    not_json = deliver(http, b"{not json")
    missing = event(conference.code)
    del missing["grant"]["updated_at"]
    bad_email = event(conference.code, email="not-an-email")
    wrong_type = {**event(conference.code), "type": "grant.deleted"}

    assert not_json.status_code == 400
    for body, field in ((missing, "updated_at"), (bad_email, "email"), (wrong_type, "type")):
        response = deliver(http, body)
        assert response.status_code == 400
        assert any(field in reason for reason in response.json()["errors"])


@pytest.mark.parametrize(
    ("grant_fields", "field"),
    [
        ({"full_name": "Jane\x00Doe"}, "grant.full_name"),
        ({"admin_url": "https://backend.example.org/\x00"}, "grant.admin_url"),
        ({"slack_user_id": "U0123\x00"}, "grant.slack_user_id"),
        ({"reimbursements": [{"kind": "travel\x00"}]}, "grant.reimbursements"),
        ({"id": "12\x0034"}, "grant.id"),
    ],
)
def test_a_nul_anywhere_gets_400_naming_the_field_and_nothing_is_stored(
    http: httpx.Client,
    running_bot: Bot,
    conference: ConferenceConfig,
    grant_fields: dict[str, Any],
    field: str,
) -> None:
    body = event(conference.code, **grant_fields)

    response = deliver(http, body)

    assert response.status_code == 400
    assert any(reason.startswith(f"{field}:") for reason in response.json()["errors"])
    with running_bot.db.transaction() as session:
        stored = session.scalars(select(InboundEvent).where(InboundEvent.event_id == body["id"]))
        assert stored.all() == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"id": "evt_\\u0000", "type": "grant.updated"}', "id"),
        (b'{"id": "evt_\\ud800", "type": "grant.updated"}', "id"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"id": NaN}', "body"),
        (b"\xff\xfe{}", "body"),
    ],
    ids=["nul-escape", "lone-surrogate", "deeply-nested", "nan", "not-utf8"],
)
def test_bodies_the_database_cannot_store_get_400_not_500(
    http: httpx.Client, raw: bytes, field: str
) -> None:
    response = deliver(http, raw)

    assert response.status_code == 400
    assert any(reason.startswith(f"{field}:") for reason in response.json()["errors"])


def test_a_reimbursement_that_is_not_a_finite_number_gets_400(
    http: httpx.Client, conference: ConferenceConfig
) -> None:
    body = json.dumps(event(conference.code)).replace(
        '"updated_at"', '"reimbursements": [{"amount": 1e999}], "updated_at"', 1
    )

    response = deliver(http, body.encode())

    assert response.status_code == 400
    assert any(r.startswith("grant.reimbursements:") for r in response.json()["errors"])


def test_unknown_conference_gets_422(http: httpx.Client) -> None:
    response = deliver(http, event("pycon1999"))
    assert response.status_code == 422
    assert "pycon1999" in response.json()["error"]


def test_a_redelivered_event_is_a_duplicate_and_changes_nothing(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig, pretix_server: FakePretix
) -> None:
    body = event(conference.code)

    first = deliver(http, body)
    running_bot.background.join(timeout=20)
    again = deliver(http, body)
    running_bot.background.join(timeout=5)

    assert first.status_code == 202
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert len(pretix_server.all_vouchers()) == 1


def test_out_of_order_events_never_move_the_status_backwards(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig, pretix_server: FakePretix
) -> None:
    ident = unique("")
    newer = event(conference.code, id=ident, status="refused", updated_at="2026-05-03T10:00:00Z")
    older = event(conference.code, id=ident, status="confirmed", updated_at="2026-05-02T10:00:00Z")

    assert deliver(http, newer).status_code == 202
    late = deliver(http, older)
    running_bot.background.join(timeout=5)

    assert late.status_code == 202 and late.json()["result"] == "stale"
    grant = grant_by_ident(running_bot, ident)
    assert grant is not None and grant.status is GrantStatus.REFUSED
    assert pretix_server.requests == []
    with running_bot.db.transaction() as session:
        recorded = session.scalars(
            select(InboundEvent.result).where(InboundEvent.event_id == older["id"])
        ).one()
    assert recorded == "stale"


def test_voucher_updated_records_a_speaker_voucher(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig
) -> None:
    email = f"{unique('speaker')}@example.org"
    body = {
        "id": unique("evt_"),
        "type": "voucher.updated",
        "occurred_at": "2026-05-02T10:00:00Z",
        "voucher": {
            "conference": conference.code,
            "email": email,
            "type": "speaker",
            "code": "spk-code-001",
            "pretix_voucher_id": 41,
        },
    }

    response = deliver(http, body)

    assert response.status_code == 202
    with running_bot.db.transaction() as session:
        voucher = session.scalars(
            select(ConferenceVoucher).where(ConferenceVoucher.email_key == email)
        ).one()
    assert (voucher.voucher_type, voucher.code) == (VoucherType.SPEAKER, "SPK-CODE-001")


def test_held_confirmation_is_not_issued_and_says_why_in_the_thread(
    http: httpx.Client,
    running_bot: Bot,
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    slack_api: FakeSlack,
) -> None:
    response = deliver(http, event(conference.code, previous_status="waiting_list"))
    running_bot.background.join(timeout=5)

    assert response.status_code == 202
    assert pretix_server.requests == []
    post_slack_outbox(running_bot)
    texts = " ".join(call.args["text"] for call in slack_api.calls("chat.postMessage"))
    assert "waiting_list" in texts or "waiting list" in texts


def test_the_webhook_is_off_without_a_secret(
    make_running_bot: Any, conference: ConferenceConfig
) -> None:
    bot = make_running_bot(grants_webhook_secret=None)
    with serve_app(create_web_app(bot, run_background=False)) as client:
        response = deliver(client, event(conference.code))
    assert response.status_code == 503
    assert "GRANTS_WEBHOOK_SECRET" in response.json()["error"]


def test_a_non_ascii_signature_is_refused_not_a_crash(
    http: httpx.Client, conference: ConferenceConfig
) -> None:
    raw = json.dumps(event(conference.code)).encode()
    headers = {
        b"Content-Type": b"application/json",
        b"X-Grants-Timestamp": str(int(time.time())).encode(),
        b"X-Grants-Signature": "v1=\u00e9\u00e9".encode("latin-1"),  # a forger's bytes
    }
    response = http.post("/hooks/grants", content=raw, headers=headers)
    assert response.status_code == 401


def test_a_burst_of_confirmations_is_left_to_the_reconciler_not_queued_forever(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig, pretix_server: FakePretix
) -> None:
    import threading

    from bot.services.reconciler import reconcile_once
    from bot.webhook import BACKLOG_LIMIT

    release = threading.Event()
    for _ in range(BACKLOG_LIMIT):  # the background pool is stuck behind slow work
        running_bot.background.submit("slow job", release.wait)
    try:
        assert deliver(http, event(conference.code)).status_code == 202
        assert running_bot.background.backlog == BACKLOG_LIMIT  # nothing more was queued
    finally:
        release.set()
    running_bot.background.join(timeout=10)
    assert pretix_server.all_vouchers() == []

    [issued] = reconcile_once(running_bot.services).provisioned
    assert issued.has_voucher and len(pretix_server.all_vouchers()) == 1
