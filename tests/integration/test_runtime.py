"""InvokeEndpoint through the local SageMaker hosting, as boto3 sees it.

moto (in-process) is the control plane and S3; the local hosting service follows it and the
runtime server answers boto3's real ``sagemaker-runtime`` client on a free local port. The
models are tiny SavedModels built here (``y = x / 2 + offset``: the answer tells which model
served it), plus the two real tiny tweet generators for the end-to-end check.
"""

from __future__ import annotations

import io
import json
import random
import socket
import tarfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import tensorflow as tf
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from tweetgen_local.hosting import LocalHosting
from tweetgen_local.runtime import RuntimeServer

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tweetgen-sagemaker"
BUCKET = "tweetgen-artifacts"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.16-cpu"
ONE = json.dumps({"instances": [1.0]}).encode()
# Chi-squared critical value, 1 degree of freedom, p = 0.001.
CHI2_CRITICAL_P001 = 10.83

ECHO_HANDLER = """
    import json

    def handler(data, context):
        body = data.read()
        if body == b"fail":
            raise ValueError("the model refused: fail")
        answer = {
            "custom_attributes": context.custom_attributes,
            "content_type": context.request_content_type,
            "accept": context.accept_header,
        }
        return json.dumps(answer), context.accept_header
"""


def _save_half_plus(directory: Path, offset: float) -> None:
    class HalfPlus(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def __call__(self, x: Any) -> dict[str, Any]:
            return {"y": x / 2.0 + offset}

    module = HalfPlus()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})


def _pack(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """model.tar.gz bytes: plus3 / plus4 (no handlers), echo (a handler), broken (bad import)."""
    root = tmp_path_factory.mktemp("archives")
    packed: dict[str, bytes] = {}
    for name, offset in (("plus3", 3.0), ("plus4", 4.0)):
        _save_half_plus(root / name / "model" / "1", offset)
        packed[name] = _pack(root / name)
    for name, code in (
        ("echo", {"inference.py": ECHO_HANDLER}),
        (
            "broken",
            {
                "inference.py": "import not_installed_anywhere\n",
                "requirements.txt": "not-installed-anywhere==0.1\n",
            },
        ),
    ):
        (root / name / "model").mkdir(parents=True)
        (root / "plus3" / "model" / "1").rename(root / name / "model" / "1")
        for relative, text in code.items():
            path = root / name / "code" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        packed[name] = _pack(root / name)
        (root / name / "model" / "1").rename(root / "plus3" / "model" / "1")
    packed["garbage"] = b"this is not a tar file"
    return packed


@dataclass
class Stack:
    sagemaker: Any
    s3: Any
    runtime: Any
    hosting: LocalHosting
    server: RuntimeServer
    archives: dict[str, bytes]

    def model(self, name: str, archive: str, environment: dict[str, str] | None = None) -> str:
        key = f"models/{name}/1/model.tar.gz"
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=self.archives[archive])
        container: dict[str, Any] = {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{key}"}
        if environment:
            container["Environment"] = environment
        self.sagemaker.create_model(
            ModelName=name, PrimaryContainer=container, ExecutionRoleArn=ROLE
        )
        return name

    def config(self, name: str, variants: dict[str, tuple[str, float]]) -> str:
        self.sagemaker.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": variant,
                    "ModelName": model,
                    "InitialVariantWeight": weight,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
                for variant, (model, weight) in variants.items()
            ],
        )
        return name

    def endpoint(self, name: str, config: str, *, wait: bool = True) -> str:
        self.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config)
        if wait:
            assert self.hosting.prepare(config) is None
            _eventually(lambda: self.hosting.deployment(name) is not None)
        return name

    def invoke(self, endpoint: str, body: bytes = ONE, **kwargs: Any) -> tuple[str, Any]:
        answer = self.runtime.invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType="application/json", **kwargs
        )
        return answer["InvokedProductionVariant"], json.loads(answer["Body"].read())


