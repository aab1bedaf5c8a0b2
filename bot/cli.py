"""Command line: the same services as Slack, from a terminal (`.venv/bin/voucher-bot --help`)."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot import migrations
from bot.bootstrap import Bot, SlackRuntime, build_bot, startup_summary
from bot.conferences import pick_conference
from bot.digest_text import digest_text
from bot.logs import configure_logging
from bot.pretix import PretixError
from bot.services import bulk
from bot.services.actors import Actor
from bot.services.checks import (
    CheckResult,
    CheckStatus,
    check_conferences,
    check_database,
    check_pretix,
    check_slack,
    check_smtp,
)
from bot.services.context import ServiceContext
from bot.services.digest import build_digest
from bot.services.drift import DriftKind, DriftReport, drift_report
from bot.services.dry_run import (
    ISSUES,
    Branch,
    ImportPlan,
    Planned,
    conferences_without_speaker_vouchers,
    plan_grant_import,
    plan_provisioning,
    result_label,
)
from bot.services.imports import (
    ImportFileError,
    ImportReport,
    RowError,
    held_grants,
    import_grants,
    import_vouchers,
    read_grants,
)
from bot.services.lookup import parse_target, resolve_grant
from bot.services.outcomes import (
    HAS_VOUCHER,
    EmailResult,
    GrantRef,
    IntakeAction,
    ProvisionOutcome,
    ProvisionResult,
    RevokeResult,
)
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.services.resend import resend_voucher_email
from bot.services.revocation import revoke_grant_voucher
from bot.services.status import GrantStatusReport, conference_summaries, grant_status
from bot.settings import ConfigError, Settings, load_settings
from bot.slack.digest_post import post_digest
from bot.storage import Conference, GrantStatus, Source, describe_connection_error, utcnow

EXIT_STATUS_HELP = (
    "Exit status, every command: 0 all good; 1 something needs a person (a held grant, a "
    "failure, a check that fails); 2 bad input (settings, arguments, an unknown grant or "
    "conference, bad rows in a file)."
)
# Plain click help: the rich help of this typer version writes <bool> beside every flag.
app = typer.Typer(
    help=f"Voucher bot: issue Pretix vouchers to financial-aid grantees.\n\n{EXIT_STATUS_HELP}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
grants_app = typer.Typer(
    help="Grants from the conference backend.", no_args_is_help=True, rich_markup_mode=None
)
vouchers_app = typer.Typer(
    help="Vouchers made elsewhere (speakers).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(grants_app, name="grants")
app.add_typer(vouchers_app, name="vouchers")

# soft_wrap: a long sentence stays on one line (greppable), never cut at the terminal width.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
# Off a terminal (a pipe, CI, a log) a table is not cut to 80 columns: each row stays one line.
for _console in (out, err):
    if not _console.is_terminal:
        _console.width = 1000

OK, NEEDS_PERSON, BAD_INPUT = 0, 1, 2
# An import that would issue more vouchers than this asks first, on a terminal.
CONFIRM_ABOVE = 5
# Grants or line numbers named in a line that stands for many with the same reason.
SHOWN = 5


class _Options:
    verbose = False


@app.callback()
def _main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show the bot's log lines (LOG_LEVEL) on the terminal."
        ),
    ] = False,
) -> None:
    """Voucher bot: issue Pretix vouchers to financial-aid grantees."""
    _Options.verbose = verbose


Target = Annotated[
    str,
    typer.Argument(
        help="A grant id, an email address or a Slack user id.",
        metavar="TARGET",
        show_default=False,
    ),
]
ConferenceOption = Annotated[
    str | None,
    typer.Option("--conference", "-c", help="Conference code, when several match.", metavar="CONF"),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Say what would happen, by branch; do nothing.")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask before issuing many vouchers.")
]

# Outcomes after which a script may carry on; anything else exits with status 1. A
# conference with issue_vouchers = false is fine: nothing is missing (as status says).
SUCCESS = HAS_VOUCHER | {ProvisionResult.IN_PROGRESS, ProvisionResult.NOT_ISSUING}
REVOKE_DONE = {RevokeResult.REVOKED, RevokeResult.ALREADY_GONE, RevokeResult.ALREADY_REVOKED}


def _settings(*, server: bool = False) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        err.print(exc.render(), markup=False)
        raise typer.Exit(BAD_INPUT) from None
    configure_logging(level=_log_level(settings, server=server), fmt=settings.log_format)
    return settings


def _log_level(settings: Settings, *, server: bool) -> str:
    """The server logs at LOG_LEVEL; a command shows warnings only, unless `-v`."""
    if server:
        return settings.log_level
    if _Options.verbose:
        return "DEBUG" if settings.log_level == "DEBUG" else "INFO"
    return "ERROR" if settings.log_level == "ERROR" else "WARNING"


@contextmanager
def _bot(*, migrate: bool | None = None, sync: bool = True, server: bool = False) -> Iterator[Bot]:
    settings = _settings(server=server)
    try:
        bot = build_bot(settings, migrate=migrate, sync=sync)
    except ConfigError as exc:
        err.print(exc.render(), markup=False)
        raise typer.Exit(BAD_INPUT) from None
    except OperationalError as exc:
        _database_unusable(exc, settings)
    try:
        yield bot
    except OperationalError as exc:
        _database_unusable(exc, settings)
    finally:
        bot.close()


def _database_unusable(exc: OperationalError, settings: Settings) -> NoReturn:
    message = describe_connection_error(exc, settings.database_url)
    err.print(f"DATABASE_URL: {message}", markup=False)
    raise typer.Exit(BAD_INPUT) from None


def _actor() -> Actor:
    return Actor(Source.CLI, getpass.getuser())


def _resolve(bot: Bot, text: str, conference: str | None) -> GrantRef:
    """The one grant `text` names, or a message and exit status 2 (bad input)."""
    target = parse_target(text)
    if target is None:
        err.print(f"Not a grant id, email address or Slack user: {text!r}", markup=False)
        raise typer.Exit(BAD_INPUT)
    if conference is not None:
        _known_conference(bot, conference)
    resolution = resolve_grant(bot.db, target, conference=conference, conferences=bot.conferences)
    if resolution.grant is None:
        hint = (
            f" Say which conference: add -c {resolution.suggested}." if resolution.several else ""
        )
        err.print(f"{resolution.problem or 'No grant found.'}{hint}", markup=False)
        raise typer.Exit(BAD_INPUT)
    return resolution.grant


def _known_conference(bot: Bot, code: str) -> None:
    """Exit 2 unless `code` is a configured conference, or one the database remembers."""
    with bot.db.transaction() as session:
        stored = set(session.scalars(select(Conference.code)))
    known = set(bot.conferences) | stored
    if code not in known:
        listed = ", ".join(sorted(bot.conferences)) or "none configured"
        err.print(f"Unknown conference {code!r} (configured: {listed}).", markup=False)
        raise typer.Exit(BAD_INPUT)


def _is_terminal() -> bool:
    """Whether a person is at the keyboard: standard input is a terminal (not CI, a script)."""
    return sys.stdin.isatty()


@contextmanager
def _progress() -> Iterator[Progress]:
    """A progress bar on standard error, drawn only on a terminal; gone when done."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        yield progress


