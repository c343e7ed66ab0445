"""Experiment statistics: Bayesian Beta-Binomial, always-valid sequential tests, SRM, guardrails.

Pure Python on the standard library (``math``, ``random``, ``statistics.NormalDist``): no
numpy, no scipy, no I/O. Every Monte Carlo estimate takes a seed, so the same counts always
give the same numbers.

Methods and where they come from:

- Beta-Binomial model per variant (successes = positive feedback, trials = feedback count,
  conjugate prior Beta(a, b)). The probability that one variant beats another is the exact
  finite sum of Evan Miller, "Formulas for Bayesian A/B Testing" (2015), evaluated with
  log-gamma; with more than two variants it is a seeded Monte Carlo estimate. The expected
  loss of choosing a variant, E[max(best - chosen, 0)], uses the closed form of Chris
  Stucchio, "Bayesian A/B Testing at VWO" (2015), for two variants.
- Sequential testing with always-valid p-values: the mixture sequential probability ratio
  test (mSPRT) with a normal mixing distribution N(0, tau^2) on the difference of two
  proportions, normal approximation (Johari, Pekelis, Walsh, "Always Valid Inference:
  Continuous Monitoring of A/B Tests", Operations Research 2022; Johari, Koomen, Pekelis,
  Walsh, "Peeking at A/B Tests", KDD 2017). The p-value after look n is
  ``p_n = min(p_{n-1}, 1 / Lambda_n)``; the confidence sequence is the set of differences the
  same test does not reject, intersected over looks.
- Fixed-horizon two-proportion z-test and the classic sample size per arm (Fleiss, Levin,
  Paik, "Statistical Methods for Rates and Proportions", 3rd ed., section 4.2).
- Sample-ratio mismatch: Pearson's chi-squared goodness of fit of the served counts against
  the traffic weights (Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online Controlled
  Experiments", KDD 2019). The chi-squared survival function is the regularized upper
  incomplete gamma function Q(k/2, x/2), by series or continued fraction (Press et al.,
  "Numerical Recipes", 3rd ed., section 6.2).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any, Literal

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_MIXING_SD",
    "DEFAULT_SEED",
    "SEQUENTIAL_MIN_TRIALS",
    "SRM_P_THRESHOLD",
    "BetaPosterior",
    "GuardrailObservation",
    "GuardrailSettings",
    "LiftInterval",
    "SequentialState",
    "SrmResult",
    "ZTest",
    "beta_quantile",
    "chi2_sf",
    "difference_variance",
    "expected_loss",
    "fixed_horizon_sample_size",
    "guardrail_violations",
    "mixture_log_likelihood_ratio",
    "monte_carlo_probability_best",
    "msprt_radius",
    "prob_b_beats_a",
    "probability_best",
    "regularized_beta",
    "regularized_gamma_p",
    "regularized_gamma_q",
    "relative_lift_interval",
    "sample_ratio_mismatch",
    "two_proportion_z_test",
]

# A served split whose chi-squared p-value falls below this is a sample-ratio mismatch.
SRM_P_THRESHOLD = 0.001
# Monte Carlo draws and seed used when the caller does not choose.
DEFAULT_DRAWS = 20_000
DEFAULT_SEED = 20_240_601
# Standard deviation of the mSPRT's normal mixing distribution, on the difference of rates.
DEFAULT_MIXING_SD = 0.05
# Looks with fewer trials per arm leave the sequential test where it is (the normal
# approximation of the variance is not trusted below this).
SEQUENTIAL_MIN_TRIALS = 30
# The exact sum is used up to this many terms; beyond it, Monte Carlo.
_EXACT_MAX_TERMS = 2_000_000

_NORMAL = NormalDist()


# --------------------------------------------------------------------------- Beta-Binomial


@dataclass(frozen=True)
class BetaPosterior:
    """A Beta(alpha, beta) distribution: the posterior of one variant's positive rate."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for name, value in (("alpha", self.alpha), ("beta", self.beta)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Beta parameter {name} must be a positive number, got {value!r}")

    @classmethod
    def from_counts(
        cls, successes: int, trials: int, prior_alpha: float = 1.0, prior_beta: float = 1.0
    ) -> BetaPosterior:
        """The posterior after ``successes`` out of ``trials`` under a Beta(prior) prior."""
        if successes < 0 or trials < successes:
            raise ValueError(
                f"need 0 <= successes <= trials, got {successes} successes of {trials} trials"
            )
        return cls(prior_alpha + successes, prior_beta + trials - successes)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def flipped(self) -> BetaPosterior:
        """The distribution of ``1 - X``: Beta(beta, alpha)."""
        return BetaPosterior(self.beta, self.alpha)

    def sample(self, rng: random.Random) -> float:
        return rng.betavariate(self.alpha, self.beta)

    def cdf(self, x: float) -> float:
        """P(X <= x): the regularized incomplete beta function I_x(alpha, beta)."""
        return regularized_beta(x, self.alpha, self.beta)

    def quantile(self, q: float) -> float:
        """The x with P(X <= x) = q."""
        return beta_quantile(q, self.alpha, self.beta)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The equal-tailed credible interval holding ``level`` of the posterior mass."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        tail = (1.0 - level) / 2.0
        return self.quantile(tail), self.quantile(1.0 - tail)


