"""Rollout task "Plan": the endpoint config that replaces only this variant's model.

Raises ``RolloutQueued`` / ``EndpointBusy`` while another rollout or update holds the endpoint
(the state machine retries both with backoff), ``EndpointUnusable`` when no update can start.
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.sagemaker import SageMakerEndpoints
from tweetgen.adapters.stepfunctions import RolloutExecutions
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.rollout import RolloutQueued, RolloutSettings, plan_rollout

logger = Logger()
tracer = new_tracer()
metrics = Metrics()

SETTINGS = RolloutSettings.from_environment()
ENDPOINTS = SageMakerEndpoints.from_environment()
EXECUTIONS = RolloutExecutions.from_environment()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    artifact = event["artifact"]
    logger.append_keys(variant=artifact["variant"], version=artifact["version"])
    try:
        plan = plan_rollout(
            artifact,
            execution_id=event["execution_id"],
            started_at=event["started_at"],
            endpoints=ENDPOINTS,
            queue=EXECUTIONS,
            settings=SETTINGS,
        )
    except RolloutQueued as exc:
        logger.info("queued", extra={"cause": str(exc)})
        raise
    logger.info(
        "planned",
        extra={"action": plan["action"], "config": plan["config_name"], "reason": plan["reason"]},
    )
    return plan


coldstart.setup_done()
