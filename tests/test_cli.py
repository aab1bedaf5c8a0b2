"""The command line and the server start, run as real processes against the local fakes."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from tests.conftest import conferences_toml, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_external_id, write_file

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def run_cli(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal: what CI and scripts see (no question asked)
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bare_env(tmp_path: Path) -> dict[str, str]:
    """No settings at all, in an empty directory: the embedded SQLite default."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {**keep, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {**bare_env(tmp_path), "PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process, port
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def test_starts_without_any_settings_on_sqlite_and_says_what_is_off(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    process, port = server
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None, "the bot exited instead of starting"
            assert time.monotonic() < deadline, "the bot did not start in time"
            time.sleep(0.1)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["slack"] is False
    process.terminate()
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, "a stop by SIGTERM is a clean stop (make run says nothing)"
    assert "Traceback" not in output
    assert "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in output
    assert "set PRETIX_URL and PRETIX_TOKEN" in output
    assert (tmp_path / "voucher-bot.sqlite3").exists()


def test_bad_settings_stop_the_start_with_one_message_naming_each(tmp_path: Path) -> None:
    env = {
        **bare_env(tmp_path),
        "PRETIX_URL": "https://pretix.eu",
        "PORT": "99999",
        "SLACK_BOT_TOKEN": "not-a-token",
    }
    result = run_cli(env, "status", cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "PORT" in result.stderr
    assert "SLACK_BOT_TOKEN" in result.stderr
    assert "not-a-token" not in result.stderr  # secrets are never echoed
    assert "PRETIX_URL and PRETIX_TOKEN go together" in result.stderr


def test_missing_conference_file_is_named(tmp_path: Path) -> None:
    env = {**bare_env(tmp_path), "CONFERENCES_FILE": str(tmp_path / "nope.toml")}
    result = run_cli(env, "status", cwd=tmp_path)
    assert result.returncode == 2
    assert "CONFERENCES_FILE" in result.stderr and "nope.toml" in result.stderr


def test_provision_from_the_command_line_again_and_again(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    grant_id = make_grant()
    ident = grant_external_id(ctx.db, grant_id)

    first = run_cli(bot_env, "provision", ident)
    second = run_cli(bot_env, "provision", ident)
    status = run_cli(bot_env, "status", ident)

    assert first.returncode == 0, first.stderr
    assert "created in Pretix" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "already has a grant voucher" in second.stdout
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1
    assert "voucher:" in status.stdout and "sent" in status.stdout


def test_provision_unknown_grant_exits_2_with_a_message(bot_env: dict[str, str]) -> None:
    result = run_cli(bot_env, "provision", unique("nobody"))
    assert result.returncode == 2  # bad input: no grant by that id
    assert "No grant found" in result.stderr


def test_grants_import_reports_bad_rows_by_line_and_keeps_good_ones(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    source = (DATA / "grants-with-errors.csv").read_text(encoding="utf-8")
    ids = {str(n): unique("") for n in range(9001, 9008)}
    for old, new in ids.items():
        source = source.replace(f"{old},", f"{new},")
    path = write_file(tmp_path, "grants.csv", source.replace("pycon2026", conference.code))

    result = run_cli(bot_env, "grants", "import", str(path))

    assert result.returncode == 2  # bad input, though the good row is kept
    assert "6 bad rows skipped" in result.stderr
    for line in range(2, 8):  # every row but the last (line 8) is bad
        assert f"line {line}:" in result.stderr
    assert "line 8:" not in result.stderr
    assert "1 created" in result.stdout


def test_grants_import_of_a_hostile_file_reports_lines_and_a_second_run_changes_nothing(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    header = "id,conference,full_name,email,status,updated_at"
    rows = [
        f"{unique('')},{conference.code},Jane\u2028Doe,{unique('a')}@example.org,pending,"
        "2026-05-01T10:00:00Z",
        f"{unique('')},{conference.code},{'x' * 200_000},{unique('b')}@example.org,pending,"
        "2026-05-01T10:00:00Z",
        f"{unique('')},{conference.code},Jim Doe,{unique('c')}@example.org,approved,"
        "2026-05-01T10:00:00Z",
    ]
    path = write_file(tmp_path, "grants.csv", "\n".join([header, *rows]) + "\n")

    first = run_cli(bot_env, "grants", "import", str(path))
    again = run_cli(bot_env, "grants", "import", str(path))

    assert "Traceback" not in first.stderr + again.stderr
    assert first.returncode == 2
    assert "line 3: a cell is longer than" in first.stderr
    assert "Read 3 grants: 2 created; 1 bad." in first.stdout
    assert "Read 3 grants: 2 unchanged; 1 bad; nothing changed." in again.stdout


def test_grants_import_of_a_file_that_is_not_utf8_says_so(
    tmp_path: Path, bot_env: dict[str, str]
) -> None:
    path = tmp_path / "grants.csv"
    path.write_bytes("id,full_name\n1,Zoë\n".encode("cp1252"))

    result = run_cli(bot_env, "grants", "import", str(path))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "is not UTF-8 text (byte 0xeb on line 2); save it as UTF-8" in result.stderr


def test_check_says_what_works_and_what_does_not(bot_env: dict[str, str]) -> None:
    result = run_cli(bot_env, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database" in result.stdout and "quota 1 (Grant tickets)" in result.stdout
    assert "S0STAFF: 2 members" in result.stdout

    broken = run_cli({**bot_env, "PRETIX_TOKEN": "wrong", "SMTP_PORT": str(free_port())}, "check")
    assert broken.returncode == 1
    assert "check PRETIX_TOKEN" in broken.stdout
    assert "cannot connect" in broken.stdout


def test_check_tells_an_unknown_event_slug_apart(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    wrong = conference.model_copy(update={"pretix_event": "pycon2062"})
    config = write_file(tmp_path, "wrong.toml", conferences_toml(wrong))
    result = run_cli({**bot_env, "CONFERENCES_FILE": str(config)}, "check")
    assert result.returncode == 1
    assert "event 'pycon2062' does not exist under 'pycon'" in result.stdout


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli(bare_env(tmp_path), "--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("migrate", "grants", "vouchers", "provision", "resend", "revoke", "status"):
        assert command in result.stdout


def test_check_explains_a_free_slack_plan(bot_env: dict[str, str], slack_api: FakeSlack) -> None:
    slack_api.free_plan = True
    result = run_cli(bot_env, "check")
    assert result.returncode == 1
    assert "plan_upgrade_required" in result.stdout and "SLACK_STAFF_USER_IDS" in result.stdout


def test_check_reports_parts_that_are_off_without_failing(bot_env: dict[str, str]) -> None:
    # "Off" is a choice (as in the start banner), not a failure: only a configured part fails.
    off = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL", "SLACK_STAFF_USERGROUP"}
    off |= {"PRETIX_URL", "PRETIX_TOKEN", "SMTP_HOST", "SMTP_PORT", "SMTP_TLS", "EMAIL_FROM"}
    env = {k: v for k, v in bot_env.items() if k not in off}

    result = run_cli(env, "check")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for part, setting in (("slack", "SLACK_BOT_TOKEN"), ("pretix", "PRETIX_URL")):
        [line] = [line for line in lines if line.split()[1:2] == [f"{part}:"]]
        assert line.startswith("off") and setting in line
    assert next(line for line in lines if "smtp:" in line).startswith("off")
    assert "FAIL" not in result.stdout


def test_check_fails_a_voucher_validity_in_the_past_and_says_how_to_fix_it(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    past = conference.model_copy(
        update={"voucher_valid_until": dt.datetime(2025, 5, 31, 21, 59, 59, tzinfo=dt.UTC)}
    )
    config = write_file(tmp_path, "past.toml", conferences_toml(past))

    result = run_cli({**bot_env, "CONFERENCES_FILE": str(config)}, "check")

    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if "voucher_valid_until" in line]
    assert line.startswith("FAIL") and past.code in line
    assert "2025-05-31 23:59 Europe/Rome" in line  # shown in the conference's time zone
    assert "has passed" in line and "future date" in line and "issue_vouchers = false" in line


def test_check_fails_a_conference_channel_the_bot_is_not_in(
    tmp_path: Path, conference: ConferenceConfig, bot_env: dict[str, str], slack_api: FakeSlack
) -> None:
    slack_api.add_channel("C0OUTSIDE", "grants-2026", is_member=False)
    outside = conference.model_copy(update={"slack_channel": "C0OUTSIDE"})
    config = write_file(tmp_path, "outside.toml", conferences_toml(outside))

    result = run_cli({**bot_env, "CONFERENCES_FILE": str(config)}, "check")

    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if "C0OUTSIDE" in line]
    assert line.startswith("FAIL")
    assert "not a member of #grants-2026" in line and "/invite @voucher-bot" in line


def test_check_passes_a_conference_channel_the_bot_is_in(
    conference: ConferenceConfig, bot_env: dict[str, str]
) -> None:
    result = run_cli(bot_env, "check")

    assert result.returncode == 0, result.stdout + result.stderr
    channel = conference.slack_channel
    assert channel is not None
    [line] = [line for line in result.stdout.splitlines() if channel in line]
    assert line.startswith("ok") and "#grants" in line


def test_status_does_not_call_grants_of_a_conference_not_issuing_vouchers_missing(
    tmp_path: Path,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
) -> None:
    make_grant()
    past = conference.model_copy(update={"issue_vouchers": False})
    config = write_file(tmp_path, "past.toml", conferences_toml(past))

    result = run_cli({**bot_env, "CONFERENCES_FILE": str(config)}, "status")

    assert result.returncode == 0, result.stderr
    after = result.stdout.split(f"({conference.code})\n", 1)[1].splitlines()
    block = "\n".join(
        line
        for line in after[
            : next((i for i, line in enumerate(after) if not line.startswith("  ")), len(after))
        ]
    )
    assert "grants: 1 confirmed" in block
    assert "confirmed without a voucher" not in block
    assert "not issuing vouchers" in block


def test_check_on_a_new_database_notes_that_the_first_start_creates_the_schema(
    tmp_path: Path,
) -> None:
    # The README's set-up: a new database, then `check`, before the first start.
    env = bare_env(tmp_path)
    result = run_cli(env, "check", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if "database:" in line]
    assert line.startswith("note")
    assert "has no schema yet" in line and "at the first start" in line
    assert "voucher-bot migrate" in line

    strict = run_cli({**env, "AUTO_MIGRATE": "false"}, "check", cwd=tmp_path)
    assert strict.returncode == 1
    assert "FAIL database:" in strict.stdout and "voucher-bot migrate" in strict.stdout


def test_revoke_of_a_grant_still_confirmed_is_bad_input(
    ctx: ServiceContext, make_grant: Callable[..., int], bot_env: dict[str, str]
) -> None:
    ident = grant_external_id(ctx.db, make_grant())
    assert run_cli(bot_env, "provision", ident).returncode == 0

    result = run_cli(bot_env, "revoke", ident)

    assert result.returncode == 2, result.stdout + result.stderr


def test_provision_with_pretix_off_marks_the_grant_as_needing_a_person(
    ctx: ServiceContext, make_grant: Callable[..., int], bot_env: dict[str, str]
) -> None:
    env = {k: v for k, v in bot_env.items() if k not in ("PRETIX_URL", "PRETIX_TOKEN")}
    ident = grant_external_id(ctx.db, make_grant())

    result = run_cli(env, "provision", ident)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("needs a person: "), result.stdout
    assert not any(line.lstrip().startswith("ok ") for line in lines), result.stdout


def test_provision_of_a_grant_with_a_voucher_says_so_once(
    ctx: ServiceContext,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
) -> None:
    ident = grant_external_id(ctx.db, make_grant())
    assert run_cli(bot_env, "provision", ident).returncode == 0

    again = run_cli(bot_env, "provision", ident)

    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already has a grant voucher") == 1, again.stdout


def test_status_of_a_conference_without_vouchers_says_none(
    make_grant: Callable[..., int], bot_env: dict[str, str]
) -> None:
    make_grant(status="pending", previous_status="")
    result = run_cli(bot_env, "status")
    assert result.returncode == 0, result.stderr
    assert "  vouchers: none\n" in result.stdout, result.stdout
    assert "(-)" not in result.stdout


def test_without_a_conferences_file_status_and_check_say_to_create_it(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    status = run_cli(env, "status", cwd=tmp_path)
    check = run_cli(env, "check", cwd=tmp_path)

    assert status.returncode == 0, status.stdout + status.stderr
    assert "No conferences yet." in status.stdout
    assert "Create conferences.toml (copy conferences.example.toml)" in status.stdout
    [line] = [line for line in check.stdout.splitlines() if "conferences:" in line]
    assert "conferences.toml does not exist" in line and "conferences.example.toml" in line


def test_email_preview_says_when_no_such_email_would_be_sent_now(
    tmp_path: Path,
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
) -> None:
    pending = grant_external_id(ctx.db, make_grant(status="pending", previous_status=""))
    confirmed = grant_external_id(ctx.db, make_grant())

    not_yet = run_cli(bot_env, "email", "preview", pending, "--html-out", str(tmp_path / "a.html"))
    due = run_cli(bot_env, "email", "preview", confirmed, "--html-out", str(tmp_path / "b.html"))
    past = write_file(
        tmp_path,
        "past.toml",
        conferences_toml(conference.model_copy(update={"issue_vouchers": False})),
    )
    off = run_cli(
        {**bot_env, "CONFERENCES_FILE": str(past)},
        "email",
        "preview",
        confirmed,
        "--html-out",
        str(tmp_path / "c.html"),
    )

    for result in (not_yet, due, off):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Subject:" in result.stdout  # the preview is still shown
    assert "No such email would be sent now: the grant is pending" in not_yet.stdout
    assert "No such email would be sent now" not in due.stdout
    assert (
        "No such email would be sent now:" in off.stdout and "issue_vouchers = false" in off.stdout
    )
