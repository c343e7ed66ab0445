"""Migration 3: one feedback per generation, and users per variant.

- The aggregation picks each generation's latest post among the feedback of a bucket (by
  ``created_at``, then ``id``), so its covering index now also holds the generation, the time
  and the id: ``ix_feedback_latest`` replaces ``ix_feedback_aggregation`` (same leading
  columns), and the bucket is still read from the index alone, without the wide rows.
- The sample-ratio check counts the users each variant served since the weights were set
  (users are what the assignment randomises): ``ix_generations_users`` lets it count them
  from an index alone.

``define`` changes a ``MetaData`` that already holds migrations 1 and 2, which is how
:mod:`..schema` describes the migrated database.
"""

from __future__ import annotations

from sqlalchemy import Connection, Index, MetaData, inspect

from . import v0001_initial, v0002_experiment

VERSION = 3
NAME = "latest feedback per generation, users per variant"

_REPLACED = "ix_feedback_aggregation"
_ADDED = "ix_feedback_latest"
_USERS = "ix_generations_users"


def define(metadata: MetaData) -> None:
    feedback = metadata.tables["feedback"]
    for index in list(feedback.indexes):
        if index.name == _REPLACED:
            feedback.indexes.discard(index)
    Index(
        _ADDED,
        feedback.c.variant,
        feedback.c.generation_created_at,
        feedback.c.generation_id,
        feedback.c.created_at,
        feedback.c.id,
        feedback.c.reward,
    )
    generations = metadata.tables["generations"]
    Index(_USERS, generations.c.variant, generations.c.created_at, generations.c.user_id)


def upgrade(connection: Connection) -> None:
    """Create the new index, then drop the one it replaces; each step checks first, so a run
    cut short on MySQL (which commits every DDL statement) re-runs."""
    before = MetaData()
    v0001_initial.define(before)
    v0002_experiment.define(before)
    after = MetaData()
    v0001_initial.define(after)
    v0002_experiment.define(after)
    define(after)
    for table in ("feedback", "generations"):
        for index in after.tables[table].indexes:
            if index.name in (_ADDED, _USERS):
                index.create(connection, checkfirst=True)
    present = {i["name"] for i in inspect(connection).get_indexes("feedback")}
    if _REPLACED in present:
        for index in before.tables["feedback"].indexes:
            if index.name == _REPLACED:
                index.drop(connection)
