"""The three moto gaps the local stack fills, each exercised through the ordinary boto3 API."""

from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import boto3
import moto
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer
from tweetgen_local import moto_gaps
from tweetgen_local.moto_gaps import LambdaFunctionError

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tweetgen-test"
MOTO_CONFIG: Any = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}
WAIT_S = 10.0


def wait_until(
    probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = WAIT_S
) -> Any:
    """Poll ``probe`` until ``done`` holds for its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still {value!r} after {timeout} s")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    moto_gaps.install()
    yield
    moto_gaps.uninstall()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws(config=MOTO_CONFIG):
        yield


class Gate:
    """A deployer that records its calls and holds each deployment until released."""

    def __init__(self, failing: dict[str, str] | None = None):
        self.calls: list[tuple[str, str]] = []
        self.failing = failing or {}
        self._release = threading.Event()

    def __call__(self, endpoint_name: str, config_name: str) -> str | None:
        self.calls.append((endpoint_name, config_name))
        assert self._release.wait(WAIT_S), "deployment never released"
        return self.failing.get(config_name)

    def release(self) -> None:
        self._release.set()


# ----------------------------------------------------------------------- SageMaker


def make_configs(sm: Any, *configs: tuple[str, dict[str, float | None]]) -> None:
    """One model, and one endpoint config per (name, {variant: weight or None}) pair."""
    sm.create_model(
        ModelName="tweetgen-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "tfs"}
    )
    for name, weights in configs:
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": variant,
                    "ModelName": "tweetgen-model",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
                | ({} if weight is None else {"InitialVariantWeight": weight})
                for variant, weight in weights.items()
            ],
        )


def describe(sm: Any, name: str = "tweetgen") -> dict[str, Any]:
    return dict(sm.describe_endpoint(EndpointName=name))


def status_of(sm: Any, name: str = "tweetgen") -> Callable[[], str]:
    return lambda: describe(sm, name)["EndpointStatus"]


def weights(description: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {
        v["VariantName"]: (v["CurrentWeight"], v["DesiredWeight"])
        for v in description["ProductionVariants"]
    }


def in_service_endpoint(sm: Any) -> None:
    """Endpoint ``tweetgen`` on config ``v1`` (lstm only), InService; ``v2`` adds gpt2 at 0."""
    make_configs(sm, ("v1", {"lstm": 1.0}), ("v2", {"lstm": 1.0, "gpt2": 0.0}))
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    wait_until(status_of(sm), lambda s: s == "InService")


def test_create_endpoint_is_creating_then_in_service(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 0.0, "gpt2": 2.0, "ngram": None}))
    moto_gaps.set_default_deploy_delay(0.5)
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert status_of(sm)() == "Creating"
    description = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] != "Creating")
    assert description["EndpointStatus"] == "InService"
    assert description["EndpointConfigName"] == "v1"
    assert "FailureReason" not in description
    # A weight of 0 is kept, an unset one is SageMaker's default of 1.
    assert weights(description) == {"lstm": (0.0, 0.0), "gpt2": (2.0, 2.0), "ngram": (1.0, 1.0)}


def test_create_endpoint_fails_when_the_config_cannot_be_served(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 1.0}))
    gate = Gate(failing={"v1": "lstm: model.tar.gz has no saved_model.pb"})
    moto_gaps.set_endpoint_deployer(gate)
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert status_of(sm)() == "Creating"
    gate.release()
    description = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] != "Creating")
    assert description["EndpointStatus"] == "Failed"
    assert description["FailureReason"] == "lstm: model.tar.gz has no saved_model.pb"
    assert gate.calls == [("tweetgen", "v1")]
    # A failed endpoint can only be deleted.
    with pytest.raises(ClientError, match="Failed") as refused:
        sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_a_deployer_that_raises_fails_the_endpoint_with_its_message(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 1.0}))

    def broken(endpoint_name: str, config_name: str) -> str | None:
        raise OSError("no space left on device")

    moto_gaps.set_endpoint_deployer(broken)
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    description = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] != "Creating")
    assert description["EndpointStatus"] == "Failed"
    assert description["FailureReason"] == "OSError: no space left on device"


def test_duplicate_endpoint_name_is_refused(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 1.0}), ("v2", {"gpt2": 1.0}))
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    with pytest.raises(ClientError, match="Cannot create already existing endpoint") as refused:
        sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert describe(sm)["EndpointConfigName"] == "v1"


def test_update_endpoint_goes_updating_then_in_service_on_the_new_config(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    in_service_endpoint(sm)
    created = describe(sm)
    gate = Gate()
    moto_gaps.set_endpoint_deployer(gate)

    answer = sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")
    assert answer["EndpointArn"] == created["EndpointArn"]
    updating = describe(sm)
    # While updating, the config in force is still the old one.
    assert updating["EndpointStatus"] == "Updating"
    assert updating["EndpointConfigName"] == "v1"
    assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == "v2"
    assert weights(updating) == {"lstm": (1.0, 1.0)}
    assert updating["LastModifiedTime"] > created["LastModifiedTime"]

    gate.release()
    done = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] != "Updating")
    assert done["EndpointStatus"] == "InService"
    assert done["EndpointConfigName"] == "v2"
    assert weights(done) == {"lstm": (1.0, 1.0), "gpt2": (0.0, 0.0)}
    assert "PendingDeploymentSummary" not in done
    assert "FailureReason" not in done
    assert done["LastModifiedTime"] >= updating["LastModifiedTime"]
    assert gate.calls == [("tweetgen", "v2")]


def test_failed_update_rolls_back_to_the_previous_config(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    in_service_endpoint(sm)
    gate = Gate(failing={"v2": "gpt2: the model did not answer /ping"})
    moto_gaps.set_endpoint_deployer(gate)
    sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")
    gate.release()
    done = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] != "Updating")
    assert done["EndpointStatus"] == "InService"
    assert done["EndpointConfigName"] == "v1"
    assert done["FailureReason"] == "gpt2: the model did not answer /ping"
    assert weights(done) == {"lstm": (1.0, 1.0)}

    # The next successful update clears the failure.
    moto_gaps.set_endpoint_deployer(None)
    sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")
    done = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] == "InService")
    assert done["EndpointConfigName"] == "v2"
    assert "FailureReason" not in done


def test_updates_are_refused_while_updating(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    in_service_endpoint(sm)
    gate = Gate()
    moto_gaps.set_endpoint_deployer(gate)
    sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")

    with pytest.raises(ClientError, match="Cannot update in-progress endpoint") as refused:
        sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError, match="Cannot update in-progress endpoint"):
        sm.update_endpoint_weights_and_capacities(
            EndpointName="tweetgen",
            DesiredWeightsAndCapacities=[{"VariantName": "lstm", "DesiredWeight": 0.5}],
        )

    gate.release()
    wait_until(status_of(sm), lambda s: s == "InService")
    # Once InService, weights change at once, and what a request leaves out stays.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[{"VariantName": "gpt2", "DesiredWeight": 3.0}],
    )
    sm.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[{"VariantName": "gpt2", "DesiredInstanceCount": 2}],
    )
    description = describe(sm)
    assert description["EndpointStatus"] == "InService"
    assert weights(description) == {"lstm": (1.0, 1.0), "gpt2": (3.0, 3.0)}
    counts = {
        v["VariantName"]: v["CurrentInstanceCount"] for v in description["ProductionVariants"]
    }
    assert counts == {"lstm": 1, "gpt2": 2}


def test_update_endpoint_with_unknown_names(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    in_service_endpoint(sm)
    with pytest.raises(ClientError, match=r'Could not find endpoint ".*endpoint/nope"') as missing:
        sm.update_endpoint(EndpointName="nope", EndpointConfigName="v2")
    assert missing.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(
        ClientError, match=r'Could not find endpoint configuration ".*endpoint-config/v9"'
    ) as missing:
        sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v9")
    assert missing.value.response["Error"]["Code"] == "ValidationException"
    assert describe(sm)["EndpointStatus"] == "InService"


def test_retain_all_variant_properties_keeps_live_weights(aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION)
    in_service_endpoint(sm)
    sm.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[{"VariantName": "lstm", "DesiredWeight": 4.0}],
    )
    sm.update_endpoint(
        EndpointName="tweetgen", EndpointConfigName="v2", RetainAllVariantProperties=True
    )
    done = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] == "InService")
    assert weights(done) == {"lstm": (4.0, 4.0), "gpt2": (0.0, 0.0)}


def test_state_machine_sagemaker_update_endpoint_task(aws: None) -> None:
    """The rollout's ``sagemaker:updateEndpoint`` task reaches the same UpdateEndpoint."""
    sm = boto3.client("sagemaker", region_name=REGION)
    in_service_endpoint(sm)
    definition = {
        "StartAt": "Update",
        "States": {
            "Update": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sagemaker:updateEndpoint",
                "Parameters": {"EndpointName": "tweetgen", "EndpointConfigName.$": "$.config"},
                "End": True,
            }
        },
    }
    execution = run_to_end(definition, {"config": "v2"})
    assert execution["status"] == "SUCCEEDED", execution
    done = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] == "InService")
    assert done["EndpointConfigName"] == "v2"


