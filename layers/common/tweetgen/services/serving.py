"""Use cases of the serving API: generate, take feedback, read generations back.

The handlers only parse and shape; everything a request means happens here, against ports
(the endpoint, the variants in service, the queue, the database) that adapters implement.
Errors carry the HTTP status they stand for, so every front door (REST, GraphQL, the local
stack) answers the same way.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tweetgen.domain.events import (
    MAX_FAILURE_REASON_CHARS,
    FeedbackEvent,
    GenerationEvent,
    GenerationFailedEvent,
    QueueEvent,
)
from tweetgen.domain.serving import (
    AssignmentError,
    FeedbackRequest,
    GenerateRequest,
    GenerationIds,
    ServingLimits,
    assign_variant,
    new_user_id,
    normalise_reward,
)
from tweetgen.services.errors import (
    EndpointError,
    ModelRefusedRequest,
    QueueError,
    RequestRejected,
    ServiceError,
    ServiceUnavailable,
    ServingVariant,
    UnknownGeneration,
    shown_id,
)

__all__ = [
    "EndpointError",
    "FeedbackAccepted",
    "FeedbackService",
    "GenerationService",
    "ModelRefusedRequest",
    "QueueError",
    "QueueEvent",
    "RequestRejected",
    "Served",
    "ServiceError",
    "ServiceUnavailable",
    "ServingVariant",
    "UnknownGeneration",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- ports


class VariantsSource(Protocol):
    def current(self) -> list[ServingVariant]:
        """The endpoint's variants with their current weights (cached by the adapter)."""
        ...


class ModelAnswer(Protocol):
    @property
    def invoked_variant(self) -> str: ...

    @property
    def body(self) -> bytes: ...


class ModelEndpoint(Protocol):
    def invoke(self, variant: str, body: bytes) -> ModelAnswer:
        """Invoke ``variant``; raises :class:`EndpointError` when the endpoint fails and
        :class:`ModelRefusedRequest` when the model refuses the request as sent."""
        ...


class EventQueue(Protocol):
    def send(self, events: Sequence[QueueEvent]) -> None:
        """Queue the events durably; raises :class:`QueueError` when they were not queued."""
        ...


# --------------------------------------------------------------------------- generate


@dataclass(frozen=True)
class Served:
    """``POST /generations`` answered."""

    generation_id: str
    text: str
    variant: str
    model_version: str
    latency_ms: float
    user_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation_id": self.generation_id,
            "text": self.text,
            "variant": self.variant,
            "model_version": self.model_version,
            "latency_ms": round(self.latency_ms, 3),
            "user_id": self.user_id,
        }


