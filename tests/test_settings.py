"""Start-up configuration: settings from the environment or `.env`, and the conference file.

Every test runs in an empty working directory with the bot's variables removed from the
environment, so a developer's own `.env` or exported settings never leak in.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from bot.conferences import load_conferences, parse_conferences
from bot.settings import SQLITE_DEFAULT_URL, ConfigError, Settings, load_settings

SECRET = "s3cr3t-VALUE-nobody-may-see"

VALID_CONFERENCE = """
[conferences.pycon2026]
name = "PyCon Italia 2026"
pretix_organizer = "pycon"
pretix_event = "pycon2026"
pretix_quota = 1
voucher_valid_until = 2026-05-31T23:59:59+02:00
timezone = "Europe/Rome"
slack_channel = "C0GRANTS"
digest_time = 08:30:00
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No bot variable in the environment, and an empty working directory (no `.env`)."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.lower() in Settings.model_fields:
            monkeypatch.delenv(key)
    return monkeypatch


def problems_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    return raised.value.problems


def naming(problems: list[str], setting: str) -> list[str]:
    """The problems that name a setting (as a word, so PORT does not match SMTP_PORT)."""
    return [p for p in problems if p.startswith(f"{setting}:") or f" {setting} " in f" {p} "]


# --- settings -------------------------------------------------------------------------------


def test_without_any_setting_the_bot_starts_on_sqlite_with_every_integration_off() -> None:
    settings = load_settings()

    assert settings.database_url == SQLITE_DEFAULT_URL
    assert settings.is_sqlite
    assert (settings.host, settings.port) == ("127.0.0.1", 3000)
    assert settings.conferences_file == Path("conferences.toml")
    assert not (settings.slack_enabled or settings.pretix_enabled or settings.email_enabled)
    assert settings.disabled_features() == [
        "Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET",
        "Pretix is off: set PRETIX_URL and PRETIX_TOKEN",
        "email is off: set SMTP_HOST and EMAIL_FROM",
        "the grant webhook is off: set GRANTS_WEBHOOK_SECRET",
    ]


def test_a_complete_configuration_turns_everything_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DATABASE_URL": "postgresql+psycopg://bot@db.example.org/bot",
        "SLACK_BOT_TOKEN": "xoxb-1-2-3",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_APP_TOKEN": "xapp-1-2",
        "PRETIX_URL": "https://pretix.eu",
        "PRETIX_TOKEN": SECRET,
        "SMTP_HOST": "smtp.example.org",
        "SMTP_USERNAME": "grants",
        "SMTP_PASSWORD": SECRET,
        "SMTP_TLS": "ssl",
        "EMAIL_FROM": "PyCon Italia <grants@pycon.example.org>",
        "GRANTS_WEBHOOK_SECRET": SECRET,
        "PORT": "8080",
        "LOG_LEVEL": "debug",
    }.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.disabled_features() == []
    assert settings.slack_enabled and settings.pretix_enabled and settings.email_enabled
    assert not settings.is_sqlite
    assert settings.port == 8080
    assert settings.log_level == "DEBUG"
    assert settings.effective_smtp_port == 465
    assert settings.pretix_token is not None
    assert settings.pretix_token.get_secret_value() == SECRET
    assert SECRET not in repr(settings)


# A malformed setting whose partner IS set.
MALFORMED_WITH_PARTNER = [
    ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "SLACK_APP_TOKEN", "xapp-"),
    ({"SMTP_HOST": "smtp.example.org", "EMAIL_FROM": "grants"}, "EMAIL_FROM", "address"),
    ({"PRETIX_URL": "pretix.eu", "PRETIX_TOKEN": "t"}, "PRETIX_URL", "URL"),
]


