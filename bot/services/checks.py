"""`check`: can the bot reach its database, Pretix, the mail server and Slack? In words.

A part that is not configured is "off" (as in the start banner): a choice, not a failure.
Only a configured part that does not work fails, and each failure says what to change.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bot import migrations
from bot.conferences import ConferenceConfig, Conferences
from bot.mailer import MailerError, SmtpMailer
from bot.pretix import (
    EventRef,
    PretixAuthError,
    PretixClient,
    PretixError,
    PretixNotFound,
    PretixUnavailable,
)
from bot.storage import Database, describe_connection_error


class CheckStatus(enum.StrEnum):
    """How one part of the set-up fared."""

    OK = "ok"
    OFF = "off"  # not configured: the bot runs without it
    FAIL = "fail"  # configured, and it does not work
    NOTE = "note"  # not done yet, and the bot does it on its own at the first start


@dataclass(frozen=True)
class CheckResult:
    """One line of the check report."""

    name: str
    status: CheckStatus
    detail: str

    @property
    def failed(self) -> bool:
        """Whether this line makes `check` exit 1."""
        return self.status is CheckStatus.FAIL


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, CheckStatus.OK, detail)


def _off(name: str, detail: str) -> CheckResult:
    return CheckResult(name, CheckStatus.OFF, detail)


def _fail(name: str, detail: str) -> CheckResult:
    return CheckResult(name, CheckStatus.FAIL, detail)


def _note(name: str, detail: str) -> CheckResult:
    return CheckResult(name, CheckStatus.NOTE, detail)


def check_database(db: Database, *, auto_migrate: bool = False) -> CheckResult:
    """The database answers and its schema is at the newest migration.

    With `auto_migrate` (AUTO_MIGRATE=true) an empty or older schema is only a note: the
    bot creates or upgrades it at the first start. Without it, the schema must be current.
    """
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = migrations.current_revision(db.engine)
    except SQLAlchemyError as exc:
        return _fail("database", describe_connection_error(exc, db.engine.url))
    head = migrations.head_revision()
    where = db.engine.url.render_as_string(hide_password=True)
    if current != head and auto_migrate and _is_older(current):
        schema = f"is at {current}" if current else "has no schema yet"
        return _note(
            "database",
            f"{where} {schema}: the bot migrates it to {head} at the first start "
            "(AUTO_MIGRATE=true), or run `.venv/bin/voucher-bot migrate` now",
        )
    if current != head:
        return _fail(
            "database",
            f"{where} is at {current or 'an empty schema'}, "
            f"the code expects {head}: run `.venv/bin/voucher-bot migrate`",
        )
    return _ok("database", f"{where}, schema at {head}")


def _is_older(revision: str | None) -> bool:
    """Whether `revision` is none or one of the code's own (so an upgrade reaches head)."""
    return revision is None or revision in migrations.known_revisions()


def check_pretix(pretix: PretixClient | None, conferences: Conferences) -> list[CheckResult]:
    """For each conference: the event answers, the quota or item exists, vouchers are readable."""
    if pretix is None:
        return [_off("pretix", "not configured: set PRETIX_URL and PRETIX_TOKEN")]
    if not conferences:
        return [_off("pretix", "nothing to check: no conferences configured (CONFERENCES_FILE)")]
    return [_check_conference(pretix, config) for config in conferences.values()]


def _check_conference(pretix: PretixClient, config: ConferenceConfig) -> CheckResult:
    name = f"pretix {config.code}"
    event = EventRef(config.pretix_organizer, config.pretix_event)
    try:
        found = pretix.get_event(event)
        if config.pretix_quota is not None:
            quota = pretix.get_quota(event, config.pretix_quota)
            target = f"quota {quota.id} ({quota.name})"
        else:
            item = pretix.get_item(event, config.pretix_item or 0)
            target = f"item {item.id} ({item.display_name})"
        next(iter(pretix.iter_vouchers(event, page_size=1)), None)
    except PretixAuthError as exc:
        return _fail(name, _explain_denied(pretix, config, exc))
    except PretixNotFound:
        what = (
            f"quota {config.pretix_quota}"
            if config.pretix_quota is not None
            else f"item {config.pretix_item}"
        )
        return _fail(name, f"{what} does not exist in event {event.event}")
    except PretixUnavailable as exc:
        return _fail(name, f"cannot reach Pretix: {exc}")
    except PretixError as exc:
        return _fail(name, f"Pretix answered with an error: {exc}")
    return _ok(
        name,
        f"event {event.organizer}/{found.slug} reachable, vouchers unlock {target} "
        "(write permission is only proven by the first voucher)",
    )


