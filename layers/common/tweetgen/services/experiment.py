"""The experiment engine: aggregate the events, decide the traffic split, apply it, report it.

:func:`run_experiment` is what the aggregate function runs on its schedule (and on demand):

1. **Aggregate** the events recorded since the last run into per-variant, 5-minute buckets
   (``variant_metrics``; see :mod:`tweetgen.domain.aggregation`): only the buckets that new
   rows fall in are recomputed, from their rows, so a run reads what is new and a bucket's
   figures never depend on how often or in which order its rows arrived.
2. **Read the endpoint**: its status and the weights in force (DescribeEndpoint). The time
   those weights were set is kept (``aggregation_state``), so the sample-ratio check compares
   the weights with the requests served under them only.
3. **Decide** with :func:`tweetgen.domain.experiment.decide`, continuing the previous decision's
   sequential tests, and **record** the decision with its statistics.
4. **Apply** changed weights with ``UpdateEndpointWeightsAndCapacities`` (never a new endpoint
   config), only while the endpoint is ``InService``; otherwise the decision is recorded as not
   applied, with the reason, and the next run decides again. A decision whose weights are in
   force changes nothing, so running twice applies once.

A lease in the database keeps two runs (an EventBridge schedule delivers at least once, and a
run can be started by hand) from deciding at the same time, and a scheduled event's id names
its decision, so a redelivered event finds its decision and does nothing.

:func:`experiment_status` is ``GET /experiment`` and ``tweetgen experiment status``: the
figures as of the last aggregation, the statistics of the last decision, the weights now.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tweetgen.domain.aggregation import (
    BUCKET_SECONDS,
    AggregationReport,
    MetricTotals,
    WeightsInForce,
    iso,
)
from tweetgen.domain.experiment import Decision, ExperimentSettings, VariantSnapshot, decide
from tweetgen.domain.rollout import EndpointState
from tweetgen.services.errors import ServingVariant

__all__ = [
    "AggregationReport",
    "AggregationSettings",
    "ExperimentRun",
    "MetricTotals",
    "WeightUpdateRefused",
    "WeightsInForce",
    "aggregate",
    "experiment_status",
    "run_experiment",
    "snapshots",
]

IN_SERVICE = "InService"
# Two weight maps are the same split when their shares differ by less than this.
_SAME_SHARE = 1e-6


# --------------------------------------------------------------------------- settings


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class AggregationSettings:
    """How the aggregation reads and what the snapshots cover.

    ``overlap_seconds``: each run re-reads rows recorded up to this long before the newest one
    it had seen, for transactions that committed out of order (a recorder's transaction lasts
    at most its 30 s timeout). ``latency_window_seconds``: the decision's latency percentiles
    are of the generations of this last stretch (the guardrail is about how a variant behaves
    now). ``weights_settle_seconds``: the sample-ratio check starts this long after the weights
    were set (the generate function caches the weights for 10 s).
    ``lease_seconds``: the longest a run may hold the experiment before another may start.
    ``srm_window_seconds``: the users the sample-ratio check counts are those served in this
    last stretch (and since the weights settled): counting them reads each generation of it.
    """

    bucket_seconds: int = BUCKET_SECONDS
    overlap_seconds: float = 120.0
    latency_window_seconds: float = 3600.0
    weights_settle_seconds: float = 30.0
    lease_seconds: float = 300.0
    srm_window_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if not isinstance(self.bucket_seconds, int) or not 1 <= self.bucket_seconds <= 86_400:
            raise ValueError(f"bucket_seconds must be 1 to 86400, got {self.bucket_seconds!r}")
        for name in ("overlap_seconds", "latency_window_seconds", "weights_settle_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("lease_seconds", "srm_window_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value!r}")

    @property
    def overlap(self) -> timedelta:
        return timedelta(seconds=self.overlap_seconds)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> AggregationSettings:
        """``AGGREGATION_OVERLAP_SECONDS`` and ``AGGREGATION_LATENCY_WINDOW_SECONDS``."""
        env = os.environ if env is None else env
        return cls(
            overlap_seconds=_seconds(env, "AGGREGATION_OVERLAP_SECONDS", cls.overlap_seconds),
            latency_window_seconds=_seconds(
                env, "AGGREGATION_LATENCY_WINDOW_SECONDS", cls.latency_window_seconds
            ),
        )


# --------------------------------------------------------------------------- values


class WeightUpdateRefused(Exception):
    """SageMaker refused ``UpdateEndpointWeightsAndCapacities``; the message says why."""


# --------------------------------------------------------------------------- ports


class MetricsStore(Protocol):
    def aggregate(
        self, *, bucket_seconds: int, overlap: timedelta, full: bool = False
    ) -> AggregationReport:
        """Bring ``variant_metrics`` up to date (one transaction); see :func:`aggregate`."""
        ...

    def totals(self) -> dict[str, MetricTotals]: ...

    def watermark(self) -> datetime | None:
        """The newest ``recorded_at`` the aggregation has read (None before its first run)."""
        ...

    def served_since(
        self, since: datetime, variants: Sequence[str], bucket_seconds: int
    ) -> dict[str, int]:
        """Requests routed to each variant from ``since`` on (failed ones included)."""
        ...

    def users_since(self, since: datetime, variants: Sequence[str]) -> dict[str, int]:
        """The distinct users each variant served from ``since`` on."""
        ...

    def latency_percentiles(
        self, since: datetime, variants: Sequence[str]
    ) -> dict[str, tuple[float | None, float | None]]:
        """(p50, p95) in ms of each variant's generations created from ``since`` on."""
        ...


