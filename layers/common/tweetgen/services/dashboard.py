"""The experiment's dashboard views, assembled from the metrics tables.

One function, :func:`dashboard_data`, reads what the aggregation and the rollouts wrote
(``variant_metrics``, ``decisions``, ``rollouts``, ``model_versions``) through the
repositories and returns every view as plain JSON-ready data; the local dashboard, the
static report and QuickSight's analysis show the same views of the same tables:

- the like rate per variant over time: the Beta posterior of the positive-feedback rate
  after everything up to each bucket (its mean and an equal-tailed credible interval), next
  to the rate observed within each bucket;
- the traffic share per variant over time (each bucket's served requests), and the weights
  the experiment decided;
- P(best): each variant's posterior probability to have the highest rate, after each bucket;
- latency p50/p95 per variant and bucket, and errors;
- rollouts and decisions on one timeline.

Pure of HTTP and of any database: the readers are ports (the repositories implement them).
Buckets are shown as written; when there are more than ``max_points`` of them they are
merged into wider ones (counts add up; the latency percentiles of a merged bucket are the
served-weighted means of its buckets' percentiles, an approximation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any, Protocol

from tweetgen.domain.experiment import ExperimentSettings
from tweetgen.domain.statistics import BetaPosterior, probability_best
from tweetgen.services.experiment import StoredDecision

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_MAX_POINTS",
    "DashboardStore",
    "assemble_dashboard",
    "dashboard_data",
]

#: The credible intervals' mass.
DEFAULT_LEVEL = 0.95
#: At most this many time points per series; more buckets are merged into wider ones.
DEFAULT_MAX_POINTS = 240
#: Monte Carlo draws per P(best) point with three or more variants (two are exact).
SERIES_DRAWS = 4000
#: How many decisions, rollouts and model versions the timeline reads at most.
HISTORY_LIMIT = 500


# --------------------------------------------------------------------------- ports


class MetricsRow(Protocol):
    @property
    def variant(self) -> str: ...
    @property
    def bucket_start(self) -> datetime: ...
    @property
    def served(self) -> int: ...
    @property
    def feedback_count(self) -> int: ...
    @property
    def positive_count(self) -> int: ...
    @property
    def reward_sum(self) -> float: ...
    @property
    def latency_p50_ms(self) -> float | None: ...
    @property
    def latency_p95_ms(self) -> float | None: ...
    @property
    def errors(self) -> int: ...


class RolloutRow(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def duration_s(self) -> float | None: ...


class ModelVersionRow(Protocol):
    @property
    def variant(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def registered_at(self) -> datetime: ...


class MetricsReader(Protocol):
    def list(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        variant: str | None = None,
    ) -> Sequence[MetricsRow]: ...


class DecisionReader(Protocol):
    def list(self, limit: int = ...) -> Sequence[StoredDecision]: ...


class RolloutReader(Protocol):
    def list(self, variant: str | None = None, limit: int = ...) -> Sequence[RolloutRow]: ...


class ModelVersionReader(Protocol):
    def list(self, variant: str | None = None, limit: int = ...) -> Sequence[ModelVersionRow]: ...


class DashboardStore(Protocol):
    """What the dashboard reads: ``tweetgen.adapters.database.Database`` is one."""

    @property
    def variant_metrics(self) -> MetricsReader: ...
    @property
    def decisions(self) -> DecisionReader: ...
    @property
    def rollouts(self) -> RolloutReader: ...
    @property
    def model_versions(self) -> ModelVersionReader: ...


# --------------------------------------------------------------------------- reading


def dashboard_data(
    store: DashboardStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    settings: ExperimentSettings | None = None,
    level: float = DEFAULT_LEVEL,
    max_points: int = DEFAULT_MAX_POINTS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Every dashboard view of the buckets that start in [``since``, ``until``)."""

    def within(moment: datetime) -> bool:
        return (since is None or moment >= since) and (until is None or moment < until)

    return assemble_dashboard(
        store.variant_metrics.list(since=since, until=until),
        [d for d in store.decisions.list(limit=HISTORY_LIMIT) if within(d.created_at)],
        [r for r in store.rollouts.list(limit=HISTORY_LIMIT) if within(r.started_at)],
        store.model_versions.list(limit=HISTORY_LIMIT),
        settings=settings,
        level=level,
        max_points=max_points,
        now=now,
    )


# --------------------------------------------------------------------------- assembling


