"""Run the Alembic migrations from the bot (start-up, CLI and tests share this)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from alembic import command

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at this checkout's `alembic/` folder."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    if url is not None:
        # ConfigParser interpolation treats % specially; URLs may carry encoded passwords.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# Any constant works; it names "the bot's migrations" among Postgres advisory locks.
MIGRATION_LOCK = 0x766F7563686572  # "voucher"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind `engine` up to `revision`."""
    config = alembic_config()
    with engine.begin() as connection:
        _lock_migrations(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database behind `engine` down to `revision` ("base" empties it)."""
    config = alembic_config()
    with engine.begin() as connection:
        _lock_migrations(connection)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _lock_migrations(connection: Connection) -> None:
    # Replicas starting together must not run the same migration twice: the second one
    # waits here, then finds the schema current. (SQLite's BEGIN IMMEDIATE already serialises.)
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision in the migration scripts."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revisions() -> set[str]:
    """Every revision in the migration scripts."""
    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
