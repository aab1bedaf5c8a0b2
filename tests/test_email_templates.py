"""Email the team owns: per-conference templates with fallback, Reply-To, `email preview`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.conferences import ConferenceConfig, Conferences, load_conferences
from bot.email_content import VoucherEmailContext, render_voucher_email, template_problems
from bot.mailer import OutgoingEmail, SmtpMailer
from bot.services.context import ServiceContext
from bot.services.provisioning import provision_grant_voucher
from bot.settings import ConfigError, load_settings
from tests.conftest import TEST_ACTOR
from tests.fakes.smtp_fixtures import SENDER
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import plain_text, write_file

ROOT = Path(__file__).resolve().parent.parent
TEAM_SUBJECT = "{{ conference }}: your ticket, {{ greeting_name }}!"
TEAM_TEXT = "Ciao {{ greeting_name }}, here is {{ code }} for {{ conference }}.\n"

CONFERENCE_TOML = """
[conferences.pycon2026]
name = "PyCon Italia 2026"
pretix_organizer = "pycon"
pretix_event = "pycon2026"
pretix_quota = 1
timezone = "Europe/Rome"
email_templates = "templates/pycon2026"
"""


def context() -> VoucherEmailContext:
    return VoucherEmailContext(
        grantee_name="Zoë Müller",
        conference_name="PyCon Italia 2026",
        code="GRANT-AB12",
        redeem_url=None,
        valid_until=datetime(2026, 5, 31, 21, 59, tzinfo=UTC),
        timezone="Europe/Rome",
        voucher_kind="grant",
    )


def team_folder(root: Path, *, text: str = TEAM_TEXT) -> Path:
    """A team's folder with its own subject and text; no HTML file (the bundled one is used)."""
    folder = root / "templates" / "pycon2026"
    folder.mkdir(parents=True)
    write_file(folder, "voucher_email.subject.j2", TEAM_SUBJECT)
    write_file(folder, "voucher_email.txt.j2", text)
    return folder


def test_a_conference_folder_replaces_its_files_and_the_rest_falls_back(tmp_path: Path) -> None:
    folder = team_folder(tmp_path)

    team = render_voucher_email(context(), templates=folder)
    bundled = render_voucher_email(context())

    assert team.subject == "PyCon Italia 2026: your ticket, Zoë Müller!"
    assert team.text == "Ciao Zoë Müller, here is GRANT-AB12 for PyCon Italia 2026.\n"
    # No HTML in the folder: the bundled one, with the team's subject in its <title>.
    assert "Your voucher code" in team.html and "GRANT-AB12" in team.html
    assert "<title>PyCon Italia 2026: your ticket, Zoë Müller!</title>" in team.html
    assert bundled.subject == "Your free ticket voucher for PyCon Italia 2026"
    assert "Ciao" not in bundled.text


def test_the_folder_is_relative_to_the_conference_file_and_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = team_folder(tmp_path)
    config = write_file(tmp_path, "conferences.toml", CONFERENCE_TOML)
    monkeypatch.chdir(ROOT)  # anywhere but the file's own folder

    conferences = load_conferences(config, required=True)

    assert conferences["pycon2026"].template_folder == folder.resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "is not a folder"),
        ("Hi {{ greeting_name }", "voucher_email.txt.j2, line 1"),
        ("Hi {{ grantee }}", "'grantee' is undefined"),
    ],
)
def test_a_missing_folder_or_a_broken_template_stops_the_start(
    tmp_path: Path, text: str | None, expected: str
) -> None:
    if text is not None:
        team_folder(tmp_path, text=text)
    config = write_file(tmp_path, "conferences.toml", CONFERENCE_TOML)

    with pytest.raises(ConfigError) as raised:
        load_conferences(config, required=True)

    [problem] = raised.value.problems
    assert "conferences.pycon2026.email_templates" in problem
    assert expected in problem


def test_every_variant_of_a_good_folder_renders(tmp_path: Path) -> None:
    assert template_problems(team_folder(tmp_path)) == []


def test_reply_to_reaches_the_smtp_server_and_a_message_may_name_its_own(
    smtp_server: FakeSmtpServer,
) -> None:
    mailer = SmtpMailer(
        host=smtp_server.host,
        port=smtp_server.port,
        tls="none",
        sender=SENDER,
        reply_to="Grants team <grants-team@pycon.example.org>",
        timeout=5.0,
    )
    message = OutgoingEmail(
        to_name="Jane Doe",
        to_address="jane@example.org",
        subject="Hello",
        text="text",
        html="<p>html</p>",
        message_id="<reply-to.1@pycon.example.org>",
    )

    mailer.send(message)
    mailer.send(
        dataclasses.replace(
            message, message_id="<reply-to.2@pycon.example.org>", reply_to="desk@pycon.example.org"
        )
    )

    first, second = smtp_server.wait_for(2)
    assert first.message["Reply-To"] == "Grants team <grants-team@pycon.example.org>"
    assert second.message["Reply-To"] == "desk@pycon.example.org"
    assert first.message["From"] == SENDER


