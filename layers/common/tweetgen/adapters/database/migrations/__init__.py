"""Versioned schema migrations, applied the same way by the deploy-time function, locally and in tests.

Each step has a version number and a name and is recorded in ``schema_migrations`` once
applied. :func:`migrate` applies the missing steps in order and is safe to run from two places
at once: on MySQL a named lock (``GET_LOCK``) lets one migrator work while the other waits; on
SQLite the whole run is one ``BEGIN IMMEDIATE`` transaction, which also makes it atomic.
MySQL commits every DDL statement by itself, so a step there must be safe to re-run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, select, text

from ..columns import MYSQL_TABLE_OPTIONS, UTCDateTime
from ..engine import SQLITE_BEGIN_OPTION, has_transaction_control, is_mysql
from . import v0001_initial, v0002_experiment, v0003_latest_feedback

__all__ = [
    "MIGRATIONS",
    "Migration",
    "MigrationLockTimeout",
    "applied_versions",
    "migrate",
    "schema_lock_name",
    "schema_migrations",
]

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``upgrade`` runs on a connection inside the migrator's lock."""

    version: int
    name: str
    upgrade: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(v0001_initial.VERSION, v0001_initial.NAME, v0001_initial.upgrade),
    Migration(v0002_experiment.VERSION, v0002_experiment.NAME, v0002_experiment.upgrade),
    Migration(
        v0003_latest_feedback.VERSION, v0003_latest_feedback.NAME, v0003_latest_feedback.upgrade
    ),
)

# Bookkeeping of the migrations themselves; its shape never changes, so no step creates it.
schema_migrations = Table(
    "schema_migrations",
    MetaData(),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
    **MYSQL_TABLE_OPTIONS,
)


class MigrationLockTimeout(RuntimeError):
    """Another migrator held the schema lock for longer than we were willing to wait."""


def migrate(
    engine: Engine,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    lock_timeout_s: int = DEFAULT_LOCK_TIMEOUT_S,
) -> list[int]:
    """Apply the steps the database lacks, in order; return the versions applied (maybe none).

    ``lock_timeout_s`` bounds the wait for another MySQL migrator; on SQLite the wait is the
    engine's busy timeout.
    """
    _check_order(migrations)
    if not has_transaction_control(engine):
        raise ValueError(
            "migrate() needs an engine from tweetgen.adapters.database (create_engine or "
            "Database.from_url), which makes SQLite migrations one locked transaction"
        )
    if is_mysql(engine.dialect):
        return _migrate_mysql(engine, migrations, lock_timeout_s)
    return _migrate_sqlite(engine, migrations)


def applied_versions(engine: Engine) -> list[int]:
    """The versions recorded in ``schema_migrations``, ascending; empty for a new database."""
    with engine.connect() as connection:
        return _applied(connection)


def schema_lock_name(database: str) -> str:
    """The MySQL named lock of ``database``'s migrations (``IS_USED_LOCK`` shows its holder).

    One lock per database, so databases on one server migrate independently; hashed because
    lock names are limited to 64 characters.
    """
    return f"tweetgen-migrate-{hashlib.sha256(database.encode()).hexdigest()[:40]}"


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [migration.version for migration in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be unique and ascending, got {versions}")


def _applied(connection: Connection) -> list[int]:
    if not connection.dialect.has_table(connection, schema_migrations.name):
        return []
    rows = connection.execute(select(schema_migrations.c.version).order_by("version"))
    return [int(version) for version in rows.scalars()]


def _apply_pending(connection: Connection, migrations: Sequence[Migration]) -> list[int]:
    """Apply what is missing; the caller holds the lock and decides when to commit."""
    schema_migrations.create(connection, checkfirst=True)
    done = set(_applied(connection))
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        logger.info(
            "applying schema migration",
            extra={"version": migration.version, "migration": migration.name},
        )
        migration.upgrade(connection)
        connection.execute(
            schema_migrations.insert().values(
                version=migration.version, name=migration.name, applied_at=datetime.now(UTC)
            )
        )
        if is_mysql(connection.dialect):
            connection.commit()
        applied.append(migration.version)
    return applied


def _migrate_sqlite(engine: Engine, migrations: Sequence[Migration]) -> list[int]:
    with engine.connect() as connection:
        # The write lock up front: a second migrator waits (busy timeout) and then finds the
        # steps recorded; a failing step rolls back with everything before it.
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with connection.begin():
            return _apply_pending(connection, migrations)


def _migrate_mysql(
    engine: Engine, migrations: Sequence[Migration], lock_timeout_s: int
) -> list[int]:
    with engine.connect() as connection:
        database = str(connection.execute(text("SELECT DATABASE()")).scalar_one())
        lock = schema_lock_name(database)
        got = connection.execute(
            text("SELECT GET_LOCK(:lock, :timeout)"), {"lock": lock, "timeout": lock_timeout_s}
        ).scalar()
        connection.commit()
        if got != 1:
            raise MigrationLockTimeout(
                f"another migrator has held the schema lock of database {database!r} for over "
                f"{lock_timeout_s} s; wait for it to finish (or end its session) and run again"
            )
        try:
            applied = _apply_pending(connection, migrations)
            connection.commit()
            return applied
        finally:
            connection.rollback()
            connection.execute(text("SELECT RELEASE_LOCK(:lock)"), {"lock": lock})
            connection.commit()
