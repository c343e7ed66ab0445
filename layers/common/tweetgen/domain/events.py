"""The queue's events: what generate and feedback send and the recorder writes, once each.

The events are msgspec Structs, not pydantic models: the recorder, which parses nothing else,
then never imports pydantic (about 40 ms of its cold start), and a batch decodes in one pass.
An event is checked against its constraints whenever it crosses the queue: ``encode_event``
decodes what it encoded before it is sent (a Struct built in code is not checked when built,
unlike a pydantic model), and ``parse_event`` checks every message the recorder receives.
The JSON is the same as the pydantic models wrote before (field names, the ``type`` tag, RFC
3339 times), so messages already queued across a deploy still parse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

__all__ = [
    "MAX_FAILURE_REASON_CHARS",
    "MAX_PROMPT_CHARS",
    "USER_ID_PATTERN",
    "FeedbackEvent",
    "GenerationEvent",
    "GenerationFailedEvent",
    "MalformedEvent",
    "QueueEvent",
    "encode_event",
    "event_fields",
    "parse_event",
]

#: What a failure event keeps of the endpoint's error message.
MAX_FAILURE_REASON_CHARS = 1000
#: A prompt is the start of a tweet.
MAX_PROMPT_CHARS = 280
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def _whole(pattern: str) -> str:
    """``pattern`` (``^...$``) for Python's ``re``, where ``$`` also matches before a final
    newline: ``\\Z`` matches only at the end, as ``$`` does in pydantic's regex engine."""
    return pattern.removesuffix("$") + r"\Z"


EventId = Annotated[str, msgspec.Meta(pattern=_whole(ID_PATTERN))]
UserId = Annotated[str, msgspec.Meta(pattern=_whole(USER_ID_PATTERN))]
VariantName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
# The database stores times in UTC: a time without its offset would reach the recorder only to
# be refused there, and come back until the dead-letter queue took it.
Moment = Annotated[datetime, msgspec.Meta(tz=True)]


# Each event repeats its base's frozen and kw_only: type checkers read a Struct's options as a
# dataclass's, per class.
class _Event(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    @property
    def type(self) -> str:
        """The event's kind, as its JSON's ``type`` field names it."""
        return str(self.__struct_config__.tag)


class GenerationEvent(_Event, tag="generation", frozen=True, kw_only=True):
    """What the generate function queues for the recorder: one served generation."""

    generation_id: EventId
    user_id: UserId
    variant: VariantName
    model_version: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_CHARS)]
    text: str
    parameters: dict[str, Any]
    latency_ms: Annotated[float, msgspec.Meta(ge=0)]
    created_at: Moment


class FeedbackEvent(_Event, tag="feedback", frozen=True, kw_only=True):
    """What the feedback function queues: one user's reward for one generation."""

    feedback_id: EventId
    generation_id: EventId
    reward: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    raw_value: Annotated[str, msgspec.Meta(max_length=32)]
    user_id: UserId | None = None
    created_at: Moment


class GenerationFailedEvent(_Event, tag="generation_failed", frozen=True, kw_only=True):
    """What the generate function queues when the endpoint failed a request: which variant
    the request was routed to and why it failed, so the experiment can count error rates."""

    failure_id: EventId
    variant: VariantName
    reason: Annotated[str, msgspec.Meta(max_length=MAX_FAILURE_REASON_CHARS)]
    created_at: Moment


QueueEvent = GenerationEvent | FeedbackEvent | GenerationFailedEvent

_DECODER = msgspec.json.Decoder(QueueEvent)
_ENCODER = msgspec.json.Encoder()


class MalformedEvent(ValueError):
    """A message that is not an event of this service; the message says what is wrong."""


def parse_event(body: str | bytes) -> QueueEvent:
    """One queued message as an event; :class:`MalformedEvent` says what is wrong with it."""
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError as exc:  # malformed JSON, or a value the event does not allow
        reason = str(exc)
    except UnicodeEncodeError:  # a str holding a lone surrogate is no JSON text
        reason = "the body is not valid Unicode text"
    raise MalformedEvent(f"not a generation, feedback or generation_failed event: {reason}")


def encode_event(event: QueueEvent) -> str:
    """The event's JSON for the queue, checked as the recorder will check it.

    A value no event allows (a prompt over the bound, a negative latency, a reward that is not
    finite: JSON has no NaN, so it would be written as null; a time without its offset; text
    with a lone surrogate; a parameter JSON cannot hold) raises :class:`MalformedEvent` here,
    in the function that built it, rather than in the recorder after it was accepted.
    """
    try:
        body = _ENCODER.encode(event)
    except (TypeError, ValueError) as exc:  # a value JSON cannot hold, text that is not Unicode
        raise MalformedEvent(
            f"not a generation, feedback or generation_failed event: {exc}"
        ) from None
    parse_event(body)
    return body.decode()


def event_fields(event: QueueEvent) -> dict[str, Any]:
    """The event's fields by name (its ``type`` tag left out)."""
    return msgspec.structs.asdict(event)
