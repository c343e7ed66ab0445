"""The experiment engine's use cases against their real adapters: the database on SQLite,
SageMaker's control plane on moto (and moto with the local stack's UpdateEndpoint, to hold an
endpoint in Updating)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from tweetgen.adapters.database import Database
from tweetgen.adapters.sagemaker import SageMakerEndpoints
from tweetgen.domain.experiment import ExperimentSettings
from tweetgen.services.experiment import (
    AggregationSettings,
    ExperimentRun,
    aggregate,
    experiment_status,
    run_experiment,
    snapshots,
)
from tweetgen.services.serving import ServingVariant
from tweetgen_local import moto_gaps

REGION = "us-east-1"
ENDPOINT = "tweetgen"
# Decides with little data: the sequential test still needs 30 feedback per variant.
SETTINGS = ExperimentSettings(min_samples_per_variant=30)
NOW = datetime.now(UTC)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path / 'experiment.db'}")
    database.migrate()
    return database


def make_endpoint(weights: dict[str, float], name: str = ENDPOINT) -> Any:
    """An InService endpoint on moto with a variant (and its model) per weight."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    for variant in weights:
        sagemaker.create_model(
            ModelName=f"{name}-{variant}-v1",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
            PrimaryContainer={
                "Image": "tensorflow-inference",
                "ModelDataUrl": f"s3://bucket/models/{variant}/v1/model.tar.gz",
                "Environment": {"TWEETGEN_MODEL_VERSION": "v1"},
            },
        )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-c1",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"{name}-{variant}-v1",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
            for variant, weight in weights.items()
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c1")
    return sagemaker


def live_weights(sagemaker: Any, name: str = ENDPOINT) -> dict[str, float]:
    described = sagemaker.describe_endpoint(EndpointName=name)
    return {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}


def traffic(
    db: Database,
    likes: dict[str, tuple[int, int]],
    *,
    at: datetime = NOW - timedelta(minutes=10),
    prefix: str = "",
) -> None:
    """Per variant (liked, not liked) generations, each with its feedback."""
    generations, feedback = [], []
    for variant, (liked, disliked) in likes.items():
        for i in range(liked + disliked):
            generation_id = f"{prefix}{variant}-{i}"
            generations.append(_generation(generation_id, variant, f"user-{variant}-{i}", at))
            feedback.append(
                {
                    "feedback_id": f"f-{generation_id}",
                    "generation_id": generation_id,
                    "reward": 1.0 if i < liked else 0.0,
                    "raw_value": "like" if i < liked else "dislike",
                }
            )
    db.generations.record_many(generations)
    db.feedback.record_many(feedback)


def _generation(generation_id: str, variant: str, user: str, created: datetime) -> dict[str, Any]:
    return {
        "generation_id": generation_id,
        "user_id": user,
        "variant": variant,
        "model_version": "v1",
        "prompt": "",
        "text": "a tweet",
        "parameters": {},
        "latency_ms": 40.0,
        "created_at": created,
    }


def requests_of(db: Database, served: list[tuple[str, str, datetime]]) -> None:
    """One generation per (variant, user, created_at), without feedback."""
    db.generations.record_many([_generation(f"q{n}", *request) for n, request in enumerate(served)])


def run(db: Database, sagemaker: Any, **kwargs: Any) -> ExperimentRun:
    settings = kwargs.pop("settings", SETTINGS)
    aggregation = kwargs.pop("aggregation", AggregationSettings())
    return run_experiment(
        db, SageMakerEndpoints(sagemaker), ENDPOINT, settings, aggregation, **kwargs
    )


