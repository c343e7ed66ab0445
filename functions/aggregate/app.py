"""The experiment engine, every minute (EventBridge schedule) and on demand.

Aggregates the events recorded since the last run into the per-variant metrics buckets,
decides the next traffic split with the configured policy (``EXPERIMENT_POLICY`` and the other
``EXPERIMENT_*`` settings), records the decision and, when the weights change and the endpoint
is InService, applies them with ``UpdateEndpointWeightsAndCapacities``.

Events: a scheduled event (its ``id`` names the decision, so a redelivered event does nothing);
anything else runs once more, and ``{"full": true}`` recomputes every bucket first.
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

import dataclasses
import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.database import Database
from tweetgen.adapters.sagemaker import SageMakerEndpoints, endpoint_name
from tweetgen.adapters.tracing import new_tracer
from tweetgen.domain.experiment import ExperimentSettings
from tweetgen.services.experiment import AggregationSettings, run_experiment

logger = Logger()
tracer = new_tracer()
metrics = Metrics()

ENDPOINT_NAME = endpoint_name()
# Read at start-up: a bad EXPERIMENT_* value fails every run loudly, naming the variable.
SETTINGS = ExperimentSettings.from_environment()
AGGREGATION = AggregationSettings.from_environment()
# The lease outlives a run cut short by the timeout by this much at most.
LEASE_MARGIN_S = 5.0


@functools.cache
def database() -> Database:
    return Database.from_environment()


@functools.cache
def endpoints() -> SageMakerEndpoints:
    return SageMakerEndpoints.from_environment()


def _run_id(event: dict[str, Any]) -> str | None:
    """A scheduled event's id: EventBridge may deliver the same event twice."""
    if event.get("detail-type") == "Scheduled Event" and event.get("id"):
        return str(event["id"])
    return None


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = event if isinstance(event, dict) else {}
    remaining_s = context.get_remaining_time_in_millis() / 1000.0
    settings = dataclasses.replace(
        AGGREGATION, lease_seconds=max(1.0, remaining_s + LEASE_MARGIN_S)
    )
    run = run_experiment(
        database(),
        endpoints(),
        ENDPOINT_NAME,
        SETTINGS,
        settings,
        run_id=_run_id(event),
        full=event.get("full") is True,
    )
    answer = run.as_dict()
    if run.aggregation is not None:
        metrics.add_metric(
            name="AggregatedRows",
            unit=MetricUnit.Count,
            value=sum(run.aggregation.rows_read.values()),
        )
        metrics.add_metric(
            name="AggregationTime",
            unit=MetricUnit.Milliseconds,
            value=run.aggregation.seconds * 1000.0,
        )
    if run.decision is not None:
        metrics.add_metric(
            name="WeightsChanged", unit=MetricUnit.Count, value=int(run.decision.changed)
        )
        metrics.add_metric(name="WeightsApplied", unit=MetricUnit.Count, value=int(run.applied))
    logger.info(
        "experiment run",
        extra={
            "outcome": run.outcome,
            "aggregation": answer["aggregation"],
            "decision": answer["decision"],
        },
    )
    return answer


coldstart.setup_done()
