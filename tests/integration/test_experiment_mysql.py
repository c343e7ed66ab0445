"""The experiment engine on a real MySQL/MariaDB, the stand-in for Aurora MySQL 3.

The shared :class:`AggregationContract` runs on a new database per test, with MySQL 8's
default SQL mode (``ONLY_FULL_GROUP_BY`` among others, which MariaDB leaves off), so the
aggregation's SQL is checked against what Aurora MySQL 3 accepts. Then the whole engine
(aggregate, decide, apply on moto's SageMaker) runs once on MySQL, and the migration adds its
columns to a database that already holds rows of the first schema.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto import mock_aws
from sqlalchemy import MetaData, event, insert, inspect, select
from tweetgen.adapters.database import Database, create_engine, migrate, schema
from tweetgen.adapters.database.migrations import MIGRATIONS, v0001_initial, v0003_latest_feedback
from tweetgen.adapters.sagemaker import SageMakerEndpoints
from tweetgen.domain.experiment import ExperimentSettings
from tweetgen.services.experiment import AggregationSettings, aggregate, run_experiment

from tests.integration.conftest import URLFactory
from tests.unit.test_experiment_aggregation import (
    NO_OVERLAP,
    AggregationContract,
    Writer,
    expected_buckets,
    stored_buckets,
)
from tests.unit.test_experiment_service import live_weights, make_endpoint

pytestmark = pytest.mark.mysql

# MySQL 8.0's default sql_mode.
MYSQL8_MODE = (
    "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)


def strict_database(url: str) -> Database:
    db = Database.from_url(url)

    @event.listens_for(db.engine, "connect")
    def _mode(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET SESSION sql_mode = '{MYSQL8_MODE}'")
        cursor.close()

    db.engine.dispose()  # connections made before the listener are gone
    db.migrate()
    return db


class TestMysql(AggregationContract):
    @pytest.fixture
    def db(self, mysql_databases: URLFactory) -> Database:
        return strict_database(mysql_databases())


def test_the_engine_decides_and_applies_on_mysql(
    mysql_databases: URLFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    db = strict_database(mysql_databases())
    now = datetime.now(UTC)
    with mock_aws():
        sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
        writer = Writer(db)
        rows: list[dict[str, Any]] = []
        for i in range(120):
            rows.append(
                {
                    "generation_id": f"g{i}",
                    "user_id": f"u{i}",
                    "variant": ("lstm", "gpt2")[i % 2],
                    "model_version": "v1",
                    "prompt": "",
                    "text": "x",
                    "parameters": {},
                    "latency_ms": 40.0,
                    "created_at": now - timedelta(minutes=5),
                }
            )
        writer.write_generations(rows)
        writer.write_feedback(
            [
                {
                    "feedback_id": f"f{i}",
                    "generation_id": f"g{i}",
                    "reward": 0.0 if i % 2 == 0 else 1.0,  # gpt2 is liked, lstm is not
                    "raw_value": "x",
                }
                for i in range(120)
            ]
        )
        settings = ExperimentSettings(min_samples_per_variant=50)
        control = SageMakerEndpoints(sagemaker)
        run = run_experiment(db, control, "tweetgen", settings, AggregationSettings())
        assert run.decision is not None and run.applied, run.outcome
        assert run.decision.winner == "gpt2"
        assert live_weights(sagemaker) == {"lstm": 0.0, "gpt2": 1.0}
        again = run_experiment(db, control, "tweetgen", settings, AggregationSettings())
        assert again.decision is not None and not again.decision.changed and not again.applied
        stored = db.decisions.get(run.decision.id)
        assert stored is not None and stored.sequential_state and stored.outcome
    assert stored_buckets(db) == expected_buckets(writer.events)


def test_migrations_2_and_3_keep_the_rows_of_the_first_schema(mysql_databases: URLFactory) -> None:
    url = mysql_databases()
    engine = create_engine(url)
    created = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    first = MetaData()
    v0001_initial.define(first)  # the tables as the first schema has them
    try:
        assert migrate(engine, MIGRATIONS[:1]) == [1]
        with engine.begin() as connection:
            connection.execute(
                insert(first.tables["generations"]).values(
                    id="g1",
                    user_id="u",
                    variant="lstm",
                    model_version="v1",
                    prompt="",
                    text="x",
                    parameters={},
                    latency_ms=12.0,
                    created_at=created,
                    recorded_at=created,
                    deliveries=1,
                )
            )
            connection.execute(
                insert(first.tables["feedback"]).values(
                    id="f1",
                    generation_id="g1",
                    reward=1.0,
                    raw_value="like",
                    created_at=created,
                    recorded_at=created,
                    deliveries=1,
                )
            )
            connection.execute(
                insert(first.tables["decisions"]).values(
                    id="d1",
                    policy="ab",
                    weights={"lstm": 1.0},
                    statistics={},
                    reason="before the engine",
                    applied=False,
                    created_at=created,
                )
            )
        assert migrate(engine, MIGRATIONS[:2]) == [2]
        assert migrate(engine) == [3]
        assert migrate(engine) == []
        indexes = {i["name"] for i in inspect(engine).get_indexes("feedback")}
        assert "ix_feedback_latest" in indexes and "ix_feedback_aggregation" not in indexes
        users = {i["name"] for i in inspect(engine).get_indexes("generations")}
        assert "ix_generations_users" in users
        with engine.begin() as connection:  # a run cut short re-runs (MySQL commits each DDL)
            v0003_latest_feedback.upgrade(connection)
    finally:
        engine.dispose()
    db = Database.from_url(url)
    old = db.decisions.get("d1")
    assert old is not None and (old.changed, old.frozen, old.outcome) == (False, False, None)
    report = aggregate(db.metrics, NO_OVERLAP)
    assert report.rows_read["attributed"] == 1  # the old feedback learns its bucket
    totals = db.metrics.totals()["lstm"]
    assert (totals.served, totals.feedback_count, totals.positive_count) == (1, 1, 1)
    with db.engine.connect() as connection:
        assert connection.execute(select(schema.generation_failures)).all() == []
