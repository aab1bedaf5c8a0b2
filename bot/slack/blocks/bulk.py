"""The bulk issuance messages: the preview card (and its later states), the summary, the CSV.

One message per bulk request lives in the conference channel and changes state in place:
the **preview** (counts by branch, the first grantees, who asked, the approvers mentioned,
Approve and Reject buttons), then **approved** / **rejected** / **expired** (buttons gone,
who decided and when), then the **progress** of the run (a text bar and the counts) and
finally **done**. The **summary** is a reply in that message's thread: totals, failures
with their reasons and a "Retry failed" button. The whole frozen list goes to the thread as
a CSV file when it is longer than the names the card shows.

The builders read `BulkCard` / `BulkReport`, plain views the Slack side fills from the bulk
service's results, so the card can be drawn again from any state (a restart, an expiry).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.slack.blocks._layout import (
    BULK_APPROVE_ACTION,
    BULK_REJECT_ACTION,
    BULK_RETRY_FAILED_ACTION,
    MAX_BLOCKS,
    TEXT_LIMIT,
    Block,
    Message,
    _context,
    _divider,
    _message,
    _section,
)
from bot.slack.blocks._text import (
    _FAILED,
    _INFO,
    _OK,
    _REVOKED,
    _WAITING,
    _WARNING,
    _WORKING,
    COMMAND,
    _bold,
    _code,
    _data,
    _icon,
    _label,
    _lines,
    _Rich,
    _rich,
)

# Grantees named on the card; the rest are counted, and the CSV in the thread has them all.
SHOWN_GRANTEES = 15
# Failures and changed grantees listed in the summary reply before "…and N more".
SHOWN_PROBLEMS = 25
BAR_WIDTH = 20
_CHECKLIST = "clipboard"

# The preview's branches (CONTRACT.md), in the order the card lists them. Those in `DUE_BRANCHES`
# are work the run will do; every other branch is a reason to skip the grantee. Each has
# its words for one grantee and for several.
BRANCH_LABELS: dict[str, tuple[str, str]] = {
    "new": ("new voucher", "new vouchers"),
    "co_speaker_upgrade": ("co-speaker upgrade", "co-speaker upgrades"),
    "email_only": ("email only", "emails only"),
    "finish": ("half-done voucher to finish", "half-done vouchers to finish"),
    "retry": ("failed voucher to retry", "failed vouchers to retry"),
    "speaker": ("has a speaker voucher", "have a speaker voucher"),
    "already_done": ("already done", "already done"),
    "held": ("held for staff", "held for staff"),
    "no_email": ("no email address", "no email address"),
    "email_changed": ("email changed", "email changed"),
    "other": ("other", "other"),
}
DUE_BRANCHES = ("new", "co_speaker_upgrade", "email_only", "finish", "retry")
_SLACK_USER = re.compile(r"^(?:[a-z_]+:)?([UW][A-Z0-9]{2,})$")


class BulkPhase(enum.StrEnum):
    """Where a bulk request is, as the card shows it."""

    AWAITING = "awaiting"
    APPROVED = "approved"  # approved, the run not started yet
    REJECTED = "rejected"
    EXPIRED = "expired"
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class BulkGrantee:
    """One grantee of the frozen list, as the card and the CSV show them."""

    external_id: str
    full_name: str
    email: str | None
    branch: str
    detail: str | None = None  # why skipped or failed, in words


@dataclass(frozen=True)
class BulkCounts:
    """What a run did so far: grantees handled out of `total`, by outcome."""

    total: int
    handled: int = 0
    created: int = 0
    upgraded: int = 0
    emailed: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass(frozen=True)
class BulkCard:
    """Everything the one message of a bulk request shows, in any phase."""

    request_id: int | None  # None: nothing was due, so nothing was stored
    conference: str
    conference_name: str
    requested_by: str  # a Slack user id (or an actor label: `slash_command:U123`, `cli:ops`)
    expires_at: dt.datetime
    branches: Mapping[str, int]  # preview branch -> grantees
    grantees: Sequence[BulkGrantee]  # the frozen list in order (at least the first ones)
    approvers: str = ""  # trusted mrkdwn: `<!subteam^S1>` or `<@U1> <@U2>`
    phase: BulkPhase = BulkPhase.AWAITING
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    progress: BulkCounts | None = None
    retry_of: int | None = None

    @property
    def due(self) -> int:
        """Grantees the run would do something for."""
        return sum(self.branches.get(branch, 0) for branch in DUE_BRANCHES)

    @property
    def frozen(self) -> int:
        """Grantees in the frozen list, due or skipped."""
        return sum(self.branches.values())


@dataclass(frozen=True)
class BulkReport:
    """The end of a run: its counts, how long it took, and who needs a person."""

    request_id: int
    conference_name: str
    counts: BulkCounts
    seconds: float
    failed: Sequence[BulkGrantee] = field(default_factory=tuple)
    changed: Sequence[BulkGrantee] = field(default_factory=tuple)  # skipped at run time


def approvers_mention(usergroup: str | None, user_ids: Sequence[str]) -> str:
    """Who is asked to approve: the staff user group, else the allow-listed staff."""
    if usergroup and re.fullmatch(r"S[A-Z0-9]+", usergroup):
        return f"<!subteam^{usergroup}>"
    return " ".join(f"<@{user}>" for user in user_ids[:10] if _SLACK_USER.match(user))


def bulk_card_message(card: BulkCard) -> Message:
    """The bulk request's one message, drawn for its phase (preview, decided, progress...)."""
    blocks: list[Block] = [_section(_headline(card))]
    if card.frozen == 0 or card.due == 0:
        blocks.append(_section(_nothing_due(card)))
        return _message(_fallback(card), blocks)
    blocks.append(_section(_branch_lines(card)))
    blocks.append(_section(_first_grantees(card)))
    blocks.append(_divider())
    if card.request_id is not None:
        blocks.extend(_phase_blocks(card))
    return _message(_fallback(card), blocks[:MAX_BLOCKS])


