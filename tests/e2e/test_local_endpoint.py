"""The local stack end to end: two real tiny artifacts as the variants of one endpoint, via boto3."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from tweetgen_local.stack import LocalStack, StackOptions

ROLE = "arn:aws:iam::123456789012:role/tweetgen-sagemaker"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(
        StackOptions(state_dir=tmp_path_factory.mktemp("stack")), log=lambda _: None
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _clients(stack: LocalStack) -> tuple[Any, Any, Any]:
    e = stack.endpoints
    session = boto3.session.Session(region_name=e["region"])
    runtime = session.client(
        "sagemaker-runtime",
        endpoint_url=e["sagemaker_runtime"],
        config=Config(retries={"max_attempts": 1}),
    )
    return (
        session.client("s3", endpoint_url=e["aws"]),
        session.client("sagemaker", endpoint_url=e["aws"]),
        runtime,
    )


def _wait(sagemaker: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described: dict[str, Any] = sagemaker.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] not in ("Creating", "Updating"):
            return described
        time.sleep(0.3)
    raise AssertionError(f"{name} still {described['EndpointStatus']}")


def _model(sagemaker: Any, name: str, bucket: str, key: str) -> None:
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.16-cpu",
            "ModelDataUrl": f"s3://{bucket}/{key}",
        },
    )


def _config(sagemaker: Any, name: str, models: dict[str, str], weights: dict[str, float]) -> None:
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": v,
                "ModelName": m,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": weights[v],
            }
            for v, m in models.items()
        ],
    )


def _generate(runtime: Any, variant: str, seed: int = 5) -> tuple[str, list[dict[str, str]]]:
    answer = runtime.invoke_endpoint(
        EndpointName="tweetgen",
        ContentType="application/json",
        TargetVariant=variant,
        Body=json.dumps(
            {
                "inputs": ["good morning", "i hate"],
                "parameters": {"seed": seed, "max_new_tokens": 8},
            }
        ),
    )
    return answer["InvokedProductionVariant"], json.loads(answer["Body"].read())


def test_two_real_artifacts_serve_as_variants_and_a_bad_update_rolls_back(
    stack: LocalStack, tiny_run: dict[str, Path]
) -> None:
    s3, sagemaker, runtime = _clients(stack)
    bucket = stack.endpoints["artifact_bucket"]
    for variant in ("lstm", "gpt2"):
        s3.upload_file(str(tiny_run[variant]), bucket, f"models/{variant}/v1/model.tar.gz")
        _model(sagemaker, f"tweetgen-{variant}-v1", bucket, f"models/{variant}/v1/model.tar.gz")
    models = {"lstm": "tweetgen-lstm-v1", "gpt2": "tweetgen-gpt2-v1"}
    _config(sagemaker, "tweetgen-c1", models, {"lstm": 0.5, "gpt2": 0.5})
    sagemaker.create_endpoint(EndpointName="tweetgen", EndpointConfigName="tweetgen-c1")
    assert _wait(sagemaker, "tweetgen")["EndpointStatus"] == "InService"

    for variant in ("lstm", "gpt2"):
        invoked, texts = _generate(runtime, variant)
        assert invoked == variant
        assert len(texts) == 2 and all(isinstance(t["generated_text"], str) for t in texts)
        assert _generate(runtime, variant)[1] == texts  # seeded: reproducible through the stack
    with pytest.raises(runtime.exceptions.ModelError, match="inputs"):
        runtime.invoke_endpoint(
            EndpointName="tweetgen", ContentType="application/json", Body=b'{"inputs": []}'
        )

    # A config whose gpt2 model does not exist cannot be served: back to c1, with a reason.
    _model(sagemaker, "tweetgen-gpt2-missing", bucket, "models/gpt2/missing/model.tar.gz")
    _config(
        sagemaker,
        "tweetgen-c2",
        {"lstm": "tweetgen-lstm-v1", "gpt2": "tweetgen-gpt2-missing"},
        {"lstm": 0.5, "gpt2": 0.5},
    )
    sagemaker.update_endpoint(EndpointName="tweetgen", EndpointConfigName="tweetgen-c2")
    described = _wait(sagemaker, "tweetgen")
    assert described["EndpointConfigName"] == "tweetgen-c1"
    assert "FailureReason" in described
    assert _generate(runtime, "gpt2")[0] == "gpt2"

    # Traffic moves with the weights, without a new config.
    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="tweetgen",
        DesiredWeightsAndCapacities=[
            {"VariantName": "lstm", "DesiredWeight": 0.0},
            {"VariantName": "gpt2", "DesiredWeight": 1.0},
        ],
    )
    time.sleep(1.5)
    served = {
        runtime.invoke_endpoint(
            EndpointName="tweetgen",
            ContentType="application/json",
            Body=b'{"inputs": "hi", "parameters": {"max_new_tokens": 2}}',
        )["InvokedProductionVariant"]
        for _ in range(20)
    }
    assert served == {"gpt2"}
