"""The experiment engine's tables: per-variant metrics buckets, the engine's state, its lease.

:meth:`MetricsRepository.aggregate` keeps ``variant_metrics`` up to date in one transaction:

1. Lock the ``metrics`` row of ``aggregation_state`` (a second aggregator waits), read its
   watermark: the newest ``recorded_at`` an earlier run read.
2. Attribute feedback still waiting for its generation's variant and time whose generation is
   now recorded (normally the recorder has done it; this catches the pair that raced).
3. Find the buckets to recompute: those of the generations, failures and feedback recorded
   after ``watermark - overlap``, read through indexes that lead with ``recorded_at`` and
   cover the bucket's columns (no wide row is read).
4. Recompute those buckets from all of their rows: the grouped counts, sums and latency
   percentiles come from SQL (one grouped pass per source over covering indexes, the
   percentiles from a histogram, see :mod:`tweetgen.domain.aggregation`), and each bucket's
   row is replaced, so a bucket never depends on how its rows arrived.
5. Move the watermark to the newest ``recorded_at`` read.

A full run (``full=True``, or the first run) recomputes every bucket the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    String,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from tweetgen.domain.aggregation import (
    LATENCY_BINS_PER_E,
    MIN_LATENCY_MS,
    POSITIVE_REWARD,
    AggregationReport,
    MetricTotals,
    WeightsInForce,
    bin_latency,
    bucket_index,
    bucket_ranges,
    bucket_start,
    read_from,
)

from . import schema
from .columns import UTCDateTime
from .engine import SQLITE_BEGIN_OPTION, mysql_insert, sqlite_insert
from .repositories import _Repository

__all__ = ["ExperimentStateRepository", "MetricsRepository"]

METRICS_STATE = "metrics"
WEIGHTS_STATE = "experiment"
LEASE_STATE = "experiment-lease"
# Bucket ranges per statement: keeps the SQL text and the optimizer's range list small.
_RANGES_PER_QUERY = 200
_UPSERT_CHUNK = 1000
_TEMP_TABLE_BYTES = 64 * 2**20


def _now() -> datetime:
    return datetime.now(UTC)


Key = tuple[str, int]


@dataclass
class _Bucket:
    """A bucket's figures while they are computed."""

    generations: int = 0
    failures: int = 0
    feedback_count: int = 0
    positive_count: int = 0
    reward_sum: float = 0.0
    p50_bin: int | None = None
    p95_bin: int | None = None


