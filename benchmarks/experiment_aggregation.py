"""The experiment aggregation on MariaDB: a full run over 1M generations and 300k feedback,
and an incremental run after 10k new events.

- Data: a week of traffic before now on two variants (1,000,000 generations with log-normal
  latencies, each recorded a few seconds after it was served; 300,000 feedback rows on random
  generations, attributed to their generation as the recorder leaves them; 2,000 failures),
  bulk-loaded with ``LOAD DATA LOCAL INFILE`` in primary-key order into a migrated database.
- Full aggregation: ``MetricsRepository.aggregate(full=True)``, every 5-minute bucket of both
  variants from scratch, percentiles included (goal < 2 s). Baseline: the naive recomputation
  that ``GET /experiment`` ran before the engine, per-variant totals by one GROUP BY over the
  raw tables joining feedback to generations (``GenerationRepository.variant_totals``: no
  buckets, no percentiles).
- Incremental run: 10,000 new events (7,600 generations, 2,300 feedback on recent
  generations, 100 failures) written through the recorder's repositories in batches of 100,
  then one incremental run (goal < 200 ms). Baseline: a full aggregation of the same data,
  measured right after. The incremental buckets are checked against that full recomputation.

``TWEETGEN_TEST_MYSQL_URL`` names the server (default ``mysql+pymysql://root@127.0.0.1:3306/test``);
a database is created for the run and dropped at its end.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_DATA,
    BenchResult,
    Row,
    base_parser,
    ensure_project_importable,
    finish,
    make_row,
    median,
    progress,
)

NAME = "experiment_aggregation"
MYSQL_URL = os.environ.get("TWEETGEN_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
FULL_GOAL_S = 2.0
INCREMENTAL_GOAL_MS = 200.0
VARIANTS = ("lstm", "gpt2")
BATCH = 100


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


def _generation_id(rng: random.Random, variant: str) -> str:
    return f"{rng.getrandbits(128):032x}.{variant}.{rng.getrandbits(96):024x}"


def _write_files(
    folder: Path, generations: int, feedback: int, failures: int, end: datetime, seed: int
) -> dict[str, Path]:
    """Tab-separated rows for LOAD DATA, each file in primary-key order (fast to load)."""
    rng = random.Random(seed)
    span = timedelta(days=7).total_seconds()
    # The week ends a quarter of an hour ago: its feedback (up to ten minutes after its
    # generation) was all recorded before now.
    start = end - timedelta(days=7, minutes=15)
    rows: list[tuple[str, str]] = []
    picked: list[tuple[str, str, datetime]] = []
    feedback_of = set(rng.sample(range(generations), feedback))
    for i in range(generations):
        variant = VARIANTS[i % 2]
        generation_id = _generation_id(rng, variant)
        created = start + timedelta(seconds=span * i / generations)
        recorded = created + timedelta(seconds=rng.uniform(0.05, 3.0))
        latency = rng.lognormvariate(4.0 if variant == "lstm" else 4.5, 0.4)
        rows.append(
            (
                generation_id,
                f"{generation_id}\tuser-{rng.randrange(50_000)}\t{variant}\tv1\tgood morning\t"
                f'to everyone who is up early today\t{{"max_new_tokens": 16}}\t{latency:.3f}\t'
                f"{_stamp(created)}\t{_stamp(recorded)}\t1\n",
            )
        )
        if i in feedback_of:
            picked.append((generation_id, variant, created))
    paths = {name: folder / f"{name}.tsv" for name in ("generations", "feedback", "failures")}
    rows.sort()
    with open(paths["generations"], "w", encoding="utf-8") as handle:
        handle.writelines(line for _, line in rows)
    feedback_rows = []
    for generation_id, variant, created in picked:
        reward = rng.choice((0.0, 0.25, 0.5, 0.75, 1.0))
        given = created + timedelta(seconds=rng.uniform(5, 600))
        recorded = given + timedelta(seconds=rng.uniform(0.05, 3.0))
        feedback_id = f"{rng.getrandbits(128):032x}"
        feedback_rows.append(
            (
                feedback_id,
                f"{feedback_id}\t{generation_id}\t\\N\t{reward}\t{reward}\t{_stamp(given)}\t"
                f"{_stamp(recorded)}\t1\t{variant}\t{_stamp(created)}\n",
            )
        )
    feedback_rows.sort()
    with open(paths["feedback"], "w", encoding="utf-8") as handle:
        handle.writelines(line for _, line in feedback_rows)
    failure_rows = []
    for _ in range(failures):
        failure_id = f"{rng.getrandbits(128):032x}"
        created = start + timedelta(seconds=rng.uniform(0, span))
        recorded = created + timedelta(seconds=rng.uniform(0.05, 3.0))
        failure_rows.append(
            (
                failure_id,
                f"{failure_id}\t{rng.choice(VARIANTS)}\tModelError: the container crashed\t"
                f"{_stamp(created)}\t{_stamp(recorded)}\t1\n",
            )
        )
    failure_rows.sort()
    with open(paths["failures"], "w", encoding="utf-8") as handle:
        handle.writelines(line for _, line in failure_rows)
    return paths


_LOAD = {
    "generations": (
        "generations",
        "(id, user_id, variant, model_version, prompt, text, parameters, latency_ms,"
        " created_at, recorded_at, deliveries)",
    ),
    "feedback": (
        "feedback",
        "(id, generation_id, user_id, reward, raw_value, created_at, recorded_at, deliveries,"
        " variant, generation_created_at)",
    ),
    "failures": (
        "generation_failures",
        "(id, variant, reason, created_at, recorded_at, deliveries)",
    ),
}


def _load(url: Any, paths: dict[str, Path]) -> None:
    import sqlalchemy

    loader = sqlalchemy.create_engine(url, connect_args={"local_infile": True})
    try:
        with loader.begin() as connection:
            connection.exec_driver_sql("SET SESSION unique_checks = 0")
            connection.exec_driver_sql("SET SESSION time_zone = '+00:00'")
            for name, path in paths.items():
                table, columns = _LOAD[name]
                connection.exec_driver_sql(
                    f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table} {columns}"
                )
            connection.exec_driver_sql("SET SESSION unique_checks = 1")
    finally:
        loader.dispose()


def _new_events(db: Any, count: int, rng: random.Random) -> None:
    """``count`` new events through the recorder's repositories: 76 % generations, 23 %
    feedback on generations of the last ten minutes, 1 % failures."""
    now = datetime.now(UTC)
    generations = []
    for _ in range(int(count * 0.76)):
        variant = rng.choice(VARIANTS)
        generations.append(
            {
                "generation_id": _generation_id(rng, variant),
                "user_id": f"user-{rng.randrange(50_000)}",
                "variant": variant,
                "model_version": "v1",
                "prompt": "good morning",
                "text": "to everyone who is up early today",
                "parameters": {"max_new_tokens": 16},
                "latency_ms": rng.lognormvariate(4.2, 0.4),
                "created_at": now - timedelta(seconds=rng.uniform(0, 600)),
            }
        )
    for start in range(0, len(generations), BATCH):
        db.generations.record_many(generations[start : start + BATCH])
    rated = rng.sample(generations, int(count * 0.23))
    feedback = [
        {
            "feedback_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "generation_id": generation["generation_id"],
            "reward": rng.choice((0.0, 1.0)),
            "raw_value": "like",
        }
        for generation in rated
    ]
    for start in range(0, len(feedback), BATCH):
        db.feedback.record_many(feedback[start : start + BATCH])
    failures = [
        {
            "failure_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "variant": rng.choice(VARIANTS),
            "reason": "ModelError",
            "created_at": now - timedelta(seconds=rng.uniform(0, 60)),
        }
        for _ in range(count - len(generations) - len(feedback))
    ]
    db.failures.record_many(failures)


def _buckets(db: Any) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    return {
        (row.variant, row.bucket_start): (
            row.served,
            row.errors,
            row.feedback_count,
            row.positive_count,
            round(row.reward_sum, 6),
            row.latency_p50_ms,
            row.latency_p95_ms,
        )
        for row in db.variant_metrics.list()
    }


def measure(
    generations: int, feedback: int, new_events: int, rounds: int, seed: int
) -> dict[str, Any]:
    ensure_project_importable()
    import sqlalchemy
    from tweetgen.adapters.database import Database, dispose_engines, normalise_url
    from tweetgen.services.experiment import AggregationSettings, aggregate

    admin_url = normalise_url(MYSQL_URL)
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"tweetgen_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
    result: dict[str, Any] = {}
    try:
        url = admin_url.set(database=name)
        db = Database.from_url(url)
        db.migrate()
        with tempfile.TemporaryDirectory(prefix="tweetgen-agg-") as folder:
            progress(NAME, f"writing {generations:,} generations and {feedback:,} feedback")
            paths = _write_files(
                Path(folder), generations, feedback, generations // 500, datetime.now(UTC), seed
            )
            progress(NAME, "LOAD DATA")
            started = time.perf_counter()
            _load(url, paths)
            result["load_s"] = time.perf_counter() - started
        settings = AggregationSettings()
        progress(NAME, "full aggregation (a warm-up, then timed runs)")
        full = [aggregate(db.metrics, settings, full=True).seconds for _ in range(3)]
        result["full_s"] = median(full[1:])
        result["full_runs_s"] = full
        result["buckets"] = len(db.variant_metrics.list())
        progress(NAME, "the sample-ratio check's counts over its window (the last day)")
        window = datetime.now(UTC) - timedelta(seconds=settings.srm_window_seconds)
        users, served = [], []
        for _ in range(3):
            started = time.perf_counter()
            result["users_since"] = db.metrics.users_since(window, list(VARIANTS))
            users.append(time.perf_counter() - started)
            started = time.perf_counter()
            db.metrics.served_since(window, list(VARIANTS), settings.bucket_seconds)
            served.append(time.perf_counter() - started)
        result["users_since_s"], result["served_since_s"] = median(users), median(served)
        progress(NAME, "naive GROUP BY over the raw tables")
        started = time.perf_counter()
        totals = db.generations.variant_totals()
        result["naive_s"] = time.perf_counter() - started
        result["naive_served"] = {k: v.served for k, v in totals.items()}
        rng = random.Random(seed + 1)
        incremental, reads = [], []
        for round_ in range(rounds):
            progress(NAME, f"round {round_ + 1}: {new_events:,} new events, then a run")
            _new_events(db, new_events, rng)
            report = aggregate(db.metrics, settings)
            assert report.mode == "incremental", report
            incremental.append(report.seconds)
            reads.append(report.as_dict())
        result["incremental_s"] = median(incremental)
        result["incremental_runs_s"] = incremental
        result["incremental_reports"] = reads
        after_incremental = _buckets(db)
        progress(NAME, "full aggregation of the same data (the incremental run's baseline)")
        again = [aggregate(db.metrics, settings, full=True).seconds for _ in range(2)]
        result["full_after_s"] = median(again)
        result["incremental_equals_full"] = after_incremental == _buckets(db)
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
    return result


def run(quick: bool = False, data: Path = DEFAULT_DATA, seed: int = 7) -> BenchResult:
    started = time.perf_counter()
    generations, feedback, new_events = (
        (100_000, 30_000, 1_000) if quick else (1_000_000, 300_000, 10_000)
    )
    rows: list[Row] = []
    notes: list[str] = []
    try:
        figures = measure(generations, feedback, new_events, rounds=3, seed=seed)
    except Exception as exc:  # no MariaDB here: say so rather than fail the whole report
        return {
            "name": NAME,
            "title": "Experiment aggregation on MariaDB",
            "rows": [],
            "notes": [f"not measured: {type(exc).__name__}: {exc}"],
            "details": {},
            "seconds": time.perf_counter() - started,
        }
    rows.append(
        make_row(
            NAME,
            f"full aggregation, {generations:,} generations + {feedback:,} feedback (s)",
            figures["full_s"],
            "s",
            figures["naive_s"],
            "naive GROUP BY join of the raw tables (per-variant totals only)",
            higher_is_better=False,
        )
    )
    rows.append(
        make_row(
            NAME,
            f"incremental run after {new_events:,} new events (ms)",
            figures["incremental_s"] * 1000.0,
            "ms",
            figures["full_after_s"] * 1000.0,
            "full aggregation of the same data",
            higher_is_better=False,
        )
    )
    rows.append(
        make_row(
            NAME,
            f"sample-ratio check: distinct users of the last day of a week of {generations:,}"
            " generations (ms)",
            figures["users_since_s"] * 1000.0,
            "ms",
            figures["served_since_s"] * 1000.0,
            "the requests of the same day, from the buckets (what it counted before)",
            higher_is_better=False,
        )
    )
    met = "met" if figures["full_s"] < FULL_GOAL_S else "NOT met"
    notes.append(f"full aggregation goal < {FULL_GOAL_S:g} s: {met} ({figures['full_s']:.2f} s)")
    incremental_ms = figures["incremental_s"] * 1000.0
    met = "met" if incremental_ms < INCREMENTAL_GOAL_MS else "NOT met"
    notes.append(
        f"incremental run goal < {INCREMENTAL_GOAL_MS:g} ms: {met} ({incremental_ms:.0f} ms,"
        f" median of {len(figures['incremental_runs_s'])} rounds)"
    )
    notes.append(
        f"{figures['buckets']:,} buckets; bulk load {figures['load_s']:.0f} s; incremental"
        f" buckets equal a full recomputation: {figures['incremental_equals_full']}"
    )
    return {
        "name": NAME,
        "title": "Experiment aggregation on MariaDB",
        "rows": rows,
        "notes": notes,
        "details": figures,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    finish(run(args.quick, args.data, args.seed), args.json)


if __name__ == "__main__":
    main()