class _Stages:
    """Turns a service's (stage, total) and per-item calls into progress bar tasks."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def stage(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(name, total=total)

    def advance(self, *_args: object) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


@app.command()
def serve() -> None:
    """Run the bot: HTTP endpoints, background worker and scheduler (same as `make run`)."""
    from bot.server import serve as run_server

    with _bot(server=True) as bot:
        err.print(startup_summary(bot), markup=False)
        run_server(bot)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option("--to", help="Target revision.")] = "head",
) -> None:
    """Migrate the database schema up to the newest (or the given) revision."""
    with _bot(migrate=False, sync=False) as bot:
        migrations.upgrade(bot.db.engine, revision)
        out.print(f"Database at revision {migrations.current_revision(bot.db.engine)}.")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; `base` empties the database.")],
) -> None:
    """Migrate the database schema down to an older revision."""
    with _bot(migrate=False, sync=False) as bot:
        migrations.downgrade(bot.db.engine, revision)
        out.print(f"Database at revision {migrations.current_revision(bot.db.engine) or 'base'}.")


@grants_app.command("import")
def grants_import(
    file: Annotated[Path, typer.Argument(help="A CSV or JSON file of grants.", metavar="FILE")],
    provision: Annotated[
        bool,
        typer.Option(
            "--provision/--no-provision", help="Provision vouchers for newly confirmed grants."
        ),
    ] = True,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Grants provisioned at once.")] = 4,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
) -> None:
    """Import grants (CSV or JSON); bad rows are reported, good rows kept.

    Import speaker and co-speaker vouchers first (`vouchers import`). On a terminal, an
    import that would issue more than 5 vouchers asks first unless --yes; without a
    terminal (CI, scripts) it goes ahead.
    """
    with _bot() as bot:
        _warn_no_conferences(bot)
        try:
            _warn_speakerless(bot, file)
            if dry_run:
                plan = plan_grant_import(
                    bot.services, path=file, actor=_actor(), provision=provision
                )
                previous = _previous_statuses(bot, file)
                held = [
                    _held_line(grant, _file_hold_reason(grant, previous)) for grant in plan.held
                ]
                raise typer.Exit(_print_plan(plan, held))
            if provision and not yes and _is_terminal():
                _confirm_import(bot, file)
            with _progress() as progress:
                stages = _Stages(progress)
                report = import_grants(
                    bot.services,
                    path=file,
                    actor=_actor(),
                    provision=provision,
                    workers=workers,
                    on_progress=stages.advance,
                    on_row=stages.advance,
                    on_stage=stages.stage,
                )
        except ImportFileError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(BAD_INPUT) from None
    _print_import(report, noun="grants")
    held_todo = [(g, _held_todo(g, report.hold_reasons.get(g.id, ""))) for g in report.held]
    needs_person = _print_outcomes(report.provisioned, held=held_todo)
    _print_still_held(report.still_held)
    if report.errors:
        raise typer.Exit(BAD_INPUT)
    if needs_person or report.still_held or report.notes:
        raise typer.Exit(NEEDS_PERSON)


def _no_conferences_file(bot: Bot) -> str | None:
    """Why no conference is configured when the conference file is missing, else None."""
    if bot.conferences.source is not None or bot.conferences:
        return None
    return (
        f"no conferences file: {bot.settings.conferences_file} does not exist, so no "
        "conference is known. Create it from conferences.example.toml (or set "
        "CONFERENCES_FILE)"
    )


def _warn_no_conferences(bot: Bot) -> None:
    if (missing := _no_conferences_file(bot)) is not None:
        err.print(f"warning: {missing}.", markup=False)


def _warn_speakerless(bot: Bot, file: Path) -> None:
    """Warn about conferences with confirmed grants in the file and no speaker vouchers."""
    _rows, payloads, _errors = read_grants(bot.services, file)
    codes = {
        payload.conference
        for _line, payload in payloads
        if payload.status == GrantStatus.CONFIRMED
        and (config := bot.conferences.get(payload.conference)) is not None
        and config.issue_vouchers
    }
    for code in conferences_without_speaker_vouchers(bot.services, codes):
        err.print(
            f"warning: no speaker or co-speaker vouchers are known for {code}. Import them "
            "before grants (`.venv/bin/voucher-bot vouchers import FILE`): a speaker who also "
            "has a grant would otherwise get a second voucher.",
            markup=False,
        )


def _confirm_import(bot: Bot, file: Path) -> None:
    plan = plan_grant_import(bot.services, path=file, actor=_actor())
    if plan.issues <= CONFIRM_ABOVE:
        return
    branches = plan.branches
    shown = ", ".join(
        f"{count} {_ISSUE_WORDS[branch][count != 1]}"
        for branch, count in branches.most_common()
        if branch in ISSUES
    )
    question = (
        f"This import would issue {plan.issues} vouchers in Pretix ({shown}) and email each "
        "grantee. Go on?"
    )
    if not typer.confirm(question, default=False, err=True):
        err.print("Nothing imported.")
        raise typer.Exit(OK)  # nothing done, as asked


# The prompt's counts: one of each, or several.
_ISSUE_WORDS = {
    Branch.NEW: ("new voucher", "new vouchers"),
    Branch.UPGRADE: ("co-speaker upgrade", "co-speaker upgrades"),
    Branch.FINISH: ("half-done voucher to finish", "half-done vouchers to finish"),
    Branch.RETRY: ("failed voucher to retry", "failed vouchers to retry"),
}


@vouchers_app.command("import")
def vouchers_import(
    file: Annotated[Path, typer.Argument(help="A CSV or JSON file of vouchers.", metavar="FILE")],
) -> None:
    """Import vouchers made elsewhere (speaker, co-speaker); importing twice changes nothing."""
    with _bot() as bot, _progress() as progress:
        _warn_no_conferences(bot)
        stages = _Stages(progress)
        try:
            report = import_vouchers(
                bot.services,
                path=file,
                actor=_actor(),
                on_row=stages.advance,
                on_stage=stages.stage,
            )
        except ImportFileError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(BAD_INPUT) from None
    _print_import(report, noun="vouchers")
    if report.errors:
        raise typer.Exit(BAD_INPUT)
    if report.needs_person:
        raise typer.Exit(NEEDS_PERSON)


@app.command()
def provision(
    target: Target, conference: ConferenceOption = None, dry_run: DryRunOption = False
) -> None:
    """Give a confirmed grantee their voucher and email (safe to repeat; releases a hold)."""
    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        if dry_run:
            [plan] = plan_provisioning(bot.services, [grant.id], release_hold=True)
            held = dict(held_grants(bot.services, {(grant.conference, grant.external_id)}))
            reason = next(iter(held.values()), None)
            if reason is not None:
                # As the import words it; provisioning by hand releases the hold.
                out.print(f"held for staff: {_held_line(grant, reason)}", markup=False)
                plan = replace(plan, detail=plan.detail.replace(f"the hold ({reason})", "the hold"))
            out.print(f"Dry run, nothing done: {_plan_line(plan)}", markup=False)
            raise typer.Exit(NEEDS_PERSON if plan.needs_person else OK)
        outcome = provision_grant_voucher(
            bot.services, grant_id=grant.id, actor=_actor(), release_hold=True
        )
    _print_outcome(outcome)
    if _needs_person(outcome):
        raise typer.Exit(NEEDS_PERSON)


@app.command()
def resend(target: Target, conference: ConferenceOption = None) -> None:
    """Send the voucher email again (same code, new Message-ID)."""
    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        outcome = resend_voucher_email(bot.services, grant_id=grant.id, actor=_actor())
    out.print(outcome.message, markup=False)
    if not outcome.ok:
        raise typer.Exit(NEEDS_PERSON)


@app.command()
def revoke(target: Target, conference: ConferenceOption = None) -> None:
    """Delete the grant voucher of a grantee who refused after confirming (unless used)."""
    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        outcome = revoke_grant_voucher(bot.services, grant_id=grant.id, actor=_actor())
    out.print(outcome.message, markup=False)
    if outcome.result is RevokeResult.NOT_REFUSED:
        raise typer.Exit(BAD_INPUT)  # a grant still confirmed: nothing to revoke
    if outcome.result not in REVOKE_DONE:
        raise typer.Exit(NEEDS_PERSON)


@app.command()
def status(
    target: Annotated[
        str | None, typer.Argument(help="A grant id or email; none for totals.")
    ] = None,
    conference: ConferenceOption = None,
) -> None:
    """Show one grant's voucher and email story, or totals per conference."""
    with _bot() as bot:
        if target is None:
            _print_summaries(bot)
            return
        grant = _resolve(bot, target, conference)
        report = grant_status(bot.db, grant_id=grant.id)
    assert report is not None  # resolved just above
    _print_status(report)


