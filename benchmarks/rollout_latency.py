"""Local rollout latency: S3 put → the new version answering, through the rollout state machine,
against the direct path (CreateModel + CreateEndpointConfig + UpdateEndpoint by boto3).

One local stack (``tweetgen_local.stack.LocalStack``, the repository's ``template.yaml``) serves
tiny trained LSTM and GPT-2 artifacts (``tweetgen demo``'s training, cached in
``benchmarks/out/rollout_latency``). Each round rolls a new version of each kind out both ways,
alternating which goes first:

- state machine: ``put_object`` at ``models/<kind>/<version>/model.tar.gz``; the upload's
  EventBridge rule starts ``RolloutStateMachine`` (validate, create the model, plan, create the
  endpoint config, update the endpoint, the Wait/DescribeEndpoint loop, smoke test, record);
- direct: ``put_object`` at a key that starts no rollout, then ``CreateModel``,
  ``CreateEndpointConfig`` (the endpoint's current variants with this kind's model replaced)
  and ``UpdateEndpoint`` by boto3.

Both end when the local SageMaker runtime serves the new model for that variant: its
``GET /ping`` status (which names the model of every variant) is polled every 20 ms, then one
``InvokeEndpoint`` with ``TargetVariant`` must answer, from that variant (the
``x-Amzn-Invoked-Production-Variant`` header). The execution history of Step Functions gives
the time spent in the poll loop's Wait state (``WaitForEndpoint``) and the execution's end.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_DATA,
    OUT_DIR,
    REPO_ROOT,
    SAMPLE_20K,
    BenchResult,
    Row,
    base_parser,
    finish,
    make_row,
    median,
    progress,
)

NAME = "rollout_latency"
KINDS = ("lstm", "gpt2")
WAIT_STATE = "WaitForEndpoint"
POLL_S = 0.02
TIMEOUT_S = 180.0
TRAIN_TWEETS = 3000
DIRECT = "direct path: boto3 CreateModel + CreateEndpointConfig + UpdateEndpoint"


def log(message: str) -> None:
    progress(NAME, message)


@dataclass
class Sample:
    """One rollout of one version, seconds from the start of its S3 put."""

    kind: str
    path: str  # "state machine" or "direct"
    version: str
    answer_s: float  # until the new version answers
    finished_s: float | None = None  # until the execution stopped (state machine only)
    wait_s: float | None = None  # in Wait states, whole execution
    wait_before_answer_s: float | None = None  # in Wait states before the new version answered
    polls: int | None = None  # Wait states entered


def train_artifacts(data: Path, seed: int) -> dict[str, Path]:
    """Tiny LSTM and GPT-2 artifacts, trained once and reused while their inputs are unchanged."""
    from tweetgen_local.demo import DemoOptions, train_models

    sample = data / SAMPLE_20K
    options = DemoOptions(
        data=[sample if sample.is_file() else data],
        out=OUT_DIR / NAME,
        max_tweets=TRAIN_TWEETS,
        epochs=1,
        vocab_size=800,
        seed=seed,
    )
    return train_models(options)


def _wall(event: dict[str, Any]) -> float:
    return float(event["timestamp"].timestamp())


def wait_windows(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(entered, exited) wall-clock times of every pass through the Wait state."""
    windows: list[tuple[float, float]] = []
    entered: float | None = None
    for event in events:
        if event.get("stateEnteredEventDetails", {}).get("name") == WAIT_STATE:
            entered = _wall(event)
        elif event.get("stateExitedEventDetails", {}).get("name") == WAIT_STATE:
            if entered is None:
                raise RuntimeError(f"{WAIT_STATE} exited before it was entered")
            windows.append((entered, _wall(event)))
            entered = None
    return windows


def overlap(windows: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in windows)


