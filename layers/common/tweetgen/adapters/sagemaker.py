"""SageMaker through boto3: endpoint state and configs, models, and InvokeEndpoint.

Clients are created once per process (a warm Lambda reuses them) and honour
``AWS_ENDPOINT_URL*``, so the same code talks to AWS or to the local stack.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tweetgen.adapters import aws
from tweetgen.domain.rollout import EndpointState, VariantState
from tweetgen.services.errors import (
    MODEL_REFUSAL_PREFIX,
    EndpointError,
    ModelRefusedRequest,
    ServiceUnavailable,
    ServingVariant,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ENDPOINT",
    "EndpointVariants",
    "InvocationFailed",
    "ModelAnswer",
    "SageMakerEndpoints",
    "SageMakerRuntime",
    "ServingEndpoint",
    "endpoint_name",
    "endpoint_variants",
]


def _not_found(exc: Exception) -> bool:
    """Whether SageMaker's error says the thing asked about does not exist (a missing endpoint
    or model is a ValidationException, "Could not find ...")."""
    return _error_code(exc) in ("ValidationException", "ValidationError") and (
        "Could not find" in _error_message(exc)
    )


def _described(describe: Callable[..., dict[str, Any]], **name: str) -> dict[str, Any] | None:
    """A Describe call's answer, or None when the thing it names does not exist."""
    try:
        return describe(**name)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str((response.get("Error") or {}).get("Code", ""))


def _is_aws_failure(exc: Exception) -> bool:
    """An error answer of an AWS API (it has an error code) or a failure to reach it."""
    from botocore.exceptions import BotoCoreError

    return bool(_error_code(exc)) or isinstance(exc, BotoCoreError)


def _error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return str(exc)
    return str((response.get("Error") or {}).get("Message", exc))


def _model_refusal(exc: Exception) -> str | None:
    """The model's reason when a ModelError is a request it refused (see
    :data:`~tweetgen.services.errors.MODEL_REFUSAL_PREFIX`), else None.

    The container answers ``{"error": "..."}``; InvokeEndpoint passes it on as the error's
    ``OriginalMessage``.
    """
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or _error_code(exc) != "ModelError":
        return None
    try:
        original = json.loads(str(response.get("OriginalMessage") or ""))
    except ValueError:
        return None
    error = original.get("error") if isinstance(original, dict) else None
    if not isinstance(error, str) or not error.startswith(MODEL_REFUSAL_PREFIX):
        return None
    return error[len(MODEL_REFUSAL_PREFIX) :]


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
        return cls(aws.client("sagemaker"))

    def describe_endpoint(self, name: str) -> EndpointState | None:
        """The endpoint as it is now, or None when there is no endpoint of that name."""
        described = _described(self._client.describe_endpoint, EndpointName=name)
        if described is None:
            return None
        return EndpointState(
            name=str(described["EndpointName"]),
            status=str(described["EndpointStatus"]),
            config_name=str(described["EndpointConfigName"]),
            variants=tuple(_variant_state(v) for v in described.get("ProductionVariants") or []),
            failure_reason=described.get("FailureReason"),
            last_modified=described.get("LastModifiedTime"),
        )

    def model_data_url(self, name: str) -> str | None:
        """Where the model ``name`` loads its artifact from, or None when there is no such
        model ('' for a model without a ModelDataUrl)."""
        described = _described(self._client.describe_model, ModelName=name)
        if described is None:
            return None
        return str((described.get("PrimaryContainer") or {}).get("ModelDataUrl") or "")

    def update_weights(self, name: str, weights: Mapping[str, float]) -> None:
        """Move traffic with ``UpdateEndpointWeightsAndCapacities``: the variants and their
        models stay, only the weights change (no new endpoint config, no redeployment).

        SageMaker's refusals (the endpoint is updating, a variant it does not have) raise
        :class:`WeightUpdateRefused` with its message.
        """
        # Here, not at the top: the serving functions import this module and need no part
        # of the experiment engine on their cold start.
        from tweetgen.services.experiment import WeightUpdateRefused

        desired = [
            {"VariantName": variant, "DesiredWeight": float(weight)}
            for variant, weight in sorted(weights.items())
        ]
        try:
            self._client.update_endpoint_weights_and_capacities(
                EndpointName=name, DesiredWeightsAndCapacities=desired
            )
        except Exception as exc:
            if _error_code(exc) in ("ValidationException", "ValidationError"):
                raise WeightUpdateRefused(_error_message(exc)) from None
            raise

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


