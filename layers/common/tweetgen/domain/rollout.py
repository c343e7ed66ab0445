"""Rollout rules: SageMaker resource names, the next endpoint config, the poll schedule.

Pure: the rollout service feeds these with what the SageMaker adapter read, and the state
machine carries their results from one state to the next as JSON.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "SAGEMAKER_NAME_MAX_LENGTH",
    "SAGEMAKER_NAME_PATTERN",
    "SERVERLESS_MEMORY_SIZES_MB",
    "TRANSITIONAL_STATUSES",
    "EndpointState",
    "HostingConflict",
    "NewVariantSettings",
    "RolloutAction",
    "RolloutPlan",
    "ScalingSettings",
    "ServerlessSettings",
    "VariantState",
    "endpoint_config_name",
    "is_sagemaker_name",
    "is_serverless_variant",
    "model_name",
    "plan_endpoint_config",
    "poll_schedule",
    "scaling_requests",
]

# SageMaker's rule for model, endpoint config and endpoint names.
SAGEMAKER_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
SAGEMAKER_NAME_MAX_LENGTH = 63
# Statuses an endpoint passes through on its way to InService or Failed.
TRANSITIONAL_STATUSES = frozenset(
    {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
)
_DIGEST_LENGTH = 8
# SageMaker Serverless Inference: memory in 1 GB steps, at most 200 concurrent invocations.
SERVERLESS_MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200

RolloutAction = Literal["create", "update", "none"]


class HostingConflict(ValueError):
    """The planned config is one SageMaker cannot host.

    Serverless Inference serves one production variant per endpoint, and SageMaker cannot turn
    an endpoint on instances into a serverless one.
    """


def is_sagemaker_name(value: str) -> bool:
    """Whether ``value`` can name a SageMaker model, endpoint config or endpoint."""
    return (
        len(value) <= SAGEMAKER_NAME_MAX_LENGTH
        and re.fullmatch(SAGEMAKER_NAME_PATTERN, value) is not None
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_LENGTH]


def _fit(base: str, exact: bool, identity: str) -> str:
    """``base`` when it is exact and short enough, else cut and suffixed by a digest of identity."""
    if exact and is_sagemaker_name(base):
        return base
    head = base[: SAGEMAKER_NAME_MAX_LENGTH - _DIGEST_LENGTH - 1].rstrip("-")
    return f"{head}-{_digest(identity)}"


def model_name(endpoint_name: str, variant: str, version: str) -> str:
    """The SageMaker model of one artifact version: ``<endpoint>-<variant>-<version>``.

    Versions may hold ``.`` and ``_``, which SageMaker names may not: such a version (or a
    name over 63 characters) gets a digest of the exact variant and version appended, so two
    versions never share a model name.
    """
    slug = re.sub(r"[^A-Za-z0-9-]", "-", version).strip("-")
    return _fit(
        f"{endpoint_name}-{variant}-{slug}", slug == version, f"{endpoint_name}/{variant}/{version}"
    )


def endpoint_config_name(
    endpoint_name: str, variant: str, started_at: datetime, run_id: str
) -> str:
    """A new endpoint config per rollout: ``<endpoint>-<variant>-<UTC time>-<run digest>``.

    Unique per execution (a re-run never collides with the config it may have left behind)
    and sortable by time within one endpoint.
    """
    stamp = started_at.strftime("%Y%m%d%H%M%S")
    base = f"{endpoint_name}-{variant}-{stamp}-{_digest(run_id)}"
    return _fit(base, True, f"{base}/{run_id}")


def poll_schedule(first_s: int, max_s: int, timeout_s: int, factor: float = 1.5) -> list[int]:
    """Seconds to wait before each DescribeEndpoint, growing from ``first_s`` to ``max_s``.

    The waits add up to at least ``timeout_s``: the state machine gives up after the last one,
    so the list's length bounds the poll loop and its sum is the timeout.
    """
    if first_s < 1 or max_s < first_s or timeout_s < 1 or factor < 1:
        raise ValueError(
            "poll schedule needs 1 <= first_s <= max_s, timeout_s >= 1 and factor >= 1, got "
            f"first_s={first_s}, max_s={max_s}, timeout_s={timeout_s}, factor={factor}"
        )
    waits: list[int] = []
    wait = float(first_s)
    while sum(waits) < timeout_s:
        waits.append(min(max_s, math.ceil(wait)))
        wait *= factor
    return waits


@dataclass(frozen=True)
class VariantState:
    """A production variant as DescribeEndpoint reports it: what it runs now."""

    name: str
    current_weight: float | None = None
    current_instance_count: int | None = None


@dataclass(frozen=True)
class EndpointState:
    """An endpoint as DescribeEndpoint reports it."""

    name: str
    status: str
    config_name: str
    variants: tuple[VariantState, ...] = ()
    failure_reason: str | None = None
    #: When the endpoint last changed (a config update or new weights and capacities).
    last_modified: datetime | None = None

    @property
    def settled(self) -> bool:
        """Not on its way anywhere: InService, Failed or OutOfService."""
        return self.status not in TRANSITIONAL_STATUSES

    def variant(self, name: str) -> VariantState | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True)
class ServerlessSettings:
    """A variant on SageMaker Serverless Inference: no instances, nothing to pay while idle."""

    memory_size_mb: int = 3072
    max_concurrency: int = 5
    provisioned_concurrency: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.memory_size_mb not in SERVERLESS_MEMORY_SIZES_MB:
            sizes = ", ".join(map(str, SERVERLESS_MEMORY_SIZES_MB))
            problems.append(f"memory must be one of {sizes} MB, got {self.memory_size_mb}")
        if not 1 <= self.max_concurrency <= SERVERLESS_MAX_CONCURRENCY:
            problems.append(
                f"max concurrency must be 1 to {SERVERLESS_MAX_CONCURRENCY}, "
                f"got {self.max_concurrency}"
            )
        provisioned = self.provisioned_concurrency
        if provisioned is not None and not 1 <= provisioned <= self.max_concurrency:
            problems.append(
                f"provisioned concurrency must be 1 to the max concurrency "
                f"({self.max_concurrency}), got {provisioned}"
            )
        if problems:
            raise ValueError("serverless variant: " + "; ".join(problems))

    def config(self) -> dict[str, int]:
        """The production variant's ``ServerlessConfig``."""
        config = {"MemorySizeInMB": self.memory_size_mb, "MaxConcurrency": self.max_concurrency}
        if self.provisioned_concurrency is not None:
            config["ProvisionedConcurrency"] = self.provisioned_concurrency
        return config


