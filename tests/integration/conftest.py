"""Fixtures of the integration tests: real MySQL/MariaDB databases made per session.

``TWEETGEN_TEST_MYSQL_URL`` names a server and an account that may create databases and users
(default ``mysql+pymysql://root@127.0.0.1:3306/test``). Without a reachable server the MySQL
tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from tweetgen.adapters.database import dispose_engines, normalise_url

URLFactory = Callable[[], str]

ADMIN_URL = normalise_url(
    os.environ.get("TWEETGEN_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
)


@pytest.fixture(scope="session")
def mysql_admin() -> Iterator[Engine]:
    engine = sqlalchemy.create_engine(
        ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        engine.dispose()
        reason = (
            f"no MySQL/MariaDB reachable at {ADMIN_URL!r} ({error.orig}); "
            "start one or set TWEETGEN_TEST_MYSQL_URL"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. CI=true: the MySQL tests must run")
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_databases(mysql_admin: Engine) -> Iterator[URLFactory]:
    """Makes empty databases ``tweetgen_test_<random>_<n>``; drops them all at the end."""
    prefix = f"tweetgen_test_{uuid.uuid4().hex[:8]}"
    created: list[str] = []

    def new() -> str:
        name = f"{prefix}_{len(created)}"
        with mysql_admin.connect() as connection:
            # A latin1 default shows that the tables carry their own utf8mb4 character set.
            connection.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET latin1")
        created.append(name)
        return ADMIN_URL.set(database=name).render_as_string(hide_password=False)

    yield new
    dispose_engines()
    with mysql_admin.connect() as connection:
        for name in created:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
