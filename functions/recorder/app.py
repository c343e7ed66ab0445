"""The recorder: SQS batches of generation, feedback and failure events → the database, once.

The whole batch is written in one transaction per kind (idempotent inserts: a redelivered
message finds its row and only bumps its delivery count). When that fails, each message is
tried on its own through Powertools' batch utility, so one bad message is reported as a
partial batch failure (and reaches the dead-letter queue after the queue's maxReceiveCount)
while the others are stored. With the database unreachable the whole batch is reported failed
at once, without trying each message, and stays on the queue for the next try.
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.database import Database
from tweetgen.adapters.tracing import new_tracer
from tweetgen.services.recording import MalformedEvent, parse_event, record_event, record_events

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

logger = Logger()
tracer = new_tracer()
metrics = Metrics()


@functools.cache
def processor() -> BatchProcessor:
    # Imported on first use: only a batch that cannot be written at once goes message by
    # message, so a cold start whose batch is written never loads the batch utility.
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    # A batch whose every message fails is reported like any other (each message back on
    # the queue, the failures counted), not raised as an error of the whole invocation.
    return BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@functools.cache
def database() -> Database:
    return Database.from_environment()


def record_one(record: SQSRecord) -> bool:
    """The fallback: one message, one transaction."""
    db = database()
    return record_event(parse_event(record.body), db.generations, db.feedback, db.failures)


def record_all(records: list[dict[str, Any]]) -> int | None:
    """The fast path: every message in one go; None when it cannot (then each is tried)."""
    try:
        events = [parse_event(r["body"]) for r in records]
    except MalformedEvent as exc:
        logger.warning("a malformed message in the batch", extra={"reason": str(exc)})
        return None
    db = database()
    try:
        return len(record_events(events, db.generations, db.feedback, db.failures))
    except Exception:
        logger.exception("writing the batch at once failed; trying each message")
        return None


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records") or []
    new = record_all(records)
    if new is not None:
        metrics.add_metric(name="EventsRecorded", unit=MetricUnit.Count, value=new)
        metrics.add_metric(
            name="EventsRedelivered", unit=MetricUnit.Count, value=len(records) - new
        )
        return {"batchItemFailures": []}
    if not database().reachable():
        # Nothing in the batch can be written now. Tried one by one, every message would cost
        # one more connection attempt and one more logged error, and fail all the same. The
        # whole batch comes back after the queue's visibility timeout.
        logger.warning("the database is unreachable; the batch waits for its next delivery")
        metrics.add_metric(name="EventsFailed", unit=MetricUnit.Count, value=len(records))
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}
    from aws_lambda_powertools.utilities.batch import process_partial_response

    response = process_partial_response(
        event=event, record_handler=record_one, processor=processor(), context=context
    )
    failed = len(response.get("batchItemFailures") or [])
    metrics.add_metric(name="EventsFailed", unit=MetricUnit.Count, value=failed)
    return dict(response)


coldstart.setup_done()
