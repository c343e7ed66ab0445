"""AppSync direct Lambda resolvers: every Query and Mutation field of graphql/schema.graphql.

The same services as the REST functions: ``generate`` is ``POST /generations``,
``sendFeedback`` is ``POST /generations/{id}/feedback`` (both only need the endpoint and the
queue), and the queries read what the recorder and the rollouts stored in the database. A
refused request raises, so AppSync answers a GraphQL error whose ``errorType`` is the
exception's name and whose message says what to change; any other failure is reported as
``InternalFailure`` with the request id, its details staying in the logs.
"""

# AppSyncResolver calls a field's function with the field's arguments as keywords and reads
# no annotations, so postponed annotations are fine here (unlike the REST resolver).
from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

import functools
import sys
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import AppSyncResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters import appsync, serving
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.errors import DATABASE_UNREACHABLE
from tweetgen.services.serving import (
    FeedbackService,
    GenerationService,
    ServiceError,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    from tweetgen.adapters.database import Database

logger = Logger()
tracer = new_tracer()
metrics = Metrics()
app = AppSyncResolver()

ENDPOINT_NAME = serving.endpoint_name()


# Built on first use: a missing secret or database is an answered error, not a failed cold
# start, and the mutations never wait for the database.
variants = functools.cache(serving.endpoint_variants)
generation_ids = functools.cache(serving.generation_ids)


@functools.cache
def generations() -> GenerationService:
    return serving.generation_service(variants=variants(), ids=generation_ids())


@functools.cache
def feedback_service() -> FeedbackService:
    return serving.feedback_service(ids=generation_ids())


@functools.cache
def database() -> Database:
    # Imported on first use: the mutations need no database, so a cold start that serves one
    # never loads SQLAlchemy (about a third of this module's import).
    from tweetgen.adapters.database import Database

    return Database.from_environment()


# --------------------------------------------------------------------------- mutations


@app.resolver(type_name="Mutation", field_name="generate")
@tracer.capture_method
def generate(**arguments: Any) -> dict[str, Any]:
    request = appsync.generate_request(arguments)
    served = serving.generate_counted(generations(), request, metrics, logger)
    return appsync.served_generation(served)


@app.resolver(type_name="Mutation", field_name="sendFeedback")
@tracer.capture_method
def send_feedback(**arguments: Any) -> dict[str, Any]:
    request = appsync.feedback_request(arguments)
    key = arguments.get("idempotencyKey")
    if key is None:  # else the header the REST API reads (AppSync lowercases header names)
        key = app.current_event.request_headers.get("idempotency-key")
    generation_id = str(arguments.get("generationId"))
    accepted = serving.submit_counted(
        feedback_service(), generation_id, request, key, metrics, logger
    )
    return appsync.feedback_receipt(accepted)


# --------------------------------------------------------------------------- queries


@app.resolver(type_name="Query", field_name="generation")
@tracer.capture_method
def generation(id: str) -> dict[str, Any] | None:
    record = database().generations.get(id)
    return None if record is None else appsync.generation(record)


@app.resolver(type_name="Query", field_name="feedback")
@tracer.capture_method
def feedback(id: str) -> dict[str, Any] | None:
    record = database().feedback.get(id)
    return None if record is None else appsync.feedback(record)


def _in_service() -> list[Any]:
    try:
        return variants().current()
    except ServiceUnavailable:
        return []  # no endpoint yet: nothing in service


@app.resolver(type_name="Query", field_name="variants")
@tracer.capture_method
def list_variants() -> list[dict[str, Any]]:
    return [appsync.variant(serving) for serving in _in_service()]


@app.resolver(type_name="Query", field_name="modelVersions")
@tracer.capture_method
def model_versions(**arguments: Any) -> list[dict[str, Any]]:
    records = database().model_versions.list(arguments.get("variant"), appsync.limit(arguments))
    return [appsync.model_version(record) for record in records]


@app.resolver(type_name="Query", field_name="rollouts")
@tracer.capture_method
def rollouts(**arguments: Any) -> list[dict[str, Any]]:
    records = database().rollouts.list(arguments.get("variant"), appsync.limit(arguments))
    return [appsync.rollout(record) for record in records]


@app.resolver(type_name="Query", field_name="rollout")
@tracer.capture_method
def rollout(id: str) -> dict[str, Any] | None:
    record = database().rollouts.get(id)
    return None if record is None else appsync.rollout(record)


@app.resolver(type_name="Query", field_name="experiment")
@tracer.capture_method
def experiment() -> dict[str, Any]:
    from tweetgen.services.experiment import experiment_status

    # What GET /experiment answers, in the schema's shape.
    return appsync.experiment(experiment_status(database(), ENDPOINT_NAME, _in_service()))


@app.resolver(type_name="Query", field_name="decisions")
@tracer.capture_method
def decisions(**arguments: Any) -> list[dict[str, Any]]:
    records = database().decisions.list(appsync.limit(arguments))
    return [appsync.decision(record) for record in records]


# --------------------------------------------------------------------------- handler


def _database_unreachable(error: Exception) -> bool:
    """Whether ``error`` is the database's, and says it cannot be reached now."""
    # Only a query that loaded the database layer can have failed on the database.
    if "tweetgen.adapters.database" not in sys.modules:
        return False
    from sqlalchemy.exc import DBAPIError
    from tweetgen.adapters.database import is_unreachable

    return isinstance(error, DBAPIError) and is_unreachable(error)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.APPSYNC_RESOLVER)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    try:
        return app.resolve(event, context)
    except ServiceError as exc:
        logger.info("refused", extra={"error": type(exc).__name__, "reason": exc.reason})
        raise appsync.as_refusal(exc) from None
    except Exception as exc:
        if _database_unreachable(exc):
            # As the REST API's 503: Aurora resuming or failing over, the client may retry.
            logger.warning("the database is unreachable", extra={"reason": str(exc)})
            raise ServiceUnavailable(DATABASE_UNREACHABLE) from None
        logger.exception("the request failed")
        raise appsync.InternalFailure(
            f"the request failed; request id {context.aws_request_id} names it in the logs"
        ) from None


coldstart.setup_done()
