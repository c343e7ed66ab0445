"""The GraphQL API end to end over HTTP: a local stack from the real template serves
graphql/schema.graphql at /graphql, both tiny models rolled out, every root field resolved by
the real GraphQL function in its worker (events queue on moto, database on SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from tweetgen.adapters.database import Database
from tweetgen.services.experiment import aggregate
from tweetgen_local.stack import LocalStack

from tests import conftest
from tests.conftest import REPO_ROOT
from tests.e2e import stacks

WAIT_S = 30.0


class GraphQL:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.url = str(stack.endpoints["graphql"])
        self.db = Database.from_url(f"sqlite:///{stack.options.state_dir / 'tweetgen.db'}")

    def post(self, body: Any) -> requests.Response:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        headers = {"Content-Type": "application/json", "x-api-key": "da2-local"}
        return requests.post(self.url, data=data, headers=headers, timeout=60)

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = self.post({"query": query, "variables": variables})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def data(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = self(query, **variables)
        assert "errors" not in answer, answer
        return dict(answer["data"])


def eventually(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    return conftest.eventually(check, timeout)


@pytest.fixture(scope="module")
def graphql(
    tmp_path_factory: pytest.TempPathFactory, tiny_run: dict[str, Path]
) -> Iterator[GraphQL]:
    with stacks.rolled_out_stack(tmp_path_factory.mktemp("graphql-stack"), tiny_run) as stack:
        yield GraphQL(stack)


def test_the_stack_serves_the_template_api_at_graphql(graphql: GraphQL) -> None:
    endpoints = json.loads((graphql.stack.options.state_dir / "endpoints.json").read_text())
    assert endpoints["graphql"] == graphql.url and graphql.url.endswith("/graphql")
    served = graphql.stack.report.served
    assert {"GraphQLApi", "GraphQLSchema", "GraphQLDataSource", "GraphQLGenerateResolver"} <= set(
        served
    )
    assert not any(lid.startswith("GraphQL") for lid in graphql.stack.report.skipped)
    schema = graphql.data("{ __schema { queryType { name } mutationType { name } } }")
    assert schema["__schema"] == {
        "queryType": {"name": "Query"},
        "mutationType": {"name": "Mutation"},
    }


GENERATE = """
mutation Generate($prompt: String, $user: String) {
  generate(prompt: $prompt, maxNewTokens: 6, seed: 1, userId: $user) {
    generationId text variant modelVersion latencyMs userId
  }
}
"""
SEND = """
mutation Send($id: ID!, $reward: String, $rating: Int) {
  sendFeedback(generationId: $id, reward: $reward, rating: $rating, userId: "alice") {
    feedbackId generationId variant reward status
  }
}
"""


def test_generate_feedback_and_every_query_over_http(graphql: GraphQL) -> None:
    served = graphql.data(GENERATE, prompt="good morning", user="alice")["generate"]
    assert served["variant"] in ("lstm", "gpt2") and served["modelVersion"] == "v1"
    assert isinstance(served["text"], str) and served["latencyMs"] > 0
    assert served["userId"] == "alice"
    # Sticky: the same user keeps the same variant while the weights stand.
    again = [graphql.data(GENERATE, user="alice")["generate"]["variant"] for _ in range(3)]
    assert set(again) == {served["variant"]}

    stored = eventually(
        lambda: graphql.data(
            "query G($id: ID!) { generation(id: $id) { id prompt text variant "
            "parameters { maxNewTokens seed } createdAt } }",
            id=served["generationId"],
        )["generation"]
    )
    assert stored["prompt"] == "good morning" and stored["text"] == served["text"]
    assert stored["parameters"] == {"maxNewTokens": 6, "seed": 1.0}
    assert stored["createdAt"].endswith("Z")

    receipt = graphql.data(SEND, id=served["generationId"], reward="like")["sendFeedback"]
    assert receipt["variant"] == served["variant"] and receipt["reward"] == 1.0
    assert receipt["status"] == "accepted"
    recorded = eventually(
        lambda: graphql.data(
            "query F($id: ID!) { feedback(id: $id) { id generationId rawValue } }",
            id=receipt["feedbackId"],
        )["feedback"]
    )
    assert recorded == {
        "id": receipt["feedbackId"],
        "generationId": served["generationId"],
        "rawValue": "like",
    }

    def counted() -> dict[str, Any] | None:
        aggregate(graphql.db.metrics)  # what the aggregate function does on its schedule
        rows = graphql.data(
            "{ experiment { endpointName variants { variant inService modelVersion weight "
            "trafficShare served feedback positive likeRate } } }"
        )["experiment"]["variants"]
        row = next((r for r in rows if r["variant"] == served["variant"]), None)
        return row if row and row["feedback"] >= 1 else None

    row = eventually(counted)
    assert row["inService"] and row["modelVersion"] == "v1" and row["weight"] > 0
    assert row["served"] >= 4 and row["positive"] >= 1 and 0 < row["trafficShare"] <= 1

    variants = graphql.data("{ variants { name weight modelVersion } }")["variants"]
    assert {v["name"]: v["modelVersion"] for v in variants} == {"lstm": "v1", "gpt2": "v1"}


def test_model_versions_rollouts_and_decisions(graphql: GraphQL) -> None:
    data = graphql.data(
        "{ modelVersions { variant version kind s3Uri offlineMetrics } "
        "rollouts { id variant version status durationSeconds } }"
    )
    versions = {(v["variant"], v["version"]): v for v in data["modelVersions"]}
    assert {("lstm", "v1"), ("gpt2", "v1")} <= set(versions)
    assert versions[("gpt2", "v1")]["kind"] == "gpt2"
    assert versions[("gpt2", "v1")]["s3Uri"].endswith("/validated/gpt2/v1/model.tar.gz")
    assert json.loads(versions[("gpt2", "v1")]["offlineMetrics"])  # AWSJSON text
    succeeded = [r for r in data["rollouts"] if r["status"] == "SUCCEEDED"]
    assert {(r["variant"], r["version"]) for r in succeeded} == {("lstm", "v1"), ("gpt2", "v1")}
    one = graphql.data(
        "query R($id: ID!) { rollout(id: $id) { id status } }", id=succeeded[0]["id"]
    )
    assert one["rollout"] == {"id": succeeded[0]["id"], "status": "SUCCEEDED"}

    graphql.db.decisions.record(
        policy="ab",
        weights={"lstm": 0.5, "gpt2": 0.5},
        statistics={"note": "recorded by the test"},
        reason="ab: no winner yet",
        applied=False,
        decision_id="graphql-e2e",
        created_at=datetime.now(UTC) + timedelta(days=1),  # the newest
    )
    data = graphql.data(
        "{ decisions(limit: 1) { id policy weights { variant weight } statistics } "
        "experiment { lastDecision { id reason applied } } }"
    )
    (decision,) = data["decisions"]
    assert decision["id"] == "graphql-e2e" and decision["policy"] == "ab"
    assert json.loads(decision["statistics"]) == {"note": "recorded by the test"}
    assert data["experiment"]["lastDecision"] == {
        "id": "graphql-e2e",
        "reason": "ab: no winner yet",
        "applied": False,
    }


@pytest.mark.parametrize(
    ("query", "variables", "error_type", "message"),
    [
        (GENERATE, {"prompt": "x" * 281}, "RequestRejected", "prompt: String should have at most"),
        (
            "mutation { generate(maxNewTokens: 65) { text } }",
            {},
            "RequestRejected",
            "this service allows at most 64",
        ),
        (
            "mutation { generate(temperature: 9) { text } }",
            {},
            "RequestRejected",
            "temperature: Input should be less than or equal to 2",
        ),
        (SEND, {"id": "abc", "reward": "like"}, "UnknownGeneration", "no generation 'abc'"),
        ("{ rollouts(limit: 500) { id } }", {}, "RequestRejected", "limit must be between 1"),
    ],
)
def test_bad_arguments_are_graphql_errors_with_a_reason(
    graphql: GraphQL, query: str, variables: dict[str, Any], error_type: str, message: str
) -> None:
    answer = graphql(query, **variables)
    (error,) = answer["errors"]
    assert error["errorType"] == error_type and message in error["message"], error
    assert answer["data"] is None


def test_bad_feedback_for_a_real_generation(graphql: GraphQL) -> None:
    generation_id = graphql.data(GENERATE, user="bob")["generate"]["generationId"]
    for variables, message in (
        ({"reward": "like", "rating": 4}, "give exactly one of reward"),
        ({}, "not neither"),
        ({"reward": "LIKE"}, "reward must be 'like', 'dislike' or a rating from 1 to 5"),
        ({"rating": 6}, "reward must be 'like', 'dislike' or a rating from 1 to 5"),
    ):
        (error,) = graphql(SEND, id=generation_id, **variables)["errors"]
        assert error["errorType"] == "RequestRejected" and message in error["message"], error
    tampered = generation_id[:-1] + ("0" if generation_id[-1] != "0" else "1")
    (error,) = graphql(SEND, id=tampered, reward="like")["errors"]
    assert error["errorType"] == "UnknownGeneration"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "{ generation(id: 1 }"}, 200, "Syntax Error"),
        ({"query": "{ tweets { text } }"}, 200, "Cannot query field 'tweets' on type 'Query'."),
        ({"query": "{ experiment }"}, 200, "must have a selection of subfields"),
        ({"query": 'mutation { generate(maxNewTokens: "8") { text } }'}, 200, "Int cannot"),
        ({"query": 'mutation { sendFeedback(reward: "like") { status } }'}, 200, "required"),
        ("not json", 400, "Unable to parse GraphQL query."),
        ("", 400, "Request body is empty."),
    ],
)
def test_documents_and_bodies_that_are_wrong_never_get_a_500(
    graphql: GraphQL, body: Any, status: int, message: str
) -> None:
    answer = graphql.post(body)
    assert answer.status_code == status, answer.text
    errors = answer.json()["errors"]
    assert any(message in error["message"] for error in errors), errors


def test_tweetgen_invoke_runs_the_sample_appsync_event_against_the_stack(graphql: GraphQL) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tweetgen_local.cli",
            "invoke",
            "GraphQLFunction",
            "-e",
            str(REPO_ROOT / "events" / "appsync_generate.json"),
            "--state-dir",
            str(graphql.stack.options.state_dir),
            "-t",
            str(REPO_ROOT / "template.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["userId"] == "user-1234" and served["modelVersion"] == "v1"
    assert served["variant"] in ("lstm", "gpt2") and isinstance(served["text"], str)
