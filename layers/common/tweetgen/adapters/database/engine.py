"""Engines for SQLite and MySQL/MariaDB/Aurora MySQL, configured once and reused.

A Lambda container keeps module state between invocations, so engines live in a module-level
cache and their pooled connections survive from one invocation to the next. Pre-ping and
recycling re-open connections that went stale while the container was frozen, Aurora paused
or MySQL's ``wait_timeout`` passed.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import URL, Engine, Table, event, make_url
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

if TYPE_CHECKING:
    from sqlalchemy.dialects import mysql, sqlite

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_QUERY_TIMEOUT_S",
    "POOL_RECYCLE_S",
    "SQLITE_BEGIN_OPTION",
    "Credentials",
    "create_engine",
    "dispose_engines",
    "has_transaction_control",
    "is_mysql",
    "is_unreachable",
    "mysql_insert",
    "normalise_url",
    "shared_engine",
    "sqlite_insert",
]

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
# How long MySQL may take to answer (its greeting, each statement): a server that accepts the
# connection and then says nothing fails the call instead of holding it until Lambda's timeout.
DEFAULT_QUERY_TIMEOUT_S = 60.0
DEFAULT_BUSY_TIMEOUT_S = 15.0
# Under the idle timeouts that silently drop TCP connections (350 s on AWS NAT and load balancers).
POOL_RECYCLE_S = 280
# Execution option: how a SQLite transaction begins; "IMMEDIATE" takes the write lock up front.
SQLITE_BEGIN_OPTION = "tweetgen_sqlite_begin"
# MySQL's "access denied": the password may just have been rotated.
_ACCESS_DENIED = 1045

# (force_refresh) -> (username, password); read for every new connection, so rotations apply.
Credentials = Callable[[bool], tuple[str, str]]

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def is_mysql(dialect: Dialect) -> bool:
    """MySQL, MariaDB and Aurora MySQL share one dialect family and one SQL flavour here."""
    return dialect.name in ("mysql", "mariadb")


# The dialects' own INSERTs (upserts) are imported on first use, like the dialect of an
# engine: importing SQLAlchemy's MySQL dialect loads every MySQL driver's module, and a
# function on Aurora never needs SQLite's. Neither is a cold-start cost of a handler.
def mysql_insert(table: Table) -> mysql.Insert:
    """``INSERT ... ON DUPLICATE KEY UPDATE`` for MySQL, MariaDB and Aurora MySQL."""
    from sqlalchemy.dialects.mysql import insert

    return insert(table)


def sqlite_insert(table: Table) -> sqlite.Insert:
    """``INSERT ... ON CONFLICT`` for SQLite."""
    from sqlalchemy.dialects.sqlite import insert

    return insert(table)


# MySQL error codes that say the server could not be reached or let the connection go: too
# many connections, shutting down, connection killed, no socket, no route or refused, gone
# away, lost during a query, lost while reading, idle too long. A client may try again; any
# other error (a missing column, say) is a fault to report, not to retry.
_UNREACHABLE_MYSQL_CODES = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031})
# SQLite's (the local stack's) words for a database it cannot use now.
_UNREACHABLE_SQLITE = ("database is locked", "unable to open database file")


def is_unreachable(error: BaseException) -> bool:
    """Whether a database error means the database cannot be reached now (try again later),
    rather than that a statement is wrong."""
    if getattr(error, "connection_invalidated", False):
        return True
    original = getattr(error, "orig", error)
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _UNREACHABLE_MYSQL_CODES
    # SQLite's module is loaded only where an engine uses it (not in a function on Aurora).
    sqlite3 = sys.modules.get("sqlite3")
    message = str(original)
    return (
        sqlite3 is not None
        and isinstance(original, sqlite3.OperationalError)
        and any(words in message for words in _UNREACHABLE_SQLITE)
    )


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL; MySQL URLs get the PyMySQL driver and utf8mb4 when they lack them."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        if "+" not in parsed.drivername:
            parsed = parsed.set(drivername=f"{backend}+pymysql")
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        return parsed
    if backend == "sqlite":
        return parsed
    raise ValueError(
        f"unsupported database URL {parsed!r}: use sqlite:///PATH or "
        "mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
    )


def create_engine(
    url: str | URL,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    query_timeout_s: float = DEFAULT_QUERY_TIMEOUT_S,
    credentials: Credentials | None = None,
) -> Engine:
    """A new engine set up for this project; most callers want :func:`shared_engine`."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_s)
    return _mysql_engine(parsed, connect_timeout_s, query_timeout_s, credentials)