def test_a_clear_winner_moves_the_weights_and_a_second_run_changes_nothing(
    aws: None, db: Database
) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    traffic(db, {"lstm": (5, 35), "gpt2": (34, 6)})

    first = run(db, sagemaker)

    assert first.applied and first.decision is not None, first.outcome
    assert first.decision.changed and first.decision.winner == "gpt2"
    assert first.decision.weights == {"lstm": 0.0, "gpt2": 1.0}
    assert first.decision.weights_before == {"lstm": 0.5, "gpt2": 0.5}
    assert first.outcome == "applied with UpdateEndpointWeightsAndCapacities"
    assert live_weights(sagemaker) == {"lstm": 0.0, "gpt2": 1.0}
    statistics = first.decision.statistics
    assert statistics["variants"]["gpt2"]["p_best"] > 0.95
    assert statistics["sequential"]["gpt2|lstm"]["significant"] is True
    assert first.decision.sequential_state and first.decision.sequential_state["pairs"]
    modified = sagemaker.describe_endpoint(EndpointName=ENDPOINT)["LastModifiedTime"]

    second = run(db, sagemaker)

    assert second.decision is not None and second.decision.id != first.decision.id
    assert not second.decision.changed and not second.applied
    assert second.outcome.startswith("nothing to apply")
    assert second.decision.winner == "gpt2"  # carried forward
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["LastModifiedTime"] == modified
    assert live_weights(sagemaker) == {"lstm": 0.0, "gpt2": 1.0}


def test_no_winner_yet_keeps_the_split_and_the_sequential_state_carries_on(
    aws: None, db: Database
) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    traffic(db, {"lstm": (16, 16), "gpt2": (17, 15)})
    first = run(db, sagemaker)
    assert first.decision is not None and not first.decision.changed
    assert "no winner yet" in first.decision.reason
    looks = first.decision.sequential_state["pairs"]["gpt2|lstm"]["looks"]  # type: ignore[index]
    traffic(db, {"lstm": (2, 3), "gpt2": (3, 2)}, prefix="more-")
    second = run(db, sagemaker)
    assert second.decision is not None
    assert second.decision.sequential_state["pairs"]["gpt2|lstm"]["looks"] == looks + 1  # type: ignore[index]
    assert live_weights(sagemaker) == {"lstm": 1.0, "gpt2": 1.0}


def test_weights_are_never_applied_while_the_endpoint_is_updating(aws: None, db: Database) -> None:
    moto_gaps.install()
    release = threading.Event()
    try:
        moto_gaps.set_endpoint_deployer(lambda _endpoint, _config: None)
        sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=ENDPOINT, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200}
        )
        traffic(db, {"lstm": (5, 35), "gpt2": (34, 6)})
        # A rollout's UpdateEndpoint is under way and holds the endpoint in Updating.
        moto_gaps.set_endpoint_deployer(lambda _endpoint, _config: None if release.wait(30) else "")
        sagemaker.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{ENDPOINT}-c1")
        assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "Updating"

        held = run(db, sagemaker)

        assert held.decision is not None and held.decision.changed and not held.applied
        assert held.outcome.startswith("not applied: endpoint tweetgen is Updating")
        assert held.decision.outcome == held.outcome
        release.set()
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=ENDPOINT, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200}
        )
        assert live_weights(sagemaker) == {"lstm": 1.0, "gpt2": 1.0}

        # Once InService, the next run decides again (the winner carried) and applies.
        after = run(db, sagemaker)
        assert after.applied and live_weights(sagemaker) == {"lstm": 0.0, "gpt2": 1.0}
    finally:
        release.set()
        moto_gaps.uninstall()


def test_a_refused_update_is_recorded_as_not_applied(aws: None, db: Database) -> None:
    """DescribeEndpoint said InService, then the update was refused (a race with a rollout)."""
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    traffic(db, {"lstm": (5, 35), "gpt2": (34, 6)})

    class Racing(SageMakerEndpoints):
        def update_weights(self, name: str, weights: Any) -> None:
            sagemaker.delete_endpoint(EndpointName=name)  # gone between the two calls
            super().update_weights(name, weights)

    result = run_experiment(db, Racing(sagemaker), ENDPOINT, SETTINGS, AggregationSettings())
    assert result.decision is not None and not result.applied
    assert result.outcome.startswith("not applied: SageMaker refused the new weights: ")
    assert "Could not find endpoint" in result.outcome


def test_the_manual_policy_records_statistics_and_applies_nothing(aws: None, db: Database) -> None:
    sagemaker = make_endpoint({"lstm": 3.0, "gpt2": 1.0})
    traffic(db, {"lstm": (5, 35), "gpt2": (34, 6)})
    result = run(db, sagemaker, settings=ExperimentSettings(policy="manual"))
    assert result.decision is not None and result.decision.policy == "manual"
    assert not result.decision.changed and not result.applied
    assert result.decision.weights == {"lstm": 0.75, "gpt2": 0.25}
    assert result.decision.statistics["variants"]["gpt2"]["p_best"] > 0.99
    assert live_weights(sagemaker) == {"lstm": 3.0, "gpt2": 1.0}