_BETA_EPS = 1e-15
_BETA_TINY = 1e-300
_BETA_MAX_ITERATIONS = 10_000
_QUANTILE_TOLERANCE = 1e-12


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b), modified Lentz (Numerical Recipes ``betacf``)."""

    def guarded(value: float) -> float:
        return _BETA_TINY if abs(value) < _BETA_TINY else value

    c = 1.0
    d = 1.0 / guarded(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, _BETA_MAX_ITERATIONS):
        even = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        d = 1.0 / guarded(1.0 + even * d)
        c = guarded(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        d = 1.0 / guarded(1.0 + odd * d)
        c = guarded(1.0 + odd / c)
        step = d * c
        h *= step
        if abs(step - 1.0) < _BETA_EPS:
            return h
    raise ArithmeticError(f"I_x(a, b) did not converge for x={x}, a={a}, b={b}")


def _log_beta_density_front(x: float, a: float, b: float) -> float:
    """log(x^a (1 - x)^b / B(a, b))."""
    return (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b) at ``x``.

    Its continued fraction (Press et al., "Numerical Recipes", 3rd ed., section 6.4), run on
    x or on 1 - x (I_x(a, b) = 1 - I_{1-x}(b, a)), whichever converges fast.
    """
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"Beta parameters must be positive numbers, got a={a!r}, b={b!r}")
    if math.isnan(x):
        raise ValueError("x must be a number, got nan")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(_log_beta_density_front(x, a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        value = front * _beta_continued_fraction(x, a, b) / a
    else:
        value = 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b
    return min(1.0, max(0.0, value))


def beta_quantile(q: float, a: float, b: float) -> float:
    """The inverse of :func:`regularized_beta`: the x in [0, 1] with I_x(a, b) = q.

    Newton steps on the CDF from a normal approximation, kept inside a bracket that
    bisection shrinks whenever a step would leave it, so it always converges.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    low, high = 0.0, 1.0
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    x = min(1.0 - 1e-9, max(1e-9, mean + _NORMAL.inv_cdf(q) * sd))
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    for _ in range(200):
        error = regularized_beta(x, a, b) - q
        if error > 0:
            high = x
        else:
            low = x
        if abs(error) < _QUANTILE_TOLERANCE * max(q, 1e-300) or high - low < 1e-15:
            return x
        density = math.exp(log_norm + (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x))
        step = x - error / density if density > 0 else math.nan
        x = step if low < step < high else (low + high) / 2.0
    return x


def _whole(value: float) -> bool:
    return float(value).is_integer() and value <= _EXACT_MAX_TERMS


def _miller_sum(a: BetaPosterior, b: BetaPosterior) -> float:
    """P(X_b > X_a) by Evan Miller's sum over i = 0 .. b.alpha - 1 (b.alpha a whole number).

    term_i = B(a.alpha + i, a.beta + b.beta) / ((b.beta + i) B(1 + i, b.beta) B(a.alpha, a.beta)),
    each evaluated in log space with ``math.lgamma``.
    """
    lg = math.lgamma
    constant = lg(a.beta + b.beta) - lg(b.beta) - (lg(a.alpha) + lg(a.beta) - lg(a.alpha + a.beta))
    total_beta = a.beta + b.beta
    terms = (
        math.exp(
            constant
            + lg(a.alpha + i)
            - lg(a.alpha + total_beta + i)
            - math.log(b.beta + i)
            - lg(1 + i)
            + lg(1 + i + b.beta)
        )
        for i in range(int(b.alpha))
    )
    return math.fsum(terms)


def _exact_b_beats_a(a: BetaPosterior, b: BetaPosterior) -> float | None:
    """P(X_b > X_a) exactly, or None when none of the four parameters is a whole number.

    Miller's sum needs one whole parameter; the identities P(X_b > X_a) = 1 - P(X_a > X_b)
    and X -> 1 - X (Beta(alpha, beta) -> Beta(beta, alpha)) let it run over the smallest of
    the four, so its length is min(alpha_a, beta_a, alpha_b, beta_b).
    """
    routes: list[tuple[float, Callable[[], float]]] = [
        (b.alpha, lambda: _miller_sum(a, b)),
        (a.alpha, lambda: 1.0 - _miller_sum(b, a)),
        (a.beta, lambda: _miller_sum(b.flipped(), a.flipped())),
        (b.beta, lambda: 1.0 - _miller_sum(a.flipped(), b.flipped())),
    ]
    usable = [(length, route) for length, route in routes if _whole(length)]
    if not usable:
        return None
    _, route = min(usable, key=lambda item: item[0])
    return min(1.0, max(0.0, route()))


def prob_b_beats_a(a: BetaPosterior, b: BetaPosterior) -> float:
    """The exact probability that a draw from ``b`` exceeds a draw from ``a``.

    Evan Miller's closed form; raises ValueError when no parameter is a whole number (use
    :func:`monte_carlo_probability_best` then).
    """
    exact = _exact_b_beats_a(a, b)
    if exact is None:
        raise ValueError(f"no whole-number parameter in {a} and {b}: the exact sum does not apply")
    return exact


def _monte_carlo(
    posteriors: Mapping[str, BetaPosterior], draws: int, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Seeded Monte Carlo: (share of draws where each variant is best, mean loss of each)."""
    if draws < 1:
        raise ValueError(f"draws must be positive, got {draws}")
    names = list(posteriors)
    dists = [posteriors[name] for name in names]
    rng = random.Random(seed)
    wins = [0] * len(names)
    losses = [0.0] * len(names)
    indices = range(len(names))
    for _ in range(draws):
        sample = [dist.sample(rng) for dist in dists]
        top = max(sample)
        wins[sample.index(top)] += 1
        for i in indices:
            losses[i] += top - sample[i]
    return (
        {name: wins[i] / draws for i, name in enumerate(names)},
        {name: losses[i] / draws for i, name in enumerate(names)},
    )


def monte_carlo_probability_best(
    posteriors: Mapping[str, BetaPosterior], *, draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED
) -> dict[str, float]:
    """P(each variant has the highest rate), from ``draws`` seeded joint draws of the posteriors.

    This is also the probability that Thompson sampling (Thompson, Biometrika 1933) sends the
    next user to each variant.
    """
    return _monte_carlo(posteriors, draws, seed)[0]


def probability_best(
    posteriors: Mapping[str, BetaPosterior], *, draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED
) -> dict[str, float]:
    """P(each variant has the highest rate): exact for one or two variants, else Monte Carlo."""
    names = list(posteriors)
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: 1.0}
    if len(names) == 2:
        first, second = names
        exact = _exact_b_beats_a(posteriors[first], posteriors[second])
        if exact is not None:
            return {first: 1.0 - exact, second: exact}
    return monte_carlo_probability_best(posteriors, draws=draws, seed=seed)


