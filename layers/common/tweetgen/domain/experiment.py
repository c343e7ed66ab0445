"""The experiment's decision: from per-variant counts to the endpoint's next traffic weights.

Pure: the aggregate service reads the counts, the weights in force, the stored sequential
state and the previous decision, calls :func:`decide`, stores what comes back and applies
the new weights when ``changed``. The same inputs always give the same decision (every
Monte Carlo estimate is seeded), and a decision whose weights are already in force is
``changed=False``, so applying a decision twice changes nothing.

Policies:

- ``ab``: the split stays as it is until a winner is declared: every eligible variant has
  ``min_samples_per_variant`` feedback, the leader's probability to be best is at least
  ``p_best_threshold`` and its always-valid mSPRT p-value against every other variant is
  below ``alpha`` (Bonferroni-divided over the pairs when there are more than two). The
  winner then gets ``winner_share`` of the traffic and keeps it on later runs.
- ``bandit``: Thompson sampling (Thompson, Biometrika 1933) in batch form: each variant's
  weight is its posterior probability to be best, with ``bandit_floor`` kept for every
  variant (``w = floor + (1 - k floor) P(best)``), recomputed on every run.
- ``manual``: weights are set by hand; statistics are still computed and reported.

Before any policy: a sample-ratio mismatch (the served split does not match the weights in
force, chi-squared p below ``srm_threshold``) freezes automatic decisions, because the
counts cannot be trusted; and guardrails take traffic from a variant that is clearly worse
on errors or latency (to 0 under ``ab``, to the floor under ``bandit``), whatever its likes.
See :mod:`tweetgen.domain.statistics` for the methods.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

from tweetgen.domain.statistics import (
    DEFAULT_DRAWS,
    DEFAULT_MIXING_SD,
    DEFAULT_SEED,
    SEQUENTIAL_MIN_TRIALS,
    SRM_P_THRESHOLD,
    BetaPosterior,
    GuardrailObservation,
    GuardrailSettings,
    SequentialState,
    SrmResult,
    expected_loss,
    guardrail_violations,
    probability_best,
    relative_lift_interval,
    sample_ratio_mismatch,
)

__all__ = [
    "POLICIES",
    "WEIGHT_DIGITS",
    "Decision",
    "ExperimentSettings",
    "Policy",
    "VariantSnapshot",
    "decide",
    "normalise_weights",
    "pair_key",
]

Policy = Literal["ab", "bandit", "manual"]
POLICIES: tuple[Policy, ...] = ("ab", "bandit", "manual")
# New weights are rounded to this many decimals (0.01 % of traffic).
WEIGHT_DIGITS = 4
_SEQUENTIAL_FORMAT = 1


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class VariantSnapshot:
    """One variant's counts since the experiment started.

    ``served`` counts requests routed to the variant (failed ones included) and ``errors``
    the failed ones. ``served_since_weights`` counts the requests served since the weights in
    force were set, and ``users_since_weights`` the distinct users: what the sample-ratio
    check compares with those weights, since the assignment randomises users (``None``: the
    requests, or ``served`` when those are ``None`` too).
    """

    served: int = 0
    feedback_count: int = 0
    positive_count: int = 0
    reward_sum: float = 0.0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    served_since_weights: int | None = None
    users_since_weights: int | None = None

    def __post_init__(self) -> None:
        for name in ("served", "feedback_count", "positive_count", "errors"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.positive_count > self.feedback_count:
            raise ValueError(
                f"positive_count ({self.positive_count}) exceeds feedback_count "
                f"({self.feedback_count})"
            )
        for name in ("served_since_weights", "users_since_weights"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")

    @property
    def srm_served(self) -> int:
        if self.users_since_weights is not None:
            return self.users_since_weights
        return self.served if self.served_since_weights is None else self.served_since_weights

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantSnapshot:
        def optional(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        since = data.get("served_since_weights")
        users = data.get("users_since_weights")
        return cls(
            served=int(data.get("served", 0)),
            feedback_count=int(data.get("feedback_count", 0)),
            positive_count=int(data.get("positive_count", 0)),
            reward_sum=float(data.get("reward_sum", 0.0)),
            errors=int(data.get("errors", 0)),
            latency_p50_ms=optional("latency_p50_ms"),
            latency_p95_ms=optional("latency_p95_ms"),
            served_since_weights=None if since is None else int(since),
            users_since_weights=None if users is None else int(users),
        )


# Each setting: its environment variable and how to read it.
_ENVIRONMENT: dict[str, tuple[str, type]] = {
    "policy": ("EXPERIMENT_POLICY", str),
    "alpha": ("EXPERIMENT_ALPHA", float),
    "p_best_threshold": ("EXPERIMENT_P_BEST_THRESHOLD", float),
    "min_samples_per_variant": ("EXPERIMENT_MIN_SAMPLES_PER_VARIANT", int),
    "winner_share": ("EXPERIMENT_WINNER_SHARE", float),
    "bandit_floor": ("EXPERIMENT_BANDIT_FLOOR", float),
    "srm_threshold": ("EXPERIMENT_SRM_THRESHOLD", float),
    "prior_alpha": ("EXPERIMENT_PRIOR_ALPHA", float),
    "prior_beta": ("EXPERIMENT_PRIOR_BETA", float),
    "mixing_sd": ("EXPERIMENT_MIXING_SD", float),
    "guardrail_error_min_diff": ("EXPERIMENT_GUARDRAIL_ERROR_MIN_DIFF", float),
    "guardrail_error_alpha": ("EXPERIMENT_GUARDRAIL_ERROR_ALPHA", float),
    "guardrail_latency_factor": ("EXPERIMENT_GUARDRAIL_LATENCY_FACTOR", float),
    "guardrail_min_samples": ("EXPERIMENT_GUARDRAIL_MIN_SAMPLES", int),
    "weight_tolerance": ("EXPERIMENT_WEIGHT_TOLERANCE", float),
    "monte_carlo_draws": ("EXPERIMENT_MONTE_CARLO_DRAWS", int),
    "seed": ("EXPERIMENT_SEED", int),
    "control": ("EXPERIMENT_CONTROL", str),
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _between(
    low: float, high: float, *, low_open: bool = True, high_open: bool = True
) -> Callable[[Any], bool]:
    def valid(value: Any) -> bool:
        if not _number(value):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below

    return valid


def _whole_at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


_UNIT = "between 0 and 1 (exclusive)"
# Each setting's rule: (field, check, what the message says it must be).
_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("policy", lambda value: value in POLICIES, f"one of {', '.join(POLICIES)}"),
    ("alpha", _between(0, 1), _UNIT),
    ("p_best_threshold", _between(0, 1), _UNIT),
    ("min_samples_per_variant", _whole_at_least(0), "an integer >= 0"),
    ("winner_share", _between(0, 1, high_open=False), "in (0, 1]"),
    # Weights keep WEIGHT_DIGITS decimals: a smaller floor would round to no traffic at all.
    (
        "bandit_floor",
        lambda value: value == 0 or _between(10**-WEIGHT_DIGITS, 1, low_open=False)(value),
        f"0, or in [{10**-WEIGHT_DIGITS:g}, 1)",
    ),
    ("srm_threshold", _between(0, 1), _UNIT),
    ("prior_alpha", _between(0, math.inf), "a positive number"),
    ("prior_beta", _between(0, math.inf), "a positive number"),
    ("mixing_sd", _between(0, math.inf), "a positive number"),
    ("guardrail_error_min_diff", _between(0, 1, low_open=False), "in [0, 1)"),
    ("guardrail_error_alpha", _between(0, 1), _UNIT),
    ("guardrail_latency_factor", _between(1, math.inf, low_open=False), "a number >= 1"),
    ("guardrail_min_samples", _whole_at_least(1), "an integer >= 1"),
    ("weight_tolerance", _between(0, 0.5, low_open=False), "in [0, 0.5)"),
    ("monte_carlo_draws", _whole_at_least(100), "an integer >= 100"),
    ("seed", _whole_at_least(-(2**63)), "an integer"),
    ("control", lambda value: value is None or bool(str(value).strip()), "a variant name"),
)


@dataclass(frozen=True)
class ExperimentSettings:
    """How the experiment decides. Every field has an ``EXPERIMENT_*`` environment variable.

    ``guardrail_*`` fields are the :class:`~tweetgen.domain.statistics.GuardrailSettings`;
    ``mixing_sd`` is the mSPRT's tau (fix it before the experiment starts: a change restarts
    the sequential test); ``control`` names the baseline of the reported lift (default: the
    first variant of the weights in force).
    """

    policy: Policy = "ab"
    alpha: float = 0.05
    p_best_threshold: float = 0.95
    min_samples_per_variant: int = 100
    winner_share: float = 1.0
    bandit_floor: float = 0.05
    srm_threshold: float = SRM_P_THRESHOLD
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    mixing_sd: float = DEFAULT_MIXING_SD
    guardrail_error_min_diff: float = 0.02
    guardrail_error_alpha: float = 0.01
    guardrail_latency_factor: float = 1.5
    guardrail_min_samples: int = 200
    weight_tolerance: float = 0.01
    monte_carlo_draws: int = DEFAULT_DRAWS
    seed: int = DEFAULT_SEED
    control: str | None = None

    def __post_init__(self) -> None:
        for name, valid, rule in _RULES:
            value = getattr(self, name)
            if not valid(value):
                variable = _ENVIRONMENT[name][0]
                raise ValueError(f"{name} ({variable}) must be {rule}, got {value!r}")

    @property
    def guardrails(self) -> GuardrailSettings:
        return GuardrailSettings(
            error_min_diff=self.guardrail_error_min_diff,
            error_alpha=self.guardrail_error_alpha,
            latency_factor=self.guardrail_latency_factor,
            min_samples=self.guardrail_min_samples,
        )

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ExperimentSettings:
        """Read ``EXPERIMENT_POLICY``, ``EXPERIMENT_ALPHA``, ... (unset or empty: the default)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (variable, kind) in _ENVIRONMENT.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            if kind is str:
                values[name] = raw.lower() if name == "policy" else raw
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(
                    f"environment variable {variable} must be {what}, got {raw!r}"
                ) from None
        return cls(**values)


