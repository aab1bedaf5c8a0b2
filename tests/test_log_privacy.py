"""No voucher code, email address or full name in the logs, nor in a failed statement's text.

A voucher code is as good as a free ticket, and log pipelines are read by more people than the
database. The logs are captured as `python -m bot` configures them (`bot.logs`), as JSON lines,
and checked as text: whatever the wording of a log line, the data must not be in it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.conferences import ConferenceConfig
from bot.logs import configure_logging
from bot.services.context import ServiceContext
from bot.services.provisioning import provision_grant_voucher
from bot.services.reconciler import reconcile_once
from bot.services.resend import resend_voucher_email
from bot.storage import ConferenceVoucher, Database, create_db_engine
from tests.conftest import TEST_ACTOR, unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import record_voucher, voucher_row

SECRET = "jane.secret@example.org"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 5, 2, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def bot_logs() -> Iterator[io.StringIO]:
    """Everything the bot logs (structlog and stdlib), rendered as in production (JSON)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream)  # the default LOG_LEVEL
    # Loggers cached now would keep this configuration in later tests.
    structlog.configure(cache_logger_on_first_use=False)
    yield stream
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(logs: str) -> list[str]:
    """Each JSON log line as its text, with JSON's \\u escapes of names undone."""
    return [json.dumps(json.loads(line), ensure_ascii=False) for line in logs.splitlines()]


def leaks(logs: str, *secrets: str | None) -> list[str]:
    """The log lines that contain any of `secrets` (case-insensitive)."""
    wanted = [s.lower() for s in secrets if s]
    return [line for line in lines(logs) if any(s in line.lower() for s in wanted)]


# --- Failed statements.


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_failed_statement_does_not_show_its_parameters(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = database_url if backend == "postgres" else f"sqlite:///{tmp_path / 'bot.db'}"
    engine = create_db_engine(url)
    try:
        with pytest.raises(DBAPIError) as failure, engine.connect() as connection:
            connection.execute(
                text("INSERT INTO no_such_table (email) VALUES (:email)"), {"email": SECRET}
            )
    finally:
        engine.dispose()
    assert SECRET not in str(failure.value)
    assert "no_such_table" in str(failure.value)  # the statement is still there to debug


def test_a_logged_unique_violation_does_not_show_the_key(
    db: Database, conference: ConferenceConfig, ctx: ServiceContext, bot_logs: io.StringIO
) -> None:
    # Postgres names the duplicate key's values in the error (DETAIL: Key (...)=(...)).
    email = f"{unique('dup')}@example.org"
    record_voucher(ctx, conference.code, email, type="speaker", code="SPKDUPLICATE77")
    row = voucher_row_by_email(db, email)
    with pytest.raises(IntegrityError) as failure, db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO conference_vouchers (conference_id, email_key, voucher_type, code,"
                " state, attempts, request_generation, email_state, email_attempts,"
                " email_generation, emails_sent, created_at, updated_at) VALUES (:conf, :key,"
                " 'speaker', :code, 'created', 0, 0, 'not_due', 0, 0, 0, now(), now())"
            ),
            {"conf": row.conference_id, "key": email, "code": "SPKDUPLICATE77"},
        )
    structlog.get_logger("bot.test").error("write failed", exc_info=failure.value)

    logs = bot_logs.getvalue()
    assert "write failed" in logs and "IntegrityError" in logs
    assert leaks(logs, "SPKDUPLICATE77", email) == []


def voucher_row_by_email(db: Database, email: str) -> ConferenceVoucher:
    from sqlalchemy import select

    with db.transaction() as session:
        return session.scalars(
            select(ConferenceVoucher).where(ConferenceVoucher.email_key == email.lower())
        ).one()


# --- Realistic flows.


