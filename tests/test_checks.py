"""`check`'s rules on their own: off is not a failure, an expired validity and a channel fail."""

from __future__ import annotations

import datetime as dt

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.conferences import ConferenceConfig, Conferences
from bot.pretix import PretixClient
from bot.services.checks import (
    CheckStatus,
    check_conferences,
    check_pretix,
    check_slack,
    check_smtp,
)
from tests.fakes.pretix_fixtures import PretixClientFactory
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_fixtures import GRANTS_CHANNEL, STAFF_GROUP

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def config(code: str = "pycon2027", **changes: object) -> ConferenceConfig:
    values: dict[str, object] = {
        "code": code,
        "name": "PyCon Italia 2027",
        "pretix_organizer": "pycon",
        "pretix_event": "pycon2027",
        "pretix_quota": 1,
        "voucher_valid_until": dt.datetime(2027, 5, 31, 21, 59, 59, tzinfo=dt.UTC),
        "timezone": "Europe/Rome",
        "slack_channel": GRANTS_CHANNEL,
    }
    values.update(changes)
    return ConferenceConfig.model_validate(values)


def conferences(*configs: ConferenceConfig) -> Conferences:
    return Conferences({c.code: c for c in configs})


def test_parts_that_are_not_configured_are_off_not_failed() -> None:
    results = [
        *check_pretix(None, conferences(config())),
        check_smtp(None),
        *check_slack(None, usergroup=None, conferences=conferences(config())),
    ]
    assert [r.status for r in results] == [CheckStatus.OFF] * 3
    assert not any(r.failed for r in results)
    assert [r.status for r in check_pretix(None, conferences())] == [CheckStatus.OFF]


def test_a_validity_in_the_past_fails_only_for_a_conference_that_issues_vouchers() -> None:
    past = dt.datetime(2026, 5, 31, 21, 59, 59, tzinfo=dt.UTC)
    results = check_conferences(
        conferences(
            config("future"),
            config("past", voucher_valid_until=past),
            config("pastdone", voucher_valid_until=past, issue_vouchers=False),
            config("forever", voucher_valid_until=None),
            config("justnow", voucher_valid_until=NOW),
        ),
        now=NOW,
    )
    by_name = {r.name: r for r in results}
    assert set(by_name) == {
        "conference future",
        "conference past",
        "conference forever",
        "conference justnow",
    }
    assert by_name["conference future"].status is CheckStatus.OK
    assert "2027-05-31 23:59 Europe/Rome" in by_name["conference future"].detail
    assert by_name["conference forever"].status is CheckStatus.OK
    for name in ("conference past", "conference justnow"):
        assert by_name[name].failed
    detail = by_name["conference past"].detail
    assert "2026-05-31 23:59 Europe/Rome has passed" in detail
    assert "[conferences.past]" in detail and "issue_vouchers = false" in detail


def test_each_conference_channel_is_checked_for_the_bots_membership(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    slack_api.add_channel("C0OUT", "grants-2027", is_member=False)
    slack_api.add_channel("C0SECRET", "grants-private", is_private=True, is_member=False)
    results = check_slack(
        slack_client,
        usergroup=STAFF_GROUP,
        conferences=conferences(
            config("member"),
            config("outside", slack_channel="C0OUT"),
            config("private", slack_channel="C0SECRET"),
            config("nochannel", slack_channel=None),
        ),
    )
    by_name = {r.name: r for r in results}
    assert by_name["slack"].status is CheckStatus.OK
    assert by_name["slack channel member"].status is CheckStatus.OK
    assert "slack channel nochannel" not in by_name
    outside = by_name["slack channel outside"]
    assert outside.failed
    assert "not a member of #grants-2027 (C0OUT)" in outside.detail
    assert "/invite @voucher-bot" in outside.detail
    private = by_name["slack channel private"]
    assert private.failed and "C0SECRET not found, or private" in private.detail
    # What the check foresees is what posting would do.
    with pytest.raises(SlackApiError) as refused:
        slack_client.chat_postMessage(channel="C0OUT", text="hello")
    assert refused.value.response["error"] == "not_in_channel"


def test_a_missing_channel_scope_says_which_scopes_to_add(
    slack_api: FakeSlack, slack_client: WebClient
) -> None:
    slack_api.fail_next("conversations.info", "missing_scope")
    [*_, channel] = check_slack(slack_client, usergroup=None, conferences=conferences(config()))
    assert channel.failed
    assert "channels:read" in channel.detail and "reinstall" in channel.detail


def test_a_pretix_item_is_named_in_one_language(pretix_client: PretixClient) -> None:
    [result] = check_pretix(
        pretix_client,
        conferences(
            config("pycon2026", pretix_event="pycon2026", pretix_quota=None, pretix_item=10)
        ),
    )
    assert result.status is CheckStatus.OK, result.detail
    assert "item 10 (Conference ticket)" in result.detail
    assert "{" not in result.detail


def test_a_refused_pretix_token_says_check_pretix_token_once(
    make_pretix_client: PretixClientFactory,
) -> None:
    client = make_pretix_client(token="wrong")
    [result] = check_pretix(client, conferences(config("pycon2026", pretix_event="pycon2026")))
    assert result.failed
    assert result.detail.count("PRETIX_TOKEN") == 1, result.detail
    assert "): check" not in result.detail


def test_a_staff_group_of_one_is_one_member(slack_api: FakeSlack, slack_client: WebClient) -> None:
    slack_api.add_usergroup("S0ONE", ["U0ONLY"])
    results = check_slack(slack_client, usergroup="S0ONE", conferences=conferences())
    [staff] = [r for r in results if r.name == "slack staff"]
    assert staff.detail == "S0ONE: 1 member"
