"""The GraphQL front door: AppSync resolver arguments in, ``graphql/schema.graphql`` shapes out.

The GraphQL function resolves each root field with the same services as the REST functions;
this module only translates. Arguments become the same request models (so the same bounds
and the same reasons apply), records become the schema's camelCase types, and a refused
request raises an exception whose class name AppSync reports as the error's ``errorType``
(``RequestRejected``, ``UnknownGeneration``, ``ServiceUnavailable``, ``QueueError``,
``EndpointError``) with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tweetgen.domain.serving import FeedbackRequest, GenerateRequest
from tweetgen.services.serving import (
    FeedbackAccepted,
    RequestRejected,
    Served,
    ServiceError,
    ServingVariant,
)

if TYPE_CHECKING:  # records only: the mutations need no database driver
    from .database import Decision, Feedback, Generation, ModelVersion, Rollout

__all__ = [
    "MAX_LIMIT",
    "InternalFailure",
    "as_refusal",
    "decision",
    "experiment",
    "feedback",
    "feedback_receipt",
    "feedback_request",
    "generate_request",
    "generation",
    "limit",
    "model_version",
    "rollout",
    "served_generation",
    "timestamp",
    "variant",
]

#: The most items one list query returns.
MAX_LIMIT = 100

# GraphQL argument → request model field.
_GENERATE_ARGUMENTS = {
    "prompt": "prompt",
    "maxNewTokens": "max_new_tokens",
    "temperature": "temperature",
    "topK": "top_k",
    "seed": "seed",
    "userId": "user_id",
}
_FEEDBACK_ARGUMENTS = {"reward": "reward", "rating": "reward", "userId": "user_id"}


class InternalFailure(Exception):
    """Anything that is not a refusal: the client learns the request id, the logs the rest."""


def as_refusal(error: ServiceError) -> ServiceError:
    """The same error with its details in the message: AppSync shows only the message.

    A request the model refused (``ModelRefusedRequest``) is a ``RequestRejected`` here, one of
    the error types the schema documents, as it is a 422 to a REST client.
    """
    kind = RequestRejected if isinstance(error, RequestRejected) else type(error)
    if not error.details:
        return error if kind is type(error) else kind(error.reason)
    return kind(f"{error.reason}: {'; '.join(error.details)}", error.details)


def _rejected(error: ValidationError, names: Mapping[str, str]) -> RequestRejected:
    """pydantic's errors as one refusal naming the GraphQL arguments."""
    argument_of = {field: argument for argument, field in names.items()}
    details = []
    for problem in error.errors(include_url=False):
        location = [str(part) for part in problem.get("loc", ())]
        name = argument_of.get(location[0], location[0]) if location else "arguments"
        details.append(f"{name}: {problem.get('msg')}")
    return RequestRejected("the arguments are not valid", details)