@app.command()
def check() -> None:
    """Reach the database, Pretix (event, quota or item), SMTP and Slack; say what is wrong."""
    with _bot(migrate=False, sync=False) as bot:
        results = [
            check_database(bot.db, auto_migrate=bot.settings.auto_migrate),
            *_check_conferences_file(bot),
            *check_conferences(bot.conferences, now=utcnow()),
            *check_pretix(bot.pretix, bot.conferences),
            check_smtp(bot.mailer),
            *check_slack(
                bot.slack.edge.client if bot.slack else None,
                usergroup=bot.settings.slack_staff_usergroup,
                conferences=bot.conferences,
            ),
        ]
    for result in results:
        out.print(f"{_CHECK_MARKS[result.status]} {result.name}: ", end="")
        out.print(result.detail, markup=False)  # one line per part, greppable
    # Off is a choice (the start banner says so too); only a configured part can fail.
    if any(result.failed for result in results):
        raise typer.Exit(NEEDS_PERSON)


def _check_conferences_file(bot: Bot) -> list[CheckResult]:
    """A line when there is no conferences file: otherwise no conference line would show."""
    if (missing := _no_conferences_file(bot)) is None:
        return []
    return [
        CheckResult("conferences", CheckStatus.OFF, missing.removeprefix("no conferences file: "))
    ]


