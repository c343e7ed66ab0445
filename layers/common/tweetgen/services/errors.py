"""The serving service's errors and what it knows of a variant, free of pydantic.

Kept apart from :mod:`tweetgen.services.serving` so that functions which only talk to the
endpoint (the rollout's, the aggregation) raise and read these without importing the request
models and pydantic at cold start. :mod:`tweetgen.services.serving` exports them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DATABASE_UNREACHABLE",
    "MODEL_REFUSAL_PREFIX",
    "EndpointError",
    "ModelRefusedRequest",
    "QueueError",
    "RequestRejected",
    "ServiceError",
    "ServiceUnavailable",
    "ServingVariant",
    "UnknownGeneration",
    "shown_id",
]


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """A request that cannot be served; ``status`` is the HTTP status it stands for."""

    status = 500

    def __init__(self, reason: str, details: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = list(details)


class RequestRejected(ServiceError):
    status = 422


#: How an artifact's ``code/inference.py`` starts the message of a request it refuses (a prompt
#: too long for the model's context, say). The model server answers every handler exception
#: with a 500, so this prefix is what tells a refused request (the client's to change: 422) from
#: a model that failed (502, counted against its variant).
MODEL_REFUSAL_PREFIX = "request refused: "


class ModelRefusedRequest(RequestRejected):
    """The model refused the request as sent; ``details`` holds the model's reason and
    ``variant`` the production variant that refused (when the request named one)."""

    def __init__(
        self, reason: str, details: Sequence[str] = (), variant: str | None = None
    ) -> None:
        super().__init__(reason, details)
        self.variant = variant


#: How much of a client's identifier an error message repeats.
MAX_SHOWN_ID_CHARS = 100


def shown_id(value: str) -> str:
    """``value`` quoted for an error message, cut to ``MAX_SHOWN_ID_CHARS`` characters: a
    client that sends an id of kilobytes gets a short answer all the same."""
    if len(value) <= MAX_SHOWN_ID_CHARS:
        return repr(value)
    return f"{value[:MAX_SHOWN_ID_CHARS]!r}... ({len(value):,} characters)"


class UnknownGeneration(ServiceError):
    status = 404


class EndpointError(ServiceError):
    """The model endpoint failed or answered something that is not a generation;
    ``variant`` is the production variant that failed, once the service knows it."""

    status = 502
    variant: str | None = None


#: What a client is told while the database cannot be reached (REST's 503, GraphQL's
#: ServiceUnavailable): Aurora resuming from a pause, a failover, a network problem.
DATABASE_UNREACHABLE = "the database is not reachable right now; try again in a few seconds"


class ServiceUnavailable(ServiceError):
    """Nothing can serve right now (no variant in service); the client may retry."""

    status = 503


class QueueError(ServiceUnavailable):
    """The event could not be queued: the request is refused rather than lost."""


@dataclass(frozen=True)
class ServingVariant:
    """A production variant as the generate function sees it."""

    name: str
    weight: float
    model_version: str
