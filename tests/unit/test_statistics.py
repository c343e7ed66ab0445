"""The experiment's statistics: properties (hypothesis), known values and seeded simulations."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tweetgen.domain.statistics import (
    SRM_P_THRESHOLD,
    BetaPosterior,
    GuardrailObservation,
    GuardrailSettings,
    SequentialState,
    _monte_carlo,
    chi2_sf,
    expected_loss,
    fixed_horizon_sample_size,
    guardrail_violations,
    mixture_log_likelihood_ratio,
    monte_carlo_probability_best,
    msprt_radius,
    prob_b_beats_a,
    probability_best,
    regularized_gamma_p,
    regularized_gamma_q,
    relative_lift_interval,
    sample_ratio_mismatch,
    two_proportion_z_test,
)

FAST = settings(max_examples=40, deadline=None)
SLOW = settings(max_examples=12, deadline=None)


@st.composite
def counts(draw: st.DrawFn, max_trials: int = 400) -> tuple[int, int]:
    trials = draw(st.integers(0, max_trials))
    return draw(st.integers(0, trials)), trials


def posterior(successes: int, trials: int, prior: float = 1.0) -> BetaPosterior:
    return BetaPosterior.from_counts(successes, trials, prior, prior)


# --------------------------------------------------------------------------- chi-squared


@pytest.mark.parametrize(
    ("x", "df", "expected"),
    [
        (3.841459, 1, 0.05),
        (5.991465, 2, 0.05),
        (10.828, 1, 0.001),
        (6.634897, 1, 0.01),
        (7.814728, 3, 0.05),
        (18.307038, 10, 0.05),
        (124.342113, 100, 0.05),
        (0.0, 3, 1.0),
    ],
)
def test_chi2_sf_matches_table_values(x: float, df: int, expected: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(expected, abs=1e-4)


@FAST
@given(st.floats(0.0, 400.0), st.floats(0.0, 50.0), st.integers(1, 60))
def test_chi2_sf_is_monotone_and_a_probability(x: float, step: float, df: int) -> None:
    here, further = chi2_sf(x, df), chi2_sf(x + step, df)
    assert 0.0 <= further <= here <= 1.0
    assert chi2_sf(x, df + 1) >= here - 1e-12  # more freedom, heavier tail


@FAST
@given(st.floats(1e-6, 300.0))
def test_chi2_sf_closed_forms_for_one_and_two_degrees(x: float) -> None:
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-9, abs=1e-300)
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-8, abs=1e-300)


@FAST
@given(st.floats(0.05, 80.0), st.floats(0.0, 150.0))
def test_incomplete_gamma_halves_sum_to_one(a: float, x: float) -> None:
    assert regularized_gamma_p(a, x) + regularized_gamma_q(a, x) == pytest.approx(1.0)
    assert 0.0 <= regularized_gamma_q(a, x) <= 1.0


# --------------------------------------------------------------------------- Bayesian


@FAST
@given(st.lists(counts(), min_size=1, max_size=4))
def test_probability_best_is_a_distribution(observed: list[tuple[int, int]]) -> None:
    posteriors = {f"v{i}": posterior(s, n) for i, (s, n) in enumerate(observed)}
    p_best = probability_best(posteriors, draws=500, seed=1)
    assert set(p_best) == set(posteriors)
    assert all(0.0 <= p <= 1.0 for p in p_best.values())
    assert math.fsum(p_best.values()) == pytest.approx(1.0, abs=1e-9)


@FAST
@given(counts(), counts(), st.sampled_from([(1.0, 1.0), (0.5, 1.0), (2.0, 0.5)]))
def test_two_variant_probability_best_is_symmetric(
    a: tuple[int, int], b: tuple[int, int], prior: tuple[float, float]
) -> None:
    pa, pb = BetaPosterior.from_counts(*a, *prior), BetaPosterior.from_counts(*b, *prior)
    forward = probability_best({"a": pa, "b": pb})
    backward = probability_best({"b": pb, "a": pa})
    assert forward["a"] == pytest.approx(backward["a"], abs=1e-9)
    assert prob_b_beats_a(pa, pb) + prob_b_beats_a(pb, pa) == pytest.approx(1.0, abs=1e-9)
    if a == b:
        assert forward["a"] == pytest.approx(0.5, abs=1e-9)


@SLOW
@given(counts(max_trials=200), counts(max_trials=200), counts(max_trials=200))
def test_monte_carlo_probability_best_is_symmetric_in_distribution(
    a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]
) -> None:
    posteriors = {"a": posterior(*a), "b": posterior(*b), "c": posterior(*c)}
    forward = monte_carlo_probability_best(posteriors, draws=4000, seed=3)
    swapped = monte_carlo_probability_best(
        {"c": posteriors["a"], "b": posteriors["b"], "a": posteriors["c"]}, draws=4000, seed=4
    )
    assert forward["a"] == pytest.approx(swapped["c"], abs=0.05)
    assert forward["c"] == pytest.approx(swapped["a"], abs=0.05)


@FAST
@given(
    counts(), st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n)))
)
def test_one_more_success_raises_probability_best(
    other: tuple[int, int], mine: tuple[int, int]
) -> None:
    successes, trials = mine
    rival = posterior(*other)
    before = prob_b_beats_a(rival, posterior(successes, trials))
    after = prob_b_beats_a(rival, posterior(successes + 1, trials))
    assert after >= before - 1e-12


@SLOW
@given(
    counts(max_trials=300),
    counts(max_trials=300),
    st.sampled_from([(1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (2.0, 3.0), (0.5, 3.0)]),
)
def test_exact_probability_agrees_with_monte_carlo(
    a: tuple[int, int], b: tuple[int, int], prior: tuple[float, float]
) -> None:
    # The priors with a half make some parameters fractional, so every route of the exact
    # sum (over alpha or beta of either variant) is exercised.
    pa = BetaPosterior.from_counts(*a, *prior)
    pb = BetaPosterior.from_counts(*b, *prior)
    estimate = monte_carlo_probability_best({"a": pa, "b": pb}, draws=20_000, seed=11)
    assert prob_b_beats_a(pa, pb) == pytest.approx(estimate["b"], abs=0.02)


def test_exact_probability_with_fractional_parameters_only_needs_monte_carlo() -> None:
    pa, pb = BetaPosterior(2.5, 3.5), BetaPosterior(3.5, 2.5)
    with pytest.raises(ValueError, match="whole-number"):
        prob_b_beats_a(pa, pb)
    p_best = probability_best({"a": pa, "b": pb}, draws=20_000, seed=5)
    assert p_best["b"] == pytest.approx(integrated_b_beats_a(pa, pb), abs=0.02)


def integrated_b_beats_a(a: BetaPosterior, b: BetaPosterior, steps: int = 4000) -> float:
    """P(X_b > X_a) = integral of f_b(x) F_a(x) dx, by the midpoint rule."""

    def density(dist: BetaPosterior, x: float) -> float:
        log_norm = (
            math.lgamma(dist.alpha + dist.beta) - math.lgamma(dist.alpha) - math.lgamma(dist.beta)
        )
        return math.exp(
            log_norm + (dist.alpha - 1) * math.log(x) + (dist.beta - 1) * math.log(1 - x)
        )

    width = 1.0 / steps
    cumulative = total = 0.0
    for i in range(steps):
        x = (i + 0.5) * width
        step = density(a, x) * width
        total += density(b, x) * (cumulative + step / 2) * width
        cumulative += step
    return total


@FAST
@given(counts(max_trials=60), counts(max_trials=60))
def test_exact_probability_agrees_with_numerical_integration(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    pa, pb = posterior(*a), posterior(*b)
    assert prob_b_beats_a(pa, pb) == pytest.approx(integrated_b_beats_a(pa, pb, 800), abs=2e-3)


def test_exact_probability_is_fast_for_large_counts() -> None:
    a = posterior(10_000, 100_000)
    b = posterior(10_300, 100_000)
    p = prob_b_beats_a(a, b)
    z = (b.mean - a.mean) / math.sqrt(
        a.mean * (1 - a.mean) / 100_000 + b.mean * (1 - b.mean) / 100_000
    )
    assert p == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)), abs=2e-3)


@FAST
@given(counts(), counts())
def test_two_variant_expected_loss_is_non_negative_and_consistent(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    pa, pb = posterior(*a), posterior(*b)
    loss = expected_loss({"a": pa, "b": pb})
    assert loss["a"] >= 0.0
    assert loss["b"] >= 0.0
    # E[max(B - A, 0)] - E[max(A - B, 0)] = E[B - A]
    assert loss["a"] - loss["b"] == pytest.approx(pb.mean - pa.mean, abs=1e-9)


@SLOW
@given(st.lists(counts(max_trials=200), min_size=2, max_size=4))
def test_expected_loss_matches_monte_carlo(observed: list[tuple[int, int]]) -> None:
    posteriors = {f"v{i}": posterior(s, n) for i, (s, n) in enumerate(observed)}
    loss = expected_loss(posteriors, draws=3000, seed=2)
    assert all(value >= 0.0 for value in loss.values())
    if len(posteriors) == 2:
        sampled = _monte_carlo(posteriors, 20_000, 9)[1]
        for name, value in loss.items():
            assert value == pytest.approx(sampled[name], abs=0.01)


def test_relative_lift_interval_covers_the_true_lift_and_is_seeded() -> None:
    a, b = posterior(1000, 10_000), posterior(1200, 10_000)
    interval = relative_lift_interval(a, b, draws=5000, seed=8)
    assert interval.low < 0.2 < interval.high
    assert interval.low < interval.median < interval.high
    assert interval.low > 0.1 and interval.high < 0.3
    assert interval == relative_lift_interval(a, b, draws=5000, seed=8)


# --------------------------------------------------------------------------- fixed horizon


def test_z_test_known_value() -> None:
    test = two_proportion_z_test(100, 1000, 130, 1000)
    assert test.z == pytest.approx(2.1027, abs=1e-3)
    assert test.p_value == pytest.approx(0.03549, abs=1e-4)
    greater = two_proportion_z_test(100, 1000, 130, 1000, alternative="greater")
    assert greater.p_value == pytest.approx(test.p_value / 2)
    assert two_proportion_z_test(0, 0, 1, 2).p_value == 1.0
    assert two_proportion_z_test(0, 10, 0, 10).p_value == 1.0


def test_fixed_horizon_sample_size() -> None:
    # The textbook answer for 10 % vs 20 % at alpha 0.05 (two-sided), power 0.8.
    assert fixed_horizon_sample_size(0.10, 0.20) == 199
    assert fixed_horizon_sample_size(0.10, 0.12) > fixed_horizon_sample_size(0.10, 0.15)
    assert fixed_horizon_sample_size(0.1, 0.2, power=0.9) > 199
    with pytest.raises(ValueError, match="equal"):
        fixed_horizon_sample_size(0.1, 0.1)


# --------------------------------------------------------------------------- mSPRT


def test_mixture_likelihood_ratio_matches_the_paper_form() -> None:
    # Johari et al.: Lambda = sqrt(V / (V + n tau^2)) exp(n^2 tau^2 d^2 / (2 V (V + n tau^2))).
    n, per_pair_variance, tau, d = 400, 0.32, 0.05, 0.04
    paper = math.log(math.sqrt(per_pair_variance / (per_pair_variance + n * tau**2))) + (
        n**2 * tau**2 * d**2 / (2 * per_pair_variance * (per_pair_variance + n * tau**2))
    )
    assert mixture_log_likelihood_ratio(d, per_pair_variance / n, tau) == pytest.approx(paper)
    # The radius is where the ratio reaches 1 / alpha.
    radius = msprt_radius(per_pair_variance / n, tau, 0.05)
    at_edge = mixture_log_likelihood_ratio(radius, per_pair_variance / n, tau)
    assert at_edge == pytest.approx(math.log(20))


@st.composite
def look_sequences(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    looks = []
    sa = na = sb = nb = 0
    for _ in range(draw(st.integers(1, 25))):
        da, db = draw(st.integers(0, 80)), draw(st.integers(0, 80))
        sa += draw(st.integers(0, da))
        sb += draw(st.integers(0, db))
        na, nb = na + da, nb + db
        looks.append((sa, na, sb, nb))
    return looks


@FAST
@given(look_sequences())
def test_always_valid_p_value_never_increases(looks: list[tuple[int, int, int, int]]) -> None:
    state = SequentialState()
    previous_p = 1.0
    for look in looks:
        state = state.update(*look)
        assert 0.0 <= state.p_value <= previous_p
        assert state.ci_low <= state.ci_high
        previous_p = state.p_value
        # Same counts again: the same look, nothing moves.
        assert state.update(*look) == state
    assert SequentialState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_sequential_state_restarts_when_counts_go_back_or_tau_changes() -> None:
    state = SequentialState().update(100, 1000, 200, 1000)
    assert state.significant
    restarted = state.update(10, 100, 12, 100)
    assert restarted.looks == 1
    assert not restarted.significant
    assert SequentialState.from_dict(state.to_dict(), tau=0.1).looks == 0
    # A like that became a dislike (the generation's latest feedback) is no restart.
    revised = state.update(100, 1000, 199, 1000)
    assert revised.looks == state.looks + 1 and revised.significant
    assert revised.p_value <= state.p_value
    assert SequentialState.from_dict(None).looks == 0
    with pytest.raises(ValueError, match="unreadable"):
        SequentialState.from_dict({"tau": 0.05, "alpha": "x"})


def test_confidence_sequence_agrees_with_the_p_value() -> None:
    state = SequentialState()
    rng = random.Random(4)
    sa = sb = n = 0
    for _ in range(40):
        n += 50
        sa += sum(rng.random() < 0.30 for _ in range(50))
        sb += sum(rng.random() < 0.36 for _ in range(50))
        state = state.update(sa, n, sb, n)
        assert state.significant == (not state.ci_low <= 0.0 <= state.ci_high)
    assert state.ci_low <= 0.06 <= state.ci_high


# --------------------------------------------------------------------------- simulations


@dataclass(frozen=True)
class SimulationResult:
    """How often each procedure rejected, and when the sequential one first did."""

    msprt_rejections: int
    naive_rejections: int
    final_look_rejections: int
    experiments: int
    msprt_stops: tuple[int, ...]

    def rate(self, count: int) -> float:
        return count / self.experiments


def simulate(
    rate_a: float,
    rate_b: float,
    *,
    experiments: int,
    looks: int,
    batch: int,
    seed: int,
    alpha: float = 0.05,
) -> SimulationResult:
    """Seeded experiments, one look after each batch of ``batch`` users per arm."""
    rng = random.Random(seed)
    msprt = naive = final = 0
    stops = []
    for _ in range(experiments):
        state = SequentialState(alpha=alpha)
        sa = sb = n = 0
        naive_rejected = False
        stop = None
        for _ in range(looks):
            sa += sum(rng.random() < rate_a for _ in range(batch))
            sb += sum(rng.random() < rate_b for _ in range(batch))
            n += batch
            state = state.update(sa, n, sb, n)
            if stop is None and state.p_value < alpha:
                stop = n
            naive_rejected |= two_proportion_z_test(sa, n, sb, n).p_value < alpha
        msprt += stop is not None
        naive += naive_rejected
        final += two_proportion_z_test(sa, n, sb, n).p_value < alpha
        if stop is not None:
            stops.append(stop)
    return SimulationResult(msprt, naive, final, experiments, tuple(stops))


def upper_bound(rate: float, experiments: int, z: float = 2.33) -> float:
    """``rate`` plus a one-sided 99 % sampling margin for ``experiments`` trials."""
    return rate + z * math.sqrt(rate * (1 - rate) / experiments)


def test_a_a_peeking_keeps_msprt_false_positives_at_alpha_but_not_the_z_test() -> None:
    result = simulate(0.2, 0.2, experiments=300, looks=30, batch=50, seed=2024)
    msprt_rate = result.rate(result.msprt_rejections)
    naive_rate = result.rate(result.naive_rejections)
    # Always valid: at most alpha, within sampling error of 300 experiments.
    assert msprt_rate <= upper_bound(0.05, 300)
    # Peeking 30 times with the fixed-horizon test: the false-positive rate inflates well
    # beyond alpha, and far beyond the sequential test's.
    assert naive_rate >= 0.15
    assert naive_rate >= 3 * max(msprt_rate, 0.01)
    # One look at the planned horizon is fine for the z-test.
    assert result.rate(result.final_look_rejections) <= upper_bound(0.05, 300)


def test_sequential_test_detects_a_real_difference() -> None:
    result = simulate(0.10, 0.20, experiments=100, looks=40, batch=25, seed=7)
    assert result.rate(result.msprt_rejections) >= 0.95
    stops = sorted(result.msprt_stops)
    median_stop = stops[len(stops) // 2]
    planned = fixed_horizon_sample_size(0.10, 0.20)
    # The price of peeking freely: a later stop than the fixed design's horizon, but the
    # same order of magnitude.
    assert planned <= median_stop <= 4 * planned


def test_srm_flags_a_55_45_split_against_50_50_weights() -> None:
    result = sample_ratio_mismatch({"lstm": 11_000, "gpt2": 9_000}, {"lstm": 1, "gpt2": 1})
    assert result.statistic == pytest.approx(200.0)
    assert result.df == 1
    assert result.flagged
    assert result.p_value < 1e-40


def test_srm_rarely_flags_a_true_50_50_split() -> None:
    rng = random.Random(99)
    users, runs = 20_000, 1000
    flags = 0
    for _ in range(runs):
        lstm = rng.getrandbits(users).bit_count()  # Binomial(20000, 1/2), exactly
        flags += sample_ratio_mismatch(
            {"lstm": lstm, "gpt2": users - lstm}, {"lstm": 1, "gpt2": 1}
        ).flagged
    # Expected 0.1 % (the threshold); allow sampling noise.
    assert flags <= 5


def test_srm_edge_cases() -> None:
    assert not sample_ratio_mismatch({}, {"a": 1, "b": 1}).flagged
    zero_weight = sample_ratio_mismatch({"a": 10, "b": 3}, {"a": 1, "b": 0})
    assert zero_weight.flagged and zero_weight.p_value == 0.0
    assert not sample_ratio_mismatch({"a": 10, "b": 0}, {"a": 1, "b": 0}).flagged
    weighted = sample_ratio_mismatch({"a": 8000, "b": 2000}, {"a": 4, "b": 1})
    assert weighted.statistic == pytest.approx(0.0) and not weighted.flagged
    assert SRM_P_THRESHOLD == 0.001
    with pytest.raises(ValueError, match="zero"):
        sample_ratio_mismatch({"a": 1}, {"a": 0})


# --------------------------------------------------------------------------- guardrails


def test_guardrail_flags_a_much_higher_error_rate_only() -> None:
    flagged = guardrail_violations(
        {
            "lstm": GuardrailObservation(served=2000, errors=20),
            "gpt2": GuardrailObservation(served=2000, errors=300),
        }
    )
    assert list(flagged) == ["gpt2"]
    assert "error rate 15.0%" in flagged["gpt2"][0]


def test_guardrail_needs_both_significance_and_a_material_difference() -> None:
    close = {
        "lstm": GuardrailObservation(served=100_000, errors=1000),
        "gpt2": GuardrailObservation(served=100_000, errors=1300),  # significant but +0.3 pt
    }
    assert guardrail_violations(close) == {}
    few = {
        "lstm": GuardrailObservation(served=50, errors=0),
        "gpt2": GuardrailObservation(served=50, errors=10),
    }
    assert guardrail_violations(few) == {}
    assert guardrail_violations(few, GuardrailSettings(min_samples=20))


def test_guardrail_flags_slow_latency() -> None:
    observations = {
        "lstm": GuardrailObservation(served=500, latency_p95_ms=120.0),
        "gpt2": GuardrailObservation(served=500, latency_p95_ms=900.0),
    }
    flagged = guardrail_violations(observations)
    assert list(flagged) == ["gpt2"]
    assert "latency p95 900 ms" in flagged["gpt2"][0]
    assert guardrail_violations(observations, GuardrailSettings(latency_factor=10.0)) == {}


# --------------------------------------------------------------------------- Beta intervals


@pytest.mark.parametrize(
    ("alpha", "beta"),
    [(1.0, 1.0), (0.5, 0.5), (3.0, 9.0), (101.0, 901.0), (2.5, 40000.5), (50001.0, 50001.0)],
)
def test_beta_cdf_and_quantile_match_scipy(alpha: float, beta: float) -> None:
    from scipy import stats

    dist = BetaPosterior(alpha, beta)
    reference = stats.beta(alpha, beta)
    for q in (1e-6, 0.025, 0.1, 0.5, 0.9, 0.975, 1 - 1e-6):
        x = float(reference.ppf(q))
        assert dist.cdf(x) == pytest.approx(q, rel=1e-9, abs=1e-12)
        assert dist.quantile(q) == pytest.approx(x, rel=1e-8, abs=1e-14)
    low, high = dist.interval(0.95)
    assert (low, high) == pytest.approx(reference.interval(0.95), rel=1e-8)


@FAST
@given(counts(), st.floats(0.5, 0.99))
def test_beta_interval_holds_its_mass_around_the_mean(
    observed: tuple[int, int], level: float
) -> None:
    dist = posterior(*observed)
    low, high = dist.interval(level)
    assert 0.0 <= low < dist.mean < high <= 1.0
    assert dist.cdf(high) - dist.cdf(low) == pytest.approx(level, abs=1e-9)
    wider = dist.interval(min(0.999, level + 0.005))
    assert wider[0] <= low and high <= wider[1]


def test_beta_interval_rejects_a_level_outside_zero_one() -> None:
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        BetaPosterior(2.0, 3.0).interval(1.0)
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        BetaPosterior(2.0, 3.0).quantile(1.5)
    assert BetaPosterior(2.0, 3.0).cdf(-1.0) == 0.0 and BetaPosterior(2.0, 3.0).cdf(2.0) == 1.0