# --------------------------------------------------------------- Step Functions helpers

ECHO = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


def state_machine(definition: dict[str, Any], name: str = "flow", **client: Any) -> str:
    sfn = boto3.client("stepfunctions", region_name=REGION, **client)
    created = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)
    return str(created["stateMachineArn"])


def finished(execution_arn: str, **client: Any) -> dict[str, Any]:
    sfn = boto3.client("stepfunctions", region_name=REGION, **client)
    return dict(
        wait_until(
            lambda: sfn.describe_execution(executionArn=execution_arn),
            lambda e: e["status"] != "RUNNING",
        )
    )


def run_to_end(definition: dict[str, Any], execution_input: Any) -> dict[str, Any]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = state_machine(definition)
    started = sfn.start_execution(stateMachineArn=arn, input=json.dumps(execution_input))
    return finished(started["executionArn"])


def execution_inputs(machine_arn: str, count: int, **client: Any) -> list[Any]:
    """The inputs of the machine's executions, once ``count`` of them have finished."""
    sfn = boto3.client("stepfunctions", region_name=REGION, **client)
    listed = wait_until(
        lambda: sfn.list_executions(stateMachineArn=machine_arn)["executions"],
        lambda executions: len(executions) >= count,
    )
    assert len(listed) == count
    runs = [finished(e["executionArn"], **client) for e in listed]
    assert all(run["status"] == "SUCCEEDED" for run in runs), runs
    return [json.loads(run["input"]) for run in runs]


