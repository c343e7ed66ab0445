"""The rollout's use cases, one per task of the state machine ``statemachines/rollout.asl.json``.

validate an upload → plan the endpoint config → smoke-test the variant → record the outcome.
Each takes its collaborators as ports (the Protocols below), so the Lambda handlers wire boto3
adapters in and the tests wire in moto-backed or fake ones. Failures are raised as
:class:`RolloutError` subclasses: Lambda reports the class name as the error type, which the
state machine matches in its ``Retry`` and ``Catch`` clauses.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import unquote_plus

from tweetgen.domain.model_key import MODEL_KEY_PREFIX
from tweetgen.domain.rollout import (
    EndpointState,
    HostingConflict,
    NewVariantSettings,
    ScalingSettings,
    ServerlessSettings,
    endpoint_config_name,
    is_serverless_variant,
    plan_endpoint_config,
    poll_schedule,
    scaling_requests,
)

__all__ = [
    "SMOKE_TEST_REQUEST",
    "ArtifactRejected",
    "EndpointBusy",
    "EndpointControl",
    "EndpointScaler",
    "EndpointUnusable",
    "ExecutionHistory",
    "HostingUnsupported",
    "InvalidModelKey",
    "ModelInvoker",
    "QueuedExecution",
    "RolloutError",
    "RolloutQueue",
    "RolloutQueued",
    "RolloutRecorder",
    "RolloutSettings",
    "RolloutStep",
    "SmokeTestFailed",
    "clean_up_versions",
    "deployment_config",
    "describe_failure",
    "plan_rollout",
    "record_rollout",
    "scale_variants",
    "smoke_test",
]

# A fixed request every tweetgen artifact must answer (see DESIGN.md, "Request and response").
SMOKE_TEST_REQUEST: dict[str, Any] = {
    "inputs": ["good morning"],
    "parameters": {"max_new_tokens": 8, "seed": 7},
}


# --------------------------------------------------------------------------- errors


class RolloutError(Exception):
    """A rollout step failed; the class name is the Step Functions error name."""


class InvalidModelKey(RolloutError):
    """The uploaded key is not ``models/<variant>/<version>/model.tar.gz`` of a known variant."""


class ArtifactRejected(RolloutError):
    """The artifact failed validation; the message lists every problem."""


class RolloutQueued(RolloutError):
    """An earlier rollout of the same endpoint is still running: retried with backoff."""


class EndpointBusy(RolloutError):
    """The endpoint is being created or updated by something else: retried with backoff."""


class EndpointUnusable(RolloutError):
    """The endpoint is in a state no update can start from (Failed, OutOfService)."""


class HostingUnsupported(RolloutError):
    """SageMaker cannot host the planned config (a serverless endpoint serves one variant)."""


class SmokeTestFailed(RolloutError):
    """The new variant did not answer the fixed request with a well-formed generation."""


# --------------------------------------------------------------------------- settings


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ValueError(f"environment variable {name} must be true or false, got {raw!r}")


def _serverless_settings(env: Mapping[str, str]) -> ServerlessSettings | None:
    """``NEW_VARIANT_SERVERLESS=true``: new endpoints on Serverless Inference."""
    if not _env_bool(env, "NEW_VARIANT_SERVERLESS", False):
        return None
    provisioned = env.get("NEW_VARIANT_SERVERLESS_PROVISIONED_CONCURRENCY", "").strip()
    return ServerlessSettings(
        memory_size_mb=_env_int(env, "NEW_VARIANT_SERVERLESS_MEMORY_MB", 3072),
        max_concurrency=_env_int(env, "NEW_VARIANT_SERVERLESS_MAX_CONCURRENCY", 5),
        provisioned_concurrency=(
            _env_int(env, "NEW_VARIANT_SERVERLESS_PROVISIONED_CONCURRENCY", 1)
            if provisioned
            else None
        ),
    )


def _scaling_settings(env: Mapping[str, str]) -> ScalingSettings | None:
    """``SCALING_MAX_INSTANCES`` set: every variant on instances gets a scaling policy."""
    if not env.get("SCALING_MAX_INSTANCES", "").strip():
        return None
    return ScalingSettings(
        min_instances=_env_int(env, "SCALING_MIN_INSTANCES", 1),
        max_instances=_env_int(env, "SCALING_MAX_INSTANCES", 4),
        invocations_per_instance=_env_float(env, "SCALING_INVOCATIONS_PER_INSTANCE", 60.0),
        scale_in_cooldown_s=_env_int(env, "SCALING_SCALE_IN_COOLDOWN_SECONDS", 300),
        scale_out_cooldown_s=_env_int(env, "SCALING_SCALE_OUT_COOLDOWN_SECONDS", 60),
    )


@dataclass(frozen=True)
class RolloutSettings:
    """What the template tells the rollout functions, through their environment variables."""

    endpoint_name: str
    variants: tuple[str, ...] = ("lstm", "gpt2")
    new_variant: NewVariantSettings = field(default_factory=NewVariantSettings)
    poll_first_s: int = 1
    poll_max_s: int = 30
    timeout_s: int = 3600
    guardrail_alarms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    canary_percent: int = 50
    canary_wait_s: int = 300
    termination_wait_s: int = 120
    keep_versions: int = 3
    keep_young_models_s: int = 3600
    #: Target tracking for variants on instances; None: the rollout attaches no policy.
    scaling: ScalingSettings | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> RolloutSettings:
        env = os.environ if env is None else env
        endpoint = env.get("ENDPOINT_NAME", "").strip()
        if not endpoint:
            raise ValueError("environment variable ENDPOINT_NAME is not set")
        variants = tuple(
            v.strip() for v in env.get("VARIANTS", "lstm,gpt2").split(",") if v.strip()
        )
        alarms_raw = env.get("GUARDRAIL_ALARMS", "").strip()
        try:
            alarms = json.loads(alarms_raw) if alarms_raw else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"GUARDRAIL_ALARMS is not JSON ({exc}): {alarms_raw!r}") from None
        return cls(
            endpoint_name=endpoint,
            variants=variants,
            new_variant=NewVariantSettings(
                instance_type=env.get("NEW_VARIANT_INSTANCE_TYPE", "ml.m5.large"),
                instance_count=_env_int(env, "NEW_VARIANT_INSTANCE_COUNT", 1),
                weight=_env_float(env, "NEW_VARIANT_WEIGHT", 1.0),
                serverless=_serverless_settings(env),
            ),
            poll_first_s=_env_int(env, "POLL_FIRST_SECONDS", 1),
            poll_max_s=_env_int(env, "POLL_MAX_SECONDS", 30),
            timeout_s=_env_int(env, "ROLLOUT_TIMEOUT_SECONDS", 3600),
            guardrail_alarms={str(k): [str(a) for a in v] for k, v in alarms.items()},
            canary_percent=_env_int(env, "CANARY_PERCENT", 50),
            canary_wait_s=_env_int(env, "CANARY_WAIT_SECONDS", 300),
            termination_wait_s=_env_int(env, "TERMINATION_WAIT_SECONDS", 120),
            keep_versions=_env_int(env, "KEEP_VERSIONS", 3),
            scaling=_scaling_settings(env),
        )


# --------------------------------------------------------------------------- ports


class EndpointControl(Protocol):
    def describe_endpoint(self, name: str) -> EndpointState | None: ...

    def production_variants(self, config_name: str) -> list[dict[str, Any]]: ...


class SageMakerResources(EndpointControl, Protocol):
    def endpoint_configs(self, name_prefix: str) -> list[tuple[str, datetime]]: ...

    def models(self, name_prefix: str) -> list[tuple[str, datetime]]: ...

    def delete_endpoint_config(self, name: str) -> None: ...

    def delete_model(self, name: str) -> None: ...


@dataclass(frozen=True)
class QueuedExecution:
    """A running rollout execution: the queue is ordered by start time, then ARN."""

    arn: str
    started_at: datetime


class RolloutQueue(Protocol):
    def running(self, execution_arn: str) -> list[QueuedExecution]: ...


class EndpointScaler(Protocol):
    """Application Auto Scaling, as far as the rollout uses it."""

    def register(self, target: Mapping[str, Any], policy: Mapping[str, Any]) -> None: ...


class ModelAnswerLike(Protocol):
    @property
    def invoked_variant(self) -> str: ...

    @property
    def body(self) -> bytes: ...


class ModelInvoker(Protocol):
    def invoke(self, endpoint_name: str, variant: str | None, body: bytes) -> ModelAnswerLike: ...


@dataclass(frozen=True)
class RolloutStep:
    """One state the execution passed, as the record keeps it."""

    name: str
    type: str
    entered_at: datetime
    exited_at: datetime | None = None
    error: str | None = None

    def exited(self, when: datetime) -> RolloutStep:
        return replace(self, exited_at=when)

    def failed(self, error: str) -> RolloutStep:
        return replace(self, error=error)

    def as_dict(self) -> dict[str, Any]:
        seconds = (
            None
            if self.exited_at is None
            else round((self.exited_at - self.entered_at).total_seconds(), 3)
        )
        return {
            "name": self.name,
            "type": self.type,
            "entered_at": self.entered_at.isoformat(),
            "duration_s": seconds,
            "error": self.error,
        }


class ExecutionHistory(Protocol):
    def steps(self, execution_arn: str) -> list[RolloutStep]: ...


class RolloutRecorder(Protocol):
    """Where rollouts and model versions are kept (the database, in the finished system)."""

    def record_model_version(
        self,
        *,
        variant: str,
        version: str,
        kind: str,
        s3_uri: str,
        metadata: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> None: ...

    def start_rollout(
        self, *, execution_id: str, variant: str | None, version: str | None, started_at: datetime
    ) -> None: ...

    def finish_rollout(
        self,
        *,
        execution_id: str,
        status: str,
        reason: str,
        steps: Sequence[Mapping[str, Any]],
        finished_at: datetime,
    ) -> None: ...


# --------------------------------------------------------------------------- plan


def deployment_config(
    settings: RolloutSettings, variant: str, *, all_at_once: bool = False
) -> dict[str, Any]:
    """UpdateEndpoint's guardrails: blue/green with canary traffic, rolled back on alarms.

    ``all_at_once`` (serverless variants, which have no instance capacity to take a canary
    share of): all traffic moves at once, then the alarms watch a baking period as long as
    the canary's wait before the old fleet goes.
    """
    routing: dict[str, Any] = (
        {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": settings.canary_wait_s}
        if all_at_once
        else {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": settings.canary_percent},
            "WaitIntervalInSeconds": settings.canary_wait_s,
        }
    )
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": settings.termination_wait_s,
            # SageMaker accepts 600 to 14400 seconds.
            "MaximumExecutionTimeoutInSeconds": max(600, min(14400, settings.timeout_s)),
        }
    }
    alarms = settings.guardrail_alarms.get(variant) or []
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return config


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _wait_for_earlier(execution_id: str, queue: RolloutQueue, endpoint_name: str) -> None:
    """Raise :class:`RolloutQueued` while an earlier rollout of this state machine runs."""
    running = queue.running(execution_id)
    mine = next((e for e in running if e.arn == execution_id), None)
    if mine is None:
        return  # Not listed (yet): nothing to order it against.
    ahead = sorted(
        (e for e in running if (e.started_at, e.arn) < (mine.started_at, mine.arn)),
        key=lambda e: (e.started_at, e.arn),
    )
    if ahead:
        names = ", ".join(e.arn.rsplit(":", 1)[-1] for e in ahead[:3])
        raise RolloutQueued(
            f"{len(ahead)} earlier rollout(s) of endpoint {endpoint_name} still running "
            f"({names}); this one waits its turn"
        )


def plan_rollout(
    artifact: Mapping[str, Any],
    *,
    execution_id: str,
    started_at: str,
    endpoints: EndpointControl,
    queue: RolloutQueue,
    settings: RolloutSettings,
) -> dict[str, Any]:
    """The endpoint config this rollout deploys, and how the state machine waits for it.

    Only the oldest running rollout of the endpoint plans (the others raise
    :class:`RolloutQueued` and are retried), and only on a settled endpoint (else
    :class:`EndpointBusy`): everything from here to the record happens one rollout at a time.
    """
    endpoint_name = settings.endpoint_name
    _wait_for_earlier(execution_id, queue, endpoint_name)
    endpoint = endpoints.describe_endpoint(endpoint_name)
    if endpoint is not None and not endpoint.settled:
        raise EndpointBusy(
            f"endpoint {endpoint_name} is {endpoint.status}; waiting for it to settle"
        )
    if endpoint is not None and endpoint.status != "InService":
        reason = f" ({endpoint.failure_reason})" if endpoint.failure_reason else ""
        raise EndpointUnusable(
            f"endpoint {endpoint_name} is {endpoint.status}{reason}: an update cannot start from "
            f"there. Delete it (aws sagemaker delete-endpoint --endpoint-name {endpoint_name}) "
            "and upload the artifacts again; nothing was changed"
        )
    variant = str(artifact["variant"])
    try:
        plan = plan_endpoint_config(
            endpoint_name,
            endpoint,
            [] if endpoint is None else endpoints.production_variants(endpoint.config_name),
            variant=variant,
            model=str(artifact["model_name"]),
            config_name=endpoint_config_name(
                endpoint_name, variant, _parse_time(started_at), execution_id
            ),
            new_variant=settings.new_variant,
        )
    except HostingConflict as exc:
        raise HostingUnsupported(str(exc)) from None
    schedule = poll_schedule(settings.poll_first_s, settings.poll_max_s, settings.timeout_s)
    return {
        **plan.as_dict(),
        "deployment_config": deployment_config(settings, variant, all_at_once=plan.serverless),
        "poll_schedule": schedule,
        "max_polls": len(schedule),
    }


# --------------------------------------------------------------------------- smoke test


def _generations(body: bytes) -> list[Any] | None:
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(answer, list) or len(answer) != len(SMOKE_TEST_REQUEST["inputs"]):
        return None
    if not all(isinstance(a, dict) and isinstance(a.get("generated_text"), str) for a in answer):
        return None
    return answer


def _smoke_request(
    endpoint_name: str, variant: str, model: str, invoker: ModelInvoker, timer: Callable[[], float]
) -> tuple[float, str]:
    """One fixed request: its latency (ms) and the generation, or :class:`SmokeTestFailed`."""
    started = timer()
    try:
        answer = invoker.invoke(endpoint_name, variant, json.dumps(SMOKE_TEST_REQUEST).encode())
    except Exception as exc:
        raise SmokeTestFailed(
            f"variant {variant} (model {model}) failed the smoke request: {exc}"
        ) from None
    latency_ms = round((timer() - started) * 1000, 1)
    if answer.invoked_variant != variant:
        raise SmokeTestFailed(
            f"asked for variant {variant} but variant {answer.invoked_variant!r} answered"
        )
    generations = _generations(answer.body)
    if generations is None:
        shown = answer.body[:200].decode("utf-8", "replace")
        raise SmokeTestFailed(
            f"variant {variant} (model {model}) answered {shown!r}, not "
            '[{"generated_text": "..."}] for the one input sent'
        )
    return latency_ms, str(generations[0]["generated_text"])


def smoke_test(
    *,
    endpoint_name: str,
    variant: str,
    model: str,
    endpoints: EndpointControl,
    invoker: ModelInvoker,
    requests: int = 3,
    spacing_s: float = 0.5,
    timer: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Check that ``variant`` runs ``model`` and answers a fixed request with a generation.

    The request is sent ``requests`` times, ``spacing_s`` apart, and every answer must be
    good: one answer can come from an instance (or, on the local host, a config) that is
    still being switched over, and a model that fails now and then must not pass.
    """
    endpoint = endpoints.describe_endpoint(endpoint_name)
    if endpoint is None or endpoint.status != "InService":
        state = "missing" if endpoint is None else endpoint.status
        raise SmokeTestFailed(f"endpoint {endpoint_name} is {state}, not InService")
    serving = {
        str(v.get("VariantName")): str(v.get("ModelName"))
        for v in endpoints.production_variants(endpoint.config_name)
    }
    if serving.get(variant) != model:
        raise SmokeTestFailed(
            f"endpoint {endpoint_name} (config {endpoint.config_name}) runs model "
            f"{serving.get(variant)!r} for variant {variant}, not {model!r}"
        )
    latencies: list[float] = []
    text = ""
    for attempt in range(max(1, requests)):
        if attempt:
            sleep(spacing_s)
        latency_ms, text = _smoke_request(endpoint_name, variant, model, invoker, timer)
        latencies.append(latency_ms)
    return {
        "endpoint_name": endpoint_name,
        "variant": variant,
        "model_name": model,
        "config_name": endpoint.config_name,
        "requests": len(latencies),
        "latency_ms": max(latencies),
        "generated_text": text,
    }


