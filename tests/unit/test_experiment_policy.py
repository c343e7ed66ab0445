"""The experiment's decision policies: ab, bandit, manual, SRM freeze, guardrails, idempotence."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tweetgen.domain.experiment import (
    Decision,
    ExperimentSettings,
    VariantSnapshot,
    decide,
    normalise_weights,
    pair_key,
)

EVEN = {"lstm": 1.0, "gpt2": 1.0}
# Fewer Monte Carlo draws than in production: the tests only need determinism and speed.
AB = ExperimentSettings(policy="ab", monte_carlo_draws=2000)
BANDIT = replace(AB, policy="bandit")
MANUAL = replace(AB, policy="manual")


def snapshot(
    positives: int, feedback: int, *, served: int | None = None, **extra: Any
) -> VariantSnapshot:
    return VariantSnapshot(
        served=feedback if served is None else served,
        feedback_count=feedback,
        positive_count=positives,
        **extra,
    )


CLEAR = {"lstm": snapshot(100, 1000), "gpt2": snapshot(200, 1000)}


def nothing_served_since(snapshots: dict[str, VariantSnapshot]) -> dict[str, VariantSnapshot]:
    """The same counts right after new weights were applied: no request under them yet."""
    return {name: replace(snap, served_since_weights=0) for name, snap in snapshots.items()}


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_environment() -> None:
    assert ExperimentSettings.from_environment({}) == ExperimentSettings()
    configured = ExperimentSettings.from_environment(
        {
            "EXPERIMENT_POLICY": "Bandit",
            "EXPERIMENT_ALPHA": "0.01",
            "EXPERIMENT_P_BEST_THRESHOLD": "0.99",
            "EXPERIMENT_MIN_SAMPLES_PER_VARIANT": "500",
            "EXPERIMENT_WINNER_SHARE": "0.9",
            "EXPERIMENT_BANDIT_FLOOR": "0.1",
            "EXPERIMENT_SRM_THRESHOLD": "0.0001",
            "EXPERIMENT_GUARDRAIL_LATENCY_FACTOR": "2",
            "EXPERIMENT_SEED": "7",
            "EXPERIMENT_CONTROL": "lstm",
            "EXPERIMENT_PRIOR_ALPHA": " ",
        }
    )
    assert configured.policy == "bandit"
    assert configured.alpha == 0.01
    assert configured.p_best_threshold == 0.99
    assert configured.min_samples_per_variant == 500
    assert configured.winner_share == 0.9
    assert configured.bandit_floor == 0.1
    assert configured.srm_threshold == 0.0001
    assert configured.guardrails.latency_factor == 2.0
    assert configured.seed == 7
    assert configured.control == "lstm"
    assert configured.prior_alpha == 1.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXPERIMENT_POLICY": "epsilon-greedy"}, "EXPERIMENT_POLICY.*ab, bandit, manual"),
        ({"EXPERIMENT_ALPHA": "five percent"}, "EXPERIMENT_ALPHA must be a number"),
        ({"EXPERIMENT_ALPHA": "1.5"}, r"alpha \(EXPERIMENT_ALPHA\) must be between 0 and 1"),
        ({"EXPERIMENT_MIN_SAMPLES_PER_VARIANT": "2.5"}, "must be an integer"),
        ({"EXPERIMENT_WINNER_SHARE": "0"}, r"winner_share \(EXPERIMENT_WINNER_SHARE\)"),
        ({"EXPERIMENT_BANDIT_FLOOR": "-0.1"}, "EXPERIMENT_BANDIT_FLOOR"),
        ({"EXPERIMENT_MIXING_SD": "0"}, "EXPERIMENT_MIXING_SD.*positive"),
        ({"EXPERIMENT_GUARDRAIL_LATENCY_FACTOR": "0.5"}, "EXPERIMENT_GUARDRAIL_LATENCY_FACTOR"),
    ],
)
def test_settings_reject_bad_values_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentSettings.from_environment(env)


def test_weights_normalise() -> None:
    assert normalise_weights({"lstm": 3, "gpt2": 1}) == {"lstm": 0.75, "gpt2": 0.25}
    assert normalise_weights({"lstm": 0, "gpt2": 0}) == {"lstm": 0.5, "gpt2": 0.5}
    with pytest.raises(ValueError, match="empty"):
        normalise_weights({})


# --------------------------------------------------------------------------- ab


def test_ab_declares_the_true_winner_in_a_clear_case() -> None:
    decision = decide(CLEAR, EVEN, AB)
    assert decision.winner == "gpt2"
    assert decision.changed
    assert decision.weights == {"lstm": 0.0, "gpt2": 1.0}
    assert "gpt2 wins" in decision.reason
    stats = decision.statistics
    assert stats["variants"]["gpt2"]["p_best"] > 0.999
    assert stats["sequential"][pair_key("lstm", "gpt2")]["significant"]
    assert stats["lift"]["gpt2"]["versus"] == "lstm"
    assert stats["lift"]["gpt2"]["low"] > 0.3


def test_ab_winner_share_leaves_the_rest_to_the_others() -> None:
    decision = decide(CLEAR, EVEN, replace(AB, winner_share=0.8))
    assert decision.weights == {"lstm": 0.2, "gpt2": 0.8}


def test_ab_waits_with_too_few_samples() -> None:
    few = {"lstm": snapshot(5, 20), "gpt2": snapshot(15, 20)}
    decision = decide(few, EVEN, AB)
    assert decision.winner is None
    assert not decision.changed
    assert decision.weights == {"lstm": 0.5, "gpt2": 0.5}
    assert "20 of 100 feedback needed" in decision.reason


def test_ab_waits_while_the_sequential_test_is_not_significant() -> None:
    close = {"lstm": snapshot(300, 1000), "gpt2": snapshot(320, 1000)}
    decision = decide(close, EVEN, AB)
    assert decision.winner is None
    assert not decision.changed
    assert "always-valid p=" in decision.reason


def test_ab_keeps_a_declared_winner_on_later_runs() -> None:
    first = decide(CLEAR, EVEN, AB)
    # Later, the loser's old counts look closer (say the store was compacted); the winner stays.
    later = {"lstm": snapshot(0, 0), "gpt2": snapshot(210, 1050, served_since_weights=50)}
    again = decide(later, first.weights, AB, first.sequential_state, first.to_dict())
    assert again.winner == "gpt2"
    assert not again.changed
    assert again.weights == first.weights
    assert "declared the winner earlier" in again.reason


def test_a_variant_that_joins_after_a_winner_gets_its_traffic_and_a_new_experiment() -> None:
    first = decide(CLEAR, EVEN, AB)
    assert first.winner == "gpt2" and first.weights["lstm"] == 0.0
    # A rollout adds gpt2b with the weight it gives a new variant.
    joined = {**nothing_served_since(CLEAR), "gpt2b": snapshot(0, 0)}
    in_force = {**first.weights, "gpt2b": 1.0}
    again = decide(joined, in_force, AB, first.sequential_state, first.to_dict())
    assert again.winner is None
    assert again.weights["gpt2b"] > 0 and again.weights["gpt2"] > 0
    assert "gpt2b joined" in again.reason
    # Without a newcomer the winner stays (the test above), with one it is tested again.
    kept = decide(nothing_served_since(CLEAR), first.weights, AB, None, first.to_dict())
    assert kept.winner == "gpt2"


def test_ab_runs_the_sequential_test_across_runs() -> None:
    rng = random.Random(5)
    state = None
    counts = {"lstm": [0, 0], "gpt2": [0, 0]}
    p_values = []
    for _ in range(8):
        for name, rate in (("lstm", 0.3), ("gpt2", 0.3)):
            counts[name][0] += sum(rng.random() < rate for _ in range(60))
            counts[name][1] += 60
        snaps = {name: snapshot(s, n) for name, (s, n) in counts.items()}
        decision = decide(snaps, EVEN, AB, state)
        state = json.loads(json.dumps(decision.sequential_state))
        p_values.append(decision.statistics["sequential"]["gpt2|lstm"]["p_value"])
        assert not decision.changed
    assert p_values == sorted(p_values, reverse=True)
    assert state is not None and state["pairs"]["gpt2|lstm"]["looks"] == 8


# --------------------------------------------------------------------------- bandit


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.integers(0, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
        min_size=2,
        max_size=3,
    ),
    st.sampled_from([0.0, 0.05, 0.1, 0.2]),
)
def test_bandit_weights_respect_the_floor_and_sum_to_one(
    observed: list[tuple[int, int]], floor: float
) -> None:
    snaps = {f"v{i}": snapshot(s, n) for i, (s, n) in enumerate(observed)}
    weights = dict.fromkeys(snaps, 1.0)
    decision = decide(
        snaps, weights, replace(BANDIT, bandit_floor=floor, monte_carlo_draws=500, seed=3)
    )
    assert sum(decision.weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(w >= floor - 1e-9 for w in decision.weights.values())
    assert set(decision.weights) == set(snaps)


def test_bandit_moves_traffic_to_the_better_variant() -> None:
    decision = decide(CLEAR, EVEN, BANDIT)
    assert decision.changed
    assert decision.weights == {"lstm": 0.05, "gpt2": 0.95}
    assert "Thompson" in decision.reason
    uncertain = decide({"lstm": snapshot(3, 10), "gpt2": snapshot(4, 10)}, EVEN, BANDIT)
    assert 0.3 < uncertain.weights["gpt2"] < 0.8


def test_a_bandit_floor_too_high_for_the_variants_becomes_an_even_split() -> None:
    three = {**CLEAR, "gpt2b": snapshot(150, 1000)}
    decision = decide(three, {"lstm": 1, "gpt2": 1, "gpt2b": 1}, replace(BANDIT, bandit_floor=0.4))
    assert sorted(decision.weights.values()) == pytest.approx([1 / 3] * 3, abs=1e-3)
    assert "EXPERIMENT_BANDIT_FLOOR 0.4" in decision.reason and "lowered to 1/3" in decision.reason


@pytest.mark.parametrize("floor", [0.00001, -0.1, 1.0])
def test_a_bandit_floor_that_would_round_to_nothing_or_leave_nothing_is_refused(
    floor: float,
) -> None:
    with pytest.raises(ValueError, match="bandit_floor"):
        ExperimentSettings(policy="bandit", bandit_floor=floor)
    assert ExperimentSettings(policy="bandit", bandit_floor=0).bandit_floor == 0


# --------------------------------------------------------------------------- manual


@pytest.mark.parametrize("weights", [EVEN, {"lstm": 0.9, "gpt2": 0.1}, {"lstm": 1, "gpt2": 0}])
def test_manual_never_changes_weights_but_reports(weights: dict[str, float]) -> None:
    snaps = {name: replace(snap, served_since_weights=0) for name, snap in CLEAR.items()}
    decision = decide(snaps, weights, MANUAL)
    assert not decision.changed
    assert decision.weights == normalise_weights(weights)
    assert decision.winner is None
    assert decision.statistics["variants"]["gpt2"]["p_best"] > 0.999
    assert "manual" in decision.reason


# --------------------------------------------------------------------------- SRM, guardrails


@pytest.mark.parametrize("policy_settings", [AB, BANDIT])
def test_srm_freezes_automatic_decisions(policy_settings: ExperimentSettings) -> None:
    skewed = {
        "lstm": snapshot(100, 1000, served=11_000),
        "gpt2": snapshot(200, 1000, served=9_000),
    }
    decision = decide(skewed, EVEN, policy_settings)
    assert decision.frozen
    assert not decision.changed
    assert decision.weights == {"lstm": 0.5, "gpt2": 0.5}
    assert "sample-ratio mismatch" in decision.reason
    assert decision.statistics["srm"]["flagged"]
    assert decision.statistics["srm"]["statistic"] == pytest.approx(200.0)


def test_guardrail_demotes_an_erroring_variant_despite_more_likes() -> None:
    erroring = {
        "lstm": snapshot(100, 1000, served=2000, errors=10),
        "gpt2": snapshot(300, 1000, served=2000, errors=400),
    }
    ab = decide(erroring, EVEN, AB)
    assert ab.weights == {"lstm": 1.0, "gpt2": 0.0}
    assert ab.winner is None
    assert "guardrail" in ab.reason and "gpt2" in ab.reason
    assert ab.statistics["guardrails"]["gpt2"]
    bandit = decide(erroring, EVEN, BANDIT)
    assert bandit.weights == {"lstm": 0.95, "gpt2": 0.05}
    assert "guardrail" in bandit.reason


def test_guardrail_demotes_a_slow_variant_and_drops_a_previous_winner() -> None:
    first = decide(CLEAR, EVEN, replace(AB, winner_share=0.9))
    assert first.winner == "gpt2"
    slow = {
        "lstm": snapshot(100, 1000, latency_p95_ms=200.0, served_since_weights=0),
        "gpt2": snapshot(200, 1000, latency_p95_ms=2000.0, served_since_weights=0),
    }
    after = decide(slow, first.weights, AB, first.sequential_state, first)
    assert after.weights == {"lstm": 1.0, "gpt2": 0.0}
    assert after.winner is None
    assert "latency" in after.reason


def test_guardrail_flagging_every_variant_demotes_none() -> None:
    # lstm fails often, gpt2 is slow: both clearly worse on something, so neither is demoted.
    both = {
        "lstm": snapshot(100, 1000, served=2000, errors=300, latency_p95_ms=100.0),
        "gpt2": snapshot(200, 1000, served=2000, errors=10, latency_p95_ms=900.0),
    }
    decision = decide(both, EVEN, AB)
    assert set(decision.statistics["guardrails"]) == {"lstm", "gpt2"}
    assert any("every variant" in note for note in decision.statistics["notes"])
    assert decision.winner == "gpt2"


def test_latency_guardrail_compares_with_the_median_of_the_others() -> None:
    three = {
        "a": snapshot(10, 100, served=2000, latency_p95_ms=100.0),
        "b": snapshot(10, 100, served=2000, latency_p95_ms=400.0),
        "c": snapshot(10, 100, served=2000, latency_p95_ms=1600.0),
    }
    decision = decide(three, {"a": 1, "b": 1, "c": 1}, replace(AB, guardrail_latency_factor=1.1))
    assert set(decision.statistics["guardrails"]) == {"c"}
    assert decision.weights == {"a": 0.5, "b": 0.5, "c": 0.0}


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("policy_settings", [AB, BANDIT, MANUAL])
def test_same_inputs_same_decision_and_applying_twice_changes_nothing(
    policy_settings: ExperimentSettings,
) -> None:
    three = {"lstm": snapshot(100, 1000), "gpt2": snapshot(200, 1000), "ngram": snapshot(150, 1000)}
    weights = {"lstm": 1.0, "gpt2": 1.0, "ngram": 1.0}
    first = decide(three, weights, policy_settings)
    assert decide(three, weights, policy_settings) == first
    again = decide(
        nothing_served_since(three),
        first.weights,
        policy_settings,
        first.sequential_state,
        first,
    )
    assert not again.changed
    assert again.weights == first.weights
    assert again.sequential_state == first.sequential_state


def test_decision_is_json_and_round_trips() -> None:
    skewed = {"lstm": snapshot(1, 5, served=10), "gpt2": snapshot(0, 0, served=0)}
    decision = decide(skewed, {"lstm": 0.0, "gpt2": 1.0}, AB)
    assert decision.statistics["srm"]["statistic"] is None  # served under a zero weight
    text = json.dumps(decision.to_dict(), allow_nan=False)
    assert Decision.from_dict(json.loads(text)) == decision


def test_missing_snapshot_counts_as_nothing_and_bad_state_restarts() -> None:
    decision = decide(
        {"lstm": snapshot(10, 40)},
        EVEN,
        AB,
        {"pairs": {"gpt2|lstm": {"tau": 0.05, "alpha": 0.05, "looks": "many"}}},
    )
    assert decision.statistics["variants"]["gpt2"]["feedback_count"] == 0
    assert decision.sequential_state["pairs"]["gpt2|lstm"]["looks"] == 1
    assert any("restarted" in note for note in decision.statistics["notes"])
    with pytest.raises(ValueError, match="positive_count"):
        VariantSnapshot(served=1, feedback_count=1, positive_count=2)