def test_a_served_split_that_does_not_match_the_weights_freezes_decisions(
    aws: None, db: Database
) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    # Since the weights were set: 90 % of requests went to gpt2 under a 50/50 split.
    traffic(db, {"lstm": (2, 38), "gpt2": (300, 60)}, at=datetime.now(UTC) + timedelta(seconds=1))
    result = run(db, sagemaker, aggregation=AggregationSettings(weights_settle_seconds=0))
    assert result.decision is not None and result.decision.frozen
    assert not result.decision.changed and not result.applied
    assert "sample-ratio mismatch" in result.decision.reason
    assert result.decision.statistics["served_since_weights"] == {"lstm": 40, "gpt2": 360}
    assert result.decision.statistics["srm"]["flagged"] is True
    assert live_weights(sagemaker) == {"lstm": 1.0, "gpt2": 1.0}


def test_only_requests_served_since_the_weights_were_set_enter_the_ratio_check(
    aws: None, db: Database
) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    weights_set = sagemaker.describe_endpoint(EndpointName=ENDPOINT)["LastModifiedTime"]
    # Lopsided, but before the endpoint's weights were set: not a mismatch.
    traffic(db, {"lstm": (2, 38), "gpt2": (300, 60)}, at=datetime.now(UTC) - timedelta(hours=2))
    result = run(db, sagemaker, aggregation=AggregationSettings(weights_settle_seconds=0))
    assert result.decision is not None and not result.decision.frozen
    statistics = result.decision.statistics
    assert statistics["served_since_weights"] == {"lstm": 0, "gpt2": 0}
    assert statistics["weights_since"] == weights_set.astimezone(UTC).isoformat()
    assert result.applied  # the clear winner moves the weights...
    state = db.experiment.weights_in_force()
    assert state is not None and state.weights == {"lstm": 0.0, "gpt2": 1.0}
    assert state.since == result.decision.created_at  # ...and the ratio check starts over


def test_the_ratio_check_counts_users_so_a_user_who_asks_a_lot_freezes_nothing(
    aws: None, db: Database
) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    at = datetime.now(UTC) + timedelta(seconds=1)
    # 20 users each side of a right 50/50 split; one gpt2 user asks 400 times.
    users = [("lstm", f"l{i}") for i in range(20)] + [("gpt2", f"g{i}") for i in range(20)]
    requests_of(db, [(variant, user, at) for variant, user in users + [("gpt2", "g0")] * 400])
    result = run(db, sagemaker, aggregation=AggregationSettings(weights_settle_seconds=0))
    assert result.decision is not None
    statistics = result.decision.statistics
    assert statistics["served_since_weights"] == {"lstm": 20, "gpt2": 420}
    assert statistics["users_since_weights"] == {"lstm": 20, "gpt2": 20}
    assert statistics["srm"]["flagged"] is False and not result.decision.frozen


def test_the_ratio_check_counts_the_users_of_its_window_only(db: Database) -> None:
    now = datetime.now(UTC)
    served = [("lstm", "a", 120), ("lstm", "b", 120), ("lstm", "c", 10), ("gpt2", "d", 10)]
    requests_of(db, [(v, user, now - timedelta(minutes=ago)) for v, user, ago in served])
    aggregate(db.metrics, AggregationSettings(), full=True)
    settings = AggregationSettings(weights_settle_seconds=0, srm_window_seconds=3600)
    snaps, requests = snapshots(
        db.metrics, ["lstm", "gpt2"], settings, weights_since=now - timedelta(hours=3), now=now
    )
    assert requests == {"lstm": 3, "gpt2": 1}  # every request since the weights were set
    assert {name: snap.users_since_weights for name, snap in snaps.items()} == {
        "lstm": 1,
        "gpt2": 1,
    }


