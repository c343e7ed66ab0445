"""``GET /generations/{generation_id}`` and ``GET /experiment``: what the database holds.

A generation is readable once the recorder has stored it (usually within a second or two of
``POST /generations``). The experiment's status is as of the last aggregation (the aggregate
function runs every minute): each variant's weight now, its figures, P(best), the sequential
tests, the sample-ratio check and the last decision. While the database is unreachable both
answer 503 with ``Retry-After``.
"""

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

# No "from __future__ import annotations": the resolver reads the routes' annotations
# through the tracer's wrapper, which cannot resolve postponed (string) annotations. Routes
# carry no return annotation: the resolver would validate their answers against it.

import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy.exc import OperationalError
from tweetgen import coldstart
from tweetgen.adapters import sagemaker
from tweetgen.adapters.api import error_response, json_response, new_resolver
from tweetgen.adapters.database import Database, is_unreachable
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.errors import (
    DATABASE_UNREACHABLE,
    ServiceUnavailable,
    UnknownGeneration,
    shown_id,
)
from tweetgen.services.experiment import experiment_status

logger = Logger()
tracer = new_tracer()
metrics = Metrics()
# GET routes with string path parameters only: nothing for pydantic to validate.
app = new_resolver(validation=False)

ENDPOINT_NAME = sagemaker.endpoint_name()


@functools.cache
def database() -> Database:
    return Database.from_environment()


variants = functools.cache(sagemaker.endpoint_variants)

#: What a client is told to wait before it asks again while the database is unreachable.
RETRY_AFTER_S = 5


@app.exception_handler(OperationalError)
def database_unreachable(error: OperationalError):
    # Aurora Serverless resuming from a pause, a failover or a network problem: the client may
    # ask again shortly (feedback and generations are queued meanwhile, never lost). Any other
    # error (a statement the schema refuses) is a fault, not a reason to retry.
    if not is_unreachable(error):
        raise error
    logger.warning("the database is unreachable", extra={"reason": str(error.orig)})
    return error_response(
        503,
        DATABASE_UNREACHABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


@app.get("/generations/<generation_id>")
@tracer.capture_method
def get_generation(generation_id: str):
    generation = database().generations.get(generation_id)
    if generation is None:
        raise UnknownGeneration(
            f"no generation {shown_id(generation_id)} is recorded (a new one takes a few seconds)"
        )
    return json_response(
        200,
        {
            "generation_id": generation.id,
            "text": generation.text,
            "prompt": generation.prompt,
            "variant": generation.variant,
            "model_version": generation.model_version,
            "parameters": generation.parameters,
            "latency_ms": generation.latency_ms,
            "created_at": generation.created_at.isoformat(),
        },
    )


@app.get("/experiment")
@tracer.capture_method
def get_experiment():
    try:
        in_service = variants().current()
    except ServiceUnavailable:
        in_service = []  # no endpoint yet: the figures so far, nothing in service
    return json_response(200, experiment_status(database(), ENDPOINT_NAME, in_service))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


coldstart.setup_done()
