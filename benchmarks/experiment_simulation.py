"""The experiment engine validated by simulation: seeded experiments with known true like rates.

Every figure runs the project's own decision code (``tweetgen.domain.statistics`` and
``tweetgen.domain.experiment.decide``) on simulated users, and beside it a baseline on the same
simulated users and seeds:

- A/A (both variants like 10 %), a look after every aggregation round: the false-positive rate
  of the always-valid mSPRT and of the ``ab`` policy (``decide`` after every round), against
  the naive fixed-horizon z-test repeated at every look.
- Power, 10 % vs 12 %: users until the mSPRT (and the ``ab`` policy) detects the difference,
  and how often it has by the fixed design's horizon, against the fixed-horizon z-test planned
  for 80 % power (``fixed_horizon_sample_size``) and measured on the same experiments.
- Sample-ratio mismatch: how often the chi-squared check at p < 0.001 catches a 52/48 split
  served against 50/50 weights, and how often it cries wolf at a true 50/50, against the same
  check at p < 0.05.
- Regret (likes lost against always serving the better variant) of the ``bandit`` policy,
  re-weighted after every round, against a fixed 50/50 split and the four strategies of the
  aws-samples "amazon-sagemaker-ab-testing-pipeline" (WeightedSampling, EpsilonGreedy, UCB1,
  ThompsonSampling), which see the metrics as of the last round too.

Counts are drawn per round (binomial counts, or one uniform per user, vectorised with numpy);
the decisions are the project's pure-Python code, one call per look, exactly as the aggregate
function makes them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tweetgen.domain.experiment import (
    Decision,
    ExperimentSettings,
    Policy,
    VariantSnapshot,
    decide,
)
from tweetgen.domain.statistics import (
    BetaPosterior,
    SequentialState,
    fixed_horizon_sample_size,
    probability_best,
    sample_ratio_mismatch,
    two_proportion_z_test,
)

from benchmarks.common import (
    DEFAULT_DATA,
    BenchResult,
    Row,
    base_parser,
    finish,
    make_row,
    progress,
)

NAME = "experiment_simulation"
ALPHA = 0.05
A, B = "lstm", "gpt2"
VARIANTS = (A, B)
EVEN = {A: 1.0, B: 1.0}
# The decisions need no Monte Carlo for two variants (P(best) and the expected loss are exact);
# only the reported lift interval samples, and it does not enter a decision.
SIMULATION_DRAWS = 200
# Sections of the seed: each figure draws from its own stream.
_AA, _POWER, _SRM, _REGRET = range(4)


def policy_settings(policy: Policy, **overrides: Any) -> ExperimentSettings:
    """The production defaults for ``policy``, with fewer Monte Carlo draws for the report."""
    return ExperimentSettings(policy=policy, monte_carlo_draws=SIMULATION_DRAWS, **overrides)


def generator(seed: int, section: int, *more: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, section, *more]))


# --------------------------------------------------------------------------- the aggregate loop


@dataclass
class PolicyRun:
    """What the aggregate function keeps between runs: the weights in force, the requests
    served since they were set, the sequential-test state and the previous decision.

    The service also leaves the first 30 s after new weights out of the sample-ratio check,
    while the generate function's cached weights catch up; simulated routing has no such lag,
    so every request since the change counts here.
    """

    settings: ExperimentSettings
    weights: dict[str, float] = field(default_factory=lambda: dict(EVEN))
    sequential_state: dict[str, Any] | None = None
    previous: Decision | None = None
    since: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VARIANTS, 0))
    looks: int = 0
    frozen_looks: int = 0
    changes: int = 0

    def look(
        self,
        round_served: Sequence[int],
        served: Sequence[int],
        positives: Sequence[int],
    ) -> Decision:
        """One aggregation after a round: every served user gave feedback (like or not)."""
        for name, count in zip(VARIANTS, round_served, strict=True):
            self.since[name] += int(count)
        snapshots = {
            name: VariantSnapshot(
                served=int(served[i]),
                feedback_count=int(served[i]),
                positive_count=int(positives[i]),
                served_since_weights=self.since[name],
            )
            for i, name in enumerate(VARIANTS)
        }
        decision = decide(
            snapshots, self.weights, self.settings, self.sequential_state, self.previous
        )
        self.looks += 1
        self.frozen_looks += decision.frozen
        self.sequential_state = decision.sequential_state
        self.previous = decision
        if decision.changed:
            self.weights = dict(decision.weights)
            self.since = dict.fromkeys(VARIANTS, 0)
            self.changes += 1
        return decision


# --------------------------------------------------------------------------- binomial looks


@dataclass(frozen=True)
class Looks:
    """Cumulative counts of each experiment at each look, arrays of (experiments, looks).

    Every round ``round_users`` users are split by the 50/50 weights and each gives feedback.
    """

    served_a: np.ndarray
    likes_a: np.ndarray
    served_b: np.ndarray
    likes_b: np.ndarray
    round_users: int

    @property
    def experiments(self) -> int:
        return int(self.served_a.shape[0])

    @property
    def looks(self) -> int:
        return int(self.served_a.shape[1])

    def at(self, experiment: int, look: int) -> tuple[int, int, int, int]:
        """(likes_a, served_a, likes_b, served_b) after look ``look`` (0-based)."""
        return (
            int(self.likes_a[experiment, look]),
            int(self.served_a[experiment, look]),
            int(self.likes_b[experiment, look]),
            int(self.served_b[experiment, look]),
        )

    def users(self, look: int) -> int:
        return (look + 1) * self.round_users


def draw_looks(
    rng: np.random.Generator,
    *,
    experiments: int,
    looks: int,
    round_users: int,
    rates: tuple[float, float],
    share_a: float = 0.5,
) -> Looks:
    """Binomial counts per round: users to A ~ Bin(R, share), likes ~ Bin(served, rate)."""
    to_a = rng.binomial(round_users, share_a, size=(experiments, looks))
    to_b = round_users - to_a
    likes_a = rng.binomial(to_a, rates[0])
    likes_b = rng.binomial(to_b, rates[1])
    return Looks(
        served_a=np.cumsum(to_a, axis=1),
        likes_a=np.cumsum(likes_a, axis=1),
        served_b=np.cumsum(to_b, axis=1),
        likes_b=np.cumsum(likes_b, axis=1),
        round_users=round_users,
    )


@dataclass(frozen=True)
class Stop:
    """The first look at which a procedure rejected, and the sign of the difference then."""

    look: int
    users: int
    b_better: bool


def msprt_stops(looks: Looks, *, alpha: float = ALPHA) -> list[Stop | None]:
    """Each experiment's first look where the always-valid p-value falls below ``alpha``."""
    stops: list[Stop | None] = []
    for e in range(looks.experiments):
        state = SequentialState(alpha=alpha)
        stop = None
        for j in range(looks.looks):
            likes_a, served_a, likes_b, served_b = looks.at(e, j)
            state = state.update(likes_a, served_a, likes_b, served_b)
            if state.p_value < alpha:
                stop = Stop(j, looks.users(j), state.difference > 0)
                break
        stops.append(stop)
    return stops


