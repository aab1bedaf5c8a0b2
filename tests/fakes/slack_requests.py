"""Requests as Slack sends them to the bot: signed slash commands, button clicks and events.

Bodies are byte-for-byte what the bot's HTTP endpoint would receive (form-encoded slash
commands, `payload=` for interactivity, JSON for the Events API), and `signed_headers` signs
them with Slack's real algorithm, so Bolt's request verification runs unchanged in tests.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
# The deprecated verification token Slack still puts in every payload; Bolt ignores it.
VERIFICATION_TOKEN = "legacy-verification-token"
API_APP_ID = "A0VOUCHER"
TEAM_DOMAIN = "pycon-example"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
DEFAULT_MESSAGE_TS = "1767225600.000100"  # the first ts a fresh FakeSlack hands out

_trigger_numbers = itertools.count(13_345_224_609)


def new_trigger_id() -> str:
    """A trigger_id shaped like Slack's ("13345224609.738474920.8088930838d88f008e0")."""
    return f"{next(_trigger_numbers)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"


def signed_headers(
    body: str | bytes,
    *,
    secret: str,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str | None = None,
    content_type: str = FORM,
) -> dict[str, str]:
    """The headers Slack sends with `body`: v0 HMAC-SHA256 signature over the raw body.

    `timestamp` defaults to now; pass one 301+ seconds old for a stale request. `retry_num`
    and `retry_reason` (e.g. 1, "http_timeout") mark Slack's redelivery of an event.
    """
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None  # only None without a timestamp
    headers = {
        "Content-Type": content_type,
        "User-Agent": USER_AGENT,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
    if retry_reason is not None:
        headers["X-Slack-Retry-Reason"] = retry_reason
    return headers


def slash_command_body(
    *,
    text: str,
    user_id: str,
    response_url: str,
    command: str = "/voucher",
    channel_id: str = "C0STAFF",
    channel_name: str | None = None,
    team_id: str = "T0TEAM",
    user_name: str = "alice",
    trigger_id: str | None = None,
) -> str:
    """A slash command's form body, fields in Slack's order; trigger_id unique by default."""
    return urlencode(
        {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": channel_name or channel_id.lower(),
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": API_APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or new_trigger_id(),
        }
    )


def block_action_body(
    *,
    action_id: str,
    value: str,
    user_id: str,
    response_url: str,
    message_ts: str | None = None,
    channel_id: str = "C0GRANTS",
    block_id: str = "actions",
    trigger_id: str | None = None,
    action_ts: str | None = None,
    user_name: str = "alice",
    team_id: str = "T0TEAM",
    button_text: str = "Button",
    message: Mapping[str, Any] | None = None,
) -> str:
    """A button click on a bot message: `payload=<url-encoded JSON>` of a block_actions.

    `message` is the clicked message as Slack shows it (e.g. `FakeSlack.message(...)`);
    by default a bot message with no blocks. `message_ts` defaults to the message's ts,
    else to DEFAULT_MESSAGE_TS, the first ts a fresh FakeSlack hands out.
    """
    shown = dict(message) if message is not None else {}
    shown.pop("channel", None)  # FakeSlack.messages() adds it; Slack's payload has none
    if message_ts is None:
        message_ts = str(shown.get("ts", DEFAULT_MESSAGE_TS))
    shown = {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": API_APP_ID,
        "team": team_id,
        "text": "",
        "blocks": [],
        **shown,
        "ts": message_ts,
    }
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "message": shown,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": action_ts or f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))})


def event_callback_body(
    *,
    text: str,
    user_id: str,
    channel_id: str = "C0STAFF",
    team_id: str = "T0TEAM",
    ts: str | None = None,
    event_id: str | None = None,
    event_time: int | None = None,
) -> str:
    """An Events API `app_mention` envelope (JSON); put `<@UBOT>` in `text` as Slack does."""
    now = time.time()
    event_ts = ts or f"{now:.6f}"
    envelope = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": API_APP_ID,
        "event": {
            "type": "app_mention",
            "user": user_id,
            "text": text,
            "ts": event_ts,
            "channel": channel_id,
            "event_ts": event_ts,
        },
        "type": "event_callback",
        "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
        "event_time": int(now) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{secrets.token_hex(8)}",
    }
    return json.dumps(envelope, separators=(",", ":"))


def url_verification_body(challenge: str) -> str:
    """The Events API handshake Slack sends when the request URL is saved (JSON)."""
    return json.dumps(
        {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
    )


def view_submission_body(
    *,
    user_id: str,
    view: Mapping[str, Any],
    values: Mapping[str, Mapping[str, str]],
    team_id: str = "T0TEAM",
    user_name: str = "alice",
    trigger_id: str | None = None,
) -> str:
    """A modal's Submit: `payload=` of a view_submission for `view` (as views.open answered).

    `values` gives what was typed, by block_id and action_id (plain text inputs).
    """
    state = {
        block: {
            action: {"type": "plain_text_input", "value": typed} for action, typed in inputs.items()
        }
        for block, inputs in values.items()
    }
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {**dict(view), "state": {"values": state}},
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))})


def app_home_opened_body(
    *,
    user_id: str,
    tab: str = "home",
    team_id: str = "T0TEAM",
    event_id: str | None = None,
    view: Mapping[str, Any] | None = None,
) -> str:
    """An Events API `app_home_opened` envelope (JSON); `view` is the Home shown, if any."""
    now = time.time()
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": f"D{secrets.token_hex(5).upper()}",
        "tab": tab,
        "event_ts": f"{now:.6f}",
    }
    if view is not None:
        event["view"] = dict(view)
    envelope = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
        "event_time": int(now),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }
    return json.dumps(envelope, separators=(",", ":"))