def bulk_summary_message(report: BulkReport) -> Message:
    """The reply in the card's thread when a run ends: totals, failures, a Retry button."""
    counts = report.counts
    icon = _OK if counts.failed == 0 else _WARNING
    headline = _rich(
        _icon(icon),
        _bold(f"Bulk issuance #{report.request_id}"),
        " for ",
        _bold(report.conference_name),
        f" finished in {_duration(report.seconds)}: ",
        _tally(counts),
        ".",
    )
    blocks: list[Block] = [_section(headline)]
    if report.failed:
        blocks.append(
            _section(_problem_list(f"Failed ({len(report.failed)})", report.failed, _FAILED))
        )
    if report.changed:
        blocks.append(
            _section(
                _problem_list(
                    f"Changed since the preview, not issued ({len(report.changed)})",
                    report.changed,
                    _INFO,
                )
            )
        )
    if report.failed:
        blocks.append(
            _context(
                _rich(
                    "Retry failed makes a new request over the failed "
                    "grantees only; it needs an approval again."
                )
            )
        )
        blocks.append(
            {
                "type": "actions",
                "block_id": f"bulk_retry_{report.request_id}",
                "elements": [
                    _button("Retry failed", BULK_RETRY_FAILED_ACTION, report.request_id, "primary")
                ],
            }
        )
    return _message(headline, blocks)


def bulk_command_answer(*, channel: str, request_id: int, due: int) -> Message:
    """What `/voucher bulk` tells the asker once the preview is queued for the channel."""
    where = (
        _Rich(f"<#{channel}>", f"#{channel}")
        if re.fullmatch(r"[CG][A-Z0-9]+", channel)
        else _data(channel, 100)
    )
    text = _rich(
        _icon(_CHECKLIST),
        f"Bulk request #{request_id} ({_plural(due, 'grantee', 'grantees')} due) is in ",
        where,
        ": a second member of staff approves it there.",
    )
    return _message(text, [_section(text)])


def bulk_working_message(conference: str | None) -> Message:
    """The ack of `/voucher bulk`: the list is being frozen, the preview goes to the channel."""
    which: list[_Rich | str] = [" for ", _code(conference)] if conference else []
    text = _rich(
        _icon(_WORKING),
        "Freezing the list of grantees due a voucher",
        *which,
        "… The preview goes to the conference channel for a second member of staff to approve.",
    )
    return _message(text, [_section(text)])


def bulk_refusal_message(reason: str) -> Message:
    """A click or command that was refused, told only to the person (ephemeral)."""
    text = _rich(_icon(_WARNING), _data(reason, TEXT_LIMIT - 20))
    return _message(text, [_section(text)])


def bulk_already_decided_message(
    request_id: int, *, approved: bool, winner: str | None, when: dt.datetime | None
) -> Message:
    """Told to the one who clicked second: who decided the request first, and when."""
    parts: list[_Rich | str] = [
        _icon(_INFO),
        f"Bulk request #{request_id} was already ",
        _bold("approved" if approved else "rejected"),
    ]
    if winner:
        parts += [" by ", _person(winner)]
    if when:
        parts += [" ", _when(when)]
    parts.append(": your click changed nothing.")
    text = _rich(*parts)
    return _message(text, [_section(text)])