def test_provisioning_flows_log_no_code_email_or_name(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    conference: ConferenceConfig,
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    bot_logs: io.StringIO,
) -> None:
    clock = Clock()
    ctx = make_ctx(clock=clock)
    secrets: list[str | None] = []

    # Created and emailed, after Pretix answered 503 once; then sent again.
    name = f"Giulia {unique('Rossì')}"
    pretix_server.fail_next(503, method="POST")
    created = make_grant(full_name=name)
    outcome = provision_grant_voucher(ctx, grant_id=created, actor=TEST_ACTOR)
    assert outcome.voucher_code and outcome.grant
    resend_voucher_email(ctx, grant_id=created, actor=TEST_ACTOR)
    secrets += [outcome.voucher_code, outcome.grant.email, name]

    # A co-speaker voucher upgraded to a grant voucher.
    email = f"{unique('cospeaker')}@example.org"
    seeded = pretix_server.seed_voucher(code="COSPEAKLOG7GV5", price_mode="percent", value="25")
    record_voucher(
        ctx,
        conference.code,
        email,
        type="co_speaker",
        code="COSPEAKLOG7GV5",
        pretix_voucher_id=seeded["id"],
    )
    upgraded_name = f"Marco {unique('Bianchi')}"
    upgraded = provision_grant_voucher(
        ctx, grant_id=make_grant(email=email, full_name=upgraded_name), actor=TEST_ACTOR
    )
    secrets += [upgraded.voucher_code, email, upgraded_name]

    # The mail server refuses the address (and says it), then the reconciler retries.
    refused_name = f"Anna {unique('Verdi')}"
    refused = make_grant(full_name=refused_name)
    refused_email = voucher_row_email(ctx, refused)
    smtp_server.reject_next(code=451, text=f"4.2.0 <{refused_email}>: greylisted, try later")
    retried = provision_grant_voucher(ctx, grant_id=refused, actor=TEST_ACTOR)
    clock.advance(31)
    reconcile_once(ctx)
    secrets += [retried.voucher_code, refused_email, refused_name]

    # Pretix refuses for good; a revoke-free failure path with the reserved code.
    failing_name = f"Luca {unique('Neri')}"
    pretix_server.fail_next(400, body={"code": ["This voucher code is not allowed."]})
    failing = make_grant(full_name=failing_name)
    failed = provision_grant_voucher(ctx, grant_id=failing, actor=TEST_ACTOR)
    secrets += [voucher_row(ctx.db, failing).code, failed.grant.email if failed.grant else None]
    secrets.append(failing_name)

    logs = bot_logs.getvalue()
    assert "audit" in logs  # the flows did log
    assert leaks(logs, *secrets) == []


def voucher_row_email(ctx: ServiceContext, grant_id: int) -> str:
    from bot.storage import Grant

    with ctx.db.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None and grant.email
        return grant.email


# --- The safety net.


def test_the_log_configuration_masks_sensitive_keys_and_values(bot_logs: io.StringIO) -> None:
    log = structlog.get_logger("bot.test")
    log.info(
        "careless line",
        code="K7QM2XH9TRB3WNAP",
        email="x@example.org",
        full_name="Jane Doe",
        detail="voucher K7QM2XH9TRB3WNAP for x@example.org",
        grant=12,
    )
    logging.getLogger("some.library").warning("sent to %s", "y@example.org")

    logs = bot_logs.getvalue()
    assert leaks(logs, "K7QM2XH9TRB3WNAP", "x@example.org", "Jane Doe", "y@example.org") == []
    text = "\n".join(lines(logs))
    assert "K7QM…" in text  # enough to tell vouchers apart
    assert '"grant": 12' in text and "careless line" in text and "sent to" in text


def test_a_readable_traceback_shows_no_local_variables() -> None:
    # The console renderer's rich tracebacks print every frame's locals (codes, addresses).
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="console", stream=stream)
    structlog.configure(cache_logger_on_first_use=False)
    try:

        def provision(code: str, email: str) -> None:
            raise RuntimeError("Pretix went away")

        try:
            provision("K7QM2XH9TRB3WNAP", "local@example.org")
        except RuntimeError:
            structlog.get_logger("bot.test").exception("provisioning failed")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)

    logs = stream.getvalue()
    assert "Pretix went away" in logs and "provisioning failed" in logs
    assert "K7QM2XH9TRB3WNAP" not in logs and "local@example.org" not in logs


def test_start_up_chatter_of_alembic_and_uvicorn_stays_below_the_default_level() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="console", stream=stream)
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    logging.getLogger("uvicorn.error").info("Waiting for application startup.")
    logging.getLogger("uvicorn.error").warning("a real problem")

    lines = stream.getvalue()
    assert "Context impl" not in lines and "Waiting for application" not in lines
    assert "a real problem" in lines
