"""The tables as the queries see them: migration 1's definitions plus every later change.

A migration that changes a table also changes it here (append a column, add an index), so this
module always describes the newest migrated database; ``tests`` compare the two.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from .migrations import (
    schema_migrations,
    v0001_initial,
    v0002_experiment,
    v0003_latest_feedback,
)

__all__ = [
    "aggregation_state",
    "decisions",
    "feedback",
    "generation_failures",
    "generations",
    "metadata",
    "model_versions",
    "rollouts",
    "schema_migrations",
    "variant_metrics",
]

metadata = MetaData()
v0001_initial.define(metadata)
v0002_experiment.define(metadata)
v0003_latest_feedback.define(metadata)

model_versions = metadata.tables["model_versions"]
rollouts = metadata.tables["rollouts"]
generations = metadata.tables["generations"]
feedback = metadata.tables["feedback"]
variant_metrics = metadata.tables["variant_metrics"]
decisions = metadata.tables["decisions"]
aggregation_state = metadata.tables["aggregation_state"]
generation_failures = metadata.tables["generation_failures"]