class Rollouts:
    """Drives rollouts on a running local stack and times them."""

    def __init__(self, endpoints: dict[str, Any], state_machine_arn: str) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(region_name=endpoints["region"])
        aws = endpoints["aws"]
        self.bucket = str(endpoints["artifact_bucket"])
        self.endpoint_name = str(endpoints["endpoint_name"])
        self.ping_url = f"{endpoints['sagemaker_runtime']}/ping"
        self.machine = state_machine_arn
        self.s3 = session.client("s3", endpoint_url=aws)
        self.sfn = session.client("stepfunctions", endpoint_url=aws)
        self.sagemaker = session.client("sagemaker", endpoint_url=aws)
        self.runtime = session.client(
            "sagemaker-runtime",
            endpoint_url=endpoints["sagemaker_runtime"],
            config=Config(retries={"max_attempts": 1}),
        )

    def model_name(self, kind: str, version: str) -> str:
        from tweetgen.domain.rollout import model_name

        return model_name(self.endpoint_name, kind, version)

    def serving(self, kind: str) -> str | None:
        """The model that the local runtime serves for variant ``kind`` now."""
        # 503 while an endpoint is between configs; the body is the same status either way.
        try:
            with urllib.request.urlopen(self.ping_url, timeout=5) as answer:
                body = answer.read()
        except urllib.error.HTTPError as error:
            body = error.read()
        status = json.loads(body)
        variants = status["endpoints"].get(self.endpoint_name, {}).get("variants", {})
        model = variants.get(kind, {}).get("model")
        return None if model is None else str(model)

    def until_answering(self, kind: str, model: str, started: float) -> float:
        """Seconds since ``started`` (perf_counter) until ``model`` answers as variant ``kind``."""
        deadline = started + TIMEOUT_S
        while self.serving(kind) != model:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{model} did not serve as {kind} within {TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        answer = self.runtime.invoke_endpoint(
            EndpointName=self.endpoint_name,
            ContentType="application/json",
            Body=json.dumps({"inputs": "good morning", "parameters": {"max_new_tokens": 4}}),
            TargetVariant=kind,
        )
        elapsed = time.perf_counter() - started
        generated = json.loads(answer["Body"].read())
        if answer["InvokedProductionVariant"] != kind or not isinstance(
            generated[0]["generated_text"], str
        ):
            raise RuntimeError(f"unexpected answer for {kind}: {answer}, {generated}")
        return elapsed

    def _execution(self, key: str, version_id: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for listed in self.sfn.list_executions(stateMachineArn=self.machine)["executions"]:
                arn = listed["executionArn"]
                event = json.loads(self.sfn.describe_execution(executionArn=arn)["input"])
                obj = event["detail"]["object"]
                if obj["key"] == key and obj.get("version-id") == version_id:
                    return str(arn)
            time.sleep(0.2)
        raise RuntimeError(f"no rollout execution started for {key} ({version_id})")

    def _finished(self, arn: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            described: dict[str, Any] = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{arn} still running after {TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        if described["status"] != "SUCCEEDED":
            raise RuntimeError(
                f"rollout {arn} {described['status']}: {described.get('error')}"
                f" {described.get('cause', '')}"
            )
        return described

    def via_state_machine(self, kind: str, version: str, body: bytes) -> Sample:
        key = f"models/{kind}/{version}/model.tar.gz"
        model = self.model_name(kind, version)
        wall_start = time.time()
        started = time.perf_counter()
        version_id = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["VersionId"]
        answer_s = self.until_answering(kind, model, started)
        described = self._finished(self._execution(key, str(version_id)))
        pages = self.sfn.get_paginator("get_execution_history").paginate(
            executionArn=described["executionArn"], PaginationConfig={"PageSize": 1000}
        )
        events = [event for page in pages for event in page["events"]]
        windows = wait_windows(events)
        return Sample(
            kind=kind,
            path="state machine",
            version=version,
            answer_s=answer_s,
            finished_s=described["stopDate"].timestamp() - wall_start,
            wait_s=overlap(windows, wall_start, float("inf")),
            wait_before_answer_s=overlap(windows, wall_start, wall_start + answer_s),
            polls=len(windows),
        )

    def direct(self, kind: str, version: str, body: bytes) -> Sample:
        key = f"direct/{kind}/{version}/model.tar.gz"
        model = self.model_name(kind, version)
        started = time.perf_counter()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        endpoint = self.sagemaker.describe_endpoint(EndpointName=self.endpoint_name)
        config = self.sagemaker.describe_endpoint_config(
            EndpointConfigName=endpoint["EndpointConfigName"]
        )
        variants = [
            {
                name: variant[name]
                for name in (
                    "VariantName",
                    "ModelName",
                    "InitialInstanceCount",
                    "InstanceType",
                    "InitialVariantWeight",
                )
                if name in variant
            }
            for variant in config["ProductionVariants"]
        ]
        current = next(v for v in variants if v["VariantName"] == kind)
        previous = self.sagemaker.describe_model(ModelName=current["ModelName"])
        container = previous["PrimaryContainer"]
        self.sagemaker.create_model(
            ModelName=model,
            ExecutionRoleArn=previous["ExecutionRoleArn"],
            PrimaryContainer={
                "Image": container["Image"],
                "ModelDataUrl": f"s3://{self.bucket}/{key}",
                "Environment": {"TWEETGEN_VARIANT": kind, "TWEETGEN_MODEL_VERSION": version},
            },
        )
        current["ModelName"] = model
        config_name = f"{model}-config"
        self.sagemaker.create_endpoint_config(
            EndpointConfigName=config_name, ProductionVariants=variants
        )
        self.sagemaker.update_endpoint(
            EndpointName=self.endpoint_name, EndpointConfigName=config_name
        )
        return Sample(
            kind=kind,
            path="direct",
            version=version,
            answer_s=self.until_answering(kind, model, started),
        )


def _rows(samples: list[Sample]) -> list[Row]:
    rows: list[Row] = []
    for kind in KINDS:
        machine = [s for s in samples if s.kind == kind and s.path == "state machine"]
        direct = median([s.answer_s for s in samples if s.kind == kind and s.path == "direct"])
        answer = median([s.answer_s for s in machine])
        finished = median([s.finished_s or 0.0 for s in machine])
        rows += [
            make_row(
                NAME,
                f"{kind}: S3 put → new version answers, via the rollout state machine",
                answer,
                "s",
                direct,
                DIRECT,
                higher_is_better=False,
            ),
            make_row(
                NAME,
                f"{kind}: S3 put → rollout execution finished (smoke test and record done)",
                finished,
                "s",
                direct,
                DIRECT,
                higher_is_better=False,
            ),
            make_row(
                NAME,
                f"{kind}: share of S3 put → new version answers spent in the Wait state",
                100 * median([(s.wait_before_answer_s or 0.0) / s.answer_s for s in machine]),
                "%",
                None,
                "",
                higher_is_better=False,
            ),
            make_row(
                NAME,
                f"{kind}: share of S3 put → execution finished spent in the Wait state",
                100 * median([(s.wait_s or 0.0) / (s.finished_s or 1.0) for s in machine]),
                "%",
                None,
                "",
                higher_is_better=False,
            ),
        ]
    return rows


def run(quick: bool = False, data: Path = DEFAULT_DATA, seed: int = 7) -> BenchResult:
    from tweetgen_local.stack import LocalStack, StackOptions

    started = time.perf_counter()
    rounds = 2 if quick else 3
    # moto warns on every SageMaker task of the state machine (forwarded to its own SageMaker).
    logging.getLogger("moto").setLevel(logging.ERROR)
    log("tiny artifacts (trained on first use, then cached)")
    artifacts = {kind: path.read_bytes() for kind, path in train_artifacts(data, seed).items()}
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="tweetgen-rollout-bench-") as tmp:
        stack = LocalStack(
            StackOptions(state_dir=Path(tmp), template=REPO_ROOT / "template.yaml"),
            log=lambda _: None,
        )
        endpoints = stack.start()
        try:
            rollouts = Rollouts(endpoints, stack.ctx.resources["RolloutStateMachine"]["Ref"])
            # Untimed: creates the endpoint (lstm, then gpt2 added) and warms every function.
            for kind in KINDS:
                log(f"warm-up: {kind} v0 through the state machine")
                rollouts.via_state_machine(kind, "v0", artifacts[kind])
            for index in range(1, rounds + 1):
                for kind in KINDS:
                    paths = ["state machine", "direct"]
                    if (index + KINDS.index(kind)) % 2 == 0:
                        paths.reverse()
                    for path in paths:
                        if path == "direct":
                            sample = rollouts.direct(kind, f"d{index}", artifacts[kind])
                        else:
                            sample = rollouts.via_state_machine(kind, f"s{index}", artifacts[kind])
                        log(
                            f"round {index}/{rounds} {kind} {path}: answers after"
                            f" {sample.answer_s:.2f} s"
                            + (
                                ""
                                if sample.finished_s is None
                                else f", finished after {sample.finished_s:.2f} s,"
                                f" {sample.wait_s:.2f} s in {sample.polls} Wait state(s)"
                            )
                        )
                        samples.append(sample)
        finally:
            stack.stop()
    sizes = ", ".join(f"{kind} {len(body) / 2**20:.1f} MiB" for kind, body in artifacts.items())
    return {
        "name": NAME,
        "title": "Local rollout latency: state machine against the direct SageMaker calls",
        "rows": _rows(samples),
        "notes": [
            f"median of {rounds} rollouts of each kind each way, after one untimed rollout of each;"
            f" tiny artifacts ({sizes}) on the local stack (moto's Step Functions interpreter,"
            " the real task handlers, the local SageMaker hosting)",
            "the new version answers when the local runtime's /ping names its model for the"
            " variant and an InvokeEndpoint with that TargetVariant answers from it (polled"
            f" every {POLL_S * 1000:.0f} ms)",
            "the Wait state's seconds come from the execution history (WaitForEndpoint entered"
            " → exited); the poll schedule is the template's POLL_FIRST_SECONDS=1, growing by half each time",
            "the local hosting switches to a new config as soon as it is loaded, so the Wait state"
            " overlaps the load and delays the execution's end (smoke test, record) rather than"
            " the first answer",
        ],
        "details": {"samples": [asdict(s) for s in samples]},
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    finish(run(args.quick, args.data, args.seed), args.json)


if __name__ == "__main__":
    main()
