"""The recorder's service: queued events into the database, each once.

Free of pydantic and of the serving API's request models (``tweetgen.domain.events``), so the
recorder's cold start imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tweetgen.domain.events import (
    FeedbackEvent,
    GenerationEvent,
    GenerationFailedEvent,
    MalformedEvent,
    QueueEvent,
    event_fields,
    parse_event,
)

__all__ = [
    "EventWriter",
    "MalformedEvent",
    "parse_event",
    "record_event",
    "record_events",
]


class EventWriter(Protocol):
    """A repository that stores events idempotently, many in one transaction."""

    def record_many(self, rows: Sequence[Mapping[str, Any]]) -> set[str]: ...


def _failures_writer(failures: EventWriter | None) -> EventWriter:
    if failures is None:
        raise ValueError(
            "a generation_failed event needs a failures writer (Database.failures): "
            "pass failures= to record_event(s)"
        )
    return failures


def record_event(
    event: QueueEvent,
    generations: EventWriter,
    feedback: EventWriter,
    failures: EventWriter | None = None,
) -> bool:
    """Write one event idempotently; True when it is new, False for a redelivery."""
    writer: EventWriter
    if isinstance(event, GenerationEvent):
        writer = generations
    elif isinstance(event, FeedbackEvent):
        writer = feedback
    else:
        writer = _failures_writer(failures)
    return bool(writer.record_many([event_fields(event)]))


def record_events(
    events: Sequence[QueueEvent],
    generations: EventWriter,
    feedback: EventWriter,
    failures: EventWriter | None = None,
) -> set[str]:
    """Write a batch in one transaction per kind; returns the ids of the events that were new."""
    generated = [event_fields(e) for e in events if isinstance(e, GenerationEvent)]
    rated = [event_fields(e) for e in events if isinstance(e, FeedbackEvent)]
    failed = [event_fields(e) for e in events if isinstance(e, GenerationFailedEvent)]
    new: set[str] = set()
    if generated:
        new |= generations.record_many(generated)
    if rated:
        new |= feedback.record_many(rated)
    if failed:
        new |= _failures_writer(failures).record_many(failed)
    return new
