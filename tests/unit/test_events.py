"""The queue's events: checked on both sides of the queue, and the JSON stays as it was."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tweetgen.domain.events import (
    MAX_PROMPT_CHARS,
    FeedbackEvent,
    GenerationEvent,
    GenerationFailedEvent,
    MalformedEvent,
    QueueEvent,
    encode_event,
    event_fields,
    parse_event,
)

AT = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)


def generation(**changes: object) -> GenerationEvent:
    fields: dict[str, object] = {
        "generation_id": "g1",
        "user_id": "u1",
        "variant": "lstm",
        "model_version": "v1",
        "prompt": "good morning",
        "text": "to everyone",
        "parameters": {"max_new_tokens": 16, "temperature": 0.8},
        "latency_ms": 12.5,
        "created_at": AT,
    } | changes
    return GenerationEvent(**fields)  # type: ignore[arg-type]


def feedback(**changes: object) -> FeedbackEvent:
    fields: dict[str, object] = {
        "feedback_id": "f1",
        "generation_id": "g1",
        "reward": 0.75,
        "raw_value": "4",
        "created_at": AT,
    } | changes
    return FeedbackEvent(**fields)  # type: ignore[arg-type]


EVENTS: list[QueueEvent] = [
    generation(),
    feedback(),
    feedback(user_id="u1"),
    GenerationFailedEvent(failure_id="x1", variant="gpt2", reason="ModelError", created_at=AT),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_each_event_survives_the_queue_round_trip(event: QueueEvent) -> None:
    assert parse_event(encode_event(event)) == event
    assert parse_event(encode_event(event).encode()) == event


def test_the_type_tag_names_the_kind_and_is_not_a_stored_field() -> None:
    assert [e.type for e in EVENTS] == ["generation", "feedback", "feedback", "generation_failed"]
    assert '"type":"generation"' in encode_event(EVENTS[0])
    fields = event_fields(EVENTS[0])
    assert "type" not in fields and fields["created_at"] == AT
    assert fields["parameters"] == {"max_new_tokens": 16, "temperature": 0.8}


@pytest.mark.parametrize(
    "created_at", ["2026-11-26T10:00:00.123456Z", "2026-11-26T10:00:00.123456+00:00"]
)
def test_messages_queued_before_the_change_still_parse(created_at: str) -> None:
    # As pydantic's model_dump_json wrote them (the first form), or any RFC 3339 time.
    body = (
        '{"type":"generation","generation_id":"g1","user_id":"u1","variant":"lstm",'
        '"model_version":"v1","prompt":"good morning","text":"to everyone",'
        '"parameters":{"max_new_tokens":16,"temperature":0.8},"latency_ms":12.5,'
        f'"created_at":"{created_at}"}}'
    )
    assert parse_event(body) == generation()
    old_feedback = (
        '{"type":"feedback","feedback_id":"f1","generation_id":"g1","reward":0.75,'
        f'"raw_value":"4","user_id":null,"created_at":"{created_at}"}}'
    )
    assert parse_event(old_feedback) == feedback()


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (generation(prompt="x" * (MAX_PROMPT_CHARS + 1)), "length <= 280"),
        (generation(latency_ms=-1.0), ">= 0"),
        (feedback(reward=float("nan")), "got `null`"),
        (feedback(reward=1.5), "<= 1.0"),
        (feedback(user_id="u1\n"), "user_id"),
        (generation(generation_id="a b"), "generation_id"),
        (generation(created_at=AT.replace(tzinfo=None)), "timezone"),
        (
            GenerationFailedEvent(failure_id="x", variant="v", reason="\ud800", created_at=AT),
            "utf-8",
        ),
        (generation(parameters={"seed": object()}), "Encoding objects of type object"),
    ],
)
def test_an_event_no_recorder_would_take_is_refused_before_it_is_queued(
    event: QueueEvent, problem: str
) -> None:
    with pytest.raises(
        MalformedEvent, match="not a generation, feedback or generation_failed"
    ) as info:
        encode_event(event)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "malformed"),
        ("{}", "missing required field `type`"),
        ('{"type": "vote"}', "Invalid value 'vote'"),
        (encode_event(feedback()).replace('"reward":0.75', '"reward":7'), "<= 1.0"),
        (encode_event(feedback())[:-1] + ',"extra":1}', "unknown field `extra`"),
        (encode_event(feedback()).replace('"f1"', '"f1\\n"'), "feedback_id"),
        ('{"type": "feedback", "x": "\ud800"}', "not valid Unicode"),
    ],
)
def test_a_message_that_is_not_an_event_is_refused_with_a_reason(body: str, problem: str) -> None:
    with pytest.raises(
        MalformedEvent, match="not a generation, feedback or generation_failed"
    ) as info:
        parse_event(body)
    assert problem in str(info.value)
