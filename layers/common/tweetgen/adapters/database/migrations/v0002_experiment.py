"""Migration 2: what the experiment engine reads and writes.

- ``generation_failures``: requests that the endpoint failed (the generate function queues a
  ``generation_failed`` event for each), so the aggregation can compute error rates.
- ``feedback.variant`` and ``feedback.generation_created_at``: the variant and creation time of
  the feedback's generation, filled in by whichever write finds both recorded (the feedback's
  or the generation's; the aggregation repairs the rare pair that raced). The aggregation then
  counts feedback in its generation's bucket without joining a million generations.
- ``decisions``: whether the weights changed, the winner, whether decisions were frozen, the
  sequential-test state for the next run, the weights in force and what applying came to.
- Covering indexes for the aggregation; the first schema's indexes that they extend (same
  leading columns) are dropped, so the recorder maintains no more indexes than before per
  table but the new table.

``define`` adds all of this to a ``MetaData`` that already holds migration 1's tables, which
is how :mod:`..schema` describes the migrated database.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.schema import CreateColumn

from ..columns import MYSQL_TABLE_OPTIONS, Json, UTCDateTime
from . import v0001_initial
from .v0001_initial import EVENT_ID, VARIANT

VERSION = 2
NAME = "experiment engine"

# (table, column) pairs this migration adds to the first schema's tables.
_ADDED_COLUMNS = (
    ("feedback", "variant"),
    ("feedback", "generation_created_at"),
    ("decisions", "changed"),
    ("decisions", "winner"),
    ("decisions", "frozen"),
    ("decisions", "sequential_state"),
    ("decisions", "weights_before"),
    ("decisions", "outcome"),
)
# (table, index) of the first schema that a covering index below replaces.
_DROPPED_INDEXES = (
    ("generations", "ix_generations_variant_created_at"),
    ("generations", "ix_generations_recorded_at"),
    ("feedback", "ix_feedback_recorded_at"),
)
_ADDED_INDEXES = (
    "ix_generations_aggregation",
    "ix_generations_recorded_at_bucket",
    "ix_feedback_aggregation",
    "ix_feedback_recorded_at_bucket",
)


def define(metadata: MetaData) -> None:
    """Add this migration's changes to ``metadata`` (which holds migration 1's tables)."""
    Table(
        "generation_failures",
        metadata,
        Column("id", String(EVENT_ID), primary_key=True),
        Column("variant", String(VARIANT), nullable=False),
        Column("reason", Text, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("recorded_at", UTCDateTime(), nullable=False),
        Column("deliveries", Integer, nullable=False, default=1),
        Index("ix_generation_failures_variant_created_at", "variant", "created_at"),
        Index("ix_generation_failures_recorded_at_bucket", "recorded_at", "variant", "created_at"),
        **MYSQL_TABLE_OPTIONS,
    )
    feedback = metadata.tables["feedback"]
    # Null until both the feedback and its generation are recorded.
    feedback.append_column(Column("variant", String(VARIANT), nullable=True))
    feedback.append_column(Column("generation_created_at", UTCDateTime(), nullable=True))
    decisions = metadata.tables["decisions"]
    decisions.append_column(
        Column("changed", Boolean, nullable=False, default=False, server_default=text("0"))
    )
    decisions.append_column(Column("winner", String(VARIANT), nullable=True))
    decisions.append_column(
        Column("frozen", Boolean, nullable=False, default=False, server_default=text("0"))
    )
    decisions.append_column(Column("sequential_state", Json, nullable=True))
    decisions.append_column(Column("weights_before", Json, nullable=True))
    decisions.append_column(Column("outcome", Text, nullable=True))

    generations = metadata.tables["generations"]
    for table, name in _DROPPED_INDEXES:
        target = metadata.tables[table]
        for index in list(target.indexes):
            if index.name == name:
                target.indexes.discard(index)
    # Everything the aggregation reads of a bucket, without touching the wide rows.
    Index(
        "ix_generations_aggregation",
        generations.c.variant,
        generations.c.created_at,
        generations.c.latency_ms,
    )
    # What arrived since the watermark, and which buckets it falls in.
    Index(
        "ix_generations_recorded_at_bucket",
        generations.c.recorded_at,
        generations.c.variant,
        generations.c.created_at,
    )
    Index(
        "ix_feedback_aggregation",
        feedback.c.variant,
        feedback.c.generation_created_at,
        feedback.c.reward,
    )
    Index(
        "ix_feedback_recorded_at_bucket",
        feedback.c.recorded_at,
        feedback.c.variant,
        feedback.c.generation_created_at,
    )


def upgrade(connection: Connection) -> None:
    """Apply what is missing; every step checks first, so a run cut short on MySQL re-runs."""
    before = MetaData()
    v0001_initial.define(before)
    after = MetaData()
    v0001_initial.define(after)
    define(after)
    inspector = inspect(connection)
    failures = after.tables["generation_failures"]
    failures.create(connection, checkfirst=True)
    for index in failures.indexes:
        index.create(connection, checkfirst=True)
    dialect = connection.dialect
    for table_name, column_name in _ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table_name)}
        if column_name in present:
            continue
        spec = CreateColumn(after.tables[table_name].c[column_name]).compile(dialect=dialect)
        connection.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {spec}"))
    # The covering indexes first: queries keep an index while the ones they extend go.
    for table in after.sorted_tables:
        for index in table.indexes:
            if index.name in _ADDED_INDEXES:
                index.create(connection, checkfirst=True)
    for table_name, index_name in _DROPPED_INDEXES:
        present_indexes = {i["name"] for i in inspector.get_indexes(table_name)}
        if index_name not in present_indexes:
            continue
        for index in before.tables[table_name].indexes:
            if index.name == index_name:
                index.drop(connection)
