"""The database adapter on a real MySQL/MariaDB, the stand-in for Aurora MySQL 3.

The shared :class:`DatabaseContract` runs on a database created for this test session (and
dropped at its end); MySQL-only behaviours follow: the migration lock, stale connections,
credentials from Secrets Manager that rotate.

The server comes from ``tests/integration/conftest.py`` (``TWEETGEN_TEST_MYSQL_URL``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import sqlalchemy
from moto import mock_aws
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from tweetgen.adapters.database import (
    MIGRATIONS,
    Database,
    Migration,
    MigrationLockTimeout,
    applied_versions,
    create_engine,
    dispose_engines,
    is_unreachable,
    migrate,
    schema,
)
from tweetgen.adapters.database.migrations import schema_lock_name

from tests.integration.conftest import ADMIN_URL, URLFactory
from tests.unit.test_database import DatabaseContract, record_generation
from tests.unit.test_handler_imports import unreachable_database_url

pytestmark = pytest.mark.mysql


@pytest.fixture(scope="session")
def session_url(mysql_databases: URLFactory) -> str:
    url = mysql_databases()
    assert Database.from_url(url).migrate() == [m.version for m in MIGRATIONS]
    return url


@pytest.fixture
def db(session_url: str) -> Database:
    return Database.from_url(session_url)


@pytest.fixture
def new_url(mysql_databases: URLFactory) -> URLFactory:
    return mysql_databases


class TestMysql(DatabaseContract):
    """The contract on MySQL/MariaDB."""


def connection_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def kill(admin: Engine, victim: int) -> None:
    """Kill a session server-side, as a paused Aurora or an expired ``wait_timeout`` would."""
    with admin.connect() as connection:
        connection.execute(text(f"KILL {victim:d}"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            alive = connection.execute(
                text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id"),
                {"id": victim},
            ).scalar_one()
            if not alive:
                return
            time.sleep(0.05)
    raise AssertionError(f"session {victim} survived KILL")


def test_a_connection_killed_server_side_is_replaced(mysql_admin: Engine, session_url: str) -> None:
    engine = create_engine(session_url)
    try:
        db = Database(engine)
        victim = connection_id(engine)
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        kill(mysql_admin, victim)
        # The pooled connection is dead; pre-ping notices and the call runs on a new one.
        generation_id = f"stale-{uuid.uuid4().hex}"
        assert record_generation(db, generation_id) is True
        assert db.generations.get(generation_id) is not None
        assert connection_id(engine) != victim
    finally:
        engine.dispose()


def test_without_pre_ping_a_killed_connection_fails(mysql_admin: Engine, session_url: str) -> None:
    """The control for the test above: the kill really breaks a pooled connection."""
    engine = sqlalchemy.create_engine(session_url, pool_pre_ping=False)
    try:
        kill(mysql_admin, connection_id(engine))
        with pytest.raises(OperationalError), engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_tables_are_innodb_utf8mb4_binary(db: Database) -> None:
    with db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE()"
            )
        ).all()
    assert {name for name, _, _ in rows} == {*schema.metadata.tables, "schema_migrations"}
    assert {(engine, collation) for _, engine, collation in rows} == {("InnoDB", "utf8mb4_bin")}


def test_a_migrator_gives_up_after_the_lock_timeout(
    mysql_admin: Engine, new_url: URLFactory
) -> None:
    url = new_url()
    engine = create_engine(url)
    lock = schema_lock_name(str(sqlalchemy.make_url(url).database))
    try:
        with mysql_admin.connect() as holder:
            assert holder.execute(text("SELECT GET_LOCK(:l, 0)"), {"l": lock}).scalar() == 1
            started = time.monotonic()
            with pytest.raises(MigrationLockTimeout, match="wait for it to finish"):
                migrate(engine, lock_timeout_s=1)
            assert time.monotonic() - started >= 0.9
            holder.execute(text("SELECT RELEASE_LOCK(:l)"), {"l": lock})
        assert migrate(engine, lock_timeout_s=1) == [m.version for m in MIGRATIONS]
    finally:
        engine.dispose()


def test_a_failing_step_keeps_the_steps_before_it_and_frees_the_lock(new_url: URLFactory) -> None:
    """MySQL commits DDL as it goes: what was applied stays recorded; the rest runs next time."""

    def create(connection: Any) -> None:
        connection.execute(text("CREATE TABLE first_step (id INTEGER PRIMARY KEY)"))

    def fail(connection: Any) -> None:
        raise RuntimeError("step 2 broke")

    def fixed(connection: Any) -> None:
        connection.execute(text("CREATE TABLE second_step (id INTEGER PRIMARY KEY)"))

    engine = create_engine(new_url())
    try:
        with pytest.raises(RuntimeError, match="step 2 broke"):
            migrate(engine, (Migration(1, "first", create), Migration(2, "second", fail)))
        assert applied_versions(engine) == [1]
        steps = (Migration(1, "first", create), Migration(2, "second", fixed))
        assert migrate(engine, steps, lock_timeout_s=1) == [2]
    finally:
        engine.dispose()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from aws_lambda_powertools.utilities import parameters

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")
    parameters.clear_caches()


def test_credentials_come_from_the_secret_and_follow_its_rotation(
    mysql_admin: Engine, session_url: str, secrets: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An RDS-managed secret (username and password only) plus host and name from the
    environment; after a rotation, new connections log in with the new password."""
    database = sqlalchemy.make_url(session_url).database
    user = f"tg_{uuid.uuid4().hex[:10]}"
    first, second = f"first-{uuid.uuid4().hex}", f"second:@/{uuid.uuid4().hex}"
    with mysql_admin.connect() as admin:
        admin.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": first})
        admin.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    try:
        arn = secrets.create_secret(
            Name=f"rds!cluster-{user}",
            SecretString=json.dumps({"username": user, "password": first}),
        )["ARN"]
        env = {
            "DATABASE_SECRET_ARN": arn,
            "DATABASE_HOST": ADMIN_URL.host or "127.0.0.1",
            "DATABASE_PORT": str(ADMIN_URL.port or 3306),
            "DATABASE_NAME": str(database),
        }
        db = Database.from_environment(env)
        assert db.url.username == user and first not in repr(db)
        generation_id = f"secret-{uuid.uuid4().hex}"
        assert record_generation(db, generation_id)

        with mysql_admin.connect() as admin:
            admin.execute(text(f"ALTER USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": second})
        secrets.put_secret_value(
            SecretId=arn, SecretString=json.dumps({"username": user, "password": second})
        )
        db.engine.dispose()  # the pooled sessions end, as they would after a pause
        # The cached secret is stale: the login is denied once, the secret is read again.
        caplog.set_level("INFO", logger="tweetgen")
        assert db.generations.get(generation_id) is not None
        assert "access denied" in caplog.text
        for secret in (first, second):
            assert secret not in caplog.text
        assert Database.from_environment(env).engine is db.engine
    finally:
        dispose_engines()
        with mysql_admin.connect() as admin:
            admin.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))


def test_only_errors_of_reaching_the_server_count_as_unreachable(session_url: str) -> None:
    db = Database.from_url(session_url)
    # MySQL 1054 (unknown column), raised as an OperationalError too.
    with pytest.raises(OperationalError) as wrong, db.engine.connect() as connection:
        connection.execute(text("SELECT no_such_column FROM schema_migrations"))
    assert not is_unreachable(wrong.value)
    down = Database.from_url(unreachable_database_url())
    with pytest.raises(OperationalError) as refused:
        down.generations.get("any")
    assert is_unreachable(refused.value)
