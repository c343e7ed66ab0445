"""``tweetgen deploy-model PATH --variant NAME [--version V] [--wait]``.

Uploads a ``model.tar.gz`` to ``models/<variant>/<version>/model.tar.gz`` of the artifact
bucket, which starts the rollout state machine, and (with ``--wait``) follows that execution
state by state. The exit status is 0 only when the rollout succeeded and the endpoint's config
in force runs this version for the variant. The target is the local stack running on
``--state-dir`` when there is one (its ``endpoints.json``), else the AWS stack ``--stack-name``
(its outputs ``ArtifactBucketName``, ``RolloutStateMachineArn`` and ``EndpointName``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from tweetgen.domain.model_key import ModelKey

__all__ = [
    "DeployError",
    "DeployTarget",
    "add_deploy_arguments",
    "deploy_command",
    "deploy_model",
    "find_target",
]

DEFAULT_STACK_NAME = "tweetgen"
START_TIMEOUT_S = 60.0
POLL_S = 0.5
_TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class DeployError(Exception):
    """The deployment cannot go on; the message says what to do."""


@dataclass(frozen=True)
class DeployTarget:
    """Where an artifact goes and which rollout follows it."""

    description: str
    bucket: str
    endpoint_name: str
    state_machine_arn: str | None
    session: Any
    endpoint_url: str | None = None

    def client(self, service: str) -> Any:
        if self.endpoint_url is None:
            return self.session.client(service)
        return self.session.client(service, endpoint_url=self.endpoint_url)


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tweetgen deploy-model``."""
    parser.add_argument(
        "path", type=Path, metavar="PATH", help="model.tar.gz, or a folder holding one"
    )
    parser.add_argument("--variant", required=True, help="production variant: lstm or gpt2")
    parser.add_argument(
        "--version", default=None, help="artifact version (default: metadata.json's version)"
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the rollout state by state; exit 0 only when the new version serves",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".tweetgen/local"),
        help="the local stack to deploy to, when one runs there (default .tweetgen/local)",
    )
    parser.add_argument(
        "--aws", action="store_true", help="deploy to AWS even when a local stack runs"
    )
    parser.add_argument(
        "--stack-name",
        default=DEFAULT_STACK_NAME,
        help=f"the AWS stack whose outputs name the bucket (default {DEFAULT_STACK_NAME})",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to follow the rollout (default 3600)"
    )


