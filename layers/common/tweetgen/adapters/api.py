"""The REST front door: Powertools' API Gateway resolver with this service's error answers.

Every error is JSON ``{"message": ..., "errors": [{"field": ..., "reason": ...}]}`` with the
status the service gave it (:class:`~tweetgen.services.errors.ServiceError`), and request
validation (pydantic models on the route's parameters) answers 422 with one entry per problem.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from tweetgen.services.errors import ServiceError

__all__ = [
    "as_json_request",
    "error_response",
    "json_response",
    "new_resolver",
    "validation_errors",
]

JSON = "application/json"


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=JSON,
        body=json.dumps(body, separators=(",", ":"), default=str),
        headers=dict(headers or {}),
    )


def error_response(
    status: int,
    message: str,
    errors: Sequence[Mapping[str, str | None]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    return json_response(status, {"message": message, "errors": list(errors)}, headers)


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """pydantic's errors as ``{"field", "reason"}`` pairs a client can show."""
    found = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] == "body" and error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error")
            reason = f"the body is not valid JSON ({detail})" if detail else "not valid JSON"
            found.append({"field": "body", "reason": reason})
            continue
        if error.get("type") == "missing" and location == ["body"]:
            found.append({"field": "body", "reason": "a JSON object is required"})
            continue
        found.append({"field": ".".join(location) or "body", "reason": str(error.get("msg"))})
    return found


def as_json_request(event: Mapping[str, Any], empty_body: str | None = None) -> dict[str, Any]:
    """The event with its body read as JSON whatever its Content-Type (this API speaks only
    JSON; ``curl -d`` sends form encoding), and ``empty_body`` in place of a missing body."""
    headers = {
        name: value
        for name, value in (event.get("headers") or {}).items()
        if name.lower() != "content-type"
    }
    multi = {
        name: values
        for name, values in (event.get("multiValueHeaders") or {}).items()
        if name.lower() != "content-type"
    }
    answer = {
        **event,
        "headers": {**headers, "Content-Type": JSON},
        "multiValueHeaders": {**multi, "Content-Type": [JSON]},
    }
    if empty_body is not None and not event.get("body"):
        answer.update(body=empty_body, isBase64Encoded=False)
    return answer


def _raised_reading_json(error: BaseException) -> bool:
    """Whether ``error`` came out of the json module's parser."""
    return any(
        frame.f_code.co_filename.endswith(os.path.join("json", "decoder.py"))
        for frame, _ in traceback.walk_tb(error.__traceback__)
    )


def _raised_decoding_body(error: BaseException) -> bool:
    """Whether ``error`` came out of Powertools decoding a base64 body into text."""
    return any(
        frame.f_code.co_name == "decoded_body"
        for frame, _ in traceback.walk_tb(error.__traceback__)
    )


def unreadable_body_reason(error: ValueError) -> str | None:
    """Why the request's body could not be read, where ``error`` says so; None for an error
    raised anywhere else (a fault, not the request's)."""
    if _raised_decoding_body(error):
        if isinstance(error, UnicodeDecodeError):
            return f"the body is not UTF-8 text (byte 0x{error.object[error.start]:02x})"
        return "the body is not valid base64"
    if _raised_reading_json(error):
        # Python refuses to convert integers of more than 4,300 digits.
        return "the body holds a number too long to read"
    return None


def new_resolver(
    cors_origin: str | None = None, *, validation: bool = True
) -> APIGatewayRestResolver:
    """A resolver that validates requests and answers errors in this service's shape.

    ``cors_origin`` (default: ``CORS_ORIGIN``, else none) is the frontend allowed to call.
    ``validation=False`` is for functions whose routes take no body and no typed parameters
    (path parameters arrive as strings either way): Powertools' validation imports pydantic and
    its OpenAPI models, about as much cold-start time again as the resolver itself.
    """
    origin = cors_origin if cors_origin is not None else os.environ.get("CORS_ORIGIN", "")
    cors = CORSConfig(allow_origin=origin, allow_headers=["Idempotency-Key"]) if origin else None
    app = APIGatewayRestResolver(enable_validation=validation, cors=cors)

    @app.exception_handler(RequestValidationError)
    def _invalid(error: RequestValidationError) -> Response:
        return error_response(422, "the request is not valid", validation_errors(error.errors()))

    def unreadable_body(reason: str) -> Response:
        return error_response(
            422, "the request is not valid", [{"field": "body", "reason": reason}]
        )

    @app.exception_handler(RecursionError)
    def _too_deep(error: RecursionError) -> Response:
        # JSON nested deeper than Python's parser recurses, while the body is read; from
        # anywhere else it is a fault, not the request's.
        if not _raised_reading_json(error):
            raise error
        return unreadable_body("the body is nested too deeply to read")

    @app.exception_handler(ValueError)
    def _unreadable(error: ValueError) -> Response:
        reason = unreadable_body_reason(error)
        if reason is None:
            raise error
        return unreadable_body(reason)

    @app.exception_handler(ServiceError)
    def _refused(error: ServiceError) -> Response:
        details = [{"field": None, "reason": detail} for detail in error.details]
        return error_response(error.status, error.reason, details)

    @app.not_found
    def _no_route(_: Exception) -> Response:
        event = app.current_event
        return error_response(404, f"no route {event.http_method} {event.path}")

    return app
