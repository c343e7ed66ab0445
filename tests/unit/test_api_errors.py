"""The REST functions' answers to what no route expects: a body nested too deeply for Python's
JSON parser, a database that does not answer. Each handler runs cold in its own process, with
the Lambda runtime's environment (tests.unit.test_handler_imports.cold_import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.unit.test_handler_imports import cold_import, unreachable_database_url

_HANDLE = """
import json, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
context = types.SimpleNamespace(
    function_name="tweetgen-probe", function_version="$LATEST", memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:tweetgen-probe",
    aws_request_id="r-1",
)
print(json.dumps(app.lambda_handler(json.loads(EVENT), context)))
"""


def handle(function: str, event: dict[str, Any], tmp_path: Path, **env: str) -> dict[str, Any]:
    """``event`` through the cold ``function``'s handler: its API Gateway answer."""
    probe = _HANDLE.replace("EVENT", repr(json.dumps(event)))
    return cold_import(
        function,
        tmp_path,
        probe,
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="tweetgen",
        **env,
    )


def sample_event(name: str) -> dict[str, Any]:
    return dict(json.loads((REPO_ROOT / "events" / name).read_text()))


@pytest.mark.parametrize(
    ("function", "event_file"),
    [("generate", "api_generate.json"), ("feedback", "api_feedback.json")],
)
def test_a_body_nested_too_deeply_is_a_422_with_a_reason(
    function: str, event_file: str, tmp_path: Path
) -> None:
    event = sample_event(event_file) | {"body": "[" * 100_000, "isBase64Encoded": False}
    answer = handle(function, event, tmp_path)
    assert answer["statusCode"] == 422
    assert json.loads(answer["body"])["errors"] == [
        {"field": "body", "reason": "the body is nested too deeply to read"}
    ]


@pytest.mark.parametrize(
    ("function", "event_file", "field"),
    [("generate", "api_generate.json", "seed"), ("feedback", "api_feedback.json", "reward")],
)
@pytest.mark.parametrize(
    ("body", "base64", "reason"),
    [
        # More digits than Python converts to an integer (valid JSON all the same).
        ('{"FIELD": ' + "1" * 5000 + "}", False, "the body holds a number too long to read"),
        # A base64 body (as API Gateway sends binary media) that is not UTF-8 text.
        ('{"prompt": "\xff\xfe"}', True, "the body is not UTF-8 text (byte 0xff)"),
        ("not base64 at all!", True, "the body is not valid base64"),
    ],
)
def test_a_body_that_cannot_be_read_is_a_422_with_a_reason(
    function: str,
    event_file: str,
    field: str,
    body: str,
    base64: bool,
    reason: str,
    tmp_path: Path,
) -> None:
    import base64 as b64

    text = body.replace("FIELD", field)
    encoded = b64.b64encode(text.encode("latin-1")).decode() if base64 else text
    if body.startswith("not base64"):
        encoded = text
    event = sample_event(event_file) | {"body": encoded, "isBase64Encoded": base64}
    answer = handle(function, event, tmp_path)
    assert answer["statusCode"] == 422
    assert json.loads(answer["body"])["errors"] == [{"field": "body", "reason": reason}]


def test_reading_a_generation_while_the_database_is_unreachable_is_a_503_to_retry(
    tmp_path: Path,
) -> None:
    answer = handle(
        "query",
        sample_event("api_get_generation.json"),
        tmp_path,
        DATABASE_URL=unreachable_database_url(),
    )
    assert answer["statusCode"] == 503
    body = json.loads(answer["body"])
    assert body["message"].startswith("the database is not reachable right now")
    assert answer["multiValueHeaders"]["Retry-After"] == ["5"]