def deploy_command(args: argparse.Namespace) -> int:
    """Run ``tweetgen deploy-model`` with parsed arguments; the exit status."""
    try:
        target = find_target(args.state_dir, aws=args.aws, stack_name=args.stack_name)
        return deploy_model(
            args.path,
            variant=args.variant,
            version=args.version,
            target=target,
            wait=args.wait,
            timeout_s=args.timeout,
        )
    except DeployError as exc:
        print(f"deploy-model: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- target


def find_target(
    state_dir: Path, *, aws: bool = False, stack_name: str = DEFAULT_STACK_NAME
) -> DeployTarget:
    """The local stack running on ``state_dir``, else (or with ``aws``) the AWS stack."""
    import boto3

    if not aws:
        from tweetgen_local.stack import FAKE_CREDENTIALS, read_endpoints

        endpoints = read_endpoints(state_dir)
        if endpoints is not None:
            session = boto3.session.Session(
                region_name=endpoints["region"],
                aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
            )
            if not endpoints.get("artifact_bucket"):
                raise DeployError(
                    f"the local stack on {state_dir} has no artifact bucket: start it with the "
                    "project's template (tweetgen local up)"
                )
            target = DeployTarget(
                description=f"local stack ({endpoints['aws']})",
                bucket=str(endpoints["artifact_bucket"]),
                endpoint_name=str(endpoints["endpoint_name"]),
                state_machine_arn=None,
                session=session,
                endpoint_url=str(endpoints["aws"]),
            )
            return replace(target, state_machine_arn=_local_machine(target))
    session = boto3.session.Session()
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:
        raise DeployError(
            f"no local stack runs on {state_dir} and AWS stack {stack_name!r} cannot be read "
            f"({exc}); start one with 'tweetgen local up' or deploy with 'sam deploy'"
        ) from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs") or []}
    missing = [k for k in ("ArtifactBucketName", "EndpointName") if k not in outputs]
    if missing:
        raise DeployError(f"AWS stack {stack_name} has no output {', '.join(missing)}")
    return DeployTarget(
        description=f"AWS stack {stack_name} ({session.region_name})",
        bucket=outputs["ArtifactBucketName"],
        endpoint_name=outputs["EndpointName"],
        state_machine_arn=outputs.get("RolloutStateMachineArn"),
        session=session,
    )


def _local_machine(target: DeployTarget) -> str | None:
    """The local stack's rollout state machine (the template names it ``<stack>-rollout``)."""
    machines = target.client("stepfunctions").list_state_machines()["stateMachines"]
    found = [m["stateMachineArn"] for m in machines if str(m["name"]).endswith("-rollout")]
    return str(found[0]) if len(found) == 1 else None


# --------------------------------------------------------------------------- deploy


def _archive(path: Path) -> Path:
    archive = path / "model.tar.gz" if path.is_dir() else path
    if not archive.is_file():
        raise DeployError(f"{archive} is not a file: give a model.tar.gz or a folder holding one")
    return archive


def _check(archive: Path, variant: str) -> str:
    """Validate locally with the rollout's own validator; the metadata's version."""
    from tweetgen.domain.artifact import validate_artifact

    with open(archive, "rb") as handle:
        report = validate_artifact(handle, expected_variant=variant)
    if not report.ok or report.metadata is None:
        listed = "\n  ".join(report.problems)
        raise DeployError(f"{archive} would be rejected by the rollout:\n  {listed}")
    return report.metadata.version


def _refuse_other_bytes_under_a_deployed_version(
    target: DeployTarget, model_key: ModelKey, archive: Path
) -> None:
    """Refuse before uploading what the rollout's Validate step would refuse after.

    A version is bound to the bytes of its validated copy: other bytes under it are refused
    (compared by the SHA-256 kept on the copy, without downloading it); the same bytes again
    are how an older version is rolled out again. A version without a copy whose SageMaker model
    exists (made before rollouts kept copies) loads the uploaded key itself and is never
    rolled out again. A version with neither is bound to nothing yet.
    """
    from tweetgen.adapters.s3 import ArtifactStore
    from tweetgen.adapters.sagemaker import SageMakerEndpoints
    from tweetgen.domain.rollout import model_name

    pinned = ArtifactStore(target.client("s3")).pinned_digest(target.bucket, model_key.pinned_key)
    if pinned is not None:
        with open(archive, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if pinned != digest:
            raise DeployError(
                f"version {model_key.version} of {model_key.variant} is bound to another artifact"
                f" (s3://{target.bucket}/{model_key.pinned_key}, sha256 {pinned[:12]}; this one"
                f" {digest[:12]}), and a version's artifact is never replaced: give this one a"
                " new --version"
            )
        return
    name = model_name(target.endpoint_name, model_key.variant, model_key.version)
    loaded = SageMakerEndpoints(target.client("sagemaker")).model_data_url(name)
    if loaded is not None:
        raise DeployError(
            f"version {model_key.version} of {model_key.variant} was rolled out before rollouts"
            f" kept validated copies: SageMaker model {name} loads {loaded} itself, and a"
            " version's artifact is never replaced: give this one a new --version"
        )


def deploy_model(
    path: Path,
    *,
    variant: str,
    version: str | None,
    target: DeployTarget,
    wait: bool,
    timeout_s: float = 3600.0,
    out: Callable[[str], None] = print,
) -> int:
    """Upload, find the execution the upload started, follow it when ``wait``; exit status."""
    from tweetgen.adapters.s3 import ArtifactStore
    from tweetgen.domain.artifact import ModelKey
    from tweetgen.domain.rollout import model_name

    archive = _archive(path)
    metadata_version = _check(archive, variant)
    try:
        model_key = ModelKey(variant=variant, version=version or metadata_version)
    except ValueError as exc:
        raise DeployError(str(exc)) from None
    key = model_key.key
    _refuse_other_bytes_under_a_deployed_version(target, model_key, archive)
    uploaded_at = datetime.now(UTC)
    stored = ArtifactStore(target.client("s3")).upload(archive, target.bucket, key)
    out(f"uploaded {archive} to {stored.s3_uri} on {target.description}")
    if target.state_machine_arn is None:
        out("the rollout state machine is unknown here: follow it in the Step Functions console")
        return 0
    sfn = target.client("stepfunctions")
    execution = _find_execution(sfn, target.state_machine_arn, key, stored.version_id, uploaded_at)
    out(f"rollout {execution}")
    if not wait:
        return 0
    described = _follow(sfn, execution, timeout_s, out)
    status = described["status"]
    if status != "SUCCEEDED":
        out(f"rollout {status}: {described.get('error', '')}: {described.get('cause', '')}")
        return 1
    expected = model_name(target.endpoint_name, variant, key.split("/")[2])
    return _serving(target, variant, expected, json.loads(described.get("output") or "{}"), out)


def _find_execution(
    sfn: Any, machine: str, key: str, version_id: str | None, since: datetime
) -> str:
    """The execution that the upload of ``key`` (object version ``version_id``) started."""
    deadline = time.monotonic() + START_TIMEOUT_S
    earliest = since - timedelta(seconds=5)
    seen: set[str] = set()
    while time.monotonic() < deadline:
        listed = sfn.list_executions(stateMachineArn=machine, maxResults=50)["executions"]
        for execution in listed:
            arn = str(execution["executionArn"])
            if arn in seen or execution["startDate"] < earliest:
                continue
            seen.add(arn)
            event = json.loads(sfn.describe_execution(executionArn=arn).get("input") or "{}")
            obj = (event.get("detail") or {}).get("object") or {}
            same_key = unquote_plus(str(obj.get("key", ""))) == key
            same_version = version_id is None or obj.get("version-id") in (None, version_id)
            if same_key and same_version:
                return arn
        time.sleep(POLL_S)
    raise DeployError(
        f"no rollout started within {START_TIMEOUT_S:.0f} s of uploading {key}: check that the "
        "bucket sends events to EventBridge and the rollout rule is enabled"
    )


def _state_name(event: dict[str, Any]) -> str | None:
    details = event.get("stateEnteredEventDetails")
    return None if not details else str(details.get("name"))


def _follow(
    sfn: Any, execution: str, timeout_s: float, out: Callable[[str], None]
) -> dict[str, Any]:
    """Print each state as the execution enters it, until it ends; its description."""
    started = time.monotonic()
    shown = 0
    while True:
        events = _history(sfn, execution)
        for event in events[shown:]:
            name = _state_name(event)
            kind = str(event.get("type", ""))
            if name is not None and not kind.startswith("Choice"):
                out(f"  {time.monotonic() - started:6.1f}s  {name}")
        shown = len(events)
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution)
        if described["status"] in _TERMINAL:
            return described
        if time.monotonic() - started > timeout_s:
            raise DeployError(f"rollout {execution} still running after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def _history(sfn: Any, execution: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"executionArn": execution, "maxResults": 1000}
        if token:
            kwargs["nextToken"] = token
        page = sfn.get_execution_history(**kwargs)
        events += page.get("events") or []
        token = page.get("nextToken")
        if not token:
            return events


def _serving(
    target: DeployTarget,
    variant: str,
    model: str,
    output: dict[str, Any],
    out: Callable[[str], None],
) -> int:
    """0 when the endpoint's config in force runs ``model`` for ``variant``."""
    from tweetgen.adapters.sagemaker import SageMakerEndpoints

    endpoints = SageMakerEndpoints(target.client("sagemaker"))
    endpoint = endpoints.describe_endpoint(target.endpoint_name)
    if endpoint is None or endpoint.status != "InService":
        out(f"endpoint {target.endpoint_name} is not in service after the rollout")
        return 1
    running = {
        str(v.get("VariantName")): str(v.get("ModelName"))
        for v in endpoints.production_variants(endpoint.config_name)
    }
    if running.get(variant) != model:
        out(
            f"endpoint {target.endpoint_name} runs {running.get(variant)!r} for {variant}, "
            f"not {model!r}"
        )
        return 1
    status = output.get("status", "succeeded")
    note = " (it already did: nothing changed)" if status == "unchanged" else ""
    out(
        f"{variant} now serves {model} on endpoint {target.endpoint_name} "
        f"(config {endpoint.config_name}){note}"
    )
    return 0
