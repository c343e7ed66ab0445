"""Rollout task "Validate": stream the uploaded object through the artifact validator.

Raises ``InvalidModelKey`` or ``ArtifactRejected`` (the state machine's error names) with every
problem found; otherwise returns where the artifact is, its variant, version and metadata.
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.s3 import ArtifactStore
from tweetgen.adapters.sagemaker import SageMakerEndpoints
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.rollout import RolloutError, RolloutSettings
from tweetgen.services.upload import validate_upload

logger = Logger()
tracer = new_tracer()
metrics = Metrics()

SETTINGS = RolloutSettings.from_environment()
STORE = ArtifactStore.from_environment()


class _Models:
    """SageMaker's models, its client made on first use: only an upload of a version without a
    validated copy asks (a client at import would cost every cold start)."""

    endpoints: SageMakerEndpoints | None = None

    def model_data_url(self, name: str) -> str | None:
        if self.endpoints is None:
            self.endpoints = SageMakerEndpoints.from_environment()
        return self.endpoints.model_data_url(name)


MODELS = _Models()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    upload = S3EventBridgeNotificationEvent(event["event"])
    bucket, key = upload.detail.bucket.name, upload.detail.object.key
    logger.append_keys(bucket=bucket, s3_key=key)
    try:
        artifact = validate_upload(bucket, key, source=STORE, models=MODELS, settings=SETTINGS)
    except RolloutError as exc:
        metrics.add_metric(name="ArtifactsRejected", unit=MetricUnit.Count, value=1)
        logger.warning("artifact rejected", extra={"error": type(exc).__name__, "cause": str(exc)})
        raise
    metrics.add_metric(name="ArtifactsAccepted", unit=MetricUnit.Count, value=1)
    logger.info(
        "artifact valid",
        extra={"variant": artifact["variant"], "version": artifact["version"]},
    )
    return artifact


coldstart.setup_done()
