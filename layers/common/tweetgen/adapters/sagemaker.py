"""SageMaker through boto3: endpoint state and configs, models, and InvokeEndpoint.

Clients are created once per process (a warm Lambda reuses them) and honour
``AWS_ENDPOINT_URL*``, so the same code talks to AWS or to the local stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tweetgen.domain.rollout import EndpointState, VariantState

__all__ = ["InvocationFailed", "ModelAnswer", "SageMakerEndpoints", "SageMakerRuntime"]


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str((response.get("Error") or {}).get("Code", ""))


def _error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return str(exc)
    return str((response.get("Error") or {}).get("Message", exc))


def _variant_state(summary: dict[str, Any]) -> VariantState:
    weight = summary.get("CurrentWeight")
    count = summary.get("CurrentInstanceCount")
    return VariantState(
        name=str(summary["VariantName"]),
        current_weight=None if weight is None else float(weight),
        current_instance_count=None if count is None else int(count),
    )


class SageMakerEndpoints:
    """The control-plane calls the rollout makes outside the state machine's own tasks."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> SageMakerEndpoints:
        import boto3

        return cls(boto3.client("sagemaker"))

    def describe_endpoint(self, name: str) -> EndpointState | None:
        """The endpoint as it is now, or None when there is no endpoint of that name."""
        try:
            described = self._client.describe_endpoint(EndpointName=name)
        except Exception as exc:
            # SageMaker answers a missing endpoint with a ValidationException.
            if _error_code(exc) in ("ValidationException", "ValidationError") and (
                "Could not find" in _error_message(exc)
            ):
                return None
            raise
        return EndpointState(
            name=str(described["EndpointName"]),
            status=str(described["EndpointStatus"]),
            config_name=str(described["EndpointConfigName"]),
            variants=tuple(_variant_state(v) for v in described.get("ProductionVariants") or []),
            failure_reason=described.get("FailureReason"),
        )

    def production_variants(self, config_name: str) -> list[dict[str, Any]]:
        """The ProductionVariants of an endpoint config, as CreateEndpointConfig takes them."""
        described = self._client.describe_endpoint_config(EndpointConfigName=config_name)
        return [dict(v) for v in described.get("ProductionVariants") or []]

    def endpoint_configs(self, name_prefix: str) -> list[tuple[str, datetime]]:
        """Endpoint configs whose name starts with ``name_prefix``, newest first."""
        found = [
            (str(c["EndpointConfigName"]), c["CreationTime"])
            for c in self._pages("list_endpoint_configs", "EndpointConfigs", name_prefix)
            if str(c["EndpointConfigName"]).startswith(name_prefix)
        ]
        return sorted(found, key=lambda item: item[1], reverse=True)

    def models(self, name_prefix: str) -> list[tuple[str, datetime]]:
        """Models whose name starts with ``name_prefix``, newest first."""
        found = [
            (str(m["ModelName"]), m["CreationTime"])
            for m in self._pages("list_models", "Models", name_prefix)
            if str(m["ModelName"]).startswith(name_prefix)
        ]
        return sorted(found, key=lambda item: item[1], reverse=True)

    def delete_endpoint_config(self, name: str) -> None:
        self._client.delete_endpoint_config(EndpointConfigName=name)

    def delete_model(self, name: str) -> None:
        self._client.delete_model(ModelName=name)

    def _pages(self, operation: str, key: str, name_contains: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"NameContains": name_contains, "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = getattr(self._client, operation)(**kwargs)
            yield from page.get(key) or []
            token = page.get("NextToken")
            if not token:
                return


class InvocationFailed(Exception):
    """InvokeEndpoint did not return an answer from the model; the message says why."""


@dataclass(frozen=True)
class ModelAnswer:
    """What one InvokeEndpoint returned."""

    invoked_variant: str
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class SageMakerRuntime:
    """InvokeEndpoint, with the model's own errors turned into :class:`InvocationFailed`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> SageMakerRuntime:
        import boto3
        from botocore.config import Config

        # A smoke test must see a failing model fail, not retry it into a timeout.
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=60)
        return cls(boto3.client("sagemaker-runtime", config=config))

    def invoke(self, endpoint_name: str, variant: str | None, body: bytes) -> ModelAnswer:
        kwargs: dict[str, Any] = {
            "EndpointName": endpoint_name,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": body,
        }
        if variant is not None:
            kwargs["TargetVariant"] = variant
        try:
            answer = self._client.invoke_endpoint(**kwargs)
        except Exception as exc:
            code = _error_code(exc)
            if not code:
                raise
            raise InvocationFailed(f"{code}: {_error_message(exc)}") from None
        return ModelAnswer(
            invoked_variant=str(answer.get("InvokedProductionVariant", "")),
            content_type=str(answer.get("ContentType", "")),
            body=answer["Body"].read(),
        )
