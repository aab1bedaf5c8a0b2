"""When something breaks, the person who asked hears it in words, and the log has the cause."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from bot.bootstrap import Bot
from bot.slack.blocks import Message
from tests.conftest import unique
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import SIGNING_SECRET, STAFF_USER
from tests.fakes.slack_requests import signed_headers


class RecordingRespond:
    """Stands in for Bolt's `respond` (an HTTP post to Slack's response_url)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_a_failing_background_command_still_answers(running_bot: Bot) -> None:
    assert running_bot.slack is not None
    respond = RecordingRespond()

    def broken() -> Message:
        raise RuntimeError("the database went away")

    running_bot.slack.edge.answer_later("test job", respond, broken)  # type: ignore[arg-type]
    running_bot.worker.join(timeout=5)

    [answer] = respond.calls
    assert "Something went wrong" in answer["text"]
    assert answer["response_type"] == "ephemeral"


def test_a_listener_error_is_logged_and_told_to_the_user(
    http: httpx.Client, slack_api: FakeSlack, running_bot: Bot
) -> None:
    name = unique("resp")
    # A malformed command (no user_id) makes the listener fail.
    body = urlencode(
        {
            "command": "/voucher",
            "text": "status 1234",
            "team_id": "T0TEAM",
            "channel_id": "C0STAFF",
            "response_url": slack_api.response_url(name),
            "trigger_id": unique("trigger"),
        }
    )
    response = http.post(
        "/slack/events", content=body, headers=signed_headers(body, secret=SIGNING_SECRET)
    )

    assert response.status_code == 500
    running_bot.worker.join(timeout=5)
    [told] = slack_api.wait_for_response(name, count=1, timeout=5)
    assert "Something went wrong" in told["text"]
    assert STAFF_USER not in told["text"]


def test_socket_mode_that_cannot_connect_does_not_stop_the_bot(
    make_running_bot: Any, slack_api: FakeSlack
) -> None:
    from bot.server import create_web_app
    from tests.conftest import serve_app

    bot = make_running_bot(slack_app_token="xapp-1-test")
    with serve_app(create_web_app(bot, run_background=True)) as client:
        slack_api.wait_for("apps.connections.open", count=1, timeout=10)
        assert client.get("/healthz").status_code == 200
    # Leaving the block shut the server down cleanly while Socket Mode was still retrying.


def test_socket_mode_only_has_no_unsigned_http_endpoint(
    make_running_bot: Any, slack_api: FakeSlack
) -> None:
    from bot.server import create_web_app
    from tests.conftest import serve_app
    from tests.fakes.slack_requests import slash_command_body

    bot = make_running_bot(slack_app_token="xapp-1-test", slack_signing_secret=None)
    body = slash_command_body(
        text="status 1234", user_id=STAFF_USER, response_url=slack_api.response_url("x")
    )
    with serve_app(create_web_app(bot, run_background=False)) as client:
        response = client.post("/slack/events", content=body)
    assert response.status_code == 404
    bot.worker.join(timeout=5)
    assert slack_api.responses("x") == []
