"""The database adapter on SQLite, plus the contract every backend must keep.

:class:`DatabaseContract` holds the behaviours shared by SQLite and MySQL; this module runs it
on a temporary SQLite file and ``tests/integration/test_database_mysql.py`` on MariaDB/MySQL.
A backend provides two fixtures: ``db`` (a migrated database) and ``new_url`` (a factory of
URLs of empty databases).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import Connection, Engine, delete, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from tweetgen.adapters.database import (
    MIGRATIONS,
    Database,
    DatabaseConfigError,
    DatabaseRolloutRecorder,
    Migration,
    RolloutNotFoundError,
    applied_versions,
    create_engine,
    dispose_engines,
    is_unreachable,
    migrate,
    schema,
)
from tweetgen.adapters.database.migrations import schema_migrations
from tweetgen.services.rollout import RolloutRecorder

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_VERSIONS = [migration.version for migration in MIGRATIONS]
URLFactory = Callable[[], str]


def unique(prefix: str) -> str:
    """Ids unique across tests: MySQL runs the contract on one database per session."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def count(db: Database, table: Any, *conditions: Any) -> int:
    with db.engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).select_from(table).where(*conditions)
            ).scalar_one()
        )


def clear(db: Database, table: Any) -> None:
    with db.engine.begin() as connection:
        connection.execute(delete(table))


def record_generation(db: Database, generation_id: str, **overrides: Any) -> bool:
    values: dict[str, Any] = {
        "generation_id": generation_id,
        "user_id": "user-1",
        "variant": "lstm",
        "model_version": "v1",
        "prompt": "good morning",
        "text": " to everyone 🌞",
        "parameters": {"max_new_tokens": 32, "temperature": 0.8},
        "latency_ms": 41.5,
        "created_at": datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
    }
    values.update(overrides)
    return db.generations.record(**values)