@dataclass
class _Bucket:
    served: int = 0
    feedback_count: int = 0
    positive_count: int = 0
    reward_sum: float = 0.0
    errors: int = 0
    latency_served: int = 0
    latency_p50_sum: float = 0.0
    latency_p95_sum: float = 0.0
    latency_rows: int = 0

    def add(self, row: MetricsRow) -> None:
        self.served += int(row.served)
        self.feedback_count += int(row.feedback_count)
        self.positive_count += int(row.positive_count)
        self.reward_sum += float(row.reward_sum)
        self.errors += int(row.errors)
        if row.latency_p50_ms is not None and row.latency_p95_ms is not None:
            # Weighted by what was served; a bucket with latencies but none served counts once.
            weight = max(int(row.served), 1)
            self.latency_served += weight
            self.latency_p50_sum += weight * float(row.latency_p50_ms)
            self.latency_p95_sum += weight * float(row.latency_p95_ms)
            self.latency_rows += 1

    def latency(self) -> tuple[float | None, float | None]:
        if not self.latency_rows:
            return None, None
        return (
            self.latency_p50_sum / self.latency_served,
            self.latency_p95_sum / self.latency_served,
        )


def _base_width(starts: Sequence[datetime]) -> timedelta | None:
    """The narrowest gap between consecutive bucket starts: the aggregation's bucket width."""
    gaps = [b - a for a, b in pairwise(starts) if b > a]
    return min(gaps) if gaps else None


