"""``tweetgen invoke`` on each sample event in events/: the real handler parses it and reaches its service.

Each call runs against a throw-away moto (no local stack running), so handlers that need an
uploaded artifact, an endpoint or an execution stop at that domain error: the point is that the
event shape is the one the handler reads, with the template's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

# events/<file> → (logical id, the error a fresh account gives, or None and what it answers).
EXPECTED: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "rollout_validate.json": ("RolloutValidateFunction", "NoSuchKey", {}),
    "rollout_plan.json": ("RolloutPlanFunction", None, {}),
    "rollout_smoke_test.json": ("RolloutSmokeTestFunction", "SmokeTestFailed", {}),
    "rollout_record.json": ("RolloutRecordFunction", "ExecutionDoesNotExist", {}),
    # No endpoint in a fresh account; the sample id was signed with another key.
    "api_generate.json": ("GenerateFunction", None, {"statusCode": 503}),
    "api_feedback.json": ("FeedbackFunction", None, {"statusCode": 404}),
    "api_get_generation.json": ("QueryFunction", None, {"statusCode": 404}),
    "api_get_experiment.json": ("QueryFunction", None, {"statusCode": 200}),
    "sqs_recorder.json": ("RecorderFunction", None, {"batchItemFailures": []}),
    # No endpoint in a fresh account: the events are aggregated, nothing is decided.
    "schedule_aggregate.json": ("AggregateFunction", None, {"decision": None, "applied": False}),
    # AppSync direct Lambda resolver events: no endpoint yet; nothing recorded yet.
    "appsync_generate.json": ("GraphQLFunction", "ServiceUnavailable", {}),
    "appsync_experiment.json": (
        "GraphQLFunction",
        None,
        {"endpointName": "tweetgen", "variants": [], "lastDecision": None},
    ),
}
# Not a function's event: what EventBridge delivers to the rollout state machine.
STATE_MACHINE_EVENTS = {"s3_object_created_model.json"}
CUSTOM_RESOURCE_EVENTS = {"cfn_migrate.json"}


def _invoke(logical_id: str, event: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tweetgen_local.cli",
            "invoke",
            logical_id,
            "-e",
            str(event),
            "--state-dir",
            str(state_dir),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_every_event_file_is_covered() -> None:
    files = {p.name for p in (REPO_ROOT / "events").glob("*.json")}
    assert files == set(EXPECTED) | STATE_MACHINE_EVENTS | CUSTOM_RESOURCE_EVENTS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invoke_runs_the_handler_on_the_sample_event(name: str, tmp_path: Path) -> None:
    logical_id, error_type, answers = EXPECTED[name]
    done = _invoke(logical_id, REPO_ROOT / "events" / name, tmp_path)
    answer = json.loads(done.stdout)
    if error_type is None:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "errorType" not in answer
        assert {k: answer.get(k) for k in answers} == answers, answer
    else:
        assert done.returncode == 1, done.stderr[-2000:]
        assert answer["errorType"] == error_type, answer
    assert "REPORT RequestId" in done.stderr  # Lambda-style logs of the run


def test_the_migration_answers_cloudformation_and_creates_the_schema(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    class Answers(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    event = json.loads((REPO_ROOT / "events" / "cfn_migrate.json").read_text())
    # The sample's pre-signed S3 URL, pointed at this test instead.
    event["ResponseURL"] = f"http://127.0.0.1:{server.server_address[1]}/answer"
    (tmp_path / "event.json").write_text(json.dumps(event))
    try:
        done = _invoke("MigrateFunction", tmp_path / "event.json", tmp_path / "state")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-2000:]
    (answer,) = received
    assert answer["Status"] == "SUCCESS", answer
    assert answer["RequestId"] == event["RequestId"]
    assert answer["LogicalResourceId"] == "DatabaseSchema"
    assert answer["Data"]["SchemaVersion"] >= 1


def test_the_state_machine_event_is_an_s3_object_created_event() -> None:
    event = json.loads((REPO_ROOT / "events" / "s3_object_created_model.json").read_text())
    assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
    assert event["detail"]["object"]["key"].endswith("model.tar.gz")