def naive_stops(looks: Looks, *, alpha: float = ALPHA) -> list[Stop | None]:
    """Each experiment's first look where the fixed-horizon z-test, repeated, says p < alpha."""
    stops: list[Stop | None] = []
    for e in range(looks.experiments):
        stop = None
        for j in range(looks.looks):
            likes_a, served_a, likes_b, served_b = looks.at(e, j)
            test = two_proportion_z_test(likes_a, served_a, likes_b, served_b)
            if test.p_value < alpha:
                stop = Stop(j, looks.users(j), test.difference > 0)
                break
        stops.append(stop)
    return stops


@dataclass(frozen=True)
class PolicyOutcome:
    """Where the ``ab`` policy declared a winner (None: it did not), and its frozen looks."""

    stop: Stop | None
    frozen_looks: int


def ab_policy_stops(
    looks: Looks, experiments: int, settings: ExperimentSettings | None = None
) -> list[PolicyOutcome]:
    """``decide`` with the ``ab`` policy after every look of the first ``experiments``."""
    settings = settings or policy_settings("ab")
    outcomes = []
    for e in range(min(experiments, looks.experiments)):
        run = PolicyRun(settings)
        stop = None
        last_a = last_b = 0
        for j in range(looks.looks):
            likes_a, served_a, likes_b, served_b = looks.at(e, j)
            decision = run.look(
                (served_a - last_a, served_b - last_b), (served_a, served_b), (likes_a, likes_b)
            )
            last_a, last_b = served_a, served_b
            if decision.winner is not None:
                stop = Stop(j, looks.users(j), decision.winner == B)
                break
        outcomes.append(PolicyOutcome(stop, run.frozen_looks))
    return outcomes


