"""The GraphQL function (functions/graphql/app.py) on AppSync's direct Lambda resolver events.

The handler runs in this process on moto (SQS, Secrets Manager, the SageMaker control plane)
and SQLite. Most tests send GraphQL documents through the local GraphQL engine with the schema
of the repository, which builds AppSync's events and checks every answer against the
contract; the handler is called exactly as a Lambda runtime calls it (a JSON round trip, an
exception becomes ``errorType``/``errorMessage``).
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from tweetgen.adapters import appsync
from tweetgen.adapters.database import Database
from tweetgen.domain.events import parse_event
from tweetgen.domain.experiment import ExperimentSettings, VariantSnapshot, decide
from tweetgen.domain.serving import GenerateRequest, GenerationIds
from tweetgen.services.experiment import aggregate
from tweetgen.services.serving import ModelRefusedRequest, QueueError, RequestRejected
from tweetgen_local.functions import InvocationResult, LambdaContext, error_shape
from tweetgen_local.graphql_server import (
    FieldBinding,
    GraphQLApiSpec,
    GraphQLEndpoint,
    WebRequest,
    appsync_schema,
)

from tests.conftest import REPO_ROOT
from tests.unit.test_handler_imports import unreachable_database_url

REGION = "us-east-1"
FUNCTION = REPO_ROOT / "functions" / "graphql" / "app.py"
SCHEMA = REPO_ROOT / "graphql" / "schema.graphql"
KEY = "k" * 64


def _context(request_id: str) -> LambdaContext:
    return LambdaContext(
        function_name="tweetgen-GraphQLFunction",
        function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:tweetgen-GraphQLFunction",
        memory_limit_in_mb="256",
        aws_request_id=request_id,
        log_group_name="/aws/lambda/tweetgen-GraphQLFunction",
        log_stream_name="2026/01/01/[$LATEST]0",
        deadline_ms=time.time() * 1000 + 30_000,
    )


def _load_function() -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"graphql_app_{uuid.uuid4().hex}", FUNCTION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Api:
    function: ModuleType
    db: Database
    queue_url: str
    ids: GenerationIds

    def invoke(self, event: dict[str, Any]) -> Any:
        """What the Lambda runtime does: JSON in, JSON out, an exception as an error."""
        payload = self.function.lambda_handler(json.loads(json.dumps(event)), _context("r-1"))
        return json.loads(json.dumps(payload))

    def _invoke(self, function: str, trigger: str, event: dict[str, Any]) -> InvocationResult:
        request_id = str(uuid.uuid4())
        try:
            payload = self.function.lambda_handler(event, _context(request_id))
            payload, error = json.loads(json.dumps(payload)), None
        except Exception as exc:
            payload, error = None, error_shape(type(exc).__name__, str(exc), request_id)
        return InvocationResult(payload, error, False, None, 0.0, "", request_id)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        text = SCHEMA.read_text(encoding="utf-8")
        schema = appsync_schema(text)
        bindings = tuple(
            FieldBinding(root.name, name, f"{name}Resolver", function="GraphQLFunction")
            for root in (schema.query_type, schema.mutation_type)
            if root is not None
            for name in root.fields
        )
        spec = GraphQLApiSpec("GraphQLApi", "api", text, "schema.graphql", bindings)
        endpoint = GraphQLEndpoint(spec, self._invoke)
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = WebRequest("POST", "/graphql", {}, (("x-api-key", "da2-local"),), body, "::1")
        response = endpoint.handle(request)
        assert response.status == 200, response.body
        return dict(json.loads(response.body))

    def queued(self) -> list[Any]:
        sqs = boto3.client("sqs", region_name=REGION)
        found: list[Any] = []
        while batch := sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            found.extend(parse_event(message["Body"]) for message in batch)
        return found


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Api]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "tweetgen",
        "POWERTOOLS_SERVICE_NAME": "graphql",
        "ENDPOINT_NAME": "tweetgen",
        "MAX_NEW_TOKENS": "64",
        "VARIANTS_CACHE_SECONDS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="events")[
            "QueueUrl"
        ]
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=f"ids-{uuid.uuid4().hex}", SecretString=KEY
        )
        url = f"sqlite:///{tmp_path / 'tweetgen.db'}"
        monkeypatch.setenv("EVENTS_QUEUE_URL", queue_url)
        monkeypatch.setenv("GENERATION_ID_SECRET_ARN", secret["ARN"])
        monkeypatch.setenv("DATABASE_URL", url)
        db = Database.from_url(url)
        db.migrate()
        yield Api(_load_function(), db, queue_url, GenerationIds(KEY.encode()))


def _error(answer: dict[str, Any]) -> dict[str, Any]:
    errors = answer.get("errors") or []
    assert len(errors) == 1, answer
    return dict(errors[0])


SEND = """
mutation Send($id: ID!, $reward: String, $rating: Int, $key: String) {
  sendFeedback(generationId: $id, reward: $reward, rating: $rating, userId: "alice",
               idempotencyKey: $key) {
    feedbackId generationId variant reward status
  }
}
"""


def test_feedback_is_queued_and_a_retry_with_the_same_key_counts_once(api: Api) -> None:
    generation_id = api.ids.issue("gpt2")
    first = api.graphql(SEND, {"id": generation_id, "reward": "like", "key": "try-1"})
    receipt = first["data"]["sendFeedback"]
    assert receipt["generationId"] == generation_id and receipt["variant"] == "gpt2"
    assert receipt["reward"] == 1.0 and receipt["status"] == "accepted"
    again = api.graphql(SEND, {"id": generation_id, "reward": "like", "key": "try-1"})
    assert again["data"]["sendFeedback"]["feedbackId"] == receipt["feedbackId"]
    rated = api.graphql(SEND, {"id": generation_id, "rating": 2})["data"]["sendFeedback"]
    assert rated["reward"] == 0.25 and rated["feedbackId"] != receipt["feedbackId"]

    queued = api.queued()
    assert [event.feedback_id for event in queued] == [receipt["feedbackId"]] * 2 + [
        rated["feedbackId"]
    ]
    assert queued[0].raw_value == "like" and queued[0].user_id == "alice"
    assert queued[2].raw_value == "2"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"reward": "like", "rating": 5}, "give exactly one of reward"),
        ({}, "give exactly one of reward ('like' or 'dislike') and rating (1 to 5), not neither"),
        ({"reward": "LIKE"}, "reward: Value error, reward must be 'like', 'dislike' or a rating"),
        ({"rating": 6}, "rating: Value error, reward must be 'like', 'dislike' or a rating"),
        ({"rating": 0}, "rating: Value error"),
        ({"reward": "like", "key": ""}, "Idempotency-Key header must be 1 to 128 characters"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(
    api: Api, variables: dict[str, Any], message: str
) -> None:
    answer = api.graphql(SEND, {"id": api.ids.issue("lstm"), **variables})
    error = _error(answer)
    assert answer["data"] is None  # sendFeedback is non-null: the error reaches the root
    assert error["errorType"] == "RequestRejected" and error["path"] == ["sendFeedback"]
    assert message in error["message"], error
    assert api.queued() == []


def test_feedback_for_an_id_this_service_never_issued_is_unknown(api: Api) -> None:
    forged = GenerationIds(b"another key, 16+ bytes").issue("lstm")
    for generation_id in (forged, "abc"):
        error = _error(api.graphql(SEND, {"id": generation_id, "reward": "like"}))
        assert error["errorType"] == "UnknownGeneration"
        assert f"no generation {generation_id!r}" in error["message"]


GENERATE = """
mutation Generate($prompt: String, $max: Int, $temperature: Float, $user: String) {
  generate(prompt: $prompt, maxNewTokens: $max, temperature: $temperature, userId: $user) {
    generationId text variant modelVersion latencyMs userId
  }
}
"""


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"max": 1000}, "maxNewTokens: Input should be less than or equal to 256"),
        ({"max": 65}, "max_new_tokens is 65; this service allows at most 64"),
        ({"prompt": "x" * 281}, "prompt: String should have at most 280 characters"),
        ({"temperature": 2.5}, "temperature: Input should be less than or equal to 2"),
        ({"user": "no spaces please"}, "userId: String should match pattern"),
    ],
)
def test_generate_arguments_are_checked_before_the_endpoint_is_asked(
    api: Api, variables: dict[str, Any], message: str
) -> None:
    error = _error(api.graphql(GENERATE, variables))
    assert error["errorType"] == "RequestRejected" and message in error["message"], error


def test_a_request_the_model_refused_reaches_graphql_as_a_rejected_request() -> None:
    refused = ModelRefusedRequest("the model refused the request", ["prompt too long: 160 tokens"])
    error = appsync.as_refusal(refused)
    assert type(error) is RequestRejected
    assert str(error) == "the model refused the request: prompt too long: 160 tokens"
    # The other documented error types keep their names.
    assert type(appsync.as_refusal(QueueError("the queue refused"))) is QueueError


def test_generate_without_an_endpoint_is_unavailable_and_nothing_is_queued(api: Api) -> None:
    error = _error(api.graphql(GENERATE, {"prompt": "good morning", "max": 8}))
    assert error["errorType"] == "ServiceUnavailable"
    assert "endpoint 'tweetgen' does not exist yet" in error["message"]
    assert api.queued() == []


EVERYTHING = """
query Everything($generation: ID!, $feedback: ID!, $rollout: ID!) {
  generation(id: $generation) {
    id prompt text variant modelVersion latencyMs createdAt
    parameters { maxNewTokens temperature topK seed }
  }
  feedback(id: $feedback) { id generationId variant reward rawValue createdAt }
  modelVersions { variant version kind s3Uri offlineMetrics metadata createdAt registeredAt }
  lstmOnly: modelVersions(variant: "lstm", limit: 1) { version }
  rollouts { id variant version status reason steps startedAt finishedAt durationSeconds }
  rollout(id: $rollout) { id status }
  decisions { id policy weights { variant weight } reason applied statistics createdAt }
  missing: generation(id: "no-such-id") { id }
  noFeedback: feedback(id: "no-such-id") { id }
  noRollout: rollout(id: "no-such-id") { id }
}
"""


def _record(db: Database, ids: GenerationIds) -> dict[str, str]:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    generation_id = ids.issue("gpt2")
    db.generations.record(
        generation_id=generation_id,
        user_id="alice",
        variant="gpt2",
        model_version="v2",
        prompt="good morning",
        text=" to you",
        parameters={"max_new_tokens": 8, "temperature": 0.8, "top_k": 40, "seed": 2**40},
        latency_ms=12.5,
        created_at=start,
    )
    db.feedback.record(
        feedback_id="f1", generation_id=generation_id, reward=0.75, raw_value="4", created_at=start
    )
    for variant, version, minutes in (("lstm", "v1", 0), ("lstm", "v2", 5), ("gpt2", "v2", 10)):
        db.model_versions.record(
            variant=variant,
            version=version,
            kind=variant,
            s3_uri=f"s3://bucket/models/{variant}/{version}/model.tar.gz",
            metadata={"kind": variant},
            offline_metrics={"perplexity": 42.0},
            created_at=start,
            registered_at=start + timedelta(minutes=minutes),
        )
    db.rollouts.start("exec-1", "lstm", "v2", started_at=start)
    db.rollouts.finish(
        "exec-1", "rolled_back", "smoke test failed", finished_at=start + timedelta(seconds=90)
    )
    db.decisions.record(
        policy="ab",
        weights={"lstm": 0.5, "gpt2": 0.5},
        statistics={"srm": {"p_value": 0.4}},
        reason="ab: no winner yet",
        applied=False,
        decision_id="d1",
        created_at=start,
    )
    return {"generation": generation_id, "feedback": "f1", "rollout": "exec-1"}


def test_the_queries_read_what_the_database_holds_in_the_schemas_shapes(api: Api) -> None:
    variables = _record(api.db, api.ids)
    answer = api.graphql(EVERYTHING, variables)
    assert "errors" not in answer, answer
    data = answer["data"]
    assert data["generation"] == {
        "id": variables["generation"],
        "prompt": "good morning",
        "text": " to you",
        "variant": "gpt2",
        "modelVersion": "v2",
        "latencyMs": 12.5,
        "createdAt": "2026-03-01T12:00:00.000Z",
        "parameters": {"maxNewTokens": 8, "temperature": 0.8, "topK": 40, "seed": 2.0**40},
    }
    assert data["feedback"] == {
        "id": "f1",
        "generationId": variables["generation"],
        "variant": "gpt2",
        "reward": 0.75,
        "rawValue": "4",
        "createdAt": "2026-03-01T12:00:00.000Z",
    }
    versions = data["modelVersions"]
    assert [(v["variant"], v["version"]) for v in versions] == [
        ("gpt2", "v2"),
        ("lstm", "v2"),
        ("lstm", "v1"),
    ]
    assert json.loads(versions[0]["offlineMetrics"]) == {"perplexity": 42.0}  # AWSJSON: text
    assert versions[0]["registeredAt"] == "2026-03-01T12:10:00.000Z"
    assert data["lstmOnly"] == [{"version": "v2"}]
    assert data["rollouts"] == [
        {
            "id": "exec-1",
            "variant": "lstm",
            "version": "v2",
            "status": "ROLLED_BACK",
            "reason": "smoke test failed",
            "steps": None,
            "startedAt": "2026-03-01T12:00:00.000Z",
            "finishedAt": "2026-03-01T12:01:30.000Z",
            "durationSeconds": 90.0,
        }
    ]
    assert data["rollout"] == {"id": "exec-1", "status": "ROLLED_BACK"}
    (decision,) = data["decisions"]
    assert decision["weights"] == [
        {"variant": "gpt2", "weight": 0.5},
        {"variant": "lstm", "weight": 0.5},
    ]
    assert json.loads(decision["statistics"]) == {"srm": {"p_value": 0.4}}
    assert decision["applied"] is False and decision["reason"] == "ab: no winner yet"
    assert data["missing"] is None and data["noFeedback"] is None and data["noRollout"] is None


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_list_limits_are_bounded(api: Api, limit: int) -> None:
    for field in ("modelVersions", "rollouts", "decisions"):
        answer = api.graphql(f"{{ {field}(limit: {limit}) {{ __typename }} }}")
        error = _error(answer)
        assert error["errorType"] == "RequestRejected"
        assert f"limit must be between 1 and 100, got {limit}" in error["message"]


def _endpoint(weights: dict[str, float]) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    for variant in weights:
        sagemaker.create_model(
            ModelName=f"tweetgen-{variant}-v3",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
            PrimaryContainer={
                "Image": "tensorflow-inference",
                "ModelDataUrl": f"s3://bucket/models/{variant}/v3/model.tar.gz",
                "Environment": {"TWEETGEN_MODEL_VERSION": "v3"},
            },
        )
    sagemaker.create_endpoint_config(
        EndpointConfigName="tweetgen-v3",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"tweetgen-{variant}-v3",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weight,
            }
            for variant, weight in weights.items()
        ],
    )
    sagemaker.create_endpoint(EndpointName="tweetgen", EndpointConfigName="tweetgen-v3")


EXPERIMENT = """
{
  variants { name weight modelVersion }
  experiment {
    endpointName policy metricsAsOf statisticsAsOf control
    variants {
      variant inService modelVersion weight trafficShare served feedback positive likeRate
      meanReward errors probabilityBest expectedLoss posteriorMean
      lift { versus median low high level }
    }
    sequentialTests { pair differenceOf pValue looks significant }
    sampleRatio { statistic df pValue flagged threshold }
    guardrails { variant reasons }
    notes
    lastDecision { id policy weights { variant weight } applied reason statistics createdAt }
  }
}
"""


def test_the_experiment_and_the_variants_in_service(api: Api) -> None:
    before = api.graphql(EXPERIMENT)["data"]
    assert before["variants"] == []
    assert before["experiment"] == {
        "endpointName": "tweetgen",
        "policy": None,
        "metricsAsOf": None,
        "statisticsAsOf": None,
        "control": None,
        "variants": [],
        "sequentialTests": [],
        "sampleRatio": None,
        "guardrails": [],
        "notes": [],
        "lastDecision": None,
    }

    _endpoint({"lstm": 1.0, "gpt2": 3.0})
    _record(api.db, api.ids)
    aggregate(api.db.metrics)  # what the aggregate function does on its schedule
    decided = decide(
        {
            "gpt2": VariantSnapshot(served=1, feedback_count=1, positive_count=1, reward_sum=0.75),
            "lstm": VariantSnapshot(),
        },
        {"lstm": 1.0, "gpt2": 3.0},
        ExperimentSettings(monte_carlo_draws=1000),
    )
    api.db.decisions.record(
        policy=decided.policy,
        weights=decided.weights,
        statistics=decided.statistics,
        reason=decided.reason,
        applied=False,
        decision_id="d2",
        created_at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    data = api.graphql(EXPERIMENT)["data"]
    assert sorted(data["variants"], key=lambda v: v["name"]) == [
        {"name": "gpt2", "weight": 3.0, "modelVersion": "v3"},
        {"name": "lstm", "weight": 1.0, "modelVersion": "v3"},
    ]
    experiment = data["experiment"]
    assert experiment["policy"] == "ab" and experiment["control"] == "lstm"
    assert experiment["statisticsAsOf"] == "2026-03-02T00:00:00.000Z"
    rows = {row["variant"]: row for row in experiment["variants"]}
    gpt2, lstm = rows["gpt2"], rows["lstm"]
    assert gpt2["inService"] and gpt2["trafficShare"] == 0.75 and gpt2["modelVersion"] == "v3"
    assert (gpt2["served"], gpt2["feedback"], gpt2["positive"]) == (1, 1, 1)
    assert gpt2["likeRate"] == 1.0 and gpt2["meanReward"] == 0.75
    assert lstm["served"] == 0 and lstm["likeRate"] is None and lstm["lift"] is None
    assert 0.5 < gpt2["probabilityBest"] < 1 and lstm["probabilityBest"] < 0.5
    assert gpt2["lift"]["versus"] == "lstm" and gpt2["posteriorMean"] > lstm["posteriorMean"]
    (test,) = experiment["sequentialTests"]
    assert test["pair"] == "gpt2|lstm" and test["differenceOf"] == "lstm - gpt2"
    assert experiment["sampleRatio"]["flagged"] is False
    last = experiment["lastDecision"]
    assert last["id"] == "d2" and last["reason"] == decided.reason
    assert last["statistics"] is None  # they are the experiment's own fields
    assert sum(w["weight"] for w in last["weights"]) == pytest.approx(1.0)


def test_a_failure_that_is_no_refusal_names_the_request_id_not_its_details(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL")
    error = _error(api.graphql('{ generation(id: "x") { id } }'))
    assert error["errorType"] == "InternalFailure"
    assert "the request failed; request id" in error["message"]
    assert "DATABASE" not in error["message"]


@pytest.mark.parametrize("query", ['{ generation(id: "x") { id } }', "{ experiment { control } }"])
def test_an_unreachable_database_is_unavailable_as_a_503_is_to_rest_clients(
    api: Api, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", unreachable_database_url())
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT", "2")
    error = _error(api.graphql(query))
    assert error["errorType"] == "ServiceUnavailable"
    assert error["message"] == (
        "the database is not reachable right now; try again in a few seconds"
    )


def test_the_sample_events_reach_their_resolvers(api: Api) -> None:
    events = REPO_ROOT / "events"
    experiment = json.loads((events / "appsync_experiment.json").read_text())
    assert api.invoke(experiment)["endpointName"] == "tweetgen"
    generate = json.loads((events / "appsync_generate.json").read_text())
    with pytest.raises(Exception, match="does not exist yet") as refused:
        api.invoke(generate)
    assert type(refused.value).__name__ == "ServiceUnavailable"


def test_the_schema_documents_the_rest_apis_bounds_and_defaults() -> None:
    from tweetgen.domain import serving

    schema = appsync_schema(SCHEMA.read_text(encoding="utf-8"))
    assert schema.mutation_type is not None
    arguments = schema.mutation_type.fields["generate"].args
    defaults = {name: field.default for name, field in GenerateRequest.model_fields.items()}
    expected = {
        "prompt": [f"at most {serving.MAX_PROMPT_CHARS} characters"],
        "maxNewTokens": [
            f"1 to {serving.MAX_NEW_TOKENS_CEILING}",
            f"default {defaults['max_new_tokens']}",
        ],
        "temperature": [
            f"0 (greedy) to {serving.MAX_TEMPERATURE:g}",
            f"default {defaults['temperature']}",
        ],
        "topK": [f"to {serving.MAX_TOP_K}", f"default {defaults['top_k']}"],
        "userId": ["up to 128 characters"],
    }
    for name, phrases in expected.items():
        description = arguments[name].description or ""
        for phrase in phrases:
            assert phrase in description, (name, phrase)
    assert set(arguments) == {"prompt", "maxNewTokens", "temperature", "topK", "seed", "userId"}
