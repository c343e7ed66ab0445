"""template.yaml passes cfn-lint and ``sam validate --lint`` with no error and no warning, and the
rollout state machine agrees with the template that deploys it.

SAM CLI lives in its own environment (``make sam-venv``, ``requirements-sam.lock``): ``SAM_CLI``
names its ``sam``, else ``.venv-sam/bin/sam``, else ``sam`` on PATH. Without one the SAM tests
are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from tweetgen_local.template import Template

from tests.conftest import REPO_ROOT, sam_cli

TEMPLATE = REPO_ROOT / "template.yaml"
ROLLOUT = REPO_ROOT / "statemachines" / "rollout.asl.json"
SAM_LOCK = REPO_ROOT / "requirements-sam.lock"
LINT_REGIONS = ["us-east-1", "eu-west-1"]
# A template that each check must refuse: an error (E3034, a value out of range) and a warning
# (W3005, a DependsOn that a Ref already implies), added as the first resources.
FLAWED_RESOURCES = """\
  LintProbeQueue:
    Type: AWS::SQS::Queue
    DependsOn: ArtifactBucket
    Properties:
      QueueName: !Ref ArtifactBucket
      DelaySeconds: 901

"""


def _flawed_template(directory: Path) -> Path:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert "\nResources:\n" in text
    path = directory / "template.yaml"
    path.write_text(text.replace("\nResources:\n", "\nResources:\n" + FLAWED_RESOURCES, 1))
    return path


def test_cfn_lint_finds_no_error_and_no_warning() -> None:
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=LINT_REGIONS))
    assert [str(match) for match in matches] == []


def test_cfn_lint_reports_errors_and_warnings(tmp_path: Path) -> None:
    matches = lint_file(_flawed_template(tmp_path), config=ManualArgs(regions=LINT_REGIONS))
    assert {match.rule.id for match in matches} == {"E3034", "W3005"}


def test_both_checks_use_the_same_cfn_lint() -> None:
    def pinned(lock: Path) -> str:
        found = re.search(r"(?m)^cfn-lint==(\S+)$", lock.read_text(encoding="utf-8"))
        assert found is not None, f"{lock.name} does not pin cfn-lint"
        return found.group(1)

    assert pinned(SAM_LOCK) == pinned(REPO_ROOT / "requirements.lock")


def _sam_validate_lint(template: Path) -> subprocess.CompletedProcess[str]:
    """``sam validate --lint`` as CI runs it: offline, no credentials, no telemetry."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")
    }
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        SAM_CLI_TELEMETRY="0",
    )
    command = [sam_cli(), "validate", "--lint", "--region", "us-east-1"]
    return subprocess.run(
        [*command, "--template-file", str(template)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sam_validate_lint_passes() -> None:
    done = _sam_validate_lint(TEMPLATE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is a valid SAM Template" in done.stdout


def test_sam_validate_lint_refuses_errors_and_warnings(tmp_path: Path) -> None:
    done = _sam_validate_lint(_flawed_template(tmp_path))
    assert done.returncode != 0
    assert "E3034" in done.stdout and "W3005" in done.stdout, done.stdout + done.stderr


def _rollout_machine() -> dict[str, Any]:
    resource = Template.load(TEMPLATE).resources["RolloutStateMachine"]
    return resource.properties


def test_every_substitution_of_the_state_machine_is_defined() -> None:
    text = ROLLOUT.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{(\w+)\}", text))
    defined = set(_rollout_machine()["DefinitionSubstitutions"])
    assert used == defined


def test_the_state_machine_is_well_formed() -> None:
    definition = json.loads(ROLLOUT.read_text(encoding="utf-8"))
    states: dict[str, dict[str, Any]] = definition["States"]

    def targets(state: dict[str, Any]) -> set[str]:
        found = {state[key] for key in ("Next", "Default") if key in state}
        found |= {choice["Next"] for choice in state.get("Choices", [])}
        found |= {catch["Next"] for catch in state.get("Catch", [])}
        return found

    reachable, pending = set(), [definition["StartAt"]]
    while pending:
        name = pending.pop()
        if name in reachable:
            continue
        assert name in states, f"a transition goes to the unknown state {name}"
        reachable.add(name)
        pending.extend(targets(states[name]))
    assert reachable == set(states), f"unreachable: {set(states) - reachable}"
    for name, state in states.items():
        ends = state["Type"] in ("Succeed", "Fail") or state.get("End") is True
        assert ends or targets(state), f"{name} goes nowhere"
        if state["Type"] == "Task":
            assert "Catch" in state or name.startswith("Describe"), f"{name} has no Catch"


def test_the_inference_image_map_is_up_to_date() -> None:
    pytest.importorskip("sagemaker.core.image_uris")
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import refresh_image_map
    finally:
        sys.path.pop(0)
    assert refresh_image_map.main(["--check", "--template", str(TEMPLATE)]) == 0


def test_the_rollout_rule_matches_model_uploads_only() -> None:
    pattern = _rollout_machine()["Events"]["ModelUploaded"]["Properties"]["Pattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"wildcard": "models/*/model.tar.gz"}]


def test_functions_use_the_common_layer_and_exist() -> None:
    template = Template.load(TEMPLATE)
    for logical_id in (
        "RolloutValidateFunction",
        "RolloutPlanFunction",
        "RolloutSmokeTestFunction",
        "RolloutRecordFunction",
    ):
        function = template.function(logical_id)
        assert [layer.logical_id for layer in function.layers] == ["CommonLayer"]
        code = function.code_uri
        assert code is not None and (code / "app.py").is_file()
        assert (code / "requirements.txt").is_file()
        assert Path(code / "app.py").read_text(encoding="utf-8").count("lambda_handler") >= 1


def test_an_upload_queued_behind_a_rollout_outlasts_it() -> None:
    """Plan retries while an earlier rollout holds the endpoint; the upload is recorded failed
    when its retries run out. They must outlast the longest rollout: its deployment and then
    its rollback, each up to RolloutTimeoutSeconds, plus the canary and termination waits."""
    plan = json.loads(ROLLOUT.read_text())["States"]["Plan"]
    (queued,) = [r for r in plan["Retry"] if "RolloutQueued" in r["ErrorEquals"]]
    assert "EndpointBusy" in queued["ErrorEquals"]
    # What the retries wait on average (full jitter: half of each capped delay).
    waited = sum(
        min(queued["MaxDelaySeconds"], queued["IntervalSeconds"] * queued["BackoffRate"] ** n) / 2
        for n in range(queued["MaxAttempts"])
    )
    template = Template.load(TEMPLATE)
    timeout = int(template.document["Parameters"]["RolloutTimeoutSeconds"]["Default"])
    environment = template.function("RolloutPlanFunction").environment
    longest = (
        2 * timeout
        + int(environment["CANARY_WAIT_SECONDS"])
        + int(environment["TERMINATION_WAIT_SECONDS"])
    )
    assert waited > longest