def run_together(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``workers`` threads released at the same instant."""
    barrier = threading.Barrier(workers)

    def start(index: int) -> Any:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(start, range(workers)))


class DatabaseContract:
    """What every backend must do; subclasses supply the ``db`` and ``new_url`` fixtures."""

    # --- migrations -------------------------------------------------------------------------

    def test_migrate_from_empty_then_again_is_a_noop(self, new_url: URLFactory) -> None:
        engine = create_engine(new_url())
        try:
            assert applied_versions(engine) == []
            assert migrate(engine) == ALL_VERSIONS
            assert migrate(engine) == []
            assert applied_versions(engine) == ALL_VERSIONS
            with engine.connect() as connection:
                names = connection.execute(select(schema_migrations.c.name)).scalars().all()
            assert names == [migration.name for migration in MIGRATIONS]
        finally:
            engine.dispose()

    def test_migrated_database_matches_the_schema_module(self, db: Database) -> None:
        inspector = inspect(db.engine)
        expected = [*schema.metadata.sorted_tables, schema_migrations]
        assert {t.name for t in expected} <= set(inspector.get_table_names())
        for table in expected:
            columns = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert set(columns) == set(table.c.keys()), table.name
            for column in table.c:
                assert columns[column.name]["nullable"] == column.nullable, (
                    table.name,
                    column.name,
                )
            primary_key = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert primary_key == [c.name for c in table.primary_key], table.name
            indexes = {
                index["name"]: index["column_names"] for index in inspector.get_indexes(table.name)
            }
            for index in table.indexes:
                assert indexes.get(index.name) == [c.name for c in index.columns], index.name

    def test_concurrent_migrators_apply_each_step_once(self, new_url: URLFactory) -> None:
        url = new_url()
        engines = [create_engine(url) for _ in range(3)]
        try:
            results = run_together(3, lambda i: migrate(engines[i]))
            assert sorted(results, key=len) == [[], [], ALL_VERSIONS]
            assert applied_versions(engines[0]) == ALL_VERSIONS
        finally:
            for engine in engines:
                engine.dispose()

    def test_a_slow_step_holds_off_the_second_migrator(self, new_url: URLFactory) -> None:
        runs: list[float] = []

        def slow(connection: Connection) -> None:
            runs.append(time.monotonic())
            time.sleep(0.4)
            connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))

        steps = (Migration(1, "slow probe", slow),)
        url = new_url()
        engines = [create_engine(url) for _ in range(2)]
        try:
            results = run_together(2, lambda i: migrate(engines[i], steps))
            assert sorted(results, key=len) == [[], [1]]
            assert len(runs) == 1
        finally:
            for engine in engines:
                engine.dispose()

    def test_migration_versions_must_ascend(self, db: Database) -> None:
        noop = MIGRATIONS[0].upgrade
        with pytest.raises(ValueError, match="unique and ascending"):
            migrate(db.engine, (Migration(2, "b", noop), Migration(1, "a", noop)))

    # --- model versions ---------------------------------------------------------------------

    def test_model_version_round_trip_and_upsert(self, db: Database) -> None:
        variant = unique("lstm")
        built = datetime(2026, 4, 30, 9, 15, 1, 250000, tzinfo=UTC)
        first = db.model_versions.record(
            variant=variant,
            version="v1",
            kind="lstm",
            s3_uri=f"s3://artifacts/models/{variant}/v1/model.tar.gz",
            metadata={"kind": "lstm", "tokenizer": {"path": "tokenizer.json"}},
            offline_metrics={"perplexity": 41.2},
            created_at=built,
            registered_at=built + timedelta(hours=1),
        )
        assert first == db.model_versions.get(variant, "v1")
        assert first.metadata == {"kind": "lstm", "tokenizer": {"path": "tokenizer.json"}}
        assert first.offline_metrics == {"perplexity": 41.2}
        assert first.created_at == built
        db.model_versions.record(
            variant=variant,
            version="v2",
            kind="lstm",
            s3_uri="s3://artifacts/v2",
            metadata={},
            registered_at=built + timedelta(hours=2),
        )
        latest = db.model_versions.latest(variant)
        assert latest is not None and latest.version == "v2"
        assert latest.offline_metrics == {}
        assert latest.created_at == latest.registered_at
        # Rolled out again: v1 is refreshed in place and serves again.
        again = db.model_versions.record(
            variant=variant,
            version="v1",
            kind="lstm",
            s3_uri="s3://artifacts/v1-again",
            metadata={"kind": "lstm"},
            offline_metrics={"perplexity": 40.0},
            created_at=built,
            registered_at=built + timedelta(hours=3),
        )
        assert again.s3_uri == "s3://artifacts/v1-again"
        assert again.offline_metrics == {"perplexity": 40.0}
        assert db.model_versions.latest(variant) == again
        assert count(db, schema.model_versions, schema.model_versions.c.variant == variant) == 2
        assert db.model_versions.get(variant, "v9") is None
        assert db.model_versions.latest(unique("none")) is None

    # --- rollouts ---------------------------------------------------------------------------

    def test_rollout_start_and_finish_are_idempotent(self, db: Database) -> None:
        execution = f"arn:aws:states:eu-west-1:123456789012:execution:rollout:{uuid.uuid4()}"
        started = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
        rollout = db.rollouts.start(execution, "gpt2", "v7", started_at=started)
        assert (rollout.status, rollout.reason, rollout.steps) == ("running", None, None)
        assert rollout.finished_at is None and rollout.duration_s is None
        # A retried start keeps the first record.
        assert (
            db.rollouts.start(execution, "gpt2", "v7", started_at=started + timedelta(minutes=1))
            == rollout
        )
        steps = [{"state": "Validate", "ok": True}, {"state": "SmokeTest", "ok": True}]
        finished = started + timedelta(minutes=4, seconds=30)
        done = db.rollouts.finish(execution, "succeeded", "serving", steps, finished)
        assert done.status == "succeeded" and done.reason == "serving"
        assert done.steps == steps
        assert done.finished_at == finished and done.duration_s == pytest.approx(270.0)
        assert db.rollouts.finish(execution, "succeeded", "serving", steps, finished) == done
        # Without a time, a retry keeps the first finish time.
        assert db.rollouts.finish(execution, "succeeded", "serving", steps) == done
        assert db.rollouts.get(execution) == done
        assert count(db, schema.rollouts, schema.rollouts.c.id == execution) == 1

    def test_rollout_finish_checks_its_input(self, db: Database) -> None:
        with pytest.raises(RolloutNotFoundError, match="never started"):
            db.rollouts.finish(unique("missing"), "failed", "boom")
        execution = unique("exec")
        db.rollouts.start(execution, "lstm", "v1")
        with pytest.raises(ValueError, match="not 'running'"):
            db.rollouts.finish(execution, "running")
        failed = db.rollouts.finish(execution, "rolled_back", "smoke test: empty text")
        assert failed.status == "rolled_back" and failed.steps is None
        assert db.rollouts.get(unique("missing")) is None

    def test_a_rollout_of_an_unparseable_key_is_recorded(self, db: Database) -> None:
        execution = unique("exec")
        db.rollouts.start(execution, None, None)
        failed = db.rollouts.finish(execution, "failed", "key uploads/x.tar.gz is outside models/")
        assert (failed.variant, failed.version, failed.status) == (None, None, "failed")

    def test_the_record_step_writes_through_the_recorder(self, db: Database) -> None:
        recorder: RolloutRecorder = DatabaseRolloutRecorder(db.model_versions, db.rollouts)
        variant, execution = unique("gpt2"), unique("exec")
        started = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
        recorder.record_model_version(
            variant=variant,
            version="v3",
            kind="gpt2",
            s3_uri=f"s3://artifacts/models/{variant}/v3/model.tar.gz",
            metadata={"kind": "gpt2", "created": "2026-05-03T22:00:00Z"},
            metrics={"perplexity": 33.0},
        )
        recorder.start_rollout(
            execution_id=execution, variant=variant, version="v3", started_at=started
        )
        # A version already serving: the rollout completes with nothing to do.
        recorder.finish_rollout(
            execution_id=execution,
            status="unchanged",
            reason="v3 already serves",
            steps=[{"name": "Plan", "duration_s": 0.2}],
            finished_at=started + timedelta(seconds=20),
        )
        version = db.model_versions.get(variant, "v3")
        assert version is not None and version.offline_metrics == {"perplexity": 33.0}
        assert version.created_at == datetime(2026, 5, 3, 22, 0, tzinfo=UTC)
        rollout = db.rollouts.get(execution)
        assert rollout is not None and rollout.status == "unchanged" and rollout.duration_s == 20.0
        with pytest.raises(ValueError, match="unknown rollout status 'done'"):
            recorder.finish_rollout(
                execution_id=execution, status="done", reason="", steps=[], finished_at=started
            )

    def test_rollouts_list_newest_first(self, db: Database) -> None:
        variant, other = unique("lstm"), unique("gpt2")
        base = datetime(2026, 5, 2, tzinfo=UTC)
        for minute in range(5):
            db.rollouts.start(
                f"{variant}-{minute}",
                variant,
                f"v{minute}",
                started_at=base + timedelta(minutes=minute),
            )
        db.rollouts.start(f"{other}-0", other, "v0", started_at=base + timedelta(hours=1))
        listed = db.rollouts.list(variant=variant, limit=3)
        assert [r.version for r in listed] == ["v4", "v3", "v2"]
        clear(db, schema.rollouts)
        db.rollouts.start(f"{variant}-a", variant, "va", started_at=base)
        db.rollouts.start(f"{other}-b", other, "vb", started_at=base + timedelta(seconds=1))
        assert [r.version for r in db.rollouts.list()] == ["vb", "va"]
        assert db.rollouts.list(variant=unique("none")) == []

    # --- generations and feedback -------------------------------------------------------------

    def test_generation_round_trip_and_redelivery(self, db: Database) -> None:
        generation_id = unique("gen")
        assert record_generation(db, generation_id) is True
        stored = db.generations.get(generation_id)
        assert stored is not None
        assert (stored.user_id, stored.variant, stored.model_version) == ("user-1", "lstm", "v1")
        assert stored.text == " to everyone 🌞" and stored.prompt == "good morning"
        assert stored.parameters == {"max_new_tokens": 32, "temperature": 0.8}
        assert stored.latency_ms == 41.5 and stored.deliveries == 1
        assert stored.created_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        assert stored.recorded_at.tzinfo is UTC
        # A redelivered event counts once; the first content stands.
        assert record_generation(db, generation_id, text="something else") is False
        again = db.generations.get(generation_id)
        assert again is not None and again.text == stored.text and again.deliveries == 2
        assert count(db, schema.generations, schema.generations.c.id == generation_id) == 1
        assert db.generations.get(unique("missing")) is None

    def test_the_same_feedback_key_counts_once(self, db: Database) -> None:
        key = unique("msg")
        generation_id = unique("gen")
        assert db.feedback.record(
            feedback_id=key,
            generation_id=generation_id,
            reward=1.0,
            raw_value="like",
            user_id="u-7",
        )
        assert not db.feedback.record(
            feedback_id=key, generation_id=generation_id, reward=0.0, raw_value="dislike"
        )
        stored = db.feedback.get(key)
        assert stored is not None
        assert (stored.reward, stored.raw_value, stored.user_id) == (1.0, "like", "u-7")
        assert stored.deliveries == 2
        assert count(db, schema.feedback, schema.feedback.c.id == key) == 1
        rating = unique("msg")
        db.feedback.record(
            feedback_id=rating, generation_id=generation_id, reward=0.75, raw_value="4"
        )
        assert count(db, schema.feedback, schema.feedback.c.generation_id == generation_id) == 2

    def test_feedback_may_arrive_before_its_generation(self, db: Database) -> None:
        early, late = unique("gen"), unique("gen")
        record_generation(db, late)
        db.feedback.record(
            feedback_id=unique("msg"), generation_id=early, reward=1.0, raw_value="like"
        )
        db.feedback.record(
            feedback_id=unique("msg"), generation_id=late, reward=0.0, raw_value="dislike"
        )
        waiting = {f.generation_id for f in db.feedback.pending_without_generation()}
        assert early in waiting and late not in waiting
        record_generation(db, early)
        assert early not in {f.generation_id for f in db.feedback.pending_without_generation()}

    @pytest.mark.parametrize("reward", [-0.01, 1.01, math.nan, math.inf])
    def test_feedback_reward_must_be_normalised(self, db: Database, reward: float) -> None:
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            db.feedback.record(
                feedback_id=unique("msg"), generation_id="g", reward=reward, raw_value="5"
            )

    def test_the_database_itself_refuses_an_unnormalised_reward(self, db: Database) -> None:
        now = datetime.now(UTC)
        row = {
            "id": unique("msg"),
            "generation_id": "g",
            "reward": 5.0,
            "raw_value": "5",
            "created_at": now,
            "recorded_at": now,
            "deliveries": 1,
        }
        # SQLite and MySQL call it an integrity error, MariaDB an operational one.
        with pytest.raises(DBAPIError, match="ck_feedback_reward"), db.engine.begin() as connection:
            connection.execute(schema.feedback.insert().values(**row))

    def test_text_is_stored_literally(self, db: Database) -> None:
        hostile = "'); DROP TABLE feedback; -- \\ \" % _ \x00? 🙂 ñ 漢字"
        generation_id = unique("gen")
        record_generation(db, generation_id, prompt=hostile, text=hostile, user_id=hostile[:100])
        stored = db.generations.get(generation_id)
        assert stored is not None and stored.prompt == hostile and stored.text == hostile
        assert inspect(db.engine).has_table("feedback")

    def test_concurrent_redeliveries_count_once(self, db: Database) -> None:
        keys = [unique("msg") for _ in range(25)]
        generation_id = unique("gen")
        engines = [create_engine(db.engine.url) for _ in range(4)]

        def deliver(worker: int) -> int:
            target = Database(engines[worker])
            return sum(
                target.feedback.record(
                    feedback_id=key, generation_id=generation_id, reward=1.0, raw_value="like"
                )
                for key in keys
            )

        try:
            assert sum(run_together(4, deliver)) == len(keys)
        finally:
            for engine in engines:
                engine.dispose()
        assert count(db, schema.feedback, schema.feedback.c.generation_id == generation_id) == 25
        stored = db.feedback.get(keys[0])
        assert stored is not None and stored.deliveries == 4

    # --- decisions ----------------------------------------------------------------------------

    def test_decisions_record_and_latest(self, db: Database) -> None:
        clear(db, schema.decisions)
        assert db.decisions.latest() is None
        at = datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
        first = db.decisions.record(
            policy="thompson",
            weights={"lstm": 0.3, "gpt2": 0.7},
            statistics={
                "lstm": {"served": 120, "positive": 30},
                "gpt2": {"served": 118, "positive": 52},
            },
            reason="gpt2 better with probability 0.97",
            applied=True,
            created_at=at,
        )
        assert first.weights == {"lstm": 0.3, "gpt2": 0.7} and first.applied is True
        second = db.decisions.record(
            policy="thompson",
            weights={"lstm": 0.5, "gpt2": 0.5},
            statistics={},
            reason="not enough feedback",
            applied=False,
            decision_id="tick-2026-05-03T09:00",
            created_at=at + timedelta(hours=1),
        )
        assert second.id == "tick-2026-05-03T09:00" and second.applied is False
        assert db.decisions.latest() == second
        # The same tick again returns the first record of it.
        repeat = db.decisions.record(
            policy="other",
            weights={},
            statistics={},
            reason="retry",
            applied=True,
            decision_id="tick-2026-05-03T09:00",
        )
        assert repeat == second
        assert count(db, schema.decisions) == 2

    # --- time -----------------------------------------------------------------------------------

    def test_timestamps_are_stored_and_returned_in_utc(self, db: Database) -> None:
        paris = timezone(timedelta(hours=2))
        local = datetime(2026, 5, 1, 14, 30, 15, 123456, tzinfo=paris)
        generation_id = unique("gen")
        record_generation(db, generation_id, created_at=local)
        stored = db.generations.get(generation_id)
        assert stored is not None
        assert stored.created_at == local and stored.created_at.tzinfo is UTC
        assert stored.created_at.hour == 12 and stored.created_at.microsecond == 123456
        with db.engine.connect() as connection:
            raw = connection.execute(
                text("SELECT created_at FROM generations WHERE id = :id"), {"id": generation_id}
            ).scalar_one()
        # The column holds the UTC wall time, whatever the driver's type for it.
        assert str(raw).startswith("2026-05-01 12:30:15.123456")

    def test_naive_timestamps_are_refused(self, db: Database) -> None:
        with pytest.raises(StatementError, match="naive datetime"):
            record_generation(db, unique("gen"), created_at=datetime(2026, 5, 1, 12, 0))


# --- SQLite -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _forget_engines() -> Iterator[None]:
    yield
    dispose_engines()


@pytest.fixture
def new_url(tmp_path: Path) -> URLFactory:
    names = iter(range(1000))
    return lambda: f"sqlite:///{tmp_path}/empty-{next(names)}/tweetgen.db"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path}/tweetgen.db")
    database.migrate()
    return database


class TestSqlite(DatabaseContract):
    """The contract on a SQLite file, the local stack's default."""


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(db: Database) -> None:
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000


def test_a_failing_step_leaves_a_sqlite_database_untouched(tmp_path: Path) -> None:
    def create(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE first_step (id INTEGER PRIMARY KEY)"))

    def fail(connection: Connection) -> None:
        raise RuntimeError("step 2 broke")

    engine = create_engine(f"sqlite:///{tmp_path}/t.db")
    with pytest.raises(RuntimeError, match="step 2 broke"):
        migrate(engine, (Migration(1, "first", create), Migration(2, "broken", fail)))
    assert applied_versions(engine) == []
    assert not inspect(engine).has_table("first_step")
    assert migrate(engine, (Migration(1, "first", create),)) == [1]


def test_migrate_refuses_a_sqlite_engine_it_cannot_lock(tmp_path: Path) -> None:
    import sqlalchemy

    engine: Engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/plain.db")
    with pytest.raises(ValueError, match="needs an engine from tweetgen"):
        migrate(engine)


def test_migrators_in_separate_processes(tmp_path: Path) -> None:
    """The local stack starts functions as processes; each may migrate the same file at start."""
    url = f"sqlite:///{tmp_path}/shared.db"
    start_at = time.time() + 1.5
    script = (
        "import json, sys, time\n"
        "from tweetgen.adapters.database import create_engine, migrate\n"
        "engine = create_engine(sys.argv[1])\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(json.dumps(migrate(engine)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "layers" / "common")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(results, key=len) == [[], [], [], ALL_VERSIONS]


def test_many_threads_write_one_sqlite_file(db: Database) -> None:
    def write(worker: int) -> None:
        for n in range(40):
            record_generation(db, f"w{worker}-{n}")
            db.feedback.record(
                feedback_id=f"w{worker}-{n}",
                generation_id=f"w{worker}-{n}",
                reward=1.0,
                raw_value="like",
            )

    run_together(8, write)
    assert count(db, schema.generations) == 320
    assert count(db, schema.feedback) == 320


def test_the_engine_is_shared_per_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    assert Database.from_url(url).engine is Database.from_url(url).engine
    assert (
        Database.from_url(url).engine
        is not Database.from_url(f"sqlite:///{tmp_path}/other.db").engine
    )


def test_an_in_memory_database_is_one_database(tmp_path: Path) -> None:
    db = Database.from_url("sqlite://")
    db.migrate()
    record_generation(db, "g")
    assert run_together(2, lambda _: db.generations.get("g") is not None) == [True, True]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "mysql://app:pw@db.internal/tweetgen",
            "mysql+pymysql://app:***@db.internal/tweetgen?charset=utf8mb4",
        ),
        ("mariadb://app@db/t?charset=latin1", "mariadb+pymysql://app@db/t?charset=latin1"),
        ("mysql+pymysql://app@db:3307/t", "mysql+pymysql://app@db:3307/t?charset=utf8mb4"),
    ],
)
def test_mysql_urls_get_pymysql_and_utf8mb4(given: str, expected: str) -> None:
    db = Database.from_url(given)
    assert repr(db.url) == expected
    assert db.engine.pool._pre_ping
    assert db.engine.pool._recycle == 280


