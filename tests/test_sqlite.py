"""The embedded SQLite default runs the same provisioning rules (one process, several threads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot import migrations
from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.services.intake import ingest_grant
from bot.services.notifications import GrantPayload
from bot.services.outcomes import ProvisionResult
from bot.services.provisioning import provision_grant_voucher, provision_many
from bot.storage import Database
from tests.conftest import TEST_ACTOR
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import seed_co_speaker


@pytest.fixture
def sqlite_ctx(tmp_path: Path, make_ctx: Callable[..., ServiceContext]) -> Iterator[ServiceContext]:
    db = Database.from_url(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    migrations.upgrade(db.engine)
    yield make_ctx(db=db)
    db.dispose()


def test_provisioning_on_sqlite(
    sqlite_ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    intake = ingest_grant(sqlite_ctx, payload=grant_payload(), actor=TEST_ACTOR)
    assert intake.grant is not None and intake.provision
    grant_id = intake.grant.id

    with ThreadPoolExecutor(max_workers=5) as pool:
        outcomes = list(
            pool.map(
                lambda _: provision_grant_voucher(sqlite_ctx, grant_id=grant_id, actor=TEST_ACTOR),
                range(5),
            )
        )

    assert [o.result for o in outcomes].count(ProvisionResult.CREATED) == 1
    assert len(pretix_server.all_vouchers()) == 1
    assert len(smtp_server.messages) == 1
    again = provision_grant_voucher(sqlite_ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert again.result is ProvisionResult.ALREADY_GRANT


def test_a_batch_of_new_grantees_on_sqlite(
    sqlite_ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    ids = []
    for _ in range(12):
        intake = ingest_grant(sqlite_ctx, payload=grant_payload(), actor=TEST_ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)

    outcomes = provision_many(sqlite_ctx, grant_ids=ids, actor=TEST_ACTOR, workers=4)

    assert {o.result for o in outcomes} == {ProvisionResult.CREATED}
    assert pretix_server.count("POST", "/batch_create/") == 1
    assert len(pretix_server.all_vouchers()) == 12
    assert len(smtp_server.wait_for(12)) == 12


def test_many_co_speaker_upgrades_on_sqlite(
    sqlite_ctx: ServiceContext,
    grant_payload: Callable[..., GrantPayload],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
    conference: ConferenceConfig,
) -> None:
    ids, seeded = [], []
    for n in range(3):
        voucher, email = seed_co_speaker(sqlite_ctx, pretix_server, conference.code, f"COSQL{n}")
        intake = ingest_grant(sqlite_ctx, payload=grant_payload(email=email), actor=TEST_ACTOR)
        assert intake.grant is not None
        ids.append(intake.grant.id)
        seeded.append(voucher)

    outcomes = provision_many(sqlite_ctx, grant_ids=ids, actor=TEST_ACTOR, workers=4)

    assert {o.result for o in outcomes} == {ProvisionResult.UPGRADED}
    assert pretix_server.count("PATCH") == 3
    assert {(pretix_server.voucher(v["id"]) or {}).get("tag") for v in seeded} == {"grant"}
    assert len(smtp_server.wait_for(3)) == 3


def test_a_connection_opened_while_another_writes_waits_instead_of_failing(tmp_path: Path) -> None:
    # Switching a fresh file to WAL needs the write lock and SQLite's busy timeout does not
    # apply to that pragma: replicas starting together failed with "database is locked".
    import sqlite3
    import threading

    from sqlalchemy import text

    from bot.storage import create_db_engine

    path = tmp_path / "bot.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    release.start()
    engine = create_db_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            mode = connection.execute(text("PRAGMA journal_mode")).scalar_one()
            assert mode == "wal"
            assert connection.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        release.join()
        engine.dispose()
        writer.close()


def test_a_connection_lent_in_autocommit_comes_back_with_explicit_transactions(
    tmp_path: Path,
) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'bot.db'}")
    with db.autocommit() as held:
        held.connection().exec_driver_sql("SELECT 1")
    with db.engine.connect() as connection:
        # pysqlite's own implicit BEGIN stays off: SQLAlchemy's BEGIN IMMEDIATE is the one.
        assert connection.connection.dbapi_connection.isolation_level is None  # type: ignore[union-attr]
    db.dispose()