def queue(name: str) -> tuple[str, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def received(url: str) -> list[Any]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


# -------------------------------------------------------------- EventBridge -> states


def test_put_events_starts_state_machines_and_other_targets_still_fire(aws: None) -> None:
    events = boto3.client("events", region_name=REGION)
    machine = state_machine(ECHO)
    queue_url, queue_arn = queue("feedback")
    audit_url, audit_arn = queue("audit")
    pattern = json.dumps({"source": ["tweetgen.test"]})
    events.put_rule(Name="rollout", EventPattern=pattern)
    events.put_targets(
        Rule="rollout",
        Targets=[
            {
                "Id": "transformed",
                "Arn": machine,
                "RoleArn": ROLE,
                "InputTransformer": {
                    "InputPathsMap": {"key": "$.detail.key", "kind": "$.detail-type"},
                    "InputTemplate": '{"key": "<key>", "kind": "<kind>"}',
                },
            },
            {"Id": "queue", "Arn": queue_arn},
            {"Id": "whole", "Arn": machine, "RoleArn": ROLE},
        ],
    )
    events.put_rule(Name="audit", EventPattern=pattern)
    events.put_targets(Rule="audit", Targets=[{"Id": "audit", "Arn": audit_arn}])
    events.put_rule(Name="elsewhere", EventPattern=json.dumps({"source": ["other"]}))
    events.put_targets(Rule="elsewhere", Targets=[{"Id": "sfn", "Arn": machine, "RoleArn": ROLE}])

    answer = events.put_events(
        Entries=[
            {
                "Source": "tweetgen.test",
                "DetailType": "Model Uploaded",
                "Detail": json.dumps({"key": "models/lstm/7/model.tar.gz"}),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0

    inputs = execution_inputs(machine, 2)
    assert {"key": "models/lstm/7/model.tar.gz", "kind": "Model Uploaded"} in inputs
    (whole,) = [i for i in inputs if "detail" in i]
    assert whole["detail"] == {"key": "models/lstm/7/model.tar.gz"}
    assert whole["detail-type"] == "Model Uploaded"
    assert whole["source"] == "tweetgen.test"
    assert whole["id"] == answer["Entries"][0]["EventId"]
    assert isinstance(whole["time"], str) and whole["time"].endswith("Z")
    assert "ingestion-time" not in whole
    for url in (queue_url, audit_url):
        (message,) = received(url)
        assert message["detail"] == {"key": "models/lstm/7/model.tar.gz"}


def test_s3_object_created_starts_the_state_machine(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    transformed = state_machine(ECHO, name="rollout")
    detail = state_machine(ECHO, name="detail")
    constant = state_machine(ECHO, name="constant")
    queue_url, queue_arn = queue("uploads")
    s3.create_bucket(Bucket="artifacts")
    s3.put_bucket_notification_configuration(
        Bucket="artifacts", NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"object": {"key": [{"suffix": "model.tar.gz"}]}},
    }
    # The state machine rules come first: the rule after them must still fire.
    events.put_rule(Name="rollout", EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule="rollout",
        Targets=[
            {
                "Id": "transformed",
                "Arn": transformed,
                "RoleArn": ROLE,
                "InputTransformer": {
                    "InputPathsMap": {
                        "bucket": "$.detail.bucket.name",
                        "key": "$.detail.object.key",
                    },
                    "InputTemplate": '{"bucket": "<bucket>", "key": "<key>"}',
                },
            },
            {"Id": "detail", "Arn": detail, "RoleArn": ROLE, "InputPath": "$.detail"},
            {"Id": "constant", "Arn": constant, "RoleArn": ROLE, "Input": '{"fixed": true}'},
        ],
    )
    events.put_rule(Name="uploads", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="uploads", Targets=[{"Id": "queue", "Arn": queue_arn}])

    s3.put_object(Bucket="artifacts", Key="models/gpt2/3/notes.txt", Body=b"ignored")
    s3.put_object(Bucket="artifacts", Key="models/gpt2/3/model.tar.gz", Body=b"tar")

    # moto ignores InputTransformer on the S3 path for its own targets; EventBridge does not.
    assert execution_inputs(transformed, 1) == [
        {"bucket": "artifacts", "key": "models/gpt2/3/model.tar.gz"}
    ]
    (selected,) = execution_inputs(detail, 1)
    assert selected["bucket"] == {"name": "artifacts"}
    assert selected["object"]["key"] == "models/gpt2/3/model.tar.gz"
    assert execution_inputs(constant, 1) == [{"fixed": True}]
    (message,) = received(queue_url)
    assert message["detail"]["object"]["key"] == "models/gpt2/3/model.tar.gz"


def test_a_missing_state_machine_does_not_stop_other_targets(aws: None) -> None:
    events = boto3.client("events", region_name=REGION)
    queue_url, queue_arn = queue("still-delivered")
    missing = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:gone"
    events.put_rule(Name="r", EventPattern=json.dumps({"source": ["tweetgen.test"]}))
    events.put_targets(
        Rule="r",
        Targets=[{"Id": "gone", "Arn": missing, "RoleArn": ROLE}, {"Id": "q", "Arn": queue_arn}],
    )
    events.put_events(Entries=[{"Source": "tweetgen.test", "DetailType": "x", "Detail": "{}"}])
    assert len(received(queue_url)) == 1


# ------------------------------------------------------------- Step Functions -> Lambda


class Handlers:
    """An invoker over plain Python handlers, recording each call."""

    def __init__(self, **handlers: Callable[[Any], Any]):
        self.handlers = handlers
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, function: str, payload: Any) -> Any:
        self.calls.append((function, payload))
        return self.handlers[function.split(":")[-1]](payload)


def test_lambda_invoke_task_runs_the_handler(aws: None) -> None:
    handlers = Handlers(validate=lambda event: {"verdict": f"ok:{event['key']}"})
    moto_gaps.set_lambda_invoker(handlers)
    definition = {
        "StartAt": "Validate",
        "States": {
            "Validate": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "validate", "Payload": {"key.$": "$.key"}},
                "ResultSelector": {
                    "verdict.$": "$.Payload.verdict",
                    "status.$": "$.StatusCode",
                    "version.$": "$.ExecutedVersion",
                },
                "ResultPath": "$.result",
                "End": True,
            }
        },
    }
    execution = run_to_end(definition, {"key": "models/lstm/1/model.tar.gz"})
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"]) == {
        "key": "models/lstm/1/model.tar.gz",
        "result": {"verdict": "ok:models/lstm/1/model.tar.gz", "status": 200, "version": "$LATEST"},
    }
    assert handlers.calls == [("validate", {"key": "models/lstm/1/model.tar.gz"})]