def test_without_reply_to_there_is_no_such_header(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    smtp_mailer.send(
        OutgoingEmail(
            to_name="Jane Doe",
            to_address="jane@example.org",
            subject="Hello",
            text="text",
            html="<p>html</p>",
            message_id="<no-reply-to@pycon.example.org>",
        )
    )

    [received] = smtp_server.wait_for(1)
    assert received.message["Reply-To"] is None


def test_reply_to_may_not_be_smuggled_in_as_an_extra_header() -> None:
    with pytest.raises(ValueError, match="may not replace"):
        OutgoingEmail(
            to_name="Jane",
            to_address="jane@example.org",
            subject="s",
            text="t",
            html="h",
            message_id="<x@y.org>",
            headers={"Reply-To": "evil@example.org"},
        )


def test_the_setting_is_validated_and_reaches_the_mailer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for key in list(os.environ):
        if key.startswith(("SMTP_", "EMAIL_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EMAIL_REPLY_TO", "not an address")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert any(p.startswith("EMAIL_REPLY_TO:") for p in raised.value.problems)

    monkeypatch.setenv("EMAIL_REPLY_TO", "Grants <grants@pycon.example.org>")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_FROM", SENDER)
    mailer = SmtpMailer.from_settings(load_settings())
    assert mailer.reply_to == "Grants <grants@pycon.example.org>"


def test_a_provisioned_grantee_gets_the_conference_template_and_the_reply_to(
    tmp_path: Path,
    conference: ConferenceConfig,
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    folder = team_folder(tmp_path)
    own = conference.model_copy(update={"email_templates": str(folder)})
    ctx = make_ctx(
        conferences=Conferences({own.code: own}),
        mailer=SmtpMailer(
            host=smtp_server.host,
            port=smtp_server.port,
            tls="none",
            sender=SENDER,
            reply_to="grants-team@pycon.example.org",
            timeout=5.0,
        ),
    )
    grant_id = make_grant(full_name="Ada Lovelace")

    outcome = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)

    [received] = smtp_server.wait_for(1)
    assert received.message["Subject"] == "PyCon Italia 2026: your ticket, Ada Lovelace!"
    assert plain_text(received).startswith(f"Ciao Ada Lovelace, here is {outcome.voucher_code}")
    assert received.message["Reply-To"] == "grants-team@pycon.example.org"


def preview_env(tmp_path: Path) -> dict[str, str]:
    """An SQLite bot with one conference (own templates) and one confirmed grant imported."""
    team_folder(tmp_path)
    write_file(tmp_path, "conferences.toml", CONFERENCE_TOML)
    grants = [
        {
            "id": "7001",
            "conference": "pycon2026",
            "full_name": "Grace Hopper",
            "email": "grace@example.org",
            "status": "confirmed",
            "previous_status": "waiting_for_confirmation",
            "updated_at": "2026-05-02T10:00:00Z",
        }
    ]
    write_file(tmp_path, "grants.json", json.dumps(grants))
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env = {
        **keep,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "CONFERENCES_FILE": str(tmp_path / "conferences.toml"),
        "EMAIL_REPLY_TO": "Grants team <grants-team@pycon.example.org>",
        "TMPDIR": str(tmp_path),
    }
    imported = run(env, tmp_path, "grants", "import", "grants.json", "--no-provision")
    assert imported.returncode == 0, imported.stderr
    return env


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_email_preview_prints_the_text_and_writes_the_html(tmp_path: Path) -> None:
    env = preview_env(tmp_path)

    result = run(env, tmp_path, "email", "preview", "7001", "--html-out", "out.html")

    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "To: Grace Hopper <grace@example.org>" in output
    assert "Reply-To: Grants team <grants-team@pycon.example.org>" in output
    assert "Subject: PyCon Italia 2026: your ticket, Grace Hopper!" in output
    assert "Ciao Grace Hopper, here is NOT-ISSUED-YET for PyCon Italia 2026." in output
    assert "placeholder" in output
    assert "Template voucher_email.html.j2: bundled" in output
    assert re.search(r"Template voucher_email\.txt\.j2: .*templates/pycon2026", output)
    html = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert "NOT-ISSUED-YET" in html and "<title>PyCon Italia 2026: your ticket" in html
    assert f"HTML written to {Path('out.html')}" in output


def test_email_preview_writes_a_temporary_file_by_default_and_refuses_unknown_grants(
    tmp_path: Path,
) -> None:
    env = preview_env(tmp_path)

    result = run(env, tmp_path, "email", "preview", "grace@example.org")
    missing = run(env, tmp_path, "email", "preview", "9999")

    assert result.returncode == 0, result.stderr
    [written] = re.findall(r"HTML written to (\S+)", result.stdout)
    path = Path(written)
    assert path.parent == tmp_path and path.suffix == ".html"
    assert "Grace Hopper" in path.read_text(encoding="utf-8")
    assert missing.returncode == 2  # bad input: no such grant