def test_unsupported_urls_say_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///PATH or mysql\+pymysql://"):
        Database.from_url("postgresql://u:pw@h/d")


# --- configuration from the environment and Secrets Manager ----------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from aws_lambda_powertools.utilities import parameters

    for name, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")
    parameters.clear_caches()


PASSWORD = "p@ss:w/rd%20?#x"


def test_from_environment_builds_the_url_from_a_cluster_secret(
    aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = {
        "engine": "mysql",
        "host": "tweetgen.cluster-abc.eu-west-1.rds.amazonaws.com",
        "port": 3306,
        "dbname": "tweetgen",
        "username": "tweetgen_app",
        "password": PASSWORD,
    }
    arn = aws.create_secret(Name="tweetgen/db", SecretString=json.dumps(secret))["ARN"]
    caplog.set_level("DEBUG", logger="tweetgen")
    db = Database.from_environment({"DATABASE_SECRET_ARN": arn})
    url = db.url
    assert (url.drivername, url.username, url.password) == (
        "mysql+pymysql",
        "tweetgen_app",
        PASSWORD,
    )
    assert (url.host, url.port, url.database) == (secret["host"], 3306, "tweetgen")
    assert url.query == {"charset": "utf8mb4"}
    for shown in (repr(db), str(db.url), repr(db.url), caplog.text):
        assert PASSWORD not in shown
    # The secret is cached (Powertools) and the engine reused: no second read is needed.
    aws.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert Database.from_environment({"DATABASE_SECRET_ARN": arn}).engine is db.engine


def test_from_environment_completes_an_rds_managed_secret(aws: Any) -> None:
    arn = aws.create_secret(
        Name="rds!cluster-1234",
        SecretString=json.dumps({"username": "admin", "password": PASSWORD}),
    )["ARN"]
    env = {
        "DATABASE_SECRET_ARN": arn,
        "DATABASE_HOST": "proxy.internal",
        "DATABASE_PORT": "3307",
        "DATABASE_NAME": "tweetgen",
    }
    url = Database.from_environment(env).url
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "admin",
        PASSWORD,
        "proxy.internal",
        3307,
        "tweetgen",
    )
    with pytest.raises(DatabaseConfigError, match="set DATABASE_HOST and DATABASE_NAME"):
        Database.from_environment({"DATABASE_SECRET_ARN": arn})