def test_a_stopped_execution_ends_after_its_current_task(aws: None) -> None:
    release = threading.Event()
    calls: list[str] = []

    def invoker(function: str, payload: Any) -> Any:
        calls.append(function)
        assert release.wait(WAIT_S)
        return {}

    moto_gaps.set_lambda_invoker(invoker)
    task = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke"}
    definition = {
        "StartAt": "First",
        "States": {
            "First": {**task, "Parameters": {"FunctionName": "first"}, "Next": "Second"},
            "Second": {**task, "Parameters": {"FunctionName": "second"}, "End": True},
        },
    }
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.start_execution(stateMachineArn=state_machine(definition))["executionArn"]
    wait_until(lambda: list(calls), lambda seen: seen == ["first"])
    assert moto_gaps.wait_for_executions(0.2) is False  # blocked in its first task
    sfn.stop_execution(executionArn=arn)
    release.set()
    assert moto_gaps.wait_for_executions(WAIT_S) is True
    assert calls == ["first"]  # the second task never ran
    assert sfn.describe_execution(executionArn=arn)["status"] == "ABORTED"


def test_function_arn_task_output_is_the_result(aws: None) -> None:
    handlers = Handlers(plan=lambda event: {"weights": {"lstm": 0.9, "gpt2": event["share"]}})
    moto_gaps.set_lambda_invoker(handlers)
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan"
    definition = {
        "StartAt": "Plan",
        "States": {"Plan": {"Type": "Task", "Resource": function_arn, "End": True}},
    }
    execution = run_to_end(definition, {"share": 0.1})
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"]) == {"weights": {"lstm": 0.9, "gpt2": 0.1}}
    assert handlers.calls == [(function_arn, {"share": 0.1})]