def _eventually(check: Callable[[], bool], within: float = 3.0) -> float:
    """Seconds until ``check()`` held; fails after ``within``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not true within {within} s")
        time.sleep(0.02)
    return time.monotonic() - start


def _moto_endpoint(name: str) -> Any:
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].endpoints[name]


@pytest.fixture
def stack(tmp_path: Path, archives: dict[str, bytes]) -> Iterator[Stack]:
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        hosting = LocalHosting(
            sagemaker, s3, tmp_path / "cache", poll_interval=0.3, rng=random.Random(20261126)
        )
        hosting.start()
        server = RuntimeServer(hosting).start()
        # No retries: a call that fails must show, not be hidden by a second attempt.
        runtime = boto3.client(
            "sagemaker-runtime",
            region_name=REGION,
            endpoint_url=server.url,
            config=Config(retries={"mode": "standard", "max_attempts": 1}, max_pool_connections=16),
        )
        try:
            yield Stack(sagemaker, s3, runtime, hosting, server, archives)
        finally:
            server.close()
            hosting.close()


@pytest.fixture
def ab(stack: Stack) -> str:
    """Endpoint ``ab``: variant a (y = x/2 + 3) at 0.8, variant b (y = x/2 + 4) at 0.2."""
    config = stack.config(
        "ab-1",
        {"a": (stack.model("m-plus3", "plus3"), 0.8), "b": (stack.model("m-plus4", "plus4"), 0.2)},
    )
    return stack.endpoint("ab", config)


EXPECTED = {"a": [3.5], "b": [4.5]}


def test_invoke_answers_with_the_invoked_variant(stack: Stack, ab: str) -> None:
    answer = stack.runtime.invoke_endpoint(
        EndpointName=ab, Body=ONE, ContentType="application/json"
    )
    variant = answer["InvokedProductionVariant"]
    assert answer["ContentType"] == "application/json"
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-invoked-production-variant"] == variant
    assert json.loads(answer["Body"].read()) == {"predictions": EXPECTED[variant]}
    assert "CustomAttributes" not in answer


def test_target_variant_is_always_honoured(stack: Stack, ab: str) -> None:
    stack.sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=ab,
        DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 1.0},
            {"VariantName": "b", "DesiredWeight": 0.0},
        ],
    )
    for i in range(60):
        target = "ab"[i % 2]  # b has weight 0: only TargetVariant reaches it
        variant, body = stack.invoke(ab, TargetVariant=target)
        assert variant == target and body == {"predictions": EXPECTED[target]}


def test_weights_split_traffic_as_configured(stack: Stack, ab: str) -> None:
    """0.8/0.2 over 2,000 calls, chi-squared against the expected 1,600/400.

    Routing draws from the hosting's seeded ``random.Random`` and the calls are sequential, so
    the counts are the same on every run (not flaky); the threshold is the p = 0.001 critical
    value (1 degree of freedom), so even an unseeded run would fail wrongly once in 1,000.
    """
    counts = Counter(stack.invoke(ab)[0] for _ in range(2000))
    expected = {"a": 1600.0, "b": 400.0}
    chi2 = sum((counts[v] - e) ** 2 / e for v, e in expected.items())
    assert set(counts) == {"a", "b"}
    assert chi2 < CHI2_CRITICAL_P001, (counts, chi2)


def test_weight_update_takes_effect_within_a_second(stack: Stack, ab: str) -> None:
    stack.sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=ab,
        DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 0.0},
            {"VariantName": "b", "DesiredWeight": 1.0},
        ],
    )
    seconds = _eventually(lambda: stack.hosting.deployment(ab).weights == {"a": 0.0, "b": 1.0})  # type: ignore[union-attr]
    assert seconds < 1.0
    assert {stack.invoke(ab)[0] for _ in range(50)} == {"b"}


def test_refusals_are_validation_errors(stack: Stack, ab: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"EndpointName": "nope"}, "Endpoint nope not found"),
        ({"EndpointName": ab, "TargetVariant": "c"}, "Variant c not found for endpoint ab"),
        ({"EndpointName": ab, "TargetModel": "m.tar.gz"}, "not a multi-model endpoint"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ClientError) as raised:
            stack.runtime.invoke_endpoint(Body=ONE, ContentType="application/json", **kwargs)
        error = raised.value.response
        assert error["Error"]["Code"] == "ValidationError"
        assert message in error["Error"]["Message"]
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    _moto_endpoint(ab).endpoint_status = "OutOfService"
    _eventually(lambda: stack.hosting.deployment(ab).status == "OutOfService")  # type: ignore[union-attr]
    with pytest.raises(ClientError) as raised:
        stack.invoke(ab)
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert "not in service (status OutOfService)" in str(raised.value)


def test_container_errors_are_model_errors(stack: Stack) -> None:
    echo = stack.endpoint(
        "echo", stack.config("echo-1", {"only": (stack.model("m-echo", "echo"), 1.0)})
    )
    with pytest.raises(stack.runtime.exceptions.ModelError) as raised:
        stack.invoke(echo, body=b"fail")
    response = raised.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 500
    assert json.loads(response["OriginalMessage"]) == {"error": "the model refused: fail"}
    assert response["LogStreamArn"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/echo"
    )
    assert str(raised.value).startswith(
        "An error occurred (ModelError) when calling the InvokeEndpoint operation: Received"
        ' server error (500) from primary with message "{"error": "the model refused: fail"}".'
    )


def test_custom_attributes_content_type_and_accept_reach_the_handler(stack: Stack) -> None:
    echo = stack.endpoint(
        "echo", stack.config("echo-1", {"only": (stack.model("m-echo", "echo"), 1.0)})
    )
    answer = stack.runtime.invoke_endpoint(
        EndpointName=echo,
        Body=b"{}",
        ContentType="application/x-custom",
        Accept="text/plain",
        CustomAttributes="trace-id=42,tfs-model-name=model",
    )
    assert json.loads(answer["Body"].read()) == {
        "custom_attributes": "trace-id=42,tfs-model-name=model",
        "content_type": "application/x-custom",
        "accept": "text/plain",
    }
    assert answer["ContentType"] == "text/plain"
    # SageMaker returns CustomAttributes only when the container sets them; TFS's never does.
    assert "CustomAttributes" not in answer


def test_ping_and_load_failures(stack: Stack, ab: str) -> None:
    assert requests.get(f"{stack.server.url}/ping", timeout=5).status_code == 200
    config = stack.config("bad-1", {"only": (stack.model("m-broken", "broken"), 1.0)})
    stack.endpoint("bad", config, wait=False)
    _eventually(lambda: "bad-1" in stack.hosting.status()["errors"])
    ping = requests.get(f"{stack.server.url}/ping", timeout=5)
    assert ping.status_code == 503 and "bad-1" in ping.json()["errors"]
    with pytest.raises(ClientError) as raised:
        stack.invoke("bad")
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert "No module named 'not_installed_anywhere'" in str(raised.value)
    assert stack.invoke(ab)[0] in ("a", "b")  # the other endpoint is unaffected


def test_prepare_says_why_a_config_cannot_be_served(stack: Stack) -> None:
    good = stack.config("good-1", {"only": (stack.model("m-good", "plus3"), 1.0)})
    assert stack.hosting.prepare(good) is None
    assert stack.hosting.prepare(good) is None  # cached: nothing loads twice
    stack.model("m-garbage", "garbage")
    stack.sagemaker.create_model(
        ModelName="m-missing",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/x/9/model.tar.gz"},
        ExecutionRoleArn=ROLE,
    )
    stack.model("m-broken", "broken")
    cases = {
        "missing-1": (
            "m-missing",
            "artifact s3://tweetgen-artifacts/models/x/9/model.tar.gz not found",
        ),
        "garbage-1": ("m-garbage", "is not a valid model.tar.gz"),
        "broken-1": ("m-broken", "code/requirements.txt asks for ['not-installed-anywhere==0.1']"),
    }
    for config, (model, message) in cases.items():
        stack.config(config, {"v": (model, 1.0)})
        error = stack.hosting.prepare(config)
        assert error is not None and message in error, error
        assert f"variant v (model {model})" in error
    assert "Could not find endpoint configuration" in (
        stack.hosting.prepare("no-such-config") or ""
    )


def test_the_artifact_cache_is_reused(stack: Stack, tmp_path: Path) -> None:
    config = stack.config("cached-1", {"only": (stack.model("m-cached", "plus3"), 1.0)})
    assert stack.hosting.prepare(config) is None
    downloads: list[str] = []

    class CountingS3:
        def __getattr__(self, name: str) -> Any:
            return getattr(stack.s3, name)

        def get_object(self, **kwargs: Any) -> Any:
            downloads.append(kwargs["Key"])
            return stack.s3.get_object(**kwargs)

    second = LocalHosting(stack.sagemaker, CountingS3(), stack.hosting.cache_dir)
    try:
        assert second.prepare(config) is None
        assert downloads == []
    finally:
        second.close()
    other = LocalHosting(stack.sagemaker, CountingS3(), tmp_path / "elsewhere")
    try:
        assert other.prepare(config) is None
        assert downloads == ["models/m-cached/1/model.tar.gz"]
    finally:
        other.close()


def test_no_call_fails_while_a_variant_model_is_replaced(stack: Stack) -> None:
    """Steady traffic on 4 threads while variant b moves from y = x/2 + 3 to y = x/2 + 4."""
    plus3 = stack.model("m-plus3", "plus3")
    stack.config("swap-1", {"a": (plus3, 0.5), "b": (stack.model("m-plus3-b", "plus3"), 0.5)})
    stack.endpoint("swap", "swap-1")
    old = stack.hosting.deployment("swap").config.variants  # type: ignore[union-attr]
    new_config = stack.config(
        "swap-2", {"a": (plus3, 0.5), "b": (stack.model("m-plus4", "plus4"), 0.5)}
    )
    stop = threading.Event()
    answers: list[tuple[float, str, list[float]]] = []
    errors: list[BaseException] = []

    def traffic() -> None:
        client = boto3.client(
            "sagemaker-runtime",
            region_name=REGION,
            endpoint_url=stack.server.url,
            config=Config(retries={"mode": "standard", "max_attempts": 1}),
        )
        while not stop.is_set():
            try:
                answer = client.invoke_endpoint(
                    EndpointName="swap", Body=ONE, ContentType="application/json"
                )
                body = json.loads(answer["Body"].read())
                answers.append(
                    (time.monotonic(), answer["InvokedProductionVariant"], body["predictions"])
                )
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    # What a successful UpdateEndpoint leaves in the control plane (moto has no UpdateEndpoint).
    endpoint = _moto_endpoint("swap")
    config = stack.sagemaker.describe_endpoint_config(EndpointConfigName=new_config)
    endpoint.production_variants = endpoint._process_production_variants(
        config["ProductionVariants"]
    )
    endpoint.endpoint_config_name = new_config
    switched_at = time.monotonic()
    seconds = _eventually(
        lambda: stack.hosting.deployment("swap").config.name == new_config  # type: ignore[union-attr]
    )
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert seconds < 2.0
    before = [a for a in answers if a[0] < switched_at]
    after = [a for a in answers if a[0] > switched_at + seconds + 0.1]
    assert len(before) > 20 and len(after) > 20
    assert {tuple(p) for _, _, p in before} == {(3.5,)}
    assert {(v, tuple(p)) for _, v, p in after} == {("a", (3.5,)), ("b", (4.5,))}
    _eventually(lambda: not old["b"].model.served.ping())  # b's old model retired and closed
    kept = stack.hosting.deployment("swap").config.variants["a"].model  # type: ignore[union-attr]
    assert kept is old["a"].model and kept.served.ping()  # a's model was never reloaded


def test_created_and_deleted_endpoints_are_followed(stack: Stack) -> None:
    config = stack.config("late-1", {"only": (stack.model("m-late", "plus3"), 1.0)})
    stack.sagemaker.create_endpoint(EndpointName="late", EndpointConfigName=config)
    assert _eventually(lambda: stack.hosting.deployment("late") is not None) < 2.0
    assert stack.invoke("late") == ("only", {"predictions": [3.5]})
    model = stack.hosting.deployment("late").config.variants["only"].model  # type: ignore[union-attr]
    stack.sagemaker.delete_endpoint(EndpointName="late")
    assert _eventually(lambda: stack.hosting.deployment("late") is None) < 1.0
    with pytest.raises(ClientError, match="Endpoint late not found"):
        stack.invoke("late")
    _eventually(lambda: not model.served.ping())


def test_invoking_an_endpoint_that_is_still_loading_waits_for_it(stack: Stack) -> None:
    config = stack.config("fresh-1", {"only": (stack.model("m-fresh", "plus4"), 1.0)})
    stack.sagemaker.create_endpoint(EndpointName="fresh", EndpointConfigName=config)
    assert stack.invoke("fresh") == ("only", {"predictions": [4.5]})


def test_batching_follows_the_container_environment(stack: Stack) -> None:
    model = stack.model("m-batched", "plus3", {"SAGEMAKER_TFS_ENABLE_BATCHING": "true"})
    stack.endpoint("batched", stack.config("batched-1", {"only": (model, 1.0)}))
    assert stack.invoke("batched")[1] == {"predictions": [3.5]}
    variant = stack.hosting.status()["endpoints"]["batched"]["variants"]["only"]
    assert variant["batching"]["requests"] == 1


def test_a_model_with_unusable_thread_settings_is_not_served(stack: Stack) -> None:
    model = stack.model("m-threads", "plus3", {"SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "all"})
    failure = stack.hosting.prepare(stack.config("threads-1", {"only": (model, 1.0)}))
    assert failure is not None and "SAGEMAKER_TFS_INTRA_OP_PARALLELISM" in failure


def test_close_frees_the_port(stack: Stack, ab: str) -> None:
    stack.invoke(ab)  # leaves a kept-alive connection open
    port = stack.server.port
    stack.server.close()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=2)


# -- the two real tiny tweet generators ---------------------------------------------------------


@pytest.mark.slow
def test_real_tiny_models_generate_through_boto3(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    request = {"inputs": ["i love", "today is"], "parameters": {"max_new_tokens": 8, "seed": 7}}
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        variants = []
        for variant in ("lstm", "gpt2"):
            key = f"models/{variant}/v1/model.tar.gz"
            s3.upload_file(str(tiny_run[variant]), BUCKET, key)
            sagemaker.create_model(
                ModelName=f"tweetgen-{variant}-v1",
                PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{key}"},
                ExecutionRoleArn=ROLE,
            )
            variants.append(
                {
                    "VariantName": variant,
                    "ModelName": f"tweetgen-{variant}-v1",
                    "InitialVariantWeight": 0.5,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            )
        sagemaker.create_endpoint_config(
            EndpointConfigName="tweetgen-1", ProductionVariants=variants
        )
        with (
            LocalHosting(sagemaker, s3, tmp_path / "cache", rng=random.Random(3)) as hosting,
            RuntimeServer(hosting) as server,
        ):
            sagemaker.create_endpoint(EndpointName="tweetgen", EndpointConfigName="tweetgen-1")
            assert hosting.prepare("tweetgen-1") is None
            runtime = boto3.client("sagemaker-runtime", region_name=REGION, endpoint_url=server.url)

            def generate(body: Any, **kwargs: Any) -> tuple[str, Any]:
                answer = runtime.invoke_endpoint(
                    EndpointName="tweetgen",
                    Body=json.dumps(body).encode(),
                    ContentType="application/json",
                    Accept="application/json",
                    **kwargs,
                )
                return answer["InvokedProductionVariant"], json.loads(answer["Body"].read())

            for variant in ("lstm", "gpt2"):
                invoked, texts = generate(request, TargetVariant=variant)
                assert invoked == variant
                assert len(texts) == 2 and all(set(t) == {"generated_text"} for t in texts)
                assert generate(request, TargetVariant=variant)[1] == texts  # seeded
            assert {generate(request)[0] for _ in range(12)} == {"lstm", "gpt2"}
            with pytest.raises(runtime.exceptions.ModelError) as raised:
                generate({"inputs": []}, TargetVariant="gpt2")
            assert raised.value.response["OriginalStatusCode"] == 500
            assert "non-empty list" in raised.value.response["OriginalMessage"]