def share(stops: Sequence[object | None]) -> float:
    return sum(stop is not None for stop in stops) / max(1, len(stops))


# --------------------------------------------------------------------------- A/A


@dataclass(frozen=True)
class AAResult:
    experiments: int
    looks: int
    round_users: int
    msprt_fpr: float
    naive_fpr: float
    policy_experiments: int
    policy_fpr: float
    naive_fpr_policy_subset: float
    policy_frozen_share: float
    final_look_fpr: float


def simulate_aa(
    *,
    experiments: int,
    looks: int,
    round_users: int,
    rate: float,
    policy_experiments: int,
    seed: int,
) -> AAResult:
    """A/A: both variants like ``rate``; every procedure looks after every round."""
    counts = draw_looks(
        generator(seed, _AA),
        experiments=experiments,
        looks=looks,
        round_users=round_users,
        rates=(rate, rate),
    )
    msprt = msprt_stops(counts)
    naive = naive_stops(counts)
    policy = ab_policy_stops(counts, policy_experiments)
    last = counts.looks - 1
    final = sum(
        two_proportion_z_test(*counts.at(e, last)).p_value < ALPHA for e in range(experiments)
    )
    return AAResult(
        experiments=experiments,
        looks=looks,
        round_users=round_users,
        msprt_fpr=share(msprt),
        naive_fpr=share(naive),
        policy_experiments=len(policy),
        policy_fpr=share([o.stop for o in policy]),
        naive_fpr_policy_subset=share(naive[: len(policy)]),
        policy_frozen_share=sum(o.frozen_looks > 0 for o in policy) / max(1, len(policy)),
        final_look_fpr=final / experiments,
    )


# --------------------------------------------------------------------------- power


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class PowerResult:
    rates: tuple[float, float]
    experiments: int
    round_users: int
    horizon_users: int
    planned_users: int
    planned_look_users: int
    msprt_median_users: float
    msprt_p90_users: float
    msprt_detected: float
    msprt_wrong_sign: float
    msprt_by_planned: float
    fixed_power_at_planned: float
    policy_experiments: int
    policy_median_users: float | None
    policy_detected: float
    policy_correct: float


def _censored_percentile(stops: Sequence[Stop | None], q: float) -> float:
    """Percentile of the stopping users, counting experiments that never stopped as beyond
    the horizon (``inf`` when the percentile falls among them)."""
    values = [math.inf if stop is None else float(stop.users) for stop in stops]
    return percentile(values, q) if values else math.inf


def simulate_power(
    *,
    rates: tuple[float, float],
    experiments: int,
    looks: int,
    round_users: int,
    policy_experiments: int,
    seed: int,
) -> PowerResult:
    """A real difference: when each procedure detects it, and how often by the planned horizon."""
    counts = draw_looks(
        generator(seed, _POWER),
        experiments=experiments,
        looks=looks,
        round_users=round_users,
        rates=rates,
    )
    horizon = counts.users(looks - 1)
    planned = 2 * fixed_horizon_sample_size(rates[0], rates[1], alpha=ALPHA, power=0.8)
    planned_look = min(looks, math.ceil(planned / round_users)) - 1
    msprt = msprt_stops(counts)
    fixed = sum(
        two_proportion_z_test(*counts.at(e, planned_look)).p_value < ALPHA
        for e in range(experiments)
    )
    policy = [o.stop for o in ab_policy_stops(counts, policy_experiments)]
    policy_stops = [stop for stop in policy if stop is not None]
    b_better = rates[1] > rates[0]
    return PowerResult(
        rates=rates,
        experiments=experiments,
        round_users=round_users,
        horizon_users=horizon,
        planned_users=planned,
        planned_look_users=counts.users(planned_look),
        msprt_median_users=_censored_percentile(msprt, 50),
        msprt_p90_users=_censored_percentile(msprt, 90),
        msprt_detected=share(msprt),
        msprt_wrong_sign=sum(s is not None and s.b_better != b_better for s in msprt) / experiments,
        msprt_by_planned=sum(s is not None and s.look <= planned_look for s in msprt) / experiments,
        fixed_power_at_planned=fixed / experiments,
        policy_experiments=len(policy),
        policy_median_users=_censored_percentile(policy, 50) if policy else None,
        policy_detected=share(policy),
        policy_correct=sum(s.b_better == b_better for s in policy_stops) / max(1, len(policy)),
    )