def _two_variant_loss(a: BetaPosterior, b: BetaPosterior) -> float | None:
    """E[max(X_b - X_a, 0)], the expected loss of choosing ``a`` over ``b`` (Stucchio 2015).

    E[X_b 1{X_b > X_a}] = mean(b) P(X_b' > X_a) with X_b' ~ Beta(b.alpha + 1, b.beta), and
    likewise for X_a, so the loss is a difference of two exact win probabilities.
    """
    upper = _exact_b_beats_a(a, BetaPosterior(b.alpha + 1, b.beta))
    lower = _exact_b_beats_a(BetaPosterior(a.alpha + 1, a.beta), b)
    if upper is None or lower is None:
        return None
    return min(1.0, max(0.0, b.mean * upper - a.mean * lower))


def expected_loss(
    posteriors: Mapping[str, BetaPosterior], *, draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED
) -> dict[str, float]:
    """E[max_j X_j - X_i] for each variant i: what choosing it costs if another is better.

    Closed form for two variants (Stucchio 2015), seeded Monte Carlo for more. Always >= 0.
    """
    names = list(posteriors)
    if len(names) == 1:
        return {names[0]: 0.0}
    if len(names) == 2:
        first, second = names
        loss_first = _two_variant_loss(posteriors[first], posteriors[second])
        loss_second = _two_variant_loss(posteriors[second], posteriors[first])
        if loss_first is not None and loss_second is not None:
            return {first: loss_first, second: loss_second}
    if not names:
        return {}
    return _monte_carlo(posteriors, draws, seed)[1]


