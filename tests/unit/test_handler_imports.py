"""What each Lambda handler module pulls in at cold start, imported as the Lambda runtime does
(its environment variables set, X-Ray tracing active as the template deploys it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tweetgen_local.template import Template

from tests.conftest import REPO_ROOT

FUNCTIONS = sorted(p.parent.name for p in (REPO_ROOT / "functions").glob("*/app.py"))
# Functions that import the database layer (SQLAlchemy) at cold start. GraphQL's mutations need
# no database, so its queries import it on first use; no function imports the MySQL driver
# before it makes an engine for it (tweetgen.adapters.tracing.trace_database_driver).
DATABASE_AT_IMPORT = {"aggregate", "migrate", "query", "recorder", "rollout_record"}
NEVER = {"tensorflow", "numpy", "transformers", "tf_keras", "keras", "tokenizers"}
# Functions that parse neither a request body nor an artifact's metadata: the request models,
# pydantic and Powertools' request validation (tens of milliseconds of cold start) stay out of
# them. The recorder parses queued events, which are msgspec Structs (tweetgen.domain.events).
NO_PYDANTIC = {
    "aggregate",
    "migrate",
    "query",
    "recorder",
    "rollout_plan",
    "rollout_record",
    "rollout_smoke_test",
}
# Functions that read the experiment's figures: the others leave its repositories and statistics
# out (the database package imports them on first use).
EXPERIMENT_FUNCTIONS = {"aggregate", "query"}

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
    "powertools": sorted(m for m in sys.modules if m.startswith("aws_lambda_powertools.")),
    "patched": sorted(_PATCHED_MODULES),
    "sqlite": sorted(m for m in sys.modules if m.startswith(("sqlite3", "sqlalchemy.dialects.sqlite"))),
    # pydantic's plugin loader records what it found the first time it looks.
    "plugin_scan": getattr(sys.modules.get("pydantic.plugin._loader"), "_plugins", None) is not None,
}))
"""