# --------------------------------------------------------------------------- SRM


@dataclass(frozen=True)
class SrmResult:
    users: int
    repetitions: int
    served_share: float
    flagged: float
    flagged_at_05: float


def simulate_srm(
    *, users: int, served_share: float, repetitions: int, seed: int, stream: int = 0
) -> SrmResult:
    """Users routed to A with probability ``served_share`` while the weights say 50/50."""
    to_a = generator(seed, _SRM, stream).binomial(users, served_share, size=repetitions)
    strict = loose = 0
    for count in to_a.tolist():
        result = sample_ratio_mismatch({A: count, B: users - count}, EVEN)
        strict += result.flagged
        loose += result.p_value < 0.05
    return SrmResult(users, repetitions, served_share, strict / repetitions, loose / repetitions)


# --------------------------------------------------------------------------- regret


class Strategy(Protocol):
    """Chooses, before each round, the probability that a user goes to each variant."""

    name: str

    def start(self) -> list[float]:
        """Forget everything; the shares of the first round."""
        ...

    def after_round(
        self, round_served: Sequence[int], served: Sequence[int], likes: Sequence[int]
    ) -> list[float]:
        """The shares of the next round, from the counts so far."""
        ...


@dataclass
class FixedSplit:
    """The weights never move. At equal initial weights this is also the aws-samples
    ``WeightedSampling`` strategy (a user goes to a variant with its initial weight)."""

    shares: tuple[float, ...] = (0.5, 0.5)
    name: str = ""

    def __post_init__(self) -> None:
        split = "/".join(f"{100 * share:g}" for share in self.shares)
        self.name = self.name or f"fixed {split} split"

    def start(self) -> list[float]:
        return list(self.shares)

    def after_round(
        self, round_served: Sequence[int], served: Sequence[int], likes: Sequence[int]
    ) -> list[float]:
        return list(self.shares)


def _first_argmax(values: Sequence[float]) -> int:
    """The first index of the largest value (ties go to the first, as in aws-samples)."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


@dataclass
class AwsSamplesStrategy:
    """The aws-samples pipeline's per-user strategies, on metrics refreshed once a round.

    Their metrics (invocations, conversions, reward sum) reach DynamoDB in Firehose batches, so
    each user's choice sees the counts as of the last batch; here, the last round. Until every
    variant has more than ``warmup`` invocations they use ``WeightedSampling``. Given those
    counts, the probability that a user goes to each variant is:

    - ``EpsilonGreedy``: explore with probability ``epsilon`` (a variant uniformly at random),
      else the best observed rate (reward sum / invocations; ties to the first);
    - ``UCB1``: every user to the variant with the largest rate + sqrt(2 ln(total) / n);
    - ``ThompsonSampling``: each user draws from Beta(1 + rewards, 1 + invocations - rewards)
      per variant and takes the largest draw: a user goes to a variant with its posterior
      probability to be best, computed here exactly instead of drawn.
    """

    kind: str
    epsilon: float = 0.1
    warmup: int = 0
    initial: tuple[float, ...] = (0.5, 0.5)
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("EpsilonGreedy", "UCB1", "ThompsonSampling"):
            raise ValueError(f"unknown aws-samples strategy {self.kind!r}")
        self.name = self.name or f"aws-samples {self.kind}"

    def start(self) -> list[float]:
        return list(self.initial)

    def after_round(
        self, round_served: Sequence[int], served: Sequence[int], likes: Sequence[int]
    ) -> list[float]:
        k = len(served)
        if any(n <= self.warmup for n in served):
            return list(self.initial)
        rates = [likes[i] / served[i] for i in range(k)]
        if self.kind == "EpsilonGreedy":
            shares = [self.epsilon / k] * k
            shares[_first_argmax(rates)] += 1.0 - self.epsilon
            return shares
        if self.kind == "UCB1":
            total = sum(served)
            bounds = [rates[i] + math.sqrt(2.0 * math.log(total) / served[i]) for i in range(k)]
            shares = [0.0] * k
            shares[_first_argmax(bounds)] = 1.0
            return shares
        posteriors = {
            str(i): BetaPosterior.from_counts(int(likes[i]), int(served[i])) for i in range(k)
        }
        best = probability_best(posteriors, seed=len(served))
        return [best[str(i)] for i in range(k)]


@dataclass
class PolicyStrategy:
    """The project's policy: ``decide`` after every round, its weights applied when changed."""

    settings: ExperimentSettings
    name: str = ""
    run: PolicyRun | None = None
    winner_at: int | None = None
    winner: str | None = None

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.settings.policy} policy (decide every round)"

    def start(self) -> list[float]:
        self.run = PolicyRun(self.settings)
        self.winner_at = self.winner = None
        return self._shares()

    def _shares(self) -> list[float]:
        assert self.run is not None
        total = sum(self.run.weights.values())
        return [self.run.weights[name] / total for name in VARIANTS]

    def after_round(
        self, round_served: Sequence[int], served: Sequence[int], likes: Sequence[int]
    ) -> list[float]:
        assert self.run is not None
        decision = self.run.look(round_served, served, likes)
        if decision.winner is not None and self.winner_at is None:
            self.winner_at, self.winner = int(sum(served)), decision.winner
        return self._shares()


