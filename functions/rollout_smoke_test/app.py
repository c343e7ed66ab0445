"""Rollout task "SmokeTest": the new variant must answer a fixed request with a generation.

Raises ``SmokeTestFailed`` (the state machine then rolls the endpoint back).
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.sagemaker import SageMakerEndpoints, SageMakerRuntime
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.rollout import RolloutSettings, SmokeTestFailed, smoke_test

logger = Logger()
tracer = new_tracer()
metrics = Metrics()

SETTINGS = RolloutSettings.from_environment()
ENDPOINTS = SageMakerEndpoints.from_environment()
RUNTIME = SageMakerRuntime.from_environment()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    variant, model = event["variant"], event["model_name"]
    logger.append_keys(variant=variant, model=model)
    metrics.add_dimension(name="Variant", value=variant)
    try:
        result = smoke_test(
            endpoint_name=SETTINGS.endpoint_name,
            variant=variant,
            model=model,
            endpoints=ENDPOINTS,
            invoker=RUNTIME,
        )
    except SmokeTestFailed as exc:
        metrics.add_metric(name="SmokeTestsFailed", unit=MetricUnit.Count, value=1)
        logger.warning("smoke test failed", extra={"cause": str(exc)})
        raise
    metrics.add_metric(
        name="SmokeTestLatency", unit=MetricUnit.Milliseconds, value=result["latency_ms"]
    )
    logger.info("smoke test passed", extra={"latency_ms": result["latency_ms"]})
    return result


coldstart.setup_done()