class ExperimentStateStore(Protocol):
    def weights_in_force(self) -> WeightsInForce | None: ...

    def save_weights_in_force(self, state: WeightsInForce) -> None: ...

    def acquire_lease(self, owner: str, seconds: float) -> bool:
        """Hold the experiment for ``seconds`` unless another live lease holds it."""
        ...

    def release_lease(self, owner: str) -> None: ...


class StoredDecision(Protocol):
    """A decision as the database keeps it."""

    @property
    def id(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def weights(self) -> dict[str, float]: ...
    @property
    def statistics(self) -> dict[str, Any]: ...
    @property
    def reason(self) -> str: ...
    @property
    def applied(self) -> bool: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def changed(self) -> bool: ...
    @property
    def winner(self) -> str | None: ...
    @property
    def frozen(self) -> bool: ...
    @property
    def sequential_state(self) -> dict[str, Any] | None: ...
    @property
    def weights_before(self) -> dict[str, float] | None: ...
    @property
    def outcome(self) -> str | None: ...


class DecisionStore(Protocol):
    def record(
        self,
        *,
        policy: str,
        weights: Mapping[str, float],
        statistics: Mapping[str, Any],
        reason: str,
        applied: bool,
        decision_id: str | None = None,
        created_at: datetime | None = None,
        changed: bool = False,
        winner: str | None = None,
        frozen: bool = False,
        sequential_state: Mapping[str, Any] | None = None,
        weights_before: Mapping[str, float] | None = None,
        outcome: str | None = None,
    ) -> StoredDecision: ...

    def latest(self) -> StoredDecision | None: ...

    def get(self, decision_id: str) -> StoredDecision | None: ...


class ExperimentDatabase(Protocol):
    """What the engine needs of the database (``tweetgen.adapters.database.Database``)."""

    @property
    def metrics(self) -> MetricsStore: ...
    @property
    def experiment(self) -> ExperimentStateStore: ...
    @property
    def decisions(self) -> DecisionStore: ...


class TrafficControl(Protocol):
    """The endpoint's control plane (``tweetgen.adapters.sagemaker.SageMakerEndpoints``)."""

    def describe_endpoint(self, name: str) -> EndpointState | None: ...

    def update_weights(self, name: str, weights: Mapping[str, float]) -> None:
        """Set the variants' weights; raises :class:`WeightUpdateRefused` when refused."""
        ...


# --------------------------------------------------------------------------- aggregate


def aggregate(
    metrics: MetricsStore, settings: AggregationSettings | None = None, *, full: bool = False
) -> AggregationReport:
    """Bring the per-variant buckets up to date.

    Incremental: the buckets that rows recorded since the last run (less the overlap) fall
    in are recomputed from all of their rows, feedback in the bucket of its generation once
    both are recorded; failed requests count in the bucket of the failure. Recomputing a
    bucket replaces it, so a row read twice counts once. ``full``: every bucket from scratch
    (also what the first run does).
    """
    settings = settings or AggregationSettings()
    return metrics.aggregate(
        bucket_seconds=settings.bucket_seconds, overlap=settings.overlap, full=full
    )


# --------------------------------------------------------------------------- decide


def _now() -> datetime:
    return datetime.now(UTC)


def _shares(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(max(0.0, w) for w in weights.values())
    if total <= 0:
        return {name: 1.0 / len(weights) for name in weights} if weights else {}
    return {name: max(0.0, w) / total for name, w in weights.items()}


def _same_split(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    if set(a) != set(b):
        return False
    shares_a, shares_b = _shares(a), _shares(b)
    return all(abs(shares_a[name] - shares_b[name]) < _SAME_SHARE for name in shares_a)


def snapshots(
    metrics: MetricsStore,
    variants: Sequence[str],
    settings: AggregationSettings,
    *,
    weights_since: datetime,
    now: datetime,
) -> tuple[dict[str, VariantSnapshot], dict[str, int]]:
    """Each variant's snapshot for :func:`decide`, and the requests served since the weights."""
    totals = metrics.totals()
    counted_from = weights_since + timedelta(seconds=settings.weights_settle_seconds)
    since_weights = (
        metrics.served_since(counted_from, variants, settings.bucket_seconds)
        if counted_from <= now
        else {}
    )
    # The sample-ratio check counts users: the assignment randomises users, not requests, and
    # a few users who ask a lot would make a right split look wrong.
    users_from = max(counted_from, now - timedelta(seconds=settings.srm_window_seconds))
    users = metrics.users_since(users_from, variants) if counted_from <= now else {}
    latency = metrics.latency_percentiles(
        now - timedelta(seconds=settings.latency_window_seconds), variants
    )
    result = {}
    for name in variants:
        total = totals.get(name, MetricTotals())
        p50, p95 = latency.get(name, (None, None))
        result[name] = VariantSnapshot(
            served=total.served,
            feedback_count=total.feedback_count,
            positive_count=total.positive_count,
            reward_sum=total.reward_sum,
            errors=total.errors,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            served_since_weights=since_weights.get(name, 0),
            users_since_weights=users.get(name, 0),
        )
    return result, {name: since_weights.get(name, 0) for name in variants}


@dataclass(frozen=True)
class ExperimentRun:
    """What one run of the engine did: the aggregation, the decision recorded (if any),
    whether new weights reached the endpoint, and in words what happened."""

    aggregation: AggregationReport | None
    decision: StoredDecision | None
    applied: bool
    outcome: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        decision = self.decision
        return {
            "aggregation": None if self.aggregation is None else self.aggregation.as_dict(),
            "decision": None if decision is None else decision_summary(decision),
            "applied": self.applied,
            "outcome": self.outcome,
            **self.extra,
        }


def decision_summary(decision: StoredDecision) -> dict[str, Any]:
    """A recorded decision without its statistics, as the API and the CLI show it."""
    return {
        "id": decision.id,
        "created_at": decision.created_at.isoformat(),
        "policy": decision.policy,
        "weights": dict(decision.weights),
        "weights_before": None
        if decision.weights_before is None
        else dict(decision.weights_before),
        "changed": decision.changed,
        "applied": decision.applied,
        "outcome": decision.outcome,
        "winner": decision.winner,
        "frozen": decision.frozen,
        "reason": decision.reason,
    }


def _previous(record: StoredDecision | None) -> Decision | None:
    if record is None:
        return None
    return Decision(
        policy=record.policy,
        weights=dict(record.weights),
        changed=record.changed,
        reason=record.reason,
        winner=record.winner,
        frozen=record.frozen,
        statistics=dict(record.statistics),
        sequential_state=dict(record.sequential_state or {}),
    )


def _apply(
    control: TrafficControl, endpoint: EndpointState, decision: Decision
) -> tuple[bool, str]:
    if not decision.changed:
        return False, "nothing to apply: the decided weights are the ones in force"
    if endpoint.status != IN_SERVICE:
        return False, (
            f"not applied: endpoint {endpoint.name} is {endpoint.status}, and weights change "
            "only while it is InService; the next run decides again"
        )
    try:
        control.update_weights(endpoint.name, decision.weights)
    except WeightUpdateRefused as exc:
        return False, f"not applied: SageMaker refused the new weights: {exc}"
    return True, "applied with UpdateEndpointWeightsAndCapacities"


def run_experiment(
    database: ExperimentDatabase,
    control: TrafficControl,
    endpoint_name: str,
    settings: ExperimentSettings,
    aggregation: AggregationSettings | None = None,
    *,
    run_id: str | None = None,
    full: bool = False,
    clock: Callable[[], datetime] = _now,
) -> ExperimentRun:
    """Aggregate, decide, record and apply (see the module's docstring).

    ``run_id`` (a scheduled event's id) names the decision: a run whose id already has a
    decision does nothing. ``full`` recomputes every bucket first.
    """
    aggregation = aggregation or AggregationSettings()
    if run_id:
        done = database.decisions.get(run_id)
        if done is not None:
            return ExperimentRun(None, done, False, f"run {run_id} was already decided")
    owner = run_id or uuid.uuid4().hex
    if not database.experiment.acquire_lease(owner, aggregation.lease_seconds):
        return ExperimentRun(None, None, False, "another run holds the experiment: skipped")
    try:
        return _run(database, control, endpoint_name, settings, aggregation, run_id, full, clock)
    finally:
        database.experiment.release_lease(owner)


def _run(
    database: ExperimentDatabase,
    control: TrafficControl,
    endpoint_name: str,
    settings: ExperimentSettings,
    aggregation: AggregationSettings,
    run_id: str | None,
    full: bool,
    clock: Callable[[], datetime],
) -> ExperimentRun:
    started = time.perf_counter()
    report = aggregate(database.metrics, aggregation, full=full)
    endpoint = control.describe_endpoint(endpoint_name)
    if endpoint is None:
        return ExperimentRun(
            report, None, False, f"endpoint {endpoint_name} does not exist yet: nothing to decide"
        )
    weights = {v.name: v.current_weight for v in endpoint.variants}
    known = {name: float(w) for name, w in weights.items() if w is not None}
    if not known or len(known) != len(weights):
        return ExperimentRun(
            report,
            None,
            False,
            f"endpoint {endpoint_name} reports no current weight for every variant "
            f"({weights}): nothing to decide",
        )
    now = clock()
    state = database.experiment.weights_in_force()
    if state is None or not _same_split(state.weights, known):
        # Set by this engine, a rollout or by hand: the endpoint's last change is when.
        state = WeightsInForce(known, min(endpoint.last_modified or now, now).astimezone(UTC))
        database.experiment.save_weights_in_force(state)
    variants = list(known)
    snaps, since_weights = snapshots(
        database.metrics, variants, aggregation, weights_since=state.since, now=now
    )
    previous = database.decisions.latest()
    decision = decide(
        snaps,
        known,
        settings,
        sequential_state=None if previous is None else previous.sequential_state,
        previous=_previous(previous),
    )
    applied, outcome = _apply(control, endpoint, decision)
    if applied:
        database.experiment.save_weights_in_force(WeightsInForce(dict(decision.weights), now))
    statistics = {
        **decision.statistics,
        "endpoint_status": endpoint.status,
        "weights_since": state.since.isoformat(),
        "served_since_weights": since_weights,
        "users_since_weights": {name: snap.users_since_weights for name, snap in snaps.items()},
        "latency_window_seconds": aggregation.latency_window_seconds,
        "metrics_as_of": iso(report.watermark),
    }
    record = database.decisions.record(
        policy=decision.policy,
        weights=decision.weights,
        statistics=statistics,
        reason=decision.reason,
        applied=applied,
        decision_id=run_id,
        created_at=now,
        changed=decision.changed,
        winner=decision.winner,
        frozen=decision.frozen,
        sequential_state=decision.sequential_state,
        weights_before=_shares(known),
        outcome=outcome,
    )
    return ExperimentRun(
        report, record, applied, outcome, {"seconds": round(time.perf_counter() - started, 4)}
    )


# --------------------------------------------------------------------------- status


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def experiment_status(
    database: ExperimentDatabase,
    endpoint_name: str,
    in_service: Sequence[ServingVariant] | None,
) -> dict[str, Any]:
    """``GET /experiment`` and ``tweetgen experiment status``.

    Per variant: the weight now and the model version (from ``in_service``: the endpoint's
    variants; None when the endpoint cannot be asked, then the last weights seen), the
    figures as of the last aggregation (``metrics_as_of``), and from the last decision
    (``statistics_as_of``) P(best), the expected loss, the posterior mean, the lift interval
    and the recent latency percentiles; then the sequential tests, the sample-ratio check and
    the last decision. Variants that served before but left the endpoint are listed with
    weight 0. Statistics are null until the first decision.
    """
    totals = database.metrics.totals()
    last = database.decisions.latest()
    statistics: Mapping[str, Any] = last.statistics if last is not None else {}
    stats_rows: Mapping[str, Mapping[str, Any]] = statistics.get("variants") or {}
    lift: Mapping[str, Mapping[str, Any]] = statistics.get("lift") or {}
    if in_service is not None:
        weights = {v.name: v.weight for v in in_service}
        versions: dict[str, str | None] = {v.name: v.model_version for v in in_service}
    else:
        state = database.experiment.weights_in_force()
        weights = dict(state.weights) if state is not None else {}
        versions = {}
    shares = _shares(weights)
    rows = []
    for name in sorted(set(weights) | set(totals) | set(stats_rows)):
        total = totals.get(name, MetricTotals())
        stats = stats_rows.get(name) or {}
        posterior = stats.get("posterior") or {}
        rows.append(
            {
                "variant": name,
                "in_service": name in weights,
                "model_version": versions.get(name),
                "weight": weights.get(name, 0.0),
                "traffic_share": round(shares.get(name, 0.0), 6),
                "served": total.served,
                "feedback": total.feedback_count,
                "positive": total.positive_count,
                "like_rate": _ratio(total.positive_count, total.feedback_count),
                "mean_reward": _ratio(total.reward_sum, total.feedback_count),
                "errors": total.errors,
                "error_rate": _ratio(total.errors, total.served),
                "latency_p50_ms": stats.get("latency_p50_ms"),
                "latency_p95_ms": stats.get("latency_p95_ms"),
                "p_best": stats.get("p_best"),
                "expected_loss": stats.get("expected_loss"),
                "posterior_mean": posterior.get("mean"),
                "lift": lift.get(name),
            }
        )
    watermark = database.metrics.watermark()
    return {
        "endpoint_name": endpoint_name,
        "policy": None if last is None else last.policy,
        "metrics_as_of": iso(watermark),
        "statistics_as_of": None if last is None else last.created_at.isoformat(),
        "control": statistics.get("control"),
        "variants": rows,
        "sequential": dict(statistics.get("sequential") or {}),
        "srm": statistics.get("srm"),
        "served_since_weights": statistics.get("served_since_weights"),
        "weights_since": statistics.get("weights_since"),
        "guardrails": dict(statistics.get("guardrails") or {}),
        "notes": list(statistics.get("notes") or []),
        "last_decision": None if last is None else decision_summary(last),
    }
