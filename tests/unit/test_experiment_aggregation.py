"""The metrics aggregation against an independent reference, on SQLite.

:class:`AggregationContract` holds what every backend must do; it runs here on a temporary
SQLite file per test and in ``tests/integration/test_experiment_mysql.py`` on MariaDB/MySQL.
A backend provides one fixture, ``db``: an empty, migrated database for each test.

The reference (:func:`expected_buckets`) recomputes every bucket in Python from the events as
they were written, with the domain's bucket and percentile rules; the aggregation's buckets
must equal it after any sequence of runs, and a full recomputation must give the same rows.
"""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from tweetgen.adapters.database import Database, schema
from tweetgen.domain.aggregation import (
    BUCKET_SECONDS,
    bin_latency,
    bucket_index,
    bucket_start,
    latency_bin,
    percentile_bin,
)
from tweetgen.domain.serving import POSITIVE_REWARD
from tweetgen.services.experiment import AggregationSettings, aggregate

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NO_OVERLAP = AggregationSettings(overlap_seconds=0)


@dataclass
class Events:
    """What a test wrote, for the reference: first delivery of each id wins."""

    generations: dict[str, tuple[str, datetime, float]] = field(default_factory=dict)
    #: feedback id: (generation id, reward, created_at)
    feedback: dict[str, tuple[str, float, datetime]] = field(default_factory=dict)
    failures: dict[str, tuple[str, datetime]] = field(default_factory=dict)


class Writer:
    """Writes events through the recorder's repositories and remembers them."""

    def __init__(self, db: Database, seed: int = 7) -> None:
        self.db = db
        self.events = Events()
        self.rng = random.Random(seed)

    def generations(
        self, count: int, *, start: datetime = T0, spread_s: float = 1800.0
    ) -> list[str]:
        rows: list[dict[str, Any]] = []
        for _ in range(count):
            generation_id = uuid.uuid4().hex
            variant = self.rng.choice(("lstm", "gpt2"))
            created = start + timedelta(seconds=self.rng.uniform(0, spread_s))
            latency = self.rng.lognormvariate(4.0 if variant == "lstm" else 4.6, 0.5)
            rows.append(
                {
                    "generation_id": generation_id,
                    "user_id": f"user-{self.rng.randrange(1000)}",
                    "variant": variant,
                    "model_version": "v1",
                    "prompt": "good morning",
                    "text": "to you",
                    "parameters": {"max_new_tokens": 8},
                    "latency_ms": latency,
                    "created_at": created,
                }
            )
        self.write_generations(rows)
        return [row["generation_id"] for row in rows]

    def write_generations(self, rows: list[dict[str, Any]]) -> None:
        self.db.generations.record_many(rows)
        for row in rows:
            self.events.generations.setdefault(
                row["generation_id"], (row["variant"], row["created_at"], row["latency_ms"])
            )

    def feedback(self, generation_ids: Iterable[str]) -> list[str]:
        rows: list[dict[str, Any]] = []
        for generation_id in generation_ids:
            reward = self.rng.choice((0.0, 0.25, 0.5, 0.75, 1.0))
            rows.append(
                {
                    "feedback_id": uuid.uuid4().hex,
                    "generation_id": generation_id,
                    "reward": reward,
                    "raw_value": str(reward),
                }
            )
        self.write_feedback(rows)
        return [row["feedback_id"] for row in rows]

    def write_feedback(self, rows: list[dict[str, Any]]) -> None:
        # Stamped here, not by the repository, so the reference knows which post came last.
        rows = [{"created_at": datetime.now(UTC), **row} for row in rows]
        self.db.feedback.record_many(rows)
        for row in rows:
            self.events.feedback.setdefault(
                row["feedback_id"], (row["generation_id"], row["reward"], row["created_at"])
            )

    def failures(self, count: int, variant: str, *, start: datetime = T0) -> list[dict[str, Any]]:
        rows = [
            {
                "failure_id": uuid.uuid4().hex,
                "variant": variant,
                "reason": "ModelError: the container crashed",
                "created_at": start + timedelta(seconds=self.rng.uniform(0, 1800)),
            }
            for _ in range(count)
        ]
        self.write_failures(rows)
        return rows

    def write_failures(self, rows: list[dict[str, Any]]) -> None:
        self.db.failures.record_many(rows)
        for row in rows:
            self.events.failures.setdefault(row["failure_id"], (row["variant"], row["created_at"]))