def reject(event: Any) -> Any:
    raise LambdaFunctionError("ArtifactInvalid", "no saved_model.pb in model.tar.gz")


@pytest.mark.parametrize("catches", ["ArtifactInvalid", "States.TaskFailed", "States.ALL"])
def test_a_lambda_error_is_caught_by_catch(aws: None, catches: str) -> None:
    moto_gaps.set_lambda_invoker(Handlers(validate=reject))
    definition = {
        "StartAt": "Validate",
        "States": {
            "Validate": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "validate", "Payload.$": "$"},
                "Catch": [{"ErrorEquals": [catches], "ResultPath": "$.error", "Next": "Rejected"}],
                "End": True,
            },
            "Rejected": {"Type": "Pass", "End": True},
        },
    }
    execution = run_to_end(definition, {"key": "k"})
    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert output["key"] == "k"
    assert output["error"]["Error"] == "ArtifactInvalid"
    cause = json.loads(output["error"]["Cause"])
    assert cause["errorType"] == "ArtifactInvalid"
    assert cause["errorMessage"] == "no saved_model.pb in model.tar.gz"


def test_lambda_function_error_survives_pickling() -> None:
    """Handlers run in worker processes: their errors cross a process boundary."""
    error = LambdaFunctionError("ArtifactInvalid", "bad tarball", ["  File app.py, line 3"])
    copied = pickle.loads(pickle.dumps(error))
    assert isinstance(copied, LambdaFunctionError)
    assert (copied.error_type, copied.message, copied.stack_trace) == (
        "ArtifactInvalid",
        "bad tarball",
        ["  File app.py, line 3"],
    )


