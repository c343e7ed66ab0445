"""Application Auto Scaling through boto3: the endpoint variants' scalable targets and policies.

The requests come from :func:`tweetgen.domain.rollout.scaling_requests`; this adapter only
sends them, target first (a policy needs its target).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tweetgen.adapters import aws

__all__ = ["EndpointAutoScaling"]


class EndpointAutoScaling:
    """Registers a production variant as a scalable target and puts its scaling policy."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> EndpointAutoScaling:
        return cls(aws.client("application-autoscaling"))

    def register(self, target: Mapping[str, Any], policy: Mapping[str, Any]) -> None:
        self._client.register_scalable_target(**target)
        self._client.put_scaling_policy(**policy)

    def policies(self, resource_id: str) -> list[dict[str, Any]]:
        """The scaling policies attached to ``endpoint/<name>/variant/<variant>``."""
        answer = self._client.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=resource_id
        )
        return list(answer.get("ScalingPolicies") or [])
