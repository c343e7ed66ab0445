"""The pieces of AWS that the pipeline needs and moto 5.2.5 lacks or slows down, filled in place.

The local stack runs moto instead of AWS, either in-process (``mock_aws``) or as a
``ThreadedMotoServer`` in the same process. Both share moto's backend objects, so patching
moto's classes in this process serves both. Five gaps are filled, and nothing else:

1. SageMaker ``UpdateEndpoint`` does not exist in moto, endpoints are ``InService`` the moment
   they are created, and a second endpoint with the same name silently replaces the first.
   Here ``CreateEndpoint`` and ``UpdateEndpoint`` go through ``Creating``/``Updating`` while a
   pluggable *deployer* decides whether the endpoint configuration can be served (the local
   hosting service loads the models there); a failed update rolls back to the previous
   configuration, a failed creation ends ``Failed``, each with a ``FailureReason``.
2. An EventBridge rule whose target is a Step Functions state machine raises
   ``NotImplementedError`` (and on the S3 path the error is swallowed, skipping later rules).
   Here such a target starts an execution, with the target's ``Input``, ``InputPath`` or
   ``InputTransformer`` applied, and the rule's other targets still receive the event.
3. A Step Functions Lambda task (``arn:aws:states:::lambda:invoke`` or a function ARN) needs
   Docker in moto, or only echoes its payload. Here a pluggable *invoker* runs the real Python
   handler, and moto's own interpreter turns its result or error into the task's output or
   failure, exactly as it does for a Lambda invocation answered by AWS.
4. SQS ``ReceiveMessage`` checks each message it returns against the queue's retention period
   by computing every attribute of the queue, message counts included: each returned message
   costs a pass over the whole queue, so a receive of 10 from a queue of 1,000 messages took
   1.5 s on 2 cores, and a backlog (feedback queued while the database is down) drained at
   10 messages a second. Here the check reads the retention period alone; same answer.
5. S3 ``CopyObject`` ignores ``x-amz-copy-source-if-match`` and ``If-None-Match: *``, and
   copies whatever the source is now over whatever is at the destination. Here a source whose
   ETag is not the one named, or a destination that exists, fails with 412
   ``PreconditionFailed``, as S3 answers (the rollout copies what it validated only while the
   object is unchanged, and only where no copy is yet).

The patches reach into moto's internals, so :func:`install` refuses any moto but 5.2.5.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.core.responses import ActionResult
    from moto.events.models import Rule
    from moto.events.utils import EventMessageType
    from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

__all__ = [
    "MOTO_VERSION",
    "EndpointDeployer",
    "LambdaFunctionError",
    "LambdaInvoker",
    "MotoVersionError",
    "install",
    "is_installed",
    "set_default_deploy_delay",
    "set_endpoint_deployer",
    "set_lambda_invoker",
    "uninstall",
    "wait_for_executions",
]

LOG = logging.getLogger(__name__)

MOTO_VERSION = "5.2.5"
"""The only moto version whose internals these patches are written against."""

EndpointDeployer = Callable[[str, str], str | None]
"""``fn(endpoint_name, endpoint_config_name)``: None when the config can be served, else why not."""

LambdaInvoker = Callable[[str, Any], Any]
"""``fn(function_name_or_arn, payload)``: the handler's result; raise to report a function error."""

_ABSENT = object()
_install_lock = threading.Lock()
# Endpoint status checks and transitions happen under this lock: moto's server answers
# requests on several threads, and deployments finish on their own threads.
_endpoint_lock = threading.RLock()
_saved: list[tuple[Any, str, Any]] = []
_deployer: EndpointDeployer | None = None
_listener: Callable[[str], None] | None = None
_invoker: LambdaInvoker | None = None
_DEFAULT_DEPLOY_DELAY = 0.2
_deploy_delay = _DEFAULT_DEPLOY_DELAY


class MotoVersionError(RuntimeError):
    """The installed moto is not the version these patches were written against."""


