"""`check`: can the bot reach its database, Pretix, the mail server and Slack? In words."""

from __future__ import annotations

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


@dataclass(frozen=True)
class CheckResult:
    """One line of the check report."""

    name: str
    ok: bool
    detail: str


def check_database(db: Database) -> CheckResult:
    """The database answers and its schema is at the newest migration."""
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = migrations.current_revision(db.engine)
    except SQLAlchemyError as exc:
        return CheckResult(
            "database", ok=False, detail=describe_connection_error(exc, db.engine.url)
        )
    head = migrations.head_revision()
    where = db.engine.url.render_as_string(hide_password=True)
    if current != head:
        return CheckResult(
            "database",
            ok=False,
            detail=f"{where} is at {current or 'an empty schema'}, "
            f"the code expects {head}: run `python -m bot migrate`",
        )
    return CheckResult("database", ok=True, detail=f"{where}, schema at {head}")


def check_pretix(pretix: PretixClient | None, conferences: Conferences) -> list[CheckResult]:
    """For each conference: the event answers, the quota or item exists, vouchers are readable."""
    if pretix is None:
        return [
            CheckResult(
                "pretix", ok=False, detail="not configured: set PRETIX_URL and PRETIX_TOKEN"
            )
        ]
    if not conferences:
        return [
            CheckResult("pretix", ok=False, detail="no conferences configured (CONFERENCES_FILE)")
        ]
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
            target = f"item {item.id} ({item.name})"
        next(iter(pretix.iter_vouchers(event, page_size=1)), None)
    except PretixAuthError as exc:
        return CheckResult(name, ok=False, detail=_explain_denied(pretix, config, exc))
    except PretixNotFound:
        what = (
            f"quota {config.pretix_quota}"
            if config.pretix_quota is not None
            else f"item {config.pretix_item}"
        )
        return CheckResult(name, ok=False, detail=f"{what} does not exist in event {event.event}")
    except PretixUnavailable as exc:
        return CheckResult(name, ok=False, detail=f"cannot reach Pretix: {exc}")
    except PretixError as exc:
        return CheckResult(name, ok=False, detail=f"Pretix answered with an error: {exc}")
    return CheckResult(
        name,
        ok=True,
        detail=f"event {event.organizer}/{found.slug} reachable, vouchers unlock {target} "
        "(write permission is only proven by the first voucher)",
    )


def _explain_denied(pretix: PretixClient, config: ConferenceConfig, exc: PretixAuthError) -> str:
    """Pretix answers 403 both for a missing permission and for an unknown slug: tell which."""
    if exc.status_code == 401:
        return f"Pretix refused the token ({exc}): check PRETIX_TOKEN"
    try:
        organizers = pretix.list_organizer_slugs()
        if config.pretix_organizer not in organizers:
            return (
                f"organizer {config.pretix_organizer!r} is unknown to this token "
                f"(it sees: {', '.join(organizers) or 'none'}): check pretix_organizer"
            )
        events = pretix.list_event_slugs(config.pretix_organizer)
    except PretixError:
        return f"Pretix denied access ({exc}): check the token's team permissions and the slugs"
    if config.pretix_event not in events:
        return (
            f"event {config.pretix_event!r} does not exist under {config.pretix_organizer!r} "
            f"(known: {', '.join(events) or 'none'}): check pretix_event"
        )
    return (
        f"the token's team lacks permission on {config.pretix_organizer}/{config.pretix_event}: "
        "give it event.vouchers:read and event.vouchers:write"
    )


def check_smtp(mailer: SmtpMailer | None) -> CheckResult:
    """The SMTP server accepts a connection, TLS and the login."""
    if mailer is None:
        return CheckResult("smtp", ok=False, detail="not configured: set SMTP_HOST and EMAIL_FROM")
    try:
        mailer.check()
    except MailerError as exc:
        return CheckResult("smtp", ok=False, detail=str(exc))
    return CheckResult("smtp", ok=True, detail=f"{mailer.where} accepts mail")


def check_slack(client: WebClient | None, *, usergroup: str | None) -> list[CheckResult]:
    """The bot token works (auth.test) and the staff user group can be read."""
    if client is None:
        return [
            CheckResult(
                "slack",
                ok=False,
                detail="not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET",
            )
        ]
    try:
        who = client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error")
        return [CheckResult("slack", ok=False, detail=f"Slack refused the bot token ({error})")]
    except (SlackClientError, OSError) as exc:
        return [CheckResult("slack", ok=False, detail=f"cannot reach Slack: {exc}")]
    results = [
        CheckResult(
            "slack", ok=True, detail=f"bot @{who.get('user')} in workspace {who.get('team')}"
        )
    ]
    if usergroup:
        try:
            members = client.usergroups_users_list(usergroup=usergroup).get("users") or []
            results.append(
                CheckResult("slack staff", ok=True, detail=f"{usergroup}: {len(members)} members")
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            hint = (
                "user groups need a paid Slack plan: list staff in SLACK_STAFF_USER_IDS"
                if error == "plan_upgrade_required"
                else "check SLACK_STAFF_USERGROUP and the usergroups:read scope"
            )
            results.append(CheckResult("slack staff", ok=False, detail=f"{error}: {hint}"))
    return results
