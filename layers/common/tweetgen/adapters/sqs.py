"""The events queue through boto3: generation, feedback and failure events for the recorder.

A standard queue with a dead-letter queue: the API functions only enqueue, so a paused or
unreachable database never costs a user's feedback. Each event's id travels as a message
attribute, so an operator can find a message without parsing its body.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tweetgen.adapters import aws
from tweetgen.domain.events import FeedbackEvent, GenerationEvent, QueueEvent, encode_event
from tweetgen.services.serving import QueueError

__all__ = ["MAX_BATCH", "SqsEventQueue"]

#: SendMessageBatch takes at most ten entries.
MAX_BATCH = 10


def _event_id(event: QueueEvent) -> str:
    if isinstance(event, GenerationEvent):
        return event.generation_id
    if isinstance(event, FeedbackEvent):
        return event.feedback_id
    return event.failure_id


class SqsEventQueue:
    """Sends events to ``queue_url``; any event that did not reach the queue raises QueueError."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    @classmethod
    def from_environment(cls) -> SqsEventQueue:
        url = os.environ.get("EVENTS_QUEUE_URL", "").strip()
        if not url:
            raise RuntimeError("EVENTS_QUEUE_URL is not set: the template gives it the queue URL")
        return cls(aws.client("sqs"), url)

    def send(self, events: Sequence[QueueEvent]) -> None:
        for start in range(0, len(events), MAX_BATCH):
            self._send_batch(events[start : start + MAX_BATCH])

    def _send_batch(self, events: Sequence[QueueEvent]) -> None:
        entries = [
            {
                "Id": str(index),
                "MessageBody": encode_event(event),
                "MessageAttributes": {
                    "type": {"DataType": "String", "StringValue": event.type},
                    "event_id": {"DataType": "String", "StringValue": _event_id(event)},
                },
            }
            for index, event in enumerate(events)
        ]
        try:
            answer = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            raise QueueError(f"the events queue did not take the event: {exc}") from None
        failed = answer.get("Failed") or []
        if failed:
            reasons = sorted({str(f.get("Message") or f.get("Code")) for f in failed})
            raise QueueError(
                f"the events queue refused {len(failed)} of {len(entries)} events: "
                + "; ".join(reasons)
            )