# --------------------------------------------------------------------------- output


@dataclass(frozen=True)
class Decision:
    """What one run decided: the weights to apply (relative, summing to 1), whether they
    differ from the weights in force, why, the statistics behind it (JSON-serialisable) and
    the sequential-test state to store for the next run."""

    policy: str
    weights: dict[str, float]
    changed: bool
    reason: str
    winner: str | None = None
    frozen: bool = False
    statistics: dict[str, Any] = field(default_factory=dict)
    sequential_state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "weights": dict(self.weights),
            "changed": self.changed,
            "reason": self.reason,
            "winner": self.winner,
            "frozen": self.frozen,
            "statistics": self.statistics,
            "sequential_state": self.sequential_state,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        winner = data.get("winner")
        return cls(
            policy=str(data.get("policy", "")),
            weights={str(k): float(v) for k, v in dict(data.get("weights") or {}).items()},
            changed=bool(data.get("changed", False)),
            reason=str(data.get("reason", "")),
            winner=None if winner is None else str(winner),
            frozen=bool(data.get("frozen", False)),
            statistics=dict(data.get("statistics") or {}),
            sequential_state=dict(data.get("sequential_state") or {}),
        )


# --------------------------------------------------------------------------- helpers


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Relative weights (SageMaker's form) as shares summing to 1; all zero -> an equal split."""
    if not weights:
        raise ValueError("no variants: the weights in force are empty")
    if any(not math.isfinite(w) or w < 0 for w in weights.values()):
        raise ValueError(f"weights must be non-negative numbers, got {dict(weights)}")
    total = sum(weights.values())
    if total <= 0:
        return {name: 1.0 / len(weights) for name in weights}
    return {name: w / total for name, w in weights.items()}


def _rounded(weights: Mapping[str, float]) -> dict[str, float]:
    """Round to WEIGHT_DIGITS decimals; the largest absorbs the rounding so the sum stays 1."""
    rounded = {name: round(w, WEIGHT_DIGITS) for name, w in weights.items()}
    largest = max(rounded, key=lambda name: (rounded[name], name))
    rest = math.fsum(w for name, w in rounded.items() if name != largest)
    rounded[largest] = round(1.0 - rest, WEIGHT_DIGITS)
    return rounded


def pair_key(first: str, second: str) -> str:
    """The key of a pair's sequential test: the two names sorted, joined by ``|``.

    The test is of rate(second name) - rate(first name) in that sorted order.
    """
    a, b = sorted((first, second))
    return f"{a}|{b}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class _Analysis:
    """Everything computed from the counts before a policy looks at it."""

    variants: tuple[str, ...]
    snapshots: dict[str, VariantSnapshot]
    posteriors: dict[str, BetaPosterior]
    p_best: dict[str, float]
    srm: SrmResult
    flagged: dict[str, tuple[str, ...]]
    pairs: dict[str, SequentialState]
    notes: tuple[str, ...]

    @property
    def eligible(self) -> tuple[str, ...]:
        """Variants not flagged by a guardrail (all of them when every one is flagged)."""
        kept = tuple(name for name in self.variants if name not in self.flagged)
        return kept or self.variants

    @property
    def demoted(self) -> tuple[str, ...]:
        return tuple(name for name in self.variants if name not in self.eligible)


@dataclass(frozen=True)
class _Proposal:
    weights: dict[str, float]
    reason: str
    winner: str | None = None
    frozen: bool = False


def _load_pairs(
    variants: Sequence[str], stored: Mapping[str, Any] | None, settings: ExperimentSettings
) -> tuple[dict[str, SequentialState], list[str]]:
    stored_pairs = dict((stored or {}).get("pairs") or {})
    pairs: dict[str, SequentialState] = {}
    notes: list[str] = []
    for first, second in combinations(sorted(variants), 2):
        key = pair_key(first, second)
        try:
            pairs[key] = SequentialState.from_dict(
                stored_pairs.get(key), tau=settings.mixing_sd, alpha=settings.alpha
            )
        except ValueError as exc:
            notes.append(f"sequential test {key} restarted: {exc}")
            pairs[key] = SequentialState(tau=settings.mixing_sd, alpha=settings.alpha)
    return pairs, notes


def _analyse(
    snapshots: Mapping[str, VariantSnapshot],
    current: Mapping[str, float],
    settings: ExperimentSettings,
    stored: Mapping[str, Any] | None,
) -> _Analysis:
    variants = tuple(current)
    snaps = {name: snapshots.get(name) or VariantSnapshot() for name in variants}
    posteriors = {
        name: BetaPosterior.from_counts(
            snap.positive_count, snap.feedback_count, settings.prior_alpha, settings.prior_beta
        )
        for name, snap in snaps.items()
    }
    p_best = probability_best(posteriors, draws=settings.monte_carlo_draws, seed=settings.seed)
    srm = sample_ratio_mismatch(
        {name: snap.srm_served for name, snap in snaps.items()},
        current,
        threshold=settings.srm_threshold,
    )
    flagged = guardrail_violations(
        {
            name: GuardrailObservation(snap.served, snap.errors, snap.latency_p95_ms)
            for name, snap in snaps.items()
        },
        settings.guardrails,
    )
    pairs, notes = _load_pairs(variants, stored, settings)
    for key, state in list(pairs.items()):
        a, b = key.split("|", 1)
        pairs[key] = state.update(
            snaps[a].positive_count,
            snaps[a].feedback_count,
            snaps[b].positive_count,
            snaps[b].feedback_count,
            min_trials=SEQUENTIAL_MIN_TRIALS,
        )
    if flagged and len(flagged) == len(variants):
        notes.append("guardrails flag every variant: none is demoted")
    return _Analysis(variants, snaps, posteriors, p_best, srm, flagged, pairs, tuple(notes))


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _demotion_text(analysis: _Analysis) -> str:
    parts = [f"{name} ({'; '.join(analysis.flagged[name])})" for name in analysis.demoted]
    return "guardrail: clearly worse " + ", ".join(parts)


# --------------------------------------------------------------------------- ab


def _winner_blockers(
    leader: str, analysis: _Analysis, p_best: Mapping[str, float], settings: ExperimentSettings
) -> list[str]:
    """Why ``leader`` cannot be declared the winner yet (empty: it can)."""
    blockers = []
    short = [
        f"{name} has {analysis.snapshots[name].feedback_count} of "
        f"{settings.min_samples_per_variant} feedback needed"
        for name in analysis.eligible
        if analysis.snapshots[name].feedback_count < settings.min_samples_per_variant
    ]
    blockers.extend(short)
    if p_best[leader] < settings.p_best_threshold:
        blockers.append(f"P(best)={p_best[leader]:.3f} < {settings.p_best_threshold:g}")
    others = [name for name in analysis.eligible if name != leader]
    pair_count = len(others) * (len(others) + 1) // 2
    threshold = settings.alpha / max(1, pair_count)
    for other in others:
        state = analysis.pairs[pair_key(leader, other)]
        leader_is_b = pair_key(leader, other).endswith(f"|{leader}")
        ahead = state.difference > 0 if leader_is_b else state.difference < 0
        if not (state.p_value < threshold and ahead):
            blockers.append(f"always-valid p={state.p_value:.3g} vs {other} not < {threshold:.3g}")
    return blockers


def _winner_weights(
    winner: str, analysis: _Analysis, settings: ExperimentSettings
) -> dict[str, float]:
    rest = [name for name in analysis.eligible if name != winner]
    share = settings.winner_share if rest else 1.0
    weights = dict.fromkeys(analysis.variants, 0.0)
    weights[winner] = share
    for name in rest:
        weights[name] = (1.0 - share) / len(rest)
    return weights


def _kept_split(analysis: _Analysis, current: Mapping[str, float]) -> dict[str, float]:
    """The weights in force with demoted variants' traffic given to the others, pro rata."""
    kept = {name: current[name] for name in analysis.eligible}
    return {**dict.fromkeys(analysis.variants, 0.0), **normalise_weights(kept)}


def _ab(
    analysis: _Analysis,
    current: Mapping[str, float],
    settings: ExperimentSettings,
    previous: Decision | None,
) -> _Proposal:
    notes = f"; {_demotion_text(analysis)} -> 0%" if analysis.demoted else ""
    # A variant that joined since (a rollout added it) starts a new experiment: the earlier
    # winner was declared against the others only, and carrying it over would starve the
    # newcomer of the traffic the rollout gave it.
    joined = sorted(set(analysis.variants) - set(previous.weights)) if previous else []
    if joined:
        notes += f"; {', '.join(joined)} joined, so no earlier winner is carried over"
    if (
        previous is not None
        and previous.policy == "ab"
        and previous.winner in analysis.eligible
        and not joined
    ):
        winner = previous.winner
        return _Proposal(
            _winner_weights(winner, analysis, settings),
            f"ab: {winner} was declared the winner earlier and keeps "
            f"{_pct(settings.winner_share)} of traffic{notes}",
            winner,
        )
    eligible = {name: analysis.posteriors[name] for name in analysis.eligible}
    p_best = (
        analysis.p_best
        if len(eligible) == len(analysis.variants)
        else probability_best(eligible, draws=settings.monte_carlo_draws, seed=settings.seed)
    )
    leader = max(analysis.eligible, key=lambda name: (p_best[name], name))
    if len(analysis.eligible) < 2:
        return _Proposal(
            _kept_split(analysis, current), f"ab: {leader} is the only variant left{notes}"
        )
    blockers = _winner_blockers(leader, analysis, p_best, settings)
    if blockers:
        return _Proposal(
            _kept_split(analysis, current),
            f"ab: no winner yet ({leader} leads; {'; '.join(blockers)}); split kept{notes}",
        )
    return _Proposal(
        _winner_weights(leader, analysis, settings),
        f"ab: {leader} wins (P(best)={p_best[leader]:.3f} >= {settings.p_best_threshold:g}, "
        f"always-valid p < {settings.alpha:g}, >= {settings.min_samples_per_variant} feedback "
        f"per variant) -> {_pct(settings.winner_share)} of traffic{notes}",
        leader,
    )


# --------------------------------------------------------------------------- bandit


def _bandit(analysis: _Analysis, settings: ExperimentSettings) -> _Proposal:
    count = len(analysis.variants)
    # A floor valid for two variants can exceed 1 in all once a rollout adds a third: then
    # every variant gets the most it can (an even split), and the reason says so.
    floor = min(settings.bandit_floor, 1.0 / count)
    lowered = (
        f" (EXPERIMENT_BANDIT_FLOOR {settings.bandit_floor:g} is more than {count} variants"
        f" can each have: lowered to 1/{count})"
        if floor < settings.bandit_floor
        else ""
    )
    eligible = {name: analysis.posteriors[name] for name in analysis.eligible}
    p_best = (
        analysis.p_best
        if len(eligible) == count
        else probability_best(eligible, draws=settings.monte_carlo_draws, seed=settings.seed)
    )
    free = 1.0 - floor * count
    weights = {name: floor + free * p_best.get(name, 0.0) for name in analysis.variants}
    shares = ", ".join(f"{name} {_pct(weights[name])}" for name in analysis.variants)
    demotion = f"; {_demotion_text(analysis)} -> floor" if analysis.demoted else ""
    return _Proposal(
        weights,
        f"bandit: Thompson-sampling weights = P(best) with a {_pct(floor)} floor{lowered}:"
        f" {shares}{demotion}",
    )


# --------------------------------------------------------------------------- decide


def _statistics(
    analysis: _Analysis, current: Mapping[str, float], settings: ExperimentSettings
) -> dict[str, Any]:
    losses = expected_loss(
        analysis.posteriors, draws=settings.monte_carlo_draws, seed=settings.seed
    )
    control = settings.control if settings.control in analysis.variants else analysis.variants[0]
    variants = {}
    for name in analysis.variants:
        snap, post = analysis.snapshots[name], analysis.posteriors[name]
        variants[name] = {
            "served": snap.served,
            "feedback_count": snap.feedback_count,
            "positive_count": snap.positive_count,
            "positive_rate": snap.positive_count / snap.feedback_count
            if snap.feedback_count
            else None,
            "mean_reward": snap.reward_sum / snap.feedback_count if snap.feedback_count else None,
            "errors": snap.errors,
            "error_rate": (
                snap.errors / max(snap.served, snap.errors)
                if max(snap.served, snap.errors)
                else None
            ),
            "latency_p50_ms": snap.latency_p50_ms,
            "latency_p95_ms": snap.latency_p95_ms,
            "posterior": {"alpha": post.alpha, "beta": post.beta, "mean": post.mean},
            "p_best": analysis.p_best[name],
            "expected_loss": losses[name],
            "weight_in_force": current[name],
        }
    lift = {}
    for name in analysis.variants:
        if name == control:
            continue
        interval = relative_lift_interval(
            analysis.posteriors[control],
            analysis.posteriors[name],
            draws=settings.monte_carlo_draws,
            seed=settings.seed,
        )
        lift[name] = {
            "versus": control,
            "median": interval.median,
            "low": interval.low,
            "high": interval.high,
            "level": interval.level,
        }
    sequential = {}
    for key, state in analysis.pairs.items():
        a, b = key.split("|", 1)
        sequential[key] = {
            "difference_of": f"{b} - {a}",
            "difference": state.difference,
            "p_value": state.p_value,
            "ci_low": state.ci_low,
            "ci_high": state.ci_high,
            "looks": state.looks,
            "significant": state.significant,
        }
    return {
        "control": control,
        "variants": variants,
        "lift": lift,
        "sequential": sequential,
        "srm": {
            "statistic": _finite(analysis.srm.statistic),
            "df": analysis.srm.df,
            "p_value": analysis.srm.p_value,
            "flagged": analysis.srm.flagged,
            "threshold": settings.srm_threshold,
        },
        "guardrails": {name: list(reasons) for name, reasons in analysis.flagged.items()},
        "notes": list(analysis.notes),
    }


def _propose(
    analysis: _Analysis,
    current: Mapping[str, float],
    settings: ExperimentSettings,
    previous: Decision | None,
) -> _Proposal:
    if settings.policy == "manual":
        return _Proposal(dict(current), "manual: weights are set by hand; statistics only")
    if analysis.srm.flagged:
        statistic = analysis.srm.statistic
        shown = f"chi2={statistic:.1f}, " if math.isfinite(statistic) else ""
        return _Proposal(
            dict(current),
            f"{settings.policy}: sample-ratio mismatch ({shown}p={analysis.srm.p_value:.2g} < "
            f"{settings.srm_threshold:g}): automatic decisions frozen, weights unchanged",
            previous.winner
            if previous is not None and previous.policy == settings.policy
            else None,
            frozen=True,
        )
    if settings.policy == "bandit":
        return _bandit(analysis, settings)
    return _ab(analysis, current, settings, previous)


def decide(
    snapshots: Mapping[str, VariantSnapshot],
    weights: Mapping[str, float],
    settings: ExperimentSettings,
    sequential_state: Mapping[str, Any] | None = None,
    previous: Decision | Mapping[str, Any] | None = None,
) -> Decision:
    """Decide the next traffic weights.

    ``weights`` are the weights in force (relative, as SageMaker holds them); its keys are
    the experiment's variants (a snapshot missing for one counts as zero). ``sequential_state``
    is the previous decision's ``sequential_state`` (None at the start) and ``previous`` the
    previous decision (it carries a declared ``ab`` winner forward). Deterministic.
    """
    current = normalise_weights(weights)
    if isinstance(previous, Mapping):
        previous = Decision.from_dict(previous)
    analysis = _analyse(snapshots, current, settings, sequential_state)
    proposal = _propose(analysis, current, settings, previous)
    new = _rounded(proposal.weights)
    changed = any(
        abs(new[name] - current[name]) > settings.weight_tolerance for name in analysis.variants
    )
    if not changed:
        new = _rounded(current)
    state = {
        "format": _SEQUENTIAL_FORMAT,
        "pairs": {key: pair.to_dict() for key, pair in analysis.pairs.items()},
    }
    return Decision(
        policy=settings.policy,
        weights=new,
        changed=changed,
        reason=proposal.reason,
        winner=proposal.winner,
        frozen=proposal.frozen,
        statistics=_statistics(analysis, current, settings),
        sequential_state=state,
    )