class LambdaFunctionError(Exception):
    """An error raised by a Lambda handler, as the Lambda runtime reports it.

    Raise it from an invoker to make the task fail with ``Error`` = ``error_type``, as Lambda
    does for an unhandled exception; any other exception is reported under its class name.
    """

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.stack_trace = list(stack_trace or [])

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with its fields, so a worker process can raise it to the invoker.
        return (type(self), (self.error_type, self.message, self.stack_trace))


# ---------------------------------------------------------------------------- public API


def install() -> None:
    """Patch moto in this process; a second call does nothing."""
    with _install_lock:
        if _saved:
            return
        _check_moto_version()
        for owner, name, value in _patches():
            _saved.append((owner, name, vars(owner).get(name, _ABSENT)))
            setattr(owner, name, value)


def uninstall() -> None:
    """Put back everything :func:`install` changed and forget the deployer and invoker."""
    with _install_lock:
        while _saved:
            owner, name, original = _saved.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        set_endpoint_deployer(None)
        set_endpoint_listener(None)
        set_lambda_invoker(None)
        set_default_deploy_delay(_DEFAULT_DEPLOY_DELAY)


def wait_for_executions(timeout_s: float) -> bool:
    """Wait until no Step Functions execution thread of this process runs; False on timeout.

    moto runs each execution (and each of its parallel branches) on a daemon thread that it
    keeps in a list and never joins.
    """
    from moto.stepfunctions.parser.utils import TMP_THREADS

    deadline = time.monotonic() + timeout_s
    for thread in list(TMP_THREADS):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
    return True


def is_installed() -> bool:
    """Whether the patches are in place."""
    return bool(_saved)


def set_endpoint_deployer(fn: EndpointDeployer | None) -> None:
    """Decide with ``fn`` whether an endpoint can serve a config; None: accept after a delay."""
    global _deployer
    _deployer = fn


def set_endpoint_listener(fn: Callable[[str], None] | None) -> None:
    """Call ``fn(endpoint_name)`` right after a deployment has switched (or failed) an endpoint,
    and after new weights (UpdateEndpointWeightsAndCapacities), before that call returns.

    A host that follows the control plane by polling would otherwise serve the previous config
    until its next poll.
    """
    global _listener
    _listener = fn


def set_default_deploy_delay(seconds: float) -> None:
    """How long the default deployer takes, so that Creating/Updating can be observed."""
    global _deploy_delay
    if seconds < 0:
        raise ValueError("the deploy delay cannot be negative")
    _deploy_delay = seconds


def set_lambda_invoker(fn: LambdaInvoker | None) -> None:
    """Run Step Functions Lambda tasks with ``fn``; None: moto's own Lambda invocation."""
    global _invoker
    _invoker = fn


def _check_moto_version() -> None:
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise MotoVersionError(
            f"tweetgen_local.moto_gaps patches moto {MOTO_VERSION} internals, "
            f"but moto {moto.__version__} is installed; pin moto=={MOTO_VERSION}"
        )


