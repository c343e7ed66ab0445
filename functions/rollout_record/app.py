"""Rollout task "Record": keep the model version and the rollout's steps and outcome.

On success it then deletes endpoint configs and models older than the last ``KEEP_VERSIONS``
and, where ``SCALING_MAX_INSTANCES`` is set (prod on instances), attaches each variant's
target-tracking scaling policy (a new variant exists only now).
Records go to the database (``DATABASE_URL`` or ``DATABASE_SECRET_ARN``), else to the JSON-lines
file ``ROLLOUT_LOG_PATH`` when set, else to this function's logs.
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.autoscaling import EndpointAutoScaling
from tweetgen.adapters.rollout_log import JsonLinesRecorder, LogRecorder
from tweetgen.adapters.sagemaker import SageMakerEndpoints
from tweetgen.adapters.stepfunctions import RolloutExecutions
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.rollout import (
    RolloutRecorder,
    RolloutSettings,
    clean_up_versions,
    record_rollout,
    scale_variants,
)

logger = Logger()
tracer = new_tracer()
metrics = Metrics()

SETTINGS = RolloutSettings.from_environment()
ENDPOINTS = SageMakerEndpoints.from_environment()
EXECUTIONS = RolloutExecutions.from_environment()


def _recorder() -> RolloutRecorder:
    """The database when one is configured, else a JSON-lines file, else the logs."""
    if os.environ.get("DATABASE_URL") or os.environ.get("DATABASE_SECRET_ARN"):
        from tweetgen.adapters.database import Database, DatabaseRolloutRecorder

        database = Database.from_environment()
        database.migrate()
        return DatabaseRolloutRecorder(database.model_versions, database.rollouts)
    path = os.environ.get("ROLLOUT_LOG_PATH", "").strip()
    return JsonLinesRecorder(path) if path else LogRecorder(logger)


RECORDER = _recorder()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rollout, succeeded = event["rollout"], bool(event["succeeded"])
    logger.append_keys(execution_id=rollout.get("execution_id"))
    outcome = record_rollout(
        rollout,
        succeeded=succeeded,
        recorder=RECORDER,
        history=EXECUTIONS,
        endpoints=ENDPOINTS,
        settings=SETTINGS,
    )
    metrics.add_metric(
        name="RolloutsSucceeded" if succeeded else "RolloutsFailed", unit=MetricUnit.Count, value=1
    )
    metrics.add_metric(name="RolloutDuration", unit=MetricUnit.Seconds, value=outcome["duration_s"])
    logger.info("rollout recorded", extra=outcome)
    if succeeded and outcome["status"] == "succeeded":
        try:
            previous = (rollout.get("plan") or {}).get("previous_config")
            outcome["deleted"] = clean_up_versions(
                endpoints=ENDPOINTS, settings=SETTINGS, protect=[previous] if previous else []
            )
        except Exception:
            # Old versions left behind cost storage, not correctness: never fail the rollout.
            logger.exception("cleaning up old versions failed")
            outcome["deleted"] = []
    if succeeded and SETTINGS.scaling is not None:
        try:
            outcome["scaled"] = scale_variants(
                endpoints=ENDPOINTS,
                scaler=EndpointAutoScaling.from_environment(),
                settings=SETTINGS,
            )
        except Exception:
            # The model is live and serving: a missing policy needs a look, not a rollback.
            logger.exception("attaching the scaling policies failed")
            metrics.add_metric(name="ScalingPolicyFailures", unit=MetricUnit.Count, value=1)
            outcome["scaled"] = []
    return outcome


coldstart.setup_done()