def expected_buckets(events: Events) -> dict[tuple[str, datetime], dict[str, Any]]:
    """Every bucket computed in Python from the events, by the domain's rules."""
    buckets: dict[tuple[str, int], dict[str, Any]] = {}

    def bucket(variant: str, at: datetime) -> dict[str, Any]:
        return buckets.setdefault(
            (variant, bucket_index(at)),
            {"served": 0, "errors": 0, "feedback": 0, "positive": 0, "reward": 0.0, "bins": {}},
        )

    for variant, created, latency in events.generations.values():
        figures = bucket(variant, created)
        figures["served"] += 1
        bin_ = latency_bin(latency)
        figures["bins"][bin_] = figures["bins"].get(bin_, 0) + 1
    for variant, created in events.failures.values():
        figures = bucket(variant, created)
        figures["served"] += 1
        figures["errors"] += 1
    # One feedback counts per generation: its latest post (ties by feedback id).
    latest: dict[str, tuple[datetime, str, float]] = {}
    for feedback_id, (generation_id, reward, created) in events.feedback.items():
        latest[generation_id] = max(
            latest.get(generation_id, (created, feedback_id, reward)),
            (created, feedback_id, reward),
        )
    for generation_id, (_, _, reward) in latest.items():
        generation = events.generations.get(generation_id)
        if generation is None:
            continue  # counted once its generation is recorded
        figures = bucket(generation[0], generation[1])
        figures["feedback"] += 1
        figures["positive"] += reward >= POSITIVE_REWARD
        figures["reward"] += reward
    result = {}
    for (variant, index), figures in buckets.items():
        p50, p95 = (percentile_bin(figures["bins"], p) for p in (50, 95))
        result[(variant, bucket_start(index))] = {
            "served": figures["served"],
            "errors": figures["errors"],
            "feedback_count": figures["feedback"],
            "positive_count": figures["positive"],
            "reward_sum": round(figures["reward"], 9),
            "latency_p50_ms": None if p50 is None else round(bin_latency(p50), 6),
            "latency_p95_ms": None if p95 is None else round(bin_latency(p95), 6),
        }
    return result


def stored_buckets(db: Database) -> dict[tuple[str, datetime], dict[str, Any]]:
    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return {
        (row.variant, row.bucket_start): {
            "served": row.served,
            "errors": row.errors,
            "feedback_count": row.feedback_count,
            "positive_count": row.positive_count,
            "reward_sum": round(row.reward_sum, 9),
            "latency_p50_ms": rounded(row.latency_p50_ms, 6),
            "latency_p95_ms": rounded(row.latency_p95_ms, 6),
        }
        for row in db.variant_metrics.list()
    }


def full_recomputation(db: Database) -> dict[tuple[str, datetime], dict[str, Any]]:
    aggregate(db.metrics, full=True)
    return stored_buckets(db)