@dataclass(frozen=True)
class LiftInterval:
    """The posterior of the relative lift (rate_b - rate_a) / rate_a: median and a central interval."""

    median: float
    low: float
    high: float
    level: float


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (``ordered`` sorted, non-empty)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    return ordered[below] * (1.0 - weight) + ordered[above] * weight


def relative_lift_interval(
    a: BetaPosterior,
    b: BetaPosterior,
    *,
    level: float = 0.95,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
) -> LiftInterval:
    """Credible interval of the relative lift of ``b`` over ``a``, by seeded Monte Carlo."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if draws < 1:
        raise ValueError(f"draws must be positive, got {draws}")
    rng = random.Random(seed)
    tiny = 1e-300
    lifts = sorted(b.sample(rng) / max(a.sample(rng), tiny) - 1.0 for _ in range(draws))
    tail = (1.0 - level) / 2.0
    return LiftInterval(
        median=_quantile(lifts, 0.5),
        low=_quantile(lifts, tail),
        high=_quantile(lifts, 1.0 - tail),
        level=level,
    )


# --------------------------------------------------------------------------- fixed horizon


@dataclass(frozen=True)
class ZTest:
    """A two-proportion z-test: the difference rate_b - rate_a, its z score and p-value."""

    difference: float
    z: float
    p_value: float


Alternative = Literal["two-sided", "greater", "less"]


def two_proportion_z_test(
    successes_a: int,
    trials_a: int,
    successes_b: int,
    trials_b: int,
    *,
    alternative: Alternative = "two-sided",
) -> ZTest:
    """The fixed-horizon pooled two-proportion z-test of rate_a = rate_b.

    ``greater`` tests rate_b > rate_a, ``less`` tests rate_b < rate_a. Valid for ONE look at a
    sample size fixed in advance: repeated looks inflate its false-positive rate.
    """
    if trials_a <= 0 or trials_b <= 0:
        return ZTest(0.0, 0.0, 1.0)
    rate_a = successes_a / trials_a
    rate_b = successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b))
    if se == 0.0:
        return ZTest(rate_b - rate_a, 0.0, 1.0)
    z = (rate_b - rate_a) / se
    if alternative == "greater":
        p = 1.0 - _NORMAL.cdf(z)
    elif alternative == "less":
        p = _NORMAL.cdf(z)
    else:
        p = 2.0 * (1.0 - _NORMAL.cdf(abs(z)))
    return ZTest(rate_b - rate_a, z, min(1.0, max(0.0, p)))


def fixed_horizon_sample_size(
    p1: float, p2: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Users per arm for a two-sided two-proportion z-test to detect ``p1`` vs ``p2``.

    n = (z_{1-alpha/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2
    (Fleiss, Levin, Paik, section 4.2, without continuity correction).
    """
    for name, value in (("p1", p1), ("p2", p2)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if p1 == p2:
        raise ValueError("p1 and p2 are equal: no sample size detects a zero difference")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    z_alpha = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    z_power = _NORMAL.inv_cdf(power)
    mean = (p1 + p2) / 2.0
    spread = z_alpha * math.sqrt(2.0 * mean * (1.0 - mean)) + z_power * math.sqrt(
        p1 * (1.0 - p1) + p2 * (1.0 - p2)
    )
    return math.ceil(spread**2 / (p1 - p2) ** 2)


# --------------------------------------------------------------------------- sequential (mSPRT)


def difference_variance(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float:
    """Variance of rate_b - rate_a under the normal approximation, unpooled.

    Rates are smoothed to (s + 1) / (n + 2) for the variance only, so a run of all-positive or
    all-negative feedback never gives a zero variance.
    """
    smoothed_a = (successes_a + 1.0) / (trials_a + 2.0)
    smoothed_b = (successes_b + 1.0) / (trials_b + 2.0)
    return smoothed_a * (1.0 - smoothed_a) / trials_a + smoothed_b * (1.0 - smoothed_b) / trials_b


def mixture_log_likelihood_ratio(
    difference: float, variance: float, tau: float, theta0: float = 0.0
) -> float:
    """log Lambda of the mSPRT with mixing distribution N(theta0, tau^2) (Johari et al.).

    For an estimate with normal sampling distribution N(theta, v),
    Lambda = sqrt(v / (v + tau^2)) exp(tau^2 (estimate - theta0)^2 / (2 v (v + tau^2))).
    With n pairs and per-pair variance V this is v = V / n, the paper's
    sqrt(V / (V + n tau^2)) exp(n^2 tau^2 (mean - theta0)^2 / (2 V (V + n tau^2))).
    """
    if variance <= 0.0 or tau <= 0.0:
        raise ValueError(f"variance and tau must be positive, got {variance} and {tau}")
    spread = variance + tau * tau
    return 0.5 * math.log(variance / spread) + (
        tau * tau * (difference - theta0) ** 2 / (2.0 * variance * spread)
    )


def msprt_radius(variance: float, tau: float, alpha: float) -> float:
    """Half-width of the mSPRT confidence set: every theta0 with Lambda(theta0) < 1 / alpha.

    Solving log Lambda(theta0) = log(1 / alpha) for |estimate - theta0| gives
    sqrt(2 v (v + tau^2) / tau^2 * (log(1 / alpha) + log((v + tau^2) / v) / 2)).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    spread = variance + tau * tau
    bound = math.log(1.0 / alpha) + 0.5 * math.log(spread / variance)
    return math.sqrt(2.0 * variance * spread / (tau * tau) * bound)


@dataclass(frozen=True)
class SequentialState:
    """The running mSPRT of rate_b - rate_a between two variants, updated look by look.

    Stores the cumulative counts of the last look, the always-valid p-value (non-increasing:
    ``p_n = min(p_{n-1}, 1 / Lambda_n)``) and the confidence sequence (the running
    intersection of the mSPRT confidence sets). ``to_dict``/``from_dict`` keep it as JSON
    between aggregation runs. The mixing scale ``tau`` must be fixed before the first look;
    a state read back with another ``tau`` or ``alpha`` starts over.
    """

    tau: float = DEFAULT_MIXING_SD
    alpha: float = 0.05
    looks: int = 0
    successes_a: int = 0
    trials_a: int = 0
    successes_b: int = 0
    trials_b: int = 0
    difference: float = 0.0
    log_likelihood_ratio: float = 0.0
    p_value: float = 1.0
    ci_low: float = -1.0
    ci_high: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a positive number, got {self.tau!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not 0.0 <= self.p_value <= 1.0:
            raise ValueError(f"p_value must be in [0, 1], got {self.p_value!r}")

    @property
    def significant(self) -> bool:
        """Whether the always-valid p-value is below alpha (0 is outside the sequence)."""
        return self.p_value < self.alpha

    def _counts(self) -> tuple[int, int, int, int]:
        return (self.successes_a, self.trials_a, self.successes_b, self.trials_b)

    def update(
        self,
        successes_a: int,
        trials_a: int,
        successes_b: int,
        trials_b: int,
        *,
        min_trials: int = SEQUENTIAL_MIN_TRIALS,
    ) -> SequentialState:
        """One look at the CUMULATIVE counts of both arms; returns the next state.

        The same counts again are the same look (the state comes back unchanged). Trials
        below the last look's mean the experiment restarted: so does the test. Successes alone
        may go down (a user's later feedback replaces their earlier like): the test goes on
        from the new cumulative counts. Looks with fewer than ``min_trials`` per arm move
        nothing but the counts.
        """
        counts = (successes_a, trials_a, successes_b, trials_b)
        if not (0 <= successes_a <= trials_a and 0 <= successes_b <= trials_b):
            raise ValueError(f"need 0 <= successes <= trials for both arms, got {counts}")
        if counts == self._counts():
            return self
        base = self
        if trials_a < self.trials_a or trials_b < self.trials_b:
            base = SequentialState(tau=self.tau, alpha=self.alpha)
        looked = replace(
            base,
            looks=base.looks + 1,
            successes_a=successes_a,
            trials_a=trials_a,
            successes_b=successes_b,
            trials_b=trials_b,
        )
        if min(trials_a, trials_b) < max(1, min_trials):
            return looked
        difference = successes_b / trials_b - successes_a / trials_a
        variance = difference_variance(successes_a, trials_a, successes_b, trials_b)
        log_lr = mixture_log_likelihood_ratio(difference, variance, self.tau)
        radius = msprt_radius(variance, self.tau, self.alpha)
        low, high = max(base.ci_low, difference - radius), min(base.ci_high, difference + radius)
        if low > high:
            # The approximation drifted (the true rates moved): keep this look's set alone.
            low, high = difference - radius, difference + radius
        return replace(
            looked,
            difference=difference,
            log_likelihood_ratio=log_lr,
            p_value=min(base.p_value, math.exp(-log_lr) if log_lr > 0 else 1.0),
            ci_low=max(-1.0, low),
            ci_high=min(1.0, high),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        *,
        tau: float = DEFAULT_MIXING_SD,
        alpha: float = 0.05,
    ) -> SequentialState:
        """Read a stored state; a missing one, or one run with another tau or alpha, starts over."""
        fresh = cls(tau=tau, alpha=alpha)
        if not data:
            return fresh
        try:
            stored = cls(
                tau=float(data["tau"]),
                alpha=float(data["alpha"]),
                looks=int(data["looks"]),
                successes_a=int(data["successes_a"]),
                trials_a=int(data["trials_a"]),
                successes_b=int(data["successes_b"]),
                trials_b=int(data["trials_b"]),
                difference=float(data["difference"]),
                log_likelihood_ratio=float(data["log_likelihood_ratio"]),
                p_value=float(data["p_value"]),
                ci_low=float(data["ci_low"]),
                ci_high=float(data["ci_high"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable sequential-test state {dict(data)!r}: {exc}") from None
        if not (math.isclose(stored.tau, tau) and math.isclose(stored.alpha, alpha)):
            return fresh
        return stored


# --------------------------------------------------------------------------- chi-squared, SRM

_GAMMA_EPS = 1e-15
_GAMMA_TINY = 1e-300
_GAMMA_MAX_ITERATIONS = 10_000


def _gamma_series(a: float, x: float) -> float:
    """P(a, x) by its series (Numerical Recipes ``gser``); converges fast for x < a + 1."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_GAMMA_MAX_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _GAMMA_EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, modified Lentz (Numerical Recipes ``gcf``), x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _GAMMA_TINY
    d = 1.0 / b
    h = d
    for i in range(1, _GAMMA_MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _GAMMA_TINY:
            d = _GAMMA_TINY
        c = b + an / c
        if abs(c) < _GAMMA_TINY:
            c = _GAMMA_TINY
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < _GAMMA_EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def regularized_gamma_p(a: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(a, x) = gamma(a, x) / Gamma(a)."""
    return 1.0 - regularized_gamma_q(a, x)


def regularized_gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = Gamma(a, x) / Gamma(a)."""
    if a <= 0:
        raise ValueError(f"a must be positive, got {a}")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return min(1.0, max(0.0, 1.0 - _gamma_series(a, x)))
    return min(1.0, max(0.0, _gamma_continued_fraction(a, x)))


def chi2_sf(x: float, df: float) -> float:
    """The chi-squared survival function P(X >= x) for ``df`` degrees of freedom: Q(df/2, x/2)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return regularized_gamma_q(df / 2.0, x / 2.0)


@dataclass(frozen=True)
class SrmResult:
    """A sample-ratio-mismatch check: Pearson's chi-squared statistic, its df and p-value."""

    statistic: float
    df: int
    p_value: float
    flagged: bool
    expected: dict[str, float]


def sample_ratio_mismatch(
    served: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    threshold: float = SRM_P_THRESHOLD,
) -> SrmResult:
    """Pearson's chi-squared goodness of fit of ``served`` against ``weights`` (Fabijan et al.).

    Weights are relative (normalised here). A variant served while its weight is 0 (or that
    has no weight at all) is a mismatch outright: infinite statistic, p-value 0. Flagged when
    the p-value is below ``threshold`` (0.001 by default: the split is checked on every run,
    so the bar is strict).
    """
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError(f"weights must be non-negative numbers, got {dict(weights)}")
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise ValueError(f"weights must not all be zero, got {dict(weights)}")
    if any(count < 0 for count in served.values()):
        raise ValueError(f"served counts must be non-negative, got {dict(served)}")
    names = list(dict.fromkeys([*weights, *served]))
    total = sum(served.get(name, 0) for name in names)
    expected = {name: total * weights.get(name, 0.0) / total_weight for name in names}
    if total == 0:
        return SrmResult(0.0, 0, 1.0, False, expected)
    if any(expected[name] == 0 and served.get(name, 0) > 0 for name in names):
        return SrmResult(math.inf, max(1, len(names) - 1), 0.0, True, expected)
    positive = [name for name in names if expected[name] > 0]
    df = len(positive) - 1
    statistic = math.fsum(
        (served.get(name, 0) - expected[name]) ** 2 / expected[name] for name in positive
    )
    p_value = chi2_sf(statistic, df) if df > 0 else 1.0
    return SrmResult(statistic, df, p_value, p_value < threshold, expected)


# --------------------------------------------------------------------------- guardrails


@dataclass(frozen=True)
class GuardrailObservation:
    """What one variant did operationally: requests routed to it (failed ones included),
    the failed ones, and its 95th-percentile latency."""

    served: int
    errors: int = 0
    latency_p95_ms: float | None = None


@dataclass(frozen=True)
class GuardrailSettings:
    """When a variant counts as clearly worse.

    Error rate: a one-sided pooled two-proportion z-test against all the other variants
    together at ``error_alpha``, AND an absolute excess of at least ``error_min_diff``.
    Latency: p95 above ``latency_factor`` times the median p95 of the others. Both need
    ``min_samples`` served requests on each side.
    """

    error_min_diff: float = 0.02
    error_alpha: float = 0.01
    latency_factor: float = 1.5
    min_samples: int = 200


def _error_reason(
    name: str, observations: Mapping[str, GuardrailObservation], settings: GuardrailSettings
) -> str | None:
    mine = observations[name]
    others = [obs for other, obs in observations.items() if other != name]
    rest_trials = sum(max(obs.served, obs.errors) for obs in others)
    rest_errors = sum(obs.errors for obs in others)
    my_trials = max(mine.served, mine.errors)
    if min(my_trials, rest_trials) < settings.min_samples:
        return None
    test = two_proportion_z_test(
        rest_errors, rest_trials, mine.errors, my_trials, alternative="greater"
    )
    if test.p_value < settings.error_alpha and test.difference >= settings.error_min_diff:
        return (
            f"error rate {mine.errors / my_trials:.1%} vs {rest_errors / rest_trials:.1%} for "
            f"the others (one-sided z-test p={test.p_value:.2g} < {settings.error_alpha:g}, "
            f"excess {test.difference:.1%} >= {settings.error_min_diff:.1%})"
        )
    return None


def _latency_reason(
    name: str, observations: Mapping[str, GuardrailObservation], settings: GuardrailSettings
) -> str | None:
    mine = observations[name]
    if mine.latency_p95_ms is None or mine.served < settings.min_samples:
        return None
    others = sorted(
        obs.latency_p95_ms
        for other, obs in observations.items()
        if other != name
        and obs.latency_p95_ms is not None
        and obs.latency_p95_ms > 0
        and obs.served >= settings.min_samples
    )
    if not others:
        return None
    middle = len(others) // 2
    reference = others[middle] if len(others) % 2 else (others[middle - 1] + others[middle]) / 2
    if mine.latency_p95_ms > settings.latency_factor * reference:
        return (
            f"latency p95 {mine.latency_p95_ms:.0f} ms > {settings.latency_factor:g} x "
            f"{reference:.0f} ms of the others"
        )
    return None


def guardrail_violations(
    observations: Mapping[str, GuardrailObservation],
    settings: GuardrailSettings | None = None,
) -> dict[str, tuple[str, ...]]:
    """The variants that are clearly worse on errors or latency, each with its reasons.

    Only flagged variants appear. Likes do not enter: a variant that fails or stalls loses
    traffic whatever its feedback says.
    """
    settings = settings or GuardrailSettings()
    flagged: dict[str, tuple[str, ...]] = {}
    for name in observations:
        reasons = tuple(
            reason
            for reason in (
                _error_reason(name, observations, settings),
                _latency_reason(name, observations, settings),
            )
            if reason is not None
        )
        if reasons:
            flagged[name] = reasons
    return flagged
