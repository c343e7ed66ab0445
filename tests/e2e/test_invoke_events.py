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
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# events/<file> → (logical id, the outcome a fresh account gives).
EXPECTED = {
    "rollout_validate.json": ("RolloutValidateFunction", "NoSuchKey"),
    "rollout_plan.json": ("RolloutPlanFunction", None),
    "rollout_smoke_test.json": ("RolloutSmokeTestFunction", "SmokeTestFailed"),
    "rollout_record.json": ("RolloutRecordFunction", "ExecutionDoesNotExist"),
}
# Not a function's event: what EventBridge delivers to the rollout state machine.
STATE_MACHINE_EVENTS = {"s3_object_created_model.json"}


def test_every_event_file_is_covered() -> None:
    files = {p.name for p in (REPO_ROOT / "events").glob("*.json")}
    assert files == set(EXPECTED) | STATE_MACHINE_EVENTS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invoke_runs_the_handler_on_the_sample_event(name: str, tmp_path: Path) -> None:
    logical_id, error_type = EXPECTED[name]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tweetgen_local.cli",
            "invoke",
            logical_id,
            "-e",
            f"events/{name}",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    answer = json.loads(done.stdout)
    if error_type is None:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "errorType" not in answer
    else:
        assert done.returncode == 1, done.stderr[-2000:]
        assert answer["errorType"] == error_type, answer
    assert "REPORT RequestId" in done.stderr  # Lambda-style logs of the run


def test_the_state_machine_event_is_an_s3_object_created_event() -> None:
    event = json.loads((REPO_ROOT / "events" / "s3_object_created_model.json").read_text())
    assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
    assert event["detail"]["object"]["key"].endswith("model.tar.gz")
