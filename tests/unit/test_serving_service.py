"""The serving use cases against their real adapters: SageMaker and SQS on moto, the runtime
through botocore's Stubber (moto cannot run a model), the database on SQLite."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from moto import mock_aws
from tweetgen.adapters.database import Database
from tweetgen.adapters.sagemaker import EndpointVariants, SageMakerRuntime, ServingEndpoint
from tweetgen.adapters.serving import generate_counted, submit_counted
from tweetgen.adapters.sqs import SqsEventQueue
from tweetgen.domain.events import (
    FeedbackEvent,
    GenerationEvent,
    GenerationFailedEvent,
    QueueEvent,
    encode_event,
    parse_event,
)
from tweetgen.domain.serving import (
    FeedbackRequest,
    GenerateRequest,
    GenerationIds,
    ServingLimits,
    assign_variant,
)
from tweetgen.services.errors import MODEL_REFUSAL_PREFIX
from tweetgen.services.recording import record_event, record_events
from tweetgen.services.serving import (
    EndpointError,
    FeedbackService,
    GenerationService,
    ModelRefusedRequest,
    QueueError,
    RequestRejected,
    ServiceUnavailable,
    UnknownGeneration,
)

REGION = "us-east-1"
KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def make_endpoint(weights: dict[str, float], version: str = "v1") -> Any:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    for variant in weights:
        sagemaker.create_model(
            ModelName=f"tweetgen-{variant}-{version}",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
            PrimaryContainer={
                "Image": "tensorflow-inference",
                "ModelDataUrl": f"s3://bucket/models/{variant}/{version}/model.tar.gz",
                "Environment": {"TWEETGEN_MODEL_VERSION": version},
            },
        )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"tweetgen-{version}",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"tweetgen-{variant}-{version}",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
            for variant, weight in weights.items()
        ],
    )
    sagemaker.create_endpoint(EndpointName="tweetgen", EndpointConfigName=f"tweetgen-{version}")
    return sagemaker


class Queue:
    """The real SQS adapter on a moto queue, plus what a test reads back."""

    def __init__(self) -> None:
        self.client = boto3.client("sqs", region_name=REGION)
        self.url = self.client.create_queue(QueueName="events")["QueueUrl"]
        self.adapter = SqsEventQueue(self.client, self.url)

    def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            batch = self.client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)


class Runtime:
    """A real SageMakerRuntime whose client answers what the test queues (botocore Stubber)."""

    def __init__(self) -> None:
        self.client = boto3.client("sagemaker-runtime", region_name=REGION)
        self.stub = Stubber(self.client)
        self.stub.activate()
        self.endpoint = ServingEndpoint(SageMakerRuntime(self.client), "tweetgen")

    def answers(self, variant: str, body: Any, expect_variant: str | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.stub.add_response(
            "invoke_endpoint",
            {
                "Body": StreamingBody(io.BytesIO(raw), len(raw)),
                "ContentType": "application/json",
                "InvokedProductionVariant": variant,
            },
            {
                "EndpointName": "tweetgen",
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": ANY,
                "TargetVariant": expect_variant or variant,
            },
        )

    def fails(self, code: str, message: str, original: dict[str, Any] | None = None) -> None:
        """InvokeEndpoint fails; ``original``: the container's answer (a ModelError's)."""
        fields = {}
        if original is not None:
            fields = {"OriginalStatusCode": 500, "OriginalMessage": json.dumps(original)}
        self.stub.add_client_error(
            "invoke_endpoint",
            service_error_code=code,
            service_message=message,
            http_status_code=424,
            modeled_fields=fields,
        )


@pytest.fixture
def queue(aws: None) -> Queue:
    return Queue()


def service(queue: Queue, runtime: Runtime, **kwargs: Any) -> GenerationService:
    return GenerationService(
        endpoint=runtime.endpoint,
        variants=EndpointVariants(boto3.client("sagemaker", region_name=REGION), "tweetgen"),
        queue=queue.adapter,
        ids=GenerationIds(KEY),
        assignment_salt="tweetgen",
        **kwargs,
    )


# --------------------------------------------------------------------------- generate


def test_generate_serves_the_assigned_variant_and_queues_the_generation(queue: Queue) -> None:
    make_endpoint({"lstm": 1.0, "gpt2": 1.0}, version="v7")
    runtime = Runtime()
    user = "alice"
    expected = assign_variant(user, {"lstm": 1.0, "gpt2": 1.0}, "tweetgen")
    runtime.answers(expected, [{"generated_text": " good morning"}])

    served = service(queue, runtime).generate(
        GenerateRequest(prompt="hello", user_id=user, max_new_tokens=8, seed=3)
    )

    runtime.stub.assert_no_pending_responses()
    assert (served.variant, served.model_version, served.text) == (expected, "v7", " good morning")
    assert GenerationIds(KEY).variant_of(served.generation_id) == expected
    (message,) = queue.messages()
    event = parse_event(message["Body"])
    assert isinstance(event, GenerationEvent)
    assert event.generation_id == served.generation_id and event.user_id == user
    assert event.parameters == {"max_new_tokens": 8, "temperature": 0.8, "top_k": 40, "seed": 3}
    assert message["MessageAttributes"]["type"]["StringValue"] == "generation"


def test_an_anonymous_user_gets_an_id_to_come_back_with(queue: Queue) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()
    runtime.answers("lstm", [{"generated_text": "hi"}])
    served = service(queue, runtime).generate(GenerateRequest())
    assert served.user_id.startswith("anon-")


def only_failure(queue: Queue) -> GenerationFailedEvent:
    """The one message queued: a failure, never a generation."""
    (message,) = queue.messages()
    event = parse_event(message["Body"])
    assert isinstance(event, GenerationFailedEvent)
    assert message["MessageAttributes"]["type"]["StringValue"] == "generation_failed"
    assert message["MessageAttributes"]["event_id"]["StringValue"] == event.failure_id
    return event


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        ({"generated_text": "not a list"}, "generated_text"),
        ([], "generated_text"),
        ([{"text": "wrong key"}], "generated_text"),
        # Valid JSON that spells half a surrogate pair: no text to store.
        (b'[{"generated_text": "half an emoji \\ud83d"}]', "lone surrogate"),
    ],
)
def test_a_malformed_model_answer_is_a_502_and_only_its_failure_is_queued(
    queue: Queue, answer: Any, reason: str
) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()
    runtime.answers("lstm", answer)
    with pytest.raises(EndpointError, match=reason) as raised:
        service(queue, runtime).generate(GenerateRequest())
    assert raised.value.status == 502
    failure = only_failure(queue)
    assert failure.variant == "lstm" and reason in failure.reason


def test_a_failing_endpoint_is_a_502_and_only_its_failure_is_queued(queue: Queue) -> None:
    make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    runtime = Runtime()
    assigned = assign_variant("dora", {"lstm": 1.0, "gpt2": 1.0}, "tweetgen")
    runtime.fails("ModelError", "the model container crashed")
    with pytest.raises(EndpointError, match="ModelError: the model container crashed") as raised:
        service(queue, runtime).generate(GenerateRequest(user_id="dora"))
    assert raised.value.status == 502
    failure = only_failure(queue)
    assert failure.variant == assigned
    assert failure.reason == "ModelError: the model container crashed"


def test_a_request_the_model_refuses_is_a_422_with_its_reason_and_nothing_is_queued(
    queue: Queue,
) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()
    reason = "prompt too long: 160 tokens + max_new_tokens 8 exceeds the model's context"
    runtime.fails(
        "ModelError",
        "Received server error (500) from primary with message ...",
        {"error": MODEL_REFUSAL_PREFIX + reason},
    )
    with pytest.raises(ModelRefusedRequest) as raised:
        service(queue, runtime).generate(GenerateRequest(prompt="\N{PARTY POPPER}" * 40))
    assert raised.value.status == 422
    assert raised.value.details == [reason]
    # Not the variant's failure: its error rate does not count the client's request.
    assert queue.messages() == []


def test_a_model_error_without_the_refusal_prefix_stays_the_models_failure(queue: Queue) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()
    runtime.fails("ModelError", "the container crashed", {"error": "CUDA out of memory"})
    with pytest.raises(EndpointError) as raised:
        service(queue, runtime).generate(GenerateRequest())
    assert raised.value.status == 502
    assert only_failure(queue).variant == "lstm"


def test_a_queue_that_refuses_the_failure_does_not_change_the_502(
    aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()
    runtime.fails("ModelError", "the model container crashed")
    client = boto3.client("sqs", region_name=REGION)
    missing = SqsEventQueue(client, "https://sqs.us-east-1.amazonaws.com/123456789012/missing")
    generation = GenerationService(
        endpoint=runtime.endpoint,
        variants=EndpointVariants(boto3.client("sagemaker", region_name=REGION), "tweetgen"),
        queue=missing,
        ids=GenerationIds(KEY),
    )
    with pytest.raises(EndpointError, match="ModelError") as raised:
        generation.generate(GenerateRequest())
    assert raised.value.status == 502
    assert "the failure of variant lstm could not be queued" in caplog.text


def test_no_endpoint_yet_is_a_503_that_says_what_to_do(queue: Queue) -> None:
    with pytest.raises(ServiceUnavailable, match="roll out a model first") as raised:
        service(queue, Runtime()).generate(GenerateRequest())
    assert raised.value.status == 503


def test_more_tokens_than_the_deployment_allows_is_refused_before_the_endpoint(
    queue: Queue,
) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()  # no answer queued: the endpoint must not be called
    with pytest.raises(RequestRejected) as raised:
        service(queue, runtime, limits=ServingLimits(max_new_tokens=16)).generate(
            GenerateRequest(max_new_tokens=17)
        )
    assert raised.value.status == 422 and "at most 16" in raised.value.details[0]


def test_a_queue_that_refuses_the_event_fails_the_request_rather_than_lose_it(aws: None) -> None:
    make_endpoint({"lstm": 1.0})
    runtime = Runtime()
    runtime.answers("lstm", [{"generated_text": "hi"}])
    client = boto3.client("sqs", region_name=REGION)
    missing = SqsEventQueue(client, "https://sqs.us-east-1.amazonaws.com/123456789012/missing")
    generation = GenerationService(
        endpoint=runtime.endpoint,
        variants=EndpointVariants(boto3.client("sagemaker", region_name=REGION), "tweetgen"),
        queue=missing,
        ids=GenerationIds(KEY),
    )
    with pytest.raises(QueueError) as raised:
        generation.generate(GenerateRequest())
    assert raised.value.status == 503


def test_variants_follow_weight_updates_after_the_cache_expires(aws: None) -> None:
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    now = [0.0]
    variants = EndpointVariants(sagemaker, "tweetgen", ttl_s=10, clock=lambda: now[0])
    assert {v.name: v.weight for v in variants.current()} == {"lstm": 1.0, "gpt2": 1.0}
    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[{"VariantName": "lstm", "DesiredWeight": 3.0}],
    )
    now[0] = 9.0
    assert {v.name: v.weight for v in variants.current()}["lstm"] == 1.0  # cached
    now[0] = 10.5
    assert {v.name: v.weight for v in variants.current()}["lstm"] == 3.0
    assert {v.model_version for v in variants.current()} == {"v1"}


class _Throttled:
    """The SageMaker client, with DescribeEndpoint throttled while ``on`` (AWS's answer)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.on = False

    def describe_endpoint(self, **kwargs: Any) -> Any:
        if self.on:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "DescribeEndpoint")
        return self._client.describe_endpoint(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_throttled_describe_endpoint_serves_on_the_weights_last_read(aws: None) -> None:
    client = _Throttled(make_endpoint({"lstm": 1.0, "gpt2": 3.0}))
    now = [0.0]
    variants = EndpointVariants(client, "tweetgen", ttl_s=10, clock=lambda: now[0])
    first = variants.current()
    client.on = True
    now[0] = 11.0
    assert variants.current() == first  # stale, not a failed request
    client.on = False
    now[0] = 15.0
    assert variants.current() == first  # kept for another ttl: SageMaker is not hammered
    now[0] = 22.0
    assert {v.name: v.weight for v in variants.current()} == {"lstm": 1.0, "gpt2": 3.0}


def test_a_throttled_describe_endpoint_before_any_answer_is_a_503(aws: None) -> None:
    client = _Throttled(make_endpoint({"lstm": 1.0}))
    client.on = True
    with pytest.raises(ServiceUnavailable) as raised:
        EndpointVariants(client, "tweetgen").current()
    assert raised.value.status == 503
    assert "ThrottlingException" in str(raised.value)


# --------------------------------------------------------------------------- feedback


def test_feedback_for_an_id_never_issued_is_a_404_and_nothing_is_queued(queue: Queue) -> None:
    feedback = FeedbackService(queue.adapter, GenerationIds(KEY))
    forged = GenerationIds(b"another-key-another-key-another!").issue("lstm")
    for generation_id in ("nope", forged, "'; DELETE FROM feedback; --"):
        with pytest.raises(UnknownGeneration) as raised:
            feedback.submit(generation_id, FeedbackRequest(reward="like"))
        assert raised.value.status == 404
    assert queue.messages() == []


def test_an_unknown_id_of_kilobytes_is_not_echoed_whole(queue: Queue) -> None:
    feedback = FeedbackService(queue.adapter, GenerationIds(KEY))
    with pytest.raises(UnknownGeneration) as raised:
        feedback.submit("x" * 5000, FeedbackRequest(reward="like"))
    assert len(raised.value.reason) < 200
    assert "'" + "x" * 100 + "'... (5,000 characters)" in raised.value.reason


def test_feedback_is_queued_with_its_reward_and_a_retry_counts_once(queue: Queue) -> None:
    ids = GenerationIds(KEY)
    generation_id = ids.issue("gpt2")
    feedback = FeedbackService(queue.adapter, ids)

    first = feedback.submit(generation_id, FeedbackRequest(reward=4), idempotency_key="k1")
    again = feedback.submit(generation_id, FeedbackRequest(reward=4), idempotency_key="k1")
    other = feedback.submit(generation_id, FeedbackRequest(reward="dislike"))

    assert first.feedback_id == again.feedback_id != other.feedback_id
    assert (first.variant, first.reward, other.reward) == ("gpt2", 0.75, 0.0)
    events = [parse_event(m["Body"]) for m in queue.messages()]
    assert all(isinstance(e, FeedbackEvent) for e in events) and len(events) == 3
    with pytest.raises(RequestRejected, match="Idempotency-Key"):
        feedback.submit(generation_id, FeedbackRequest(reward=4), idempotency_key="k" * 129)


def test_a_reused_idempotency_key_with_another_post_is_not_taken_for_a_retry(
    queue: Queue,
) -> None:
    ids = GenerationIds(KEY)
    generation_id = ids.issue("lstm")
    feedback = FeedbackService(queue.adapter, ids)
    posts = [
        FeedbackRequest(reward="like", user_id="alice"),
        FeedbackRequest(reward="dislike", user_id="alice"),  # a change of mind
        FeedbackRequest(reward=2, user_id="bob"),  # another client reusing the key
        FeedbackRequest(reward="like"),
    ]
    accepted = [feedback.submit(generation_id, post, idempotency_key="1") for post in posts]
    retried = feedback.submit(generation_id, posts[1], idempotency_key="1")
    assert len({a.feedback_id for a in accepted}) == len(posts)
    assert retried.feedback_id == accepted[1].feedback_id


# --------------------------------------------------------------------------- what the functions count


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    emitted = Metrics(namespace="tweetgen", service="api")
    emitted.clear_metrics()
    yield emitted
    emitted.clear_metrics()


def counted(metrics: Metrics) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metric values, each the list of values added, and dimensions) of the metric set the
    function would flush."""
    emf: dict[str, Any] = dict(metrics.serialize_metric_set())
    names = [m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    dimensions = emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
    return {n: emf[n] for n in names}, {d: emf[d] for d in dimensions}


def test_a_served_generation_counts_for_its_variant_with_its_latency(
    queue: Queue, metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    runtime = Runtime()
    variant = assign_variant("erin", {"lstm": 1.0, "gpt2": 1.0}, "tweetgen")
    runtime.answers(variant, [{"generated_text": " hi"}])

    served = generate_counted(
        service(queue, runtime), GenerateRequest(user_id="erin"), metrics, Logger(service="api")
    )

    values, dimensions = counted(metrics)
    assert values == {"Generations": [1.0], "ModelLatency": [served.latency_ms]}
    assert dimensions["variant"] == variant
    logged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert logged["message"] == "generated"
    assert (logged["variant"], logged["generation_id"]) == (variant, served.generation_id)


def test_an_endpoint_failure_is_counted_logged_and_raised(
    queue: Queue, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    runtime = Runtime()
    runtime.fails("ModelError", "the model container crashed")

    with pytest.raises(EndpointError):
        generate_counted(
            service(queue, runtime), GenerateRequest(user_id="fay"), metrics, Logger(service="api")
        )

    values, dimensions = counted(metrics)
    assert values == {"GenerationErrors": [1.0]}
    # Per variant, like the generation_failed event the experiment's error rates count.
    assert dimensions["variant"] == assign_variant("fay", {"lstm": 1.0, "gpt2": 1.0}, "tweetgen")
    (logged,) = [r for r in caplog.records if r.getMessage() == "the endpoint failed"]
    assert logged.levelname == "WARNING" and "ModelError" in logged.__dict__["reason"]


def test_a_request_the_model_refused_is_counted_for_the_variant_that_refused_it(
    queue: Queue, metrics: Metrics
) -> None:
    make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    runtime = Runtime()
    variant = assign_variant("gus", {"lstm": 1.0, "gpt2": 1.0}, "tweetgen")
    refusal = {"error": MODEL_REFUSAL_PREFIX + "prompt too long"}
    runtime.fails("ModelError", "Received server error (500)", refusal)

    with pytest.raises(ModelRefusedRequest) as raised:
        generate_counted(
            service(queue, runtime), GenerateRequest(user_id="gus"), metrics, Logger(service="api")
        )

    assert raised.value.variant == variant
    values, dimensions = counted(metrics)
    assert values == {"ModelRefusals": [1.0]} and dimensions["variant"] == variant


@pytest.mark.parametrize(
    ("reward", "positive"), [("like", True), ("dislike", False), (3, True), (2, False)]
)
def test_feedback_counts_for_its_variant_and_as_positive_when_it_is(
    queue: Queue, metrics: Metrics, reward: Any, positive: bool
) -> None:
    ids = GenerationIds(KEY)
    generation_id = ids.issue("gpt2")

    accepted = submit_counted(
        FeedbackService(queue.adapter, ids),
        generation_id,
        FeedbackRequest(reward=reward),
        None,
        metrics,
        Logger(service="api"),
    )

    values, dimensions = counted(metrics)
    expected = {"FeedbackAccepted": [1.0]} | ({"PositiveFeedback": [1.0]} if positive else {})
    assert values == expected
    assert dimensions["variant"] == accepted.variant == "gpt2"


# --------------------------------------------------------------------------- recorder


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path / 'serving.db'}")
    database.migrate()
    return database


def generation_event(generation_id: str, variant: str, prompt: str = "hi") -> GenerationEvent:
    return GenerationEvent(
        generation_id=generation_id,
        user_id="u1",
        variant=variant,
        model_version="v1",
        prompt=prompt,
        text="a tweet",
        parameters={"max_new_tokens": 4},
        latency_ms=12.5,
        created_at=datetime.fromisoformat("2026-11-26T10:00:00+00:00"),
    )


def feedback_event(feedback_id: str, generation_id: str, reward: float) -> FeedbackEvent:
    return FeedbackEvent(
        feedback_id=feedback_id,
        generation_id=generation_id,
        reward=reward,
        raw_value="like" if reward else "dislike",
        created_at=datetime.fromisoformat("2026-11-26T10:00:01+00:00"),
    )


def test_the_recorder_stores_each_event_once_however_often_it_arrives(db: Database) -> None:
    batch: list[QueueEvent] = [
        generation_event("g1", "lstm"),
        generation_event("g2", "gpt2"),
        feedback_event("f1", "g1", 1.0),
        feedback_event("f2", "g2", 0.0),
    ]
    assert record_events(batch, db.generations, db.feedback) == {"g1", "g2", "f1", "f2"}
    assert record_events(batch[1:3], db.generations, db.feedback) == set()

    totals = db.generations.variant_totals()
    assert (totals["lstm"].served, totals["lstm"].feedback, totals["lstm"].positive) == (1, 1, 1)
    assert (totals["gpt2"].served, totals["gpt2"].feedback, totals["gpt2"].positive) == (1, 1, 0)
    stored = db.generations.get("g2")
    assert stored is not None and stored.deliveries == 2


def test_feedback_before_its_generation_counts_once_both_exist(db: Database) -> None:
    record_events([feedback_event("f1", "g-late", 1.0)], db.generations, db.feedback)
    assert db.generations.variant_totals() == {}
    assert [f.id for f in db.feedback.pending_without_generation()] == ["f1"]

    record_events([generation_event("g-late", "lstm")], db.generations, db.feedback)
    totals = db.generations.variant_totals()
    assert (totals["lstm"].served, totals["lstm"].feedback, totals["lstm"].positive) == (1, 1, 1)
    assert db.feedback.pending_without_generation() == []


def test_the_recorder_stores_each_failure_once(db: Database) -> None:
    failure = GenerationFailedEvent(
        failure_id="x1",
        variant="gpt2",
        reason="ModelError: out of memory",
        created_at=datetime.fromisoformat("2026-11-26T10:00:02+00:00"),
    )
    body = encode_event(failure)
    assert record_events([parse_event(body)], db.generations, db.feedback, db.failures) == {"x1"}
    assert record_event(parse_event(body), db.generations, db.feedback, db.failures) is False
    stored = db.failures.get("x1")
    assert stored is not None and stored.deliveries == 2 and stored.variant == "gpt2"
    with pytest.raises(ValueError, match="needs a failures writer"):
        record_events([failure], db.generations, db.feedback)


def test_sql_in_an_event_is_stored_literally(db: Database) -> None:
    prompt = "Robert'); DROP TABLE generations;--"
    record_events([generation_event("g1", "lstm", prompt)], db.generations, db.feedback)
    stored = db.generations.get("g1")
    assert stored is not None and stored.prompt == prompt