class AggregationContract:
    """What every backend must do; subclasses supply ``db``: empty and migrated, per test."""

    def test_a_first_run_computes_every_bucket(self, db: Database) -> None:
        writer = Writer(db)
        ids = writer.generations(300)
        writer.feedback(ids[:120])
        writer.failures(9, "gpt2")
        report = aggregate(db.metrics, NO_OVERLAP)
        assert report.mode == "full" and report.read_from is None
        assert report.rows_read == {
            "generations": 300,
            "failures": 9,
            "feedback": 120,
            "attributed": 0,
        }
        assert stored_buckets(db) == expected_buckets(writer.events)
        assert len(stored_buckets(db)) == report.buckets >= 12  # 30 minutes, two variants
        assert report.watermark is not None

    def test_a_second_run_reads_only_what_is_new_and_equals_a_full_recomputation(
        self, db: Database
    ) -> None:
        writer = Writer(db)
        old = writer.generations(400)
        writer.feedback(old[:100])
        first = aggregate(db.metrics, NO_OVERLAP)
        # New traffic in the last ten minutes, and late feedback on early generations.
        new = writer.generations(50, start=T0 + timedelta(minutes=20), spread_s=600)
        writer.feedback(new[:10] + old[300:305])
        writer.failures(3, "lstm", start=T0 + timedelta(minutes=29))
        second = aggregate(db.metrics, NO_OVERLAP)

        assert second.mode == "incremental" and second.read_from == first.watermark
        assert second.rows_read == {
            "generations": 50,
            "failures": 3,
            "feedback": 15,
            "attributed": 0,
        }
        touched = {
            (variant, bucket_index(created))
            for variant, created, _ in (writer.events.generations[g] for g in new + old[300:305])
        } | {(variant, bucket_index(at)) for variant, at in list(writer.events.failures.values())}
        assert second.buckets == len(touched) < first.buckets
        assert second.watermark is not None and first.watermark is not None
        assert second.watermark > first.watermark
        incremental = stored_buckets(db)
        assert incremental == expected_buckets(writer.events)
        assert full_recomputation(db) == incremental

    def test_a_run_with_nothing_new_reads_nothing_and_changes_nothing(self, db: Database) -> None:
        writer = Writer(db)
        writer.feedback(writer.generations(100)[:30])
        first = aggregate(db.metrics, NO_OVERLAP)
        before = stored_buckets(db)
        again = aggregate(db.metrics, NO_OVERLAP)
        assert again.rows_read == {"generations": 0, "failures": 0, "feedback": 0, "attributed": 0}
        assert again.buckets == 0 and again.watermark == first.watermark
        assert stored_buckets(db) == before

    def test_redelivered_events_count_once(self, db: Database) -> None:
        writer = Writer(db)
        ids = writer.generations(60)
        writer.feedback(ids[:20])
        failures = writer.failures(4, "gpt2")
        aggregate(db.metrics, NO_OVERLAP)
        before = stored_buckets(db)
        # The queue delivers every event again, generations, feedback and failures alike.
        with db.engine.connect() as connection:
            generations = [dict(r._mapping) for r in connection.execute(select(schema.generations))]
            feedback = [dict(r._mapping) for r in connection.execute(select(schema.feedback))]
        writer.write_generations(
            [
                {
                    "generation_id": g["id"],
                    **{k: g[k] for k in ("user_id", "variant", "model_version", "prompt")},
                    **{k: g[k] for k in ("text", "parameters", "latency_ms", "created_at")},
                }
                for g in generations
            ]
        )
        writer.write_feedback(
            [
                {
                    "feedback_id": f["id"],
                    "generation_id": f["generation_id"],
                    "reward": f["reward"],
                    "raw_value": f["raw_value"],
                }
                for f in feedback
            ]
        )
        writer.write_failures(failures)
        report = aggregate(db.metrics, NO_OVERLAP)
        assert report.rows_read["generations"] == 0  # a redelivery records nothing new
        assert stored_buckets(db) == before == expected_buckets(writer.events)

    def test_late_feedback_counts_in_its_generations_bucket(self, db: Database) -> None:
        writer = Writer(db)
        early = writer.generations(1, start=T0, spread_s=1)[0]
        writer.generations(20, start=T0 + timedelta(hours=3), spread_s=60)
        aggregate(db.metrics, NO_OVERLAP)
        variant, created, _ = writer.events.generations[early]
        key = (variant, bucket_start(bucket_index(created)))
        assert stored_buckets(db)[key]["feedback_count"] == 0

        writer.write_feedback(
            [{"feedback_id": "late-1", "generation_id": early, "reward": 1.0, "raw_value": "like"}]
        )
        report = aggregate(db.metrics, NO_OVERLAP)
        assert report.rows_read["feedback"] == 1 and report.buckets == 1
        figures = stored_buckets(db)[key]
        assert (figures["feedback_count"], figures["positive_count"]) == (1, 1)
        assert figures["served"] == 1  # the bucket is of the generation, three hours back

    def test_a_generation_counts_its_latest_feedback_only(self, db: Database) -> None:
        writer = Writer(db)
        liked, other = writer.generations(2, spread_s=1)
        posts = [("alice", 1.0), ("alice", 1.0), ("alice", 0.0), ("mallory", 1.0), ("alice", 0.0)]
        for i, (user, reward) in enumerate(posts):
            writer.write_feedback(
                [
                    {
                        "feedback_id": f"post-{i}",
                        "generation_id": liked,
                        "reward": reward,
                        "raw_value": "like" if reward else "dislike",
                        "user_id": user,
                        "created_at": T0 + timedelta(minutes=40 + i),
                    }
                ]
            )
        writer.feedback([other])
        aggregate(db.metrics, NO_OVERLAP)
        totals = stored_buckets(db)
        assert sum(b["feedback_count"] for b in totals.values()) == 2  # one per generation
        variant, created, _ = writer.events.generations[liked]
        mine = totals[(variant, bucket_start(bucket_index(created)))]
        # The last post, a dislike, stands for the generation; every post stays stored.
        assert mine["reward_sum"] <= 1.0 and totals == expected_buckets(writer.events)
        assert all(db.feedback.get(f"post-{i}") is not None for i in range(len(posts)))
        # A change of mind after a run: the next run counts the new opinion instead.
        writer.write_feedback(
            [
                {
                    "feedback_id": "post-last",
                    "generation_id": liked,
                    "reward": 1.0,
                    "raw_value": "like",
                    "created_at": T0 + timedelta(hours=2),
                }
            ]
        )
        aggregate(db.metrics, NO_OVERLAP)
        assert stored_buckets(db) == expected_buckets(writer.events) == full_recomputation(db)

    def test_feedback_before_its_generation_counts_once_both_exist(self, db: Database) -> None:
        writer = Writer(db)
        writer.generations(10)
        writer.write_feedback(
            [
                {
                    "feedback_id": "f-early",
                    "generation_id": "g-late",
                    "reward": 0.75,
                    "raw_value": "4",
                }
            ]
        )
        aggregate(db.metrics, NO_OVERLAP)
        assert sum(b["feedback_count"] for b in stored_buckets(db).values()) == 0

        created = T0 + timedelta(minutes=7)
        late: dict[str, Any] = {
            "generation_id": "g-late",
            "user_id": "u",
            "variant": "lstm",
            "model_version": "v1",
            "prompt": "",
            "text": "hello",
            "parameters": {},
            "latency_ms": 50.0,
            "created_at": created,
        }
        writer.write_generations([late])
        for _ in range(2):  # and a second run changes nothing
            aggregate(db.metrics, NO_OVERLAP)
            key = ("lstm", bucket_start(bucket_index(created)))
            assert stored_buckets(db)[key]["feedback_count"] == 1
            assert stored_buckets(db) == expected_buckets(writer.events)

    def test_feedback_whose_attribution_raced_is_repaired_by_the_next_run(
        self, db: Database
    ) -> None:
        """Feedback and its generation written concurrently can each miss the other's
        uncommitted row; the aggregation then finds the pair and counts it."""
        writer = Writer(db)
        generation = writer.generations(1)[0]
        with db.engine.begin() as connection:
            connection.execute(
                insert(schema.feedback).values(
                    id="f-raced",
                    generation_id=generation,
                    reward=1.0,
                    raw_value="like",
                    created_at=T0,
                    recorded_at=datetime.now(UTC),
                    deliveries=1,
                    variant=None,
                    generation_created_at=None,
                )
            )
        writer.events.feedback["f-raced"] = (generation, 1.0, T0)
        report = aggregate(db.metrics, NO_OVERLAP)
        assert report.rows_read["attributed"] == 1
        assert stored_buckets(db) == expected_buckets(writer.events)
        assert aggregate(db.metrics, NO_OVERLAP).rows_read["attributed"] == 0

    def test_a_row_that_commits_after_a_newer_one_is_read_within_the_overlap(
        self, db: Database
    ) -> None:
        writer = Writer(db)
        writer.generations(30)
        first = aggregate(db.metrics, AggregationSettings(overlap_seconds=120))
        assert first.watermark is not None
        # A recorder's transaction took its time: its row is stamped before the watermark.
        stamped = first.watermark - timedelta(seconds=20)
        created = T0 + timedelta(minutes=3)
        slow: dict[str, Any] = {
            "id": "g-slow",
            "user_id": "u",
            "variant": "gpt2",
            "model_version": "v1",
            "prompt": "",
            "text": "late commit",
            "parameters": {},
            "latency_ms": 80.0,
            "created_at": created,
            "recorded_at": stamped,
            "deliveries": 1,
        }
        with db.engine.begin() as connection:
            connection.execute(insert(schema.generations).values(**slow))
        writer.events.generations["g-slow"] = ("gpt2", created, 80.0)

        assert aggregate(db.metrics, NO_OVERLAP).rows_read["generations"] == 0  # missed
        second = aggregate(db.metrics, AggregationSettings(overlap_seconds=120))
        assert second.read_from == first.watermark - timedelta(seconds=120)
        assert second.rows_read["generations"] == 31  # the overlap re-reads, idempotently
        assert stored_buckets(db) == expected_buckets(writer.events)

    def test_a_row_stamped_ahead_of_the_clock_does_not_hide_later_rows(self, db: Database) -> None:
        writer = Writer(db)
        ahead = datetime.now(UTC) + timedelta(hours=1)  # a recorder whose clock runs fast
        with db.engine.begin() as connection:
            connection.execute(
                insert(schema.generations).values(
                    id="g-ahead",
                    user_id="u",
                    variant="lstm",
                    model_version="v1",
                    prompt="",
                    text="x",
                    parameters={},
                    latency_ms=10.0,
                    created_at=T0,
                    recorded_at=ahead,
                    deliveries=1,
                )
            )
        writer.events.generations["g-ahead"] = ("lstm", T0, 10.0)
        first = aggregate(db.metrics, NO_OVERLAP)
        assert first.watermark is not None and first.watermark < ahead
        writer.generations(5)
        second = aggregate(db.metrics, NO_OVERLAP)
        assert second.rows_read["generations"] == 6  # the five, and the early one again
        assert stored_buckets(db) == expected_buckets(writer.events)

    def test_failures_are_served_requests_and_errors_in_their_bucket(self, db: Database) -> None:
        writer = Writer(db)
        writer.generations(200)
        writer.failures(15, "gpt2")
        writer.failures(1, "lstm")
        aggregate(db.metrics, NO_OVERLAP)
        totals = db.metrics.totals()
        generated = {
            variant: sum(1 for v, _, _ in writer.events.generations.values() if v == variant)
            for variant in ("lstm", "gpt2")
        }
        assert totals["gpt2"].errors == 15 and totals["lstm"].errors == 1
        assert totals["gpt2"].served == generated["gpt2"] + 15
        assert totals["lstm"].served == generated["lstm"] + 1
        assert stored_buckets(db) == expected_buckets(writer.events)

    def test_latency_percentiles_follow_the_histogram_rule(self, db: Database) -> None:
        writer = Writer(db)
        latencies = [10.0 * (i + 1) for i in range(100)]  # 10 ms .. 1000 ms
        writer.write_generations(
            [
                {
                    "generation_id": f"g{i}",
                    "user_id": "u",
                    "variant": "lstm",
                    "model_version": "v1",
                    "prompt": "",
                    "text": "x",
                    "parameters": {},
                    "latency_ms": latency,
                    "created_at": T0 + timedelta(seconds=i),
                }
                for i, latency in enumerate(latencies)
            ]
        )
        aggregate(db.metrics, NO_OVERLAP)
        (row,) = db.variant_metrics.list()
        assert row.latency_p50_ms is not None and row.latency_p95_ms is not None
        # Within half a bin (2.5 %) of the exact nearest-rank percentiles, 500 and 950 ms.
        assert math.isclose(row.latency_p50_ms, 500.0, rel_tol=0.026)
        assert math.isclose(row.latency_p95_ms, 950.0, rel_tol=0.026)
        p50, p95 = db.metrics.latency_percentiles(T0, ["lstm"])["lstm"]
        assert (p50, p95) == (row.latency_p50_ms, row.latency_p95_ms)

    def test_served_since_counts_whole_buckets_and_the_part_of_the_first(
        self, db: Database
    ) -> None:
        writer = Writer(db)
        writer.generations(300, spread_s=3600)
        writer.failures(5, "lstm")
        aggregate(db.metrics, NO_OVERLAP)
        since = T0 + timedelta(minutes=17, seconds=30)  # inside a bucket
        served = db.metrics.served_since(since, ["lstm", "gpt2", "t5"], BUCKET_SECONDS)
        expected = {"lstm": 0, "gpt2": 0, "t5": 0}
        for variant, created, _ in writer.events.generations.values():
            expected[variant] += created >= since
        for variant, created in writer.events.failures.values():
            expected[variant] += created >= since
        assert served == expected

    def test_a_new_bucket_size_recomputes_everything(self, db: Database) -> None:
        writer = Writer(db)
        writer.feedback(writer.generations(80)[:20])
        aggregate(db.metrics, NO_OVERLAP)
        report = aggregate(db.metrics, AggregationSettings(bucket_seconds=60, overlap_seconds=0))
        assert report.mode == "full"
        assert {row.bucket_start.minute for row in db.variant_metrics.list()} > {0, 5, 10}
        assert sum(b.served for b in db.variant_metrics.list()) == 80

    def test_concurrent_runs_leave_the_same_buckets(self, db: Database) -> None:
        writer = Writer(db)
        writer.feedback(writer.generations(200)[:50])
        aggregate(db.metrics, NO_OVERLAP)
        writer.feedback(writer.generations(100, start=T0 + timedelta(minutes=25))[:40])
        errors: list[BaseException] = []

        def run() -> None:
            try:
                aggregate(db.metrics, NO_OVERLAP)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert stored_buckets(db) == expected_buckets(writer.events)
        with db.engine.connect() as connection:
            count = connection.execute(
                select(func.count()).select_from(schema.aggregation_state)
            ).scalar_one()
        assert count == 1