# --------------------------------------------------------------------------- record

RecordStatus = Literal["succeeded", "unchanged", "failed", "rolled_back"]
# Rollback outcomes after which the endpoint is back where it was before the rollout.
_ROLLED_BACK = frozenset({"restored", "already_previous", "deleted"})

_ROLLBACK_TEXT = {
    "not_needed": "the endpoint was not changed",
    "restored": "the endpoint was restored to config {config}",
    "already_previous": "the endpoint was already back on config {config}",
    "deleted": "the endpoint created by this rollout was deleted",
    "failed": "ROLLBACK FAILED: check endpoint {endpoint} by hand",
    "timed_out": "ROLLBACK TIMED OUT: check endpoint {endpoint} by hand",
}


def describe_failure(error: Mapping[str, Any] | None) -> tuple[str, str]:
    """A Catch's ``{"Error", "Cause"}`` as (error name, one readable sentence).

    A Lambda error's cause is the runtime's JSON document: its ``errorMessage`` is the
    sentence wanted. A service error's cause is already text.
    """
    if not error:
        return "RolloutFailed", "the rollout failed for an unknown reason"
    name = str(error.get("Error") or "RolloutFailed")
    cause = str(error.get("Cause") or "")
    try:
        document = json.loads(cause)
    except ValueError:
        document = None
    if isinstance(document, dict) and "errorMessage" in document:
        cause = str(document["errorMessage"])
        name = str(document.get("errorType") or name)
    return name, cause or name


