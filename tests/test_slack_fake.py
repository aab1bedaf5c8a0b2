"""FakeSlack and the request builders behave as Slack does, checked with the real slack_sdk.

The client is slack_sdk's own WebClient with the retry handlers the bot uses; signatures are
checked with slack_sdk's SignatureVerifier and with Bolt's own request verification.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.context.ack import Ack
from slack_bolt.context.respond import Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from tests.fakes import slack_fixtures
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import (
    BOT_TOKEN,
    GRANTS_CHANNEL,
    GUEST_USER,
    SIGNING_SECRET,
    STAFF_CHANNEL,
    STAFF_GROUP,
    STAFF_USER,
    STAFF_USER_2,
)
from tests.fakes.slack_requests import (
    DEFAULT_MESSAGE_TS,
    FORM,
    JSON,
    block_action_body,
    event_callback_body,
    signed_headers,
    slash_command_body,
)

# The fixtures, bound here so this file runs whether or not tests/conftest.py lists
# "tests.fakes.slack_fixtures" in pytest_plugins (a module's own fixtures take precedence).
slack_api = slack_fixtures.slack_api
slack_client = slack_fixtures.slack_client

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*Jane Doe* - grant"}}


def section(text: str) -> dict[str, Any]:
    """A section block with mrkdwn text."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def error_of(exc: pytest.ExceptionInfo[SlackApiError]) -> Any:
    """The `error` string of a SlackApiError's response."""
    return exc.value.response["error"]


# --- Web API methods ----------------------------------------------------------------------------