def _patches() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, new value) for every change, the originals captured by closures."""
    from moto.events.models import Rule
    from moto.s3.responses import S3Response
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse
    from moto.sqs.models import SQSBackend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    return [
        (
            SageMakerModelBackend,
            "create_endpoint",
            _wrap_create_endpoint(SageMakerModelBackend.create_endpoint),
        ),
        (
            SageMakerModelBackend,
            "update_endpoint_weights_and_capacities",
            _wrap_update_weights(SageMakerModelBackend.update_endpoint_weights_and_capacities),
        ),
        (SageMakerResponse, "update_endpoint", _update_endpoint_action),
        (Rule, "send_to_targets", _wrap_send_to_targets(Rule.send_to_targets)),
        (
            lambda_eval_utils,
            "_invoke_lambda_function",
            _wrap_invoke_lambda(lambda_eval_utils._invoke_lambda_function),
        ),
        (SQSBackend, "is_message_valid_based_on_retention_period", _within_retention),
        (S3Response, "copy_object", _wrap_copy_object(S3Response.copy_object)),
    ]


# ------------------------------------------------------------------ 1. SageMaker endpoints


def _endpoint_arn(backend: SageMakerModelBackend, name: str) -> str:
    from moto.sagemaker.models import FakeEndpoint

    return FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)


def _validation_error(message: str) -> Exception:
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message=message)


def _now() -> Any:
    from moto.core.utils import utcnow

    return utcnow()


def _variant_summaries(config_variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DescribeEndpoint's ProductionVariants for a config.

    moto drops a weight of 0 (and leaves out an unset one) because it tests for truthiness;
    SageMaker reports 0.0, and 1.0 when InitialVariantWeight is not given.
    """
    summaries = []
    for variant in config_variants:
        weight = variant.get("InitialVariantWeight")
        summary: dict[str, Any] = {
            "VariantName": variant["VariantName"],
            "CurrentWeight": 1.0 if weight is None else float(weight),
            "DesiredWeight": 1.0 if weight is None else float(weight),
        }
        count = variant.get("InitialInstanceCount")
        if count is not None:
            summary["CurrentInstanceCount"] = summary["DesiredInstanceCount"] = count
        serverless = variant.get("ServerlessConfig")
        if serverless:
            summary["CurrentServerlessConfig"] = dict(serverless)
            summary["DesiredServerlessConfig"] = dict(serverless)
        summaries.append(summary)
    return summaries


_RETAINED_KEYS = {
    "DesiredWeight": ("CurrentWeight", "DesiredWeight"),
    "DesiredInstanceCount": ("CurrentInstanceCount", "DesiredInstanceCount"),
}


def _retain_variant_properties(
    new: list[dict[str, Any]], old: list[dict[str, Any]], excluded: set[str]
) -> None:
    """RetainAllVariantProperties: variants that stay keep their live weights and counts."""
    previous = {variant["VariantName"]: variant for variant in old}
    for variant in new:
        before = previous.get(variant["VariantName"])
        if before is None:
            continue
        for prop, keys in _RETAINED_KEYS.items():
            if prop in excluded:
                continue
            for key in keys:
                if before.get(key) is not None:
                    variant[key] = before[key]


def _set_pending(endpoint: FakeEndpoint, config_name: str | None) -> None:
    # FakeEndpoint turns each of its attributes into a DescribeEndpoint field, so this one
    # appears as PendingDeploymentSummary while an update is under way, as in SageMaker.
    summary = {"EndpointConfigName": config_name, "StartTime": _now()} if config_name else None
    vars(endpoint)["pending_deployment_summary"] = summary


def _require_in_service(endpoint: FakeEndpoint) -> None:
    if endpoint.endpoint_status == "InService":
        return
    if endpoint.endpoint_status == "Failed":
        raise _validation_error(
            f'Cannot update endpoint "{endpoint.arn}" with status Failed; '
            "delete it and create it again."
        )
    raise _validation_error(f'Cannot update in-progress endpoint "{endpoint.arn}".')


@dataclass
class _Deployment:
    """One CreateEndpoint or UpdateEndpoint in flight, and what it applies on success."""

    backend: SageMakerModelBackend
    endpoint: FakeEndpoint
    config_name: str
    variants: list[dict[str, Any]]
    data_capture: dict[str, Any]
    creating: bool

    def start(self) -> None:
        threading.Thread(
            target=self._run, name=f"deploy-{self.endpoint.endpoint_name}", daemon=True
        ).start()

    def _run(self) -> None:
        error = _deploy(self.endpoint.endpoint_name, self.config_name)
        with _endpoint_lock:
            # Deleted, recreated, or moto reset meanwhile: the outcome belongs to no one.
            if self.backend.endpoints.get(self.endpoint.endpoint_name) is not self.endpoint:
                return
            self._finish(error)
        _notify(self.endpoint.endpoint_name)

    def _finish(self, error: str | None) -> None:
        endpoint = self.endpoint
        _set_pending(endpoint, None)
        endpoint.last_modified_time = _now()
        endpoint.failure_reason = error  # type: ignore[assignment]
        if error is None:
            endpoint.endpoint_config_name = self.config_name
            endpoint.production_variants = self.variants
            endpoint.data_capture_config = self.data_capture
            endpoint.endpoint_status = "InService"
        else:
            # SageMaker rolls a failed update back to the config in force; a failed
            # creation has nothing to roll back to.
            endpoint.endpoint_status = "Failed" if self.creating else "InService"