@pytest.mark.parametrize(
    ("env", "setting", "words"),
    [
        ({"DATABASE_URL": "mysql://db.example.org/bot"}, "DATABASE_URL", "postgresql+psycopg"),
        (
            {"SLACK_BOT_TOKEN": "xoxp-123", "SLACK_SIGNING_SECRET": "x"},
            "SLACK_BOT_TOKEN",
            "xoxb-",
        ),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT", "65535"),
        ({"PORT": "0"}, "PORT", "greater than or equal to 1"),
        ({"PORT": "http"}, "PORT", "integer"),
        ({"SMTP_TLS": "tls"}, "SMTP_TLS", "starttls"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL", "INFO"),
        ({"WORK_LEASE_SECONDS": "1"}, "WORK_LEASE_SECONDS", "10"),
        *(
            pytest.param(env, setting, words, id=f"{setting}-with-partner")
            for env, setting, words in MALFORMED_WITH_PARTNER
        ),
    ],
)
def test_a_bad_setting_is_named_once_with_what_is_wrong(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], setting: str, words: str
) -> None:
    problems = problems_for(clean_env, **env)

    assert len(problems) == 1, problems
    [problem] = problems
    assert problem.startswith(f"{setting}: ")
    assert words in problem


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PRETIX_URL": "https://pretix.eu"}, "PRETIX_URL and PRETIX_TOKEN go together"),
        ({"PRETIX_TOKEN": "t"}, "PRETIX_URL and PRETIX_TOKEN go together"),
        ({"SMTP_HOST": "smtp.example.org"}, "SMTP_HOST and EMAIL_FROM go together"),
        ({"EMAIL_FROM": "grants@example.org"}, "SMTP_HOST and EMAIL_FROM go together"),
        ({"SMTP_USERNAME": "grants"}, "SMTP_USERNAME and SMTP_PASSWORD go together"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET is needed with SLACK_BOT_TOKEN"),
        ({"SLACK_APP_TOKEN": "xapp-1"}, "SLACK_APP_TOKEN needs SLACK_BOT_TOKEN"),
    ],
)
def test_settings_that_go_together_are_refused_alone(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    problems = problems_for(clean_env, **env)

    assert any(expected in problem for problem in problems), problems
    assert all(expected in problem for problem in problems), problems


def test_a_setting_missing_its_partner_is_named_only_once(
    clean_env: pytest.MonkeyPatch,
) -> None:
    problems = problems_for(clean_env, PRETIX_URL="https://pretix.eu")

    assert problems == ["PRETIX_URL and PRETIX_TOKEN go together: set both or neither"]


def test_every_bad_setting_is_named_in_one_error(clean_env: pytest.MonkeyPatch) -> None:
    problems = problems_for(
        clean_env,
        DATABASE_URL="mysql://db.example.org/bot",
        SMTP_PORT="0",
        PRETIX_URL="https://pretix.eu",
        SLACK_BOT_TOKEN="xoxp-1",
    )

    assert len(naming(problems, "DATABASE_URL")) == 1
    assert len(naming(problems, "SMTP_PORT")) == 1
    assert len([p for p in problems if p.startswith("SLACK_BOT_TOKEN:")]) == 1
    assert len([p for p in problems if "PRETIX_TOKEN go together" in p]) == 1
    with pytest.raises(ConfigError) as raised:
        load_settings()
    rendered = raised.value.render()
    assert rendered.startswith("The bot cannot start; fix these settings:\n  - ")
    assert all(f"  - {problem}" in rendered for problem in problems)


def test_secrets_are_never_echoed_in_messages(clean_env: pytest.MonkeyPatch) -> None:
    problems = problems_for(
        clean_env,
        SLACK_BOT_TOKEN=f"xoxp-{SECRET}",
        SLACK_APP_TOKEN=f"bad-{SECRET}",
        SLACK_SIGNING_SECRET=SECRET,
        SMTP_PASSWORD=SECRET,
        PRETIX_TOKEN=SECRET,
        GRANTS_WEBHOOK_SECRET=SECRET,
    )

    assert naming(problems, "SLACK_BOT_TOKEN") and naming(problems, "SLACK_APP_TOKEN")
    assert all(SECRET not in problem for problem in problems), problems
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert SECRET not in raised.value.render() and SECRET not in str(raised.value)


def test_a_refused_database_url_does_not_show_its_password(
    clean_env: pytest.MonkeyPatch,
) -> None:
    problems = problems_for(clean_env, DATABASE_URL=f"mysql://bot:{SECRET}@db.example.org/bot")

    assert naming(problems, "DATABASE_URL")
    assert all(SECRET not in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://bot:pw@db.example.org:5432/bot", "postgresql+psycopg://bot:pw@db.example.org:5432/bot"),
        ("postgresql://db.example.org/bot", "postgresql+psycopg://db.example.org/bot"),
        ("postgresql+psycopg://db.example.org/bot", "postgresql+psycopg://db.example.org/bot"),
        ("sqlite:///data/bot.sqlite3", "sqlite:///data/bot.sqlite3"),
    ],
)  # fmt: skip
def test_database_urls_are_normalised_to_psycopg_3(
    clean_env: pytest.MonkeyPatch, given: str, used: str
) -> None:
    clean_env.setenv("DATABASE_URL", given)

    settings = load_settings()

    assert settings.database_url == used
    assert settings.is_sqlite is used.startswith("sqlite")


