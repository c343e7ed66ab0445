"""template.yaml passes cfn-lint (and ``sam validate --lint`` where SAM CLI is installed), and the
rollout state machine agrees with the template that deploys it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from tweetgen_local.template import Template

from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "template.yaml"
ROLLOUT = REPO_ROOT / "statemachines" / "rollout.asl.json"


def test_cfn_lint_finds_no_error_and_no_warning() -> None:
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    assert [str(match) for match in matches] == []


@pytest.mark.skipif(shutil.which("sam") is None, reason="AWS SAM CLI is not installed")
def test_sam_validate_lint() -> None:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    done = subprocess.run(
        ["sam", "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


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
