"""Portable column types shared by the schema and the migrations.

Migrations render these types into DDL, so changing one changes what a fresh database gets:
add a migration instead of editing them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Double
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["MYSQL_TABLE_OPTIONS", "Json", "Real", "UTCDateTime"]

# utf8mb4 keeps emoji in tweets; a binary collation makes ids and keys match exactly on MySQL as
# on SQLite, and it exists on MySQL 8 (Aurora 3) and MariaDB alike.
MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

# Python None stays SQL NULL instead of the JSON text 'null'.
Json = JSON(none_as_null=True)

# sqlalchemy.Float is a 4-byte FLOAT on MySQL; sums of rewards need doubles everywhere.
Real: Double[float] = Double()


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: aware datetimes in, aware UTC datetimes out, naive UTC in the column.

    Neither MySQL's DATETIME nor SQLite keep a zone, so the zone is fixed by convention (UTC)
    and naive values are refused rather than guessed at.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            # The dialect's module is loaded by now: this engine uses it.
            from sqlalchemy.dialects.mysql import DATETIME

            # Microseconds: DATETIME alone truncates to whole seconds.
            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()}: pass an aware datetime "
                "(e.g. datetime.now(UTC)); the database stores UTC"
            )
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
