"""The serving services as the Lambda functions build them from their environment.

``POST /generations`` (generate), ``POST /generations/{id}/feedback`` (feedback) and the GraphQL
mutations serve the same requests, so they build the same services here. Every function
calls these on first use, not at import: a missing secret or queue is an answered error of
that request, not a failed cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tweetgen.adapters.sagemaker import EndpointVariants, SageMakerRuntime, ServingEndpoint
from tweetgen.adapters.secrets import read_signing_key
from tweetgen.adapters.sqs import SqsEventQueue
from tweetgen.domain.serving import GenerationIds, ServingLimits
from tweetgen.services.serving import FeedbackService, GenerationService

DEFAULT_ENDPOINT = "tweetgen"


def endpoint_name(env: Mapping[str, str] = os.environ) -> str:
    return env.get("ENDPOINT_NAME", DEFAULT_ENDPOINT)


def endpoint_variants(env: Mapping[str, str] = os.environ) -> EndpointVariants:
    """The endpoint's variants and weights, read with ``DescribeEndpoint`` and cached for
    ``VARIANTS_CACHE_SECONDS`` (default 10)."""
    import boto3

    ttl_s = float(env.get("VARIANTS_CACHE_SECONDS", "10"))
    return EndpointVariants(boto3.client("sagemaker"), endpoint_name(env), ttl_s=ttl_s)


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
