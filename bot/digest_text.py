"""The digest in words: the phrases Slack and the terminal share, the terminal text, the CSV.

`bot.slack.blocks.digest` builds the channel message from the same phrases (escaped there);
`digest_text` is what `python -m bot digest --print` shows; `digest_csv` is the file with
every line of every section, attached in the digest's thread when the message had to cut.
Dates are shown in the conference's time zone. Codes are always masked (the service masks
them); nothing here prints an email address.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from bot.services.digest import (
    Digest,
    DigestGrant,
    HeldGrant,
    PendingConfirmation,
    PretixState,
    RecentConfirmation,
    RefusedWithVoucher,
    StuckGrant,
    UnredeemedVoucher,
    Urgency,
)
from bot.storage import EmailState, VoucherState

# Section titles, in the order the digest shows them (urgent first).
WAITING_TITLE = "Waiting for confirmation"
STUCK_TITLE = "Confirmed, still without a voucher or its email"
HELD_TITLE = "Held confirmations: issue or dismiss"
REFUSED_TITLE = "Refused after their voucher was issued"
RECENT_TITLE = "Confirmed in the last 24 hours"
REDEMPTION_TITLE = "Grant vouchers not redeemed yet"

CSV_COLUMNS = (
    "section",
    "grant_id",
    "backend_id",
    "name",
    "when",
    "deadline",
    "days_left",
    "voucher",
    "voucher_state",
    "email_state",
    "detail",
)


def when(moment: dt.datetime | None, zone: ZoneInfo) -> str:
    """A moment as staff read it, in the conference's time zone: `Mon 4 May 23:59`."""
    if moment is None:
        return "-"
    local = moment.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def day(date: dt.date) -> str:
    """A date as the digest's title shows it: `Sun 3 May 2026`."""
    return f"{date:%a} {date.day} {date:%b %Y}"


def grant_label(grant: DigestGrant) -> str:
    """`grant 1234`: the backend's id, as staff type it in `/voucher`."""
    return f"grant {grant.external_id}"


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


def days_words(item: PendingConfirmation) -> str:
    """`2 days left`, `last day`, `1 day overdue`, `no deadline`."""
    if item.days_left is None:
        return "no deadline"
    if item.urgency is Urgency.OVERDUE:
        return f"{_plural(-item.days_left, 'day')} overdue"
    if item.days_left == 0:
        return "last day"
    return f"{_plural(item.days_left, 'day')} left"


def waiting_words(item: PendingConfirmation, zone: ZoneInfo) -> str:
    """What follows a waiting grantee's name."""
    return (
        f"approval email {when(item.reply_sent_at, zone)} · deadline {when(item.deadline, zone)}"
        f" · {days_words(item)}"
    )


def voucher_words(
    state: VoucherState | None, email: EmailState | None, code: str | None, *, held: bool = False
) -> str:
    """A voucher and its email in a few words: `voucher ABCD… created · email sent`."""
    if held:
        return "held for staff"
    if state is None:
        return "no voucher yet"
    email_part = {
        EmailState.SENT: "email sent",
        EmailState.PENDING: "email waiting",
        EmailState.SENDING: "email being sent",
        EmailState.FAILED: "email failed",
        EmailState.NOT_DUE: "no email due",
        None: "no email",
    }[email]
    return f"voucher {code or '-'} {state.value} · {email_part}"


def recent_words(item: RecentConfirmation, zone: ZoneInfo) -> str:
    """What follows a recent confirmation's name."""
    state = voucher_words(item.voucher_state, item.email_state, item.code, held=item.held)
    return f"confirmed {when(item.confirmed_at, zone)} · {state}"


def stuck_words(item: StuckGrant, zone: ZoneInfo) -> str:
    """What follows a stuck grantee's name: since when, and why."""
    return f"confirmed {when(item.confirmed_at, zone)} · {item.reason}"


def held_words(item: HeldGrant, zone: ZoneInfo) -> str:
    """What follows a held grantee's name."""
    return f"confirmed {when(item.confirmed_at, zone)} · {item.reason}"