_CHECK_MARKS = {
    CheckStatus.OK: "[green]ok[/green]  ",
    CheckStatus.OFF: "[yellow]off[/yellow] ",
    CheckStatus.FAIL: "[red]FAIL[/red]",
    CheckStatus.NOTE: "[cyan]note[/cyan]",
}


@app.command()
def reconcile() -> None:
    """Run one reconciler pass now: finish half-done vouchers, send due emails."""
    with _bot() as bot, _progress() as progress:
        # One pass works in batches it does not announce: a spinner, not a made-up count.
        progress.add_task("reconciling", total=None)
        report = reconcile_once(bot.services)
    if report.idle:
        out.print("Nothing to do.")
    needs_person = _print_outcomes(report.provisioned)
    failed_emails = [e for e in report.emails if e.result is EmailResult.FAILED]
    if report.emails:
        totals = Counter(email.result.value for email in report.emails)
        out.print(f"Due emails: {_counts(totals)}.", markup=False)
    for email in failed_emails:
        out.print(f"  needs a person: email {email.result.value}: {email.detail}", markup=False)
    unrevoked = [r for r in report.revoked if r.result not in REVOKE_DONE]
    if report.revoked:
        totals = Counter(revoke.result.value for revoke in report.revoked)
        out.print(f"Unfinished revokes: {_counts(totals)}.", markup=False)
    for revoke in unrevoked:
        out.print(f"  needs a person: {revoke.message}", markup=False)
    if needs_person or failed_emails or unrevoked:
        raise typer.Exit(NEEDS_PERSON)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{count} {name}" for name, count in counter.most_common())


def _previous_statuses(bot: Bot, file: Path) -> dict[tuple[str, str], str]:
    """Each grant's previous status as the file gives it, by (conference, grant id)."""
    _rows, payloads, _errors = read_grants(bot.services, file)
    return {
        (payload.conference, payload.id): payload.previous_status
        for _line, payload in payloads
        if payload.previous_status is not None
    }


def _file_hold_reason(grant: GrantRef, previous: dict[tuple[str, str], str]) -> str:
    """Why a grant would be held, from the previous status the file gives (as intake says)."""
    came_from = previous.get((grant.conference, grant.external_id), "an unknown status")
    return f"confirmed from {came_from}, not from waiting_for_confirmation"


def _provision_command(grant: GrantRef) -> str:
    return f"`.venv/bin/voucher-bot provision {grant.external_id} -c {grant.conference}`"


def _held_todo(grant: GrantRef, reason: str) -> str:
    """What to do about a held grant: why it is held (the previous status), the full command."""
    why = reason or "held for staff"
    return f"{why}; if that is right, run {_provision_command(grant)}"


def _held_line(grant: GrantRef, reason: str) -> str:
    """One wording for a held grant everywhere: who, the real previous status, the command."""
    who = f"{grant.full_name} (grant {grant.external_id}, {grant.conference})"
    return f"{who} was {_held_todo(grant, reason)}"


def _print_still_held(grants: Sequence[GrantRef]) -> None:
    """Grants of the file this import left held, as they were: one line, with the command."""
    if not grants:
        return
    if len(grants) == 1:
        command = _provision_command(grants[0])
    else:
        command = "`.venv/bin/voucher-bot provision ID -c CONF` for each"
    verb = "is" if len(grants) == 1 else "are"
    out.print(
        f"still held for staff: {_some(grants)} {verb} still held; if that is right, run "
        f"{command}.",
        markup=False,
    )


def _print_import(report: ImportReport, *, noun: str) -> None:
    counts = ", ".join(
        f"{count} {action.value}" for action, count in sorted(report.actions.items())
    )
    bad = f"; {len(report.errors)} bad" if report.errors else ""
    out.print(
        f"Read {report.rows} {noun}: {counts or 'none stored'}{bad}{_nothing_changed(report)}.",
        markup=False,
    )
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    _print_errors(report.errors)


def _print_errors(errors: Sequence[RowError], *, dry_run: bool = False) -> None:
    """Bad rows, one line per reason: rows that fail the same way share a line."""
    if not errors:
        return
    skipped = "would be skipped" if dry_run else "skipped"
    err.print(f"{len(errors)} bad {_plural(len(errors), 'row')} {skipped}:", markup=False)
    lines: dict[str, list[int]] = {}
    for error in errors:
        lines.setdefault(error.message, []).append(error.line)
    for message, numbers in lines.items():
        err.print(f"  {_lines(numbers)}: {message}", markup=False)


def _lines(numbers: Sequence[int]) -> str:
    """`line 7`, `lines 2, 3, 5`, or `lines 2, 3, 5, 8, 9 and 588 more (593 rows)`."""
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    shown = ", ".join(str(n) for n in numbers[:SHOWN])
    more = len(numbers) - SHOWN
    return f"lines {shown}" + (f" and {more} more ({len(numbers)} rows)" if more > 0 else "")


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"


def _some(grants: Sequence[GrantRef | None]) -> str:
    """`grant 5301`, or `12 grants (5301, 5302, 5303, 5304, 5305, ...)`."""
    ids = [f"{g.conference}/{g.external_id}" if g else "?" for g in grants]
    if len(ids) == 1:
        return ids[0]
    more = ", ..." if len(ids) > SHOWN else ""
    return f"{len(ids)} grants ({', '.join(ids[:SHOWN])}{more})"


def _nothing_changed(report: ImportReport) -> str:
    unchanged = report.actions and set(report.actions) <= {IntakeAction.UNCHANGED}
    return "; nothing changed" if unchanged and not report.provisioned else ""