class MetricsRepository(_Repository):
    """``variant_metrics`` and the sources it is computed from."""

    # ------------------------------------------------------------------ SQL pieces

    def _bucket_sql(self, column: str, seconds: int) -> str:
        """The bucket index of a datetime column (whole seconds since the epoch // seconds)."""
        if self._mysql:
            return f"(TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {column}) DIV {int(seconds)})"
        return f"(CAST(strftime('%s', {column}) AS INTEGER) / {int(seconds)})"

    @staticmethod
    def _bin_sql(column: str) -> str:
        low = repr(MIN_LATENCY_MS)
        return (
            f"FLOOR(LN(CASE WHEN {column} < {low} THEN {low} ELSE {column} END)"
            f" * {int(LATENCY_BINS_PER_E)})"
        )

    @staticmethod
    def _ranges(
        column: str, variant: str, ranges: Sequence[tuple[int, int]] | None, seconds: int
    ) -> tuple[str, list[BindParameter[Any]]]:
        """``variant = v AND (column in [start, end) OR ...)`` for runs (first, last) of
        buckets; None: every bucket of the variant."""
        params: list[BindParameter[Any]] = [bindparam("v", variant, type_=String())]
        if ranges is None:
            return "variant = :v", params
        parts: list[str] = []
        for i, (first, last) in enumerate(ranges):
            parts.append(f"({column} >= :s{i} AND {column} < :e{i})")
            params += [
                bindparam(f"s{i}", bucket_start(first, seconds), type_=UTCDateTime()),
                bindparam(f"e{i}", bucket_start(last + 1, seconds), type_=UTCDateTime()),
            ]
        return "variant = :v AND (" + " OR ".join(parts) + ")", params

    # ------------------------------------------------------------------ aggregate

    def aggregate(
        self,
        *,
        bucket_seconds: int,
        overlap: timedelta,
        full: bool = False,
    ) -> AggregationReport:
        """Recompute the buckets that rows recorded since the last run fall in (see the
        module's docstring); ``full``: every bucket."""
        started = time.perf_counter()
        now = _now()
        with self._aggregation() as connection:
            state = self._lock_state(connection, now)
            cursor = dict(state.cursor or {})
            stale = cursor.get("bucket_seconds") not in (None, bucket_seconds)
            lower = None if full or stale else read_from(state.watermark, overlap)
            attributed = self._attribute_pending(connection, bucket_seconds)
            if lower is None:
                connection.execute(delete(schema.variant_metrics))
                buckets, rows_read = self._recompute(connection, None, bucket_seconds)
                watermark = self._newest_recorded(connection)
                touched_count = len(buckets)
            else:
                touched, rows_read, newest = self._touched(connection, lower, bucket_seconds)
                touched |= attributed.keys()
                buckets, _ = self._recompute(connection, touched, bucket_seconds)
                gone = touched - buckets.keys()
                self._delete_buckets(connection, gone, bucket_seconds)
                watermark = max(
                    (t for t in (state.watermark, newest) if t is not None), default=None
                )
                touched_count = len(touched)
            if watermark is not None and watermark > now:
                # A row stamped ahead of this clock: read it again next time rather than skip
                # what arrives until the clocks meet.
                watermark = now
            self._write_buckets(connection, buckets, bucket_seconds, now)
            rows_read["attributed"] = sum(attributed.values())
            connection.execute(
                update(schema.aggregation_state)
                .where(schema.aggregation_state.c.name == METRICS_STATE)
                .values(
                    watermark=watermark,
                    cursor={**cursor, "bucket_seconds": bucket_seconds},
                    updated_at=now,
                )
            )
        return AggregationReport(
            mode="full" if lower is None else "incremental",
            read_from=lower,
            watermark=watermark,
            rows_read=rows_read,
            buckets=touched_count,
            seconds=time.perf_counter() - started,
        )

    @contextmanager
    def _aggregation(self) -> Iterator[Connection]:
        """The run's transaction. On MySQL its grouped histograms (one group per latency bin of
        each bucket) get in-memory temporary tables of up to 64 MB for this session; the
        server's defaults (16 MB) send a full run's to disk."""
        with self._engine.connect() as connection:
            connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            if self._mysql:
                connection.exec_driver_sql(
                    f"SET SESSION tmp_table_size = {_TEMP_TABLE_BYTES},"
                    f" max_heap_table_size = {_TEMP_TABLE_BYTES}"
                )
                connection.commit()
            with connection.begin():
                yield connection
            if self._mysql:
                connection.exec_driver_sql(
                    "SET SESSION tmp_table_size = DEFAULT, max_heap_table_size = DEFAULT"
                )
                connection.commit()

    def _lock_state(self, connection: Connection, now: datetime) -> Any:
        table = schema.aggregation_state
        self._insert_new(
            connection,
            table,
            {"name": METRICS_STATE, "watermark": None, "cursor": None, "updated_at": now},
        )
        return connection.execute(
            select(table).where(table.c.name == METRICS_STATE).with_for_update()
        ).one()

    def _attribute_pending(self, connection: Connection, seconds: int) -> dict[Key, int]:
        """Feedback without its generation's variant whose generation is recorded now."""
        feedback, generations = schema.feedback, schema.generations
        found = connection.execute(
            select(feedback.c.id, generations.c.variant, generations.c.created_at)
            .select_from(feedback.join(generations, generations.c.id == feedback.c.generation_id))
            .where(feedback.c.variant.is_(None))
        ).all()
        if not found:
            return {}
        connection.execute(
            update(feedback)
            .where(feedback.c.id == bindparam("fid"), feedback.c.variant.is_(None))
            .values(variant=bindparam("v"), generation_created_at=bindparam("c")),
            [{"fid": fid, "v": variant, "c": created} for fid, variant, created in found],
        )
        touched: dict[Key, int] = {}
        for _, variant, created in found:
            key = (str(variant), bucket_index(created, seconds))
            touched[key] = touched.get(key, 0) + 1
        return touched

    def _touched(
        self, connection: Connection, lower: datetime, seconds: int
    ) -> tuple[set[Key], dict[str, int], datetime | None]:
        """The buckets of the rows recorded after ``lower``, how many rows each source had,
        and the newest ``recorded_at`` among them."""
        sources = (
            ("generations", "generations", "created_at"),
            ("failures", "generation_failures", "created_at"),
            ("feedback", "feedback", "generation_created_at"),
        )
        touched: set[Key] = set()
        rows_read: dict[str, int] = {}
        newest: datetime | None = None
        for name, table, column in sources:
            query = text(
                f"SELECT variant, {self._bucket_sql(column, seconds)} AS b, COUNT(*) AS n,"
                f" MAX(recorded_at) AS newest FROM {table} WHERE recorded_at > :lower"
                " GROUP BY variant, b"
            ).bindparams(bindparam("lower", lower, type_=UTCDateTime()))
            typed = query.columns(variant=String(), b=Integer(), n=Integer(), newest=UTCDateTime())
            count = 0
            for variant, bucket, n, latest in connection.execute(typed):
                count += int(n)
                if variant is not None and bucket is not None:
                    touched.add((str(variant), int(bucket)))
                if latest is not None and (newest is None or latest > newest):
                    newest = latest
            rows_read[name] = count
        return touched, rows_read, newest

    def _newest_recorded(self, connection: Connection) -> datetime | None:
        newest = [
            connection.execute(select(func.max(table.c.recorded_at))).scalar()
            for table in (schema.generations, schema.generation_failures, schema.feedback)
        ]
        return max((t for t in newest if t is not None), default=None)

    def _variants(self, connection: Connection) -> list[str]:
        """Every variant with rows, each found by one index look-up (a skip scan: MIN of the
        names above the last one found) instead of a scan of the tables."""
        found: set[str] = set()
        for table in (schema.generations, schema.generation_failures, schema.feedback):
            last: str | None = None
            while True:
                query = select(func.min(table.c.variant))
                if last is not None:
                    query = query.where(table.c.variant > last)
                name = connection.execute(query).scalar()
                if name is None:
                    break
                found.add(str(name))
                last = str(name)
        return sorted(found)

    def _plan(
        self, connection: Connection, touched: set[Key] | None
    ) -> Iterator[tuple[str, Sequence[tuple[int, int]] | None]]:
        """(variant, runs of buckets) to recompute, in batches; None: all of its buckets.

        One variant per statement: its rows are one range of each covering index, and the
        grouping keys are integers (a variant's name would widen every temporary row).
        """
        if touched is None:
            for variant in self._variants(connection):
                yield variant, None
            return
        for variant in sorted({variant for variant, _ in touched}):
            runs = bucket_ranges(bucket for name, bucket in touched if name == variant)
            for start in range(0, len(runs), _RANGES_PER_QUERY):
                yield variant, runs[start : start + _RANGES_PER_QUERY]

    def _recompute(
        self, connection: Connection, touched: set[Key] | None, seconds: int
    ) -> tuple[dict[Key, _Bucket], dict[str, int]]:
        """Every figure of the touched buckets (None: of all buckets) from their rows."""
        buckets: dict[Key, _Bucket] = {}
        counts = {"generations": 0, "failures": 0, "feedback": 0}
        for variant, runs in self._plan(connection, touched):
            for bucket, served, p50, p95 in self._generation_figures(
                connection, variant, runs, seconds
            ):
                figures = buckets.setdefault((variant, bucket), _Bucket())
                figures.generations, figures.p50_bin, figures.p95_bin = served, p50, p95
                counts["generations"] += served
            for bucket, failures in self._failure_figures(connection, variant, runs, seconds):
                buckets.setdefault((variant, bucket), _Bucket()).failures = failures
                counts["failures"] += failures
            for bucket, n, positive, reward in self._feedback_figures(
                connection, variant, runs, seconds
            ):
                figures = buckets.setdefault((variant, bucket), _Bucket())
                figures.feedback_count, figures.positive_count = n, positive
                figures.reward_sum = reward
                counts["feedback"] += n
        return buckets, counts

    def _generation_figures(
        self,
        connection: Connection,
        variant: str,
        runs: Sequence[tuple[int, int]] | None,
        seconds: int,
    ) -> Iterator[tuple[int, int, int | None, int | None]]:
        """(bucket, generations, p50 bin, p95 bin): a histogram of latency bins per bucket,
        its running sum by window functions, the first bin past each percentile."""
        where, params = self._ranges("created_at", variant, runs, seconds)
        sql = f"""
            WITH h AS (
                SELECT {self._bucket_sql("created_at", seconds)} AS b,
                       {self._bin_sql("latency_ms")} AS bin, COUNT(*) AS n
                FROM generations
                WHERE {where}
                GROUP BY b, bin
            ), c AS (
                SELECT b, bin,
                       SUM(n) OVER (PARTITION BY b ORDER BY bin ROWS UNBOUNDED PRECEDING) AS cum,
                       SUM(n) OVER (PARTITION BY b) AS total
                FROM h
            )
            SELECT b, MAX(total) AS served,
                   MIN(CASE WHEN cum * 100 >= total * 50 THEN bin END) AS p50,
                   MIN(CASE WHEN cum * 100 >= total * 95 THEN bin END) AS p95
            FROM c
            GROUP BY b
        """
        query = text(sql).bindparams(*params)
        for bucket, served, p50, p95 in connection.execute(query):
            yield (
                int(bucket),
                int(served),
                None if p50 is None else int(p50),
                None if p95 is None else int(p95),
            )

    def _failure_figures(
        self,
        connection: Connection,
        variant: str,
        runs: Sequence[tuple[int, int]] | None,
        seconds: int,
    ) -> Iterator[tuple[int, int]]:
        where, params = self._ranges("created_at", variant, runs, seconds)
        query = text(
            f"SELECT {self._bucket_sql('created_at', seconds)} AS b, COUNT(*) AS n"
            f" FROM generation_failures WHERE {where} GROUP BY b"
        ).bindparams(*params)
        for bucket, n in connection.execute(query):
            yield int(bucket), int(n)

    def _feedback_figures(
        self,
        connection: Connection,
        variant: str,
        runs: Sequence[tuple[int, int]] | None,
        seconds: int,
    ) -> Iterator[tuple[int, int, int, float]]:
        where, params = self._ranges("generation_created_at", variant, runs, seconds)
        bucket_sql = self._bucket_sql("generation_created_at", seconds)
        figures = (
            f"COUNT(*) AS n, SUM(CASE WHEN reward >= {float(POSITIVE_REWARD)!r} THEN 1 ELSE 0"
            " END) AS positive, SUM(reward) AS reward_sum"
        )
        # Every post of the buckets, read from the covering index alone...
        every = text(
            f"SELECT {bucket_sql} AS b, {figures} FROM feedback WHERE {where} GROUP BY b"
        ).bindparams(*params)
        # ...less the posts that a later one of the same generation replaces: one feedback
        # counts per generation, its latest (ties by id), so a user's change of mind replaces
        # their earlier opinion and posting again and again cannot inflate a variant's figures
        # (every post stays stored). A generation's feedback all lies in its bucket, and only
        # the few generations with more than one post are ranked.
        replaced = text(
            f"SELECT b, {figures} FROM (SELECT {bucket_sql} AS b, reward, ROW_NUMBER() OVER"
            " (PARTITION BY generation_id ORDER BY created_at DESC, id DESC) AS nth"
            f" FROM feedback WHERE {where} AND generation_id IN (SELECT generation_id FROM"
            f" feedback WHERE {where} GROUP BY generation_created_at, generation_id"
            " HAVING COUNT(*) > 1)) AS posts WHERE nth > 1 GROUP BY b"
        ).bindparams(*params)
        columns: dict[str, TypeEngine[Any]] = {
            "b": Integer(),
            "n": Integer(),
            "positive": Integer(),
            "reward_sum": Float(),
        }
        totals: dict[int, list[float]] = {}
        for sign, query in ((1, every), (-1, replaced)):
            for bucket, n, positive, reward in connection.execute(query.columns(**columns)):
                total = totals.setdefault(int(bucket), [0, 0, 0.0])
                total[0] += sign * int(n)
                total[1] += sign * int(positive or 0)
                total[2] += sign * float(reward or 0.0)
        for bucket, (n, positive, reward) in totals.items():
            # The two sums ran in different orders: what cancels may leave 1e-16 behind.
            yield bucket, int(n), int(positive), round(reward, 9)

    def _write_buckets(
        self, connection: Connection, buckets: Mapping[Key, _Bucket], seconds: int, now: datetime
    ) -> None:
        table = schema.variant_metrics
        rows = [
            {
                "variant": variant,
                "bucket_start": bucket_start(bucket, seconds),
                "served": figures.generations + figures.failures,
                "feedback_count": figures.feedback_count,
                "positive_count": figures.positive_count,
                "reward_sum": figures.reward_sum,
                "latency_p50_ms": None if figures.p50_bin is None else bin_latency(figures.p50_bin),
                "latency_p95_ms": None if figures.p95_bin is None else bin_latency(figures.p95_bin),
                "errors": figures.failures,
                "updated_at": now,
            }
            for (variant, bucket), figures in sorted(buckets.items())
        ]
        if not rows:
            return
        # One statement, executed for many rows: compiled once (a multi-row VALUES clause of
        # thousands of rows costs SQLAlchemy more to compile than the database to run).
        replaced = [name for name in rows[0] if name not in ("variant", "bucket_start")]
        if self._mysql:
            statement = mysql_insert(table)
            upsert: Any = statement.on_duplicate_key_update(
                {name: statement.inserted[name] for name in replaced}
            )
        else:
            statement_ = sqlite_insert(table)
            upsert = statement_.on_conflict_do_update(
                index_elements=["variant", "bucket_start"],
                set_={name: statement_.excluded[name] for name in replaced},
            )
        for start in range(0, len(rows), _UPSERT_CHUNK):
            connection.execute(upsert, rows[start : start + _UPSERT_CHUNK])

    def _delete_buckets(self, connection: Connection, keys: set[Key], seconds: int) -> None:
        """Buckets that were touched but hold no row any more (their rows were deleted)."""
        table = schema.variant_metrics
        for variant, bucket in sorted(keys):
            connection.execute(
                delete(table).where(
                    table.c.variant == variant,
                    table.c.bucket_start == bucket_start(bucket, seconds),
                )
            )

    # ------------------------------------------------------------------ reading

    def watermark(self) -> datetime | None:
        table = schema.aggregation_state
        row = self._read_one(table, table.c.name == METRICS_STATE)
        return None if row is None else row.watermark

    def totals(self) -> dict[str, MetricTotals]:
        """Each variant's figures over all of its buckets."""
        table = schema.variant_metrics
        query = select(
            table.c.variant,
            func.sum(table.c.served),
            func.sum(table.c.feedback_count),
            func.sum(table.c.positive_count),
            func.sum(table.c.reward_sum),
            func.sum(table.c.errors),
        ).group_by(table.c.variant)
        with self._engine.connect() as connection:
            return {
                str(variant): MetricTotals(
                    served=int(served or 0),
                    feedback_count=int(feedback or 0),
                    positive_count=int(positive or 0),
                    reward_sum=float(reward or 0.0),
                    errors=int(errors or 0),
                )
                for variant, served, feedback, positive, reward, errors in connection.execute(query)
            }

    def served_since(
        self, since: datetime, variants: Sequence[str], bucket_seconds: int
    ) -> dict[str, int]:
        """Requests routed to each variant from ``since`` on: whole buckets from
        ``variant_metrics``, the part of the bucket ``since`` falls in from the events."""
        if not variants:
            return {}
        first_whole = bucket_index(since, bucket_seconds)
        if bucket_start(first_whole, bucket_seconds) < since:
            first_whole += 1
        boundary = bucket_start(first_whole, bucket_seconds)
        metrics = schema.variant_metrics
        served = dict.fromkeys(variants, 0)
        with self._engine.connect() as connection:
            whole = (
                select(metrics.c.variant, func.sum(metrics.c.served))
                .where(metrics.c.variant.in_(variants), metrics.c.bucket_start >= boundary)
                .group_by(metrics.c.variant)
            )
            for variant, count in connection.execute(whole):
                served[str(variant)] += int(count or 0)
            if boundary > since:
                for table in (schema.generations, schema.generation_failures):
                    part = (
                        select(table.c.variant, func.count())
                        .where(
                            table.c.variant.in_(variants),
                            table.c.created_at >= since,
                            table.c.created_at < boundary,
                        )
                        .group_by(table.c.variant)
                    )
                    for variant, count in connection.execute(part):
                        served[str(variant)] += int(count)
        return served

    def users_since(self, since: datetime, variants: Sequence[str]) -> dict[str, int]:
        """The distinct users each variant served from ``since`` on (``ix_generations_users``
        holds all it reads)."""
        if not variants:
            return {}
        generations = schema.generations
        query = (
            select(generations.c.variant, func.count(func.distinct(generations.c.user_id)))
            .where(generations.c.variant.in_(variants), generations.c.created_at >= since)
            .group_by(generations.c.variant)
        )
        users = dict.fromkeys(variants, 0)
        with self._engine.connect() as connection:
            for variant, count in connection.execute(query):
                users[str(variant)] = int(count)
        return users

    def latency_percentiles(
        self, since: datetime, variants: Sequence[str]
    ) -> dict[str, tuple[float | None, float | None]]:
        """(p50, p95) of each variant's generations created from ``since`` on, in ms (the
        same histogram percentiles as the buckets')."""
        if not variants:
            return {}
        names = [bindparam(f"n{i}", name, type_=String()) for i, name in enumerate(variants)]
        placeholders = ", ".join(f":n{i}" for i in range(len(variants)))
        sql = f"""
            WITH h AS (
                SELECT variant, {self._bin_sql("latency_ms")} AS bin, COUNT(*) AS n
                FROM generations
                WHERE variant IN ({placeholders}) AND created_at >= :since
                GROUP BY variant, bin
            ), c AS (
                SELECT variant, bin,
                       SUM(n) OVER (PARTITION BY variant ORDER BY bin
                                    ROWS UNBOUNDED PRECEDING) AS cum,
                       SUM(n) OVER (PARTITION BY variant) AS total
                FROM h
            )
            SELECT variant,
                   MIN(CASE WHEN cum * 100 >= total * 50 THEN bin END) AS p50,
                   MIN(CASE WHEN cum * 100 >= total * 95 THEN bin END) AS p95
            FROM c
            GROUP BY variant
        """
        query = text(sql).bindparams(*names, bindparam("since", since, type_=UTCDateTime()))
        result: dict[str, tuple[float | None, float | None]] = {}
        with self._engine.connect() as connection:
            for variant, p50, p95 in connection.execute(query):
                result[str(variant)] = (
                    None if p50 is None else bin_latency(int(p50)),
                    None if p95 is None else bin_latency(int(p95)),
                )
        return result