def _explain_denied(pretix: PretixClient, config: ConferenceConfig, exc: PretixAuthError) -> str:
    """Pretix answers 403 both for a missing permission and for an unknown slug: tell which."""
    if exc.status_code == 401:
        return _with_hint(str(exc), "check PRETIX_TOKEN")
    try:
        organizers = pretix.list_organizer_slugs()
        if config.pretix_organizer not in organizers:
            return (
                f"organizer {config.pretix_organizer!r} is unknown to this token "
                f"(it sees: {', '.join(organizers) or 'none'}): check pretix_organizer"
            )
        events = pretix.list_event_slugs(config.pretix_organizer)
    except PretixError:
        return _with_hint(str(exc), "check the token's team permissions and the slugs")
    if config.pretix_event not in events:
        return (
            f"event {config.pretix_event!r} does not exist under {config.pretix_organizer!r} "
            f"(known: {', '.join(events) or 'none'}): check pretix_event"
        )
    return (
        f"the token's team lacks permission on {config.pretix_organizer}/{config.pretix_event}: "
        "give it event.vouchers:read and event.vouchers:write"
    )


def _with_hint(message: str, hint: str) -> str:
    """`message`, then `hint` unless the message already gives it (Pretix errors often do)."""
    if hint in message:
        return message
    return f"{message.rstrip('.')}: {hint}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_smtp(mailer: SmtpMailer | None) -> CheckResult:
    """The SMTP server accepts a connection, TLS and the login."""
    if mailer is None:
        return _off("smtp", "not configured: set SMTP_HOST and EMAIL_FROM")
    try:
        mailer.check()
    except MailerError as exc:
        return _fail("smtp", str(exc))
    return _ok("smtp", f"{mailer.where} accepts mail")


def check_conferences(conferences: Conferences, *, now: dt.datetime) -> list[CheckResult]:
    """Each conference that issues vouchers: a `voucher_valid_until` still ahead of `now`."""
    return [
        _check_validity(config, now) for config in conferences.values() if config.issue_vouchers
    ]


def _check_validity(config: ConferenceConfig, now: dt.datetime) -> CheckResult:
    name = f"conference {config.code}"
    until = config.voucher_valid_until
    if until is None:
        return _ok(name, "vouchers do not expire (no voucher_valid_until)")
    shown = f"{until.astimezone(config.zone):%Y-%m-%d %H:%M} {config.timezone}"
    if until <= now:
        return _fail(
            name,
            f"voucher_valid_until {shown} has passed: no voucher can be issued. Set a future "
            f"date in the [conferences.{config.code}] table of CONFERENCES_FILE (e.g. the "
            "event's last day), or issue_vouchers = false for a past conference",
        )
    return _ok(name, f"vouchers valid until {shown}")


def check_slack(
    client: WebClient | None,
    *,
    usergroup: str | None,
    conferences: Conferences | None = None,
) -> list[CheckResult]:
    """The bot token works (auth.test), the staff group can be read, the bot is in each channel."""
    if client is None:
        return [_off("slack", "not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")]
    try:
        who = client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error")
        return [_fail("slack", f"Slack refused the bot token ({error})")]
    except (SlackClientError, OSError) as exc:
        return [_fail("slack", f"cannot reach Slack: {exc}")]
    bot = str(who.get("user") or "the bot")
    results = [_ok("slack", f"bot @{bot} in workspace {who.get('team')}")]
    if usergroup:
        try:
            members = client.usergroups_users_list(usergroup=usergroup).get("users") or []
            results.append(_ok("slack staff", f"{usergroup}: {_count(len(members), 'member')}"))
        except SlackApiError as exc:
            error = exc.response.get("error")
            hint = (
                "user groups need a paid Slack plan: list staff in SLACK_STAFF_USER_IDS"
                if error == "plan_upgrade_required"
                else "check SLACK_STAFF_USERGROUP and the usergroups:read scope"
            )
            results.append(_fail("slack staff", f"{error}: {hint}"))
    for config in (conferences or {}).values():
        if config.slack_channel:
            results.append(_check_channel(client, config, config.slack_channel, bot))
    return results


def _check_channel(
    client: WebClient, config: ConferenceConfig, channel: str, bot: str
) -> CheckResult:
    """The conference channel exists and the bot is a member (else it cannot post there)."""
    name = f"slack channel {config.code}"
    try:
        info = client.conversations_info(channel=channel).get("channel") or {}
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error == "channel_not_found":
            return _fail(
                name,
                f"channel {channel} not found, or private without the bot in it: check "
                f"slack_channel, or run /invite @{bot} in that channel",
            )
        if error == "missing_scope":
            return _fail(
                name,
                f"cannot see channel {channel}: the app lacks the channels:read and groups:read "
                "scopes (manifest.yaml); add them and reinstall the app",
            )
        return _fail(name, f"Slack answered {error} for channel {channel}")
    except (SlackClientError, OSError) as exc:
        return _fail(name, f"cannot reach Slack: {exc}")
    label = f"#{info.get('name') or channel} ({channel})"
    if info.get("is_archived"):
        return _fail(name, f"{label} is archived: unarchive it or set another slack_channel")
    if not info.get("is_member"):
        return _fail(
            name,
            f"the bot is not a member of {label}: status threads cannot be "
            f"posted there; run /invite @{bot} in that channel",
        )
    return _ok(name, f"status threads go to {label}; the bot is a member")