def refused_words(item: RefusedWithVoucher, zone: ZoneInfo) -> str:
    """What follows a refused grantee's name: the voucher, and whether it was used."""
    if item.redeemed is None:
        use = "redemption unknown (Pretix could not be read)"
    elif item.used:
        use = "the voucher was used: nothing to revoke"
    else:
        use = "not used: revoke it"
    return f"refused {when(item.refused_at, zone)} · voucher {item.code} · {use}"


def unredeemed_words(item: UnredeemedVoucher, zone: ZoneInfo) -> str:
    """What follows an unredeemed voucher's holder."""
    emailed = f"emailed {when(item.emailed_at, zone)}" if item.emailed_at else "not emailed"
    return f"voucher {item.code} · {emailed}"


def unredeemed_name(item: UnredeemedVoucher) -> str:
    """The holder of an unredeemed voucher, or that the bot's records do not name one."""
    return item.grant.name if item.grant else "not in the bot's records"


def redemption_summary(digest: Digest) -> str:
    """One line: the totals, or why Pretix could not say."""
    r = digest.redemption
    if r.pretix is PretixState.OFF:
        return (
            f"Redemption unknown: Pretix is not configured "
            f"({_plural(r.recorded, 'grant voucher')} in the bot's records)."
        )
    if r.pretix is PretixState.DOWN:
        return (
            f"Redemption unknown: Pretix did not answer ({r.problem or 'no answer'}); "
            f"{_plural(r.recorded, 'grant voucher')} in the bot's records."
        )
    not_yet = r.listed - r.redeemed
    return (
        f"{_plural(r.listed, 'grant voucher')} in Pretix: {r.redeemed} redeemed, "
        f"{not_yet} not yet ({r.recorded} in the bot's records)."
    )


def drift_commands(digest: Digest) -> tuple[str, str]:
    """Where staff read what drifted: the command line and the slash command."""
    return (
        f".venv/bin/voucher-bot drift {digest.conference}",
        f"/voucher drift {digest.conference}",
    )


def drift_words(digest: Digest) -> str | None:
    """The one drift line (None when nothing drifted), with where the details are."""
    if digest.drift is None:
        return None
    cli, slash = drift_commands(digest)
    return f"{digest.drift} Details: {cli} (or {slash})."


def counts_line(digest: Digest) -> str:
    """The digest in one line: how many in each section."""
    parts = []
    if digest.waiting:
        urgent = [
            f"{digest.overdue} overdue" if digest.overdue else "",
            f"{digest.due_soon} due within 48 h" if digest.due_soon else "",
        ]
        extra = ", ".join(u for u in urgent if u)
        parts.append(f"{len(digest.waiting)} waiting" + (f" ({extra})" if extra else ""))
    if digest.stuck:
        parts.append(f"{len(digest.stuck)} without voucher or email")
    if digest.held:
        parts.append(f"{len(digest.held)} held")
    if digest.refused:
        parts.append(f"{len(digest.refused)} refused with a voucher")
    if digest.recent:
        parts.append(f"{len(digest.recent)} confirmed in 24 h")
    if digest.drift:
        parts.append("drift in Pretix")
    return " · ".join(parts)


def empty_line(digest: Digest) -> str:
    """The one short line of a day with nothing to report."""
    return (
        f"Grants digest, {digest.conference_name}, {day(digest.local_date)}: nothing to report "
        f"(nobody waits for confirmation, nothing needs a person). {redemption_summary(digest)}"
    )


def title(digest: Digest) -> str:
    """The digest's heading."""
    return f"Grants digest · {digest.conference_name} · {day(digest.local_date)}"


# --- the terminal -------------------------------------------------------------------------