def _bucket_keys(
    starts: Sequence[datetime], max_points: int
) -> tuple[dict[datetime, datetime], timedelta | None]:
    """Each bucket start → the start of the (maybe wider) bucket it is shown in."""
    width = _base_width(starts)
    if width is None or not starts:
        return {start: start for start in starts}, width
    first, last = starts[0], starts[-1]
    span = (last - first) / width + 1
    factor = max(1, math.ceil(span / max_points))
    merged = width * factor
    return {start: first + merged * ((start - first) // merged) for start in starts}, merged


@lru_cache(maxsize=65536)
def _posterior(
    positive: int, feedback: int, prior_alpha: float, prior_beta: float, level: float
) -> tuple[float, float, float]:
    """(mean, low, high) of the rate's posterior; cached: earlier buckets repeat on every poll."""
    posterior = BetaPosterior.from_counts(positive, feedback, prior_alpha, prior_beta)
    low, high = posterior.interval(level)
    return posterior.mean, low, high


@lru_cache(maxsize=16384)
def _p_best(
    counts: tuple[tuple[str, int, int], ...],
    prior_alpha: float,
    prior_beta: float,
    draws: int,
    seed: int,
) -> dict[str, float]:
    posteriors = {
        name: BetaPosterior.from_counts(positive, feedback, prior_alpha, prior_beta)
        for name, positive, feedback in counts
    }
    return probability_best(posteriors, draws=draws, seed=seed)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def assemble_dashboard(
    metrics: Sequence[MetricsRow],
    decisions: Sequence[StoredDecision],
    rollouts: Sequence[RolloutRow],
    model_versions: Sequence[ModelVersionRow],
    *,
    settings: ExperimentSettings | None = None,
    level: float = DEFAULT_LEVEL,
    max_points: int = DEFAULT_MAX_POINTS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The views of already-read rows (see the module's docstring); JSON-ready, times in ISO 8601.

    ``settings`` gives the prior, the P(best) threshold and the Monte Carlo seed (the
    experiment's own, so the numbers match its decisions).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    settings = settings or ExperimentSettings()
    prior = (settings.prior_alpha, settings.prior_beta)
    variants = sorted(
        {row.variant for row in metrics}
        | {name for d in decisions for name in d.weights}
        | {r.variant for r in rollouts if r.variant}
        | {v.variant for v in model_versions}
    )
    starts = sorted({row.bucket_start for row in metrics})
    key_of, width = _bucket_keys(starts, max_points)
    keys = sorted(set(key_of.values()))
    buckets: dict[tuple[str, datetime], _Bucket] = {}
    for row in metrics:
        buckets.setdefault((row.variant, key_of[row.bucket_start]), _Bucket()).add(row)

    series: dict[str, dict[str, list[Any]]] = {
        name: {
            field: []
            for field in (
                "served",
                "feedback_count",
                "positive_count",
                "errors",
                "like_rate",
                "posterior_mean",
                "interval_low",
                "interval_high",
                "traffic_share",
                "p_best",
                "latency_p50_ms",
                "latency_p95_ms",
            )
        }
        for name in variants
    }
    totals = {name: _Bucket() for name in variants}
    draws = min(settings.monte_carlo_draws, SERIES_DRAWS)
    for key in keys:
        served_here = sum(buckets[(n, key)].served for n in variants if (n, key) in buckets)
        for name in variants:
            bucket = buckets.get((name, key), _Bucket())
            total = totals[name]
            for field in ("served", "feedback_count", "positive_count", "errors"):
                setattr(total, field, getattr(total, field) + getattr(bucket, field))
                series[name][field].append(getattr(bucket, field))
            total.reward_sum += bucket.reward_sum
            p50, p95 = bucket.latency()
            series[name]["latency_p50_ms"].append(p50)
            series[name]["latency_p95_ms"].append(p95)
            series[name]["like_rate"].append(_ratio(bucket.positive_count, bucket.feedback_count))
            series[name]["traffic_share"].append(_ratio(bucket.served, served_here))
            seen = total.served or total.feedback_count
            mean, low, high = (
                _posterior(total.positive_count, total.feedback_count, *prior, level)
                if seen
                else (None, None, None)
            )
            series[name]["posterior_mean"].append(mean)
            series[name]["interval_low"].append(low)
            series[name]["interval_high"].append(high)
        counts = tuple(
            (name, totals[name].positive_count, totals[name].feedback_count)
            for name in variants
            if totals[name].served or totals[name].feedback_count
        )
        best = _p_best(counts, *prior, draws, settings.seed) if counts else {}
        for name in variants:
            series[name]["p_best"].append(best.get(name))

    latest_versions: dict[str, ModelVersionRow] = {}
    for registered in model_versions:
        current = latest_versions.get(registered.variant)
        if current is None or registered.registered_at > current.registered_at:
            latest_versions[registered.variant] = registered
    ordered_decisions = sorted(decisions, key=lambda d: (d.created_at, d.id))
    final_counts = tuple(
        (name, totals[name].positive_count, totals[name].feedback_count)
        for name in variants
        if totals[name].served or totals[name].feedback_count
    )
    final_best = (
        _p_best(final_counts, *prior, settings.monte_carlo_draws, settings.seed)
        if final_counts
        else {}
    )
    summary = {}
    for name in variants:
        total = totals[name]
        posterior = (
            _posterior(total.positive_count, total.feedback_count, *prior, level)
            if total.served or total.feedback_count
            else None
        )
        p50s = [v for v in series[name]["latency_p50_ms"] if v is not None]
        p95s = [v for v in series[name]["latency_p95_ms"] if v is not None]
        version = latest_versions.get(name)
        summary[name] = {
            "served": total.served,
            "feedback_count": total.feedback_count,
            "positive_count": total.positive_count,
            "like_rate": _ratio(total.positive_count, total.feedback_count),
            "mean_reward": _ratio(total.reward_sum, total.feedback_count),
            "posterior_mean": posterior[0] if posterior else None,
            "interval": [posterior[1], posterior[2]] if posterior else None,
            "p_best": final_best.get(name),
            "errors": total.errors,
            "error_rate": _ratio(total.errors, max(total.served, total.errors)),
            "latency_p50_ms": p50s[-1] if p50s else None,
            "latency_p95_ms": p95s[-1] if p95s else None,
            "weight_in_force": _weight_in_force(ordered_decisions, name),
            "model_version": version.version if version else None,
            "model_kind": version.kind if version else None,
        }

    latest = ordered_decisions[-1] if ordered_decisions else None
    return {
        "generated_at": _iso(now),
        "level": level,
        "prior": {"alpha": prior[0], "beta": prior[1]},
        "p_best_threshold": settings.p_best_threshold,
        "policy": latest.policy if latest else settings.policy,
        "bucket_seconds": width.total_seconds() if width else None,
        "variants": variants,
        "buckets": [_iso(key) for key in keys],
        "series": series,
        "summary": summary,
        "latest_decision": _decision(latest) if latest else None,
        "decisions": [_decision(d) for d in ordered_decisions],
        "rollouts": [
            {
                "id": r.id,
                "variant": r.variant,
                "version": r.version,
                "status": r.status,
                "reason": r.reason,
                "started_at": _iso(r.started_at),
                "finished_at": _iso(r.finished_at),
                "duration_s": r.duration_s,
            }
            for r in sorted(rollouts, key=lambda r: (r.started_at, r.id))
        ],
        "model_versions": [
            {
                "variant": v.variant,
                "version": v.version,
                "kind": v.kind,
                "registered_at": _iso(v.registered_at),
            }
            for v in sorted(model_versions, key=lambda v: (v.registered_at, v.variant))
        ],
    }


def _weight_in_force(decisions: Sequence[StoredDecision], name: str) -> float | None:
    """The variant's share after the latest decision: the weights it applied, or, when it
    kept them, the weights in force when it ran (its statistics say so)."""
    if not decisions:
        return None
    latest = decisions[-1]
    if latest.applied:
        return latest.weights.get(name)
    variants = latest.statistics.get("variants") if latest.statistics else None
    figures = variants.get(name) if isinstance(variants, Mapping) else None
    weight = figures.get("weight_in_force") if isinstance(figures, Mapping) else None
    return float(weight) if isinstance(weight, int | float) else None


def _decision(decision: StoredDecision) -> dict[str, Any]:
    stats = decision.statistics.get("variants") if decision.statistics else None
    p_best: dict[str, float] = {}
    if isinstance(stats, Mapping):
        for name, figures in stats.items():
            value = figures.get("p_best") if isinstance(figures, Mapping) else None
            if isinstance(value, int | float):
                p_best[str(name)] = float(value)
    return {
        "id": decision.id,
        "at": _iso(decision.created_at),
        "policy": decision.policy,
        "weights": dict(decision.weights),
        "reason": decision.reason,
        "applied": decision.applied,
        "p_best": p_best,
    }