@pytest.mark.parametrize(
    ("given", "ids"),
    [
        ("U01, U02,U03", ["U01", "U02", "U03"]),
        ("U01 U02", ["U01", "U02"]),
        (" U01 ,, ", ["U01"]),
        ("", []),
    ],
)
def test_staff_user_ids_are_a_comma_separated_list(
    clean_env: pytest.MonkeyPatch, given: str, ids: list[str]
) -> None:
    clean_env.setenv("SLACK_STAFF_USER_IDS", given)

    assert load_settings().slack_staff_user_ids == ids


@pytest.mark.parametrize(
    ("tls", "port", "expected"),
    [("none", None, 25), ("starttls", None, 587), ("ssl", None, 465), ("ssl", "2525", 2525)],
)
def test_the_smtp_port_follows_the_tls_mode_unless_given(
    clean_env: pytest.MonkeyPatch, tls: str, port: str | None, expected: int
) -> None:
    clean_env.setenv("SMTP_TLS", tls)
    if port is not None:
        clean_env.setenv("SMTP_PORT", port)

    assert load_settings().effective_smtp_port == expected


def test_a_dot_env_file_is_read_and_the_environment_wins(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "PRETIX_URL=https://pretix.example.org\nPRETIX_TOKEN=from-dotenv\nPORT=4000\n",
        encoding="utf-8",
    )
    clean_env.setenv("PORT", "5000")

    settings = load_settings()
    without_file = Settings(_env_file=None)

    assert settings.pretix_enabled
    assert str(settings.pretix_url) == "https://pretix.example.org/"
    assert settings.port == 5000
    assert not without_file.pretix_enabled
    assert without_file.port == 5000


