"""The serving services as the Lambda functions build and measure them.

``POST /generations`` (generate), ``POST /generations/{id}/feedback`` (feedback) and the GraphQL
mutations serve the same requests, so they build the same services here, and report the same
metrics and log lines for what they served. Every function builds its services on first use,
not at import: a missing secret or queue is an answered error of that request, not a failed
cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from tweetgen.adapters.sagemaker import (
    EndpointVariants,
    SageMakerRuntime,
    ServingEndpoint,
    endpoint_name,
    endpoint_variants,
)
from tweetgen.adapters.secrets import read_signing_key
from tweetgen.adapters.sqs import SqsEventQueue
from tweetgen.domain.serving import (
    POSITIVE_REWARD,
    FeedbackRequest,
    GenerateRequest,
    GenerationIds,
    ServingLimits,
)
from tweetgen.services.serving import (
    EndpointError,
    FeedbackAccepted,
    FeedbackService,
    GenerationService,
    ModelRefusedRequest,
    Served,
)


def generation_ids(env: Mapping[str, str] = os.environ) -> GenerationIds:
    """Signs and checks generation ids with the key in ``GENERATION_ID_SECRET_ARN``."""
    return GenerationIds(read_signing_key(env["GENERATION_ID_SECRET_ARN"]))


def generation_service(
    env: Mapping[str, str] = os.environ,
    *,
    variants: EndpointVariants | None = None,
    ids: GenerationIds | None = None,
) -> GenerationService:
    """Generations from the endpoint, queued for the recorder; ``variants``/``ids`` share
    what a caller has already built."""
    name = endpoint_name(env)
    return GenerationService(
        endpoint=ServingEndpoint(SageMakerRuntime.from_environment(), name),
        variants=variants or endpoint_variants(env),
        queue=SqsEventQueue.from_environment(),
        ids=ids or generation_ids(env),
        limits=ServingLimits.from_environment(env),
        assignment_salt=name,
    )


def feedback_service(
    env: Mapping[str, str] = os.environ, *, ids: GenerationIds | None = None
) -> FeedbackService:
    """Feedback checked against its signed generation id and queued for the recorder."""
    return FeedbackService(queue=SqsEventQueue.from_environment(), ids=ids or generation_ids(env))


def generate_counted(
    service: GenerationService, request: GenerateRequest, metrics: Metrics, logger: Logger
) -> Served:
    """``service.generate(request)``, its latency and count per variant in the metrics, or the
    endpoint's failure counted and logged (and raised)."""
    try:
        served = service.generate(request)
    except EndpointError as exc:
        if exc.variant is not None:
            metrics.add_dimension(name="variant", value=exc.variant)
        metrics.add_metric(name="GenerationErrors", unit=MetricUnit.Count, value=1)
        logger.warning("the endpoint failed", extra={"variant": exc.variant, "reason": exc.reason})
        raise
    except ModelRefusedRequest as exc:
        # Not the variant's failure, but worth seeing: a variant with a shorter context
        # refuses prompts that another serves.
        if exc.variant is not None:
            metrics.add_dimension(name="variant", value=exc.variant)
        metrics.add_metric(name="ModelRefusals", unit=MetricUnit.Count, value=1)
        logger.info(
            "the model refused the request",
            extra={"variant": exc.variant, "reason": "; ".join(exc.details)},
        )
        raise
    metrics.add_dimension(name="variant", value=served.variant)
    metrics.add_metric(name="Generations", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=served.latency_ms)
    logger.info(
        "generated", extra={"variant": served.variant, "generation_id": served.generation_id}
    )
    return served


def submit_counted(
    service: FeedbackService,
    generation_id: str,
    request: FeedbackRequest,
    idempotency_key: str | None,
    metrics: Metrics,
    logger: Logger,
) -> FeedbackAccepted:
    """``service.submit(...)``, counted per variant (and as positive when it is) and logged."""
    accepted = service.submit(generation_id, request, idempotency_key=idempotency_key)
    metrics.add_dimension(name="variant", value=accepted.variant)
    metrics.add_metric(name="FeedbackAccepted", unit=MetricUnit.Count, value=1)
    if accepted.reward >= POSITIVE_REWARD:
        metrics.add_metric(name="PositiveFeedback", unit=MetricUnit.Count, value=1)
    logger.info("feedback queued", extra=accepted.as_dict())
    return accepted
