"""Rollout records without a database: JSON lines in a file, or structured log lines.

Both implement :class:`tweetgen.services.rollout.RolloutRecorder`. The file form serves local
runs and tests (``ROLLOUT_LOG_PATH``); the log form keeps every record in the function's logs
where no other recorder is configured.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["JsonLinesRecorder", "LogRecorder", "read_records"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _RecordWriter:
    """The recorder port's three calls, each turned into one flat record for ``_append``."""

    def _append(self, record: Mapping[str, Any]) -> None:
        raise NotImplementedError

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
        self._append(
            {
                "record": "model_version",
                "variant": variant,
                "version": version,
                "kind": kind,
                "s3_uri": s3_uri,
                "metadata": dict(metadata),
                "metrics": dict(metrics),
            }
        )

    def start_rollout(
        self, *, execution_id: str, variant: str | None, version: str | None, started_at: datetime
    ) -> None:
        self._append(
            {
                "record": "rollout_started",
                "execution_id": execution_id,
                "variant": variant,
                "version": version,
                "started_at": started_at,
            }
        )

    def finish_rollout(
        self,
        *,
        execution_id: str,
        status: str,
        reason: str,
        steps: Sequence[Mapping[str, Any]],
        finished_at: datetime,
    ) -> None:
        self._append(
            {
                "record": "rollout_finished",
                "execution_id": execution_id,
                "status": status,
                "reason": reason,
                "steps": [dict(step) for step in steps],
                "finished_at": finished_at,
            }
        )


class JsonLinesRecorder(_RecordWriter):
    """Appends one JSON object per call to ``path``; safe for several processes at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(dict(record), default=_jsonable, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record a :class:`JsonLinesRecorder` wrote to ``path`` (none when it is absent)."""
    file = Path(path)
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line]


class LogRecorder(_RecordWriter):
    """Writes each record as one structured log line (Powertools or standard logger)."""

    def __init__(self, logger: logging.Logger | Any) -> None:
        self._logger = logger

    def _append(self, record: Mapping[str, Any]) -> None:
        self._logger.info(
            "rollout record",
            extra={"rollout_record": json.loads(json.dumps(record, default=_jsonable))},
        )
