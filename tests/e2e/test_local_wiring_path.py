"""S3 upload → EventBridge rule → state machine → Lambda task in the function's own worker.

The three pieces moto lacks meet here, inside the local stack, on the wiring tests' fixture template.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
from tweetgen_local.stack import LocalStack, StackOptions

from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "local_stack" / "template.yaml"


def test_an_upload_runs_the_state_machine_and_its_real_lambda_task(tmp_path: Path) -> None:
    stack = LocalStack(StackOptions(state_dir=tmp_path, template=FIXTURE), log=lambda _: None)
    endpoints = stack.start()
    try:
        session = boto3.session.Session(region_name=endpoints["region"])
        s3 = session.client("s3", endpoint_url=endpoints["aws"])
        sfn = session.client("stepfunctions", endpoint_url=endpoints["aws"])
        bucket = endpoints["artifact_bucket"]
        machine = stack.ctx.resources["FlowStateMachine"]["Ref"]
        s3.put_object(Bucket=bucket, Key="flows/run-1.txt", Body=b"go")
        s3.put_object(Bucket=bucket, Key="elsewhere/ignored.txt", Body=b"no")

        deadline = time.monotonic() + 60
        executions: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            executions = sfn.list_executions(stateMachineArn=machine)["executions"]
            if executions and all(e["status"] != "RUNNING" for e in executions):
                break
            time.sleep(0.3)
        assert len(executions) == 1  # only the key under flows/ matched the rule
        described = sfn.describe_execution(executionArn=executions[0]["executionArn"])
        assert described["status"] == "SUCCEEDED", described
        payload = json.loads(described["output"])["Payload"]
        # The handler ran in its own worker with the environment the template gives it.
        assert payload["env"]["BUCKET"] == bucket
        assert payload["env"]["AWS_LAMBDA_FUNCTION_NAME"].endswith("ProbeFunction")
        assert payload["context"]["function_name"] == payload["env"]["AWS_LAMBDA_FUNCTION_NAME"]
        assert payload["tweetgen_local_loaded"] is False
    finally:
        stack.stop()