@dataclass(frozen=True)
class Users:
    """One replication's simulated users: each has a like propensity and a routing draw.

    User ``i`` likes what a variant generates when ``like[i] < rate(variant)``, and goes to
    variant ``v`` when ``route[i]`` falls in ``v``'s slice of the shares in force. Every
    strategy meets the same users.
    """

    like: np.ndarray
    route: np.ndarray


@dataclass(frozen=True)
class RegretOutcome:
    regret: float
    served: tuple[int, ...]
    likes: tuple[int, ...]
    final_shares: tuple[float, ...]
    winner_at: int | None = None
    winner: str | None = None
    frozen_looks: int = 0


def run_strategy(
    strategy: Strategy, users: Users, rates: Sequence[float], round_users: int
) -> RegretOutcome:
    """Serve ``users`` in rounds of ``round_users``; the strategy re-weights between rounds."""
    k = len(rates)
    rate_array = np.asarray(rates, dtype=float)
    best = float(rate_array.max())
    served = np.zeros(k, dtype=np.int64)
    likes = np.zeros(k, dtype=np.int64)
    regret = 0.0
    shares = strategy.start()
    total = len(users.like)
    for start in range(0, total, round_users):
        stop = min(total, start + round_users)
        bounds = np.cumsum(shares)
        arms = np.minimum(np.searchsorted(bounds, users.route[start:stop], side="right"), k - 1)
        liked = users.like[start:stop] < rate_array[arms]
        round_served = np.bincount(arms, minlength=k)
        round_likes = np.bincount(arms, weights=liked, minlength=k).astype(np.int64)
        served += round_served
        likes += round_likes
        regret += float(np.dot(round_served, best - rate_array))
        shares = strategy.after_round(round_served.tolist(), served.tolist(), likes.tolist())
    policy = strategy if isinstance(strategy, PolicyStrategy) else None
    return RegretOutcome(
        regret=regret,
        served=tuple(served.tolist()),
        likes=tuple(likes.tolist()),
        final_shares=tuple(float(s) for s in shares),
        winner_at=policy.winner_at if policy else None,
        winner=policy.winner if policy else None,
        frozen_looks=policy.run.frozen_looks if policy and policy.run else 0,
    )


@dataclass(frozen=True)
class RegretSummary:
    name: str
    mean: float
    stderr: float
    final_best_share: float
    winners: int
    wrong_winners: int
    median_winner_at: float | None
    frozen_looks: int


def _summary(name: str, outcomes: Sequence[RegretOutcome], best: int) -> RegretSummary:
    regrets = np.array([o.regret for o in outcomes])
    declared = [o.winner_at for o in outcomes if o.winner_at is not None]
    return RegretSummary(
        name=name,
        mean=float(regrets.mean()),
        stderr=float(regrets.std(ddof=1) / math.sqrt(len(regrets))) if len(regrets) > 1 else 0.0,
        final_best_share=float(np.mean([o.final_shares[best] for o in outcomes])),
        winners=len(declared),
        wrong_winners=sum(o.winner is not None and o.winner != VARIANTS[best] for o in outcomes),
        median_winner_at=float(np.median(declared)) if declared else None,
        frozen_looks=sum(o.frozen_looks for o in outcomes),
    )