class TestSqlite(AggregationContract):
    @pytest.fixture
    def db(self, tmp_path: Path) -> Database:
        database = Database.from_url(f"sqlite:///{tmp_path / 'metrics.db'}")
        database.migrate()
        return database


def test_the_recorder_attributes_feedback_in_either_order(tmp_path: Path) -> None:
    """Feedback learns its generation's variant and time from whichever arrives second."""
    db = Database.from_url(f"sqlite:///{tmp_path / 'attribution.db'}")
    db.migrate()
    writer = Writer(db)
    first = writer.generations(1)[0]
    writer.write_feedback(
        [
            {"feedback_id": "after", "generation_id": first, "reward": 1.0, "raw_value": "like"},
            {"feedback_id": "before", "generation_id": "g2", "reward": 0.0, "raw_value": "no"},
        ]
    )
    feedback = schema.feedback

    def attribution() -> dict[str, tuple[Any, Any]]:
        with db.engine.connect() as connection:
            rows = connection.execute(
                select(feedback.c.id, feedback.c.variant, feedback.c.generation_created_at)
            )
            return {fid: (variant, created) for fid, variant, created in rows}

    generation = writer.events.generations[first]
    assert attribution() == {"after": (generation[0], generation[1]), "before": (None, None)}
    created = T0 + timedelta(minutes=2)
    db.generations.record(
        generation_id="g2",
        user_id="u",
        variant="gpt2",
        model_version="v1",
        prompt="",
        text="x",
        parameters={},
        latency_ms=1.0,
        created_at=created,
    )
    assert attribution()["before"] == ("gpt2", created)
