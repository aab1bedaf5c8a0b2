"""Finding grants from what a person types: a Slack mention, an email address or a grant id."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import or_, select

from bot.conferences import ConferenceConfig
from bot.services.notifications import is_control
from bot.services.outcomes import GrantRef
from bot.services.queries import grant_ref
from bot.storage import Conference, Database, Grant

MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
EMAIL = re.compile(r"^<?(?:mailto:)?([^\s@<>|]+@[^\s@<>|]+\.[^\s@<>|]+)(?:\|[^>]*)?>?$")


class TargetKind(enum.StrEnum):
    """What kind of reference a person gave."""

    SLACK_USER = "slack_user"
    EMAIL = "email"
    GRANT_ID = "grant_id"


@dataclass(frozen=True)
class Target:
    """A parsed reference to a grantee."""

    kind: TargetKind
    value: str


def parse_target(text: str) -> Target | None:
    """`<@U123|jane>`, `jane@example.org` (Slack may wrap it as `<mailto:...|...>`) or `1234`."""
    text = text.strip()
    if not text or any(is_control(char) for char in text):
        return None  # no grant has a NUL, an escape or a line break in its id or address
    if mention := MENTION.match(text):
        return Target(TargetKind.SLACK_USER, mention.group(1))
    if email := EMAIL.match(text):
        return Target(TargetKind.EMAIL, email.group(1).lower())
    if re.fullmatch(r"#?[A-Za-z0-9_.:-]{1,64}", text):
        return Target(TargetKind.GRANT_ID, text.removeprefix("#"))
    return None


def find_grants(
    db: Database,
    *,
    external_id: str | None = None,
    email: str | None = None,
    slack_user_id: str | None = None,
    conference: str | None = None,
) -> list[GrantRef]:
    """Grants matching any of the given references, newest conference first."""
    clauses = []
    if external_id:
        clauses.append(Grant.external_id == external_id)
    if email:
        clauses.append(Grant.email_key == email.strip().lower())
    if slack_user_id:
        clauses.append(Grant.slack_user_id == slack_user_id)
    if not clauses:
        return []
    query = (
        select(Grant, Conference)
        .join(Conference, Grant.conference_id == Conference.id)
        .where(or_(*clauses))
        .order_by(Conference.id.desc(), Grant.id)
    )
    if conference:
        query = query.where(Conference.code == conference)
    with db.transaction() as session:
        return [grant_ref(grant, conf) for grant, conf in session.execute(query).all()]


@dataclass(frozen=True)
class Resolution:
    """The grant a reference points at, or why it points at none or several."""

    grant: GrantRef | None
    candidates: tuple[GrantRef, ...]
    # Why there is no one grant, in words every edge shares (`... has several grants: ...`);
    # how to pick one (`-c CONF` on the command line, a conference code in Slack) is the
    # edge's to say, with `suggested`.
    problem: str | None

    @property
    def several(self) -> bool:
        """Whether the reference matches grants at several conferences."""
        return self.grant is None and len(self.candidates) > 1

    @property
    def suggested(self) -> str | None:
        """The conference to suggest when several match: the current one."""
        return self.candidates[0].conference if self.several else None


def resolve_grant(
    db: Database,
    target: Target,
    *,
    email: str | None = None,
    conference: str | None = None,
    label: str | None = None,
    conferences: Mapping[str, ConferenceConfig] | None = None,
) -> Resolution:
    """Exactly one grant for a target, else a message saying none or which conferences.

    `email` is the address Slack gave for a mentioned user, searched alongside the user id.
    With `conferences` (the configuration), several grants are listed current conference
    first (one that issues vouchers, the latest by voucher validity): `suggested` names it.
    """
    shown = label or target.value
    grants = find_grants(
        db,
        external_id=target.value if target.kind is TargetKind.GRANT_ID else None,
        email=target.value if target.kind is TargetKind.EMAIL else email,
        slack_user_id=target.value if target.kind is TargetKind.SLACK_USER else None,
        conference=conference,
    )
    unique = current_first(tuple({grant.id: grant for grant in grants}.values()), conferences)
    if not unique:
        where = f" at {conference}" if conference else ""
        return Resolution(None, (), f"No grant found for {shown}{where}.")
    if len(unique) > 1:
        listed = ", ".join(f"{g.conference} (grant {g.external_id})" for g in unique)
        return Resolution(None, unique, f"{shown} has several grants: {listed}.")
    return Resolution(unique[0], unique, None)


def current_first(
    grants: tuple[GrantRef, ...], conferences: Mapping[str, ConferenceConfig] | None
) -> tuple[GrantRef, ...]:
    """Grants of conferences that issue vouchers first, the latest `voucher_valid_until` first.

    The sort is stable: otherwise the order stays newest conference first.
    """
    if not conferences:
        return grants

    def key(grant: GrantRef) -> tuple[bool, float]:
        config = conferences.get(grant.conference)
        if config is None or not config.issue_vouchers:
            return (True, 0.0)
        until = config.voucher_valid_until
        return (False, -until.timestamp() if until is not None else 0.0)

    return tuple(sorted(grants, key=key))