@pytest.mark.parametrize("resource", ["invoke", "function-arn"])
def test_an_uncaught_lambda_error_fails_the_execution(aws: None, resource: str) -> None:
    def broken(event: Any) -> Any:
        raise ValueError("temperature must be positive")

    moto_gaps.set_lambda_invoker(Handlers(generate=broken))
    task: dict[str, Any] = {"Type": "Task", "End": True}
    if resource == "invoke":
        task |= {
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "generate", "Payload.$": "$"},
        }
    else:
        task["Resource"] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:generate"
    execution = run_to_end({"StartAt": "Generate", "States": {"Generate": task}}, {})
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ValueError"
    cause = json.loads(execution["cause"])
    assert cause["errorMessage"] == "temperature must be positive"
    assert cause["errorType"] == "ValueError"


def test_retry_reruns_a_failing_handler(aws: None) -> None:
    attempts: list[Any] = []

    def flaky(event: Any) -> Any:
        attempts.append(event)
        if len(attempts) == 1:
            raise LambdaFunctionError("DatabasePaused", "Aurora is resuming")
        return {"recorded": True}

    moto_gaps.set_lambda_invoker(Handlers(record=flaky))
    definition = {
        "StartAt": "Record",
        "States": {
            "Record": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "record", "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "Retry": [
                    {"ErrorEquals": ["DatabasePaused"], "IntervalSeconds": 1, "MaxAttempts": 2}
                ],
                "End": True,
            }
        },
    }
    execution = run_to_end(definition, {"version": 7})
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"]) == {"recorded": True}
    assert attempts == [{"version": 7}, {"version": 7}]


# -------------------------------------------------------------- install / uninstall


# ----------------------------------------------------------------------------- SQS


def backlog(count: int, **attributes: str) -> tuple[Any, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="backlog", Attributes=attributes)["QueueUrl"]
    for start in range(0, count, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)],
        )
    return sqs, url


