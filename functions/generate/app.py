"""``POST /generations``: a tweet from the variant this user is assigned to.

Sticky assignment on the endpoint's current weights, ``InvokeEndpoint`` with
``TargetVariant``, then the generation is queued for the recorder. Endpoint failures answer
502 and nothing is recorded as served.
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
from tweetgen.domain.serving import GenerateRequest

logger = Logger()
tracer = new_tracer()
metrics = Metrics()
app = new_resolver()

# Built on first use, so a missing secret is an answered 5xx, not a failed cold start.
service = functools.cache(serving.generation_service)


@app.post("/generations")
@tracer.capture_method
def generate(request: Annotated[GenerateRequest, Body()]):
    served = serving.generate_counted(service(), request, metrics, logger)
    return json_response(201, served.as_dict())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Every field has a default: a POST without a body asks for a tweet from scratch.
    return app.resolve(as_json_request(event, empty_body="{}"), context)


coldstart.setup_done()
