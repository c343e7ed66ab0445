"""The layer's cut-down SageMaker and S3 models (tweetgen.adapters.aws): current, complete,
equivalent."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.loaders import Loader
from tweetgen.adapters import aws as clients
from tweetgen.adapters.s3 import ArtifactStore
from tweetgen.adapters.sagemaker import SageMakerEndpoints
from tweetgen.domain.model_key import CopyRefused, ObjectVersion

from tests.conftest import REPO_ROOT
from tests.unit.test_rollout_service import (
    SageMakerWait,
    aws,  # noqa: F401 (the fixture)
)

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import trim_service_models

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/tweetgen-sagemaker"


def full_model(service: str) -> dict[str, Any]:
    loader = Loader()
    return dict(loader.load_service_model(service, "service-2"))


def carried_model(service: str) -> dict[str, Any]:
    (path,) = (clients.SERVICE_MODELS / service).rglob(trim_service_models.MODEL)
    return dict(json.loads(path.read_text()))


def undocumented(shape: dict[str, Any]) -> dict[str, Any]:
    """A shape of the full model as the carried one holds it: without documentation."""
    kept = {key: value for key, value in shape.items() if key != "documentation"}
    if "members" in shape:
        kept["members"] = {
            name: {key: value for key, value in ref.items() if key != "documentation"}
            for name, ref in shape["members"].items()
        }
    return kept


def test_the_carried_models_are_those_of_the_pinned_botocore() -> None:
    # Fails after a botocore upgrade until scripts/trim_service_models.py is run again.
    assert trim_service_models.main(["--check"]) == 0


@pytest.mark.parametrize("service", sorted(clients.TRIMMED_OPERATIONS))
def test_a_carried_model_keeps_its_operations_and_every_shape_they_reach_unchanged(
    service: str,
) -> None:
    full, carried = full_model(service), carried_model(service)
    assert sorted(carried["operations"]) == sorted(clients.TRIMMED_OPERATIONS[service])
    assert carried["metadata"] == full["metadata"]
    reached = [
        ref
        for operation in carried["operations"].values()
        for ref in trim_service_models.operation_references(operation)
    ]
    seen: set[str] = set()
    while reached:
        name = reached.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = carried["shapes"][name]  # a KeyError here: a shape was cut that is still used
        reached.extend(trim_service_models.shape_references(shape))
        assert shape == undocumented(full["shapes"][name])
    assert seen == set(carried["shapes"]), "the model carries shapes no operation reaches"
    for name, operation in carried["operations"].items():
        assert operation == {
            k: v for k, v in full["operations"][name].items() if k != "documentation"
        }


def test_trimming_refuses_an_operation_the_service_does_not_have() -> None:
    with pytest.raises(ValueError, match="DescribeEndpointz"):
        trim_service_models.trimmed_model(full_model("sagemaker"), ("DescribeEndpointz",))


def test_the_sagemaker_adapters_call_only_operations_the_carried_model_has() -> None:
    # What a SageMaker client of the adapters' session can do, by method name.
    methods = {xform_name(name) for name in clients.TRIMMED_OPERATIONS["sagemaker"]}
    source = (REPO_ROOT / "layers/common/tweetgen/adapters/sagemaker.py").read_text()
    called: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name in (
            "SageMakerEndpoints",
            "EndpointVariants",
        ):
            called |= {
                call.func.attr
                for call in ast.walk(node)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Attribute)
                and call.func.value.attr == "_client"
            }
    assert called, "no SageMaker call found: the adapter's layout changed, update this test"
    assert called <= methods, called - methods


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


@pytest.mark.usefixtures("aws")  # moto, as in the rollout tests
def test_the_adapters_sagemaker_client_answers_as_the_full_model_does() -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)  # botocore's whole model
    for name in ("m-lstm", "m-gpt2"):
        sagemaker.create_model(
            ModelName=name,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": "img", "ModelDataUrl": f"s3://bucket/{name}"},
        )
    sagemaker.create_endpoint_config(
        EndpointConfigName="c1",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"m-{variant}",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 0.5,
            }
            for variant in ("lstm", "gpt2")
        ],
    )
    sagemaker.create_endpoint(EndpointName="tweetgen", EndpointConfigName="c1")
    # Deployed in the background: compare the two clients' answers once nothing moves.
    SageMakerWait.in_service()
    carried = clients.client("sagemaker", region_name=REGION)
    assert sorted(carried.meta.service_model.operation_names) == sorted(
        clients.TRIMMED_OPERATIONS["sagemaker"]
    )

    for method, kwargs in (
        ("describe_endpoint", {"EndpointName": "tweetgen"}),
        ("describe_endpoint_config", {"EndpointConfigName": "c1"}),
        ("describe_model", {"ModelName": "m-lstm"}),
    ):
        full = _answer(getattr(sagemaker, method)(**kwargs))
        assert _answer(getattr(carried, method)(**kwargs)) == full

    endpoints = SageMakerEndpoints.from_environment()
    assert endpoints.describe_endpoint("missing") is None  # the error parses the same way
    with pytest.raises(ClientError) as refused:
        carried.describe_model(ModelName="missing")
    assert refused.value.response["Error"]["Code"] == "ValidationException"

    carried.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[
            {"VariantName": "lstm", "DesiredWeight": 0.2},
            {"VariantName": "gpt2", "DesiredWeight": 0.8},
        ],
    )
    weights = {
        v["VariantName"]: v["CurrentWeight"]
        for v in sagemaker.describe_endpoint(EndpointName="tweetgen")["ProductionVariants"]
    }
    assert weights == {"lstm": 0.2, "gpt2": 0.8}

    carried.delete_model(ModelName="m-lstm")
    carried.delete_endpoint_config(EndpointConfigName="c1")
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == ["m-gpt2"]
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []


def test_other_services_keep_botocore_s_whole_model() -> None:
    runtime = clients.client("sagemaker-runtime", region_name=REGION)
    assert "InvokeEndpointAsync" in runtime.meta.service_model.operation_names
    assert (
        "CreateEndpoint"
        in boto3.client("sagemaker", region_name=REGION).meta.service_model.operation_names
    )


def test_the_artifact_store_calls_only_what_the_carried_s3_model_has() -> None:
    methods = {xform_name(name) for name in clients.TRIMMED_OPERATIONS["s3"]}
    source = (REPO_ROOT / "layers/common/tweetgen/adapters/s3.py").read_text()
    called = {
        call.func.attr
        for call in ast.walk(ast.parse(source))
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Attribute)
        and call.func.value.attr == "_client"
    }
    # upload_file is boto3's transfer manager: PutObject, or the multipart operations.
    assert {"copy_object", "get_object", "head_object", "upload_file"} <= called
    assert called - {"upload_file"} <= methods, called - methods


@pytest.mark.usefixtures("aws")
def test_the_adapters_s3_client_uploads_whole_and_multipart_and_streams_back(
    tmp_path: Path,
) -> None:
    s3 = boto3.client("s3", region_name=REGION)  # botocore's whole model
    s3.create_bucket(Bucket="artifacts")
    carried = clients.client("s3", region_name=REGION)
    assert sorted(carried.meta.service_model.operation_names) == sorted(
        clients.TRIMMED_OPERATIONS["s3"]
    )
    store = ArtifactStore(carried)
    small, large = tmp_path / "small.tar.gz", tmp_path / "large.tar.gz"
    small.write_bytes(b"small artifact")
    # Over boto3's 8 MiB multipart threshold: created, uploaded in parts, completed.
    large.write_bytes(bytes(range(256)) * (9 * 4096))
    for path in (small, large):
        stored = store.upload(path, "artifacts", f"models/lstm/v1/{path.name}")
        head = _answer(s3.head_object(Bucket="artifacts", Key=stored.key))
        assert stored.etag == head["ETag"].strip('"')
        assert ("-" in stored.etag) is (path is large)  # a multipart upload's ETag
        assert store.open_version("artifacts", stored.key)[0].read() == path.read_bytes()
    with pytest.raises(ClientError) as missing:
        carried.head_object(Bucket="artifacts", Key="missing")
    assert missing.value.response["Error"]["Code"] == "404"


@pytest.mark.usefixtures("aws")
def test_the_carried_s3_client_keeps_a_validated_copy(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="artifacts")
    s3.put_bucket_versioning(Bucket="artifacts", VersioningConfiguration={"Status": "Enabled"})
    store = ArtifactStore(clients.client("s3", region_name=REGION))
    s3.put_object(Bucket="artifacts", Key="models/lstm/v1/model.tar.gz", Body=b"one")
    body, read = store.open_version("artifacts", "models/lstm/v1/model.tar.gz")
    assert body.read() == b"one" and read.version_id
    assert store.pinned_digest("artifacts", "validated/lstm/v1/model.tar.gz") is None

    s3.put_object(Bucket="artifacts", Key="models/lstm/v1/model.tar.gz", Body=b"two")
    store.pin(read, "validated/lstm/v1/model.tar.gz", "d1")  # by version id: the bytes read
    copy = s3.get_object(Bucket="artifacts", Key="validated/lstm/v1/model.tar.gz")
    assert copy["Body"].read() == b"one" and copy["Metadata"] == {"sha256": "d1"}
    assert store.pinned_digest("artifacts", "validated/lstm/v1/model.tar.gz") == "d1"
    with pytest.raises(CopyRefused):  # written once
        store.pin(read, "validated/lstm/v1/model.tar.gz", "d2")
    assert store.pinned_digest("artifacts", "validated/lstm/v1/model.tar.gz") == "d1"


def test_a_null_version_id_is_no_pin_so_the_copy_names_the_etag_read() -> None:
    # Objects written while versioning was suspended have the version "null", which the next
    # write replaces in place: only the ETag condition keeps the copy to the bytes read.
    from botocore.stub import Stubber

    carried = clients.client("s3", region_name=REGION)
    store = ArtifactStore(carried)
    read = ObjectVersion("artifacts", "models/lstm/v1/model.tar.gz", "null", "abc")
    with Stubber(carried) as stub:
        stub.add_response(
            "copy_object",
            {},
            {
                "Bucket": "artifacts",
                "Key": "validated/lstm/v1/model.tar.gz",
                "CopySource": {"Bucket": "artifacts", "Key": "models/lstm/v1/model.tar.gz"},
                "CopySourceIfMatch": '"abc"',
                "IfNoneMatch": "*",
                "Metadata": {"sha256": "d"},
                "MetadataDirective": "REPLACE",
                "TaggingDirective": "REPLACE",
            },
        )
        store.pin(read, "validated/lstm/v1/model.tar.gz", "d")
        stub.assert_no_pending_responses()


@pytest.mark.usefixtures("aws")
def test_botocore_can_ask_the_carried_s3_client_for_a_buckets_region() -> None:
    # What botocore does after a request reached the wrong region without being told the
    # right one: it asks the bucket (HeadBucket) through the same client.
    from botocore.utils import S3RegionRedirectorv2

    boto3.client("s3", region_name=REGION).create_bucket(Bucket="artifacts")
    carried = clients.client("s3", region_name=REGION)
    redirector = S3RegionRedirectorv2(None, carried)
    response: tuple[None, dict[str, Any]] = (None, {"ResponseMetadata": {"HTTPHeaders": {}}})
    assert redirector.get_bucket_region("artifacts", response) == REGION
