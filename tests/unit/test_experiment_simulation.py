"""The experiment engine by simulation: the policies' properties over seeded experiments.

The same simulator as ``benchmarks/experiment_simulation.py``, at sizes that run in seconds.
Properties of the statistics alone (the mSPRT's A/A false positives against repeated z-tests,
its power, SRM false alarms at a true 50/50) are in ``test_statistics.py``; these are about
``decide`` run after every aggregation round, the regret of the policies, the power of the
SRM check, and the simulator's own faithfulness to the strategies it stands in for.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from tweetgen.domain.statistics import BetaPosterior, probability_best

from benchmarks.experiment_simulation import (
    AB,
    BANDIT,
    AwsSamplesStrategy,
    FixedSplit,
    PolicyStrategy,
    Strategy,
    Users,
    ab_policy_stops,
    default_strategies,
    draw_looks,
    generator,
    naive_stops,
    policy_settings,
    run_strategy,
    share,
    simulate_regret,
    simulate_srm,
)


def upper_bound(rate: float, experiments: int, z: float = 2.33) -> float:
    """``rate`` plus a one-sided 99 % sampling margin for ``experiments`` trials."""
    return rate + z * math.sqrt(rate * (1 - rate) / experiments)


# --------------------------------------------------------------------------- A/A through decide


def test_a_a_the_ab_policy_rarely_declares_a_winner_while_repeated_z_tests_do() -> None:
    experiments = 150
    looks = draw_looks(
        generator(11, 0), experiments=experiments, looks=20, round_users=400, rates=(0.1, 0.1)
    )
    policy = ab_policy_stops(looks, experiments)
    naive = naive_stops(looks)
    policy_rate = share([o.stop for o in policy])
    naive_rate = share(naive)
    # decide after every round, as the aggregate function runs: the declared winners of an
    # A/A test stay within alpha (sampling margin of 150 experiments) ...
    assert policy_rate <= upper_bound(0.05, experiments)
    # ... while the z-test, peeked at 20 times, "finds" a difference far more often.
    assert naive_rate >= 0.15
    assert naive_rate >= 3 * max(policy_rate, 0.01)


def test_the_ab_policy_declares_the_better_variant_once_the_difference_is_clear() -> None:
    looks = draw_looks(
        generator(12, 0), experiments=25, looks=12, round_users=400, rates=(0.10, 0.20)
    )
    outcomes = ab_policy_stops(looks, 25)
    stops = [o.stop for o in outcomes]
    assert all(stop is not None for stop in stops), "a 10% vs 20% difference went undetected"
    assert all(stop.b_better for stop in stops if stop is not None)
    # Long before the 4,800 users simulated: a few rounds are enough.
    assert max(stop.users for stop in stops if stop is not None) <= 3200


# --------------------------------------------------------------------------- regret


def test_bandit_regret_is_well_below_a_fixed_split_on_a_clear_difference() -> None:
    strategies: list[Strategy] = [
        PolicyStrategy(policy_settings("bandit"), BANDIT),
        PolicyStrategy(policy_settings("ab"), AB),
        FixedSplit(),
    ]
    summaries = simulate_regret(
        rates=(0.10, 0.20),
        users=3000,
        round_users=300,
        repetitions=8,
        seed=5,
        strategies=strategies,
    )
    bandit, ab, fixed = summaries[BANDIT], summaries[AB], summaries["fixed 50/50 split"]
    # The fixed split loses half the users' gap: 3000 x 0.5 x 0.10 = 150 likes.
    assert fixed.mean == pytest.approx(150, rel=0.1)
    assert bandit.mean < 0.5 * fixed.mean
    assert ab.mean < fixed.mean
    # By the end the bandit sends nearly everyone to the better variant, down to its floor.
    assert bandit.final_best_share >= 0.9
    # Re-weighting every round keeps the sample-ratio check quiet (it compares the users served
    # since the weights last changed): at most a chance false alarm.
    assert bandit.frozen_looks <= 2
    assert ab.winners == 8 and ab.wrong_winners == 0


def test_with_no_difference_nothing_is_lost_and_the_bandit_keeps_both_variants() -> None:
    bandit = PolicyStrategy(policy_settings("bandit"), BANDIT)
    rng = generator(3, 0)
    users = Users(like=rng.random(4000), route=rng.random(4000))
    outcome = run_strategy(bandit, users, (0.15, 0.15), 500)
    assert outcome.regret == 0.0
    assert min(outcome.served) >= 0.05 * 4000 * 0.5  # the floor, with room for chance


def test_the_same_seed_gives_the_same_figures() -> None:
    def once() -> dict[str, float]:
        found = simulate_regret(
            rates=(0.10, 0.12),
            users=1500,
            round_users=500,
            repetitions=2,
            seed=9,
            strategies=default_strategies(),
        )
        return {name: summary.mean for name, summary in found.items()}

    first = once()
    assert once() == first
    assert len(first) == len(default_strategies())


# --------------------------------------------------------------------------- SRM power


def test_srm_catches_a_52_48_split_at_50k_users_and_grows_with_users() -> None:
    strong = simulate_srm(users=50_000, served_share=0.52, repetitions=300, seed=1)
    assert strong.flagged >= 0.99
    # p < 0.001 is strict: with few users the same 2-point skew mostly goes unnoticed, and
    # detection grows with the users served.
    rates = [
        simulate_srm(users=n, served_share=0.52, repetitions=300, seed=1, stream=i).flagged
        for i, n in enumerate((1_000, 5_000, 20_000), start=1)
    ]
    assert rates[0] <= 0.1
    assert rates == sorted(rates)


# --------------------------------------------------------------------------- the simulator


def test_users_are_routed_by_the_shares_in_force() -> None:
    rng = generator(4, 0)
    users = Users(like=rng.random(20_000), route=rng.random(20_000))
    outcome = run_strategy(FixedSplit((0.8, 0.2)), users, (0.3, 0.1), 20_000)
    assert outcome.served[0] / 20_000 == pytest.approx(0.8, abs=0.01)
    assert outcome.likes[0] / outcome.served[0] == pytest.approx(0.3, abs=0.015)
    assert outcome.likes[1] / outcome.served[1] == pytest.approx(0.1, abs=0.015)
    # Regret is the expected likes lost: the users sent to the weaker variant times the gap.
    assert outcome.regret == pytest.approx(outcome.served[1] * 0.2)


def test_per_user_thompson_draws_choose_each_variant_with_its_probability_to_be_best() -> None:
    # The aws-samples ThompsonSampling draws Beta(1 + rewards, 1 + misses) per variant for every
    # user and takes the largest; the simulator uses the exact probability of that instead.
    served, likes = [200, 180], [24, 27]
    shares = AwsSamplesStrategy("ThompsonSampling").after_round([0, 0], served, likes)
    rng = random.Random(8)
    draws = 40_000
    second = sum(
        rng.betavariate(1 + likes[1], 1 + served[1] - likes[1])
        > rng.betavariate(1 + likes[0], 1 + served[0] - likes[0])
        for _ in range(draws)
    )
    assert shares[1] == pytest.approx(second / draws, abs=0.01)
    exact = probability_best(
        {"a": BetaPosterior.from_counts(24, 200), "b": BetaPosterior.from_counts(27, 180)}
    )
    assert shares == pytest.approx([exact["a"], exact["b"]])


def test_aws_samples_epsilon_greedy_and_ucb1_shares() -> None:
    greedy = AwsSamplesStrategy("EpsilonGreedy", epsilon=0.1)
    assert greedy.after_round([0, 0], [100, 100], [10, 20]) == pytest.approx([0.05, 0.95])
    # Until every variant has more than ``warmup`` invocations: the initial weights.
    assert greedy.after_round([0, 0], [100, 0], [10, 0]) == [0.5, 0.5]
    ucb = AwsSamplesStrategy("UCB1")
    # Rate + sqrt(2 ln(total) / n): the rarely served variant gets the curiosity bonus.
    assert ucb.after_round([0, 0], [1000, 20], [200, 3]) == [0.0, 1.0]
    assert ucb.after_round([0, 0], [1000, 1000], [200, 100]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown"):
        AwsSamplesStrategy("Softmax")


def test_binomial_looks_are_cumulative_and_split_by_the_weights() -> None:
    looks = draw_looks(
        generator(2, 0), experiments=200, looks=5, round_users=1000, rates=(0.1, 0.3)
    )
    total = looks.served_a + looks.served_b
    assert (total == np.arange(1, 6) * 1000).all()
    assert (np.diff(looks.likes_a, axis=1) >= 0).all()
    assert looks.served_a[:, -1].mean() / 5000 == pytest.approx(0.5, abs=0.01)
    assert looks.likes_b[:, -1].sum() / looks.served_b[:, -1].sum() == pytest.approx(0.3, abs=0.01)