BANDIT = "bandit policy (decide every round)"
AB = "ab policy (decide every round)"
BANDIT_NO_FLOOR = "bandit policy without its floor"


def default_strategies() -> list[Strategy]:
    return [
        PolicyStrategy(policy_settings("bandit"), BANDIT),
        PolicyStrategy(policy_settings("ab"), AB),
        PolicyStrategy(policy_settings("bandit", bandit_floor=0.0), BANDIT_NO_FLOOR),
        FixedSplit(),
        AwsSamplesStrategy("EpsilonGreedy"),
        AwsSamplesStrategy("UCB1"),
        AwsSamplesStrategy("ThompsonSampling"),
    ]


def simulate_regret(
    *,
    rates: tuple[float, ...],
    users: int,
    round_users: int,
    repetitions: int,
    seed: int,
    strategies: Sequence[Strategy] | None = None,
    stream: int = 0,
) -> dict[str, RegretSummary]:
    """Mean regret of each strategy over ``repetitions``, every strategy on the same users."""
    chosen = list(strategies) if strategies is not None else default_strategies()
    outcomes: dict[str, list[RegretOutcome]] = {s.name: [] for s in chosen}
    for r in range(repetitions):
        rng = generator(seed, _REGRET, stream, r)
        population = Users(like=rng.random(users), route=rng.random(users))
        for strategy in chosen:
            outcomes[strategy.name].append(run_strategy(strategy, population, rates, round_users))
    best = int(np.argmax(rates))
    return {name: _summary(name, found, best) for name, found in outcomes.items()}


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Sizes:
    aa_experiments: int
    aa_looks: int
    aa_policy: int
    power_experiments: int
    power_looks: int
    power_policy: int
    srm_repetitions: int
    regret_repetitions: int
    round_users: int = 500
    regret_users: int = 10_000
    srm_users: int = 50_000


FULL = Sizes(
    aa_experiments=2000,
    aa_looks=40,
    aa_policy=300,
    power_experiments=1000,
    power_looks=200,
    power_policy=100,
    srm_repetitions=20_000,
    regret_repetitions=200,
)
QUICK = replace(
    FULL,
    aa_experiments=1000,
    aa_looks=20,
    aa_policy=40,
    power_experiments=300,
    power_policy=20,
    srm_repetitions=4000,
    regret_repetitions=20,
)


def _pct(value: float) -> float:
    return 100.0 * value


def _aa_rows(result: AAResult) -> list[Row]:
    look_text = f"{result.looks} looks, one every {result.round_users} users"
    return [
        make_row(
            NAME,
            f"A/A false positives, mSPRT, {result.experiments} experiments, {look_text}",
            _pct(result.msprt_fpr),
            "%",
            _pct(result.naive_fpr),
            "fixed-horizon z-test repeated at every look, same experiments",
            higher_is_better=False,
        ),
        make_row(
            NAME,
            f"A/A false positives, mSPRT, {result.experiments} experiments: within alpha",
            _pct(result.msprt_fpr),
            "%",
            _pct(ALPHA),
            "alpha, the bound to keep (not measured)",
            higher_is_better=False,
            goal=1.0,
        ),
        make_row(
            NAME,
            f"A/A false winners, ab policy (decide every look), {result.policy_experiments}"
            " experiments",
            _pct(result.policy_fpr),
            "%",
            _pct(result.naive_fpr_policy_subset),
            "repeated z-test on the same experiments",
            higher_is_better=False,
        ),
    ]


def _power_rows(result: PowerResult) -> list[Row]:
    a, b = result.rates
    label = f"{a:.0%} vs {b:.0%}"
    planned = f"fixed-horizon z-test at 80% power: {result.planned_users:,} users (planned)"

    def stopping(figure: str, users: float) -> Row:
        if math.isinf(users):  # more than that share never stopped within the horizon
            figure += f" (beyond the {result.horizon_users:,} users simulated)"
            users = float(result.horizon_users)
        return make_row(
            NAME,
            f"{label}: {figure}",
            users,
            "users",
            float(result.planned_users),
            planned,
            higher_is_better=False,
        )

    rows = [
        stopping(
            f"users until the mSPRT detects, median of {result.experiments}",
            result.msprt_median_users,
        ),
        stopping("users until the mSPRT detects, 90th percentile", result.msprt_p90_users),
        make_row(
            NAME,
            f"{label}: detected by {result.planned_look_users:,} users (mSPRT, every look)",
            _pct(result.msprt_by_planned),
            "%",
            _pct(result.fixed_power_at_planned),
            f"fixed-horizon z-test at {result.planned_look_users:,} users, same experiments",
            higher_is_better=True,
        ),
    ]
    if result.policy_median_users is not None:
        rows.append(
            stopping(
                "users until the ab policy declares the winner, median of"
                f" {result.policy_experiments}",
                result.policy_median_users,
            )
        )
    return rows


