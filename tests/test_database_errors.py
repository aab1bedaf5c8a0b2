"""A database that cannot be used is explained in words: not there, or no server at all."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from bot.storage import describe_connection_error
from tests.conftest import unique
from tests.test_cli import run_cli


def connect_error(url: str) -> OperationalError:
    engine = create_engine(url)
    try:
        with pytest.raises(OperationalError) as raised, engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    return raised.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens there once the socket is closed


def missing_database_url(database_url: str) -> str:
    name = unique("no_such_db_").replace("-", "_")
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


def test_a_missing_database_on_a_running_server_is_told_apart(database_url: str) -> None:
    url = missing_database_url(database_url)
    name = make_url(url).database

    message = describe_connection_error(connect_error(url), url)

    assert "not reachable" not in message
    assert f'database "{name}" does not exist' in message
    assert "the server at 127.0.0.1:5432 answers" in message
    assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in message


def test_a_server_that_does_not_answer_is_not_reachable() -> None:
    port = closed_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/anything"

    message = describe_connection_error(connect_error(url), url)

    assert message.startswith(f"Postgres is not reachable at 127.0.0.1:{port} ")
    assert "start it" in message


def test_the_command_line_explains_a_missing_database_without_a_traceback(
    tmp_path: Path, database_url: str, bot_env: dict[str, str]
) -> None:
    url = missing_database_url(database_url)

    migrate = run_cli({**bot_env, "DATABASE_URL": url}, "migrate")
    check = run_cli({**bot_env, "DATABASE_URL": url}, "check")

    assert "Traceback" not in migrate.stderr + check.stderr
    assert migrate.returncode == 2
    assert "does not exist" in migrate.stderr and "createdb" in migrate.stderr
    assert check.returncode == 1
    assert "does not exist" in check.stdout and "createdb" in check.stdout
