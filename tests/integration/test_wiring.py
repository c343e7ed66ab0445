"""Template-driven wiring on a moto server: resources, SQS pollers, schedules, relays, the API."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer
from tweetgen_local.functions import FunctionPool
from tweetgen_local.template import ResolveContext, Template
from tweetgen_local.wiring import (
    LocalWiring,
    Route,
    ScheduleSpec,
    _Malformed,
    failed_message_ids,
    next_cron_time,
    proxy_response,
    rate_seconds,
    sqs_backoff_s,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "local_stack"
STACK = "wiring"
PERIODIC = "TickFunctionEveryMinute"


@dataclass
class Stack:
    url: str
    session: Any
    ctx: ResolveContext
    pool: FunctionPool
    wiring: LocalWiring

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.url)

    def ref(self, logical_id: str, attribute: str = "Ref") -> Any:
        return self.ctx.resources[logical_id][attribute]


def _interval(spec: ScheduleSpec) -> float:
    """rate(1 minute) every 0.3 s; everything else effectively never."""
    return 0.3 if spec.logical_id == PERIODIC else 3600.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    template = Template.load(FIXTURE / "template.yaml")
    ctx = template.context(stack_name=STACK)
    pool = FunctionPool(template, ctx, {"AWS_ENDPOINT_URL": url})
    wiring = LocalWiring(
        template, pool, session=session, endpoint_url=url, schedule_interval=_interval
    )
    wiring.start()
    try:
        yield Stack(url, session, ctx, pool, wiring)
    finally:
        wiring.stop()
        pool.close()
        server.stop()


def _eventually(check: Callable[[], Any], timeout: float = 15.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check}")
        time.sleep(every)


# ----------------------------------------------------------------- provisioning


def test_provisioning_creates_the_resources_and_fills_the_context(stack: Stack) -> None:
    report = stack.wiring.report
    assert report is not None
    for logical_id in (
        "ArtifactBucket",
        "WorkQueue",
        "WorkDeadLetterQueue",
        "OrderedQueue",
        "UploadedRule",
        "DatabaseSecret",
        "ApiKeySecret",
        "FlowStateMachine",
        "FlowStateMachineFlowUploaded",
        "WatcherFunctionUploaded",
    ):
        assert logical_id in report.created, report.summary()
    assert report.known["ModelEndpoint"] == "AWS::SageMaker::Endpoint"
    assert any(note.startswith("ModelEndpoint:") for note in report.notes)
    assert stack.ref("ModelEndpoint", "EndpointName") == "tweetgen"

    bucket = stack.ref("ArtifactBucket")
    assert bucket.startswith(f"{STACK}-artifactbucket-") and bucket == bucket.lower()
    assert stack.ref("ArtifactBucket", "Arn") == f"arn:aws:s3:::{bucket}"
    # (moto does not echo EventBridgeConfiguration back; the next test shows it is on)

    sqs = stack.client("sqs")
    work = sqs.get_queue_attributes(QueueUrl=stack.ref("WorkQueue"), AttributeNames=["All"])
    attributes = work["Attributes"]
    assert attributes["VisibilityTimeout"] == "1"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": stack.ref("WorkDeadLetterQueue", "Arn"),
        "maxReceiveCount": 2,
    }
    assert stack.ref("WorkQueue", "QueueUrl") == stack.ref("WorkQueue")
    fifo_name = stack.ref("OrderedQueue", "QueueName")
    assert fifo_name.endswith(".fifo")
    fifo = sqs.get_queue_attributes(QueueUrl=stack.ref("OrderedQueue"), AttributeNames=["All"])
    assert fifo["Attributes"]["FifoQueue"] == "true"

    secrets = stack.client("secretsmanager")
    generated = json.loads(
        secrets.get_secret_value(SecretId=stack.ref("DatabaseSecret"))["SecretString"]
    )
    assert generated["username"] == "tweetgen"
    assert len(generated["password"]) == 24 and generated["password"].isalnum()
    api_key = secrets.get_secret_value(SecretId=f"{STACK}/api-key")
    assert api_key["SecretString"] == "not-a-real-key"
    assert api_key["ARN"] == stack.ref("ApiKeySecret")

    machine = stack.client("stepfunctions").describe_state_machine(
        stateMachineArn=stack.ref("FlowStateMachine")
    )
    definition = json.loads(machine["definition"])
    probe = definition["States"]["Probe"]["Parameters"]
    assert probe["FunctionName"] == stack.ref("ProbeFunction", "Arn")
    assert probe["Payload"] == {"bucket": bucket}
    assert definition["Comment"] == "Fixture flow of stage dev"
    assert machine["roleArn"] == stack.ref("FlowStateMachineRole", "Arn")

    events = stack.client("events")
    rule = events.describe_rule(Name=stack.ref("UploadedRule"))
    assert json.loads(rule["EventPattern"])["detail"]["bucket"]["name"] == [bucket]
    flow_targets = events.list_targets_by_rule(Rule=stack.ref("FlowStateMachineFlowUploaded"))
    assert [t["Arn"] for t in flow_targets["Targets"]] == [stack.ref("FlowStateMachine")]
    # Functions resolve against what was provisioned.
    env = stack.pool.environment("ProbeFunction")
    assert env["QUEUE_URL"] == stack.ref("WorkQueue")
    assert env["SECRET_ARN"] == stack.ref("DatabaseSecret")
    assert env["ENDPOINT_NAME"] == "tweetgen"


def test_s3_object_created_reaches_the_rules_queue(stack: Stack) -> None:
    bucket = stack.ref("ArtifactBucket")
    s3 = stack.client("s3")
    s3.put_object(Bucket=bucket, Key="models/lstm/7/model.tar.gz", Body=b"artifact")
    s3.put_object(Bucket=bucket, Key="models/lstm/7/metrics.json", Body=b"{}")
    got = stack.client("sqs").receive_message(
        QueueUrl=stack.ref("UploadsQueue"), WaitTimeSeconds=2, MaxNumberOfMessages=10
    )
    events = [json.loads(m["Body"]) for m in got.get("Messages", [])]
    assert [e["detail"]["object"]["key"] for e in events] == ["models/lstm/7/model.tar.gz"]
    assert events[0]["detail-type"] == "Object Created" and events[0]["source"] == "aws.s3"


def test_a_rule_that_targets_a_function_delivers_through_a_relay(stack: Stack) -> None:
    stack.client("s3").put_object(Bucket=stack.ref("ArtifactBucket"), Key="watch/a.txt", Body=b"")
    record = _eventually(lambda: stack.wiring.records("relay", "WatcherFunctionUploaded"))[0]
    assert record.result.error is None
    received = record.result.payload["received"]
    assert received["detail"]["object"]["key"] == "watch/a.txt"
    assert record.result.payload["function"] == f"{STACK}-WatcherFunction"


# ----------------------------------------------------------------- SQS


def _bodies(stack: Stack) -> list[str]:
    return [
        record["body"]
        for r in stack.wiring.records("sqs", "ConsumerFunctionWork")
        for record in r.event["Records"]
    ]


def _dead_letters(stack: Stack) -> list[str]:
    got = stack.client("sqs").receive_message(
        QueueUrl=stack.ref("WorkDeadLetterQueue"), MaxNumberOfMessages=10, VisibilityTimeout=60
    )
    return [m["Body"] for m in got.get("Messages", [])]


def test_partial_batch_failures_redeliver_only_the_failed_message(stack: Stack) -> None:
    sqs = stack.client("sqs")
    queue = stack.ref("WorkQueue")
    sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": "1", "MessageBody": "ok-1", "MessageAttributes": _attribute("kind", "good")},
            {"Id": "2", "MessageBody": "ok-2"},
            {"Id": "3", "MessageBody": "poison-1"},
        ],
    )
    dead = _eventually(lambda: _dead_letters(stack))
    assert dead == ["poison-1"]
    bodies = _bodies(stack)
    assert bodies.count("ok-1") == 1 and bodies.count("ok-2") == 1
    assert bodies.count("poison-1") == 2  # maxReceiveCount, then the DLQ
    left = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert left == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }

    first = next(
        record
        for r in stack.wiring.records("sqs", "ConsumerFunctionWork")
        for record in r.event["Records"]
        if record["body"] == "ok-1"
    )
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"] == stack.ref("WorkQueue", "Arn")
    assert first["awsRegion"] == "us-east-1"
    assert first["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        first["attributes"]
    )
    assert first["messageAttributes"]["kind"]["stringValue"] == "good"
    assert first["messageAttributes"]["kind"]["dataType"] == "String"
    assert first["md5OfBody"] and first["receiptHandle"] and first["messageId"]


def _attribute(name: str, value: str) -> dict[str, Any]:
    return {name: {"DataType": "String", "StringValue": value}}


def test_a_handler_error_leaves_the_whole_batch_for_redelivery(stack: Stack) -> None:
    stack.client("sqs").send_message(QueueUrl=stack.ref("WorkQueue"), MessageBody="explode")
    assert _eventually(lambda: _dead_letters(stack)) == ["explode"]
    failures = [
        r
        for r in stack.wiring.records("sqs", "ConsumerFunctionWork")
        if any(record["body"] == "explode" for record in r.event["Records"])
    ]
    assert len(failures) == 2 and all(r.result.error is not None for r in failures)


def test_a_poller_backs_off_while_whole_batches_fail() -> None:
    # Waits after 0, 1, 2, ... batches in a row of which nothing went through.
    assert [sqs_backoff_s(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert sqs_backoff_s(10_000) == 8.0


# ----------------------------------------------------------------- schedules


def test_a_schedule_runs_on_demand_with_the_scheduled_event_shape(stack: Stack) -> None:
    nightly = stack.wiring.trigger_schedule("TickFunctionNightly")
    assert nightly.error is None and nightly.payload["received"] == {"job": "nightly"}
    event = stack.wiring.trigger_schedule(PERIODIC).payload["received"]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["account"] == "123456789012" and event["region"] == "us-east-1"
    assert event["resources"] == [stack.ref(PERIODIC, "Arn")]
    assert event["detail"] == {} and event["version"] == "0"
    dt.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(LookupError, match="no single schedule"):
        stack.wiring.trigger_schedule("TickFunction")  # it has two


def test_a_rate_schedule_fires_periodically(stack: Stack) -> None:
    fired = _eventually(lambda: len(stack.wiring.records("schedule", PERIODIC)) >= 2, timeout=10)
    assert fired
    records = stack.wiring.records("schedule", PERIODIC)
    assert all(r.result.error is None for r in records)
    assert not stack.wiring.records("schedule", "TickFunctionNightly")


def test_schedule_expressions() -> None:
    assert rate_seconds("rate(1 minute)") == 60 and rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("cron(0 3 * * ? *)") is None
    after = dt.datetime(2026, 1, 30, 3, 0, tzinfo=dt.UTC)  # a Friday
    assert next_cron_time("cron(0 3 * * ? *)", after) == dt.datetime(
        2026, 1, 31, 3, 0, tzinfo=dt.UTC
    )
    assert next_cron_time("cron(15/20 * * * ? *)", after) == after.replace(minute=15)
    assert next_cron_time("cron(0 9 ? * MON-FRI *)", after) == after.replace(hour=9)
    assert next_cron_time("cron(0 9 ? * SUN *)", after) == dt.datetime(
        2026, 2, 1, 9, 0, tzinfo=dt.UTC
    )
    assert next_cron_time("cron(0 0 1 JAN ? 2027)", after).year == 2027
    spec = ScheduleSpec("X", "Fn", "cron(30 3 * * ? *)")
    assert spec.interval(after) == 30 * 60
    with pytest.raises(ValueError, match="not supported"):
        next_cron_time("cron(0 0 L * ? *)", after)


# ----------------------------------------------------------------- API


def test_api_routes_get_with_path_and_query_parameters(stack: Stack) -> None:
    api = stack.wiring.api_url
    assert api is not None
    response = requests.get(f"{api}/items/a%20b?x=1&x=2&y=", headers={"X-Test": "yes"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Handler"] == "api" and response.headers["x-amzn-RequestId"]
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    echo = response.json()
    assert echo["resource"] == "/items/{id}" and echo["path"] == "/items/a%20b"
    assert echo["httpMethod"] == "GET"
    assert echo["pathParameters"] == {"id": "a b"}
    assert echo["queryStringParameters"] == {"x": "2", "y": ""}
    assert echo["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert echo["headers"]["x-test"] == "yes" and echo["body"] is None
    context = echo["requestContext"]
    assert context["stage"] == "Prod" and context["resourcePath"] == "/items/{id}"
    assert context["path"] == "/Prod/items/a%20b" and context["httpMethod"] == "GET"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["apiId"] == stack.ref("ServerlessRestApi")
    assert context["requestId"] == response.headers["x-amzn-RequestId"]
    assert requests.get(f"{api}/items/special", timeout=10).json()["resource"] == "/items/special"


def test_api_routes_post_bodies_greedy_paths_and_binary(stack: Stack) -> None:
    api = stack.wiring.api_url
    created = requests.post(f"{api}/items", json={"text": "hello"}, timeout=10)
    assert created.status_code == 201
    echo = created.json()
    assert json.loads(echo["body"]) == {"text": "hello"} and echo["isBase64Encoded"] is False
    assert echo["queryStringParameters"] is None and echo["pathParameters"] is None

    files = requests.delete(f"{api}/files/a/b/c.txt", timeout=10).json()
    assert files["pathParameters"] == {"proxy": "a/b/c.txt"} and files["httpMethod"] == "DELETE"

    data = bytes(range(256))
    binary = requests.post(
        f"{api}/binary", data=data, headers={"Content-Type": "image/png"}, timeout=10
    )
    assert binary.status_code == 200 and binary.content == data[::-1]
    assert binary.headers["Content-Type"] == "application/octet-stream"
    sent = stack.wiring.records("api", "ApiFunctionBinary")[-1].event
    assert sent["isBase64Encoded"] is True and base64.b64decode(sent["body"]) == data


def test_api_errors_like_api_gateway(stack: Stack) -> None:
    api = stack.wiring.api_url
    unknown = requests.get(f"{api}/nowhere", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "Missing Authentication Token"}
    wrong_method = requests.put(f"{api}/items/1", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET"
    for path in ("/boom", "/malformed"):
        failed = requests.get(f"{api}{path}", timeout=10)
        assert failed.status_code == 502, path
        assert failed.json() == {"message": "Internal server error"}


def test_proxy_results_and_batch_answers_are_checked() -> None:
    status, headers, body = proxy_response(
        {"statusCode": "204", "headers": {"A": 1}, "multiValueHeaders": {"A": ["1", "2"]}}
    )
    assert (status, body) == (204, b"")
    assert headers == [("A", "1"), ("A", "2"), ("Content-Type", "application/json")]
    for bad in (
        None,
        {"body": "x"},
        {"statusCode": 200, "body": {}},
        {"statusCode": 200, "extra": 1},
        {"statusCode": 200, "isBase64Encoded": True, "body": "!!"},
    ):
        with pytest.raises(_Malformed):
            proxy_response(bad)
    ids = {"m1", "m2"}
    assert failed_message_ids(None, ids) == set()
    assert failed_message_ids({"batchItemFailures": []}, ids) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "m2"}]}, ids) == {"m2"}
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == ids
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, ids) == ids
    assert failed_message_ids("not json", ids) == ids


def test_routes_prefer_static_segments_over_parameters_over_greedy_paths() -> None:
    static = Route("Api", "Fn", "A", "/items/special", "GET")
    param = Route("Api", "Fn", "B", "/items/{id}", "GET")
    greedy = Route("Api", "Fn", "C", "/{proxy+}", "ANY")
    assert static.rank < param.rank < greedy.rank
    assert param.match(("items", "7")) == {"id": "7"}
    assert param.match(("items",)) is None and param.match(("items", "7", "x")) is None
    assert greedy.match(("items", "7", "x")) == {"proxy": "items/7/x"}
    assert greedy.match(()) is None


def test_stop_joins_threads_and_frees_the_api_port(stack: Stack) -> None:
    """A second wiring over the same stack: provisioning again is harmless; stop cleans up."""
    wiring = LocalWiring(
        stack.wiring.template, stack.pool, session=stack.session, endpoint_url=stack.url
    )
    wiring.start()
    api = wiring.api_url
    assert api is not None
    assert requests.get(f"{api}/items/1", timeout=10).status_code == 200
    threads = list(wiring._threads)
    assert threads and all(t.is_alive() for t in threads)
    wiring.stop()
    assert not any(t.is_alive() for t in threads)
    port = int(api.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    with socket.socket() as probe:  # a new server can listen there again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
