"""Command line: the same services as Slack, from a terminal (`python -m bot --help`)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.exc import OperationalError

from bot import migrations
from bot.bootstrap import Bot, build_bot, startup_summary
from bot.logs import configure_logging
from bot.services.actors import Actor
from bot.services.checks import (
    CheckStatus,
    check_conferences,
    check_database,
    check_pretix,
    check_slack,
    check_smtp,
)
from bot.services.imports import ImportFileError, ImportReport, import_grants, import_vouchers
from bot.services.lookup import parse_target, resolve_grant
from bot.services.outcomes import (
    HAS_VOUCHER,
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
from bot.storage import Source, describe_connection_error, utcnow

app = typer.Typer(
    help="Voucher bot: issue Pretix vouchers to financial-aid grantees.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
grants_app = typer.Typer(help="Grants from the conference backend.", no_args_is_help=True)
vouchers_app = typer.Typer(help="Vouchers made elsewhere (speakers).", no_args_is_help=True)
app.add_typer(grants_app, name="grants")
app.add_typer(vouchers_app, name="vouchers")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Target = Annotated[str, typer.Argument(help="A grant id, an email address or a Slack user id.")]
ConferenceOption = Annotated[
    str | None, typer.Option("--conference", "-c", help="Conference code, when several match.")
]

# Outcomes after which a script may carry on; anything else exits with status 1.
SUCCESS = HAS_VOUCHER | {ProvisionResult.IN_PROGRESS}
REVOKE_DONE = {RevokeResult.REVOKED, RevokeResult.ALREADY_GONE, RevokeResult.ALREADY_REVOKED}


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        err.print(exc.render(), markup=False)
        raise typer.Exit(2) from None
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


@contextmanager
def _bot(*, migrate: bool | None = None, sync: bool = True) -> Iterator[Bot]:
    settings = _settings()
    try:
        bot = build_bot(settings, migrate=migrate, sync=sync)
    except ConfigError as exc:
        err.print(exc.render(), markup=False)
        raise typer.Exit(2) from None
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
    err.print(f"DATABASE_URL: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(2) from None


def _actor() -> Actor:
    return Actor(Source.CLI, getpass.getuser())


def _resolve(bot: Bot, text: str, conference: str | None) -> GrantRef:
    target = parse_target(text)
    if target is None:
        err.print(f"Not a grant id, email address or Slack user: {text!r}")
        raise typer.Exit(2)
    resolution = resolve_grant(bot.db, target, conference=conference)
    if resolution.grant is None:
        err.print(resolution.problem or "No grant found.", markup=False)
        raise typer.Exit(1)
    return resolution.grant


@app.command()
def serve() -> None:
    """Run the bot: HTTP endpoints, background worker and scheduler (same as `python app.py`)."""
    from bot.server import serve as run_server

    with _bot() as bot:
        err.print(startup_summary(bot), markup=False, soft_wrap=True)
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
    file: Annotated[Path, typer.Argument(help="A CSV or JSON file of grants.")],
    provision: Annotated[
        bool, typer.Option(help="Provision vouchers for newly confirmed grants.")
    ] = True,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Grants provisioned at once.")] = 4,
) -> None:
    """Import grants (CSV or JSON); bad rows are reported, good rows kept."""
    with _bot() as bot, Progress(console=err, transient=True) as progress:
        task = progress.add_task("provisioning", total=None)
        try:
            report = import_grants(
                bot.services,
                path=file,
                actor=_actor(),
                provision=provision,
                workers=workers,
                on_progress=lambda _outcome: progress.advance(task),
            )
        except ImportFileError as exc:
            err.print(str(exc), markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
    _print_import(report, noun="grants")
    if report.provisioned:
        _print_outcomes(report.provisioned)
    if report.errors:
        raise typer.Exit(1)


@vouchers_app.command("import")
def vouchers_import(
    file: Annotated[Path, typer.Argument(help="A CSV or JSON file of vouchers.")],
) -> None:
    """Import vouchers made elsewhere (speaker, co-speaker); importing twice changes nothing."""
    with _bot() as bot:
        try:
            report = import_vouchers(bot.services, path=file, actor=_actor())
        except ImportFileError as exc:
            err.print(str(exc), markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
    _print_import(report, noun="vouchers")
    if report.errors:
        raise typer.Exit(1)


@app.command()
def provision(target: Target, conference: ConferenceOption = None) -> None:
    """Give a confirmed grantee their voucher and email (safe to repeat; releases a hold)."""
    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        outcome = provision_grant_voucher(
            bot.services, grant_id=grant.id, actor=_actor(), release_hold=True
        )
    _print_outcome(outcome)
    if outcome.result not in SUCCESS or outcome.needs_attention:
        raise typer.Exit(1)


@app.command()
def resend(target: Target, conference: ConferenceOption = None) -> None:
    """Send the voucher email again (same code, new Message-ID)."""
    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        outcome = resend_voucher_email(bot.services, grant_id=grant.id, actor=_actor())
    out.print(outcome.message, markup=False)
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def revoke(target: Target, conference: ConferenceOption = None) -> None:
    """Delete the grant voucher of a grantee who refused after confirming (unless used)."""
    with _bot() as bot:
        grant = _resolve(bot, target, conference)
        outcome = revoke_grant_voucher(bot.services, grant_id=grant.id, actor=_actor())
    out.print(outcome.message, markup=False)
    if outcome.result not in REVOKE_DONE:
        raise typer.Exit(1)


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
            check_database(bot.db),
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
        out.print(result.detail, markup=False, soft_wrap=True)  # one line per part, greppable
    # Off is a choice (the start banner says so too); only a configured part can fail.
    if any(result.failed for result in results):
        raise typer.Exit(1)


_CHECK_MARKS = {
    CheckStatus.OK: "[green]ok[/green]  ",
    CheckStatus.OFF: "[yellow]off[/yellow] ",
    CheckStatus.FAIL: "[red]FAIL[/red]",
}


@app.command()
def reconcile() -> None:
    """Run one reconciler pass now: finish half-done vouchers, send due emails."""
    with _bot() as bot:
        report = reconcile_once(bot.services)
    if report.idle:
        out.print("Nothing to do.")
    _print_outcomes(report.provisioned)
    for email in report.emails:
        out.print(f"email: {email.result.value}: {email.detail}", markup=False)


def _print_import(report: ImportReport, *, noun: str) -> None:
    counts = ", ".join(
        f"{count} {action.value}" for action, count in sorted(report.actions.items())
    )
    out.print(
        f"Read {report.rows} {noun}: {counts or 'none stored'}{_nothing_changed(report)}.",
        markup=False,
        soft_wrap=True,
    )
    for grant in report.held:
        out.print(
            f"held for staff: {grant.full_name} (grant {grant.external_id}, {grant.conference}) "
            "was confirmed without waiting_for_confirmation; `provision` it if right",
            markup=False,
        )
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    if report.errors:
        err.print(f"{len(report.errors)} bad rows skipped:", markup=False)
        for error in report.errors:
            err.print(f"  {error}", markup=False, soft_wrap=True)


def _nothing_changed(report: ImportReport) -> str:
    unchanged = report.actions and set(report.actions) <= {IntakeAction.UNCHANGED}
    return "; nothing changed" if unchanged and not report.provisioned else ""


def _print_outcomes(outcomes: list[ProvisionOutcome]) -> None:
    if not outcomes:
        return
    table = Table("grant", "name", "result", "code", "email")
    for outcome in outcomes:
        grant = outcome.grant
        table.add_row(
            f"{grant.conference}/{grant.external_id}" if grant else "?",
            grant.full_name if grant else "?",
            outcome.result.value,
            outcome.voucher_code or "",
            outcome.email.result.value if outcome.email else "",
        )
    out.print(table)
    problems = [o for o in outcomes if o.result not in SUCCESS or o.needs_attention]
    for outcome in problems:
        out.print(f"attention: {outcome.message}", markup=False)


def _print_outcome(outcome: ProvisionOutcome) -> None:
    out.print(outcome.message, markup=False)
    for step in outcome.steps:
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
    summaries = conference_summaries(bot.db)
    if not summaries:
        out.print("No conferences yet.")
    for summary in summaries:
        out.print(f"{summary.name} ({summary.code})", markup=False)
        grants = ", ".join(f"{n} {s}" for s, n in sorted(summary.grants_by_status.items()))
        out.print(f"  grants: {grants or 'none'}", markup=False)
        vouchers = ", ".join(f"{n} {s}" for s, n in sorted(summary.vouchers_by_state.items()))
        kinds = ", ".join(f"{n} {s}" for s, n in sorted(summary.vouchers_by_type.items()))
        out.print(f"  vouchers: {vouchers or 'none'} ({kinds or '-'})", markup=False)
        emails = ", ".join(f"{n} {s}" for s, n in sorted(summary.emails_by_state.items()))
        out.print(f"  emails: {emails or 'none'}", markup=False)
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
    if not preview.code_issued:
        out.print("No voucher yet: the code shown is a placeholder.", markup=False)
    out.print("")
    out.print(preview.email.text, markup=False, soft_wrap=True, end="")
    out.print("")
    out.print(f"HTML written to {html_out}", markup=False, soft_wrap=True)