def _needs_person(outcome: ProvisionOutcome) -> bool:
    return outcome.result not in SUCCESS or outcome.needs_attention


def _print_outcomes(
    outcomes: list[ProvisionOutcome], *, held: Sequence[tuple[GrantRef, str]] = ()
) -> bool:
    """One summary: totals by outcome, then only the grants a person must look at.

    `held` are grants held for staff (with what to do), listed with the others a person must
    look at. Returns whether any grant needs a person.
    """
    if outcomes:
        totals = Table("outcome", "grants", title="Provisioning", title_justify="left")
        for result, count in Counter(result_label(o.result) for o in outcomes).most_common():
            totals.add_row(result, str(count))
        emails = Counter(o.email.result.value for o in outcomes if o.email is not None)
        for result, count in emails.most_common():
            totals.add_row(f"email {result}", str(count))
        out.print(totals)
    problems = [o for o in outcomes if _needs_person(o)]
    if not problems and not held:
        return False
    table = Table(
        "grant", "name", "outcome", "what to do", title="Needs a person", title_justify="left"
    )
    for held_grant, todo in held:
        table.add_row(_some([held_grant]), held_grant.full_name, Branch.HELD.value, todo)
    # Grants that need a person for the same reason (Pretix off...) share a row.
    rows: dict[tuple[str, str], list[ProvisionOutcome]] = {}
    for outcome in problems:
        email_failed = outcome.email is not None and outcome.email.result is EmailResult.FAILED
        what = result_label(outcome.result) + (", email failed" if email_failed else "")
        todo = outcome.email.detail if email_failed and outcome.email else outcome.message
        rows.setdefault((what, todo), []).append(outcome)
    for (what, todo), group in rows.items():
        grant = group[0].grant
        name = (grant.full_name if grant else "?") if len(group) == 1 else ""
        table.add_row(_some([o.grant for o in group]), name, what, todo)
    out.print(table)
    return True


def _plan_line(plan: Planned) -> str:
    grant = plan.grant
    who = f"{grant.full_name} (grant {grant.external_id}, {grant.conference})" if grant else "?"
    return f"{who}: {plan.branch.value}" + (f"; {plan.detail}" if plan.detail else "")


def _print_plan(plan: ImportPlan, held_grants: Sequence[str]) -> int:
    """The dry run of a grants import, in words; returns the exit status it stands for."""
    out.print("Dry run: nothing stored, nothing sent to Pretix, no email.")
    counts = ", ".join(f"{count} {action.value}" for action, count in sorted(plan.actions.items()))
    bad = f"; {len(plan.errors)} bad" if plan.errors else ""
    out.print(f"Read {plan.rows} grants: would be {counts or 'none stored'}{bad}.", markup=False)
    for note in plan.notes:
        out.print(f"note: {note}", markup=False)
    if plan.waiting_for_staff:
        out.print(
            f"{plan.waiting_for_staff} newly confirmed grants would wait for staff "
            "(--no-provision)."
        )
    needs_person = [p for p in plan.provisioning if p.needs_person]
    held = [p for p in needs_person if p.grant is not None and p.grant in plan.held]
    if plan.provisioning:
        table = Table("would do", "grants", title="Provisioning", title_justify="left")
        for branch, count in plan.branches.most_common():
            table.add_row(branch.value, str(count))
        out.print(table)
    elif not plan.waiting_for_staff:
        out.print("No grant would be provisioned.")
    for grant in held_grants:
        out.print(f"would be held for staff: {grant}", markup=False)
    reasons: dict[str, list[Planned]] = {}
    for item in needs_person:
        if item not in held:
            reason = item.branch.value + (f"; {item.detail}" if item.detail else "")
            reasons.setdefault(reason, []).append(item)
    for reason, items in reasons.items():
        if len(items) == 1:
            out.print(f"needs a person: {_plan_line(items[0])}", markup=False)
        else:
            grants = _some([item.grant for item in items])
            out.print(f"needs a person: {grants}: {reason}", markup=False)
    _print_errors(plan.errors, dry_run=True)
    if plan.errors:
        return BAD_INPUT
    return NEEDS_PERSON if needs_person or plan.held or plan.notes else OK


def _print_outcome(outcome: ProvisionOutcome) -> None:
    """The outcome's sentence, marked when a person must act; then the steps it took."""
    needs = "needs a person: " if _needs_person(outcome) else ""
    out.print(f"{needs}{outcome.message}", markup=False)
    for step in outcome.steps:
        if step.detail == outcome.message:
            continue  # a decision: its words are the line above, said once
        mark = "ok " if step.ok else "!! "
        out.print(f"  {mark}{step.name}: {step.detail}", markup=False)


def _print_status(report: GrantStatusReport) -> None:
    grant = report.grant
    out.print(
        f"{grant.full_name} <{grant.email}>: grant {grant.external_id} at {grant.conference_name}",
        markup=False,
    )
    out.print(f"  status: {report.status.value} (as of {report.updated_at:%Y-%m-%d %H:%M} UTC)")
    if report.reply_deadline:
        out.print(f"  reply deadline: {report.reply_deadline:%Y-%m-%d %H:%M} UTC")
    if report.hold_reason:
        out.print(f"  HELD: {report.hold_reason}", markup=False)
    if report.dismissed:
        out.print(f"  DISMISSED (no voucher): {report.dismissed}", markup=False)
    voucher = report.voucher
    if voucher is None:
        out.print("  voucher: none")
    else:
        upgraded = f", upgraded from {voucher.original_type.value}" if voucher.original_type else ""
        out.print(
            f"  voucher: {voucher.code} ({voucher.voucher_type.value}{upgraded}), "
            f"{voucher.state.value}, pretix #{voucher.pretix_voucher_id or '-'}",
            markup=False,
        )
        if voucher.last_error:
            out.print(f"  last error: {voucher.last_error}", markup=False)
        sent = f" at {voucher.email_sent_at:%Y-%m-%d %H:%M} UTC" if voucher.email_sent_at else ""
        out.print(f"  email: {voucher.email_state.value}{sent} ({voucher.emails_sent} sent)")
        if voucher.email_last_error:
            out.print(f"  email error: {voucher.email_last_error}", markup=False)
    for line in report.history:
        out.print(
            f"  {line.occurred_at:%Y-%m-%d %H:%M} {line.actor} {line.action}: {line.outcome}",
            markup=False,
        )


