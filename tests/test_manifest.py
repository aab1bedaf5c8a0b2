"""The app manifest declares exactly what the code listens to and needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from bot.commands.parsing import Action
from bot.services.checks import check_conferences
from bot.slack.blocks import COMMAND, help_message

MANIFEST = Path(__file__).resolve().parent.parent / "manifest.yaml"
CONTRACT_SCOPES = {
    "commands",
    "chat:write",
    "users:read",
    "users:read.email",
    "usergroups:read",
    "files:write",
}
# Added to the contract's scopes (documented in the README): `check` reads each conference
# channel (conversations.info) to tell whether the bot is a member.
ADDED_SCOPES = {"channels:read", "groups:read"}


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return data


def test_the_command_is_declared_with_escaping_on() -> None:
    [command] = manifest()["features"]["slash_commands"]
    assert command["command"] == COMMAND
    assert command["should_escape"] is True  # mentions arrive as <@U123|name>
    assert command["url"].endswith("/slack/events")


def test_scopes_match_the_contract() -> None:
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == CONTRACT_SCOPES | ADDED_SCOPES


def test_buttons_reach_the_same_endpoint() -> None:
    settings = manifest()["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith("/slack/events")


def test_usage_hint_and_help_name_every_subcommand() -> None:
    [command] = manifest()["features"]["slash_commands"]
    help_text = str(help_message().blocks)
    for action in Action:
        if action is not Action.HELP:
            assert action.value in command["usage_hint"]
        assert action.value in help_text


def test_the_example_conference_file_is_valid() -> None:
    from bot.conferences import load_conferences

    example = MANIFEST.parent / "conferences.example.toml"
    conferences = load_conferences(example, required=True)
    assert conferences["pycon2026"].pretix_quota == 12
    assert conferences["pycon2025"].issue_vouchers is False
    # Copied as it is, the example must not set up a conference whose vouchers expired.
    today = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert not [r for r in check_conferences(conferences, now=today) if r.failed]


def test_the_home_tab_is_on_and_app_home_opened_reaches_the_bot() -> None:
    data = manifest()
    app_home = data["features"]["app_home"]
    assert app_home["home_tab_enabled"] is True
    events = data["settings"]["event_subscriptions"]
    assert events["request_url"].endswith("/slack/events")
    assert events["bot_events"] == ["app_home_opened"]


def test_every_subscribed_event_has_a_listener() -> None:
    from bot.commands.home import HOME_OPENED

    assert set(manifest()["settings"]["event_subscriptions"]["bot_events"]) == {HOME_OPENED}
