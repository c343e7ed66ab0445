"""The QuickSight datasets' SQL (template.yaml) on a real MySQL/MariaDB, against the local views.

Each ``AWS::QuickSight::DataSet`` of the template runs its custom SQL on the tables the
aggregation fills; the rows must have the columns the dataset declares and the same figures as
:func:`tweetgen.services.dashboard.dashboard_data` shows on the local dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from tweetgen.adapters.database import Database
from tweetgen.services.dashboard import dashboard_data
from tweetgen_local.template import load_yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.mysql

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUCKET = timedelta(minutes=5)
# (variant, bucket, served, feedback, positive, p50, p95, errors)
ROWS = [
    ("lstm", 0, 40, 30, 6, 40.0, 70.0, 0),
    ("gpt2", 0, 40, 28, 12, 110.0, 190.0, 1),
    ("lstm", 1, 35, 25, 4, 42.0, 75.0, 0),
    ("gpt2", 1, 45, 33, 17, 105.0, 180.0, 0),
    ("gpt2", 2, 60, 50, 26, 100.0, 170.0, 2),
]


def datasets() -> dict[str, dict[str, Any]]:
    """The template's QuickSight datasets: logical id → their one custom SQL table."""
    template = load_yaml((REPO_ROOT / "template.yaml").read_text(encoding="utf-8"))
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::QuickSight::DataSet":
            continue
        (table,) = resource["Properties"]["PhysicalTableMap"].values()
        found[logical_id] = table["CustomSql"]
    return found


def query(db: Database, dataset: str) -> list[dict[str, Any]]:
    sql = datasets()[dataset]
    with db.engine.connect() as connection:
        result = connection.execute(text(sql["SqlQuery"]))
        rows = [dict(row._mapping) for row in result]
        names = list(result.keys())
    assert names == [column["Name"] for column in sql["Columns"]], dataset
    return rows


@pytest.fixture
def db(mysql_databases: Callable[[], str]) -> Database:
    database = Database.from_url(mysql_databases())
    database.migrate()
    database.variant_metrics.upsert(
        [
            {
                "variant": variant,
                "bucket_start": T0 + index * BUCKET,
                "served": served,
                "feedback_count": feedback,
                "positive_count": positive,
                "reward_sum": float(positive),
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
                "errors": errors,
            }
            for variant, index, served, feedback, positive, p50, p95, errors in ROWS
        ]
    )
    database.decisions.record(
        decision_id="d1",
        policy="ab",
        weights={"lstm": 0.5, "gpt-2.small": 0.5},
        statistics={"variants": {"lstm": {"p_best": 0.25}, "gpt-2.small": {"p_best": 0.75}}},
        reason="ab: no winner yet",
        applied=False,
        created_at=T0 + BUCKET,
    )
    database.decisions.record(
        decision_id="d2",
        policy="ab",
        weights={"lstm": 0.0, "gpt2": 1.0},
        statistics={"variants": {"lstm": {"p_best": 0.001}, "gpt2": {"p_best": None}}},
        reason="ab: gpt2 wins",
        applied=True,
        created_at=T0 + 2 * BUCKET,
    )
    database.rollouts.start("exec-1", "gpt2", "v2", started_at=T0)
    database.rollouts.finish("exec-1", "succeeded", finished_at=T0 + timedelta(seconds=90))
    return database


def test_every_dataset_runs_and_declares_its_columns(db: Database) -> None:
    assert set(datasets()) == {
        "QuickSightMetricsDataSet",
        "QuickSightDecisionsDataSet",
        "QuickSightRolloutsDataSet",
    }
    rollouts = query(db, "QuickSightRolloutsDataSet")
    assert [(r["execution_id"], r["status"], float(r["duration_s"])) for r in rollouts] == [
        ("exec-1", "succeeded", 90.0)
    ]


def test_the_metrics_dataset_shows_what_the_local_dashboard_shows(db: Database) -> None:
    local = dashboard_data(db)
    rows = query(db, "QuickSightMetricsDataSet")
    assert len(rows) == len(ROWS)
    for row in rows:
        variant = row["variant"]
        start = row["bucket_start"].replace(tzinfo=UTC)
        index = local["buckets"].index(start.isoformat())
        series = local["series"][variant]
        assert float(row["posterior_mean"]) == pytest.approx(series["posterior_mean"][index])
        assert float(row["traffic_share"]) == pytest.approx(series["traffic_share"][index])
        # The normal approximation of the same Beta posterior: within two points of its exact
        # quantiles from a few dozen feedback on (the skew of a low rate makes the difference).
        assert float(row["interval_low"]) == pytest.approx(series["interval_low"][index], abs=0.02)
        assert float(row["interval_high"]) == pytest.approx(
            series["interval_high"][index], abs=0.02
        )
        n, k = int(row["cumulative_feedback"]), int(row["cumulative_positive"])
        mean = (1 + k) / (2 + n)
        half = 1.959964 * math.sqrt(mean * (1 - mean) / (3 + n))
        assert float(row["interval_low"]) == pytest.approx(max(0.0, mean - half), abs=1e-6)
        assert float(row["latency_p95_ms"]) == series["latency_p95_ms"][index]


def test_the_decisions_dataset_has_a_row_per_decision_and_variant(db: Database) -> None:
    rows = query(db, "QuickSightDecisionsDataSet")
    got = {
        (r["decision_id"], r["variant"]): (
            float(r["weight"]),
            None if r["p_best"] is None else float(r["p_best"]),
            r["outcome"],
        )
        for r in rows
    }
    assert got == {
        ("d1", "lstm"): (0.5, 0.25, "kept"),
        ("d1", "gpt-2.small"): (0.5, 0.75, "kept"),  # names that JSON paths must quote
        ("d2", "lstm"): (0.0, 0.001, "applied"),
        ("d2", "gpt2"): (1.0, None, "applied"),
    }
    local = {d["id"]: d for d in dashboard_data(db)["decisions"]}
    assert local["d1"]["p_best"] == {"lstm": 0.25, "gpt-2.small": 0.75}