def test_receive_does_not_count_the_queue_for_each_message(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sqs.models import Queue

    counted: list[int] = []
    original = Queue.approximate_number_of_messages

    def counting(queue: Any) -> int:
        counted.append(1)
        return int(original.fget(queue))  # type: ignore[attr-defined]

    monkeypatch.setattr(Queue, "approximate_number_of_messages", property(counting))
    sqs, url = backlog(50)
    counted.clear()
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 10
    assert counted == []  # moto's own counts the whole queue once per returned message
    moto_gaps.uninstall()
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    assert len(counted) >= 10


def test_messages_past_the_retention_period_are_still_not_received(aws: None) -> None:
    from moto.sqs.models import sqs_backends

    sqs, url = backlog(10, MessageRetentionPeriod="60")
    queue = sqs_backends[ACCOUNT][REGION].get_queue("backlog")
    for message in queue._messages[6:]:
        sent: Any = message.sent_timestamp
        message.sent_timestamp = sent - 61_000  # sent 61 s earlier: past the 60 s retention
    received = []
    while answer := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        received += [m["Body"] for m in answer]
    assert sorted(received) == [f"m{i}" for i in range(6)]


def test_a_copy_only_while_the_source_has_the_etag_named(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="artifacts")
    etag = s3.put_object(Bucket="artifacts", Key="src", Body=b"one")["ETag"]
    source = {"Bucket": "artifacts", "Key": "src"}

    s3.copy_object(Bucket="artifacts", Key="a", CopySource=source, CopySourceIfMatch=etag)
    assert s3.get_object(Bucket="artifacts", Key="a")["Body"].read() == b"one"
    s3.put_object(Bucket="artifacts", Key="src", Body=b"two")
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket="artifacts", Key="b", CopySource=source, CopySourceIfMatch=etag)
    assert raised.value.response["Error"]["Code"] == "PreconditionFailed"
    assert "b" not in [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"]]

    # If-None-Match: * copies only where nothing is yet.
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket="artifacts", Key="a", CopySource=source, IfNoneMatch="*")
    assert raised.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket="artifacts", Key="a")["Body"].read() == b"one"
    s3.copy_object(Bucket="artifacts", Key="c", CopySource=source, IfNoneMatch="*")
    assert s3.get_object(Bucket="artifacts", Key="c")["Body"].read() == b"two"

    moto_gaps.uninstall()  # moto's own copies whatever the source is now, over anything
    s3.copy_object(Bucket="artifacts", Key="b", CopySource=source, CopySourceIfMatch=etag)
    assert s3.get_object(Bucket="artifacts", Key="b")["Body"].read() == b"two"
    s3.copy_object(Bucket="artifacts", Key="c", CopySource=source, IfNoneMatch="*")


def test_uninstall_restores_moto(aws: None) -> None:
    from moto.events.models import Rule
    from moto.sagemaker.responses import SageMakerResponse

    patched_send = Rule.send_to_targets
    moto_gaps.install()  # idempotent: nothing is patched twice
    assert Rule.send_to_targets is patched_send

    moto_gaps.uninstall()
    assert not moto_gaps.is_installed()
    assert "update_endpoint" not in vars(SageMakerResponse)
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 1.0}))
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert status_of(sm)() == "InService"  # moto's own: in service at once
    with pytest.raises(NotImplementedError):
        sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")

    events = boto3.client("events", region_name=REGION)
    machine = state_machine(ECHO)
    events.put_rule(Name="r", EventPattern=json.dumps({"source": ["tweetgen.test"]}))
    events.put_targets(Rule="r", Targets=[{"Id": "sfn", "Arn": machine, "RoleArn": ROLE}])
    with pytest.raises(NotImplementedError):
        events.put_events(Entries=[{"Source": "tweetgen.test", "DetailType": "x", "Detail": "{}"}])

    moto_gaps.install()
    assert moto_gaps.is_installed()
    events.put_events(Entries=[{"Source": "tweetgen.test", "DetailType": "x", "Detail": "{}"}])
    assert len(execution_inputs(machine, 1)) == 1


def test_install_refuses_another_moto_version(monkeypatch: pytest.MonkeyPatch) -> None:
    moto_gaps.uninstall()
    monkeypatch.setattr(moto, "__version__", "5.3.0")
    with pytest.raises(moto_gaps.MotoVersionError, match=r"5\.2\.5"):
        moto_gaps.install()
    assert not moto_gaps.is_installed()


# ------------------------------------------------------------------------ server mode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_all_three_gaps_through_an_in_process_moto_server() -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    url = f"http://127.0.0.1:{port}"
    client: dict[str, Any] = {"endpoint_url": url}
    with mock.patch.dict(default_user_config, {}):
        server.start()
        try:
            requests.post(f"{url}/moto-api/config", json=MOTO_CONFIG, timeout=5).raise_for_status()
            run_through_server(client)
        finally:
            requests.post(f"{url}/moto-api/reset", timeout=5)
            server.stop()