def bulk_preview_csv(grantees: Sequence[BulkGrantee]) -> str:
    """The whole frozen list as CSV (one row a grantee), for the file in the card's thread."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["position", "grant_id", "full_name", "email", "branch", "detail"])
    for position, grantee in enumerate(grantees, start=1):
        writer.writerow(
            [
                position,
                grantee.external_id,
                _csv_cell(grantee.full_name),
                _csv_cell(grantee.email or ""),
                grantee.branch,
                _csv_cell(grantee.detail or ""),
            ]
        )
    return out.getvalue()


def wants_csv(card: BulkCard) -> bool:
    """Whether the card names fewer grantees than the list holds (then the CSV goes along)."""
    return card.frozen > SHOWN_GRANTEES


def progress_bar(handled: int, total: int, width: int = BAR_WIDTH) -> str:
    """`▓▓▓▓▓░░░░░ 50 %`: a text bar Slack shows in any client."""
    share = 1.0 if total <= 0 else min(max(handled / total, 0.0), 1.0)
    full = round(share * width)
    return "▓" * full + "░" * (width - full) + f" {int(share * 100)} %"


# --- pieces ------------------------------------------------------------------------------------


def _headline(card: BulkCard) -> _Rich:
    title = "Retry of bulk issuance" if card.retry_of else "Bulk issuance"
    number = f" #{card.request_id}" if card.request_id is not None else ""
    parts: list[_Rich | str] = [
        _icon(_CHECKLIST),
        _bold(f"{title}{number}"),
        " for ",
        _bold(card.conference_name),
        " (",
        _code(card.conference),
        ")",
    ]
    if card.requested_by:
        parts += [", asked by ", _person(card.requested_by)]
    if card.retry_of:
        parts += [" (the failed grantees of #", str(card.retry_of), ")"]
    parts.append(".")
    return _rich(*parts)


def _nothing_due(card: BulkCard) -> _Rich:
    skipped = _skipped_phrases(card)
    tail: list[_Rich | str] = [" Skipped: ", "; ".join(skipped), "."] if skipped else []
    return _rich(
        _icon(_INFO),
        "Nothing is due: no voucher to create, upgrade or email",
        " (no confirmed grantee is waiting)." if not skipped else ".",
        *tail,
    )


def _branch_lines(card: BulkCard) -> _Rich:
    due = [
        _rich("• ", _bold(f"{card.branches.get(b, 0):,}"), " ", _branch_label(b, card.branches[b]))
        for b in DUE_BRANCHES
        if card.branches.get(b, 0)
    ]
    lines: list[_Rich] = [
        _rich(_label("Will do"), f" ({card.due:,} of {card.frozen:,} frozen):"),
        *due,
    ]
    skipped = _skipped_phrases(card)
    if skipped:
        lines.append(
            _rich(_label("Skipped"), f" ({card.frozen - card.due:,}): ", "; ".join(skipped))
        )
    return _lines(lines)


def _skipped_phrases(card: BulkCard) -> list[str]:
    skipped = [b for b in card.branches if b not in DUE_BRANCHES and card.branches[b]]
    order = list(BRANCH_LABELS)
    skipped.sort(key=lambda b: order.index(b) if b in order else len(order))
    return [f"{card.branches[b]:,} {_branch_label(b, card.branches[b])}" for b in skipped]


def _first_grantees(card: BulkCard) -> _Rich:
    due = [g for g in card.grantees if g.branch in DUE_BRANCHES]
    shown = due[:SHOWN_GRANTEES]
    names = [_rich(_data(g.full_name, 80), " (", _branch_label(g.branch, 1), ")") for g in shown]
    parts: list[_Rich | str] = [_label("First grantees"), ": "]
    for index, name in enumerate(names):
        parts += [", " if index else "", name]
    more = card.due - len(shown)
    if more > 0:
        parts.append(f", and {more:,} more")
    parts.append(".")
    if wants_csv(card):
        parts.append(" The whole list is in the CSV file in this thread.")
    return _rich(*parts)


def _phase_blocks(card: BulkCard) -> list[Block]:
    request_id = card.request_id or 0
    match card.phase:
        case BulkPhase.AWAITING:
            ask: list[_Rich | str] = [_icon(_WAITING), "Waiting for a second member of staff"]
            if card.approvers:
                ask += [" (", _Rich(card.approvers, "staff"), ")"]
            ask += [
                " to approve. Nothing is done before. Expires ",
                _when(card.expires_at),
                ".",
            ]
            return [
                _section(_rich(*ask)),
                {
                    "type": "actions",
                    "block_id": f"bulk_decide_{request_id}",
                    "elements": [
                        _button("Approve", BULK_APPROVE_ACTION, request_id, "primary"),
                        _button("Reject", BULK_REJECT_ACTION, request_id, "danger"),
                    ],
                },
            ]
        case BulkPhase.REJECTED:
            return [_section(_decided(_REVOKED, "Rejected", card, " Nothing was done."))]
        case BulkPhase.EXPIRED:
            return [
                _section(
                    _rich(
                        _icon(_WAITING),
                        _bold("Expired"),
                        " ",
                        _when(card.expires_at),
                        ": nobody approved it in time. Nothing was done; run ",
                        _code(f"{COMMAND} bulk {card.conference}"),
                        " again for a fresh list.",
                    )
                )
            ]
        case BulkPhase.APPROVED:
            return [_section(_decided(_OK, "Approved", card, " Starting…"))]
        case BulkPhase.RUNNING | BulkPhase.DONE:
            blocks = [_section(_decided(_OK, "Approved", card, ""))]
            counts = card.progress or BulkCounts(total=card.due)
            icon = _WORKING if card.phase is BulkPhase.RUNNING else _OK
            state = "Running" if card.phase is BulkPhase.RUNNING else "Done"
            if card.phase is BulkPhase.DONE and counts.failed:
                icon = _WARNING
            blocks.append(
                _section(
                    _lines(
                        [
                            _rich(
                                _icon(icon),
                                _bold(state),
                                f" {counts.handled:,} of {counts.total:,}",
                            ),
                            _Rich(f"`{progress_bar(counts.handled, counts.total)}`", ""),
                            _tally(counts),
                        ]
                    )
                )
            )
            if card.phase is BulkPhase.DONE:
                blocks.append(_context(_rich("The summary is in this thread.")))
            return blocks
    return []  # pragma: no cover - every phase is matched above


def _decided(icon: str, verb: str, card: BulkCard, tail: str) -> _Rich:
    parts: list[_Rich | str] = [_icon(icon), _bold(verb)]
    if card.decided_by:
        parts += [" by ", _person(card.decided_by)]
    if card.decided_at:
        parts += [" ", _when(card.decided_at)]
    parts += [".", tail]
    return _rich(*parts)


def _tally(counts: BulkCounts) -> _Rich:
    return _rich(
        f"created {counts.created:,} · upgraded {counts.upgraded:,} · emailed {counts.emailed:,}"
        f" · skipped {counts.skipped:,} · failed {counts.failed:,}"
    )


def _problem_list(title: str, grantees: Sequence[BulkGrantee], icon: str) -> _Rich:
    shown = grantees[:SHOWN_PROBLEMS]
    lines = [_rich(_icon(icon), _label(title))]
    budget = TEXT_LIMIT - 200
    used = 0
    listed = 0
    for grantee in shown:
        line = _rich(
            "• ",
            _data(grantee.full_name, 80),
            " (grant ",
            _code(grantee.external_id),
            "): ",
            _data(grantee.detail or "no reason given", 200),
        )
        if used + len(line.md) + 1 > budget:
            break
        lines.append(line)
        used += len(line.md) + 1
        listed += 1
    if len(grantees) > listed:
        lines.append(_rich(f"…and {len(grantees) - listed:,} more."))
    return _lines(lines)


def _button(text: str, action_id: str, request_id: int, style: str) -> Block:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id,
        "value": str(request_id),
        "style": style,
    }


def _branch_label(branch: str, count: int) -> str:
    one, many = BRANCH_LABELS.get(branch, (branch.replace("_", " "), branch.replace("_", " ")))
    return one if count == 1 else many


def _person(who: str) -> _Rich:
    if match := _SLACK_USER.match(who):
        return _Rich(f"<@{match.group(1)}>", f"<@{match.group(1)}>")
    return _code(who)


def _when(moment: dt.datetime) -> _Rich:
    """A time every reader sees in their own time zone, with UTC as the fallback."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    utc = moment.astimezone(dt.UTC)
    plain = utc.strftime("%Y-%m-%d %H:%M UTC")
    return _Rich(f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} at {{time}}|{plain}>", plain)


