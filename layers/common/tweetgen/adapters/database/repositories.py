"""Small typed repositories over the tables; every write is safe to repeat.

Events reach the recorder at least once (SQS), rollouts' record step can be retried, so each
write is an idempotent insert or upsert keyed by the natural id: MySQL's ``ON DUPLICATE KEY
UPDATE`` and SQLite's ``ON CONFLICT`` through SQLAlchemy's dialect inserts.
"""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, NotRequired, TypedDict, TypeVar, Unpack, get_args

from sqlalchemy import Connection, Engine, Row, Table, case, func, select, update

from tweetgen.domain.aggregation import POSITIVE_REWARD

from . import schema
from .engine import SQLITE_BEGIN_OPTION, is_mysql, mysql_insert, sqlite_insert

__all__ = [
    "ROLLOUT_STATUSES",
    "Decision",
    "DecisionRepository",
    "Feedback",
    "FeedbackRepository",
    "Generation",
    "GenerationFailure",
    "GenerationFailureRepository",
    "GenerationRepository",
    "ModelVersion",
    "ModelVersionRepository",
    "Rollout",
    "RolloutNotFoundError",
    "RolloutRepository",
    "RolloutStatus",
    "VariantMetrics",
    "VariantMetricsRepository",
    "VariantTotals",
]

# "unchanged": the upload was a version already serving, so the rollout had nothing to do.
RolloutStatus = Literal["running", "succeeded", "unchanged", "failed", "rolled_back"]
ROLLOUT_STATUSES: Final[tuple[str, ...]] = get_args(RolloutStatus)


class GenerationFields(TypedDict):
    """A generation as the recorder stores it (``GenerationRepository.record``'s keywords)."""

    generation_id: str
    user_id: str
    variant: str
    model_version: str
    prompt: str
    text: str
    parameters: Mapping[str, Any]
    latency_ms: float
    created_at: datetime


class FeedbackFields(TypedDict):
    """Feedback as the recorder stores it (``FeedbackRepository.record``'s keywords)."""

    feedback_id: str
    generation_id: str
    reward: float
    raw_value: str
    user_id: NotRequired[str | None]
    created_at: NotRequired[datetime | None]


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A model version that a rollout put into service."""

    variant: str
    version: str
    kind: str
    s3_uri: str
    metadata: dict[str, Any]
    offline_metrics: dict[str, Any]
    created_at: datetime
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class Rollout:
    """One run of the rollout state machine; ``id`` is its execution id."""

    id: str
    variant: str | None
    version: str | None
    status: RolloutStatus
    reason: str | None
    steps: list[Any] | None
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class Generation:
    """A tweet served by one variant; ``deliveries`` counts how often its event arrived."""

    id: str
    user_id: str
    variant: str
    model_version: str
    prompt: str
    text: str
    parameters: dict[str, Any]
    latency_ms: float
    created_at: datetime
    recorded_at: datetime
    deliveries: int


@dataclass(frozen=True, slots=True)
class Feedback:
    """What a user thought of a generation: ``reward`` in [0, 1], ``raw_value`` as sent.

    ``variant`` and ``generation_created_at`` are the generation's, once both are recorded.
    """

    id: str
    generation_id: str
    user_id: str | None
    reward: float
    raw_value: str
    created_at: datetime
    recorded_at: datetime
    deliveries: int
    variant: str | None = None
    generation_created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A traffic decision of the experiment: the weights chosen, why, and whether applied.

    ``changed``: the weights differ from ``weights_before`` (those in force when it was
    decided); ``outcome`` says what applying them came to (or why they were not applied);
    ``sequential_state`` is what the next run's sequential tests continue from.
    """

    id: str
    policy: str
    weights: dict[str, float]
    statistics: dict[str, Any]
    reason: str
    applied: bool
    created_at: datetime
    changed: bool = False
    winner: str | None = None
    frozen: bool = False
    sequential_state: dict[str, Any] | None = None
    weights_before: dict[str, float] | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class VariantTotals:
    """A variant's generations and the feedback on them, all time."""

    served: int = 0
    feedback: int = 0
    positive: int = 0
    reward_sum: float = 0.0