def run_through_server(client: dict[str, Any]) -> None:
    sm = boto3.client("sagemaker", region_name=REGION, **client)
    make_configs(sm, ("v1", {"lstm": 1.0}), ("v2", {"lstm": 0.5, "gpt2": 0.5}))
    moto_gaps.set_default_deploy_delay(0.5)
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert status_of(sm)() == "Creating"
    wait_until(status_of(sm), lambda s: s == "InService")
    sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")
    assert status_of(sm)() == "Updating"
    done = wait_until(lambda: describe(sm), lambda d: d["EndpointStatus"] == "InService")
    assert weights(done) == {"lstm": (0.5, 0.5), "gpt2": (0.5, 0.5)}

    moto_gaps.set_lambda_invoker(Handlers(smoke=lambda event: {"variant": event["detail"]["v"]}))
    definition = {
        "StartAt": "Smoke",
        "States": {
            "Smoke": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "smoke", "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "End": True,
            }
        },
    }
    machine = state_machine(definition, **client)
    events = boto3.client("events", region_name=REGION, **client)
    events.put_rule(Name="r", EventPattern=json.dumps({"source": ["tweetgen.test"]}))
    events.put_targets(Rule="r", Targets=[{"Id": "sfn", "Arn": machine, "RoleArn": ROLE}])
    events.put_events(
        Entries=[{"Source": "tweetgen.test", "DetailType": "x", "Detail": '{"v": "gpt2"}'}]
    )
    sfn = boto3.client("stepfunctions", region_name=REGION, **client)
    listed = wait_until(
        lambda: sfn.list_executions(stateMachineArn=machine)["executions"], lambda e: len(e) == 1
    )
    execution = finished(listed[0]["executionArn"], **client)
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"]) == {"variant": "gpt2"}


def test_the_endpoint_listener_hears_each_finished_deployment(aws: None) -> None:
    """A host that polls is told as soon as an endpoint has switched or failed."""
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 1.0}), ("v2", {"lstm": 1.0}))
    heard: list[tuple[str, str, str]] = []
    done = threading.Event()

    def listener(name: str) -> None:
        described = describe(sm, name)
        heard.append((name, described["EndpointStatus"], described["EndpointConfigName"]))
        done.set()

    moto_gaps.set_default_deploy_delay(0.05)
    moto_gaps.set_endpoint_listener(listener)
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    assert done.wait(WAIT_S)
    done.clear()
    sm.update_endpoint(EndpointName="tweetgen", EndpointConfigName="v2")
    assert done.wait(WAIT_S)
    # Called after each switch, never before it.
    assert heard == [("tweetgen", "InService", "v1"), ("tweetgen", "InService", "v2")]


def test_the_endpoint_listener_hears_new_weights_before_the_call_returns(aws: None) -> None:
    """A host that follows the listener routes by the new weights once the call returns."""
    sm = boto3.client("sagemaker", region_name=REGION)
    make_configs(sm, ("v1", {"lstm": 1.0, "gpt2": 1.0}))
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="v1")
    wait_until(status_of(sm), lambda s: s == "InService")
    heard: list[tuple[str, dict[str, tuple[float, float]]]] = []
    moto_gaps.set_endpoint_listener(lambda name: heard.append((name, weights(describe(sm, name)))))

    sm.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[
            {"VariantName": "lstm", "DesiredWeight": 0.0},
            {"VariantName": "gpt2", "DesiredWeight": 1.0},
        ],
    )

    assert heard == [("tweetgen", {"lstm": (0.0, 0.0), "gpt2": (1.0, 1.0)})]
    # A refused update changes nothing, so there is nothing to hear.
    with pytest.raises(ClientError, match="not present within endpoint configuration"):
        sm.update_endpoint_weights_and_capacities(
            EndpointName="tweetgen",
            DesiredWeightsAndCapacities=[{"VariantName": "t5", "DesiredWeight": 1.0}],
        )
    assert len(heard) == 1
