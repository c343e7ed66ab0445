"""Functions as warm Lambdas in worker processes, and ``tweetgen invoke``.

These tests start real worker processes (about 0.1 s each); each test starts only a few.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from tweetgen_local.functions import (
    FunctionNotFound,
    FunctionPool,
    add_invoke_arguments,
    invoke_command,
)
from tweetgen_local.template import ResolveContext, ResolveError, Template
from tweetgen_local.wiring import AwsClients, provision

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "local_stack"


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load(FIXTURE / "template.yaml")


def _context(template: Template) -> ResolveContext:
    """What provisioning would fill for the probe's environment."""
    ctx = template.context(stack_name="unit")
    ctx.set_resource("WorkQueue", "http://localhost/123456789012/work", Arn="arn:q")
    ctx.set_resource("ArtifactBucket", "unit-bucket", Arn="arn:aws:s3:::unit-bucket")
    ctx.set_resource("DatabaseSecret", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db")
    ctx.set_resource("ModelEndpoint", "arn:e", EndpointName="tweetgen")
    return ctx


@pytest.fixture
def pool(template: Template) -> Iterator[FunctionPool]:
    with FunctionPool(
        template, _context(template), {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    ) as p:
        yield p


def test_a_worker_sees_exactly_the_template_environment(pool: FunctionPool) -> None:
    result = pool.invoke("OtherProbeFunction", {})
    assert result.error is None, result.error
    seen = result.payload
    expected = pool.environment("OtherProbeFunction")
    per_worker = {"AWS_LAMBDA_LOG_STREAM_NAME", "_X_AMZN_TRACE_ID"}
    assert set(seen["env"]) == set(expected) | per_worker
    assert {k: v for k, v in seen["env"].items() if k not in per_worker} == expected
    assert "PYTEST_CURRENT_TEST" not in seen["env"] and "HOME" not in seen["env"]
    env = seen["env"]
    assert env["LOG_LEVEL"] == "DEBUG" and env["STAGE"] == "dev" and env["OTHER"] == "1"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "unit-other-probe"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["_HANDLER"] == "app.lambda_handler"
    assert env["LAMBDA_TASK_ROOT"] == str(FIXTURE / "functions" / "probe")
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert seen["sys_path"][:2] == [
        str(FIXTURE / "functions" / "probe"),
        str(FIXTURE / "layers" / "common"),
    ]
    assert seen["cwd"] == str(FIXTURE / "functions" / "probe")
    assert seen["layer"] == "hello from the layer"
    # Neither the project's editable install nor the stack's own modules leak in.
    assert seen["tweetgen_importable"] is False
    assert seen["tweetgen_local_loaded"] is False
    context = seen["context"]
    assert context["function_name"] == "unit-other-probe"
    assert context["memory_limit_in_mb"] == "128"
    assert context["invoked_function_arn"].endswith(":function:unit-other-probe")
    assert context["aws_request_id"] == result.request_id
    assert context["log_group_name"] == "/aws/lambda/unit-other-probe"
    assert 0 < context["remaining_ms"] <= 1000


def test_functions_share_no_module_state_or_environment(pool: FunctionPool) -> None:
    first = pool.invoke("ProbeFunction", {"action": "set", "value": "mine"})
    assert first.error is None, first.error
    assert first.payload["marker"] == "mine" and first.payload["env"]["PROBE_MARKER"] == "mine"
    assert first.payload["env"]["QUEUE_URL"] == "http://localhost/123456789012/work"
    assert "ONLY_IN_PROD" not in first.payload["env"]

    other = pool.invoke("OtherProbeFunction", {}).payload
    assert other["marker"] is None and "PROBE_MARKER" not in other["env"]
    assert "QUEUE_URL" not in other["env"] and other["pid"] != first.payload["pid"]

    again = pool.invoke("ProbeFunction", {}).payload
    assert again["marker"] == "mine" and again["calls"] == 2  # the same warm worker


def test_warm_reuse_and_cold_starts(pool: FunctionPool) -> None:
    cold = pool.invoke("OtherProbeFunction", {})
    warm = pool.invoke("unit-other-probe", {})  # by physical name
    arn = "arn:aws:lambda:us-east-1:123456789012:function:unit-other-probe:$LATEST"
    by_arn = pool.invoke(arn, {})
    assert cold.cold_start and cold.init_ms is not None and cold.init_ms > 0
    assert not warm.cold_start and warm.init_ms is None and not by_arn.cold_start
    assert cold.payload["pid"] == warm.payload["pid"] == by_arn.payload["pid"]
    assert "Init Duration" in cold.logs and "Init Duration" not in warm.logs
    pool.reset("OtherProbeFunction")
    fresh = pool.invoke("OtherProbeFunction", {})
    assert fresh.cold_start and fresh.payload["pid"] != cold.payload["pid"]
    assert fresh.payload["calls"] == 1
    with pytest.raises(FunctionNotFound, match="no function 'Nope'"):
        pool.invoke("Nope", {})


def test_timeout_kills_the_worker_and_the_next_call_starts_cold(pool: FunctionPool) -> None:
    first = pool.invoke("OtherProbeFunction", {})
    timed_out = pool.invoke("OtherProbeFunction", {"action": "sleep", "seconds": 5})
    assert timed_out.error is not None
    assert timed_out.error["errorType"] == "Sandbox.Timedout"
    assert timed_out.error["errorMessage"] == "Task timed out after 1.00 seconds"
    assert 900 <= timed_out.duration_ms < 3000
    assert "Task timed out after 1.00 seconds" in timed_out.logs
    with pytest.raises(ProcessLookupError):
        os.kill(first.payload["pid"], 0)
    after = pool.invoke("OtherProbeFunction", {})
    assert after.error is None and after.cold_start
    short = pool.invoke("OtherProbeFunction", {"action": "sleep", "seconds": 2}, timeout=0.3)
    assert short.error is not None and short.error["errorMessage"].endswith("0.30 seconds")


def test_a_crashed_worker_is_replaced_on_the_next_call(pool: FunctionPool) -> None:
    before = pool.invoke("OtherProbeFunction", {}).payload["pid"]
    crashed = pool.invoke("OtherProbeFunction", {"action": "crash"})
    assert crashed.error is not None
    assert crashed.error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in crashed.error["errorMessage"]
    after = pool.invoke("OtherProbeFunction", {})
    assert after.cold_start and after.payload["pid"] != before


def test_handler_errors_have_lambdas_shape_and_keep_the_worker(pool: FunctionPool) -> None:
    failed = pool.invoke("OtherProbeFunction", {"action": "raise", "message": "bad input"})
    assert failed.error is not None
    assert failed.error["errorType"] == "ValueError"
    assert failed.error["errorMessage"] == "bad input"
    assert failed.error["requestId"] == failed.request_id
    trace = failed.error["stackTrace"]
    assert len(trace) == 1 and "probe/app.py" in trace[0] and "lambda_handler" in trace[0]
    assert "[ERROR] ValueError: bad input" in failed.logs
    assert pool.invoke("OtherProbeFunction", {}).cold_start is False

    marshal = pool.invoke("OtherProbeFunction", {"action": "unserializable"})
    assert marshal.error is not None and marshal.error["errorType"] == "Runtime.MarshalError"

    broken = pool.invoke("BrokenFunction", {})
    assert broken.error is not None and broken.cold_start
    assert broken.error["errorType"] == "Runtime.ImportModuleError"
    assert broken.error["errorMessage"] == (
        "Unable to import module 'app': No module named 'not_a_module_anywhere'"
    )


def test_logs_are_cut_per_invocation(pool: FunctionPool) -> None:
    first = pool.invoke("OtherProbeFunction", {"action": "print", "text": "first call"})
    second = pool.invoke("OtherProbeFunction", {"action": "print", "text": "second call"})
    assert "first call" in first.logs and "and to stderr" in first.logs
    assert "first call" not in second.logs and "second call" in second.logs
    lines = second.logs.splitlines()
    assert lines[0] == f"START RequestId: {second.request_id} Version: $LATEST"
    assert lines[-2] == f"END RequestId: {second.request_id}"
    assert lines[-1].startswith(f"REPORT RequestId: {second.request_id}\tDuration: ")
    assert "Memory Size: 128 MB" in lines[-1]


def test_powertools_reads_the_lambda_context(pool: FunctionPool) -> None:
    first = pool.invoke("PowertoolsFunction", {})
    second = pool.invoke("PowertoolsFunction", {})
    assert first.error is None, first.error
    assert first.payload["cold_start"] is True and second.payload["cold_start"] is False
    assert first.payload["function_name"] == "unit-PowertoolsFunction"
    assert first.payload["function_memory_size"] == "256"
    assert first.payload["function_request_id"] == first.request_id
    assert first.payload["service"] == "fixture"
    assert 0 < first.payload["remaining_ms"] <= 5000
    logged = [json.loads(line) for line in first.logs.splitlines() if line.startswith("{")]
    assert logged and logged[0]["message"] == "handled" and logged[0]["answer"] == 42


def test_env_overrides_in_sams_format_touch_declared_variables_only(template: Template) -> None:
    overrides = {
        "Parameters": {"STAGE": "everywhere", "UNDECLARED": "x"},
        "OtherProbeFunction": {"LOG_LEVEL": "WARNING"},
    }
    with FunctionPool(template, _context(template), env_overrides=overrides) as pool:
        env = pool.environment("OtherProbeFunction")
    assert env["STAGE"] == "everywhere" and env["LOG_LEVEL"] == "WARNING"
    assert "UNDECLARED" not in env


def test_unresolvable_environments_fail_before_any_process_starts(template: Template) -> None:
    with (
        FunctionPool(template, template.context()) as pool,
        pytest.raises(ResolveError, match=r"Resources\.ProbeFunction\.Properties\.Environment"),
    ):
        pool.invoke("ProbeFunction", {})


def test_close_ends_every_worker(template: Template) -> None:
    pool = FunctionPool(template, _context(template))
    pids = [
        pool.invoke(name, {}).payload["pid"] for name in ("ProbeFunction", "OtherProbeFunction")
    ]
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        pool.invoke("ProbeFunction", {})


# ----------------------------------------------------------------- tweetgen invoke


def test_invoke_arguments_follow_sam_local_invoke() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_invoke_arguments(parser)
    args = parser.parse_args(["Fn", "-e", "ev.json", "-n", "env.json", "-t", "t.yaml"])
    assert (args.function, args.event, args.env_vars, args.template) == (
        "Fn",
        "ev.json",
        Path("env.json"),
        Path("t.yaml"),
    )


def _invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = invoke_command(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_invoke_without_a_local_stack_uses_a_moto_server_for_the_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, payload, err = _invoke(
        [
            "ProbeFunction",
            "-e",
            str(FIXTURE / "events" / "probe.json"),
            "-t",
            str(FIXTURE / "template.yaml"),
            "--state-dir",
            str(tmp_path / "no-stack"),
            "--stack-name",
            "invoke-alone",
        ],
        capsys,
    )
    assert code == 0, err
    assert payload["message_id"] and payload["endpoint"].startswith("http://127.0.0.1:")
    assert "START RequestId:" in err and "REPORT RequestId:" in err


def test_invoke_against_a_running_local_stack(
    template: Template, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        ctx = template.context(stack_name="invoke-stack")
        provision(template, ctx, AwsClients(session, url))
        state = tmp_path / "state"
        state.mkdir()
        endpoints = {"aws": url, "sagemaker_runtime": "http://127.0.0.1:9", "region": "us-east-1"}
        (state / "endpoints.json").write_text(json.dumps(endpoints), encoding="utf-8")
        env_vars = tmp_path / "env.json"
        env_vars.write_text(json.dumps({"ProbeFunction": {"STAGE": "from-file"}}))
        common = ["-t", str(FIXTURE / "template.yaml"), "--state-dir", str(state)]
        common += ["--stack-name", "invoke-stack"]

        event = tmp_path / "event.json"
        event.write_text(json.dumps({"action": "aws", "body": "to the running stack"}))
        code, payload, err = _invoke(["ProbeFunction", "-e", str(event), *common], capsys)
        assert code == 0, err
        assert payload["endpoint"] == url
        sqs = session.client("sqs", endpoint_url=url)
        got = sqs.receive_message(QueueUrl=ctx.resources["WorkQueue"]["Ref"], WaitTimeSeconds=1)
        assert [m["Body"] for m in got["Messages"]] == ["to the running stack"]

        event.write_text(json.dumps({}))
        code, payload, err = _invoke(
            ["ProbeFunction", "-e", str(event), "--env-vars", str(env_vars), *common], capsys
        )
        assert code == 0, err
        assert payload["env"]["STAGE"] == "from-file"
        assert payload["env"]["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == "http://127.0.0.1:9"
        assert payload["env"]["QUEUE_URL"] == ctx.resources["WorkQueue"]["Ref"]
        assert payload["env"]["SECRET_ARN"] == ctx.resources["DatabaseSecret"]["Ref"]

        event.write_text(json.dumps({"action": "raise", "message": "handler failed"}))
        code, payload, err = _invoke(["OtherProbeFunction", "-e", str(event), *common], capsys)
        assert code == 1
        assert payload["errorType"] == "ValueError" and payload["errorMessage"] == "handler failed"
        assert "[ERROR] ValueError: handler failed" in err
    finally:
        server.stop()


def test_invoke_reports_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template_arg = ["-t", str(FIXTURE / "template.yaml"), "--state-dir", str(tmp_path)]
    assert invoke_command(["Nope", *template_arg]) == 2
    assert "no function 'Nope'" in capsys.readouterr().err
    assert invoke_command(["ProbeFunction", "-e", str(tmp_path / "none.json"), *template_arg]) == 2
    assert "cannot read event" in capsys.readouterr().err
    assert invoke_command(["ProbeFunction", "-t", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read template" in capsys.readouterr().err