def test_a_bad_value_in_dot_env_is_named_like_any_other(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SMTP_PORT=99999\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_settings()

    [problem] = raised.value.problems
    assert problem.startswith("SMTP_PORT: ")


# --- the conference file --------------------------------------------------------------------


def conference_table(code: str = "pycon2026", **fields: str) -> str:
    """One `[conferences.<code>]` table; fields given as TOML values replace the defaults."""
    values = {
        "name": '"PyCon Italia 2026"',
        "pretix_organizer": '"pycon"',
        "pretix_event": '"pycon2026"',
        "pretix_quota": "1",
        "timezone": '"Europe/Rome"',
    }
    values.update(fields)
    lines = [f"[conferences.{code}]"]
    lines += [f"{name} = {value}" for name, value in values.items() if value]
    return "\n".join(lines) + "\n"


def conference_problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "conferences.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_conferences(path, required=True)
    return raised.value.problems


def test_a_valid_conference_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "conferences.toml"
    path.write_text(VALID_CONFERENCE, encoding="utf-8")

    conferences = load_conferences(path, required=True)

    assert list(conferences) == ["pycon2026"]
    assert conferences.source == path
    conf = conferences["pycon2026"]
    assert conf.code == "pycon2026"
    assert (conf.pretix_organizer, conf.pretix_event) == ("pycon", "pycon2026")
    assert (conf.pretix_quota, conf.pretix_item) == (1, None)
    assert conf.voucher_valid_until == dt.datetime(2026, 5, 31, 21, 59, 59, tzinfo=dt.UTC)
    assert conf.digest_time == dt.time(8, 30)
    assert conf.zone.key == "Europe/Rome"
    assert conf.issue_vouchers is True
    assert conf.shop_url("https://pretix.eu/") == "https://pretix.eu/pycon/pycon2026/"
    assert conf.shop_url(None) is None


def test_a_missing_optional_file_means_no_conferences(tmp_path: Path) -> None:
    conferences = load_conferences(tmp_path / "conferences.toml", required=False)

    assert len(conferences) == 0
    assert conferences.source is None


def test_a_missing_required_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"

    with pytest.raises(ConfigError) as raised:
        load_conferences(path, required=True)

    assert raised.value.problems == [f"CONFERENCES_FILE: {path} does not exist"]


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    [problem] = conference_problems(tmp_path, "[conferences.pycon2026\nname = 'x'\n")

    assert problem.startswith("CONFERENCES_FILE: cannot read ")


def test_a_conference_without_quota_or_item_is_refused_by_name(tmp_path: Path) -> None:
    [problem] = conference_problems(tmp_path, conference_table("pycon2026", pretix_quota=""))

    assert "conferences.pycon2026" in problem
    assert "pretix_quota or pretix_item" in problem
    assert "never unlock every product" in problem


def test_a_conference_with_both_quota_and_item_is_refused(tmp_path: Path) -> None:
    [problem] = conference_problems(tmp_path, conference_table("pycon2026", pretix_item="10"))

    assert "conferences.pycon2026" in problem
    assert "not both" in problem


def test_an_unknown_time_zone_is_refused(tmp_path: Path) -> None:
    [problem] = conference_problems(tmp_path, conference_table(timezone='"Mars/Olympus"'))

    assert "conferences.pycon2026.timezone: " in problem
    assert "Mars/Olympus" in problem


def test_a_voucher_validity_without_an_offset_is_refused(tmp_path: Path) -> None:
    [problem] = conference_problems(
        tmp_path, conference_table(voucher_valid_until="2026-05-31T23:59:59")
    )

    assert "conferences.pycon2026.voucher_valid_until: " in problem
    assert "UTC offset" in problem


def test_a_misspelt_setting_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    [problem] = conference_problems(tmp_path, conference_table(pretix_qouta="1"))

    assert "conferences.pycon2026.pretix_qouta" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('conferences = "pycon2026"\n', "expected [conferences.<code>] tables"),
        ("[conferences]\npycon2026 = 1\n", "conferences.pycon2026 must be a table"),
        (conference_table("PyCon2026"), "conferences.PyCon2026.code: "),
    ],
)
def test_a_malformed_conference_table_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    [problem] = conference_problems(tmp_path, text)

    assert expected in problem


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = "\n".join(
        [
            conference_table("pycon2026", pretix_quota=""),
            conference_table(
                "pycon2025",
                timezone='"Europe/Nowhere"',
                voucher_valid_until="2025-05-31T23:59:59",
            ),
            conference_table(
                "pycon2024", pretix_item="10", voucher_valid_until="2024-05-31T23:59:59"
            ),
            conference_table("pycon2023"),  # a good one among them
        ]
    )

    problems = conference_problems(tmp_path, text)

    assert len(problems) == 4
    assert all(p.startswith(f"{tmp_path / 'conferences.toml'}: ") for p in problems)
    assert sum("conferences.pycon2026" in p for p in problems) == 1
    assert sum("conferences.pycon2025.timezone" in p for p in problems) == 1
    assert sum("conferences.pycon2025.voucher_valid_until" in p for p in problems) == 1
    assert sum("conferences.pycon2024.voucher_valid_until" in p for p in problems) == 1
    assert not any("pycon2023" in p for p in problems)