class ExperimentStateRepository(_Repository):
    """The engine's state between runs (``aggregation_state`` rows): the weights in force and
    since when, and the lease that lets one run at a time decide."""

    def weights_in_force(self) -> WeightsInForce | None:
        table = schema.aggregation_state
        row = self._read_one(table, table.c.name == WEIGHTS_STATE)
        if row is None or row.watermark is None or not row.cursor:
            return None
        weights = {str(k): float(v) for k, v in dict(row.cursor.get("weights") or {}).items()}
        return WeightsInForce(weights, row.watermark)

    def save_weights_in_force(self, state: WeightsInForce) -> None:
        values = {
            "name": WEIGHTS_STATE,
            "watermark": state.since,
            "cursor": {"weights": dict(state.weights)},
            "updated_at": _now(),
        }
        with self._write() as connection:
            self._upsert(connection, schema.aggregation_state, values)

    def acquire_lease(self, owner: str, seconds: float) -> bool:
        """Hold the experiment until ``seconds`` from now, unless a live lease holds it."""
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"a lease lasts a positive number of seconds, got {seconds!r}")
        table = schema.aggregation_state
        now = _now()
        with self._write() as connection:
            self._insert_new(
                connection,
                table,
                {"name": LEASE_STATE, "watermark": None, "cursor": None, "updated_at": now},
            )
            # MySQL reports matched rows (FOUND_ROWS): 1 exactly when the lease was free.
            taken = connection.execute(
                update(table)
                .where(
                    table.c.name == LEASE_STATE,
                    or_(table.c.watermark.is_(None), table.c.watermark < now),
                )
                .values(
                    watermark=now + timedelta(seconds=seconds),
                    cursor={"owner": owner},
                    updated_at=now,
                )
            )
            return taken.rowcount == 1

    def release_lease(self, owner: str) -> None:
        """Give the lease back, if ``owner`` still holds it."""
        table = schema.aggregation_state
        with self._write() as connection:
            row = connection.execute(
                select(table.c.cursor).where(table.c.name == LEASE_STATE).with_for_update()
            ).one_or_none()
            if row is None or (row.cursor or {}).get("owner") != owner:
                return
            connection.execute(
                update(table)
                .where(table.c.name == LEASE_STATE)
                .values(watermark=None, cursor=None, updated_at=_now())
            )