def _notify(endpoint_name: str) -> None:
    """Tell the endpoint listener (outside the endpoint lock: it may describe the endpoint)."""
    listener = _listener
    if listener is None:
        return
    try:
        listener(endpoint_name)
    except Exception:
        LOG.exception("endpoint listener failed for %s", endpoint_name)


def _deploy(endpoint_name: str, config_name: str) -> str | None:
    deployer = _deployer
    if deployer is None:
        time.sleep(_deploy_delay)
        return None
    try:
        return deployer(endpoint_name, config_name)
    except Exception as exc:
        LOG.exception("deploying %s on endpoint %s failed", config_name, endpoint_name)
        return f"{type(exc).__name__}: {exc}"


def _wrap_create_endpoint(original: Callable[..., FakeEndpoint]) -> Callable[..., FakeEndpoint]:
    def create_endpoint(
        self: SageMakerModelBackend,
        endpoint_name: str,
        endpoint_config_name: str,
        tags: list[dict[str, str]],
    ) -> FakeEndpoint:
        """Refuse a taken name, then start in Creating and deploy in the background."""
        with _endpoint_lock:
            if endpoint_name in self.endpoints:
                arn = _endpoint_arn(self, endpoint_name)
                raise _validation_error(f'Cannot create already existing endpoint "{arn}".')
            endpoint = original(self, endpoint_name, endpoint_config_name, tags)
            config = self.endpoint_configs[endpoint_config_name]
            endpoint.production_variants = _variant_summaries(config.production_variants)
            endpoint.endpoint_status = "Creating"
            deployment = _Deployment(
                backend=self,
                endpoint=endpoint,
                config_name=endpoint_config_name,
                variants=copy.deepcopy(endpoint.production_variants),
                data_capture=endpoint.data_capture_config,
                creating=True,
            )
        deployment.start()
        return endpoint

    return create_endpoint


def _update_endpoint(
    backend: SageMakerModelBackend,
    endpoint_name: str,
    endpoint_config_name: str,
    retain_all_variant_properties: bool = False,
    excluded_properties: set[str] | None = None,
) -> str:
    """UpdateEndpoint: validate, go Updating, deploy the new config in the background."""
    with _endpoint_lock:
        endpoint = backend.endpoints.get(endpoint_name)
        if endpoint is None:
            arn = _endpoint_arn(backend, endpoint_name)
            raise _validation_error(f'Could not find endpoint "{arn}".')
        config = backend.endpoint_configs.get(endpoint_config_name)
        if config is None:
            from moto.sagemaker.models import FakeEndpointConfig

            arn = FakeEndpointConfig.arn_formatter(
                endpoint_config_name, backend.account_id, backend.region_name
            )
            raise _validation_error(f'Could not find endpoint configuration "{arn}".')
        _require_in_service(endpoint)

        variants = _variant_summaries(config.production_variants)
        data_capture = config.data_capture_config
        if retain_all_variant_properties:
            excluded = excluded_properties or set()
            _retain_variant_properties(variants, endpoint.production_variants, excluded)
            if "DataCaptureConfig" not in excluded:
                data_capture = endpoint.data_capture_config
        endpoint.endpoint_status = "Updating"
        endpoint.failure_reason = None
        endpoint.last_modified_time = _now()
        _set_pending(endpoint, endpoint_config_name)
        deployment = _Deployment(
            backend=backend,
            endpoint=endpoint,
            config_name=endpoint_config_name,
            variants=variants,
            data_capture=data_capture,
            creating=False,
        )
    deployment.start()
    return endpoint.arn


