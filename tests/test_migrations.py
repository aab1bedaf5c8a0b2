"""Every migration goes up and down cleanly, and the models never drift from the migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from bot import migrations
from bot.storage import Base, create_db_engine


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A brand-new empty database of each kind the bot supports."""
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
        yield engine
        engine.dispose()
        return
    url = make_url(request.getfixturevalue("database_url"))
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_db_engine(url.set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(migrations.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def drift(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_one_head() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert len(script.get_heads()) == 1


def test_upgrade_downgrade_upgrade(empty_engine: Engine) -> None:
    migrations.upgrade(empty_engine)
    assert migrations.current_revision(empty_engine) == migrations.head_revision()
    assert set(Base.metadata.tables) <= set(inspect(empty_engine).get_table_names())

    migrations.downgrade(empty_engine, "base")
    assert migrations.current_revision(empty_engine) is None
    assert inspect(empty_engine).get_table_names() == ["alembic_version"]

    migrations.upgrade(empty_engine)
    assert migrations.current_revision(empty_engine) == migrations.head_revision()
    assert drift(empty_engine) == []


def test_each_revision_steps_down_and_up_again(empty_engine: Engine) -> None:
    chain = revisions()
    for revision in chain:
        migrations.upgrade(empty_engine, revision)
    for previous in [*reversed(chain[:-1]), "base"]:
        migrations.downgrade(empty_engine, previous)
        assert migrations.current_revision(empty_engine) == (
            None if previous == "base" else previous
        )
    migrations.upgrade(empty_engine)
    assert drift(empty_engine) == []


def test_models_match_the_migrations(empty_engine: Engine) -> None:
    migrations.upgrade(empty_engine)
    assert drift(empty_engine) == [], "run alembic revision --autogenerate for the model change"


def test_drift_is_detected(empty_engine: Engine) -> None:
    migrations.upgrade(empty_engine)
    with empty_engine.begin() as connection:
        connection.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
    assert any("stray" in str(change) for change in drift(empty_engine))


def test_replicas_starting_together_migrate_once(empty_engine: Engine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = empty_engine.url.render_as_string(hide_password=False)
    engines = [create_db_engine(url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(migrations.upgrade, engines))  # raises if two ran the same step
    finally:
        for engine in engines:
            engine.dispose()
    assert migrations.current_revision(empty_engine) == migrations.head_revision()
    assert drift(empty_engine) == []