def _generated_text(body: bytes) -> str:
    """The one continuation in an artifact's answer (the Hugging Face text-generation shape)."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EndpointError("the model answered with something that is not JSON") from None
    if (
        not isinstance(answer, list)
        or len(answer) != 1
        or not isinstance(answer[0], dict)
        or not isinstance(answer[0].get("generated_text"), str)
    ):
        raise EndpointError(
            'the model answered without one [{"generated_text": ...}] entry for the prompt'
        )
    text = str(answer[0]["generated_text"])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON's \ud83d escapes can spell half a surrogate pair: no text to store or show.
        raise EndpointError(
            "the model answered text that is not Unicode (a lone surrogate)"
        ) from None
    return text


@dataclass
class GenerationService:
    """Assign the user a variant, invoke it, queue the generation for the recorder.

    When the endpoint fails the request, a ``generation_failed`` event is queued for the
    variant (the experiment's error rates), then the error stands (502); a queue that refuses
    that event is logged and does not change the answer. A request the model refuses as sent
    (:class:`ModelRefusedRequest`: a prompt too long for its context, say) is the client's to
    change: a 422 with the model's reason, not counted against the variant.
    """

    endpoint: ModelEndpoint
    variants: VariantsSource
    queue: EventQueue
    ids: GenerationIds
    limits: ServingLimits = field(default_factory=ServingLimits)
    #: Salts the assignment hash, so two experiments do not split users the same way.
    assignment_salt: str = ""
    clock: Callable[[], float] = time.perf_counter

    def generate(self, request: GenerateRequest) -> Served:
        problems = self.limits.check(request)
        if problems:
            raise RequestRejected("the request exceeds this service's limits", problems)
        user_id = request.user_id or new_user_id()
        variants = {v.name: v for v in self.variants.current()}
        try:
            name = assign_variant(
                user_id, {n: v.weight for n, v in variants.items()}, self.assignment_salt
            )
        except AssignmentError as exc:
            raise ServiceUnavailable(f"no model variant is in service: {exc}") from None
        parameters: dict[str, Any] = {
            "max_new_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_k": request.top_k,
        }
        if request.seed is not None:
            parameters["seed"] = request.seed
        body = json.dumps({"inputs": request.prompt, "parameters": parameters}).encode()
        started = self.clock()
        try:
            answer = self.endpoint.invoke(name, body)
            latency_ms = (self.clock() - started) * 1000.0
            text = _generated_text(answer.body)
            served_by = answer.invoked_variant or name
            if served_by != name:
                raise EndpointError(f"asked variant {name!r} but {served_by!r} answered")
        except EndpointError as exc:
            exc.variant = name
            self._report_failure(name, exc)
            raise
        event = GenerationEvent(
            generation_id=self.ids.issue(name),
            user_id=user_id,
            variant=name,
            model_version=variants[name].model_version,
            prompt=request.prompt,
            text=text,
            parameters=parameters,
            latency_ms=latency_ms,
            created_at=datetime.now(UTC),
        )
        self.queue.send([event])
        return Served(
            generation_id=event.generation_id,
            text=text,
            variant=name,
            model_version=event.model_version,
            latency_ms=latency_ms,
            user_id=user_id,
        )

    def _report_failure(self, variant: str, error: EndpointError) -> None:
        """Queue the failure for the error rates; best effort, the 502 stands either way."""
        event = GenerationFailedEvent(
            failure_id=uuid.uuid4().hex,
            variant=variant,
            reason=error.reason[:MAX_FAILURE_REASON_CHARS],
            created_at=datetime.now(UTC),
        )
        try:
            self.queue.send([event])
        except Exception:
            logger.warning(
                "the failure of variant %s could not be queued; its error rate misses it",
                variant,
                exc_info=True,
            )


# --------------------------------------------------------------------------- feedback


@dataclass(frozen=True)
class FeedbackAccepted:
    """``POST /generations/{id}/feedback`` answered (202: queued, recorded soon)."""

    feedback_id: str
    generation_id: str
    variant: str
    reward: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "feedback_id": self.feedback_id,
            "generation_id": self.generation_id,
            "variant": self.variant,
            "reward": self.reward,
            "status": "accepted",
        }


def feedback_id_for(
    generation_id: str, idempotency_key: str | None, request: FeedbackRequest
) -> str:
    """A new id, or one derived from the client's key and the post, so a retry counts once.

    The key identifies one post, as its client sends it: the same key with the same body
    (reward and user) is a retry and gets the same id, while a different body under the same
    key, or another user's post that happens to reuse the key, gets its own id and counts.
    Nothing sent is dropped for a reused key.
    """
    if not idempotency_key:
        return uuid.uuid4().hex
    post = "\x1f".join(
        [generation_id, idempotency_key, repr(request.reward), request.user_id or ""]
    )
    return uuid.uuid5(uuid.NAMESPACE_URL, post).hex


@dataclass
class FeedbackService:
    """Check the generation id's signature and queue the feedback: no database on this path."""

    queue: EventQueue
    ids: GenerationIds

    def submit(
        self, generation_id: str, request: FeedbackRequest, idempotency_key: str | None = None
    ) -> FeedbackAccepted:
        variant = self.ids.variant_of(generation_id)
        if variant is None:
            raise UnknownGeneration(
                f"no generation {shown_id(generation_id)} was served by this service"
            )
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 128:
            raise RequestRejected("the Idempotency-Key header must be 1 to 128 characters")
        reward = normalise_reward(request.reward)
        event = FeedbackEvent(
            feedback_id=feedback_id_for(generation_id, idempotency_key, request),
            generation_id=generation_id,
            reward=reward,
            raw_value=str(request.reward),
            user_id=request.user_id,
            created_at=datetime.now(UTC),
        )
        self.queue.send([event])
        return FeedbackAccepted(event.feedback_id, generation_id, variant, reward)
