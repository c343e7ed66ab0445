"""The dashboard: its views of the metrics tables, its charts, the live site and the report.

The metrics are written through the repositories (as the aggregation writes them) into a
temporary SQLite database; the views are checked against the statistics computed directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from plotly.offline import get_plotlyjs
from tweetgen.adapters.database import Database
from tweetgen.domain.experiment import ExperimentSettings
from tweetgen.domain.statistics import BetaPosterior, probability_best
from tweetgen.services.dashboard import assemble_dashboard, dashboard_data
from tweetgen_local.cli import main
from tweetgen_local.dashboard import (
    DATA_PATH,
    FIGURES,
    DashboardSite,
    build_figures,
    database_reader,
    render_report,
    serve_dashboard,
)
from tweetgen_local.graphql_server import LocalWebServer

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUCKET = timedelta(minutes=5)

# (variant, bucket index, served, feedback, positive, p50, p95, errors)
ROWS = [
    ("lstm", 0, 10, 6, 1, 40.0, 70.0, 0),
    ("gpt2", 0, 10, 5, 3, 110.0, 190.0, 1),
    ("lstm", 1, 8, 8, 2, 42.0, 75.0, 0),
    ("gpt2", 1, 12, 9, 6, 105.0, 180.0, 0),
    # lstm served nothing in bucket 2: it still has a point, with zeros.
    ("gpt2", 2, 20, 10, 7, 100.0, 170.0, 2),
]


def metric(
    variant: str,
    index: int,
    served: int,
    feedback: int,
    positive: int,
    p50: float | None,
    p95: float | None,
    errors: int,
) -> dict[str, Any]:
    return {
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


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path / 'tweetgen.db'}")
    database.migrate()
    return database


@pytest.fixture
def filled(db: Database) -> Database:
    db.variant_metrics.upsert([metric(*row) for row in ROWS])
    db.rollouts.start("exec-lstm", "lstm", "v1", started_at=T0 - 3 * BUCKET)
    db.rollouts.finish("exec-lstm", "succeeded", finished_at=T0 - 2 * BUCKET)
    db.rollouts.start("exec-gpt2", "gpt2", "v2", started_at=T0 - 2 * BUCKET)
    db.rollouts.finish("exec-gpt2", "rolled_back", "smoke test failed", finished_at=T0 - BUCKET)
    for variant, version, kind in (("lstm", "v1", "lstm"), ("gpt2", "v1", "gpt2")):
        db.model_versions.record(
            variant=variant,
            version=version,
            kind=kind,
            s3_uri=f"s3://bucket/models/{variant}/{version}/model.tar.gz",
            metadata={},
            registered_at=T0 - 4 * BUCKET,
        )
    db.decisions.record(
        decision_id="d1",
        policy="ab",
        weights={"lstm": 0.5, "gpt2": 0.5},
        statistics={"variants": {"lstm": {"p_best": 0.2}, "gpt2": {"p_best": 0.8}}},
        reason="ab: not enough feedback yet",
        applied=False,
        created_at=T0 + BUCKET + timedelta(seconds=30),
    )
    db.decisions.record(
        decision_id="d2",
        policy="ab",
        weights={"lstm": 0.0, "gpt2": 1.0},
        statistics={"variants": {"lstm": {"p_best": 0.01}, "gpt2": {"p_best": 0.99}}},
        reason="ab: gpt2 wins",
        applied=True,
        created_at=T0 + 2 * BUCKET + timedelta(seconds=30),
    )
    return db


# --------------------------------------------------------------------------- the views


def test_variant_metrics_round_trip_through_the_repository(db: Database) -> None:
    db.variant_metrics.upsert([metric(*row) for row in ROWS])
    # Re-aggregating a bucket replaces it.
    db.variant_metrics.upsert([metric("lstm", 0, 11, 7, 2, 41.0, 71.0, 1)])
    rows = db.variant_metrics.list()
    assert [(r.bucket_start, r.variant) for r in rows] == sorted(
        (T0 + i * BUCKET, v) for v, i, *_ in ROWS
    )
    first = rows[1]
    assert (first.variant, first.served, first.feedback_count, first.errors) == ("lstm", 11, 7, 1)
    assert first.latency_p95_ms == 71.0 and first.bucket_start.tzinfo is not None
    assert [r.variant for r in db.variant_metrics.list(since=T0 + 2 * BUCKET)] == ["gpt2"]
    assert len(db.variant_metrics.list(until=T0 + BUCKET)) == 2
    assert {r.variant for r in db.variant_metrics.list(variant="lstm")} == {"lstm"}


def test_the_like_rate_is_the_posterior_after_each_bucket(filled: Database) -> None:
    settings = ExperimentSettings(prior_alpha=1.0, prior_beta=1.0)
    data = dashboard_data(filled, settings=settings, level=0.9)
    assert data["variants"] == ["gpt2", "lstm"]
    assert data["buckets"] == [(T0 + i * BUCKET).isoformat() for i in range(3)]
    assert data["bucket_seconds"] == 300.0
    gpt2 = data["series"]["gpt2"]
    positives, feedback = 0, 0
    for index, (pos, fb) in enumerate([(3, 5), (6, 9), (7, 10)]):
        positives, feedback = positives + pos, feedback + fb
        expected = BetaPosterior.from_counts(positives, feedback)
        assert gpt2["posterior_mean"][index] == pytest.approx(expected.mean)
        low, high = expected.interval(0.9)
        assert gpt2["interval_low"][index] == pytest.approx(low)
        assert gpt2["interval_high"][index] == pytest.approx(high)
        assert gpt2["like_rate"][index] == pytest.approx(pos / fb)
    lstm = data["series"]["lstm"]
    assert lstm["served"] == [10, 8, 0] and lstm["like_rate"][2] is None
    # No new feedback for lstm in bucket 2: its posterior stays where it was.
    assert lstm["posterior_mean"][2] == lstm["posterior_mean"][1]


def test_traffic_share_p_best_and_latency_per_bucket(filled: Database) -> None:
    data = dashboard_data(filled)
    series = data["series"]
    for index in range(3):
        shares = [series[name]["traffic_share"][index] for name in data["variants"]]
        assert sum(shares) == pytest.approx(1.0)
    assert series["gpt2"]["traffic_share"] == pytest.approx([0.5, 0.6, 1.0])
    expected = probability_best(
        {"lstm": BetaPosterior.from_counts(3, 14), "gpt2": BetaPosterior.from_counts(9, 14)}
    )
    assert series["gpt2"]["p_best"][1] == pytest.approx(expected["gpt2"])
    assert series["lstm"]["p_best"][1] == pytest.approx(expected["lstm"])
    assert series["gpt2"]["latency_p95_ms"] == [190.0, 180.0, 170.0]
    assert series["lstm"]["latency_p50_ms"] == [40.0, 42.0, None]
    assert series["gpt2"]["errors"] == [1, 0, 2]


def test_the_summary_names_versions_weights_and_the_latest_decision(filled: Database) -> None:
    data = dashboard_data(filled)
    gpt2 = data["summary"]["gpt2"]
    assert (gpt2["served"], gpt2["feedback_count"], gpt2["positive_count"]) == (42, 24, 16)
    assert gpt2["like_rate"] == pytest.approx(16 / 24)
    assert gpt2["interval"][0] < gpt2["posterior_mean"] < gpt2["interval"][1]
    assert gpt2["errors"] == 3 and gpt2["error_rate"] == pytest.approx(3 / 42)
    assert gpt2["weight_in_force"] == 1.0 and data["summary"]["lstm"]["weight_in_force"] == 0.0
    assert (gpt2["model_version"], gpt2["model_kind"]) == ("v1", "gpt2")
    assert gpt2["latency_p50_ms"] == 100.0  # the latest bucket's
    assert gpt2["p_best"] + data["summary"]["lstm"]["p_best"] == pytest.approx(1.0)
    assert data["latest_decision"]["id"] == "d2" and data["latest_decision"]["applied"]
    assert [d["id"] for d in data["decisions"]] == ["d1", "d2"]
    assert data["decisions"][0]["p_best"] == {"lstm": 0.2, "gpt2": 0.8}
    assert [(r["variant"], r["status"]) for r in data["rollouts"]] == [
        ("lstm", "succeeded"),
        ("gpt2", "rolled_back"),
    ]
    json.dumps(data)  # JSON-ready as it is


def test_a_kept_split_shows_the_weights_in_force_when_it_was_decided(db: Database) -> None:
    db.variant_metrics.upsert([metric(*row) for row in ROWS])
    db.decisions.record(
        policy="ab",
        weights={"lstm": 0.5, "gpt2": 0.5},
        statistics={
            "variants": {
                "lstm": {"p_best": 0.3, "weight_in_force": 0.4},
                "gpt2": {"p_best": 0.7, "weight_in_force": 0.6},
            }
        },
        reason="ab: no winner yet; split kept",
        applied=False,
        created_at=T0 + BUCKET,
    )
    summary = dashboard_data(db)["summary"]
    assert (summary["lstm"]["weight_in_force"], summary["gpt2"]["weight_in_force"]) == (0.4, 0.6)


def test_a_window_keeps_only_what_happened_in_it(filled: Database) -> None:
    data = dashboard_data(filled, since=T0 + 2 * BUCKET)
    assert data["buckets"] == [(T0 + 2 * BUCKET).isoformat()]
    assert [d["id"] for d in data["decisions"]] == ["d2"]
    assert data["rollouts"] == []
    assert data["summary"]["gpt2"]["served"] == 20


def test_many_buckets_are_merged_into_at_most_max_points(db: Database) -> None:
    rows = [
        metric(v, i, 4, 2, 1 if v == "gpt2" else 0, 50.0, 90.0, 0)
        for i in range(50)
        for v in ("lstm", "gpt2")
    ]
    db.variant_metrics.upsert(rows)
    data = dashboard_data(db, max_points=12)
    assert len(data["buckets"]) <= 12
    assert data["bucket_seconds"] == 5 * 300.0  # 50 buckets of 5 minutes in 10 of 25 minutes
    assert sum(data["series"]["gpt2"]["served"]) == 200
    assert sum(data["series"]["gpt2"]["positive_count"]) == 50
    assert data["series"]["lstm"]["latency_p95_ms"][0] == pytest.approx(90.0)


def test_an_empty_database_has_views_without_points(db: Database) -> None:
    data = dashboard_data(db)
    assert data["variants"] == [] and data["buckets"] == [] and data["summary"] == {}
    figures = build_figures(data)
    assert set(figures) == set(FIGURES)
    for figure in figures.values():
        assert any("yet" in annotation.text for annotation in figure.layout.annotations)


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        assemble_dashboard([], [], [], [], level=1.5)
    with pytest.raises(ValueError, match="max_points must be at least 2"):
        assemble_dashboard([], [], [], [], max_points=1)


# --------------------------------------------------------------------------- the charts


def test_every_chart_draws_each_variant(filled: Database) -> None:
    data = dashboard_data(filled)
    figures = build_figures(data)
    assert list(figures) == list(FIGURES)
    for key in ("like_rate", "traffic", "p_best", "latency"):
        groups = {trace.legendgroup for trace in figures[key].data}
        assert {"lstm", "gpt2"} <= groups, key
    like = figures["like_rate"].data
    band = [trace for trace in like if trace.fill == "tonexty"]
    assert len(band) == 2 and all(trace.y for trace in band)
    traffic = figures["traffic"]
    assert traffic.layout.barmode == "stack"
    decided = [trace for trace in traffic.data if trace.name and "decided" in trace.name]
    assert [trace.y[-1] for trace in decided] == [1.0, 0.0]  # gpt2, lstm: the applied split
    lanes = list(figures["timeline"].layout.yaxis.categoryarray)
    assert lanes == ["rollout gpt2", "rollout lstm", "decisions"]
    statuses = {trace.name for trace in figures["timeline"].data}
    assert {
        "rollout succeeded",
        "rollout rolled_back",
        "decision applied",
        "decision kept",
    } <= statuses


def test_a_single_bucket_is_drawn_visibly(db: Database) -> None:
    db.variant_metrics.upsert([metric("lstm", 0, 3, 2, 1, 40.0, 60.0, 0)])
    figures = build_figures(dashboard_data(db))
    mean = next(t for t in figures["like_rate"].data if t.name == "lstm posterior mean")
    assert "markers" in mean.mode and mean.error_y.array is not None
    start, end = figures["p_best"].layout.xaxis.range
    assert datetime.fromisoformat(start) < T0 < datetime.fromisoformat(end)


# --------------------------------------------------------------------------- the site


def test_the_site_serves_the_page_its_assets_and_the_data(filled: Database, tmp_path: Path) -> None:
    site = DashboardSite(database_reader(str(filled.url)), refresh_s=2)
    page = site.handle("/dashboard")
    assert page.status == 200 and page.content_type.startswith("text/html")
    html = page.body.decode()
    assert '<script src="/dashboard/static/plotly.min.js"></script>' in html
    assert '"refreshMs":2000' in html and '"dataUrl":"/dashboard/data.json"' in html
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html), "nothing from outside"
    plotly = site.handle("/dashboard/static/plotly.min.js")
    assert plotly.status == 200 and plotly.body == get_plotlyjs().encode()
    for name in ("dashboard.js", "dashboard.css"):
        assert site.handle(f"/dashboard/static/{name}").status == 200
    answer = site.handle(DATA_PATH, {})
    assert answer.status == 200
    payload = json.loads(answer.body)
    assert set(payload) == {"generated_at", "data", "figures"}
    assert set(payload["figures"]) == set(FIGURES)
    assert payload["data"]["summary"]["gpt2"]["feedback_count"] == 24
    assert site.handle("/dashboard/static/../../secrets").status == 404
    assert site.handle("/elsewhere").status == 404


def test_the_data_follows_new_metrics_and_the_hours_window(filled: Database) -> None:
    site = DashboardSite(database_reader(str(filled.url)))
    first = json.loads(site.handle(DATA_PATH).body)
    again = json.loads(site.handle(DATA_PATH).body)
    assert again["figures"] == first["figures"]
    filled.variant_metrics.upsert([metric("lstm", 3, 5, 5, 5, 40.0, 70.0, 0)])
    later = json.loads(site.handle(DATA_PATH).body)
    assert later["data"]["summary"]["lstm"]["feedback_count"] == 19
    assert len(later["data"]["buckets"]) == 4
    # Everything above is from 2026: the last hour holds none of it.
    recent = json.loads(site.handle(DATA_PATH, {"hours": "1"}).body)
    assert recent["data"]["buckets"] == []


@pytest.mark.parametrize("hours", ["x", "0", "-2", "inf", "nan"])
def test_a_bad_window_is_a_400_naming_it(filled: Database, hours: str) -> None:
    answer = DashboardSite(database_reader(str(filled.url))).handle(DATA_PATH, {"hours": hours})
    assert answer.status == 400
    assert json.loads(answer.body)["message"] == f"hours must be a positive number, got {hours!r}"


def test_a_database_that_fails_is_a_503_with_the_reason() -> None:
    def broken(_query: Any) -> dict[str, Any]:
        raise ConnectionError("database is paused")

    answer = DashboardSite(broken).handle(DATA_PATH)
    assert answer.status == 503
    assert "ConnectionError: database is paused" in json.loads(answer.body)["message"]


@pytest.fixture
def web(filled: Database) -> Iterator[str]:
    server = LocalWebServer()
    serve_dashboard(server, DashboardSite(database_reader(str(filled.url))))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def test_the_local_web_server_serves_the_dashboard_over_http(web: str) -> None:
    page = requests.get(f"{web}/dashboard", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    data = requests.get(f"{web}/dashboard/data.json", timeout=10)
    assert data.status_code == 200 and data.headers["Cache-Control"] == "no-store"
    assert data.json()["data"]["variants"] == ["gpt2", "lstm"]
    assert requests.post(f"{web}/dashboard/data.json", timeout=10).status_code == 405
    script = requests.get(f"{web}/dashboard/static/plotly.min.js", timeout=10)
    assert script.status_code == 200 and len(script.content) > 1_000_000


# --------------------------------------------------------------------------- the report


def test_the_report_is_one_file_with_plotly_inlined(filled: Database) -> None:
    filled.decisions.record(
        decision_id="d3",
        policy="manual",
        weights={"lstm": 0.5, "gpt2": 0.5},
        statistics={},
        reason="</script><script>alert(1)</script> set by hand",
        applied=True,
        created_at=T0 + 3 * BUCKET,
    )
    html = render_report(dashboard_data(filled), title="weekly report")
    assert get_plotlyjs()[:2000] in html
    assert "<script src=" not in html and '<link rel="stylesheet"' not in html
    page = html.replace(get_plotlyjs(), "")  # plotly.js itself holds links it never fetches
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page), "nothing from outside"
    assert "</script><script>alert(1)" not in html  # the reason stays data
    config = re.search(r"window\.TWEETGEN_DASHBOARD = (\{.*?\});</script>", html, re.S)
    assert config is not None
    snapshot = json.loads(config.group(1))
    assert snapshot["title"] == "weekly report"
    assert snapshot["snapshot"]["data"]["latest_decision"]["reason"].startswith("</script>")
    assert set(snapshot["snapshot"]["figures"]) == set(FIGURES)


def test_tweetgen_report_writes_the_file(
    filled: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "report.html"
    assert main(["report", "--out", str(out), "--database-url", str(filled.url)]) == 0
    assert out.is_file() and "plotly" in out.read_text(encoding="utf-8")
    said = capsys.readouterr().out
    assert "3 time buckets, 38 feedback, 2 decisions, 2 rollouts (variants: gpt2, lstm)" in said


def test_tweetgen_report_reads_the_local_stacks_database(
    filled: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "database.url").write_text(str(filled.url), encoding="utf-8")
    out = tmp_path / "report.html"
    assert main(["report", "--out", str(out), "--state-dir", str(state)]) == 0
    assert "38 feedback" in capsys.readouterr().out


def test_tweetgen_report_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "r.html")
    assert main(["report", "--out", out, "--state-dir", str(tmp_path / "none")]) == 2
    assert "no database at" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    empty.touch()
    assert main(["report", "--out", out, "--database-url", f"sqlite:///{empty}"]) == 2
    assert "has no tweetgen tables" in capsys.readouterr().err
    assert main(["report", "--out", out, "--hours", "0"]) == 2
    assert "--hours must be a positive number" in capsys.readouterr().err
    assert not Path(out).exists()