def _print_summaries(bot: Bot) -> None:
    summaries = conference_summaries(bot.db, bot.conferences)
    if not summaries:
        missing = _no_conferences_file(bot)
        where = bot.settings.conferences_file
        hint = (
            f" Create {where} (copy conferences.example.toml), then run this again."
            if missing is not None
            else f" Add one to {where} (see conferences.example.toml)."
        )
        out.print(f"No conferences yet.{hint}", markup=False)
    for summary in summaries:
        out.print(f"{summary.name} ({summary.code})", markup=False)
        grants = ", ".join(f"{n} {s}" for s, n in sorted(summary.grants_by_status.items()))
        out.print(f"  grants: {grants or 'none'}", markup=False)
        vouchers = ", ".join(f"{n} {s}" for s, n in sorted(summary.vouchers_by_state.items()))
        kinds = ", ".join(f"{n} {s}" for s, n in sorted(summary.vouchers_by_type.items()))
        by_kind = f" ({kinds})" if kinds else ""
        out.print(f"  vouchers: {vouchers or 'none'}{by_kind}", markup=False)
        emails = ", ".join(f"{n} {s}" for s, n in sorted(summary.emails_by_state.items()))
        out.print(f"  emails: {emails or 'none'}", markup=False)
        if not summary.issues_vouchers:
            out.print("  not issuing vouchers (issue_vouchers = false): nothing is missing")
            continue
        out.print(
            f"  held for staff: {summary.held}; confirmed without a voucher: "
            f"{summary.confirmed_without_voucher}"
        )


def main() -> None:
    """Console-script entry point."""
    app()


# --- email: the voucher email, without sending it -----------------------------------------
# (A block of its own: the commands above belong to other work.)

email_app = typer.Typer(help="The voucher email.", no_args_is_help=True)
app.add_typer(email_app, name="email")


