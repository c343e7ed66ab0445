"""What each Lambda handler module pulls in at cold start, imported as the Lambda runtime does
(its environment variables set, X-Ray tracing active as the template deploys it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

FUNCTIONS = sorted(p.parent.name for p in (REPO_ROOT / "functions").glob("*/app.py"))
DATABASE_FUNCTIONS = {"aggregate", "graphql", "migrate", "query", "recorder", "rollout_record"}
NEVER = {"tensorflow", "numpy", "transformers", "tf_keras", "keras", "tokenizers"}
# Functions that neither parse a request body nor a queued event nor an artifact's metadata:
# the request models, pydantic and Powertools' request validation (tens of milliseconds of
# cold start) stay out of them.
NO_PYDANTIC = {
    "aggregate",
    "migrate",
    "query",
    "rollout_plan",
    "rollout_record",
    "rollout_smoke_test",
}
# Functions that read the experiment's figures: the others leave its repositories and statistics
# out (the database package imports them on first use).
EXPERIMENT_FUNCTIONS = {"aggregate", "graphql", "query"}

_PROBE = """
import gc, importlib, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
def collections():
    return sum(generation["collections"] for generation in gc.get_stats())
before = collections()
importlib.import_module("app")
from aws_xray_sdk.core.patcher import _PATCHED_MODULES
print(json.dumps({
    "gc": {
        "enabled": gc.isenabled(),
        "frozen": gc.get_freeze_count(),
        "collections": collections() - before,
    },
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
    "ours": sorted(m for m in sys.modules if m.startswith("tweetgen.")),
    "patched": sorted(_PATCHED_MODULES),
}))
"""


def cold_import(function: str, tmp_path: Path) -> dict[str, Any]:
    code_dir = REPO_ROOT / "functions" / function
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env |= {
        "AWS_LAMBDA_FUNCTION_NAME": f"tweetgen-{function}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ENDPOINT_NAME": "tweetgen",
        "VARIANTS": "lstm,gpt2",
        "EVENTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/events",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(code_dir), str(REPO_ROOT / "layers" / "common")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_handler_imports_no_ml_library_and_traces_only_what_it_calls(
    function: str, tmp_path: Path
) -> None:
    loaded = cold_import(function, tmp_path)
    assert NEVER.isdisjoint(loaded["modules"]), NEVER & set(loaded["modules"])
    if function in DATABASE_FUNCTIONS:
        assert loaded["patched"] == ["botocore", "pymysql"]
    else:
        # Tracing everything the layer carries would import the database libraries too.
        assert loaded["patched"] == ["botocore"]
        assert {"sqlalchemy", "pymysql", "requests"}.isdisjoint(loaded["modules"])
    if function in NO_PYDANTIC:
        assert "pydantic" not in loaded["modules"]
    if function not in EXPERIMENT_FUNCTIONS:
        assert "tweetgen.adapters.database.experiment" not in loaded["ours"]
        assert "tweetgen.domain.statistics" not in loaded["ours"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_handler_imports_without_garbage_collection_then_freezes_what_it_built(
    function: str, tmp_path: Path
) -> None:
    collector = cold_import(function, tmp_path)["gc"]
    # No collection ran during the imports (with the collector on: about 250 in the recorder;
    # the one or two allowed run once it is back on, over empty generations), the objects
    # they made sit in the permanent generation, and the collector is on again.
    assert collector["collections"] <= 2
    assert collector["frozen"] > 50_000
    assert collector["enabled"] is True