def test_a_missing_target_is_reported_alongside_a_bad_field(tmp_path: Path) -> None:
    problems = parse_problems(
        {
            "conferences": {
                "pycon2026": {
                    "name": "PyCon Italia 2026",
                    "pretix_organizer": "pycon",
                    "pretix_event": "pycon2026",
                    "timezone": "Mars/Olympus",
                }
            }
        }
    )

    assert any("timezone" in p for p in problems)
    assert any("pretix_quota or pretix_item" in p for p in problems)


def parse_problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_conferences(data)
    return raised.value.problems


def test_the_work_lease_must_outlast_the_slowest_pretix_call(
    clean_env: pytest.MonkeyPatch,
) -> None:
    problems = problems_for(clean_env, PRETIX_TIMEOUT_SECONDS="60", WORK_LEASE_SECONDS="180")

    assert len(problems) == 1, problems
    assert problems[0].startswith("WORK_LEASE_SECONDS: must be at least 680 s")


def test_a_conference_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "conferences.toml"
    path.write_bytes(conference_table(name='"Zoë Con"').encode("latin-1"))

    with pytest.raises(ConfigError) as raised:
        load_conferences(path, required=True)

    [problem] = raised.value.problems
    assert problem.startswith(f"CONFERENCES_FILE: {path} is not UTF-8 text")
    assert "line 2" in problem and "save it as UTF-8" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            conference_table().replace("[conferences.", "[conference."),
            "unknown table [conference]: conferences are [conferences.<code>] tables",
        ),
        (
            conference_table().replace("[conferences.", "[Conferences."),
            "unknown table [Conferences]: conferences are [conferences.<code>] tables",
        ),
        ('pretix_url = "https://pretix.eu"\n' + conference_table(), "unknown setting pretix_url"),
        ("", "no conferences"),
    ],
    ids=["singular", "capital", "top-level-key", "empty"],
)
def test_unknown_tables_and_keys_are_errors_not_zero_conferences(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = conference_problems(tmp_path, text)

    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pretix_quota", "true"),
        ("pretix_quota", '"12"'),
        ("pretix_quota", "12.0"),
        ("issue_vouchers", '"false"'),
        ("issue_vouchers", "0"),
        ("block_quota", '"yes"'),
        ("name", "2026"),
        ("pretix_event", "2026"),
        ("digest_time", '"09:00"'),
        ("voucher_valid_until", '"2026-05-31T23:59:59+02:00"'),
    ],
)
def test_conference_values_must_have_the_right_type(tmp_path: Path, field: str, value: str) -> None:
    problems = conference_problems(tmp_path, conference_table(**{field: value}))

    assert any(f"conferences.pycon2026.{field}: " in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("name", 200),
        ("pretix_organizer", 100),
        ("pretix_event", 100),
        ("timezone", 64),
        ("slack_channel", 40),
    ],
)
def test_conference_text_must_fit_the_database_columns(
    tmp_path: Path, field: str, limit: int
) -> None:
    fits = conference_table(**{field: '"' + "a" * limit + '"'})
    too_long = conference_table(**{field: '"' + "a" * (limit + 1) + '"'})

    problems = conference_problems(tmp_path, too_long)

    assert any(
        f"conferences.pycon2026.{field}: " in p and f"at most {limit} characters" in p
        for p in problems
    ), problems
    if field != "timezone":  # 64 a's are no time zone, whatever their length
        path = tmp_path / "fits.toml"
        path.write_text(fits, encoding="utf-8")
        assert len(load_conferences(path, required=True)) == 1


def test_the_example_conference_file_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "conferences.example.toml"
    assert set(load_conferences(example, required=True)) == {"pycon2026", "pycon2025"}