def _present(arguments: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The arguments that were given (GraphQL passes an omitted or null argument as null)."""
    return {name: arguments[name] for name in names if arguments.get(name) is not None}


def generate_request(arguments: Mapping[str, Any]) -> GenerateRequest:
    """``Mutation.generate``'s arguments as the REST API's request (its defaults and bounds)."""
    given = _present(arguments, _GENERATE_ARGUMENTS)
    try:
        return GenerateRequest(
            **{_GENERATE_ARGUMENTS[name]: value for name, value in given.items()}
        )
    except ValidationError as exc:
        raise _rejected(exc, _GENERATE_ARGUMENTS) from None


def feedback_request(arguments: Mapping[str, Any]) -> FeedbackRequest:
    """``Mutation.sendFeedback``'s arguments: exactly one of ``reward`` and ``rating``."""
    given = _present(arguments, _FEEDBACK_ARGUMENTS)
    if ("reward" in given) == ("rating" in given):
        which = "both" if "reward" in given else "neither"
        raise RequestRejected(
            f"give exactly one of reward ('like' or 'dislike') and rating (1 to 5), not {which}"
        )
    names = {"rating" if "rating" in given else "reward": "reward", "userId": "user_id"}
    try:
        return FeedbackRequest(**{names[name]: value for name, value in given.items()})
    except ValidationError as exc:
        raise _rejected(exc, names) from None


def limit(arguments: Mapping[str, Any], default: int = 20) -> int:
    """A list query's ``limit``: 1 to :data:`MAX_LIMIT`."""
    value = arguments.get("limit")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise RequestRejected(f"limit must be between 1 and {MAX_LIMIT}, got {value!r}")
    return value


# --------------------------------------------------------------------------- shapes


def timestamp(moment: datetime | str | None) -> str | None:
    """An AWSDateTime: ISO 8601 in UTC with milliseconds and ``Z`` (from a datetime or ISO text)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def served_generation(served: Served) -> dict[str, Any]:
    return {
        "generationId": served.generation_id,
        "text": served.text,
        "variant": served.variant,
        "modelVersion": served.model_version,
        "latencyMs": round(served.latency_ms, 3),
        "userId": served.user_id,
    }


def generation(record: Generation) -> dict[str, Any]:
    parameters = record.parameters
    return {
        "id": record.id,
        "prompt": record.prompt,
        "text": record.text,
        "variant": record.variant,
        "modelVersion": record.model_version,
        "parameters": {
            "maxNewTokens": parameters.get("max_new_tokens"),
            "temperature": parameters.get("temperature"),
            "topK": parameters.get("top_k"),
            "seed": parameters.get("seed"),
        },
        "latencyMs": record.latency_ms,
        "createdAt": timestamp(record.created_at),
    }


def feedback_receipt(accepted: FeedbackAccepted) -> dict[str, Any]:
    return {
        "feedbackId": accepted.feedback_id,
        "generationId": accepted.generation_id,
        "variant": accepted.variant,
        "reward": accepted.reward,
        "status": "accepted",
    }


def feedback(record: Feedback) -> dict[str, Any]:
    return {
        "id": record.id,
        "generationId": record.generation_id,
        "variant": record.variant,
        "reward": record.reward,
        "rawValue": record.raw_value,
        "createdAt": timestamp(record.created_at),
    }


def variant(serving: ServingVariant) -> dict[str, Any]:
    return {"name": serving.name, "weight": serving.weight, "modelVersion": serving.model_version}


def model_version(record: ModelVersion) -> dict[str, Any]:
    return {
        "variant": record.variant,
        "version": record.version,
        "kind": record.kind,
        "s3Uri": record.s3_uri,
        "offlineMetrics": record.offline_metrics,
        "metadata": record.metadata,
        "createdAt": timestamp(record.created_at),
        "registeredAt": timestamp(record.registered_at),
    }


def rollout(record: Rollout) -> dict[str, Any]:
    return {
        "id": record.id,
        "variant": record.variant,
        "version": record.version,
        "status": record.status.upper(),
        "reason": record.reason,
        "steps": record.steps,
        "startedAt": timestamp(record.started_at),
        "finishedAt": timestamp(record.finished_at),
        "durationSeconds": record.duration_s,
    }


def _weights(weights: Mapping[str, float] | None) -> list[dict[str, Any]] | None:
    if weights is None:
        return None
    return [{"variant": name, "weight": weight} for name, weight in sorted(weights.items())]


def decision(value: Decision | Mapping[str, Any]) -> dict[str, Any]:
    """A recorded decision, or the summary of one (``last_decision``: no statistics)."""
    fields: Mapping[str, Any] = (
        value
        if isinstance(value, Mapping)
        else {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    )
    return {
        "id": fields["id"],
        "policy": fields["policy"],
        "weights": _weights(fields["weights"]),
        "weightsBefore": _weights(fields.get("weights_before")),
        "changed": fields.get("changed"),
        "applied": fields["applied"],
        "outcome": fields.get("outcome"),
        "winner": fields.get("winner"),
        "frozen": fields.get("frozen"),
        "reason": fields["reason"],
        "statistics": fields.get("statistics"),
        "createdAt": timestamp(fields["created_at"]),
    }


def _lift(lift: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not lift:
        return None
    return {key: lift.get(key) for key in ("versus", "median", "low", "high", "level")}


def _experiment_variant(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "variant": row["variant"],
        "inService": bool(row.get("in_service")),
        "modelVersion": row.get("model_version"),
        "weight": row.get("weight") or 0.0,
        "trafficShare": row.get("traffic_share") or 0.0,
        "served": row.get("served") or 0,
        "feedback": row.get("feedback") or 0,
        "positive": row.get("positive") or 0,
        "likeRate": row.get("like_rate"),
        "meanReward": row.get("mean_reward"),
        "errors": row.get("errors"),
        "errorRate": row.get("error_rate"),
        "latencyP50Ms": row.get("latency_p50_ms"),
        "latencyP95Ms": row.get("latency_p95_ms"),
        "probabilityBest": row.get("p_best"),
        "expectedLoss": row.get("expected_loss"),
        "posteriorMean": row.get("posterior_mean"),
        "lift": _lift(row.get("lift")),
    }


def _sequential_tests(tests: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "pair": pair,
            "differenceOf": test.get("difference_of") or " - ".join(reversed(pair.split("|"))),
            "difference": test.get("difference"),
            "pValue": test.get("p_value"),
            "ciLow": test.get("ci_low"),
            "ciHigh": test.get("ci_high"),
            "looks": test.get("looks"),
            "significant": bool(test.get("significant")),
        }
        for pair, test in sorted(tests.items())
    ]


def _sample_ratio(srm: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if srm is None:
        return None
    return {
        "statistic": srm.get("statistic"),
        "df": srm.get("df"),
        "pValue": srm.get("p_value"),
        "flagged": bool(srm.get("flagged")),
        "threshold": srm.get("threshold"),
    }


def experiment(status: Mapping[str, Any]) -> dict[str, Any]:
    """``Query.experiment`` from the experiment's status, as ``GET /experiment`` answers it:
    ``endpoint_name``, the ``variants`` rows, and where known ``policy``, ``metrics_as_of``,
    ``statistics_as_of``, ``control``, ``sequential`` (pair → test), ``srm``, ``guardrails``
    (variant → reasons), ``notes`` and ``last_decision`` (a record or its summary)."""
    rows: Sequence[Mapping[str, Any]] = status.get("variants") or []
    guardrails: Mapping[str, Sequence[str]] = status.get("guardrails") or {}
    last = status.get("last_decision")
    return {
        "endpointName": status["endpoint_name"],
        "policy": status.get("policy"),
        "metricsAsOf": timestamp(status.get("metrics_as_of")),
        "statisticsAsOf": timestamp(status.get("statistics_as_of")),
        "control": status.get("control"),
        "variants": [_experiment_variant(row) for row in rows],
        "sequentialTests": _sequential_tests(status.get("sequential") or {}),
        "sampleRatio": _sample_ratio(status.get("srm")),
        "guardrails": [
            {"variant": name, "reasons": list(reasons)}
            for name, reasons in sorted(guardrails.items())
        ],
        "notes": list(status.get("notes") or []),
        "lastDecision": None if last is None else decision(last),
    }