def _key_guess(rollout: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(key, variant, version) from the event, for a rollout that failed before validation."""
    detail = (rollout.get("event") or {}).get("detail") or {}
    raw = ((detail.get("object") or {}).get("key")) or None
    if raw is None:
        return None, None, None
    key = unquote_plus(str(raw))
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == MODEL_KEY_PREFIX:
        return key, parts[1][:63] or None, parts[2][:63] or None
    return key, None, None


def _rollback_text(rollout: Mapping[str, Any], endpoint_name: str) -> str:
    rollback = rollout.get("rollback") or {}
    status = str(rollback.get("status") or "not_needed")
    config = (rollout.get("plan") or {}).get("previous_config")
    text = _ROLLBACK_TEXT.get(status, status).format(config=config, endpoint=endpoint_name)
    detail = rollback.get("detail")
    return f"{text} ({describe_failure(detail)[1]})" if isinstance(detail, dict) else text


def record_rollout(
    rollout: Mapping[str, Any],
    *,
    succeeded: bool,
    recorder: RolloutRecorder,
    history: ExecutionHistory,
    endpoints: EndpointControl,
    settings: RolloutSettings,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record the model version (on success) and the rollout: steps, duration and outcome.

    ``rollout`` is the state machine's state: ``execution_id``, ``started_at``, ``event``
    and whatever the steps before added (``artifact``, ``plan``, ``error``, ``rollback``).
    Returns the outcome, with the error name and a cause fit for the ``Fail`` state. The
    status is ``succeeded``, ``unchanged`` (the version already served), ``rolled_back`` (the
    endpoint was changed, then put back) or ``failed``.
    """
    finished_at = now or datetime.now(UTC)
    execution_id = str(rollout["execution_id"])
    started_at = _parse_time(str(rollout["started_at"]))
    artifact = rollout.get("artifact") or {}
    plan = rollout.get("plan") or {}
    key, variant, version = _key_guess(rollout)
    key = artifact.get("key", key)
    variant = artifact.get("variant", variant)
    version = artifact.get("version", version)
    endpoint_name = settings.endpoint_name
    error_name = ""
    status: RecordStatus
    if succeeded:
        status = "unchanged" if plan.get("action") == "none" else "succeeded"
        cause = ""
        reason = str(plan.get("reason") or "rolled out")
        metadata = artifact.get("metadata") or {}
        recorder.record_model_version(
            variant=str(variant),
            version=str(version),
            kind=str(artifact.get("kind", metadata.get("kind", ""))),
            # The validated copy that the version's SageMaker model loads, not the upload, whose
            # key may since hold other bytes (the upload's key only for an execution started
            # before Validate returned the copy's URL).
            s3_uri=str(artifact.get("model_data_url") or artifact.get("s3_uri", "")),
            metadata=metadata,
            metrics=metadata.get("metrics") or {},
        )
    else:
        rollback = str((rollout.get("rollback") or {}).get("status") or "")
        status = "rolled_back" if rollback in _ROLLED_BACK else "failed"
        error_name, detail = describe_failure(rollout.get("error"))
        if error_name == "EndpointDeploymentFailed":
            described = endpoints.describe_endpoint(endpoint_name)
            if described is not None and described.failure_reason:
                detail += f"; SageMaker says: {described.failure_reason}"
        subject = key or "the upload"
        cause = f"{subject} was not rolled out: {detail}; {_rollback_text(rollout, endpoint_name)}"
        reason = f"{error_name}: {cause}"
    steps = [step.as_dict() for step in history.steps(execution_id)]
    recorder.start_rollout(
        execution_id=execution_id, variant=variant, version=version, started_at=started_at
    )
    recorder.finish_rollout(
        execution_id=execution_id,
        status=status,
        reason=reason,
        steps=steps,
        finished_at=finished_at,
    )
    return {
        "status": status,
        "error": error_name,
        "cause": cause,
        "reason": reason,
        "variant": variant,
        "version": version,
        "duration_s": round((finished_at - started_at).total_seconds(), 3),
        "steps": len(steps),
    }


def clean_up_versions(
    *,
    endpoints: SageMakerResources,
    settings: RolloutSettings,
    protect: Sequence[str] = (),
    now: datetime | None = None,
) -> list[str]:
    """Delete endpoint configs and models older than the last ``keep_versions``.

    Never deleted: the config in force and those in ``protect`` (the rollback target), the
    models they use, and models younger than ``keep_young_models_s`` (a rollout queued behind
    this one may have just created its model). Returns what was deleted.
    """
    moment = now or datetime.now(UTC)
    keep = max(1, settings.keep_versions)
    endpoint = endpoints.describe_endpoint(settings.endpoint_name)
    kept_configs = {name for name in protect if name}
    if endpoint is not None:
        kept_configs.add(endpoint.config_name)
    deleted: list[str] = []
    used_models: set[str] = set()
    for variant in settings.variants:
        prefix = f"{settings.endpoint_name}-{variant}-"
        configs = endpoints.endpoint_configs(prefix)
        kept_configs.update(name for name, _ in configs[:keep])
        for name, _ in configs:
            if name not in kept_configs:
                endpoints.delete_endpoint_config(name)
                deleted.append(name)
    for config in kept_configs:
        try:
            used_models.update(
                str(v.get("ModelName")) for v in endpoints.production_variants(config)
            )
        except Exception:
            continue  # A protected config that no longer exists uses no model.
    for variant in settings.variants:
        models = endpoints.models(f"{settings.endpoint_name}-{variant}-")
        for index, (name, created) in enumerate(models):
            young = (moment - created).total_seconds() < settings.keep_young_models_s
            if index < keep or young or name in used_models:
                continue
            endpoints.delete_model(name)
            deleted.append(name)
    return deleted


# --------------------------------------------------------------------------- scaling


def scale_variants(
    *, endpoints: EndpointControl, scaler: EndpointScaler, settings: RolloutSettings
) -> list[str]:
    """Attach the target-tracking policy to every variant of the endpoint that runs on
    instances (serverless variants scale by themselves). Returns the variants scaled.

    Run after each successful rollout: a new variant exists only from then on, and the
    calls are idempotent for the others. Does nothing without ``settings.scaling``.
    """
    if settings.scaling is None:
        return []
    endpoint = endpoints.describe_endpoint(settings.endpoint_name)
    if endpoint is None or endpoint.status != "InService":
        return []
    scaled = []
    for spec in endpoints.production_variants(endpoint.config_name):
        if is_serverless_variant(spec):
            continue
        variant = str(spec.get("VariantName"))
        target, policy = scaling_requests(settings.endpoint_name, variant, settings.scaling)
        scaler.register(target, policy)
        scaled.append(variant)
    return scaled