def _update_endpoint_action(self: SageMakerResponse) -> ActionResult:
    """The UpdateEndpoint action, added to moto's SageMaker responses (JSON and server)."""
    from moto.core.responses import ActionResult

    excluded = {
        item["VariantPropertyType"]
        for item in self._get_param("ExcludeRetainedVariantProperties") or []
    }
    arn = _update_endpoint(
        self.sagemaker_backend,
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
        retain_all_variant_properties=bool(self._get_param("RetainAllVariantProperties")),
        excluded_properties=excluded,
    )
    return ActionResult({"EndpointArn": arn})


def _wrap_update_weights(original: Callable[..., str]) -> Callable[..., str]:
    def update_endpoint_weights_and_capacities(
        self: SageMakerModelBackend,
        endpoint_name: str,
        desired_weights_and_capacities: list[dict[str, Any]],
    ) -> str:
        """Refused unless InService; what the request leaves out keeps its value.

        moto writes None into a variant's weight when only its instance count is given
        (and the other way round); SageMaker leaves the unnamed property as it was. The
        endpoint listener hears of the change before the call returns, so a host routes by
        the new weights from then on.
        """
        with _endpoint_lock:
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:
                return original(self, endpoint_name, desired_weights_and_capacities)
            _require_in_service(endpoint)
            before = {v["VariantName"]: dict(v) for v in endpoint.production_variants}
            arn = original(self, endpoint_name, desired_weights_and_capacities)
            for variant in endpoint.production_variants:
                kept = before.get(variant["VariantName"], {})
                for key, value in kept.items():
                    if variant.get(key) is None:
                        variant[key] = value
            endpoint.last_modified_time = _now()
        _notify(endpoint_name)
        return arn

    return update_endpoint_weights_and_capacities


# ------------------------------------------------------- 2. EventBridge -> Step Functions


def _is_state_machine(arn: str) -> bool:
    parts = arn.split(":")
    return len(parts) >= 7 and parts[2] == "states" and parts[5] == "stateMachine"


def _wrap_send_to_targets(original: Callable[..., None]) -> Callable[..., None]:
    def send_to_targets(
        self: Rule, original_event: EventMessageType, transform_input: bool = True
    ) -> None:
        """Start the state machine targets here; hand every other target to moto."""
        machines = [t for t in self.targets if _is_state_machine(t["Arn"])]
        if not machines:
            original(self, original_event, transform_input)
            return
        if not self.event_pattern.matches_event(original_event):
            return
        for target in machines:
            _start_execution(target, original_event)
        others = [t for t in self.targets if not _is_state_machine(t["Arn"])]
        if others:
            # A shallow copy that sees only the other targets: the rule itself is left alone
            # (another thread may be changing its targets).
            shadow = copy.copy(self)
            shadow.targets = others
            original(shadow, original_event, transform_input)

    return send_to_targets


def _start_execution(target: dict[str, Any], event: EventMessageType) -> None:
    """Start one execution; like EventBridge, a failed delivery never stops the others."""
    from moto.stepfunctions.responses import get_backend

    arn = target["Arn"]
    try:
        execution_input = _target_input(target, event)
        _, _, _, region, account = arn.split(":")[:5]
        # The same backend the Step Functions API would use (the ASL interpreter or not).
        get_backend(account, region).start_execution(arn, str(uuid.uuid4()), execution_input)
    except Exception:
        LOG.exception("EventBridge could not start an execution of %s", arn)


def _target_input(target: dict[str, Any], event: EventMessageType) -> str:
    """The execution input: Input, else InputPath, else InputTransformer, else the event."""
    from moto.core.utils import iso_8601_datetime_without_milliseconds, unix_time, utcfromtimestamp
    from moto.events.utils import EventTemplateParser

    if "Input" in target:
        return str(target["Input"])
    message: dict[str, Any] = copy.deepcopy(dict(event))
    if isinstance(message.get("time"), int | float):
        # moto keeps the event time as epoch seconds; EventBridge delivers ISO 8601.
        message["time"] = iso_8601_datetime_without_milliseconds(utcfromtimestamp(message["time"]))
    ingestion_time = message.pop("ingestion-time", None)
    if "InputPath" in target:
        from jsonpath_ng.ext import parse

        matches = parse(target["InputPath"]).find(message)
        return json.dumps(matches[0].value if matches else None)
    transformer = target.get("InputTransformer")
    if transformer:
        message["ingestion-time"] = ingestion_time or unix_time()
        transformed = EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=message,  # type: ignore[arg-type]
        )
        return json.dumps(transformed)
    return json.dumps(message)


