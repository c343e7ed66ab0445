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
    "TRANSITIONAL_STATUSES",
    "EndpointState",
    "NewVariantSettings",
    "RolloutAction",
    "RolloutPlan",
    "VariantState",
    "endpoint_config_name",
    "is_sagemaker_name",
    "model_name",
    "plan_endpoint_config",
    "poll_schedule",
]

# SageMaker's rule for model, endpoint config and endpoint names.
SAGEMAKER_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
SAGEMAKER_NAME_MAX_LENGTH = 63
# Statuses an endpoint passes through on its way to InService or Failed.
TRANSITIONAL_STATUSES = frozenset(
    {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
)
_DIGEST_LENGTH = 8

RolloutAction = Literal["create", "update", "none"]


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

    @property
    def settled(self) -> bool:
        """Not on its way anywhere: InService, Failed or OutOfService."""
        return self.status not in TRANSITIONAL_STATUSES

    def variant(self, name: str) -> VariantState | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True)
class NewVariantSettings:
    """How a variant that the endpoint does not have yet is hosted."""

    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    weight: float = 1.0

    def production_variant(self, variant: str, model: str) -> dict[str, Any]:
        return {
            "VariantName": variant,
            "ModelName": model,
            "InstanceType": self.instance_type,
            "InitialInstanceCount": self.instance_count,
            "InitialVariantWeight": self.weight,
        }


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "endpoint_name": self.endpoint_name,
            "config_name": self.config_name,
            "previous_config": self.previous_config,
            "production_variants": copy.deepcopy(self.production_variants),
            "reason": self.reason,
            "previous_model": self.previous_model,
        }


def _carried(spec: Mapping[str, Any], live: VariantState | None) -> dict[str, Any]:
    """A variant of the current config, with the weight and instance count it runs with now."""
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
    in progress is not disturbed); this variant keeps its settings and weight too and only
    changes model. A variant the endpoint lacks is added with ``new_variant``. With no
    endpoint yet the endpoint is created with this variant alone. When the variant already
    runs ``model`` nothing changes (a re-upload of the same version is a no-op).
    """
    if endpoint is None:
        return RolloutPlan(
            action="create",
            endpoint_name=endpoint_name,
            config_name=config_name,
            previous_config=None,
            production_variants=[new_variant.production_variant(variant, model)],
            reason=f"no endpoint yet: create it with variant {variant}",
        )
    variants: list[dict[str, Any]] = []
    replaced = None
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
        )
    if replaced is None:
        variants.append(new_variant.production_variant(variant, model))
        reason = f"add variant {variant} with model {model}"
    else:
        reason = f"variant {variant}: model {replaced} -> {model}"
    return RolloutPlan(
        action="update",
        endpoint_name=endpoint_name,
        config_name=config_name,
        previous_config=endpoint.config_name,
        production_variants=variants,
        reason=reason,
        previous_model=replaced,
    )