def shared_engine(
    url: str | URL,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    query_timeout_s: float = DEFAULT_QUERY_TIMEOUT_S,
    credentials: Credentials | None = None,
    cache_key: str | None = None,
) -> Engine:
    """The process's engine for ``url``, created on first use.

    ``cache_key`` replaces the URL as the key when the password comes from ``credentials``
    and may change under a live engine.
    """
    parsed = normalise_url(url)
    key = "|".join(
        (
            cache_key or parsed.render_as_string(hide_password=False),
            str(connect_timeout_s),
            str(busy_timeout_s),
            str(query_timeout_s),
        )
    )
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(
                parsed,
                connect_timeout_s=connect_timeout_s,
                busy_timeout_s=busy_timeout_s,
                query_timeout_s=query_timeout_s,
                credentials=credentials,
            )
            _engines[key] = engine
            logger.info("database engine created", extra={"database_url": repr(parsed)})
        return engine


def dispose_engines() -> None:
    """Close every cached engine's connections and forget the engines (tests, shutdown)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


def _mysql_engine(
    url: URL, connect_timeout_s: float, query_timeout_s: float, credentials: Credentials | None
) -> Engine:
    # Imported here: the driver's tracing is only wanted (and Powertools only needed) for MySQL.
    from ..tracing import trace_database_driver

    trace_database_driver(url.get_driver_name())  # before the driver's first connection
    engine = sqlalchemy.create_engine(
        url,
        pool_pre_ping=True,
        pool_recycle=POOL_RECYCLE_S,
        # Statement parameters hold users' prompts and texts: keep them out of error messages.
        hide_parameters=True,
        connect_args={
            "connect_timeout": connect_timeout_s,
            # PyMySQL waits for the server's greeting and every answer with these (no limit by
            # default): a stalled server is then "lost connection" (2013), an outage (503).
            "read_timeout": query_timeout_s,
            "write_timeout": query_timeout_s,
            # NOW() and friends agree with the UTC values the application writes.
            "init_command": "SET time_zone = '+00:00'",
        },
    )
    if credentials is not None:
        _connect_with(engine, credentials)
    return engine


def _connect_with(engine: Engine, credentials: Credentials) -> None:
    """Fetch the username and password for each new connection, retrying once when denied."""

    @event.listens_for(engine, "do_connect")
    def _connect(
        dialect: Dialect, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        dbapi = dialect.loaded_dbapi
        cparams["user"], cparams["password"] = credentials(False)
        try:
            return dbapi.connect(*cargs, **cparams)
        except dbapi.OperationalError as error:
            if not error.args or error.args[0] != _ACCESS_DENIED:
                raise
        logger.info("database access denied; fetching the credentials again")
        cparams["user"], cparams["password"] = credentials(True)
        return dbapi.connect(*cargs, **cparams)


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "connect_args": {"timeout": busy_timeout_s, "check_same_thread": False},
    }
    if in_memory:
        # One connection, lent to one thread at a time: a second connection would open a
        # second, empty database.
        options.update(
            poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=busy_timeout_s
        )
    elif not url.query.get("uri"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # SQLAlchemy emits BEGIN itself (below): DDL is transactional and the lock mode is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            _enable_wal(cursor, busy_timeout_s)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            _ensure_math_functions(dbapi_connection, cursor)
        finally:
            cursor.close()

    event.listen(engine, "begin", _begin_sqlite)
    return engine


def _ln(x: float | None) -> float | None:
    """SQLite's LN: NULL for NULL and for numbers without a logarithm."""
    return math.log(x) if x is not None and x > 0 else None


def _floor(x: float | None) -> int | None:
    return None if x is None else math.floor(x)


# The SQL math functions the aggregation calls (the latency histogram's bins).
_MATH_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"LN": _ln, "FLOOR": _floor}


def _ensure_math_functions(dbapi_connection: Any, cursor: Any) -> None:
    """Give the connection LN and FLOOR where its SQLite lacks them.

    Python's sqlite3 usually links a SQLite built with its math functions, but not every
    build has them (older system libraries), and a process that loaded TensorFlow first gets
    TensorFlow's own SQLite, which lacks them: its symbols take precedence. The built-in
    functions are kept where they exist (they are faster than a Python callback).
    """
    import sqlite3

    try:
        cursor.execute("SELECT LN(1)")
    except sqlite3.OperationalError:
        # A SQLite without its math functions: FLOOR too (SQLAlchemy may have given it one
        # that fails on NULL).
        for name, function in _MATH_FUNCTIONS.items():
            dbapi_connection.create_function(name, 1, function, deterministic=True)


def _enable_wal(cursor: Any, busy_timeout_s: float) -> None:
    """WAL lets readers and one writer work at once across the local stack's processes.

    A new, still empty file records no journal mode, and switching it needs a lock that SQLite
    does not wait for; so wait here while another connection holds it (its commit writes the
    WAL header, after which the switch is a no-op).
    """
    import sqlite3

    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _begin_sqlite(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(
            f"{SQLITE_BEGIN_OPTION} must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}"
        )
    connection.exec_driver_sql(f"BEGIN {mode}")


def has_transaction_control(engine: Engine) -> bool:
    """Whether ``engine`` was made here: only then do SQLite transactions cover DDL and lock."""
    return engine.dialect.name != "sqlite" or event.contains(engine, "begin", _begin_sqlite)
