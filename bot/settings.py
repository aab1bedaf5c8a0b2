"""Process settings: environment variables or a `.env` file, validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.mailer import parse_addresses

SQLITE_DEFAULT_URL = "sqlite:///voucher-bot.sqlite3"
# The longest Retry-After the Pretix client waits (Pretix itself asks for 5 s when busy).
PRETIX_MAX_RETRY_AFTER = 10.0


class ConfigError(Exception):
    """Settings or conference configuration that the bot refuses to start with."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def render(self) -> str:
        """One line per bad setting, ready for a terminal."""
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"The bot cannot start; fix these settings:\n{lines}"


class Settings(BaseSettings):
    """Everything the process reads from its environment; built once and passed down."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    database_url: str = SQLITE_DEFAULT_URL
    auto_migrate: bool = True

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_staff_usergroup: str | None = None
    slack_staff_user_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    slack_staff_cache_seconds: int = Field(default=300, ge=0)

    pretix_url: AnyHttpUrl | None = None
    pretix_token: SecretStr | None = None
    pretix_timeout_seconds: float = Field(default=10.0, gt=0)
    pretix_max_attempts: int = Field(default=5, ge=1, le=20)

    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_timeout_seconds: float = Field(default=20.0, gt=0)
    email_from: str | None = None
    email_reply_to: str | None = None

    grants_webhook_secret: SecretStr | None = None
    conferences_file: Path = Path("conferences.toml")

    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    reconcile_interval_seconds: int = Field(default=30, ge=1)
    work_lease_seconds: int = Field(default=180, ge=10)
    max_provisioning_attempts: int = Field(default=8, ge=1)
    # `false`: a scheduled digest with nothing to report is not posted (one asked for is).
    digest_post_empty: bool = True

    # Bulk issuance: how long a request waits for a second person's approval, and whether
    # its requester may approve it.
    bulk_request_ttl_minutes: int = Field(default=1440, ge=1)
    bulk_allow_self_approval: bool = False

    @field_validator("work_lease_seconds")
    @classmethod
    def _lease_outlasts_pretix(cls, value: int, info: ValidationInfo) -> int:
        # A worker's lease should outlast its two slowest Pretix calls (an upgrade reads, then
        # writes; every attempt timing out, the longest Retry-After between them). A worker
        # that outlives its lease records nothing, so this is about wasted work, not safety.
        timeout = info.data.get("pretix_timeout_seconds")
        attempts = info.data.get("pretix_max_attempts")
        if timeout is not None and attempts is not None:
            slowest = 2 * (attempts * timeout + (attempts - 1) * PRETIX_MAX_RETRY_AFTER)
            if value < slowest:
                raise ValueError(
                    f"must be at least {slowest:.0f} s with these Pretix settings (two calls of "
                    "PRETIX_MAX_ATTEMPTS x PRETIX_TIMEOUT_SECONDS, plus the waits between)"
                )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        # Operators paste URLs from their hosting panel; psycopg 3 is the driver we ship.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value.removeprefix(prefix)
        if not value.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")
        return value

    @field_validator("slack_staff_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(" ", ",").split(",") if part.strip()]
        return value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("a bot token starts with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("an app-level token starts with xapp-")
        return value

    @field_validator("email_from")
    @classmethod
    def _email_from_shape(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError("give an address such as 'PyCon Italia <grants@pycon.it>'")
        return value

    @field_validator("email_reply_to")
    @classmethod
    def _reply_to_shape(cls, value: str | None) -> str | None:
        # Checked as the header will carry it: a bad Reply-To would fail every email later.
        if value is not None:
            try:
                parse_addresses(value)
            except ValueError:
                raise ValueError(
                    "give one or more addresses such as 'Grants team <grants@pycon.it>'"
                ) from None
        return value

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        given = {name for name in type(self).model_fields if getattr(self, name) is not None}
        problems = [message for _names, message in pair_problems(given)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def slack_enabled(self) -> bool:
        """Slack is on once a bot token is configured."""
        return self.slack_bot_token is not None

    @property
    def pretix_enabled(self) -> bool:
        """Pretix is on once its URL and token are configured."""
        return self.pretix_url is not None and self.pretix_token is not None

    @property
    def email_enabled(self) -> bool:
        """Email is on once an SMTP host and sender are configured."""
        return self.smtp_host is not None and self.email_from is not None

    @property
    def effective_smtp_port(self) -> int:
        """The configured port, or the usual one for the TLS mode."""
        if self.smtp_port is not None:
            return self.smtp_port
        return {"none": 25, "starttls": 587, "ssl": 465}[self.smtp_tls]

    @property
    def is_sqlite(self) -> bool:
        """Whether the embedded SQLite default (or another SQLite file) is in use."""
        return self.database_url.startswith("sqlite")

    def disabled_features(self) -> list[str]:
        """Which integrations are off, each with the settings that turn it on."""
        missing = []
        if not self.slack_enabled:
            missing.append("Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")
        if not self.pretix_enabled:
            missing.append("Pretix is off: set PRETIX_URL and PRETIX_TOKEN")
        if not self.email_enabled:
            missing.append("email is off: set SMTP_HOST and EMAIL_FROM")
        if self.grants_webhook_secret is None:
            missing.append("the grant webhook is off: set GRANTS_WEBHOOK_SECRET")
        return missing


def pair_problems(given: set[str]) -> list[tuple[tuple[str, ...], str]]:
    """Settings that only work together, checked on which ones were given at all."""
    problems: list[tuple[tuple[str, ...], str]] = []
    for first, second in PAIRS:
        if (first in given) != (second in given):
            message = f"{first.upper()} and {second.upper()} go together: set both or neither"
            problems.append(((first, second), message))
    if "slack_bot_token" in given and not given & {"slack_signing_secret", "slack_app_token"}:
        problems.append(
            (
                ("slack_bot_token", "slack_signing_secret", "slack_app_token"),
                "SLACK_SIGNING_SECRET is needed with SLACK_BOT_TOKEN "
                "(or set SLACK_APP_TOKEN for Socket Mode)",
            )
        )
    if "slack_app_token" in given and "slack_bot_token" not in given:
        problems.append(
            (
                ("slack_app_token", "slack_bot_token"),
                "SLACK_APP_TOKEN needs SLACK_BOT_TOKEN as well",
            )
        )
    return problems


PAIRS = (
    ("pretix_url", "pretix_token"),
    ("smtp_host", "email_from"),
    ("smtp_username", "smtp_password"),
)

# Values that may be shown back in an error; anything else could be a secret (a database URL
# carries its password, a token is a token).
ECHOED = frozenset(
    {
        "auto_migrate", "port", "host", "log_level", "log_format", "smtp_tls", "smtp_port",
        "smtp_host", "email_from", "email_reply_to", "pretix_url", "slack_api_url",
        "conferences_file",
        "pretix_timeout_seconds", "pretix_max_attempts", "smtp_timeout_seconds",
        "reconcile_interval_seconds", "work_lease_seconds", "max_provisioning_attempts",
        "slack_staff_cache_seconds", "bulk_request_ttl_minutes", "bulk_allow_self_approval",
    }
)  # fmt: skip


class _GivenBase(BaseSettings):
    """Reads the same sources as Settings, accepting anything: which settings were given."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )


_Given = create_model(  # type: ignore[call-overload]
    "_Given",
    __base__=_GivenBase,
    **dict.fromkeys(Settings.model_fields, (Any, None)),
)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and `.env`), or raise ConfigError naming each fault.

    Every bad setting is named once, with what is wrong; settings that go together are
    checked on which ones were given, so a malformed one does not look missing.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        field_errors = [error for error in exc.errors() if error["loc"]]
    problems = [_describe(error) for error in field_errors]
    bad = {str(error["loc"][0]) for error in field_errors}
    raw = _Given(**overrides).model_dump()
    given = {name for name, value in raw.items() if value not in (None, "")}
    problems += [message for names, message in pair_problems(given) if not bad & set(names)]
    raise ConfigError(problems)


def _describe(error: Any) -> str:
    name = str(error["loc"][0])
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    shown = f" (got {error.get('input')!r})" if name in ECHOED else ""
    return f"{name.upper()}: {message}{shown}"