def test_a_redelivered_scheduled_event_finds_its_decision(aws: None, db: Database) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    traffic(db, {"lstm": (5, 35), "gpt2": (34, 6)})
    first = run(db, sagemaker, run_id="event-1")
    again = run(db, sagemaker, run_id="event-1")
    assert first.decision is not None and first.decision.id == "event-1" and first.applied
    assert again.aggregation is None and not again.applied
    assert again.decision is not None and again.decision.id == "event-1"
    assert again.outcome == "run event-1 was already decided"
    assert len(db.decisions.list()) == 1


def test_a_run_while_another_holds_the_experiment_is_skipped(aws: None, db: Database) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    assert db.experiment.acquire_lease("someone-else", 60)
    skipped = run(db, sagemaker)
    assert skipped.outcome == "another run holds the experiment: skipped"
    assert skipped.decision is None and db.decisions.latest() is None
    db.experiment.release_lease("someone-else")
    assert run(db, sagemaker).decision is not None


def test_an_expired_lease_is_taken_over_and_only_its_owner_releases_it(db: Database) -> None:
    assert db.experiment.acquire_lease("a", 0.05)
    assert not db.experiment.acquire_lease("b", 60)
    threading.Event().wait(0.1)
    assert db.experiment.acquire_lease("b", 60)  # a's lease ran out
    db.experiment.release_lease("a")  # no longer a's to release
    assert not db.experiment.acquire_lease("c", 60)
    db.experiment.release_lease("b")
    assert db.experiment.acquire_lease("c", 60)


def test_without_an_endpoint_only_the_aggregation_runs(aws: None, db: Database) -> None:
    traffic(db, {"lstm": (1, 1)})
    result = run(db, boto3.client("sagemaker", region_name=REGION))
    assert result.aggregation is not None and result.aggregation.rows_read["generations"] == 2
    assert result.decision is None and not result.applied
    assert result.outcome == "endpoint tweetgen does not exist yet: nothing to decide"
    assert result.as_dict()["decision"] is None


def test_the_status_shows_figures_statistics_and_the_last_decision(aws: None, db: Database) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    traffic(db, {"lstm": (5, 35), "gpt2": (34, 6), "retired": (1, 0)})
    db.failures.record_many(
        [
            {
                "failure_id": "x1",
                "variant": "lstm",
                "reason": "ModelError",
                "created_at": NOW - timedelta(minutes=10),
            }
        ]
    )
    before = experiment_status(db, ENDPOINT, None)
    assert before["last_decision"] is None and before["variants"] == []
    decided = run(db, sagemaker)
    assert decided.decision is not None

    in_service = [ServingVariant("lstm", 0.0, "v1"), ServingVariant("gpt2", 1.0, "v1")]
    status = experiment_status(db, ENDPOINT, in_service)

    rows = {row["variant"]: row for row in status["variants"]}
    assert set(rows) == {"lstm", "gpt2", "retired"}
    gpt2, lstm, retired = rows["gpt2"], rows["lstm"], rows["retired"]
    assert (gpt2["weight"], gpt2["traffic_share"], gpt2["model_version"]) == (1.0, 1.0, "v1")
    assert (gpt2["served"], gpt2["feedback"], gpt2["positive"]) == (40, 40, 34)
    assert gpt2["like_rate"] == 0.85 and gpt2["p_best"] > 0.95
    assert (lstm["served"], lstm["errors"], lstm["error_rate"]) == (41, 1, round(1 / 41, 6))
    assert gpt2["latency_p95_ms"] is not None and gpt2["lift"]["versus"] == "lstm"
    assert retired["in_service"] is False and retired["weight"] == 0.0
    assert retired["p_best"] is None  # not a variant of the decision
    assert status["sequential"]["gpt2|lstm"]["p_value"] < 0.05
    assert status["srm"]["flagged"] is False
    last = status["last_decision"]
    assert last["id"] == decided.decision.id and last["applied"] and last["changed"]
    assert last["weights"] == {"lstm": 0.0, "gpt2": 1.0} and last["winner"] == "gpt2"
    assert status["metrics_as_of"] is not None and status["policy"] == "ab"
    # Without the endpoint to ask: the weights last seen or applied.
    offline = experiment_status(db, ENDPOINT, None)
    weights = {r["variant"]: r["weight"] for r in offline["variants"]}
    assert weights == {"lstm": 0.0, "gpt2": 1.0, "retired": 0.0}
