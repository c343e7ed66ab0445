"""The experiment end to end on the local stack, as a user and an operator meet it.

A stack from the real template with both tiny models rolled out; users generate and give
feedback through the REST API (gpt2's tweets are liked, lstm's are not); ``tweetgen invoke
AggregateFunction`` with a scheduled event aggregates, decides with the ``ab`` policy (a
permissive minimum sample, as parameter overrides) and moves the endpoint's weights; the local
hosting routes by them at once; ``GET /experiment`` and ``tweetgen experiment status`` show the
decision; a second run changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from sqlalchemy import func, select
from tweetgen.adapters.database import Database, schema
from tweetgen.domain.serving import assign_variant
from tweetgen_local.stack import LocalStack

from tests import conftest
from tests.conftest import REPO_ROOT
from tests.e2e import stacks

# The schedule stays out of the way (the test runs the function itself); 30 feedback per
# variant is what the sequential test needs before it looks at all.
OVERRIDES = {
    "AggregateSchedule": "rate(1 day)",
    "DecisionPolicy": "ab",
    "ExperimentMinSamplesPerVariant": "30",
}
PER_VARIANT = 36
WAIT_S = 60.0


def eventually(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    return conftest.eventually(check, timeout)


class Stack:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.state_dir = stack.options.state_dir
        self.api = str(stack.endpoints["api"])
        self.db = Database.from_url(f"sqlite:///{self.state_dir / 'tweetgen.db'}")
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        self.sagemaker = session.client("sagemaker", endpoint_url=stack.endpoints["aws"])
        self.runtime = session.client(
            "sagemaker-runtime", endpoint_url=stack.endpoints["sagemaker_runtime"]
        )

    def generate(self, user: str) -> dict[str, Any]:
        answer = requests.post(
            f"{self.api}/generations",
            data=json.dumps({"prompt": "good", "max_new_tokens": 2, "user_id": user}),
            timeout=60,
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def feedback(self, generation_id: str, reward: str) -> None:
        answer = requests.post(
            f"{self.api}/generations/{generation_id}/feedback",
            data=json.dumps({"reward": reward}),
            headers={"Idempotency-Key": f"k-{generation_id}"},
            timeout=60,
        )
        assert answer.status_code == 202, answer.text

    def experiment(self) -> dict[str, Any]:
        answer = requests.get(f"{self.api}/experiment", timeout=60)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def weights(self) -> dict[str, float]:
        described = self.sagemaker.describe_endpoint(EndpointName="tweetgen")
        return {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tweetgen_local.cli", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def aggregate(self, tmp_path: Path) -> dict[str, Any]:
        """``tweetgen invoke AggregateFunction`` with a fresh scheduled event."""
        event = json.loads((REPO_ROOT / "events" / "schedule_aggregate.json").read_text())
        event["id"] = str(uuid.uuid4())
        path = tmp_path / f"schedule-{event['id']}.json"
        path.write_text(json.dumps(event))
        overrides = [f"{key}={value}" for key, value in OVERRIDES.items()]
        done = self.cli(
            "invoke",
            "AggregateFunction",
            "-e",
            str(path),
            "--state-dir",
            str(self.state_dir),
            "-t",
            str(REPO_ROOT / "template.yaml"),
            "--parameter-overrides",
            *overrides,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_run: dict[str, Path]) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("experiment-stack")
    with stacks.rolled_out_stack(state, tiny_run, OVERRIDES) as local:
        yield Stack(local)


def balanced_users(count: int) -> dict[str, list[str]]:
    """``count`` users per variant, by the generate function's own sticky assignment."""
    users: dict[str, list[str]] = {"lstm": [], "gpt2": []}
    i = 0
    while min(len(found) for found in users.values()) < count:
        user = f"e2e-user-{i}"
        variant = assign_variant(user, {"lstm": 1.0, "gpt2": 1.0}, "tweetgen")
        if len(users[variant]) < count:
            users[variant].append(user)
        i += 1
    return users


def test_feedback_moves_the_weights_and_the_status_shows_the_decision(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.weights() == {"lstm": 1.0, "gpt2": 1.0}
    served: list[tuple[str, str]] = []
    for variant, users in balanced_users(PER_VARIANT).items():
        for user in users:
            answer = stack.generate(user)
            assert answer["variant"] == variant  # sticky, as the assignment says
            served.append((answer["generation_id"], variant))
    for generation_id, variant in served:
        stack.feedback(generation_id, "like" if variant == "gpt2" else "dislike")

    def recorded() -> bool:
        with stack.db.engine.connect() as connection:
            count = connection.execute(
                select(func.count())
                .select_from(schema.feedback)
                .where(schema.feedback.c.variant.is_not(None))
            ).scalar_one()
        return bool(count == len(served))

    eventually(recorded)  # the recorder has stored every generation and feedback

    first = stack.aggregate(tmp_path)

    assert first["aggregation"]["rows_read"]["feedback"] == len(served), first
    decision = first["decision"]
    assert first["applied"] is True, first
    assert decision["changed"] and decision["winner"] == "gpt2", decision
    assert decision["weights"] == {"lstm": 0.0, "gpt2": 1.0}
    assert stack.weights() == {"lstm": 0.0, "gpt2": 1.0}
    # The hosting routes by the new weights as soon as the update returned.
    routed = {
        stack.runtime.invoke_endpoint(
            EndpointName="tweetgen",
            ContentType="application/json",
            Body=b'{"inputs": "hi", "parameters": {"max_new_tokens": 1}}',
        )["InvokedProductionVariant"]
        for _ in range(12)
    }
    assert routed == {"gpt2"}

    status = stack.experiment()
    rows = {row["variant"]: row for row in status["variants"]}
    assert status["last_decision"]["id"] == decision["id"]
    assert status["last_decision"]["applied"] and status["policy"] == "ab"
    assert (rows["gpt2"]["feedback"], rows["gpt2"]["positive"]) == (PER_VARIANT, PER_VARIANT)
    assert (rows["lstm"]["feedback"], rows["lstm"]["positive"]) == (PER_VARIANT, 0)
    assert rows["gpt2"]["p_best"] > 0.99 and rows["lstm"]["p_best"] < 0.01
    assert status["sequential"]["gpt2|lstm"]["significant"] is True
    assert status["srm"]["flagged"] is False

    # A second run: nothing new, nothing to apply, the weights stay.
    second = stack.aggregate(tmp_path)
    assert second["decision"]["changed"] is False and second["applied"] is False, second
    assert second["outcome"].startswith("nothing to apply")
    assert stack.weights() == {"lstm": 0.0, "gpt2": 1.0}

    # Users the old even split sent to lstm now get gpt2, once the 10 s cache of the weights
    # expires in every worker of the generate function.
    were_lstm = [
        user
        for user in (f"late-{uuid.uuid4().hex}" for _ in range(64))
        if assign_variant(user, {"lstm": 1.0, "gpt2": 1.0}, "tweetgen") == "lstm"
    ][:8]
    assert len(were_lstm) == 8
    eventually(lambda: {stack.generate(user)["variant"] for user in were_lstm} == {"gpt2"})

    # The operator's view: the same status as the API's.
    done = stack.cli("experiment", "status", "--state-dir", str(stack.state_dir), "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["last_decision"]["id"] == second["decision"]["id"]
    eventually(lambda: stack.experiment() == printed)  # the query function's cache, 10 s
    table = stack.cli("experiment", "status", "--state-dir", str(stack.state_dir))
    assert table.returncode == 0, table.stderr
    assert "applied; weights gpt2 100.0%, lstm 0.0%" in table.stdout