def digest_text(digest: Digest) -> str:
    """The whole digest as plain text, every line of every section (nothing cut)."""
    if digest.empty:
        return empty_line(digest)
    zone = ZoneInfo(digest.timezone)
    lines = [title(digest), counts_line(digest)]

    def section(heading: str, rows: list[str]) -> None:
        if rows:
            lines.extend(["", f"{heading} ({len(rows)})", *(f"  - {row}" for row in rows)])

    def who(grant: DigestGrant) -> str:
        return f"{grant.name} ({grant_label(grant)})"

    section(WAITING_TITLE, [f"{who(p.grant)}: {waiting_words(p, zone)}" for p in digest.waiting])
    section(STUCK_TITLE, [f"{who(s.grant)}: {stuck_words(s, zone)}" for s in digest.stuck])
    section(HELD_TITLE, [f"{who(h.grant)}: {held_words(h, zone)}" for h in digest.held])
    section(REFUSED_TITLE, [f"{who(r.grant)}: {refused_words(r, zone)}" for r in digest.refused])
    section(RECENT_TITLE, [f"{who(r.grant)}: {recent_words(r, zone)}" for r in digest.recent])
    lines.extend(["", redemption_summary(digest)])
    lines.extend(
        f"  - {unredeemed_name(u)}"
        + (f" ({grant_label(u.grant)})" if u.grant else "")
        + f": {unredeemed_words(u, zone)}"
        for u in digest.redemption.unredeemed
    )
    if (drift := drift_words(digest)) is not None:
        lines.extend(["", drift])
    return "\n".join(lines)


# --- the CSV ------------------------------------------------------------------------------


def csv_filename(digest: Digest) -> str:
    """`digest-pycon2026-2026-05-03.csv`."""
    return f"digest-{digest.conference}-{digest.local_date.isoformat()}.csv"


def digest_csv(digest: Digest) -> str:
    """Every line of every section, one row each (spreadsheet formulas neutralised)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in _csv_rows(digest):
        writer.writerow([_cell(value) for value in row])
    return buffer.getvalue()


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ (or a tab/CR) is a formula to a spreadsheet: keep it text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _iso(moment: dt.datetime | None, zone: ZoneInfo) -> str:
    return "" if moment is None else moment.astimezone(zone).isoformat(timespec="minutes")


def _csv_rows(digest: Digest) -> Iterator[tuple[object, ...]]:
    zone = ZoneInfo(digest.timezone)
    for p in digest.waiting:
        g = p.grant
        yield (
            "waiting",
            g.id,
            g.external_id,
            g.name,
            _iso(p.reply_sent_at, zone),
            _iso(p.deadline, zone),
            p.days_left,
            "",
            "",
            "",
            days_words(p),
        )
    for s in digest.stuck:
        g = s.grant
        yield (
            "stuck",
            g.id,
            g.external_id,
            g.name,
            _iso(s.confirmed_at, zone),
            "",
            "",
            "",
            s.voucher_state or "",
            s.email_state or "",
            s.reason,
        )
    for h in digest.held:
        g = h.grant
        yield (
            "held",
            g.id,
            g.external_id,
            g.name,
            _iso(h.confirmed_at, zone),
            "",
            "",
            "",
            "",
            "",
            h.reason,
        )
    for r in digest.refused:
        g = r.grant
        yield (
            "refused",
            g.id,
            g.external_id,
            g.name,
            _iso(r.refused_at, zone),
            "",
            "",
            r.code,
            "used" if r.used else ("unknown" if r.redeemed is None else "not used"),
            "",
            refused_words(r, zone),
        )
    for c in digest.recent:
        g = c.grant
        yield (
            "confirmed",
            g.id,
            g.external_id,
            g.name,
            _iso(c.confirmed_at, zone),
            "",
            "",
            c.code or "",
            "held" if c.held else (c.voucher_state or ""),
            c.email_state or "",
            "",
        )
    for u in digest.redemption.unredeemed:
        holder = u.grant
        yield (
            "not_redeemed",
            holder.id if holder else "",
            holder.external_id if holder else "",
            unredeemed_name(u),
            _iso(u.emailed_at, zone),
            "",
            "",
            u.code,
            "",
            "sent" if u.emailed_at else "",
            "",
        )