class InvocationFailed(EndpointError):
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
    """InvokeEndpoint, with the model's own errors turned into :class:`InvocationFailed`, or
    into :class:`~tweetgen.services.errors.ModelRefusedRequest` when the model refused the
    request as sent."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> SageMakerRuntime:
        from botocore.config import Config

        # A smoke test must see a failing model fail, not retry it into a timeout.
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=60)
        return cls(aws.client("sagemaker-runtime", config=config))

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
            refusal = _model_refusal(exc)
            if refusal is not None:
                raise ModelRefusedRequest(
                    "the model refused the request", [refusal], variant=variant
                ) from None
            raise InvocationFailed(f"{code}: {_error_message(exc)}") from None
        return ModelAnswer(
            invoked_variant=str(answer.get("InvokedProductionVariant", "")),
            content_type=str(answer.get("ContentType", "")),
            body=answer["Body"].read(),
        )


class ServingEndpoint:
    """The endpoint as the generate function invokes it: every failure is an EndpointError."""

    def __init__(self, runtime: SageMakerRuntime, endpoint_name: str) -> None:
        self._runtime = runtime
        self.endpoint_name = endpoint_name

    def invoke(self, variant: str, body: bytes) -> ModelAnswer:
        from botocore.exceptions import BotoCoreError

        try:
            return self._runtime.invoke(self.endpoint_name, variant, body)
        except BotoCoreError as exc:
            # Timeouts and connection errors: the endpoint did not answer.
            raise EndpointError(f"the model endpoint did not answer: {exc}") from None


class EndpointVariants:
    """The endpoint's variants, their live weights and the model version each one serves.

    ``DescribeEndpoint`` gives the weights in force (after any
    ``UpdateEndpointWeightsAndCapacities``) and the endpoint config, whose variants name their
    models; a model names its version in the container environment the rollout gives it
    (``TWEETGEN_MODEL_VERSION``). Models never change, so their versions are kept for the
    process's life; the weights are kept for ``ttl_s`` seconds.
    """

    VERSION_VARIABLE = "TWEETGEN_MODEL_VERSION"

    def __init__(
        self,
        client: Any,
        endpoint_name: str,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.endpoint_name = endpoint_name
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[float, list[ServingVariant]] | None = None
        self._config_models: dict[str, dict[str, str]] = {}
        self._model_versions: dict[str, str] = {}

    def current(self) -> list[ServingVariant]:
        """The variants as last described, described again once ``ttl_s`` has passed.

        When SageMaker cannot answer (throttled, unavailable, unreachable), requests go on
        with the variants last described, for another ``ttl_s``; before any answer, nothing
        can be served: ``ServiceUnavailable`` (503).
        """
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._ttl_s:
            return self._cached[1]
        try:
            variants = self._describe()
        except ServiceUnavailable:
            raise
        except Exception as exc:
            if not _is_aws_failure(exc):
                raise
            if self._cached is None:
                raise ServiceUnavailable(
                    f"the state of endpoint {self.endpoint_name!r} cannot be read right now"
                    f" ({_error_code(exc) or type(exc).__name__}): try again shortly"
                ) from None
            logger.warning(
                "DescribeEndpoint failed: serving on the variants last described",
                extra={"error": _error_code(exc) or type(exc).__name__},
            )
            variants = self._cached[1]
        self._cached = (now, variants)
        return variants

    def _describe(self) -> list[ServingVariant]:
        try:
            described = self._client.describe_endpoint(EndpointName=self.endpoint_name)
        except Exception as exc:
            if _error_code(exc) in ("ValidationException", "ValidationError"):
                raise ServiceUnavailable(
                    f"endpoint {self.endpoint_name!r} does not exist yet: roll out a model first"
                ) from None
            raise
        models = self._models_of(str(described["EndpointConfigName"]))
        variants = []
        for summary in described.get("ProductionVariants") or []:
            name = str(summary["VariantName"])
            weight = summary.get("CurrentWeight")
            model = models.get(name)
            variants.append(
                ServingVariant(
                    name=name,
                    weight=float(weight) if weight is not None else 0.0,
                    model_version=self._version_of(model) if model else "unknown",
                )
            )
        return variants

    def _models_of(self, config_name: str) -> dict[str, str]:
        if config_name not in self._config_models:
            described = self._client.describe_endpoint_config(EndpointConfigName=config_name)
            self._config_models[config_name] = {
                str(v["VariantName"]): str(v["ModelName"])
                for v in described.get("ProductionVariants") or []
            }
        return self._config_models[config_name]

    def _version_of(self, model_name: str) -> str:
        if model_name not in self._model_versions:
            described = self._client.describe_model(ModelName=model_name)
            environment = (described.get("PrimaryContainer") or {}).get("Environment") or {}
            # A model created by hand names no version: its name is the best there is.
            self._model_versions[model_name] = str(
                environment.get(self.VERSION_VARIABLE) or model_name
            )
        return self._model_versions[model_name]


DEFAULT_ENDPOINT = "tweetgen"


def endpoint_name(env: Mapping[str, str] = os.environ) -> str:
    return env.get("ENDPOINT_NAME", DEFAULT_ENDPOINT)


def endpoint_variants(env: Mapping[str, str] = os.environ) -> EndpointVariants:
    """The endpoint's variants and weights, read with ``DescribeEndpoint`` and cached for
    ``VARIANTS_CACHE_SECONDS`` (default 10)."""
    ttl_s = float(env.get("VARIANTS_CACHE_SECONDS", "10"))
    return EndpointVariants(aws.client("sagemaker"), endpoint_name(env), ttl_s=ttl_s)