def cold_import(
    function: str, tmp_path: Path, probe: str = _PROBE, **extra_env: str
) -> dict[str, Any]:
    code_dir = REPO_ROOT / "functions" / function
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env |= Template.load(REPO_ROOT / "template.yaml").global_environment()
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
        **extra_env,
    }
    done = subprocess.run(
        [sys.executable, "-c", probe, str(code_dir), str(REPO_ROOT / "layers" / "common")],
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
    # Tracing everything the layer carries would import the database libraries everywhere.
    assert loaded["patched"] == ["botocore"]
    assert {"pymysql", "requests"}.isdisjoint(loaded["modules"])
    if function not in DATABASE_AT_IMPORT:
        assert "sqlalchemy" not in loaded["modules"]
    if function in NO_PYDANTIC:
        assert "pydantic" not in loaded["modules"]
    # The recorder goes message by message (Powertools' batch utility) only when a batch cannot
    # be written at once: a cold start whose batch is written never loads it.
    assert "aws_lambda_powertools.utilities.batch" not in loaded["powertools"]
    if function not in EXPERIMENT_FUNCTIONS:
        assert "tweetgen.adapters.database.experiment" not in loaded["ours"]
        assert "tweetgen.domain.statistics" not in loaded["ours"]
    # SQLite is the local stack's database: its modules load with an engine that uses them.
    assert loaded["sqlite"] == []
    # The template turns pydantic's plugins off: no scan of every package's entry points.
    assert loaded["plugin_scan"] is False


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


# The Lambda context a probe's handler gets (what Powertools' logger reads of it).
_CONTEXT = """context = types.SimpleNamespace(
    function_name="tweetgen-probe", function_version="$LATEST", memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:tweetgen-probe",
    aws_request_id="r-1",
)"""

_GRAPHQL_COLD_START = """
import json, os, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import boto3
from moto import mock_aws

CONTEXT
with mock_aws():
    queue = boto3.client("sqs").create_queue(QueueName="events")["QueueUrl"]
    secret = boto3.client("secretsmanager").create_secret(Name="ids", SecretString="k" * 64)
    os.environ |= {"EVENTS_QUEUE_URL": queue, "GENERATION_ID_SECRET_ARN": secret["ARN"]}
    import app
    from tweetgen.domain.serving import GenerationIds

    def resolve(parent, field, arguments):
        event = {"arguments": arguments, "identity": None, "source": None, "prev": None,
                 "request": {"headers": {}, "domainName": None},
                 "info": {"parentTypeName": parent, "fieldName": field, "variables": {},
                          "selectionSetList": [], "selectionSetGraphQL": ""}, "stash": {}}
        return app.lambda_handler(event, context)

    generation_id = GenerationIds(b"k" * 64).issue("gpt2")
    receipt = resolve("Mutation", "sendFeedback", {"generationId": generation_id, "reward": "like"})
    after_mutation = "sqlalchemy" in sys.modules
    app.database().migrate()
    answer = resolve("Query", "generation", {"id": generation_id})
    print(json.dumps({"receipt": receipt, "after_mutation": after_mutation, "answer": answer}))
""".replace("CONTEXT\n", _CONTEXT + "\n", 1)


def test_graphql_serves_a_mutation_without_the_database_and_a_query_with_it(
    tmp_path: Path,
) -> None:
    result = cold_import(
        "graphql",
        tmp_path,
        _GRAPHQL_COLD_START,
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="tweetgen",
        DATABASE_URL=f"sqlite:///{tmp_path / 'tweetgen.db'}",
    )
    assert result["receipt"]["status"] == "accepted", result
    assert result["after_mutation"] is False
    assert result["answer"] is None  # queued, not yet recorded: the query read the database


_DRIVER_TRACING = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from aws_xray_sdk.core.patcher import _PATCHED_MODULES
from tweetgen.adapters.database.engine import create_engine
from tweetgen.adapters.tracing import new_tracer

new_tracer()
seen = {"sqlite": None, "mysql": None}
create_engine("sqlite://")
seen["sqlite"] = sorted(_PATCHED_MODULES)
engine = create_engine("mysql+pymysql://tweetgen@127.0.0.1:9/none")
seen["mysql"] = sorted(_PATCHED_MODULES)
import pymysql
seen["wrapped"] = type(engine.dialect.loaded_dbapi.connect).__name__
print(json.dumps(seen))
"""


@pytest.mark.parametrize("disabled", [False, True])
def test_the_mysql_driver_is_traced_from_the_engine_that_uses_it(
    tmp_path: Path, disabled: bool
) -> None:
    extra = {"POWERTOOLS_TRACE_DISABLED": "true"} if disabled else {}
    seen = cold_import("migrate", tmp_path, _DRIVER_TRACING, **extra)
    assert seen["sqlite"] == (["botocore"] if not disabled else [])
    if disabled:
        assert seen["mysql"] == [] and seen["wrapped"] != "FunctionWrapper"
    else:
        # Patched before the engine's first connection: its connect is X-Ray's wrapper.
        assert seen["mysql"] == ["botocore", "pymysql"]
        assert seen["wrapped"] == "FunctionWrapper"


_RECORDER_COLD_START = """
import copy, json, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app

CONTEXT
app.database().migrate()
event = json.load(open(sys.argv[3]))
BATCH = "aws_lambda_powertools.utilities.batch"
written = app.lambda_handler(event, context)
after_written = BATCH in sys.modules
bad = copy.deepcopy(event["Records"][0])
bad["messageId"] = "poison"
bad["body"] = "not an event"
mixed = {"Records": [bad, *event["Records"]]}
reported = app.lambda_handler(mixed, context)
only_bad = app.lambda_handler({"Records": [bad]}, context)
print(json.dumps({"written": written, "after_written": after_written, "reported": reported,
                  "only_bad": only_bad,
                  "after_reported": BATCH in sys.modules,
                  "stored": app.database().generations.get(
                      json.loads(event["Records"][0]["body"])["generation_id"]) is not None}))
""".replace("CONTEXT\n", _CONTEXT + "\n", 1)


def unreachable_database_url() -> str:
    """A MySQL URL on a port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"mysql+pymysql://tweetgen@127.0.0.1:{port}/tweetgen"


def recorder_probe(tmp_path: Path, probe: str, database_url: str) -> dict[str, Any]:
    """``probe`` run by a cold recorder on ``database_url``, with the events file's batch."""
    return cold_import(
        "recorder",
        tmp_path,
        probe.replace("sys.argv[3]", repr(str(REPO_ROOT / "events" / "sqs_recorder.json"))),
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="tweetgen",
        DATABASE_URL=database_url,
    )


def test_the_recorder_loads_the_batch_utility_only_for_a_batch_it_cannot_write_at_once(
    tmp_path: Path,
) -> None:
    result = recorder_probe(tmp_path, _RECORDER_COLD_START, f"sqlite:///{tmp_path / 'tweetgen.db'}")
    assert result["written"] == {"batchItemFailures": []}
    assert result["after_written"] is False
    # A malformed message fails alone (and reaches the dead-letter queue after its retries).
    assert result["reported"] == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert result["after_reported"] is True
    # A batch of nothing but failures is reported the same way, not raised.
    assert result["only_bad"] == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert result["stored"] is True


_RECORDER_DATABASE_DOWN = """
import io, json, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app

CONTEXT
event = json.load(open(sys.argv[3]))
logs = io.StringIO()
app.logger.registered_handler.setStream(logs)
reported = app.lambda_handler(event, context)
lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
print(json.dumps({"reported": reported, "ids": [r["messageId"] for r in event["Records"]],
                  "batch_utility": "aws_lambda_powertools.utilities.batch" in sys.modules,
                  "levels": [line.get("level") for line in lines if "level" in line]}))
""".replace("CONTEXT\n", _CONTEXT + "\n", 1)


def test_the_recorder_fails_the_whole_batch_at_once_while_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    result = recorder_probe(tmp_path, _RECORDER_DATABASE_DOWN, unreachable_database_url())
    # Every message stays on the queue for its next delivery...
    assert result["reported"] == {
        "batchItemFailures": [{"itemIdentifier": i} for i in result["ids"]]
    }
    assert len(result["ids"]) >= 2
    # ...without one connection attempt and one logged error per message.
    assert result["batch_utility"] is False
    assert result["levels"].count("ERROR") == 1, result["levels"]
