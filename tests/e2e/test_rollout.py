"""The rollout end to end: uploads to the artifact bucket of a local stack started from the real
template.yaml, the real rollout.asl.json on moto's interpreter, the real task handlers in their
workers, real tiny artifacts on the local SageMaker hosting.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from tweetgen.adapters.database import Database, Rollout
from tweetgen_local.deploy import (
    DeployError,
    add_deploy_arguments,
    deploy_command,
    deploy_model,
    find_target,
)
from tweetgen_local.stack import LocalStack, StackOptions

from tests.conftest import REPO_ROOT

TIMEOUT_S = 180.0


@dataclass
class Outcome:
    """One finished rollout execution."""

    arn: str
    status: str
    error: str | None
    cause: str
    output: dict[str, Any]
    states: list[str]
    events: list[dict[str, Any]]

    def window(self, first: str, last: str) -> tuple[float, float]:
        """Seconds from the first entry of state ``first`` to the last exit of ``last``."""
        start = min(_ts(e) for e in self.events if _entered(e) == first)
        end = max(_ts(e) for e in self.events if _exited(e) == last)
        return start, end


def _ts(event: dict[str, Any]) -> float:
    return float(event["timestamp"].timestamp())


def _entered(event: dict[str, Any]) -> str | None:
    details = event.get("stateEnteredEventDetails")
    return None if details is None else str(details["name"])


def _exited(event: dict[str, Any]) -> str | None:
    details = event.get("stateExitedEventDetails")
    return None if details is None else str(details["name"])


class Rollouts:
    """Uploads to the local stack and the executions they start."""

    def __init__(self, stack: LocalStack) -> None:
        endpoints = stack.endpoints
        session = boto3.session.Session(region_name=endpoints["region"])
        self.bucket = str(endpoints["artifact_bucket"])
        # The stack's own database (SQLite in its state dir), where the Record step writes.
        self.db = Database.from_url(f"sqlite:///{stack.options.state_dir / 'tweetgen.db'}")
        self.s3 = session.client("s3", endpoint_url=endpoints["aws"])
        self.sfn = session.client("stepfunctions", endpoint_url=endpoints["aws"])
        self.sagemaker = session.client("sagemaker", endpoint_url=endpoints["aws"])
        self.runtime = session.client(
            "sagemaker-runtime",
            endpoint_url=endpoints["sagemaker_runtime"],
            config=Config(retries={"max_attempts": 1}),
        )
        self.machine = stack.ctx.resources["RolloutStateMachine"]["Ref"]
        self.state_dir = stack.options.state_dir

    def upload(self, body: bytes, key: str) -> str:
        """Put ``body`` at ``key``; the object version (the execution's input names it)."""
        return str(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["VersionId"])

    def execution(self, key: str, version_id: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for listed in self.sfn.list_executions(stateMachineArn=self.machine)["executions"]:
                arn = listed["executionArn"]
                event = json.loads(self.sfn.describe_execution(executionArn=arn)["input"])
                obj = event["detail"]["object"]
                if obj["key"] == key and obj.get("version-id") == version_id:
                    return str(arn)
            time.sleep(0.2)
        raise AssertionError(f"no execution started for {key} ({version_id})")

    def finish(self, arn: str) -> Outcome:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            described = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                break
            assert time.monotonic() < deadline, f"{arn} still running"
            time.sleep(0.3)
        events = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return Outcome(
            arn=arn,
            status=described["status"],
            error=described.get("error"),
            cause=described.get("cause", ""),
            output=json.loads(described.get("output") or "{}"),
            states=[name for name in map(_entered, events) if name is not None],
            events=events,
        )

    def roll_out(self, body: bytes, key: str) -> Outcome:
        return self.finish(self.execution(key, self.upload(body, key)))

    def endpoint(self) -> tuple[str, dict[str, str]]:
        """The config in force and the model each variant runs."""
        described = self.sagemaker.describe_endpoint(EndpointName="tweetgen")
        assert described["EndpointStatus"] == "InService", described
        config = self.sagemaker.describe_endpoint_config(
            EndpointConfigName=described["EndpointConfigName"]
        )
        models = {v["VariantName"]: v["ModelName"] for v in config["ProductionVariants"]}
        return str(described["EndpointConfigName"]), models

    def generate(self, variant: str | None = None) -> tuple[str, Any]:
        kwargs: dict[str, Any] = {} if variant is None else {"TargetVariant": variant}
        answer = self.runtime.invoke_endpoint(
            EndpointName="tweetgen",
            ContentType="application/json",
            Body=json.dumps({"inputs": "good morning", "parameters": {"max_new_tokens": 4}}),
            **kwargs,
        )
        return str(answer["InvokedProductionVariant"]), json.loads(answer["Body"].read())

    def finished(self, execution: str) -> Rollout:
        """The rollout as the Record step left it in the database."""
        rollout = self.db.rollouts.get(execution)
        assert rollout is not None, f"no rollout recorded for {execution}"
        return rollout


@pytest.fixture(scope="module")
def rollouts(
    tmp_path_factory: pytest.TempPathFactory, tiny_run: dict[str, Path]
) -> Iterator[Rollouts]:
    state = tmp_path_factory.mktemp("rollout-stack")
    stack = LocalStack(
        StackOptions(state_dir=state, template=REPO_ROOT / "template.yaml"), log=lambda _: None
    )
    stack.start()
    try:
        yield Rollouts(stack)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def artifacts(tiny_run: dict[str, Path]) -> dict[str, bytes]:
    return {variant: tiny_run[variant].read_bytes() for variant in ("lstm", "gpt2")}


@pytest.fixture(scope="module")
def serving(rollouts: Rollouts, artifacts: dict[str, bytes]) -> dict[str, Outcome]:
    """Both variants rolled out once (v1), in order."""
    return {
        variant: rollouts.roll_out(artifacts[variant], f"models/{variant}/v1/model.tar.gz")
        for variant in ("lstm", "gpt2")
    }


# --------------------------------------------------------------------------- artifacts


def _members(archive: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return [
            (m, tar.extractfile(m).read() if m.isreg() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        ]


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], *, end: bool = True) -> bytes:
    """A tar stream written block by block, so that a header may claim what it likes."""
    out = bytearray()
    for info, data in members:
        out += info.tobuf(format=tarfile.PAX_FORMAT)
        if info.isreg():
            out += data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    if end:
        out += b"\0" * (2 * tarfile.BLOCKSIZE)
    return bytes(out)


def _pack(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    return gzip.compress(_tar(members))


def _with(archive: bytes, *extra: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    members = _members(archive)
    for item in extra:
        members.append(item if isinstance(item, tuple) else (item, b""))
    return _pack(members)


def _without(archive: bytes, predicate: Any) -> bytes:
    return _pack([(m, d) for m, d in _members(archive) if not predicate(m.name)])


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _bomb(archive: bytes) -> bytes:
    """A member whose header declares 5 GiB: the validator must stop before reading it."""
    huge = tarfile.TarInfo("model/1/variables/extra.bin")
    huge.size = 5 * 1024**3
    head = _tar(_members(archive), end=False)
    return gzip.compress(head + huge.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 4096)


def _broken_inference(archive: bytes) -> bytes:
    """A model that loads and validates but fails every request."""
    members = []
    for info, data in _members(archive):
        if info.name.lstrip("./") == "code/inference.py":
            data += (
                b"\n\ndef output_handler(response, context):\n"
                b'    raise RuntimeError("this model version is broken")\n'
            )
            info.size = len(data)
        members.append((info, data))
    return _pack(members)


# --------------------------------------------------------------------------- tests


def test_each_variant_rolls_out_and_then_serves_that_version(
    rollouts: Rollouts, serving: dict[str, Outcome]
) -> None:
    for variant, outcome in serving.items():
        assert outcome.status == "SUCCEEDED", (outcome.error, outcome.cause)
        assert outcome.output["model_name"] == f"tweetgen-{variant}-v1"
        for state in ("Validate", "CreateModel", "Plan", "DescribeEndpoint", "SmokeTest", "Record"):
            assert state in outcome.states
    assert serving["lstm"].output["reason"].startswith("no endpoint yet")
    assert "CreateEndpoint" in serving["lstm"].states
    assert "UpdateEndpoint" in serving["gpt2"].states
    _, models = rollouts.endpoint()
    assert models == {"lstm": "tweetgen-lstm-v1", "gpt2": "tweetgen-gpt2-v1"}
    for variant in ("lstm", "gpt2"):
        invoked, answer = rollouts.generate(variant)
        assert invoked == variant and isinstance(answer[0]["generated_text"], str)
        finished = rollouts.finished(serving[variant].arn)
        assert finished.status == "succeeded"
        assert [s["name"] for s in finished.steps or []][:2] == ["ReadEvent", "Validate"]
        version = rollouts.db.model_versions.get(variant, "v1")
        assert version is not None and version.offline_metrics
        # The model carries its version and the template's TensorFlow Serving thread settings.
        container = rollouts.sagemaker.describe_model(ModelName=f"tweetgen-{variant}-v1")
        validated = f"s3://{rollouts.bucket}/validated/{variant}/v1/model.tar.gz"
        assert container["PrimaryContainer"]["ModelDataUrl"] == validated
        environment = container["PrimaryContainer"]["Environment"]
        assert environment == {
            "TWEETGEN_VARIANT": variant,
            "TWEETGEN_MODEL_VERSION": "v1",
            "SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "1",
            "SAGEMAKER_TFS_INTER_OP_PARALLELISM": "-1",
        }


def test_bad_artifacts_fail_at_validation_and_leave_the_endpoint_untouched(
    rollouts: Rollouts, serving: dict[str, Outcome], artifacts: dict[str, bytes]
) -> None:
    good = artifacts["lstm"]
    corrupt = bytearray(good)
    corrupt[-8:-4] = bytes(b ^ 0xFF for b in corrupt[-8:-4])  # the gzip trailer's CRC-32
    cases: dict[str, tuple[str, bytes, str]] = {
        "tar-slip": ("slip", _with(good, _file("../evil.py", b"x")), "'..'"),
        "absolute": ("absolute", _with(good, _file("/etc/evil", b"x")), "absolute"),
        "symlink": (
            "symlink",
            _with(good, _link("code/link.py", tarfile.SYMTYPE, "/etc/passwd")),
            "symbolic link",
        ),
        "hard link": (
            "hardlink",
            _with(good, _link("code/hard.py", tarfile.LNKTYPE, "metadata.json")),
            "hard link",
        ),
        "bomb": ("bomb", _bomb(good), "uncompressed"),
        "corrupt gzip": ("corrupt", bytes(corrupt), "damaged"),
        "not a tar": ("nottar", gzip.compress(b"just some text\n" * 100), "tar"),
        "no SavedModel": (
            "nomodel",
            _without(good, lambda n: n.endswith("saved_model.pb")),
            "no SavedModel",
        ),
        "no inference.py": (
            "nocode",
            _without(good, lambda n: n.endswith("inference.py")),
            "missing code/inference.py",
        ),
        "another variant": ("othervariant", artifacts["gpt2"], "says variant 'gpt2'"),
    }
    config_before, models_before = rollouts.endpoint()
    started: dict[str, str] = {}
    for name, (version, body, _) in cases.items():
        key = f"models/lstm/bad-{version}/model.tar.gz"
        started[name] = rollouts.execution(key, rollouts.upload(body, key))
    outside = "models/lstm/model.tar.gz"
    started["key outside the convention"] = rollouts.execution(
        outside, rollouts.upload(good, outside)
    )
    expected = {name: ("ArtifactRejected", text) for name, (_, _, text) in cases.items()}
    expected["key outside the convention"] = ("InvalidModelKey", "does not follow")

    for name, arn in started.items():
        outcome = rollouts.finish(arn)
        error, text = expected[name]
        assert outcome.status == "FAILED", name
        assert outcome.error == error, (name, outcome.cause)
        assert text in outcome.cause, (name, outcome.cause)
        assert "the endpoint was not changed" in outcome.cause
        assert "CreateModel" not in outcome.states, name
        finished = rollouts.finished(arn)
        assert finished.status == "failed" and text in (finished.reason or ""), name
    assert rollouts.endpoint() == (config_before, models_before)


def test_a_version_whose_inference_code_raises_is_rolled_back(
    rollouts: Rollouts, serving: dict[str, Outcome], artifacts: dict[str, bytes]
) -> None:
    config_before, models_before = rollouts.endpoint()

    outcome = rollouts.roll_out(
        _broken_inference(artifacts["lstm"]), "models/lstm/broken/model.tar.gz"
    )

    assert outcome.status == "FAILED"
    assert outcome.error == "SmokeTestFailed", outcome.cause
    assert "this model version is broken" in outcome.cause
    assert f"restored to config {config_before}" in outcome.cause
    assert {
        "UpdateEndpoint",
        "SmokeTest",
        "RestorePrevious",
        "SmokeTestPrevious",
        "RecordFailure",
    } <= set(outcome.states)
    assert rollouts.endpoint() == (config_before, models_before)
    invoked, answer = rollouts.generate("lstm")
    assert invoked == "lstm" and isinstance(answer[0]["generated_text"], str)
    finished = rollouts.finished(outcome.arn)
    assert finished.status == "rolled_back" and "SmokeTestFailed" in (finished.reason or "")


def test_uploading_the_same_key_again_changes_nothing(
    rollouts: Rollouts, serving: dict[str, Outcome], artifacts: dict[str, bytes]
) -> None:
    before = rollouts.endpoint()

    outcome = rollouts.roll_out(artifacts["lstm"], "models/lstm/v1/model.tar.gz")

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert outcome.output["status"] == "unchanged"
    assert "UpdateEndpoint" not in outcome.states and "SmokeTest" in outcome.states
    assert rollouts.endpoint() == before


def test_other_bytes_under_a_version_already_out_never_reach_its_model(
    rollouts: Rollouts, serving: dict[str, Outcome], artifacts: dict[str, bytes]
) -> None:
    good = artifacts["lstm"]
    other = _pack(_members(good))  # the same files, packed again: valid, other bytes
    assert other != good
    before = rollouts.endpoint()

    outcome = rollouts.roll_out(other, "models/lstm/v1/model.tar.gz")

    assert outcome.status == "FAILED" and outcome.error == "ArtifactRejected"
    assert "validated before with other bytes" in outcome.cause
    assert "CreateModel" not in outcome.states
    assert rollouts.endpoint() == before
    # The version's model still loads the bytes validated when it was rolled out.
    model = rollouts.sagemaker.describe_model(ModelName="tweetgen-lstm-v1")
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("/validated/lstm/v1/model.tar.gz")
    copy = rollouts.s3.get_object(Bucket=rollouts.bucket, Key="validated/lstm/v1/model.tar.gz")
    assert copy["Body"].read() == good
    invoked, _ = rollouts.generate("lstm")
    assert invoked == "lstm"
    # The bytes that are out, uploaded again, are a rollout that changes nothing.
    again = rollouts.roll_out(good, "models/lstm/v1/model.tar.gz")
    assert again.status == "SUCCEEDED" and again.output["status"] == "unchanged", again.cause


def test_two_uploads_at_once_roll_out_one_after_the_other(
    rollouts: Rollouts, serving: dict[str, Outcome], artifacts: dict[str, bytes]
) -> None:
    keys = {variant: f"models/{variant}/v2/model.tar.gz" for variant in ("lstm", "gpt2")}
    versions = {variant: rollouts.upload(artifacts[variant], key) for variant, key in keys.items()}
    arns = {variant: rollouts.execution(keys[variant], versions[variant]) for variant in keys}

    outcomes = {variant: rollouts.finish(arn) for variant, arn in arns.items()}

    assert all(o.status == "SUCCEEDED" for o in outcomes.values()), outcomes
    _, models = rollouts.endpoint()
    assert models == {"lstm": "tweetgen-lstm-v2", "gpt2": "tweetgen-gpt2-v2"}
    first, second = sorted(
        (o.window("CreateEndpointConfig", "Record") for o in outcomes.values()),
        key=lambda window: window[0],
    )
    assert first[1] <= second[0], "the two deployments overlapped"


def test_traffic_during_a_rollout_sees_no_failed_request(
    rollouts: Rollouts, serving: dict[str, Outcome], artifacts: dict[str, bytes]
) -> None:
    stop = threading.Event()
    answered: list[str] = []
    failures: list[str] = []

    def traffic() -> None:
        while not stop.is_set():
            try:
                invoked, answer = rollouts.generate()
                assert isinstance(answer[0]["generated_text"], str)
                answered.append(invoked)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        clients = [pool.submit(traffic) for _ in range(2)]
        time.sleep(0.5)
        try:
            outcome = rollouts.roll_out(artifacts["gpt2"], "models/gpt2/v3/model.tar.gz")
            time.sleep(0.5)
        finally:
            stop.set()
        for client in clients:
            client.result()

    assert outcome.status == "SUCCEEDED", outcome.cause
    assert failures == []
    assert len(answered) >= 20 and set(answered) == {"lstm", "gpt2"}
    assert rollouts.endpoint()[1]["gpt2"] == "tweetgen-gpt2-v3"


def test_deploy_model_uploads_and_follows_until_the_version_serves(
    rollouts: Rollouts,
    serving: dict[str, Outcome],
    tiny_run: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_deploy_arguments(parser)
    common = ["--variant", "lstm", "--wait", "--state-dir", str(rollouts.state_dir)]

    status = deploy_command(parser.parse_args([str(tiny_run["lstm"]), "--version", "v4", *common]))

    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "uploaded" in printed and "models/lstm/v4/model.tar.gz" in printed
    for state in ("Validate", "Plan", "UpdateEndpoint", "SmokeTest", "Record"):
        assert f"  {state}\n" in printed
    assert "lstm now serves tweetgen-lstm-v4 on endpoint tweetgen" in printed
    assert rollouts.endpoint()[1]["lstm"] == "tweetgen-lstm-v4"

    # A version is bound to the bytes first validated under it: others are refused before upload.
    executions = len(rollouts.sfn.list_executions(stateMachineArn=rollouts.machine)["executions"])
    other = tiny_run["root"] / "other-bytes.tar.gz"
    other.write_bytes(tiny_run["lstm"].read_bytes() + b"\0" * 1024)  # tar's padding: still valid
    status = deploy_command(parser.parse_args([str(other), "--version", "v4", *common]))
    assert status == 1
    assert "version v4 of lstm is bound to another artifact" in capsys.readouterr().err
    listed = rollouts.sfn.list_executions(stateMachineArn=rollouts.machine)["executions"]
    assert len(listed) == executions
    # The same bytes again are how an older version is rolled out again: allowed.
    status = deploy_command(parser.parse_args([str(tiny_run["lstm"]), "--version", "v4", *common]))
    assert status == 0, capsys.readouterr().out
    # A model made before rollouts kept validated copies loads its key itself: never replaced.
    legacy = f"s3://{rollouts.bucket}/models/lstm/v8/model.tar.gz"
    rollouts.sagemaker.create_model(
        ModelName="tweetgen-lstm-v8",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
        PrimaryContainer={"Image": "img", "ModelDataUrl": legacy},
    )
    status = deploy_command(parser.parse_args([str(other), "--version", "v8", *common]))
    assert status == 1
    assert f"SageMaker model tweetgen-lstm-v8 loads {legacy} itself" in capsys.readouterr().err
    listed = rollouts.sfn.list_executions(stateMachineArn=rollouts.machine)["executions"]
    assert len(listed) == executions + 1  # the one rollout of v4's same bytes

    # A rejected artifact never leaves the machine: the same validator runs before the upload.
    bad = tiny_run["root"] / "other-variant.tar.gz"
    bad.write_bytes(tiny_run["gpt2"].read_bytes())
    status = deploy_command(parser.parse_args([str(bad), "--version", "v5", *common]))
    assert status == 1
    assert "says variant 'gpt2'" in capsys.readouterr().err
    with pytest.raises(DeployError, match="not a file"):
        deploy_model(
            tiny_run["root"] / "missing",
            variant="lstm",
            version=None,
            target=find_target(rollouts.state_dir),
            wait=False,
        )
