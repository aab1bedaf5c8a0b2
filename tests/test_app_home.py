"""App Home: staff see the digest's picture live with its buttons, others a short note.

Signed `app_home_opened` events and clicks to the real HTTP app; views reach the fake
Slack's views.publish through the outbox.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.bootstrap import Bot
from bot.services.context import ServiceContext
from bot.services.home import HomePicture, home_picture
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.services.outcomes import GrantIntake, IntakeAction
from bot.services.staff import StaffDirectory
from bot.slack.blocks import HELD_DISMISS_ACTION, HELD_ISSUE_ACTION, RETRY_ACTION
from bot.slack.blocks.home import MAX_HOME_BLOCKS
from bot.slack.home import HomeTab
from bot.slack.outbox import Outbox
from bot.storage import (
    BulkItem,
    BulkItemState,
    BulkRequest,
    BulkStatus,
    Conference,
    OutboxKind,
    SlackOutbox,
)
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GUEST_USER, SIGNING_SECRET, STAFF_USER
from tests.fakes.slack_requests import app_home_opened_body, block_action_body, signed_headers
from tests.helpers import post_slack_outbox


def post(http: httpx.Client, body: str, **header_options: Any) -> httpx.Response:
    headers = signed_headers(body, secret=SIGNING_SECRET, content_type="application/json")
    if header_options:
        headers = signed_headers(
            body, secret=SIGNING_SECRET, content_type="application/json", **header_options
        )
    return http.post("/slack/events", content=body, headers=headers)


def open_home(http: httpx.Client, running_bot: Bot, user: str, **options: Any) -> httpx.Response:
    response = post(http, app_home_opened_body(user_id=user, **options))
    assert response.status_code == 200
    running_bot.worker.join(timeout=20)
    post_slack_outbox(running_bot)
    return response


def buttons(view: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for block in view["blocks"]:
        elements = list(block.get("elements", []))
        if "accessory" in block:
            elements.append(block["accessory"])
        found += [(e["action_id"], e["value"]) for e in elements if e.get("type") == "button"]
    return found


def home_rows(bot: Bot, user: str) -> int:
    with bot.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(SlackOutbox)
                .where(SlackOutbox.kind == OutboxKind.HOME, SlackOutbox.user == user)
            )
            or 0
        )


@pytest.fixture
def bot_ctx(running_bot: Bot) -> ServiceContext:
    return running_bot.services


@pytest.fixture
def picture_grants(
    bot_ctx: ServiceContext, grant_payload: Callable[..., GrantPayload]
) -> dict[str, int]:
    """A held grant, a confirmed one without a voucher (stuck), and a bulk request waiting."""
    held = ingest_grant(
        bot_ctx, payload=grant_payload(previous_status="waiting_list"), actor=TEST_ACTOR
    )
    stuck = ingest_grant(bot_ctx, payload=grant_payload(full_name="Stu Ck"), actor=TEST_ACTOR)
    assert held.grant is not None and stuck.grant is not None
    now = dt.datetime.now(dt.UTC)
    with bot_ctx.db.transaction() as session:
        request = BulkRequest(
            conference_id=held.grant.conference_id,
            requested_by=STAFF_USER,
            status=BulkStatus.AWAITING_APPROVAL,
            expires_at=now + dt.timedelta(hours=2),
        )
        session.add(request)
        session.flush()
        session.add(
            BulkItem(
                request_id=request.id,
                grant_id=stuck.grant.id,
                position=0,
                branch="new",
                state=BulkItemState.PENDING,
            )
        )
        expired = BulkRequest(
            conference_id=held.grant.conference_id,
            requested_by=STAFF_USER,
            status=BulkStatus.AWAITING_APPROVAL,
            expires_at=now - dt.timedelta(minutes=1),
        )
        session.add(expired)
        session.flush()
        ids = {"bulk": request.id, "expired": expired.id}
    return {"held": held.grant.id, "stuck": stuck.grant.id, **ids}


def test_staff_see_the_live_picture_with_its_buttons(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    picture_grants: dict[str, int],
) -> None:
    open_home(http, running_bot, STAFF_USER)

    view = slack_api.home(STAFF_USER)
    assert view is not None and view["type"] == "home"
    assert len(view["blocks"]) <= MAX_HOME_BLOCKS
    found = buttons(view)
    held, stuck = str(picture_grants["held"]), str(picture_grants["stuck"])
    assert (HELD_ISSUE_ACTION, held) in found and (HELD_DISMISS_ACTION, held) in found
    assert (RETRY_ACTION, stuck) in found
    shown = json.dumps(view["blocks"], ensure_ascii=False)
    assert f"Bulk request #{picture_grants['bulk']} by <@{STAFF_USER}>: 1 grantees" in shown
    assert f"#{picture_grants['expired']}" not in shown  # expired: not awaiting any more
    assert "1 held" in shown and "Stu Ck" in shown  # today's numbers and the stuck grantee


def test_others_see_a_short_note_and_no_buttons(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    picture_grants: dict[str, int],
) -> None:
    open_home(http, running_bot, GUEST_USER)

    view = slack_api.home(GUEST_USER)
    assert view is not None and view["type"] == "home"
    assert buttons(view) == []
    shown = json.dumps(view["blocks"])
    assert "only grants staff" in shown
    assert "Stu Ck" not in shown


def test_a_redelivered_app_home_opened_is_answered_once(
    http: httpx.Client, slack_api: FakeSlack, running_bot: Bot
) -> None:
    before = home_rows(running_bot, STAFF_USER)  # the database is shared by every test
    body = app_home_opened_body(user_id=STAFF_USER)
    first = post(http, body)
    running_bot.worker.join(timeout=20)
    again = post(http, body, retry_num=1, retry_reason="http_timeout")
    running_bot.worker.join(timeout=20)

    assert first.status_code == again.status_code == 200
    assert again.headers.get("x-slack-no-retry") == "1"
    assert home_rows(running_bot, STAFF_USER) == before + 1
    post_slack_outbox(running_bot)
    published = [c for c in slack_api.calls("views.publish") if c.args["user_id"] == STAFF_USER]
    assert len(published) == 1


def test_the_messages_tab_publishes_nothing(
    http: httpx.Client, slack_api: FakeSlack, running_bot: Bot
) -> None:
    before = home_rows(running_bot, STAFF_USER)
    open_home(http, running_bot, STAFF_USER, tab="messages")
    assert home_rows(running_bot, STAFF_USER) == before


def test_a_click_in_home_answers_on_top_of_the_refreshed_home(
    http: httpx.Client,
    slack_api: FakeSlack,
    running_bot: Bot,
    picture_grants: dict[str, int],
    pretix_server: FakePretix,
) -> None:
    open_home(http, running_bot, STAFF_USER)
    home = slack_api.home(STAFF_USER)
    assert home is not None
    click = json.loads(
        _payload(
            block_action_body(
                action_id=HELD_ISSUE_ACTION,
                value=str(picture_grants["held"]),
                user_id=STAFF_USER,
                response_url="",
            )
        )
    )
    # As Slack sends a click in a Home view: a view container, the view, no response_url.
    click["container"] = {"type": "view", "view_id": home["id"]}
    click["view"] = home
    del click["response_url"], click["message"], click["channel"]
    body = "payload=" + _quote(json.dumps(click))
    response = http.post(
        "/slack/events", content=body, headers=signed_headers(body, secret=SIGNING_SECRET)
    )
    assert response.status_code == 200
    running_bot.worker.join(timeout=20)
    post_slack_outbox(running_bot)

    [voucher] = pretix_server.all_vouchers()
    view = slack_api.home(STAFF_USER)
    assert view is not None
    shown = json.dumps(view["blocks"], ensure_ascii=False)
    assert voucher["code"] in shown  # the staff member's own answer, at the top
    held = str(picture_grants["held"])
    assert (HELD_ISSUE_ACTION, held) not in buttons(view)  # decided: no longer held


def test_refreshes_are_debounced_and_reach_only_recent_staff_viewers(
    bot_ctx: ServiceContext, running_bot: Bot, slack_api: FakeSlack
) -> None:
    builds: list[dt.datetime] = []
    refreshed = threading.Event()
    clock = [dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC)]
    staff_user, guest, stale = (unique(prefix).upper() for prefix in ("U0S", "U0G", "U0O"))
    for user in (staff_user, guest, stale):
        slack_api.add_user(user, email=f"{user.lower()}@example.org", name=user.lower())

    def picture(ctx: ServiceContext, now: dt.datetime) -> HomePicture:
        builds.append(now)
        if len(builds) > 2:
            refreshed.set()
        return home_picture(ctx, now=now)

    staff = StaffDirectory(user_ids=[staff_user, stale])
    home = HomeTab(
        services=bot_ctx,
        staff=staff,
        outbox=Outbox(bot_ctx.db),
        debounce=dt.timedelta(milliseconds=200),
        recent=dt.timedelta(minutes=30),
        clock=lambda: clock[0],
        picture=picture,
    )
    home.opened(staff_user)
    home.opened(guest)  # not staff: a note, no picture, never refreshed
    home.opened(stale)  # staff, but this open will be too long ago for a refresh
    assert len(builds) == 1  # the second staff open within the debounce reuses the picture
    clock[0] += dt.timedelta(minutes=31)
    home.opened(staff_user)  # a fresh open: rebuilt (the cached picture is old)

    intake = GrantIntake(IntakeAction.UPDATED, "changed")
    for _ in range(25):  # a burst of outcomes
        home.publish(intake)
    assert refreshed.wait(timeout=5)
    deadline = time.monotonic() + 5  # the refresh thread writes its row right after building
    while home_rows(running_bot, staff_user) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # longer than the debounce: a second refresh would have come by now
    home.close()

    assert len(builds) == 3  # the open, the fresh open, ONE refresh for the whole burst
    assert home_rows(running_bot, staff_user) == 3
    assert home_rows(running_bot, guest) == 1
    assert home_rows(running_bot, stale) == 1  # only its own open
    post_slack_outbox(running_bot)
    assert slack_api.home(staff_user) is not None and slack_api.home(guest) is not None


def _payload(body: str) -> str:
    from urllib.parse import parse_qs

    return parse_qs(body)["payload"][0]


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_home_picture_has_every_configured_conference(
    bot_ctx: ServiceContext, picture_grants: dict[str, int]
) -> None:
    picture = home_picture(bot_ctx, now=dt.datetime.now(dt.UTC))
    [conference] = picture.conferences
    with bot_ctx.db.transaction() as session:
        code = session.scalar(
            select(Conference.code).where(Conference.code.in_(bot_ctx.conferences))
        )
    assert conference.digest.conference == code
    assert [b.id for b in conference.bulk] == [picture_grants["bulk"]]
    assert [h.grant.id for h in conference.digest.held] == [picture_grants["held"]]


def test_the_event_request_url_answers_slacks_challenge(http: httpx.Client) -> None:
    from tests.fakes.slack_requests import url_verification_body

    response = post(http, url_verification_body("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7"))
    assert response.status_code == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7" in response.text