def _srm_rows(mismatch: SrmResult, even: SrmResult) -> list[Row]:
    return [
        make_row(
            NAME,
            f"SRM caught: {mismatch.served_share:.0%}/{1 - mismatch.served_share:.0%} served"
            f" against 50/50 weights, {mismatch.users:,} users, p < 0.001"
            f" ({mismatch.repetitions:,} repetitions)",
            _pct(mismatch.flagged),
            "%",
            _pct(mismatch.flagged_at_05),
            "the same check at p < 0.05",
            higher_is_better=True,
        ),
        make_row(
            NAME,
            f"SRM false alarms: a true 50/50, {even.users:,} users, p < 0.001"
            f" ({even.repetitions:,} repetitions)",
            _pct(even.flagged),
            "%",
            _pct(even.flagged_at_05),
            "the same check at p < 0.05",
            higher_is_better=False,
        ),
    ]


def _regret_rows(
    rates: tuple[float, ...], users: int, summaries: dict[str, RegretSummary]
) -> list[Row]:
    label = f"{rates[0]:.0%} vs {rates[1]:.0%}, {users:,} users"
    bandit = summaries[BANDIT]
    ab = summaries[AB]
    rows = []
    for baseline in (
        "fixed 50/50 split",
        "aws-samples EpsilonGreedy",
        "aws-samples UCB1",
        "aws-samples ThompsonSampling",
    ):
        other = summaries[baseline]
        shown = (
            "fixed 50/50 split (= aws-samples WeightedSampling at equal weights)"
            if baseline == "fixed 50/50 split"
            else baseline + (" (epsilon 0.1)" if "Epsilon" in baseline else "")
        )
        rows.append(
            make_row(
                NAME,
                f"regret, bandit policy, {label}: likes lost",
                bandit.mean,
                "likes",
                other.mean,
                shown,
                higher_is_better=False,
            )
        )
    rows.append(
        make_row(
            NAME,
            f"regret, ab policy, {label}: likes lost",
            ab.mean,
            "likes",
            summaries["fixed 50/50 split"].mean,
            "fixed 50/50 split",
            higher_is_better=False,
        )
    )
    return rows


def _regret_note(rates: tuple[float, ...], summaries: dict[str, RegretSummary]) -> str:
    parts = []
    for s in summaries.values():
        text = (
            f"{s.name} {s.mean:.1f} ± {s.stderr:.1f} (best gets {s.final_best_share:.0%} at the end"
        )
        if s.winners:
            text += (
                f"; winner declared in {s.winners} runs ({s.wrong_winners} wrong),"
                f" median at {s.median_winner_at:,.0f} users"
            )
        if s.frozen_looks:
            text += f"; {s.frozen_looks} looks frozen by SRM"
        parts.append(text + ")")
    return f"regret at {rates[0]:.0%} vs {rates[1]:.0%}, mean ± standard error: " + "; ".join(parts)