def _fallback(card: BulkCard) -> _Rich:
    state = {
        BulkPhase.AWAITING: "waiting for approval",
        BulkPhase.APPROVED: "approved",
        BulkPhase.REJECTED: "rejected",
        BulkPhase.EXPIRED: "expired",
        BulkPhase.RUNNING: "running",
        BulkPhase.DONE: "done",
    }[card.phase]
    number = f" #{card.request_id}" if card.request_id is not None else ""
    summary = "nothing due" if card.due == 0 else f"{card.due:,} due, {state}"
    return _rich(f"Bulk issuance{number} for ", card.conference_name, f": {summary}.")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _csv_cell(text: str) -> str:
    """A cell a spreadsheet never runs as a formula (`=`, `+`, `-`, `@` lead with a quote)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


__all__ = [
    "BRANCH_LABELS",
    "DUE_BRANCHES",
    "SHOWN_GRANTEES",
    "BulkCard",
    "BulkCounts",
    "BulkGrantee",
    "BulkPhase",
    "BulkReport",
    "approvers_mention",
    "bulk_already_decided_message",
    "bulk_card_message",
    "bulk_command_answer",
    "bulk_preview_csv",
    "bulk_refusal_message",
    "bulk_summary_message",
    "bulk_working_message",
    "progress_bar",
    "wants_csv",
]
