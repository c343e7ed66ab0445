"""The rollout's record step writing to the database (``tweetgen.services.rollout.RolloutRecorder``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from .repositories import ROLLOUT_STATUSES, ModelVersionRepository, RolloutRepository, RolloutStatus

__all__ = ["DatabaseRolloutRecorder"]


class DatabaseRolloutRecorder:
    """Model versions and rollouts into their tables; every call is safe to retry."""

    def __init__(self, model_versions: ModelVersionRepository, rollouts: RolloutRepository) -> None:
        self._model_versions = model_versions
        self._rollouts = rollouts

    def record_model_version(
        self,
        *,
        variant: str,
        version: str,
        kind: str,
        s3_uri: str,
        metadata: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> None:
        self._model_versions.record(
            variant=variant,
            version=version,
            kind=kind,
            s3_uri=s3_uri,
            metadata=metadata,
            offline_metrics=metrics,
            created_at=_built_at(metadata),
        )

    def start_rollout(
        self, *, execution_id: str, variant: str | None, version: str | None, started_at: datetime
    ) -> None:
        self._rollouts.start(execution_id, variant, version, started_at=started_at)

    def finish_rollout(
        self,
        *,
        execution_id: str,
        status: str,
        reason: str,
        steps: Sequence[Mapping[str, Any]],
        finished_at: datetime,
    ) -> None:
        if status not in ROLLOUT_STATUSES:
            raise ValueError(
                f"unknown rollout status {status!r}; known: {', '.join(ROLLOUT_STATUSES)}"
            )
        self._rollouts.finish(
            execution_id, cast(RolloutStatus, status), reason, list(steps), finished_at
        )


def _built_at(metadata: Mapping[str, Any]) -> datetime | None:
    """The artifact's ``created`` time; None (the registration time stands in) when unusable."""
    created = metadata.get("created")
    try:
        parsed = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None