def run(quick: bool = False, data: Path = DEFAULT_DATA, seed: int = 7) -> BenchResult:
    del data  # simulated users only
    started = time.perf_counter()
    sizes = QUICK if quick else FULL
    rows: list[Row] = []
    notes: list[str] = []
    details: dict[str, Any] = {"sizes": sizes.__dict__, "seed": seed}

    def timed(label: str, work: Callable[[], Any]) -> Any:
        progress(NAME, label)
        began = time.perf_counter()
        value = work()
        details.setdefault("section_seconds", {})[label] = round(time.perf_counter() - began, 1)
        return value

    aa: AAResult = timed(
        "A/A",
        lambda: simulate_aa(
            experiments=sizes.aa_experiments,
            looks=sizes.aa_looks,
            round_users=sizes.round_users,
            rate=0.10,
            policy_experiments=sizes.aa_policy,
            seed=seed,
        ),
    )
    rows += _aa_rows(aa)
    details["aa"] = aa.__dict__
    notes.append(
        f"A/A at 10%: one z-test at the last look alone rejects {aa.final_look_fpr:.1%} (alpha"
        f" {ALPHA:.0%}); the ab policy froze on a sample-ratio mismatch in"
        f" {aa.policy_frozen_share:.1%} of its experiments"
    )

    power: PowerResult = timed(
        "power 10% vs 12%",
        lambda: simulate_power(
            rates=(0.10, 0.12),
            experiments=sizes.power_experiments,
            looks=sizes.power_looks,
            round_users=sizes.round_users,
            policy_experiments=sizes.power_policy,
            seed=seed,
        ),
    )
    rows += _power_rows(power)
    details["power"] = power.__dict__
    notes.append(
        f"power at 10% vs 12%: the mSPRT detected in {power.msprt_detected:.1%} of"
        f" {power.experiments} experiments within {power.horizon_users:,} users (a look every"
        f" {power.round_users}), {power.msprt_wrong_sign:.1%} with the wrong sign; the ab"
        f" policy declared in {power.policy_detected:.0%} of {power.policy_experiments},"
        f" the right variant in {power.policy_correct:.0%}"
    )

    def srm() -> tuple[SrmResult, SrmResult, list[SrmResult]]:
        mismatch = simulate_srm(
            users=sizes.srm_users, served_share=0.52, repetitions=sizes.srm_repetitions, seed=seed
        )
        even = simulate_srm(
            users=sizes.srm_users,
            served_share=0.5,
            repetitions=sizes.srm_repetitions,
            seed=seed,
            stream=1,
        )
        curve = [
            simulate_srm(users=n, served_share=0.52, repetitions=2000, seed=seed, stream=2 + i)
            for i, n in enumerate((1_000, 5_000, 10_000, 20_000))
        ]
        return mismatch, even, curve

    mismatch, even, curve = timed("sample-ratio mismatch", srm)
    rows += _srm_rows(mismatch, even)
    details["srm"] = {"mismatch": mismatch.__dict__, "even": even.__dict__}
    details["srm_curve"] = [c.__dict__ for c in curve]
    notes.append(
        "SRM detection of 52/48 at p < 0.001 by users served: "
        + ", ".join(f"{c.users:,}: {c.flagged:.0%}" for c in curve)
    )

    for stream, rates in enumerate(((0.10, 0.12), (0.10, 0.20))):
        summaries: dict[str, RegretSummary] = timed(
            f"regret {rates[0]:.0%} vs {rates[1]:.0%}",
            partial(
                simulate_regret,
                rates=rates,
                users=sizes.regret_users,
                round_users=sizes.round_users,
                repetitions=sizes.regret_repetitions,
                seed=seed,
                stream=stream,
            ),
        )
        rows += _regret_rows(rates, sizes.regret_users, summaries)
        details[f"regret_{rates[0]:.2f}_{rates[1]:.2f}"] = {
            name: s.__dict__ for name, s in summaries.items()
        }
        notes.append(_regret_note(rates, summaries))
    notes.append(
        f"regret: {sizes.regret_repetitions} repetitions per pair of rates, every strategy on"
        f" the same simulated users (one like propensity and one routing draw per user), the"
        f" weights recomputed after every {sizes.round_users} users; regret = likes expected"
        " to be lost against always serving the better variant"
    )
    floor = ExperimentSettings().bandit_floor
    notes.append(
        f"the bandit policy keeps {floor:.0%} of traffic on every variant (EXPERIMENT_BANDIT_FLOOR)"
        f" so that the weaker one stays measured: at 10% vs 20% over {sizes.regret_users:,}"
        f" users that floor alone costs up to {floor * sizes.regret_users * 0.10:.0f} likes,"
        " the gap to per-user Thompson sampling, which has none (the same policy without its"
        " floor is in the notes above)"
    )
    notes.append(
        "decisions run the production settings (ExperimentSettings defaults) with"
        f" {SIMULATION_DRAWS} Monte Carlo draws instead of 20,000: for two variants only the"
        " reported lift interval samples, and no decision depends on it"
    )
    return {
        "name": NAME,
        "title": "Experiment engine by simulation: A/A, power, SRM, regret",
        "rows": rows,
        "notes": notes,
        "details": details,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    finish(run(args.quick, args.data, args.seed), args.json)


if __name__ == "__main__":
    main()
