"""The command line for a team without a developer: dry runs, questions, warnings, summaries.

Most run the CLI as a real process without a terminal (as CI does); the question asked on a
terminal is exercised in-process with typer's CliRunner and a stand-in for the terminal check.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bot import cli
from bot.conferences import ConferenceConfig, Conferences
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.storage import AuditEvent, Grant
from tests.conftest import TEST_ACTOR, conferences_toml, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_external_id, record_voucher, write_file
from tests.test_cli import run_cli

HEADER = ["id", "conference", "full_name", "email", "status", "previous_status", "updated_at"]


def grants_csv(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, HEADER)
    writer.writeheader()
    writer.writerows(rows)
    return write_file(tmp_path, "grants.csv", text.getvalue())


def grant(conference: ConferenceConfig, name: str, **fields: str) -> dict[str, str]:
    values = {
        "id": unique(""),
        "conference": conference.code,
        "full_name": name,
        "email": f"{unique(name.split(maxsplit=1)[0].lower())}@example.org",
        "status": "confirmed",
        "previous_status": "waiting_for_confirmation",
        "updated_at": "2026-05-02T10:00:00Z",
    }
    values.update(fields)
    return values


def stored_grants(ctx: ServiceContext, ids: list[str]) -> int:
    with ctx.db.transaction() as session:
        return session.scalar(select(func.count()).where(Grant.external_id.in_(ids))) or 0


def audit_events(ctx: ServiceContext) -> int:
    with ctx.db.transaction() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_grants_import_dry_run_says_what_would_happen_by_branch_and_does_nothing(
    tmp_path: Path,
    ctx: ServiceContext,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    new = grant(conference, "Nora New")
    co_speaker = grant(conference, "Cora Cospeaker")
    speaker = grant(conference, "Sam Speaker")
    held = grant(conference, "Hal Held", previous_status="waiting_list")
    pending = grant(conference, "Pat Pending", status="pending", previous_status="")
    no_id = grant(conference, "Ida Noid", id="")
    record_voucher(ctx, conference.code, co_speaker["email"], type="co_speaker", code="COSPK0001")
    record_voucher(ctx, conference.code, speaker["email"], type="speaker", code="SPEAK0001")
    rows = [new, co_speaker, speaker, held, pending, no_id]
    path = grants_csv(tmp_path, rows)
    events = audit_events(ctx)

    result = run_cli(bot_env, "grants", "import", "--dry-run", str(path))

    assert result.returncode == 2, result.stdout + result.stderr  # the row without an id
    assert "Traceback" not in result.stderr
    assert "Dry run: nothing stored, nothing sent to Pretix, no email." in result.stdout
    assert "Read 6 grants: would be 5 created; 1 bad." in result.stdout
    lines = result.stdout.splitlines()
    for branch, count in (
        ("new voucher", 1),
        ("co-speaker upgrade", 1),
        ("email only", 1),  # the speaker's voucher email never went out from here
    ):
        assert any(branch in line and line.rstrip(" │").endswith(str(count)) for line in lines), (
            branch,
            result.stdout,
        )
    assert "would be held for staff: Hal Held" in result.stdout
    assert "line 7: id is empty" in result.stderr
    # Nothing happened: no grant stored, no audit line, no Pretix voucher, no email.
    assert stored_grants(ctx, [row["id"] for row in rows if row["id"]]) == 0
    assert audit_events(ctx) == events
    assert pretix_server.all_vouchers() == []
    assert smtp_server.messages == []


def test_provision_dry_run_says_what_would_happen_and_does_nothing(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ident = grant_external_id(ctx.db, make_grant())
    held = grant_external_id(ctx.db, make_grant(previous_status="waiting_list"))

    result = run_cli(bot_env, "provision", "--dry-run", ident)
    held_result = run_cli(bot_env, "provision", "--dry-run", held)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dry run, nothing done:" in result.stdout and ": new voucher" in result.stdout
    # By hand a hold is released: the dry run says so, and what would follow.
    assert held_result.returncode == 0, held_result.stdout + held_result.stderr
    # Worded as the import words a held grant: the previous status and the full command.
    wording = (
        f"held for staff: Jane Doe (grant {held}, {conference.code}) was confirmed from "
        "waiting_list, not from waiting_for_confirmation; if that is right, run "
        f"`.venv/bin/voucher-bot provision {held} -c {conference.code}`"
    )
    assert wording in held_result.stdout, held_result.stdout
    assert "new voucher; releases the hold\n" in held_result.stdout, held_result.stdout
    assert pretix_server.all_vouchers() == []
    assert smtp_server.messages == []
    again = run_cli(bot_env, "provision", ident)
    assert again.returncode == 0 and "created in Pretix" in again.stdout


def test_an_import_without_a_terminal_goes_ahead_and_ends_with_one_summary(
    tmp_path: Path,
    ctx: ServiceContext,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
    pretix_server: FakePretix,
) -> None:
    rows = [grant(conference, f"Grantee {n}") for n in range(6)]
    rows.append(grant(conference, "Hal Held", previous_status="waiting_list"))
    path = grants_csv(tmp_path, rows)

    result = run_cli(bot_env, "grants", "import", str(path))

    assert result.returncode == 1, result.stdout + result.stderr  # the held grant
    assert len(pretix_server.all_vouchers()) == 6  # no question asked without a terminal
    assert "Provisioning" in result.stdout
    assert [line for line in result.stdout.splitlines() if "Grantee" in line] == []
    needs = result.stdout[result.stdout.index("Needs a person") :]
    assert "Hal Held" in needs and "held" in needs
    # Log lines stay at warning level on the terminal unless -v.
    assert '"level": "info"' not in result.stderr


def test_verbose_shows_the_log_lines(
    ctx: ServiceContext, make_grant: Callable[..., int], bot_env: dict[str, str]
) -> None:
    ident = grant_external_id(ctx.db, make_grant())
    quiet = run_cli(bot_env, "provision", ident)
    loud = run_cli(bot_env, "-v", "provision", ident)
    assert quiet.returncode == 0 and loud.returncode == 0
    assert '"level": "info"' not in quiet.stderr
    assert '"level": "info"' in loud.stderr


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("answer", "created"), [("n\n", 0), ("y\n", 6)])
def test_on_a_terminal_an_import_of_more_than_5_vouchers_asks_first(
    tmp_path: Path,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    created: int,
) -> None:
    set_env(monkeypatch, bot_env)
    monkeypatch.setattr(cli, "_is_terminal", lambda: True)
    path = grants_csv(tmp_path, [grant(conference, f"Grantee {n}") for n in range(6)])

    result = CliRunner().invoke(cli.app, ["grants", "import", str(path)], input=answer)

    assert "would issue 6 vouchers in Pretix (6 new vouchers)" in result.output
    assert len(pretix_server.all_vouchers()) == created
    # Declining does nothing, as asked: not a failure.
    assert result.exit_code == 0, result.output
    assert ("Nothing imported." in result.output) == (created == 0)


def test_on_a_terminal_yes_and_small_imports_do_not_ask(
    tmp_path: Path,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(monkeypatch, bot_env)
    monkeypatch.setattr(cli, "_is_terminal", lambda: True)
    many = grants_csv(tmp_path, [grant(conference, f"Grantee {n}") for n in range(6)])

    result = CliRunner().invoke(cli.app, ["grants", "import", "--yes", str(many)])

    assert result.exit_code == 0, result.output
    assert "Go on?" not in result.output
    assert len(pretix_server.all_vouchers()) == 6


def test_grants_import_warns_when_no_speaker_vouchers_are_known(
    tmp_path: Path,
    ctx: ServiceContext,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
) -> None:
    path = grants_csv(tmp_path, [grant(conference, "Nora New")])
    warned = run_cli(bot_env, "grants", "import", "--dry-run", str(path))
    record_voucher(
        ctx, conference.code, f"{unique('spk')}@example.org", type="speaker", code="SPK00042"
    )
    quiet = run_cli(bot_env, "grants", "import", "--dry-run", str(path))

    expected = f"warning: no speaker or co-speaker vouchers are known for {conference.code}"
    assert expected in warned.stderr
    assert "vouchers import" in warned.stderr
    assert expected not in quiet.stderr


def test_an_unknown_conference_is_bad_input(
    ctx: ServiceContext, make_grant: Callable[..., int], bot_env: dict[str, str]
) -> None:
    ident = grant_external_id(ctx.db, make_grant())
    result = run_cli(bot_env, "provision", ident, "-c", "pycon2099")
    assert result.returncode == 2
    assert "Unknown conference 'pycon2099'" in result.stderr


def test_help_shows_no_type_beside_flags(tmp_path: Path) -> None:
    for args in (["--help"], ["grants", "import", "--help"], ["provision", "--help"]):
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0
        assert "<bool>" not in result.output, result.output
    assert "--dry-run" in CliRunner().invoke(cli.app, ["provision", "--help"]).output


def test_several_grants_are_one_unwrapped_line_naming_the_current_conference(
    tmp_path: Path,
    make_ctx: Callable[..., ServiceContext],
    conference: ConferenceConfig,
    bot_env: dict[str, str],
) -> None:
    last_year = conference.model_copy(
        update={"code": unique("past"), "name": "PyCon Italia 2025", "issue_vouchers": False}
    )
    configured = Conferences({conference.code: conference, last_year.code: last_year})
    ctx = make_ctx(conferences=configured)
    email = f"{unique('both')}@example.org"
    for code in (conference.code, last_year.code):
        payload = GrantPayload.model_validate(
            {**grant(conference, "Bo Both", email=email), "conference": code}
        )
        ingest_grant(ctx, payload=payload, actor=TEST_ACTOR)
    config = write_file(tmp_path, "both.toml", conferences_toml(conference, last_year))

    result = run_cli({**bot_env, "CONFERENCES_FILE": str(config)}, "status", email)

    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if "several grants" in line]
    # The command line's words: the option to add, not Slack's advice.
    assert line.endswith(f"Say which conference: add -c {conference.code}."), line


def test_grants_of_a_conference_that_does_not_issue_vouchers_need_no_person(
    tmp_path: Path,
    ctx: ServiceContext,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
    pretix_server: FakePretix,
) -> None:
    last_year = conference.model_copy(
        update={"code": unique("past"), "name": "PyCon Italia 2025", "issue_vouchers": False}
    )
    config = write_file(tmp_path, "both.toml", conferences_toml(conference, last_year))
    env = {**bot_env, "CONFERENCES_FILE": str(config)}
    rows = [grant(last_year, f"Old Grantee {n}") for n in range(3)]
    path = grants_csv(tmp_path, rows)

    result = run_cli(env, "grants", "import", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Needs a person" not in result.stdout
    assert pretix_server.all_vouchers() == []
    provisioned = run_cli(env, "provision", rows[0]["id"], "-c", last_year.code)
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
    assert "does not issue vouchers" in provisioned.stdout


def test_many_grants_with_the_same_reason_are_one_line_with_a_count(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    env = {k: v for k, v in bot_env.items() if k not in ("PRETIX_URL", "PRETIX_TOKEN")}
    rows = [grant(conference, f"Grantee {n}") for n in range(7)]
    path = grants_csv(tmp_path, rows)

    dry = run_cli(env, "grants", "import", "--dry-run", str(path))

    assert dry.returncode == 1, dry.stdout + dry.stderr
    [line] = [line for line in dry.stdout.splitlines() if line.startswith("needs a person")]
    assert "7 grants (" in line and "Pretix not configured" in line and ", ...)" in line

    real = run_cli(env, "grants", "import", str(path))

    assert real.returncode == 1, real.stdout + real.stderr
    needs = real.stdout[real.stdout.index("Needs a person") :]
    assert needs.count("Pretix not configured") == 1 and "7 grants" in needs
    assert "pretix_disabled" not in real.stdout
    assert "Grantee" not in needs


def test_an_import_without_a_conferences_file_says_so_once(tmp_path: Path) -> None:
    from tests.test_cli import bare_env

    rows = [
        {**dict.fromkeys(HEADER, ""), "id": str(n), "conference": "pycon2026"} for n in range(9)
    ]
    for row in rows:
        row.update(full_name="A Person", email=f"p{row['id']}@example.org", status="pending")
        row["updated_at"] = "2026-05-02T10:00:00Z"
    path = grants_csv(tmp_path, rows)

    result = run_cli(bare_env(tmp_path), "grants", "import", "--dry-run", str(path), cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "warning: no conferences file: conferences.toml does not exist" in result.stderr
    assert "9 bad rows would be skipped:" in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "unknown conference" in line]
    assert line.strip().startswith("lines 2, 3, 4, 5, 6 and 4 more (9 rows):"), line


def test_a_held_grant_is_worded_the_same_in_the_dry_run_and_the_import(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    held = grant(conference, "Hal Held", previous_status="waiting_list")
    path = grants_csv(tmp_path, [held])
    wording = (
        f"Hal Held (grant {held['id']}, {conference.code}) was confirmed from waiting_list, not "
        "from waiting_for_confirmation; if that is right, run "
        f"`.venv/bin/voucher-bot provision {held['id']} -c {conference.code}`"
    )

    dry = run_cli(bot_env, "grants", "import", "--dry-run", str(path))
    real = run_cli(bot_env, "grants", "import", str(path))

    assert f"would be held for staff: {wording}" in dry.stdout, dry.stdout
    # The import lists it in the "Needs a person" table, not above the summary.
    summary, needs = real.stdout.split("Needs a person", 1)
    assert "Hal Held" not in summary, real.stdout
    [row] = [line for line in needs.splitlines() if "Hal Held" in line]
    assert f"{conference.code}/{held['id']}" in row and " held " in row, row
    assert wording.split(" was ", 1)[1] in row, row
    assert real.returncode == 1


def test_a_second_import_that_changes_nothing_still_says_how_many_grants_are_held(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    rows = [grant(conference, f"Hal Held {n}", previous_status="waiting_list") for n in range(3)]
    path = grants_csv(tmp_path, rows)
    first = run_cli(bot_env, "grants", "import", str(path))
    assert first.returncode == 1, first.stdout + first.stderr

    again = run_cli(bot_env, "grants", "import", str(path))

    assert "3 unchanged; nothing changed." in again.stdout, again.stdout
    [line] = [line for line in again.stdout.splitlines() if "still held" in line]
    assert "3 grants (" in line and "`.venv/bin/voucher-bot provision ID -c CONF`" in line, line
    assert again.returncode == 1  # held grants need a person


def test_the_real_import_says_what_happened_in_the_dry_runs_words(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    rows = [grant(conference, "Nora New"), grant(conference, "Ida Noid", id="")]
    path = grants_csv(tmp_path, rows)

    result = run_cli(bot_env, "grants", "import", str(path))

    assert result.returncode == 2, result.stdout + result.stderr  # the bad row
    assert "Read 2 grants: 1 created; 1 bad." in result.stdout, result.stdout
    provisioning = result.stdout[result.stdout.index("Provisioning") :]
    assert "new voucher" in provisioning and "created" not in provisioning, provisioning