def test_from_environment_prefers_database_url(aws: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/local.db"
    db = Database.from_environment({"DATABASE_URL": url, "DATABASE_SECRET_ARN": "arn:unused"})
    assert str(db.url) == url


def test_from_environment_says_what_is_missing() -> None:
    with pytest.raises(DatabaseConfigError, match=r"DATABASE_URL .* or DATABASE_SECRET_ARN"):
        Database.from_environment({})
    with pytest.raises(DatabaseConfigError, match="DATABASE_CONNECT_TIMEOUT"):
        Database.from_environment({"DATABASE_URL": "sqlite://", "DATABASE_CONNECT_TIMEOUT": "soon"})


def test_a_mysql_server_that_accepts_and_never_answers_is_unreachable_not_a_hang() -> None:
    """A stalled server (accepting, then silent) fails within the query timeout: the caller
    answers 503 (or the recorder leaves its batch on the queue) before Lambda's own timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never say a word
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        db = Database.from_environment(
            {
                "DATABASE_URL": f"mysql+pymysql://tweetgen@127.0.0.1:{port}/tweetgen",
                "DATABASE_CONNECT_TIMEOUT": "1",
                "DATABASE_QUERY_TIMEOUT": "0.5",
            }
        )
        started = time.monotonic()
        with pytest.raises(OperationalError) as stalled:
            db.generations.get("any")
        assert time.monotonic() - started < 10
        assert accepted  # the connection was made: the wait was for the server's greeting
        assert is_unreachable(stalled.value)
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
        dispose_engines()


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf", "nan"])
def test_a_query_timeout_must_be_positive_seconds(value: str) -> None:
    with pytest.raises(DatabaseConfigError, match="DATABASE_QUERY_TIMEOUT"):
        Database.from_environment({"DATABASE_URL": "sqlite://", "DATABASE_QUERY_TIMEOUT": value})


def test_a_secret_without_credentials_is_refused(aws: Any) -> None:
    arn = aws.create_secret(Name="broken", SecretString=json.dumps({"username": "x"}))["ARN"]
    with pytest.raises(ValueError, match="lacks password"):
        Database.from_environment(
            {"DATABASE_SECRET_ARN": arn, "DATABASE_HOST": "h", "DATABASE_NAME": "d"}
        )


def test_a_sqlite_file_that_cannot_be_opened_is_unreachable_a_bad_statement_is_not(
    tmp_path: Path,
) -> None:
    missing = Database.from_url(f"sqlite:///{tmp_path}")  # a folder, not a database file
    with pytest.raises(OperationalError) as unopened:
        missing.generations.get("any")
    assert is_unreachable(unopened.value)
    db = Database.from_url(f"sqlite:///{tmp_path / 'tweetgen.db'}")
    with pytest.raises(OperationalError) as wrong, db.engine.connect() as connection:
        connection.execute(text("SELECT no_such_column FROM no_such_table"))
    assert not is_unreachable(wrong.value)
