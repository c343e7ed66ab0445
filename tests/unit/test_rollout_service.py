"""The rollout's use cases and rules, against moto in-process (no network, no TensorFlow)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from tweetgen.adapters.autoscaling import EndpointAutoScaling
from tweetgen.adapters.rollout_log import JsonLinesRecorder, read_records
from tweetgen.adapters.s3 import ArtifactStore
from tweetgen.adapters.sagemaker import InvocationFailed, ModelAnswer, SageMakerEndpoints
from tweetgen.adapters.stepfunctions import RolloutExecutions, state_machine_arn, steps_from_history
from tweetgen.domain.model_key import ObjectVersion
from tweetgen.domain.rollout import (
    EndpointState,
    HostingConflict,
    NewVariantSettings,
    ScalingSettings,
    ServerlessSettings,
    VariantState,
    endpoint_config_name,
    is_sagemaker_name,
    model_name,
    plan_endpoint_config,
    poll_schedule,
    scaling_requests,
)
from tweetgen.services.rollout import (
    ArtifactRejected,
    EndpointBusy,
    HostingUnsupported,
    InvalidModelKey,
    QueuedExecution,
    RolloutQueued,
    RolloutSettings,
    RolloutStep,
    SmokeTestFailed,
    clean_up_versions,
    describe_failure,
    plan_rollout,
    record_rollout,
    scale_variants,
    smoke_test,
)
from tweetgen.services.upload import validate_upload
from tweetgen_local import moto_gaps

from tests.unit.test_artifact import artifact_bytes, good_files, metadata_dict, saved_model_pb

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/tweetgen-sagemaker"
BUCKET = "artifacts"
SETTINGS = RolloutSettings(
    endpoint_name="tweetgen",
    guardrail_alarms={"lstm": ["tweetgen-lstm-5xx"]},
    poll_first_s=1,
    poll_max_s=4,
    timeout_s=20,
)
STARTED = "2026-11-26T08:51:45.120Z"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    moto_gaps.install()
    moto_gaps.set_default_deploy_delay(0)
    try:
        with mock_aws():
            yield
    finally:
        moto_gaps.uninstall()


def sagemaker() -> Any:
    return boto3.client("sagemaker", region_name=REGION)


def endpoint_with(models: dict[str, str], weights: dict[str, float], config: str = "c1") -> None:
    sm = sagemaker()
    for model in models.values():
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/{model}"},
        )
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": model,
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 2,
                "InitialVariantWeight": weights[variant],
            }
            for variant, model in models.items()
        ],
    )
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName=config)
    SageMakerWait.in_service()


class SageMakerWait:
    @staticmethod
    def in_service() -> None:
        sm = sagemaker()
        for _ in range(200):
            if sm.describe_endpoint(EndpointName="tweetgen")["EndpointStatus"] == "InService":
                return
            threading.Event().wait(0.01)
        raise AssertionError("endpoint never InService")


class NoQueue:
    def running(self, execution_arn: str) -> list[QueuedExecution]:
        return []


# --------------------------------------------------------------------------- domain


def test_model_names_are_valid_sagemaker_names_and_never_collide() -> None:
    assert model_name("tweetgen", "lstm", "v1") == "tweetgen-lstm-v1"
    dotted, dashed = model_name("tweetgen", "gpt2", "1.0"), model_name("tweetgen", "gpt2", "1-0")
    assert dotted != dashed and dotted.startswith("tweetgen-gpt2-1-0-")
    long = model_name("tweetgen", "a" * 63, "b" * 63)
    for name in (dotted, dashed, long):
        assert is_sagemaker_name(name), name


def test_endpoint_config_names_are_unique_per_execution() -> None:
    when = datetime(2026, 11, 26, 8, 51, 45, tzinfo=UTC)
    first = endpoint_config_name("tweetgen", "lstm", when, "arn:run-1")
    assert first.startswith("tweetgen-lstm-20261126085145-") and is_sagemaker_name(first)
    assert first != endpoint_config_name("tweetgen", "lstm", when, "arn:run-2")


def test_poll_schedule_grows_to_its_cap_and_adds_up_to_the_timeout() -> None:
    schedule = poll_schedule(1, 30, 3600)
    assert schedule[:5] == [1, 2, 3, 4, 6] and max(schedule) == 30
    assert sum(schedule) >= 3600 > sum(schedule[:-1])
    with pytest.raises(ValueError, match="first_s"):
        poll_schedule(0, 30, 10)


def test_plan_replaces_only_this_variant_and_keeps_live_weights_and_counts() -> None:
    endpoint = EndpointState(
        "tweetgen",
        "InService",
        "c1",
        (VariantState("lstm", 0.2, 3), VariantState("gpt2", 0.8, 2)),
    )
    current = [
        {
            "VariantName": "lstm",
            "ModelName": "m-lstm-1",
            "InstanceType": "ml.c5.large",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 0.5,
        },
        {
            "VariantName": "gpt2",
            "ModelName": "m-gpt2-1",
            "InstanceType": "ml.m5.xlarge",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 0.5,
            "VolumeSizeInGB": 30,
        },
    ]
    plan = plan_endpoint_config(
        "tweetgen",
        endpoint,
        current,
        variant="lstm",
        model="m-lstm-2",
        config_name="c2",
        new_variant=NewVariantSettings(),
    )
    assert plan.action == "update" and plan.previous_config == "c1"
    assert plan.previous_model == "m-lstm-1"
    lstm, gpt2 = plan.production_variants
    assert lstm == {
        **current[0],
        "ModelName": "m-lstm-2",
        "InitialVariantWeight": 0.2,
        "InitialInstanceCount": 3,
    }
    assert gpt2 == {**current[1], "InitialVariantWeight": 0.8, "InitialInstanceCount": 2}
    assert current[0]["ModelName"] == "m-lstm-1"  # the input is not changed


def test_plan_adds_a_new_variant_creates_a_missing_endpoint_and_skips_a_no_op() -> None:
    new = NewVariantSettings(instance_type="ml.t2.medium", weight=1.0)
    endpoint = EndpointState("tweetgen", "InService", "c1", (VariantState("lstm", 1.0, 1),))
    current = [{"VariantName": "lstm", "ModelName": "m-lstm-1", "InitialVariantWeight": 1.0}]

    added = plan_endpoint_config(
        "tweetgen",
        endpoint,
        current,
        variant="gpt2",
        model="m-gpt2-1",
        config_name="c2",
        new_variant=new,
    )
    created = plan_endpoint_config(
        "tweetgen", None, [], variant="gpt2", model="m-gpt2-1", config_name="c0", new_variant=new
    )
    same = plan_endpoint_config(
        "tweetgen",
        endpoint,
        current,
        variant="lstm",
        model="m-lstm-1",
        config_name="c3",
        new_variant=new,
    )

    assert [v["VariantName"] for v in added.production_variants] == ["lstm", "gpt2"]
    assert added.production_variants[1]["InstanceType"] == "ml.t2.medium"
    assert created.action == "create" and created.previous_config is None
    assert added.previous_model is None and created.previous_model is None
    assert [v["ModelName"] for v in created.production_variants] == ["m-gpt2-1"]
    assert same.action == "none" and same.config_name == "c1"


SERVERLESS = ServerlessSettings(memory_size_mb=2048, max_concurrency=4)


def _serverless_spec(variant: str, model: str) -> dict[str, Any]:
    return {
        "VariantName": variant,
        "ModelName": model,
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 4},
        "InitialVariantWeight": 1.0,
    }


def test_a_serverless_endpoint_is_created_and_updated_without_instances() -> None:
    new = NewVariantSettings(serverless=SERVERLESS, weight=1.0)
    created = plan_endpoint_config(
        "tweetgen", None, [], variant="lstm", model="m-lstm-1", config_name="c0", new_variant=new
    )
    assert created.production_variants == [_serverless_spec("lstm", "m-lstm-1")]
    assert created.serverless and created.as_dict()["serverless"] is True

    # DescribeEndpoint reports no instance count for a serverless variant.
    endpoint = EndpointState("tweetgen", "InService", "c0", (VariantState("lstm", 1.0, None),))
    updated = plan_endpoint_config(
        "tweetgen",
        endpoint,
        created.production_variants,
        variant="lstm",
        model="m-lstm-2",
        config_name="c1",
        new_variant=new,
    )
    assert updated.action == "update" and updated.serverless
    assert updated.production_variants == [_serverless_spec("lstm", "m-lstm-2")]


def test_serverless_endpoints_serve_one_variant_and_instances_never_turn_serverless() -> None:
    serverless = EndpointState("tweetgen", "InService", "c0", (VariantState("lstm", 1.0),))
    with pytest.raises(HostingConflict, match="one production variant per endpoint"):
        plan_endpoint_config(
            "tweetgen",
            serverless,
            [_serverless_spec("lstm", "m-lstm-1")],
            variant="gpt2",
            model="m-gpt2-1",
            config_name="c1",
            new_variant=NewVariantSettings(serverless=SERVERLESS),
        )

    on_instances = EndpointState("tweetgen", "InService", "c0", (VariantState("lstm", 1.0, 2),))
    current = [
        {
            "VariantName": "lstm",
            "ModelName": "m-lstm-1",
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0,
        }
    ]
    with pytest.raises(HostingConflict, match="ServerlessInference=false"):
        plan_endpoint_config(
            "tweetgen",
            on_instances,
            current,
            variant="gpt2",
            model="m-gpt2-1",
            config_name="c1",
            new_variant=NewVariantSettings(serverless=SERVERLESS),
        )
    # The variant on instances keeps its instances (and its live count) under a serverless
    # setting: SageMaker cannot convert it.
    kept = plan_endpoint_config(
        "tweetgen",
        on_instances,
        current,
        variant="lstm",
        model="m-lstm-2",
        config_name="c1",
        new_variant=NewVariantSettings(serverless=SERVERLESS),
    )
    assert kept.production_variants == [
        {**current[0], "ModelName": "m-lstm-2", "InitialInstanceCount": 2}
    ]
    assert not kept.serverless


def test_a_serverless_endpoint_moves_onto_instances_to_take_a_second_variant() -> None:
    endpoint = EndpointState("tweetgen", "InService", "c0", (VariantState("lstm", 1.0),))
    new = NewVariantSettings(instance_type="ml.c5.large", instance_count=2, weight=0.5)

    plan = plan_endpoint_config(
        "tweetgen",
        endpoint,
        [_serverless_spec("lstm", "m-lstm-1")],
        variant="gpt2",
        model="m-gpt2-1",
        config_name="c1",
        new_variant=new,
    )

    lstm, gpt2 = plan.production_variants
    assert lstm == {
        "VariantName": "lstm",
        "ModelName": "m-lstm-1",
        "InitialVariantWeight": 1.0,
        "InstanceType": "ml.c5.large",
        "InitialInstanceCount": 2,
    }
    assert gpt2["InstanceType"] == "ml.c5.large" and "ServerlessConfig" not in gpt2
    assert "moves from serverless onto instances" in plan.reason
    assert plan.serverless  # the old fleet is serverless: traffic moves all at once


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"memory_size_mb": 1500}, "memory must be one of 1024, 2048"),
        ({"max_concurrency": 0}, "max concurrency must be 1 to 200"),
        ({"max_concurrency": 2, "provisioned_concurrency": 3}, "provisioned concurrency"),
    ],
)
def test_serverless_settings_are_checked(settings: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerlessSettings(**settings)


def test_scaling_requests_track_invocations_per_instance_of_one_variant() -> None:
    target, policy = scaling_requests(
        "tweetgen", "gpt2", ScalingSettings(min_instances=1, max_instances=6)
    )
    assert target == {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/tweetgen/variant/gpt2",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": 1,
        "MaxCapacity": 6,
    }
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ResourceId"] == target["ResourceId"]
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    assert tracking["TargetValue"] == 60.0
    with pytest.raises(ValueError, match="min instances <= max instances"):
        ScalingSettings(min_instances=3, max_instances=2)


def test_settings_read_hosting_and_scaling_from_the_template_environment() -> None:
    instances = RolloutSettings.from_environment(
        {
            "ENDPOINT_NAME": "tweetgen",
            "NEW_VARIANT_INSTANCE_TYPE": "ml.c5.xlarge",
            "NEW_VARIANT_INSTANCE_COUNT": "2",
            "NEW_VARIANT_WEIGHT": "0.5",
            "NEW_VARIANT_SERVERLESS": "false",
            "NEW_VARIANT_SERVERLESS_MEMORY_MB": "2048",
            "SCALING_MIN_INSTANCES": "",
            "SCALING_MAX_INSTANCES": "",
        }
    )
    assert instances.new_variant == NewVariantSettings("ml.c5.xlarge", 2, 0.5, None)
    assert instances.scaling is None

    serverless = RolloutSettings.from_environment(
        {
            "ENDPOINT_NAME": "tweetgen",
            "NEW_VARIANT_SERVERLESS": "true",
            "NEW_VARIANT_SERVERLESS_MEMORY_MB": "4096",
            "NEW_VARIANT_SERVERLESS_MAX_CONCURRENCY": "8",
            "SCALING_MIN_INSTANCES": "2",
            "SCALING_MAX_INSTANCES": "5",
            "SCALING_INVOCATIONS_PER_INSTANCE": "120",
        }
    )
    assert serverless.new_variant.serverless == ServerlessSettings(4096, 8)
    assert serverless.scaling == ScalingSettings(2, 5, 120.0)
    with pytest.raises(ValueError, match="NEW_VARIANT_SERVERLESS must be true or false"):
        RolloutSettings.from_environment({"ENDPOINT_NAME": "e", "NEW_VARIANT_SERVERLESS": "on"})


# --------------------------------------------------------------------------- validate


def test_validate_streams_the_object_and_names_the_model(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1.2/model.tar.gz", Body=artifact_bytes())

    artifact = validate_upload(
        BUCKET,
        "models%2Flstm%2Fv1.2%2Fmodel.tar.gz",  # as S3 notifications encode keys
        source=ArtifactStore(s3),
        models=_models(),
        settings=SETTINGS,
    )

    assert artifact["variant"] == "lstm" and artifact["version"] == "v1.2"
    assert artifact["s3_uri"] == f"s3://{BUCKET}/models/lstm/v1.2/model.tar.gz"
    assert artifact["model_name"] == model_name("tweetgen", "lstm", "v1.2")
    assert artifact["metadata"]["metrics"]["test_perplexity"] == 85.2
    # What passed is copied once; the model is created from the copy.
    assert artifact["model_data_url"] == f"s3://{BUCKET}/validated/lstm/v1.2/model.tar.gz"
    assert artifact["sha256"] == hashlib.sha256(artifact_bytes()).hexdigest()
    copy = s3.get_object(Bucket=BUCKET, Key="validated/lstm/v1.2/model.tar.gz")
    assert copy["Body"].read() == artifact_bytes()
    assert copy["Metadata"] == {"sha256": artifact["sha256"]}


def _models() -> SageMakerEndpoints:
    return SageMakerEndpoints(boto3.client("sagemaker", region_name=REGION))


def _versioned_bucket() -> Any:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return s3


def _validate(s3: Any, key: str = "models/lstm/v1/model.tar.gz", **kw: Any) -> dict[str, Any]:
    source = kw.get("source", ArtifactStore(s3))
    return validate_upload(BUCKET, key, source=source, models=_models(), settings=SETTINGS)


def test_a_version_uploaded_again_with_other_bytes_never_reaches_its_model(aws: None) -> None:
    s3 = _versioned_bucket()
    first = artifact_bytes()
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=first)
    pinned = _validate(s3)["model_data_url"]

    # The same bytes again (a rollout repeated) go through, to the same copy.
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=first)
    assert _validate(s3)["model_data_url"] == pinned

    # Other bytes, valid ones, under the same version: refused, and the copy is untouched.
    other = artifact_bytes(good_files(**{"code/requirements.txt": b"tokenizers\n"}))
    assert other != first
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=other)
    with pytest.raises(ArtifactRejected) as raised:
        _validate(s3)
    message = str(raised.value)
    assert "validated before with other bytes" in message
    assert f"sha256 {hashlib.sha256(first).hexdigest()[:12]}" in message
    assert f"this upload {hashlib.sha256(other).hexdigest()[:12]}" in message
    assert "upload these bytes under a new version" in message
    copy = s3.get_object(Bucket=BUCKET, Key="validated/lstm/v1/model.tar.gz")["Body"].read()
    assert copy == first
    # Under a new version they pass.
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v2/model.tar.gz", Body=other)
    assert (
        _validate(s3, "models/lstm/v2/model.tar.gz")["sha256"] == hashlib.sha256(other).hexdigest()
    )


class _OverwrittenWhileValidating(ArtifactStore):
    """The S3 edge of a race: another upload lands between the read and the copy."""

    def __init__(self, client: Any, body: bytes) -> None:
        super().__init__(client)
        self.body = body

    def pinned_digest(self, bucket: str, key: str) -> str | None:
        self._client.put_object(Bucket=bucket, Key="models/lstm/v1/model.tar.gz", Body=self.body)
        return super().pinned_digest(bucket, key)


def test_the_copy_is_the_version_that_was_validated(aws: None) -> None:
    s3 = _versioned_bucket()
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=artifact_bytes())
    late = b"not an artifact"

    artifact = _validate(s3, source=_OverwrittenWhileValidating(s3, late))

    copy = s3.get_object(Bucket=BUCKET, Key="validated/lstm/v1/model.tar.gz")["Body"].read()
    assert copy == artifact_bytes()
    assert artifact["sha256"] == hashlib.sha256(copy).hexdigest()


def test_without_versions_an_object_replaced_while_validated_is_not_copied(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=artifact_bytes())

    with pytest.raises(ArtifactRejected, match="was replaced while it was validated"):
        _validate(s3, source=_OverwrittenWhileValidating(s3, b"not an artifact"))
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="validated/")
    assert listed["KeyCount"] == 0


class _RacedBy(ArtifactStore):
    """The S3 edge of a race: another rollout of the same version copies between this one's
    look for a copy and its own copy."""

    def __init__(self, client: Any, other: bytes) -> None:
        super().__init__(client)
        self.other: bytes | None = other

    def pin(self, source: ObjectVersion, key: str, digest: str) -> None:
        if self.other is not None:
            other, self.other = self.other, None
            self._client.put_object(Bucket=BUCKET, Key=source.key, Body=other)
            _validate(self._client, source.key)  # the other rollout, start to finish
        super().pin(source, key, digest)


def test_of_two_rollouts_of_one_version_at_once_only_the_first_copy_stands(aws: None) -> None:
    s3 = _versioned_bucket()
    mine = artifact_bytes()
    theirs = artifact_bytes(good_files(**{"code/requirements.txt": b"tokenizers\n"}))
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=mine)

    with pytest.raises(ArtifactRejected, match="validated before with other bytes"):
        _validate(s3, source=_RacedBy(s3, theirs))
    copy = s3.get_object(Bucket=BUCKET, Key="validated/lstm/v1/model.tar.gz")
    assert copy["Body"].read() == theirs
    assert copy["Metadata"] == {"sha256": hashlib.sha256(theirs).hexdigest()}
    # Had both sent the same bytes, the second finds its own bytes copied and goes on.
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v2/model.tar.gz", Body=mine)
    artifact = _validate(s3, "models/lstm/v2/model.tar.gz", source=_RacedBy(s3, mine))
    assert artifact["sha256"] == hashlib.sha256(mine).hexdigest()


def test_a_version_whose_model_loads_the_uploaded_key_is_never_rebound(aws: None) -> None:
    """Models created before rollouts kept validated copies load models/... itself."""
    s3 = _versioned_bucket()
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=artifact_bytes())
    boto3.client("sagemaker", region_name=REGION).create_model(
        ModelName=model_name("tweetgen", "lstm", "v1"),
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "img",
            "ModelDataUrl": f"s3://{BUCKET}/models/lstm/v1/model.tar.gz",
        },
    )

    with pytest.raises(ArtifactRejected) as raised:
        _validate(s3)
    assert f"loads s3://{BUCKET}/models/lstm/v1/model.tar.gz, not a validated copy" in str(
        raised.value
    )
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="validated/")["KeyCount"] == 0


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("models/lstm/model.tar.gz", "does not follow models/<variant>/<version>/model.tar.gz"),
        ("models/lstm/v1/weights.tar.gz", "file name is 'weights.tar.gz'"),
        ("models/rnn/v1/model.tar.gz", "has variants lstm, gpt2"),
    ],
)
def test_keys_outside_the_convention_are_refused_before_reading(
    aws: None, key: str, message: str
) -> None:
    class Unreadable:
        def open_version(self, bucket: str, key: str) -> Any:
            raise AssertionError("the object must not be read")

        def pinned_digest(self, bucket: str, key: str) -> str | None:
            raise AssertionError("nothing must be looked up")

        def pin(self, source: Any, key: str, digest: str) -> None:
            raise AssertionError("nothing must be copied")

        def model_data_url(self, name: str) -> str | None:
            raise AssertionError("no model must be looked up")

    unreadable = Unreadable()
    with pytest.raises(InvalidModelKey, match=message):
        validate_upload(BUCKET, key, source=unreadable, models=unreadable, settings=SETTINGS)


def test_a_bad_artifact_is_rejected_with_every_problem(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    files = good_files(
        **{
            "code/inference.py": None,
            "metadata.json": json.dumps(metadata_dict(variant="gpt2", kind="gpt2")).encode(),
        }
    )
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=artifact_bytes(files))

    with pytest.raises(ArtifactRejected) as raised:
        validate_upload(
            BUCKET,
            "models/lstm/v1/model.tar.gz",
            source=ArtifactStore(s3),
            models=_models(),
            settings=SETTINGS,
        )
    assert "2 problems" in str(raised.value)
    assert "missing code/inference.py" in str(raised.value)
    assert "says variant 'gpt2'" in str(raised.value)


@pytest.mark.parametrize(
    ("instance_type", "serverless", "allowed"),
    [
        ("ml.m5.large", False, False),
        ("ml.c6i.xlarge", False, False),
        ("ml.inf2.xlarge", False, False),
        ("ml.g5.xlarge", False, True),
        ("ml.p3.2xlarge", False, True),
        ("ml.g5.xlarge", True, False),
    ],
)
def test_an_xla_model_is_deployed_only_where_new_variants_run_on_gpus(
    aws: None, instance_type: str, serverless: bool, allowed: bool
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    graph = saved_model_pb(graph=b"graph\n\x0f_XlaMustCompile\x12\x02(\x01rest")
    body = artifact_bytes(good_files(**{"model/1/saved_model.pb": graph}))
    s3.put_object(Bucket=BUCKET, Key="models/lstm/v1/model.tar.gz", Body=body)
    env = {"ENDPOINT_NAME": "tweetgen", "NEW_VARIANT_INSTANCE_TYPE": instance_type}
    if serverless:
        env["NEW_VARIANT_SERVERLESS"] = "true"
    settings = RolloutSettings.from_environment(env)
    assert settings.new_variant.compiles_xla is allowed

    def validate() -> dict[str, Any]:
        return validate_upload(
            BUCKET,
            "models/lstm/v1/model.tar.gz",
            source=ArtifactStore(s3),
            models=_models(),
            settings=settings,
        )

    if allowed:
        assert validate()["variant"] == "lstm"
    else:
        with pytest.raises(ArtifactRejected, match="compiled with XLA"):
            validate()


# --------------------------------------------------------------------------- plan


def test_plan_on_a_live_endpoint(aws: None) -> None:
    endpoint_with(
        {"lstm": "tweetgen-lstm-v1", "gpt2": "tweetgen-gpt2-v1"}, {"lstm": 0.3, "gpt2": 0.7}
    )

    plan = plan_rollout(
        {"variant": "lstm", "model_name": "tweetgen-lstm-v2"},
        execution_id="arn:aws:states:us-east-1:123456789012:execution:tweetgen-rollout:r1",
        started_at=STARTED,
        endpoints=SageMakerEndpoints(sagemaker()),
        queue=NoQueue(),
        settings=SETTINGS,
    )

    assert plan["action"] == "update" and plan["previous_config"] == "c1"
    assert plan["config_name"].startswith("tweetgen-lstm-20261126085145-")
    assert [(v["ModelName"], v["InitialVariantWeight"]) for v in plan["production_variants"]] == [
        ("tweetgen-lstm-v2", 0.3),
        ("tweetgen-gpt2-v1", 0.7),
    ]
    assert plan["max_polls"] == len(plan["poll_schedule"]) and sum(plan["poll_schedule"]) >= 20
    guardrails = plan["deployment_config"]
    assert guardrails["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "tweetgen-lstm-5xx"}]
    }
    assert guardrails["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"


def test_plan_waits_while_the_endpoint_is_updating(aws: None) -> None:
    endpoint_with({"lstm": "tweetgen-lstm-v1"}, {"lstm": 1.0})
    release = threading.Event()
    moto_gaps.set_endpoint_deployer(lambda endpoint, config: None if release.wait(10) else "late")
    sagemaker().update_endpoint(EndpointName="tweetgen", EndpointConfigName="c1")
    try:
        with pytest.raises(EndpointBusy, match="Updating"):
            plan_rollout(
                {"variant": "lstm", "model_name": "tweetgen-lstm-v2"},
                execution_id="arn:aws:states:us-east-1:123456789012:execution:m:r1",
                started_at=STARTED,
                endpoints=SageMakerEndpoints(sagemaker()),
                queue=NoQueue(),
                settings=SETTINGS,
            )
    finally:
        release.set()


def test_rollouts_queue_behind_earlier_running_executions(aws: None) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="tweetgen-rollout",
        definition=json.dumps(
            {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}}
        ),
        roleArn=ROLE,
    )["stateMachineArn"]
    first = sfn.start_execution(stateMachineArn=machine, name="first")["executionArn"]
    second = sfn.start_execution(stateMachineArn=machine, name="second")["executionArn"]
    assert state_machine_arn(second) == machine
    queue = RolloutExecutions(sfn)
    common: dict[str, Any] = {
        "started_at": STARTED,
        "endpoints": SageMakerEndpoints(sagemaker()),
        "queue": queue,
        "settings": SETTINGS,
    }
    artifact = {"variant": "lstm", "model_name": "tweetgen-lstm-v1"}

    with pytest.raises(RolloutQueued, match="1 earlier rollout"):
        plan_rollout(artifact, execution_id=second, **common)
    assert plan_rollout(artifact, execution_id=first, **common)["action"] == "create"


def test_a_rollout_keeps_the_instance_count_the_autoscaler_chose(aws: None) -> None:
    endpoint_with(
        {"lstm": "tweetgen-lstm-v1", "gpt2": "tweetgen-gpt2-v1"}, {"lstm": 0.5, "gpt2": 0.5}
    )
    # Application Auto Scaling scales through UpdateEndpointWeightsAndCapacities.
    sagemaker().update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[{"VariantName": "gpt2", "DesiredInstanceCount": 5}],
    )
    SageMakerWait.in_service()

    plan = plan_rollout(
        {"variant": "lstm", "model_name": "tweetgen-lstm-v2"},
        execution_id="arn:aws:states:us-east-1:123456789012:execution:tweetgen-rollout:r1",
        started_at=STARTED,
        endpoints=SageMakerEndpoints(sagemaker()),
        queue=NoQueue(),
        settings=SETTINGS,
    )

    counts = {v["VariantName"]: v["InitialInstanceCount"] for v in plan["production_variants"]}
    assert counts == {"lstm": 2, "gpt2": 5}  # the config said 2 for both


def test_plan_on_a_serverless_endpoint_shifts_traffic_all_at_once(aws: None) -> None:
    settings = RolloutSettings(
        endpoint_name="tweetgen",
        new_variant=NewVariantSettings(serverless=SERVERLESS),
        guardrail_alarms={"lstm": ["tweetgen-lstm-5xx"]},
        canary_wait_s=120,
    )
    sm = sagemaker()
    sm.create_model(
        ModelName="tweetgen-lstm-v1",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="c1", ProductionVariants=[_serverless_spec("lstm", "tweetgen-lstm-v1")]
    )
    sm.create_endpoint(EndpointName="tweetgen", EndpointConfigName="c1")
    SageMakerWait.in_service()
    common: dict[str, Any] = {
        "execution_id": "arn:aws:states:us-east-1:123456789012:execution:tweetgen-rollout:r1",
        "started_at": STARTED,
        "endpoints": SageMakerEndpoints(sm),
        "queue": NoQueue(),
        "settings": settings,
    }

    plan = plan_rollout({"variant": "lstm", "model_name": "tweetgen-lstm-v2"}, **common)

    assert plan["production_variants"] == [_serverless_spec("lstm", "tweetgen-lstm-v2")]
    assert plan["deployment_config"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "ALL_AT_ONCE",
        "WaitIntervalInSeconds": 120,
    }
    assert plan["deployment_config"]["AutoRollbackConfiguration"]["Alarms"]
    with pytest.raises(HostingUnsupported, match="one production variant per endpoint"):
        plan_rollout({"variant": "gpt2", "model_name": "tweetgen-gpt2-v1"}, **common)


def test_scale_variants_attaches_a_policy_to_each_variant_on_instances(aws: None) -> None:
    endpoint_with(
        {"lstm": "tweetgen-lstm-v1", "gpt2": "tweetgen-gpt2-v1"}, {"lstm": 0.5, "gpt2": 0.5}
    )
    endpoints = SageMakerEndpoints(sagemaker())
    client = boto3.client("application-autoscaling", region_name=REGION)
    scaler = EndpointAutoScaling(client)
    settings = RolloutSettings(
        endpoint_name="tweetgen", scaling=ScalingSettings(min_instances=2, max_instances=8)
    )

    assert scale_variants(endpoints=endpoints, scaler=scaler, settings=SETTINGS) == []
    assert scale_variants(endpoints=endpoints, scaler=scaler, settings=settings) == [
        "lstm",
        "gpt2",
    ]
    # A second rollout registers again without duplicating anything.
    scale_variants(endpoints=endpoints, scaler=scaler, settings=settings)

    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert sorted((t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets) == [
        ("endpoint/tweetgen/variant/gpt2", 2, 8),
        ("endpoint/tweetgen/variant/lstm", 2, 8),
    ]
    policies = scaler.policies("endpoint/tweetgen/variant/gpt2")
    assert [p["PolicyType"] for p in policies] == ["TargetTrackingScaling"]


# --------------------------------------------------------------------------- smoke test


@dataclass
class FakeRuntime:
    answer: ModelAnswer | Exception
    then: ModelAnswer | Exception | None = None
    calls: int = 0

    def invoke(self, endpoint_name: str, variant: str | None, body: bytes) -> ModelAnswer:
        self.calls += 1
        answer = self.answer if self.calls == 1 or self.then is None else self.then
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_smoke_test_checks_the_model_in_force_and_the_answer(aws: None) -> None:
    endpoint_with({"lstm": "tweetgen-lstm-v1"}, {"lstm": 1.0})
    endpoints = SageMakerEndpoints(sagemaker())
    good = ModelAnswer("lstm", "application/json", b'[{"generated_text": " hi there"}]')

    result = smoke_test(
        endpoint_name="tweetgen",
        variant="lstm",
        model="tweetgen-lstm-v1",
        endpoints=endpoints,
        invoker=FakeRuntime(good),
        sleep=lambda _: None,
    )

    assert result["generated_text"] == " hi there" and result["config_name"] == "c1"
    assert result["requests"] == 3
    flaky = FakeRuntime(good, then=InvocationFailed("ModelError: second request"))
    with pytest.raises(SmokeTestFailed, match="second request"):
        smoke_test(
            endpoint_name="tweetgen",
            variant="lstm",
            model="tweetgen-lstm-v1",
            endpoints=endpoints,
            invoker=flaky,
            sleep=lambda _: None,
        )
    failing: list[tuple[str, ModelAnswer | Exception, str]] = [
        ("tweetgen-lstm-v2", good, "runs model 'tweetgen-lstm-v1'"),
        ("tweetgen-lstm-v1", InvocationFailed("ModelError: boom"), "ModelError: boom"),
        ("tweetgen-lstm-v1", ModelAnswer("lstm", "", b'{"error": 1}'), 'not \\[{"generated_text'),
        ("tweetgen-lstm-v1", ModelAnswer("gpt2", "", good.body), "variant 'gpt2' answered"),
    ]
    for model, answer, message in failing:
        with pytest.raises(SmokeTestFailed, match=message):
            smoke_test(
                endpoint_name="tweetgen",
                variant="lstm",
                model=model,
                endpoints=endpoints,
                invoker=FakeRuntime(answer),
                sleep=lambda _: None,
            )


# --------------------------------------------------------------------------- record


class FixedHistory:
    def steps(self, execution_arn: str) -> list[RolloutStep]:
        at = datetime(2026, 11, 26, 8, 51, 46, tzinfo=UTC)
        return [RolloutStep("Validate", "Task", at).exited(at + timedelta(seconds=2))]


def _state(**extra: Any) -> dict[str, Any]:
    return {
        "execution_id": "arn:aws:states:us-east-1:123456789012:execution:tweetgen-rollout:r1",
        "started_at": STARTED,
        "event": {"detail": {"object": {"key": "models/lstm/v2/model.tar.gz"}}},
        **extra,
    }


def test_record_a_success_keeps_the_version_and_the_steps(aws: None, tmp_path: Path) -> None:
    log = tmp_path / "rollouts.jsonl"
    artifact = {
        "variant": "lstm",
        "version": "v2",
        "kind": "lstm",
        "s3_uri": "s3://b/models/lstm/v2/model.tar.gz",
        "model_data_url": "s3://b/validated/lstm/v2/model.tar.gz",
        "metadata": metadata_dict(),
        "key": "models/lstm/v2/model.tar.gz",
    }
    plan = {"action": "update", "reason": "variant lstm: model a -> b"}

    outcome = record_rollout(
        _state(artifact=artifact, plan=plan),
        succeeded=True,
        recorder=JsonLinesRecorder(log),
        history=FixedHistory(),
        endpoints=SageMakerEndpoints(sagemaker()),
        settings=SETTINGS,
        now=datetime(2026, 11, 26, 8, 52, 0, tzinfo=UTC),
    )

    assert outcome["status"] == "succeeded" and outcome["duration_s"] == 14.88
    version, started, finished = read_records(log)
    assert version["record"] == "model_version" and version["metrics"]["test_perplexity"] == 85.2
    assert version["s3_uri"] == "s3://b/validated/lstm/v2/model.tar.gz"
    assert started["record"] == "rollout_started" and started["variant"] == "lstm"
    assert finished["status"] == "succeeded"
    assert finished["steps"] == [
        {
            "name": "Validate",
            "type": "Task",
            "entered_at": "2026-11-26T08:51:46+00:00",
            "duration_s": 2.0,
            "error": None,
        }
    ]


def test_record_a_failure_says_what_failed_and_what_the_rollback_did(
    aws: None, tmp_path: Path
) -> None:
    log = tmp_path / "rollouts.jsonl"
    cause = json.dumps({"errorType": "SmokeTestFailed", "errorMessage": "variant lstm said 500"})
    state = _state(
        plan={"previous_config": "c1"},
        error={"Error": "SmokeTestFailed", "Cause": cause},
        rollback={"status": "restored"},
    )

    outcome = record_rollout(
        state,
        succeeded=False,
        recorder=JsonLinesRecorder(log),
        history=FixedHistory(),
        endpoints=SageMakerEndpoints(sagemaker()),
        settings=SETTINGS,
    )

    assert outcome["error"] == "SmokeTestFailed" and outcome["status"] == "rolled_back"
    assert outcome["cause"] == (
        "models/lstm/v2/model.tar.gz was not rolled out: variant lstm said 500; "
        "the endpoint was restored to config c1"
    )
    assert (outcome["variant"], outcome["version"]) == ("lstm", "v2")
    assert [r["record"] for r in read_records(log)] == ["rollout_started", "rollout_finished"]
    assert describe_failure({"Error": "States.Runtime", "Cause": "plain text"}) == (
        "States.Runtime",
        "plain text",
    )


def test_clean_up_keeps_what_is_in_use_and_the_newest(aws: None) -> None:
    endpoint_with({"lstm": "tweetgen-lstm-v0"}, {"lstm": 1.0}, config="tweetgen-lstm-0")
    sm = sagemaker()
    for n in range(1, 6):
        sm.create_model(
            ModelName=f"tweetgen-lstm-v{n}",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/k"},
        )
        sm.create_endpoint_config(
            EndpointConfigName=f"tweetgen-lstm-{n}",
            ProductionVariants=[
                {
                    "VariantName": "lstm",
                    "ModelName": f"tweetgen-lstm-v{n}",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
    settings = RolloutSettings(endpoint_name="tweetgen", keep_versions=2, keep_young_models_s=0)

    deleted = clean_up_versions(
        endpoints=SageMakerEndpoints(sm), settings=settings, protect=["tweetgen-lstm-1"]
    )

    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    models = {m["ModelName"] for m in sm.list_models()["Models"]}
    assert configs == {"tweetgen-lstm-0", "tweetgen-lstm-1", "tweetgen-lstm-4", "tweetgen-lstm-5"}
    assert models == {
        "tweetgen-lstm-v0",
        "tweetgen-lstm-v1",
        "tweetgen-lstm-v4",
        "tweetgen-lstm-v5",
    }
    assert sorted(deleted) == [
        "tweetgen-lstm-2",
        "tweetgen-lstm-3",
        "tweetgen-lstm-v2",
        "tweetgen-lstm-v3",
    ]


def test_steps_from_history_time_each_state_and_mark_failures() -> None:
    at = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
    events = [
        {"type": "TaskStateEntered", "timestamp": at, "stateEnteredEventDetails": {"name": "Plan"}},
        {
            "type": "TaskFailed",
            "timestamp": at,
            "taskFailedEventDetails": {"error": "RolloutQueued"},
        },
        {
            "type": "TaskStateExited",
            "timestamp": at + timedelta(seconds=3),
            "stateExitedEventDetails": {"name": "Plan"},
        },
        {
            "type": "WaitStateEntered",
            "timestamp": at + timedelta(seconds=3),
            "stateEnteredEventDetails": {"name": "WaitForEndpoint"},
        },
    ]

    plan, wait = (step.as_dict() for step in steps_from_history(events))

    assert (plan["name"], plan["duration_s"], plan["error"]) == ("Plan", 3.0, "RolloutQueued")
    assert (wait["type"], wait["duration_s"]) == ("Wait", None)