# ----------------------------------------------------------- 3. Step Functions Lambda tasks


def _wrap_invoke_lambda(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def _invoke_lambda_function(
        parameters: dict[str, Any], region: str, state_credentials: Any
    ) -> dict[str, Any]:
        """The Lambda Invoke call behind both task forms, answered by the invoker if set."""
        invoker = _invoker
        if invoker is None:
            return original(
                parameters=parameters, region=region, state_credentials=state_credentials
            )
        return _invoke_with(invoker, parameters)

    return _invoke_lambda_function


def _invoke_with(invoker: LambdaInvoker, parameters: dict[str, Any]) -> dict[str, Any]:
    """An Invoke response as Lambda answers it (payload already decoded, as moto expects).

    An unhandled error becomes ``FunctionError: Unhandled`` with the runtime's error
    document as payload; moto then fails the task with Error = errorType and
    Cause = that document, as Step Functions does.
    """
    qualifier = str(parameters.get("Qualifier") or "")
    response: dict[str, Any] = {
        "StatusCode": 200,
        "ExecutedVersion": qualifier if qualifier.isdigit() else "$LATEST",
    }
    try:
        result = invoker(parameters["FunctionName"], _decode_payload(parameters.get("Payload")))
    except LambdaFunctionError as exc:
        return _function_error(response, exc.error_type, exc.message, exc.stack_trace)
    except Exception as exc:
        trace = traceback.format_tb(exc.__traceback__)
        return _function_error(response, type(exc).__name__, str(exc), trace)
    try:
        response["Payload"] = json.loads(json.dumps(result))
    except (TypeError, ValueError) as exc:
        message = f"Unable to marshal response: {exc}"
        return _function_error(response, "Runtime.MarshalError", message, [])
    return response


def _function_error(
    response: dict[str, Any], error_type: str, message: str, stack_trace: list[str]
) -> dict[str, Any]:
    response["FunctionError"] = "Unhandled"
    response["Payload"] = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": str(uuid.uuid4()),
        "stackTrace": stack_trace,
    }
    return response


def _decode_payload(raw: Any) -> Any:
    if raw is None:
        return {}
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else str(raw)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ------------------------------------------------------------------ 4. SQS receive


def _within_retention(backend: Any, queue_name: str, message: Any) -> bool:
    """Whether ``message`` is still within its queue's retention period (as moto decides it)."""
    from moto.core.utils import unix_time

    queue = backend.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return bool(retain_until > unix_time())


# ------------------------------------------------------------------ 5. S3 conditional copy


def _wrap_copy_object(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def copy_object(self: Any) -> Any:
        """Refuse the copy (412) when the source's ETag is not the one If-Match names, or when
        ``If-None-Match: *`` finds an object at the destination."""
        from urllib.parse import parse_qs, unquote, urlparse

        from moto.s3.exceptions import PreconditionFailed

        wanted = self.headers.get("x-amz-copy-source-if-match")
        if wanted is not None:
            source = self.headers.get("x-amz-copy-source")
            if isinstance(source, bytes):
                source = source.decode("utf-8")
            parsed = urlparse(source)
            bucket, key = unquote(parsed.path).lstrip("/").split("/", 1)
            version_id = parse_qs(parsed.query).get("versionId", [None])[0]
            current = self.backend.get_object(bucket, key, version_id=version_id)
            if current is not None and wanted.strip('"') != current.etag.strip('"'):
                raise PreconditionFailed(failed_condition="x-amz-copy-source-If-Match")
        if self.headers.get("If-None-Match") == "*":
            try:
                there = self.backend.get_object(self.bucket_name, self.parse_key_name())
            except Exception:  # moto raises for a key that is missing or deleted
                there = None
            if there is not None:
                raise PreconditionFailed(failed_condition="If-None-Match")
        return original(self)

    return copy_object
