"""Migration 1: every table of the first schema, with the indexes the aggregation needs.

``define`` is also how :mod:`..schema` builds the tables the queries use, so the first schema is
written once. Later migrations change the database and extend ``schema`` to match; they never
edit this file.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from ..columns import MYSQL_TABLE_OPTIONS, Json, Real, UTCDateTime

VERSION = 1
NAME = "initial schema"

# Lengths: SageMaker variant names and artifact versions are at most 63 characters; a Step
# Functions execution ARN is at most about 230; message ids and idempotency keys fit 128.
VARIANT = 64
VERSION_LENGTH = 64
EXECUTION_ID = 256
EVENT_ID = 128


def define(metadata: MetaData) -> None:
    """Add the first schema's tables to ``metadata``."""
    Table(
        "model_versions",
        metadata,
        Column("variant", String(VARIANT), primary_key=True),
        Column("version", String(VERSION_LENGTH), primary_key=True),
        Column("kind", String(32), nullable=False),
        Column("s3_uri", String(1024), nullable=False),
        Column("metadata", Json, nullable=False),
        Column("offline_metrics", Json, nullable=False),
        # When the artifact was built, and when it was last recorded as put into service.
        Column("created_at", UTCDateTime(), nullable=False),
        Column("registered_at", UTCDateTime(), nullable=False),
        Index("ix_model_versions_variant_registered_at", "variant", "registered_at"),
        **MYSQL_TABLE_OPTIONS,
    )
    Table(
        "rollouts",
        metadata,
        Column("id", String(EXECUTION_ID), primary_key=True),
        # Unknown for an upload whose key does not name a variant and version.
        Column("variant", String(VARIANT), nullable=True),
        Column("version", String(VERSION_LENGTH), nullable=True),
        Column("status", String(16), nullable=False),
        Column("reason", Text, nullable=True),
        Column("steps", Json, nullable=True),
        Column("started_at", UTCDateTime(), nullable=False),
        Column("finished_at", UTCDateTime(), nullable=True),
        Column("duration_s", Real, nullable=True),
        Index("ix_rollouts_variant_started_at", "variant", "started_at"),
        Index("ix_rollouts_started_at", "started_at"),
        **MYSQL_TABLE_OPTIONS,
    )
    Table(
        "generations",
        metadata,
        Column("id", String(EVENT_ID), primary_key=True),
        Column("user_id", String(EVENT_ID), nullable=False),
        Column("variant", String(VARIANT), nullable=False),
        Column("model_version", String(VERSION_LENGTH), nullable=False),
        Column("prompt", Text, nullable=False),
        Column("text", Text, nullable=False),
        Column("parameters", Json, nullable=False),
        Column("latency_ms", Real, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        # Arrival time: the aggregation's watermark follows it, since events can arrive late.
        Column("recorded_at", UTCDateTime(), nullable=False),
        Column("deliveries", Integer, nullable=False, default=1),
        Index("ix_generations_variant_created_at", "variant", "created_at"),
        Index("ix_generations_created_at", "created_at"),
        Index("ix_generations_recorded_at", "recorded_at"),
        **MYSQL_TABLE_OPTIONS,
    )
    Table(
        "feedback",
        metadata,
        # The idempotency key: a redelivered message finds its row and counts once.
        Column("id", String(EVENT_ID), primary_key=True),
        # No foreign key: feedback may arrive before its generation.
        Column("generation_id", String(EVENT_ID), nullable=False),
        Column("user_id", String(EVENT_ID), nullable=True),
        Column("reward", Real, nullable=False),
        Column("raw_value", String(32), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("recorded_at", UTCDateTime(), nullable=False),
        Column("deliveries", Integer, nullable=False, default=1),
        CheckConstraint("reward >= 0 AND reward <= 1", name="ck_feedback_reward"),
        Index("ix_feedback_generation_id", "generation_id"),
        Index("ix_feedback_created_at", "created_at"),
        Index("ix_feedback_recorded_at", "recorded_at"),
        **MYSQL_TABLE_OPTIONS,
    )
    Table(
        "variant_metrics",
        metadata,
        Column("variant", String(VARIANT), primary_key=True),
        Column("bucket_start", UTCDateTime(), primary_key=True),
        Column("served", Integer, nullable=False, default=0),
        Column("feedback_count", Integer, nullable=False, default=0),
        Column("positive_count", Integer, nullable=False, default=0),
        Column("reward_sum", Real, nullable=False, default=0.0),
        Column("latency_p50_ms", Real, nullable=True),
        Column("latency_p95_ms", Real, nullable=True),
        Column("errors", Integer, nullable=False, default=0),
        Column("updated_at", UTCDateTime(), nullable=False),
        Index("ix_variant_metrics_bucket_start", "bucket_start"),
        **MYSQL_TABLE_OPTIONS,
    )
    Table(
        "decisions",
        metadata,
        Column("id", String(EVENT_ID), primary_key=True),
        Column("policy", String(64), nullable=False),
        Column("weights", Json, nullable=False),
        Column("statistics", Json, nullable=False),
        Column("reason", Text, nullable=False),
        Column("applied", Boolean, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Index("ix_decisions_created_at", "created_at"),
        **MYSQL_TABLE_OPTIONS,
    )
    Table(
        "aggregation_state",
        metadata,
        # One row per reader, e.g. "metrics": it reads only what arrived after its watermark.
        Column("name", String(64), primary_key=True),
        Column("watermark", UTCDateTime(), nullable=True),
        Column("cursor", Json, nullable=True),
        Column("updated_at", UTCDateTime(), nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )


def upgrade(connection: Connection) -> None:
    """Create what is missing: MySQL commits each DDL statement, so a step cut short re-runs."""
    metadata = MetaData()
    define(metadata)
    metadata.create_all(connection, checkfirst=True)
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(connection, checkfirst=True)