@email_app.command("preview")
def email_preview(
    target: Target,
    conference: ConferenceOption = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html-out", help="Write the HTML body here (default: a temporary file)."),
    ] = None,
) -> None:
    """Show the voucher email a grantee would get (the text here, the HTML in a file)."""
    import tempfile

    from bot.services.email_preview import PreviewRefused, preview_voucher_email

    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        preview = preview_voucher_email(bot.services, grant_id=grant.id)
        reply_to = bot.mailer.reply_to if bot.mailer else bot.settings.email_reply_to
        not_sent = _why_no_email_now(bot, grant)
    if isinstance(preview, PreviewRefused):
        err.print(preview.reason, markup=False)
        raise typer.Exit(1)
    if html_out is None:
        with tempfile.NamedTemporaryFile(
            "w", prefix="voucher-email-", suffix=".html", delete=False, encoding="utf-8"
        ) as handle:
            html_out = Path(handle.name)
    try:
        html_out.write_text(preview.email.html, encoding="utf-8")
    except OSError as exc:
        err.print(f"cannot write {html_out}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(1) from None
    person = preview.grant
    out.print(
        f"To: {person.full_name} <{person.email or 'no address'}>", markup=False, soft_wrap=True
    )
    if reply_to:
        out.print(f"Reply-To: {reply_to}", markup=False, soft_wrap=True)
    out.print(f"Subject: {preview.email.subject}", markup=False, soft_wrap=True)
    for name, origin in preview.origins.items():
        out.print(
            f"Template {name}: {origin or 'bundled (bot/templates)'}", markup=False, soft_wrap=True
        )
    if not_sent is not None:
        out.print(f"No such email would be sent now: {not_sent}.", markup=False)
    if not preview.code_issued:
        out.print("No voucher yet: the code shown is a placeholder.", markup=False)
    out.print("")
    out.print(preview.email.text, markup=False, soft_wrap=True, end="")
    out.print("")
    out.print(f"HTML written to {html_out}", markup=False, soft_wrap=True)


def _why_no_email_now(bot: Bot, grant: GrantRef) -> str | None:
    """Why this grantee would get no voucher email now (not confirmed, not issuing), or None."""
    config = bot.conferences.get(grant.conference)
    if config is not None and not config.issue_vouchers:
        return f"{config.name} does not issue vouchers (issue_vouchers = false)"
    report = grant_status(bot.db, grant_id=grant.id, history=0)
    if report is not None and report.status is not GrantStatus.CONFIRMED:
        return f"the grant is {report.status.value}, not confirmed"
    return None


# --- bulk issuance (the same request, approval and run as Slack's /voucher bulk) ------------

bulk_app = typer.Typer(
    help="Issue vouchers to every confirmed grantee of a conference who is due one.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(bulk_app, name="bulk")

BulkConference = Annotated[
    str | None,
    typer.Argument(
        help="Conference code; may be left out when only one conference issues vouchers.",
        metavar="[CONF]",
        show_default=False,
    ),
]
# Preview branches after which a person should look (exit status 1).
_BULK_NEEDS_PERSON = frozenset(
    {bulk.Branch.HELD, bulk.Branch.NO_EMAIL, bulk.Branch.EMAIL_CHANGED, bulk.Branch.OTHER}
)


@bulk_app.command("preview")
def bulk_preview(conference: BulkConference = None) -> None:
    """Counts by branch and the list of grantees a bulk run would take; changes nothing."""
    with _bot() as bot:
        preview = _bulk_preview(bot, conference)
    raise typer.Exit(_print_bulk_preview(preview))


@bulk_app.command("run")
def bulk_run(
    conference: BulkConference = None, yes: YesOption = False, dry_run: DryRunOption = False
) -> None:
    """Freeze the list, approve it as you, and run it with a progress bar; then the summary.

    Asks before it starts unless --yes; without a terminal (CI, scripts) it goes ahead.
    The audit log records the request and its approval by the person running this command.
    """
    with _bot() as bot:
        preview = _bulk_preview(bot, conference)
        if dry_run or preview.nothing_to_do:
            if not dry_run:
                out.print("Nothing to do: no grantee is due a voucher or an email.")
            raise typer.Exit(_print_bulk_preview(preview, dry_run=dry_run))
        if not yes and _is_terminal():
            _print_bulk_preview(preview)
            question = (
                f"Issue to {preview.to_do} grantee{'s' if preview.to_do != 1 else ''} of "
                f"{preview.conference_name} now ({_bulk_counts(preview, actionable=True)})?"
            )
            if not typer.confirm(question, default=False, err=True):
                err.print("Nothing done.")
                raise typer.Exit(OK)
        ttl = dt.timedelta(minutes=bot.settings.bulk_request_ttl_minutes)
        actor = _actor()
        frozen = bulk.request_bulk(
            bot.services, conference=preview.conference, actor=actor, ttl=ttl
        )
        if frozen.request is None:
            out.print("Nothing to do any more: no grantee is due a voucher or an email.")
            raise typer.Exit(OK)
        request_id = frozen.request.request_id
        decision = bulk.decide_bulk(
            bot.services, request_id=request_id, actor=actor, approve=True, allow_self_approval=True
        )
        if decision.result is not bulk.DecisionResult.APPROVED:
            err.print(decision.message, markup=False)
            raise typer.Exit(NEEDS_PERSON)
        with _progress() as progress:
            reporter = _BulkBar(progress, total=frozen.to_do)
            summary = bulk.run_bulk(
                bot.services, request_id=request_id, actor=actor, reporter=reporter
            )
    raise typer.Exit(_print_bulk_summary(summary))


def _bulk_preview(bot: Bot, conference: str | None) -> bulk.BulkPreview:
    try:
        return bulk.preview_bulk(bot.services, conference=conference)
    except bulk.BulkConferenceError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(BAD_INPUT) from None


def _bulk_counts(preview: bulk.BulkPreview, *, actionable: bool | None = None) -> str:
    return ", ".join(
        f"{count} {bulk.BRANCH_LABEL[branch]}"
        for branch, count in sorted(
            preview.counts.items(), key=lambda kv: list(bulk.Branch).index(kv[0])
        )
        if actionable is None or (branch in bulk.ACTIONABLE) == actionable
    )


def _print_bulk_preview(preview: bulk.BulkPreview, *, dry_run: bool = False) -> int:
    """Print the counts and the list; the exit status (1 when a person should look)."""
    head = "Dry run, nothing done. " if dry_run else ""
    out.print(
        f"{head}Bulk preview for {preview.conference_name} ({preview.conference}): "
        f"{len(preview.lines)} confirmed grant{'s' if len(preview.lines) != 1 else ''}, "
        f"{preview.to_do} to do.",
        markup=False,
    )
    if preview.lines:
        out.print(f"  {_bulk_counts(preview)}", markup=False)
        table = Table("grant", "name", "branch", "detail", box=None, pad_edge=False)
        for line in preview.lines:
            table.add_row(
                line.grant.external_id,
                line.grant.full_name,
                bulk.BRANCH_LABEL[line.branch],
                line.detail,
            )
        out.print(table)
    return NEEDS_PERSON if preview.counts.keys() & _BULK_NEEDS_PERSON else OK


class _BulkBar:
    """The command line's bulk reporter: a progress bar with the run's counts."""

    def __init__(self, bar: Progress, *, total: int) -> None:
        self.bar = bar
        self.task = bar.add_task("bulk run", total=total)

    def progress(self, progress: bulk.BulkProgress) -> None:
        """Move the bar after each chunk."""
        self.bar.update(
            self.task,
            total=progress.total,
            completed=progress.processed,
            description=_bulk_progress_line(progress),
        )

    def finished(self, summary: bulk.BulkSummary) -> None:
        """Nothing: the command prints the summary once the bar is gone."""


def _bulk_progress_line(p: bulk.BulkProgress) -> str:
    return (
        f"created {p.created} · upgraded {p.upgraded} · emailed {p.emailed} · "
        f"skipped {p.skipped} · failed {p.failed}"
    )


def _print_bulk_summary(summary: bulk.BulkSummary) -> int:
    """Print what the run did, the failed and the skipped with why; the exit status."""
    if not summary.ran:
        err.print(summary.message, markup=False)
        return NEEDS_PERSON
    request = summary.request
    number = f" #{request.request_id}" if request else ""
    out.print(f"Bulk run{number} done in {summary.seconds:.1f} s.", markup=False)
    if summary.progress is not None:
        out.print(f"  {_bulk_progress_line(summary.progress)}", markup=False)
    for title, lines in (
        ("Failed", summary.failed),
        ("Skipped (changed since the preview)", summary.skipped),
    ):
        if not lines:
            continue
        out.print(f"{title}: {len(lines)}", markup=False)
        for line in lines:
            who = f"{line.grant.full_name} (grant {line.grant.external_id})"
            out.print(f"  {who}: {line.detail}", markup=False)
    if summary.failed:
        out.print(
            "Run `.venv/bin/voucher-bot bulk run` again to retry the failed ones once their "
            "cause is fixed.",
            markup=False,
        )
    return NEEDS_PERSON if summary.failed or summary.skipped else OK


# --- drift: Pretix grant vouchers against the bot's records -------------------------------
# (A block of its own: the commands above belong to other work.)

_DRIFT_WORDS = {
    DriftKind.UNKNOWN: "unknown to the bot",
    DriftKind.GONE: "gone from Pretix",
    DriftKind.EDITED: "edited in Pretix",
    DriftKind.REVOKED_PRESENT: "revoked, still in Pretix",
}


@app.command()
def drift(
    conference: Annotated[
        str | None,
        typer.Argument(
            help="Conference code; every conference that issues vouchers when left out.",
            metavar="[CONF]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Pretix grant vouchers against the bot's records; exit 1 when anything drifted.

    Grant-tagged vouchers the bot does not know, records whose voucher is gone, vouchers whose
    terms (price, value, quota or item, max usages, quota bypass) were changed in Pretix,
    revoked ones still there, and redemption counts.
    """
    with _bot() as bot:
        if bot.pretix is None:
            err.print(
                "Pretix is not configured (set PRETIX_URL and PRETIX_TOKEN): there is nothing "
                "to compare the bot's records with.",
                markup=False,
            )
            raise typer.Exit(BAD_INPUT)
        if conference is not None:
            _known_conference(bot, conference)
            if conference not in bot.conferences:
                err.print(f"{conference} is no longer configured: no Pretix event to read.")
                raise typer.Exit(BAD_INPUT)
            codes = [conference]
        else:
            codes = [code for code, config in bot.conferences.items() if config.issue_vouchers]
            if not codes:
                err.print("No configured conference issues vouchers: name one (drift CONF).")
                raise typer.Exit(BAD_INPUT)
        reports, unreadable = [], False
        for code in codes:
            try:
                reports.append(drift_report(bot.services, conference=code))
            except PretixError as exc:
                err.print(f"{code}: Pretix could not be read: {exc}", markup=False)
                unreadable = True
    for report in reports:
        _print_drift(report)
    if unreadable or any(report.drifted for report in reports):
        raise typer.Exit(NEEDS_PERSON)


def _print_drift(report: DriftReport) -> None:
    totals = (
        f"{report.pretix_grant_vouchers} grant vouchers in Pretix, {report.records} bot records, "
        f"{report.redeemed} redeemed, {report.not_redeemed} not redeemed yet"
    )
    if not report.drifted:
        out.print(f"{report.conference}: no drift ({totals}).", markup=False)
        return
    out.print(f"{report.summary_line()} ({totals})", markup=False)
    table = Table("what", "code", "pretix id", "grant", "detail", box=None, pad_edge=False)
    for item in report.items:
        detail = "; ".join(
            f"{change.term} {_drift_value(change.expected)} -> {_drift_value(change.actual)}"
            for change in item.changes
        )
        if item.redeemed:
            detail = f"{detail}; redeemed {item.redeemed}".lstrip("; ")
        cells = (
            _DRIFT_WORDS[item.kind],
            item.code,
            str(item.pretix_voucher_id or "-"),
            item.grant_external_id or "-",
            detail or "-",
        )
        table.add_row(*(Text(cell) for cell in cells))  # data, never rich markup
    out.print(table)


def _drift_value(value: object) -> str:
    if value is None or value == "":
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


@app.command()
def digest(
    conference: Annotated[
        str | None,
        typer.Argument(help="The conference code; may be left out when one issues vouchers."),
    ] = None,
    show: Annotated[
        bool, typer.Option("--print", help="Print the digest in the terminal (the default).")
    ] = False,
    post: Annotated[
        bool, typer.Option("--post", help="Post it in the conference channel now.")
    ] = False,
) -> None:
    """The conference's digest: what waits for confirmation, what needs a person, redemption."""
    with _bot() as bot:
        pick = pick_conference(bot.conferences, conference)
        if pick.code is None:
            hint = f" Name one, e.g. digest {pick.suggested}." if pick.suggested else ""
            err.print(f"{pick.problem}.{hint}", markup=False)
            raise typer.Exit(BAD_INPUT)
        if post and bot.slack is None:
            err.print(
                "Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET to post.", markup=False
            )
            raise typer.Exit(BAD_INPUT)
        now = bot.services.clock()
        if not post or show:
            out.print(digest_text(build_digest(bot.services, conference=pick.code, now=now)))
        if post:
            assert bot.slack is not None
            _post_digest_now(bot.slack, bot.services, pick.code, now)


def _post_digest_now(
    slack: SlackRuntime, services: ServiceContext, code: str, now: dt.datetime
) -> None:
    """Enqueue the digest and deliver the outbox now (a running bot's poster would, too)."""
    posted = post_digest(slack.outbox, services, code, now, False)
    if posted.ref is None:
        err.print(f"Not posted: {posted.skipped}.", markup=False)
        raise typer.Exit(NEEDS_PERSON)
    for _ in range(50):  # the message, then its CSV (which waits for the message's ts)
        if slack.poster.run_once() == 0:
            break
    channel = posted.digest.channel
    if slack.outbox.ts(posted.ref) is None:
        out.print(
            f"Queued for {channel}: Slack did not take it yet; the running bot will post it.",
            markup=False,
        )
        return
    extra = " with the CSV of every line in its thread" if posted.csv_attached else ""
    out.print(
        f"Posted the digest of {posted.digest.conference_name} in {channel}{extra}.", markup=False
    )