def test_auth_test_answers_as_the_bot_and_bad_tokens_are_refused(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    me = slack_client.auth_test()
    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxb-wrong", base_url=slack_api.api_url).auth_test()

    assert (me["ok"], me["user_id"], me["bot_id"], me["team_id"]) == (
        True,
        "UBOT",
        "BBOT",
        "T0TEAM",
    )
    assert me["url"].startswith("https://")
    assert error_of(wrong) == "invalid_auth"
    assert wrong.value.response.status_code == 200  # Slack reports API errors with HTTP 200
    call = slack_api.calls("auth.test")[0]
    assert call.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert call.token == BOT_TOKEN
    assert (call.status, call.response["ok"]) == (200, True)


def test_a_token_in_the_form_body_counts_and_no_token_is_not_authed(slack_api: FakeSlack) -> None:
    with_form_token = httpx.post(
        f"{slack_api.api_url}auth.test", data={"token": BOT_TOKEN}, timeout=5
    )
    without = httpx.post(f"{slack_api.api_url}auth.test", timeout=5)
    json_token_only = httpx.post(
        f"{slack_api.api_url}auth.test", json={"token": BOT_TOKEN}, timeout=5
    )

    assert with_form_token.json()["ok"] is True
    assert without.json() == {"ok": False, "error": "not_authed"}
    # Slack reads the token of a JSON body only from the Authorization header.
    assert json_token_only.json() == {"ok": False, "error": "not_authed"}
    assert without.headers["content-type"] == "application/json; charset=utf-8"


def test_post_message_returns_increasing_ts_and_records_thread_and_blocks(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    parent = slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="Run", blocks=[SECTION])
    reply = slack_client.chat_postMessage(
        channel=GRANTS_CHANNEL, text="Progress 1/3", thread_ts=parent["ts"]
    )
    other = slack_client.chat_postMessage(channel=STAFF_CHANNEL, text="Hi")

    assert parent["ts"] == DEFAULT_MESSAGE_TS == "1767225600.000100"
    assert [parent["ts"], reply["ts"], other["ts"]] == sorted(
        {parent["ts"], reply["ts"], other["ts"]}, key=float
    )
    assert parent["channel"] == GRANTS_CHANNEL
    assert parent["message"]["blocks"] == [SECTION]
    assert parent["message"]["text"] == "Run"
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert "thread_ts" not in parent["message"]
    first, second, _ = slack_api.calls("chat.postMessage")
    assert first.args["blocks"] == [SECTION]  # slack_sdk sends chat.* as JSON
    assert first.headers["content-type"].startswith("application/json")
    assert second.args["thread_ts"] == parent["ts"]
    stored = slack_api.message(GRANTS_CHANNEL, parent["ts"])
    assert stored is not None
    assert (stored["reply_count"], stored["latest_reply"]) == (1, reply["ts"])
    assert [m["ts"] for m in slack_api.messages(GRANTS_CHANNEL)] == [parent["ts"], reply["ts"]]


def test_form_encoded_post_message_with_blocks_as_a_json_string(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    posted = slack_client.api_call(
        "chat.postMessage",
        params={"channel": GRANTS_CHANNEL, "text": "Form", "blocks": json.dumps([SECTION])},
    )

    call = slack_api.calls("chat.postMessage")[0]
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.args["blocks"] == json.dumps([SECTION])  # recorded as sent
    assert posted["message"]["blocks"] == [SECTION]  # understood as Slack does


def test_messages_without_text_or_with_bad_blocks_are_refused(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    # api_call skips slack_sdk's client-side "text is missing" warning.
    with pytest.raises(SlackApiError) as no_text:
        slack_client.api_call("chat.postMessage", json={"channel": GRANTS_CHANNEL})
    with pytest.raises(SlackApiError) as too_many:
        slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="x", blocks=[section("b")] * 51)
    with pytest.raises(SlackApiError) as too_long:
        slack_client.chat_postMessage(
            channel=GRANTS_CHANNEL, text="x", blocks=[section("y" * 3001)]
        )

    assert error_of(no_text) == "no_text"
    assert error_of(too_many) == "invalid_blocks"
    assert error_of(too_long) == "invalid_blocks"
    assert too_long.value.response["errors"] == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    assert slack_api.messages() == []
    ok = slack_client.chat_postMessage(
        channel=GRANTS_CHANNEL, text="x", blocks=[section("y" * 3000)] * 50
    )
    assert ok["ok"] is True


def test_chat_update_edits_a_stored_message_and_refuses_unknown_ones(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    card = slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="Approve?", blocks=[SECTION])
    updated = slack_client.chat_update(
        channel=GRANTS_CHANNEL, ts=card["ts"], text="Approved by <@U0STAFF2>", blocks=[]
    )
    ephemeral = slack_client.chat_postEphemeral(
        channel=GRANTS_CHANNEL, user=GUEST_USER, text="psst"
    )
    with pytest.raises(SlackApiError) as unknown:
        slack_client.chat_update(channel=GRANTS_CHANNEL, ts="1.000001", text="x")
    with pytest.raises(SlackApiError) as edit_ephemeral:
        slack_client.chat_update(channel=GRANTS_CHANNEL, ts=ephemeral["message_ts"], text="x")
    someone_else = slack_api.seed_message(GRANTS_CHANNEL, text="mine", user=STAFF_USER)
    with pytest.raises(SlackApiError) as not_ours:
        slack_client.chat_update(channel=GRANTS_CHANNEL, ts=someone_else, text="x")

    assert (updated["channel"], updated["ts"], updated["text"]) == (
        GRANTS_CHANNEL,
        card["ts"],
        "Approved by <@U0STAFF2>",
    )
    assert slack_api.message(GRANTS_CHANNEL, card["ts"]) == {
        **card["message"],
        "text": "Approved by <@U0STAFF2>",
        "blocks": [],
    }
    assert ephemeral["message_ts"] > card["ts"]
    assert error_of(unknown) == "message_not_found"
    assert error_of(edit_ephemeral) == "message_not_found"  # ephemeral messages cannot be edited
    assert error_of(not_ours) == "cant_update_message"


def test_users_info_with_and_without_email(slack_api: FakeSlack, slack_client: WebClient) -> None:
    slack_api.add_user("U0NOMAIL", name="carol")
    alice = slack_client.users_info(user=STAFF_USER)["user"]
    carol = slack_client.users_info(user="U0NOMAIL")["user"]
    with pytest.raises(SlackApiError) as unknown:
        slack_client.users_info(user="U0NOBODY")

    assert alice["id"] == STAFF_USER
    assert alice["profile"]["email"] == "alice@pycon.example.org"
    assert (alice["real_name"], alice["deleted"], alice["is_bot"]) == ("Alice Rossi", False, False)
    assert carol["name"] == "carol"
    assert "email" not in carol["profile"]
    assert error_of(unknown) == "user_not_found"
    assert slack_api.calls("users.info")[0].args["user"] == STAFF_USER  # sent as a form field


def test_emails_need_the_scope_and_lookup_skips_deactivated_users(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    found = slack_client.users_lookupByEmail(email="BOB@pycon.example.org")["user"]
    slack_api.add_user("U0GONE", email="gone@example.org", deleted=True)
    with pytest.raises(SlackApiError) as deactivated:
        slack_client.users_lookupByEmail(email="gone@example.org")
    slack_api.email_scope = False
    hidden = slack_client.users_info(user=STAFF_USER)["user"]
    with pytest.raises(SlackApiError) as no_scope:
        slack_client.users_lookupByEmail(email="bob@pycon.example.org")

    assert found["id"] == STAFF_USER_2
    assert error_of(deactivated) == "users_not_found"
    assert "email" not in hidden["profile"]
    assert error_of(no_scope) == "missing_scope"
    assert no_scope.value.response["needed"] == "users:read.email"


def test_usergroups_members_unknown_group_and_free_plan(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    members = slack_client.usergroups_users_list(usergroup=STAFF_GROUP)["users"]
    with pytest.raises(SlackApiError) as unknown:
        slack_client.usergroups_users_list(usergroup="S0NOPE")
    slack_api.free_plan = True
    with pytest.raises(SlackApiError) as free:
        slack_client.usergroups_users_list(usergroup=STAFF_GROUP)

    assert members == [STAFF_USER, STAFF_USER_2]
    assert error_of(unknown) == "no_such_subteam"
    assert error_of(free) == "plan_upgrade_required"


def test_conversations_info_and_unknown_methods(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    channel = slack_client.conversations_info(channel=GRANTS_CHANNEL)["channel"]
    with pytest.raises(SlackApiError) as missing:
        slack_client.conversations_info(channel="C0NOPE")
    with pytest.raises(SlackApiError) as unknown:
        slack_client.api_call("reactions.add", params={"channel": GRANTS_CHANNEL})

    assert (channel["id"], channel["name"], channel["is_private"]) == (
        GRANTS_CHANNEL,
        "grants",
        False,
    )
    assert error_of(missing) == "channel_not_found"
    assert error_of(unknown) == "unknown_method"


# --- faults -------------------------------------------------------------------------------------


def test_a_429_is_retried_by_the_sdk_handler_after_retry_after(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    slack_api.rate_limit_next("chat.postMessage", retry_after=0)

    posted = slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="hello")

    assert posted["ok"] is True
    assert slack_api.count("chat.postMessage") == 2
    limited, succeeded = slack_api.calls("chat.postMessage")
    assert (limited.status, limited.error, succeeded.status) == (429, "ratelimited", 200)
    assert len(slack_api.messages()) == 1  # the refused attempt posted nothing


def test_rate_limits_beyond_the_retries_surface_with_retry_after(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    slack_api.rate_limit_next("users.info", retry_after=0, times=3)
    with pytest.raises(SlackApiError) as limited:
        slack_client.users_info(user=STAFF_USER)
    raw = httpx.post(
        f"{slack_api.api_url}users.info",
        headers={"Authorization": f"Bearer {BOT_TOKEN}"},
        data={"user": STAFF_USER},
        timeout=5,
    )
    slack_api.rate_limit_next("users.info", retry_after=7)
    refused = httpx.post(f"{slack_api.api_url}users.info", timeout=5)

    assert limited.value.response.status_code == 429
    assert error_of(limited) == "ratelimited"
    assert slack_api.count("users.info") == 5  # three 429s (1 + 2 retries), raw, refused
    assert raw.json()["ok"] is True
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    assert refused.json() == {"ok": False, "error": "ratelimited"}


def test_fail_next_raises_slack_api_error_once(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    slack_api.fail_next("chat.postMessage", "channel_not_found")

    with pytest.raises(SlackApiError) as failed:
        slack_client.chat_postMessage(channel="C0ARCHIVED", text="x")
    again = slack_client.chat_postMessage(channel="C0ARCHIVED", text="x")

    assert error_of(failed) == "channel_not_found"
    assert failed.value.response.status_code == 200
    assert again["ok"] is True
    assert [c.error for c in slack_api.calls("chat.postMessage")] == ["channel_not_found", None]


def test_server_errors_are_retried_once_then_surface(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    slack_api.server_error_next("conversations.info")
    retried = slack_client.conversations_info(channel=STAFF_CHANNEL)
    slack_api.server_error_next("conversations.info", 500, times=2)
    with pytest.raises(SlackApiError) as failed:
        slack_client.conversations_info(channel=STAFF_CHANNEL)

    assert retried["channel"]["name"] == "voucher-staff"
    assert [c.status for c in slack_api.calls("conversations.info")] == [503, 200, 500, 500]
    assert failed.value.response.status_code == 500


def test_latency_wait_for_and_reset(slack_api: FakeSlack, slack_client: WebClient) -> None:
    slack_api.latency = 0.2
    worker = threading.Thread(
        target=lambda: slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="later")
    )
    started = time.monotonic()
    worker.start()
    calls = slack_api.wait_for("chat.postMessage", 1, timeout=5)
    waited = time.monotonic() - started
    worker.join()
    with pytest.raises(AssertionError, match=r"chat\.update"):
        slack_api.wait_for("chat.update", 1, timeout=0.05)
    slack_api.fail_next("auth.test", "account_inactive")
    slack_api.reset()

    assert waited >= 0.2
    assert calls[0].args["text"] == "later"
    assert (slack_api.calls(), slack_api.messages(), slack_api.latency) == ([], [], 0.0)
    assert slack_client.auth_test()["ok"] is True  # the fault went with reset()
    assert slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="again")["ts"] == (
        DEFAULT_MESSAGE_TS
    )
    assert slack_client.users_info(user=STAFF_USER)["ok"] is True  # users stay


# --- files --------------------------------------------------------------------------------------


def test_files_upload_v2_end_to_end(slack_api: FakeSlack, slack_client: WebClient) -> None:
    content = "code,email\nGRANT-1,jane@example.org\n"

    result = slack_client.files_upload_v2(
        channel=STAFF_CHANNEL,
        content=content,
        filename="vouchers.csv",
        title="Vouchers issued",
        initial_comment="Here are today's vouchers",
        thread_ts="1767225600.000100",
    )

    (upload,) = slack_api.uploads()
    assert upload.completed
    assert upload.content == content.encode()
    assert upload.length == len(content.encode())
    assert (upload.filename, upload.title, upload.channel) == (
        "vouchers.csv",
        "Vouchers issued",
        STAFF_CHANNEL,
    )
    assert upload.initial_comment == "Here are today's vouchers"
    assert upload.thread_ts == "1767225600.000100"
    assert result["file"]["id"] == upload.file_id
    assert result["file"]["name"] == "vouchers.csv"
    assert [c.method for c in slack_api.calls()] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]


def test_completing_an_upload_whose_bytes_never_arrived_fails(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    started = slack_client.files_getUploadURLExternal(filename="a.txt", length=3)
    with pytest.raises(SlackApiError) as incomplete:
        slack_client.files_completeUploadExternal(files=[{"id": started["file_id"]}])
    uploaded = httpx.post(started["upload_url"], content=b"abc", timeout=5)
    done = slack_client.files_completeUploadExternal(files=[{"id": started["file_id"]}])

    assert error_of(incomplete) == "file_not_found"
    assert (uploaded.status_code, uploaded.text) == (200, "OK - 3")
    assert done["files"][0]["title"] == "a.txt"  # Slack titles a file by its name by default
    assert slack_api.uploads()[0].channel is None  # uploaded privately


# --- response_url -------------------------------------------------------------------------------


def test_response_url_records_posts_and_answers_like_slack(slack_api: FakeSlack) -> None:
    url = slack_api.response_url("cmd-1")
    first = httpx.post(url, json={"text": "Working on it", "response_type": "ephemeral"})
    no_text = httpx.post(url, json={"response_type": "ephemeral"})
    not_json = httpx.post(url, content=b"text=hi")
    replaced = httpx.post(url, json={"replace_original": True, "blocks": [SECTION]})

    assert (first.status_code, first.text) == (200, "ok")
    assert (no_text.status_code, no_text.text) == (400, "no_text")
    assert (not_json.status_code, not_json.text) == (400, "invalid_payload")
    assert replaced.status_code == 200
    assert slack_api.responses("cmd-1") == [
        {"text": "Working on it", "response_type": "ephemeral"},
        {"replace_original": True, "blocks": [SECTION]},
    ]
    assert slack_api.responses("other") == []
    assert [p.status for p in slack_api.response_posts("cmd-1")] == [200, 400, 400, 200]
    assert slack_api.wait_for_response("cmd-1", 2, timeout=1)[1]["replace_original"] is True
    with pytest.raises(AssertionError):
        slack_api.wait_for_response("cmd-1", 3, timeout=0.05)


def test_a_response_url_takes_five_messages(slack_api: FakeSlack) -> None:
    url = slack_api.response_url("busy")
    statuses = [httpx.post(url, json={"text": f"update {n}"}).status_code for n in range(6)]

    assert statuses == [200, 200, 200, 200, 200, 404]
    assert len(slack_api.responses("busy")) == 5


# --- signed requests ----------------------------------------------------------------------------


def test_signed_headers_pass_slacks_verifier_and_stale_ones_do_not() -> None:
    body = slash_command_body(text="issue 42", user_id=STAFF_USER, response_url="http://x/r")
    verifier = SignatureVerifier(SIGNING_SECRET)

    fresh = signed_headers(body, secret=SIGNING_SECRET)
    stale = signed_headers(body, secret=SIGNING_SECRET, timestamp=int(time.time()) - 301)
    retried = signed_headers(body, secret=SIGNING_SECRET, retry_num=1, retry_reason="http_timeout")
    other_secret = signed_headers(body, secret="someone-else")

    assert verifier.is_valid(
        body=body,
        timestamp=fresh["X-Slack-Request-Timestamp"],
        signature=fresh["X-Slack-Signature"],
    )
    assert fresh["X-Slack-Signature"].startswith("v0=")
    assert fresh["Content-Type"] == FORM
    assert not verifier.is_valid_request(body, stale)
    assert not verifier.is_valid_request(body + "&x=1", fresh)  # the body is signed
    assert not verifier.is_valid_request(body, other_secret)
    assert verifier.is_valid_request(body, retried)
    assert (retried["X-Slack-Retry-Num"], retried["X-Slack-Retry-Reason"]) == ("1", "http_timeout")
    assert "X-Slack-Retry-Num" not in fresh


def test_slash_command_body_is_slacks_form() -> None:
    body = slash_command_body(
        text="issue 42 <@U0GUEST|guest>", user_id=STAFF_USER, response_url="u"
    )
    other = slash_command_body(text="", user_id=STAFF_USER, response_url="u")
    fields = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    assert list(fields) == [
        "token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name",
        "command", "text", "api_app_id", "is_enterprise_install", "response_url", "trigger_id",
    ]  # fmt: skip
    assert fields["text"] == "issue 42 <@U0GUEST|guest>"
    assert (fields["command"], fields["channel_id"], fields["team_id"]) == (
        "/voucher",
        "C0STAFF",
        "T0TEAM",
    )
    assert "+" in body  # spaces are form-encoded as Slack sends them
    assert fields["trigger_id"] != parse_qs(other)["trigger_id"][0]


def test_block_action_body_is_a_payload_of_block_actions() -> None:
    body = block_action_body(
        action_id="approve", value="run-7", user_id=STAFF_USER_2, response_url="u", action_ts="9.1"
    )
    (raw,) = parse_qs(body)["payload"]
    payload = json.loads(raw)

    assert body.startswith("payload=")
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == STAFF_USER_2
    assert payload["container"] == {
        "type": "message",
        "message_ts": DEFAULT_MESSAGE_TS,
        "channel_id": GRANTS_CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["message"]["ts"] == DEFAULT_MESSAGE_TS
    assert payload["actions"] == [
        {
            "action_id": "approve",
            "block_id": "actions",
            "text": {"type": "plain_text", "text": "Button", "emoji": True},
            "value": "run-7",
            "type": "button",
            "action_ts": "9.1",
        }
    ]
    assert payload["response_url"] == "u"
    on_card = block_action_body(
        action_id="deny",
        value="run-7",
        user_id=STAFF_USER,
        response_url="u",
        message={"ts": "1767225600.000300", "text": "Approve?", "blocks": [SECTION]},
    )
    card_payload = json.loads(parse_qs(on_card)["payload"][0])
    assert card_payload["container"]["message_ts"] == "1767225600.000300"
    assert card_payload["message"]["blocks"] == [SECTION]
    assert card_payload["trigger_id"] != payload["trigger_id"]


# --- the builders and the fake together, through Bolt -------------------------------------------


@pytest.fixture
def bolt_app(slack_client: WebClient) -> App:
    """A Bolt app on the fake: `/voucher` answers through respond(), a button edits its card."""
    app = App(client=slack_client, signing_secret=SIGNING_SECRET)

    @app.command("/voucher")
    def voucher(ack: Ack, respond: Respond, command: dict[str, Any]) -> None:
        ack()
        respond(text=f"Got {command['text']} from <@{command['user_id']}>")

    @app.action("approve")
    def approve(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.chat_update(
            channel=body["container"]["channel_id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[],
        )

    @app.event("app_mention")
    def mention(event: dict[str, Any], client: WebClient) -> None:
        client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"], text="Hi!")

    return app


def dispatch(app: App, body: str, *, content_type: str = FORM, **sign: Any) -> BoltResponse:
    """Send `body` to the app as Slack would, signed with the test secret."""
    headers: dict[str, str | Sequence[str]] = dict(
        signed_headers(body, secret=SIGNING_SECRET, content_type=content_type, **sign)
    )
    return app.dispatch(BoltRequest(body=body, headers=headers))


def test_bolt_accepts_a_signed_slash_command_and_respond_reaches_the_fake(
    slack_api: FakeSlack, bolt_app: App
) -> None:
    url = slack_api.response_url("voucher-1")
    body = slash_command_body(text="issue 42", user_id=STAFF_USER, response_url=url)

    answer = dispatch(bolt_app, body)
    stale = dispatch(bolt_app, body, timestamp=int(time.time()) - 600)

    assert answer.status == 200
    assert stale.status == 401
    assert slack_api.wait_for_response("voucher-1") == [{"text": "Got issue 42 from <@U0STAFF1>"}]
    assert slack_api.count("auth.test") == 1  # Bolt checked the token once, at start


def test_bolt_button_click_updates_the_card_on_the_fake(
    slack_api: FakeSlack, slack_client: WebClient, bolt_app: App
) -> None:
    card = slack_client.chat_postMessage(channel=GRANTS_CHANNEL, text="Approve?", blocks=[SECTION])
    body = block_action_body(
        action_id="approve",
        value="run-7",
        user_id=STAFF_USER_2,
        response_url=slack_api.response_url("click-1"),
        message=slack_api.message(GRANTS_CHANNEL, card["ts"]),
    )

    answer = dispatch(bolt_app, body)
    slack_api.wait_for("chat.update")

    assert answer.status == 200
    updated = slack_api.message(GRANTS_CHANNEL, card["ts"])
    assert updated is not None
    assert updated["text"] == "Approved by <@U0STAFF2>"


def test_bolt_handles_an_app_mention_event(slack_api: FakeSlack, bolt_app: App) -> None:
    body = event_callback_body(text="<@UBOT> status?", user_id=STAFF_USER, ts="1767225700.000100")

    answer = dispatch(bolt_app, body, content_type=JSON)
    (call,) = slack_api.wait_for("chat.postMessage")

    assert answer.status == 200
    assert (call.args["channel"], call.args["thread_ts"]) == (STAFF_CHANNEL, "1767225700.000100")
