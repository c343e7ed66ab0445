"""``POST /generations/{generation_id}/feedback``: like/dislike or a 1-5 rating, queued (202).

The generation id's signature is checked here, so feedback for an id this service never
issued is refused (404) without asking the database; accepted feedback only needs the queue,
so nothing is lost while the database is paused or down. An ``Idempotency-Key`` header makes
a retried post (the same body) count once; a key reused with another body is another feedback.
"""

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

# No "from __future__ import annotations": the resolver reads the routes' annotations
# through the tracer's wrapper, which cannot resolve postponed (string) annotations. Routes
# carry no return annotation: the resolver would validate their answers against it.

import functools
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters import serving
from tweetgen.adapters.api import as_json_request, json_response, new_resolver
from tweetgen.adapters.tracing import new_tracer
from tweetgen.domain.serving import FeedbackRequest

logger = Logger()
tracer = new_tracer()
metrics = Metrics()
app = new_resolver()


# Built on first use, so a missing secret is an answered 5xx, not a failed cold start.
service = functools.cache(serving.feedback_service)


@app.post("/generations/<generation_id>/feedback")
@tracer.capture_method
def feedback(generation_id: str, request: Annotated[FeedbackRequest, Body()]):
    key = app.current_event.get_header_value("Idempotency-Key")
    accepted = serving.submit_counted(service(), generation_id, request, key, metrics, logger)
    return json_response(202, accepted.as_dict())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(as_json_request(event), context)


coldstart.setup_done()