def is_serverless_variant(spec: Mapping[str, Any]) -> bool:
    """Whether a production variant (of an endpoint config) runs on Serverless Inference."""
    return bool(spec.get("ServerlessConfig"))


@dataclass(frozen=True)
class NewVariantSettings:
    """How a variant that the endpoint does not have yet is hosted: on ``instance_count``
    instances of ``instance_type``, or on Serverless Inference when ``serverless`` is set."""

    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    weight: float = 1.0
    serverless: ServerlessSettings | None = None

    def production_variant(self, variant: str, model: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"VariantName": variant, "ModelName": model}
        if self.serverless is not None:
            spec["ServerlessConfig"] = self.serverless.config()
        else:
            spec["InstanceType"] = self.instance_type
            spec["InitialInstanceCount"] = self.instance_count
        spec["InitialVariantWeight"] = self.weight
        return spec

    @property
    def compiles_xla(self) -> bool:
        """Whether TensorFlow Serving here runs functions that must be compiled by XLA.

        It compiles them on GPUs only (XLA on CPUs needs a flag that SageMaker's TensorFlow
        Serving container does not pass): GPU instance families are ml.g* and ml.p*;
        Serverless Inference has no GPU.
        """
        family = self.instance_type.split(".")[1] if self.instance_type.count(".") >= 2 else ""
        return self.serverless is None and family.startswith(("g", "p"))

    def on_instances(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A serverless variant moved onto instances (the one way SageMaker converts)."""
        moved = {k: copy.deepcopy(v) for k, v in spec.items() if k != "ServerlessConfig"}
        moved["InstanceType"] = self.instance_type
        moved["InitialInstanceCount"] = self.instance_count
        return moved


@dataclass(frozen=True)
class RolloutPlan:
    """What the rollout does to the endpoint, and the config that gets it there."""

    action: RolloutAction
    endpoint_name: str
    config_name: str
    previous_config: str | None
    production_variants: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    # The model this variant ran before (None when it is new): what a rollback must serve again.
    previous_model: str | None = None
    # Serverless variants before or after: SageMaker shifts their traffic all at once.
    serverless: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "endpoint_name": self.endpoint_name,
            "config_name": self.config_name,
            "previous_config": self.previous_config,
            "production_variants": copy.deepcopy(self.production_variants),
            "reason": self.reason,
            "previous_model": self.previous_model,
            "serverless": self.serverless,
        }


def _carried(spec: Mapping[str, Any], live: VariantState | None) -> dict[str, Any]:
    """A variant of the current config, with the weight and instance count it runs with now.

    The count is the live ``CurrentInstanceCount`` (what Application Auto Scaling chose), not
    the config's initial count: a rollout must not undo a scale-out.
    """
    carried = copy.deepcopy(dict(spec))
    if live is not None and live.current_weight is not None:
        carried["InitialVariantWeight"] = live.current_weight
    if (
        live is not None
        and live.current_instance_count is not None
        and "InitialInstanceCount" in carried
    ):
        carried["InitialInstanceCount"] = live.current_instance_count
    return carried


def _check_hosting(endpoint_name: str, variants: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a config SageMaker would refuse: a serverless variant beside any other."""
    serverless = [str(v.get("VariantName")) for v in variants if is_serverless_variant(v)]
    if not serverless or len(variants) == 1:
        return
    names = ", ".join(str(v.get("VariantName")) for v in variants)
    raise HostingConflict(
        f"endpoint {endpoint_name} would hold variants {names}, but SageMaker Serverless "
        f"Inference serves one production variant per endpoint ({', '.join(serverless)} would "
        "be serverless). To A/B test the models, host them on instances: deploy the stack with "
        "ServerlessInference=false (a serverless endpoint moves onto instances with its next "
        "rollout; an endpoint on instances never becomes serverless). Nothing was changed"
    )


def plan_endpoint_config(
    endpoint_name: str,
    endpoint: EndpointState | None,
    current_variants: Sequence[Mapping[str, Any]],
    *,
    variant: str,
    model: str,
    config_name: str,
    new_variant: NewVariantSettings,
) -> RolloutPlan:
    """The next endpoint config: the current one with only ``variant``'s model replaced.

    Every other variant keeps its model, instance settings and current weight (an A/B test
    in progress is not disturbed), and the instance count it runs with now (what the
    autoscaler chose); this variant keeps its settings, weight and count too and only changes
    model. A variant the endpoint lacks is added with ``new_variant``. With no endpoint yet
    the endpoint is created with this variant alone. When the variant already runs ``model``
    nothing changes (a re-upload of the same version is a no-op).

    Hosting: ``new_variant.serverless`` hosts a new endpoint on Serverless Inference, which
    serves one variant. When ``new_variant`` is on instances, serverless variants move onto
    instances (SageMaker converts that way only); a variant on instances stays there.
    A config SageMaker cannot host raises :class:`HostingConflict`.
    """
    if endpoint is None:
        return RolloutPlan(
            action="create",
            endpoint_name=endpoint_name,
            config_name=config_name,
            previous_config=None,
            production_variants=[new_variant.production_variant(variant, model)],
            reason=f"no endpoint yet: create it with variant {variant}",
            serverless=new_variant.serverless is not None,
        )
    variants: list[dict[str, Any]] = []
    replaced = None
    moved: list[str] = []
    for spec in current_variants:
        carried = _carried(spec, endpoint.variant(str(spec.get("VariantName"))))
        if carried.get("VariantName") == variant:
            replaced = str(carried.get("ModelName"))
            carried["ModelName"] = model
        variants.append(carried)
    if replaced == model:
        return RolloutPlan(
            action="none",
            endpoint_name=endpoint_name,
            config_name=endpoint.config_name,
            previous_config=endpoint.config_name,
            production_variants=[copy.deepcopy(dict(spec)) for spec in current_variants],
            reason=f"variant {variant} already runs model {model}: nothing to change",
            previous_model=model,
            serverless=any(is_serverless_variant(spec) for spec in current_variants),
        )
    if new_variant.serverless is None:
        for index, spec in enumerate(variants):
            if is_serverless_variant(spec):
                variants[index] = new_variant.on_instances(spec)
                moved.append(str(spec.get("VariantName")))
    if replaced is None:
        variants.append(new_variant.production_variant(variant, model))
        reason = f"add variant {variant} with model {model}"
    else:
        reason = f"variant {variant}: model {replaced} -> {model}"
    if moved:
        reason += f" (variant {', '.join(moved)} moves from serverless onto instances)"
    _check_hosting(endpoint_name, variants)
    return RolloutPlan(
        action="update",
        endpoint_name=endpoint_name,
        config_name=config_name,
        previous_config=endpoint.config_name,
        production_variants=variants,
        reason=reason,
        previous_model=replaced,
        serverless=any(is_serverless_variant(spec) for spec in [*current_variants, *variants]),
    )


# --------------------------------------------------------------------------- scaling

#: Application Auto Scaling's names for a production variant's instance count.
SCALING_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
SCALING_METRIC = "SageMakerVariantInvocationsPerInstance"


@dataclass(frozen=True)
class ScalingSettings:
    """Target tracking on invocations per instance, per production variant on instances."""

    min_instances: int = 1
    max_instances: int = 4
    invocations_per_instance: float = 60.0
    scale_in_cooldown_s: int = 300
    scale_out_cooldown_s: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.min_instances <= self.max_instances:
            raise ValueError(
                "scaling needs 1 <= min instances <= max instances, got "
                f"min {self.min_instances} and max {self.max_instances}"
            )
        if not (math.isfinite(self.invocations_per_instance) and self.invocations_per_instance > 0):
            raise ValueError(
                "the scaling target (invocations per instance per minute) must be positive, "
                f"got {self.invocations_per_instance}"
            )
        if self.scale_in_cooldown_s < 0 or self.scale_out_cooldown_s < 0:
            raise ValueError("scaling cooldowns must not be negative")


def scaling_requests(
    endpoint_name: str, variant: str, settings: ScalingSettings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """RegisterScalableTarget's and PutScalingPolicy's arguments for one variant.

    Both calls are idempotent: repeating them after every rollout keeps the variant scaled
    (a target registered again keeps the instances it runs).
    """
    resource_id = f"endpoint/{endpoint_name}/variant/{variant}"
    target = {
        "ServiceNamespace": SCALING_NAMESPACE,
        "ResourceId": resource_id,
        "ScalableDimension": SCALABLE_DIMENSION,
        "MinCapacity": settings.min_instances,
        "MaxCapacity": settings.max_instances,
    }
    policy = {
        "PolicyName": f"{endpoint_name}-{variant}-invocations-per-instance",
        "ServiceNamespace": SCALING_NAMESPACE,
        "ResourceId": resource_id,
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(settings.invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": SCALING_METRIC},
            "ScaleInCooldown": settings.scale_in_cooldown_s,
            "ScaleOutCooldown": settings.scale_out_cooldown_s,
        },
    }
    return target, policy