@dataclass(frozen=True, slots=True)
class VariantMetrics:
    """One variant's figures over one time bucket (``bucket_start`` to the next bucket)."""

    variant: str
    bucket_start: datetime
    served: int
    feedback_count: int
    positive_count: int
    reward_sum: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    errors: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class GenerationFailure:
    """A request the endpoint failed: which variant it was routed to, and why it failed."""

    id: str
    variant: str
    reason: str
    created_at: datetime
    recorded_at: datetime
    deliveries: int


class RolloutNotFoundError(LookupError):
    """``finish`` was called for an execution that was never started."""


_RecordT = TypeVar("_RecordT")
# Runs inside an event write's transaction with the rows being written; returns them (maybe
# completed).
_RowsHook = Callable[[Connection, list[dict[str, Any]]], list[dict[str, Any]]]
# IN lists stay below what every backend takes comfortably.
_IN_CHUNK = 500


def _now() -> datetime:
    return datetime.now(UTC)


def _record(cls: type[_RecordT], row: Row[Any]) -> _RecordT:
    """Columns and record fields share their names."""
    return cls(**row._mapping)


class _Repository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._mysql = is_mysql(engine.dialect)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it takes the write lock up front, so a writer waits
        (busy timeout) instead of failing when it cannot upgrade a read lock."""
        with self._engine.connect() as connection:
            connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with connection.begin():
                yield connection

    def _read_one(self, table: Table, *conditions: Any) -> Row[Any] | None:
        with self._engine.connect() as connection:
            return connection.execute(select(table).where(*conditions)).one_or_none()

    def _insert_new(self, connection: Connection, table: Table, values: Mapping[str, Any]) -> None:
        """Insert unless a row with the same primary key exists; an existing row is kept."""
        key = [column.name for column in table.primary_key]
        if self._mysql:
            statement = mysql_insert(table).values(**values)
            connection.execute(statement.on_duplicate_key_update({key[0]: table.c[key[0]]}))
        else:
            statement_ = sqlite_insert(table).values(**values)
            connection.execute(statement_.on_conflict_do_nothing(index_elements=key))

    def _upsert(self, connection: Connection, table: Table, values: Mapping[str, Any]) -> None:
        """Insert, or overwrite every column but the key of the existing row."""
        key = [column.name for column in table.primary_key]
        changed = [name for name in values if name not in key]
        if self._mysql:
            statement = mysql_insert(table).values(**values)
            connection.execute(
                statement.on_duplicate_key_update(
                    {name: statement.inserted[name] for name in changed}
                )
            )
        else:
            statement_ = sqlite_insert(table).values(**values)
            connection.execute(
                statement_.on_conflict_do_update(
                    index_elements=key, set_={name: statement_.excluded[name] for name in changed}
                )
            )

    def _record_delivery(
        self,
        table: Table,
        values: Mapping[str, Any],
        *,
        before: _RowsHook | None = None,
        after: _RowsHook | None = None,
    ) -> bool:
        """Insert an event row once; a redelivery only bumps ``deliveries``. True when new.

        The bump is what tells the two apart on MySQL: SQLAlchemy connects with FOUND_ROWS, so
        a no-op ``ON DUPLICATE KEY UPDATE`` reports one row, just like an insert. ``before``
        may complete the row and ``after`` may update others, in the same transaction.
        """
        bump = {"deliveries": table.c.deliveries + 1}
        with self._write() as connection:
            if before is not None:
                values = before(connection, [dict(values)])[0]
            new = self._insert_delivery(connection, table, values, bump)
            if after is not None:
                after(connection, [dict(values)])
            return new

    def _insert_delivery(
        self, connection: Connection, table: Table, values: Mapping[str, Any], bump: Any
    ) -> bool:
        if self._mysql:
            statement = mysql_insert(table).values({**values, "deliveries": 1})
            # Affected rows: 1 for an insert, 2 for an update of an existing row.
            result = connection.execute(statement.on_duplicate_key_update(bump))
            return result.rowcount == 1
        statement_ = sqlite_insert(table).values({**values, "deliveries": 1})
        deliveries = connection.execute(
            statement_.on_conflict_do_update(index_elements=["id"], set_=bump).returning(
                table.c.deliveries
            )
        ).scalar_one()
        return bool(deliveries == 1)

    def _record_deliveries(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        before: _RowsHook | None = None,
        after: _RowsHook | None = None,
    ) -> set[str]:
        """Insert many event rows in one transaction, each once; returns the ids that were new.

        Redelivered rows only bump ``deliveries``. Two recorders racing on the same id still
        leave one row; only which of them reports it as new is undecided. ``before`` may
        complete the rows and ``after`` may update others, in the same transaction.
        """
        if not rows:
            return set()
        ids = [str(row["id"]) for row in rows]
        bump = {"deliveries": table.c.deliveries + 1}
        with self._write() as connection:
            if before is not None:
                rows = before(connection, [dict(row) for row in rows])
            existing = set(
                connection.execute(select(table.c.id).where(table.c.id.in_(ids))).scalars()
            )
            values = [{**row, "deliveries": 1} for row in rows]
            if self._mysql:
                statement = mysql_insert(table).values(values)
                connection.execute(statement.on_duplicate_key_update(bump))
            else:
                statement_ = sqlite_insert(table).values(values)
                connection.execute(
                    statement_.on_conflict_do_update(index_elements=["id"], set_=bump)
                )
            if after is not None:
                after(connection, [dict(row) for row in rows])
        return set(ids) - existing


class ModelVersionRepository(_Repository):
    """The versions that rollouts put into service, one row per (variant, version)."""

    def record(
        self,
        *,
        variant: str,
        version: str,
        kind: str,
        s3_uri: str,
        metadata: Mapping[str, Any],
        offline_metrics: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
        registered_at: datetime | None = None,
    ) -> ModelVersion:
        """Insert or refresh a version; a version rolled out again becomes the latest again."""
        registered = registered_at or _now()
        values = {
            "variant": variant,
            "version": version,
            "kind": kind,
            "s3_uri": s3_uri,
            "metadata": dict(metadata),
            "offline_metrics": dict(offline_metrics or {}),
            "created_at": created_at or registered,
            "registered_at": registered,
        }
        with self._write() as connection:
            self._upsert(connection, schema.model_versions, values)
        stored = self.get(variant, version)
        assert stored is not None
        return stored

    def get(self, variant: str, version: str) -> ModelVersion | None:
        table = schema.model_versions
        row = self._read_one(table, table.c.variant == variant, table.c.version == version)
        return _record(ModelVersion, row) if row is not None else None

    def latest(self, variant: str) -> ModelVersion | None:
        """The version most recently put into service for ``variant``."""
        table = schema.model_versions
        query = (
            select(table)
            .where(table.c.variant == variant)
            .order_by(table.c.registered_at.desc(), table.c.version.desc())
            .limit(1)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return _record(ModelVersion, row) if row is not None else None

    def list(self, variant: str | None = None, limit: int = 50) -> builtins.list[ModelVersion]:
        """The most recently registered versions first, of one variant or of all."""
        table = schema.model_versions
        query = (
            select(table)
            .order_by(table.c.registered_at.desc(), table.c.variant, table.c.version.desc())
            .limit(limit)
        )
        if variant is not None:
            query = query.where(table.c.variant == variant)
        with self._engine.connect() as connection:
            return [_record(ModelVersion, row) for row in connection.execute(query)]


class RolloutRepository(_Repository):
    """Rollouts by execution id: started once, finished with their outcome."""

    def start(
        self,
        execution_id: str,
        variant: str | None,
        version: str | None,
        *,
        started_at: datetime | None = None,
        steps: Sequence[Any] | None = None,
    ) -> Rollout:
        """Record a running rollout; starting the same execution again changes nothing."""
        values = {
            "id": execution_id,
            "variant": variant,
            "version": version,
            "status": "running",
            "reason": None,
            "steps": list(steps) if steps is not None else None,
            "started_at": started_at or _now(),
            "finished_at": None,
            "duration_s": None,
        }
        with self._write() as connection:
            self._insert_new(connection, schema.rollouts, values)
        return self._require(execution_id)

    def finish(
        self,
        execution_id: str,
        status: RolloutStatus,
        reason: str | None = None,
        steps: Sequence[Any] | None = None,
        finished_at: datetime | None = None,
    ) -> Rollout:
        """Record the outcome; repeating the call (a retried task) leaves the same row."""
        if status not in ROLLOUT_STATUSES or status == "running":
            raise ValueError(
                f"a rollout finishes as succeeded, unchanged, failed or rolled_back, not {status!r}"
            )
        table = schema.rollouts
        with self._write() as connection:
            row = connection.execute(
                select(table.c.started_at, table.c.finished_at)
                .where(table.c.id == execution_id)
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise RolloutNotFoundError(
                    f"rollout {execution_id!r} was never started: call rollouts.start first"
                )
            started: datetime = row.started_at
            # A retry without a time keeps the first one, so the duration does not drift.
            finished = finished_at or row.finished_at or _now()
            changes: dict[str, Any] = {
                "status": status,
                "reason": reason,
                "finished_at": finished,
                "duration_s": max(0.0, (finished - started).total_seconds()),
            }
            if steps is not None:
                changes["steps"] = list(steps)
            connection.execute(update(table).where(table.c.id == execution_id).values(**changes))
        return self._require(execution_id)

    def get(self, execution_id: str) -> Rollout | None:
        row = self._read_one(schema.rollouts, schema.rollouts.c.id == execution_id)
        return _record(Rollout, row) if row is not None else None

    def list(self, variant: str | None = None, limit: int = 50) -> builtins.list[Rollout]:
        """The newest rollouts first, of one variant or of all."""
        table = schema.rollouts
        query = select(table).order_by(table.c.started_at.desc(), table.c.id.desc()).limit(limit)
        if variant is not None:
            query = query.where(table.c.variant == variant)
        with self._engine.connect() as connection:
            return [_record(Rollout, row) for row in connection.execute(query)]

    def _require(self, execution_id: str) -> Rollout:
        rollout = self.get(execution_id)
        if rollout is None:
            raise RolloutNotFoundError(f"rollout {execution_id!r} vanished while being written")
        return rollout


class GenerationRepository(_Repository):
    """Generations as the recorder receives them, each stored once."""

    def record(self, **generation: Unpack[GenerationFields]) -> bool:
        """Store a generation; True when new, False for a redelivery (nothing else changes)."""
        return self._record_delivery(
            schema.generations, _generation_row(**generation), after=_attribute_waiting_feedback
        )

    def record_many(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Store many generations (``record``'s keyword arguments each) in one transaction;
        returns the ids that were new."""
        return self._record_deliveries(
            schema.generations,
            [_generation_row(**row) for row in rows],
            after=_attribute_waiting_feedback,
        )

    def get(self, generation_id: str) -> Generation | None:
        row = self._read_one(schema.generations, schema.generations.c.id == generation_id)
        return _record(Generation, row) if row is not None else None

    def variant_totals(self) -> dict[str, VariantTotals]:
        """Per variant: generations served, and every feedback post stored for them.

        Feedback whose generation has not arrived yet is not counted until it does. The
        experiment's figures (``variant_metrics``) count one post per generation, its latest.
        """
        generations, feedback = schema.generations, schema.feedback
        served = select(generations.c.variant, func.count()).group_by(generations.c.variant)
        rewarded = (
            select(
                generations.c.variant,
                func.count(feedback.c.id),
                func.sum(case((feedback.c.reward >= POSITIVE_REWARD, 1), else_=0)),
                func.sum(feedback.c.reward),
            )
            .select_from(feedback.join(generations, generations.c.id == feedback.c.generation_id))
            .group_by(generations.c.variant)
        )
        with self._engine.connect() as connection:
            totals = {
                str(variant): VariantTotals(served=int(count))
                for variant, count in connection.execute(served)
            }
            for variant, count, positive, reward_sum in connection.execute(rewarded):
                current = totals.get(str(variant), VariantTotals())
                totals[str(variant)] = VariantTotals(
                    served=current.served,
                    feedback=int(count),
                    positive=int(positive or 0),
                    reward_sum=float(reward_sum or 0.0),
                )
        return totals


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _attribute_waiting_feedback(
    connection: Connection, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Feedback that arrived before these generations learns their variant and creation time.

    Usually there is none, and this is one indexed look-up per batch.
    """
    feedback = schema.feedback
    generations = {str(row["id"]): row for row in rows}
    waiting: set[str] = set()
    for ids in _chunks(sorted(generations)):
        waiting.update(
            connection.execute(
                select(feedback.c.generation_id)
                .where(feedback.c.generation_id.in_(ids), feedback.c.variant.is_(None))
                .distinct()
            ).scalars()
        )
    for generation_id in sorted(waiting):
        generation = generations[generation_id]
        connection.execute(
            update(feedback)
            .where(feedback.c.generation_id == generation_id, feedback.c.variant.is_(None))
            .values(variant=generation["variant"], generation_created_at=generation["created_at"])
        )
    return rows


def _attribute_feedback(connection: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete feedback rows with their generation's variant and creation time, when that
    generation is recorded (else both stay null until it is)."""
    generations = schema.generations
    wanted = sorted({str(row["generation_id"]) for row in rows})
    found: dict[str, tuple[str, datetime]] = {}
    for ids in _chunks(wanted):
        for generation_id, variant, created_at in connection.execute(
            select(generations.c.id, generations.c.variant, generations.c.created_at).where(
                generations.c.id.in_(ids)
            )
        ):
            found[str(generation_id)] = (str(variant), created_at)
    for row in rows:
        variant, created_at = found.get(str(row["generation_id"]), (None, None))
        row["variant"] = variant
        row["generation_created_at"] = created_at
    return rows


def _generation_row(**generation: Unpack[GenerationFields]) -> dict[str, Any]:
    g = generation
    return {
        "id": g["generation_id"],
        "user_id": g["user_id"],
        "variant": g["variant"],
        "model_version": g["model_version"],
        "prompt": g["prompt"],
        "text": g["text"],
        "parameters": dict(g["parameters"]),
        "latency_ms": float(g["latency_ms"]),
        "created_at": g["created_at"],
        "recorded_at": _now(),
    }


class FeedbackRepository(_Repository):
    """Feedback keyed by its idempotency key, so a redelivered message counts once."""

    def record(self, **feedback: Unpack[FeedbackFields]) -> bool:
        """Store feedback; True when new, False for a redelivery (the first one stands)."""
        return self._record_delivery(
            schema.feedback, _feedback_row(**feedback), before=_attribute_feedback
        )

    def record_many(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Store many feedback rows (``record``'s keyword arguments each) in one transaction;
        returns the ids that were new."""
        return self._record_deliveries(
            schema.feedback, [_feedback_row(**row) for row in rows], before=_attribute_feedback
        )

    def get(self, feedback_id: str) -> Feedback | None:
        row = self._read_one(schema.feedback, schema.feedback.c.id == feedback_id)
        return _record(Feedback, row) if row is not None else None

    def pending_without_generation(self, limit: int = 1000) -> list[Feedback]:
        """Feedback whose generation has not been recorded yet, oldest arrivals first."""
        feedback, generations = schema.feedback, schema.generations
        query = (
            select(feedback)
            .outerjoin(generations, generations.c.id == feedback.c.generation_id)
            .where(generations.c.id.is_(None))
            .order_by(feedback.c.recorded_at, feedback.c.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [_record(Feedback, row) for row in connection.execute(query)]


def _feedback_row(**feedback: Unpack[FeedbackFields]) -> dict[str, Any]:
    reward = feedback["reward"]
    if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
        raise ValueError(
            f"reward must be a normalised value in [0, 1] (like 1, dislike 0, "
            f"rating r as (r - 1) / 4), got {reward!r}"
        )
    return {
        "id": feedback["feedback_id"],
        "generation_id": feedback["generation_id"],
        "user_id": feedback.get("user_id"),
        "reward": float(reward),
        "raw_value": feedback["raw_value"],
        "created_at": feedback.get("created_at") or _now(),
        "recorded_at": _now(),
    }


class GenerationFailureRepository(_Repository):
    """Requests the endpoint failed, keyed by the event's id, so a redelivery counts once."""

    def record_many(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Store failures (``failure_id``, ``variant``, ``reason``, ``created_at`` each) in one
        transaction; returns the ids that were new."""
        now = _now()
        values = [
            {
                "id": str(row["failure_id"]),
                "variant": str(row["variant"]),
                "reason": str(row["reason"]),
                "created_at": row["created_at"],
                "recorded_at": now,
            }
            for row in rows
        ]
        return self._record_deliveries(schema.generation_failures, values)

    def get(self, failure_id: str) -> GenerationFailure | None:
        table = schema.generation_failures
        row = self._read_one(table, table.c.id == failure_id)
        return _record(GenerationFailure, row) if row is not None else None


class DecisionRepository(_Repository):
    """The experiment's traffic decisions, newest last."""

    def record(
        self,
        *,
        policy: str,
        weights: Mapping[str, float],
        statistics: Mapping[str, Any],
        reason: str,
        applied: bool,
        decision_id: str | None = None,
        created_at: datetime | None = None,
        changed: bool = False,
        winner: str | None = None,
        frozen: bool = False,
        sequential_state: Mapping[str, Any] | None = None,
        weights_before: Mapping[str, float] | None = None,
        outcome: str | None = None,
    ) -> Decision:
        """Store a decision; with a ``decision_id`` a repeated call returns the first one."""
        identifier = decision_id or uuid.uuid4().hex
        values = {
            "id": identifier,
            "policy": policy,
            "weights": {variant: float(weight) for variant, weight in weights.items()},
            "statistics": dict(statistics),
            "reason": reason,
            "applied": applied,
            "created_at": created_at or _now(),
            "changed": changed,
            "winner": winner,
            "frozen": frozen,
            "sequential_state": None if sequential_state is None else dict(sequential_state),
            "weights_before": None
            if weights_before is None
            else {variant: float(weight) for variant, weight in weights_before.items()},
            "outcome": outcome,
        }
        with self._write() as connection:
            self._insert_new(connection, schema.decisions, values)
            row = connection.execute(
                select(schema.decisions).where(schema.decisions.c.id == identifier)
            ).one()
        return _record(Decision, row)

    def latest(self) -> Decision | None:
        table = schema.decisions
        query = select(table).order_by(table.c.created_at.desc(), table.c.id.desc()).limit(1)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return _record(Decision, row) if row is not None else None

    def get(self, decision_id: str) -> Decision | None:
        row = self._read_one(schema.decisions, schema.decisions.c.id == decision_id)
        return _record(Decision, row) if row is not None else None

    def list(self, limit: int = 50) -> builtins.list[Decision]:
        """The newest decisions first."""
        table = schema.decisions
        query = select(table).order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
        with self._engine.connect() as connection:
            return [_record(Decision, row) for row in connection.execute(query)]


class VariantMetricsRepository(_Repository):
    """Per-variant figures per time bucket: what the aggregation writes and dashboards read."""

    def upsert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write whole buckets (``VariantMetrics`` fields each, ``updated_at`` optional) in one
        transaction; a bucket written again is replaced, so re-aggregating is safe."""
        if not rows:
            return
        now = _now()
        with self._write() as connection:
            for row in rows:
                self._upsert(connection, schema.variant_metrics, {"updated_at": now, **dict(row)})

    def list(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        variant: str | None = None,
    ) -> builtins.list[VariantMetrics]:
        """Buckets starting in [``since``, ``until``), oldest first, variants in name order."""
        table = schema.variant_metrics
        query = select(table).order_by(table.c.bucket_start, table.c.variant)
        if since is not None:
            query = query.where(table.c.bucket_start >= since)
        if until is not None:
            query = query.where(table.c.bucket_start < until)
        if variant is not None:
            query = query.where(table.c.variant == variant)
        with self._engine.connect() as connection:
            return [_record(VariantMetrics, row) for row in connection.execute(query)]
