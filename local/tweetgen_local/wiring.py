"""The template's resources and triggers, on moto and local threads, for the local stack.

``provision`` creates in moto what the pipeline needs (buckets with EventBridge notifications,
queues with their dead-letter queues, rules and targets, state machines, secrets...) and fills
the :class:`~tweetgen_local.template.ResolveContext` with the ids CloudFormation would return,
so the functions' environments resolve to real local resources. What it does not create is
listed in its report, never dropped in silence.

:class:`LocalWiring` then does what the Lambda service and API Gateway do around the handlers:
SQS event source mappings (long polling, batch events, partial batch failures, redelivery so
the queue's RedrivePolicy moves poison messages to the DLQ), EventBridge schedules, rules
that target functions (through a relay queue, since moto cannot invoke a function), and the
REST API as API Gateway proxy events on a local HTTP port.
"""

from __future__ import annotations

import base64
import calendar
import collections
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tweetgen_local.functions import FunctionPool, InvocationResult, error_shape
from tweetgen_local.http_server import LocalHTTPServer
from tweetgen_local.template import (
    SERVERLESS_FUNCTION,
    EventSpec,
    ResolveContext,
    Resource,
    Template,
    TemplateError,
    references,
    resolve,
)

_log = logging.getLogger(__name__)

#: What API Gateway answers when no route or no method matches.
UNKNOWN_ROUTE_STATUS = 404
UNKNOWN_METHOD_STATUS = 405
RELAY_VISIBILITY_TIMEOUT_S = 2


class ProvisionError(TemplateError):
    """A resource could not be created; names it."""


# --------------------------------------------------------------------------- clients


class AwsClients:
    """boto3 clients of one session, all pointed at one endpoint (the moto server)."""

    def __init__(self, session: Any, endpoint_url: str, region: str | None = None) -> None:
        self.session = session
        self.endpoint_url = endpoint_url
        self.region = region or getattr(session, "region_name", None) or "us-east-1"
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.new(service)
            return self._clients[service]

    def new(self, service: str) -> Any:
        """A client of its own (for a thread that long-polls)."""
        return self.session.client(service, endpoint_url=self.endpoint_url, region_name=self.region)


# --------------------------------------------------------------------------- names


def _suffix(ctx: ResolveContext, logical_id: str, length: int = 12) -> str:
    """CloudFormation-style random suffix, but stable so a running stack can be found again."""
    digest = hashlib.sha256(f"{ctx.stack_name}/{logical_id}".encode()).digest()
    return base64.b32encode(digest).decode()[:length]


def physical_name(
    ctx: ResolveContext,
    logical_id: str,
    *,
    limit: int = 64,
    with_stack: bool = True,
    lower: bool = False,
) -> str:
    """``<stack>-<LogicalId>-<SUFFIX>`` (or ``<LogicalId>-<SUFFIX>``) within ``limit``."""
    suffix = _suffix(ctx, logical_id)
    base = f"{ctx.stack_name}-{logical_id}" if with_stack else logical_id
    name = f"{base[: limit - len(suffix) - 1]}-{suffix}"
    return name.lower() if lower else name


def _api_id(ctx: ResolveContext, logical_id: str) -> str:
    return _suffix(ctx, logical_id, 10).lower()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ref_target(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("Ref"), str):
        return str(value["Ref"])
    return None


# --------------------------------------------------------------------------- provisioning


@dataclass(frozen=True)
class RelaySpec:
    """A rule → function delivery: the rule targets a relay queue that a poller drains."""

    logical_id: str
    function: str
    queue_url: str
    queue_arn: str
    rule_name: str
    max_retries: int = 2
    input: Any = None


@dataclass
class ProvisionReport:
    created: dict[str, str] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    relays: dict[str, RelaySpec] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Resources that a local server of the stack stands in for (logical id → which).
    served: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"created {len(self.created)} resource(s): {', '.join(self.created) or '-'}"]
        if self.known:
            lines.append(f"named only (not created): {', '.join(self.known)}")
        if self.served:
            lines.append(f"served by the local GraphQL server: {', '.join(self.served)}")
        lines.extend(f"skipped {lid}: {why}" for lid, why in self.skipped.items())
        lines.extend(self.notes)
        return "\n".join(lines)


_SQS_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)

_SAGEMAKER_NAMES = {
    "AWS::SageMaker::Model": ("ModelName", "model"),
    "AWS::SageMaker::EndpointConfig": ("EndpointConfigName", "endpoint-config"),
    "AWS::SageMaker::Endpoint": ("EndpointName", "endpoint"),
}


class Provisioner:
    """Creates (``create=True``) or finds again (``create=False``) the template's resources."""

    def __init__(
        self, template: Template, ctx: ResolveContext, clients: AwsClients, *, create: bool = True
    ) -> None:
        self.template = template
        self.ctx = ctx
        self.clients = clients
        self.create = create
        self.report = ProvisionReport()
        self._handlers: dict[str, Callable[[Resource], None]] = {
            "AWS::S3::Bucket": self._bucket,
            "AWS::SQS::Queue": self._queue,
            "AWS::SNS::Topic": self._topic,
            "AWS::Events::EventBus": self._event_bus,
            "AWS::Events::Rule": self._rule,
            "AWS::StepFunctions::StateMachine": self._state_machine,
            "AWS::Serverless::StateMachine": self._state_machine,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::SSM::Parameter": self._ssm_parameter,
        }
        self._named: dict[str, Callable[[Resource], None]] = {
            "AWS::Serverless::Function": lambda r: None,
            "AWS::Lambda::Function": lambda r: None,
            "AWS::Serverless::LayerVersion": lambda r: None,
            "AWS::Lambda::LayerVersion": lambda r: None,
            "AWS::IAM::Role": self._role,
            "AWS::Logs::LogGroup": self._log_group,
            "AWS::Serverless::Api": self._rest_api,
            "AWS::ApiGateway::RestApi": self._rest_api,
            "AWS::Lambda::EventSourceMapping": self._event_source_mapping,
            "AWS::RDS::DBCluster": self._database_cluster,
            **dict.fromkeys(_SAGEMAKER_NAMES, self._sagemaker),
        }
        # Named as CloudFormation would, and served by tweetgen_local.graphql_server.
        self._served: dict[str, Callable[[Resource], None]] = {
            "AWS::AppSync::GraphQLApi": self._appsync_api,
            "AWS::AppSync::GraphQLSchema": self._appsync_part,
            "AWS::AppSync::ApiKey": self._appsync_part,
            "AWS::AppSync::DataSource": self._appsync_part,
            "AWS::AppSync::Resolver": self._appsync_part,
        }

    # ---------------------------------------------------------------- driver

    def run(self) -> ProvisionReport:
        self.template.register_functions(self.ctx)
        self._implicit_resources()
        for logical_id in self._order():
            resource = self.template.resources[logical_id]
            if not self.template.is_enabled(logical_id, self.ctx):
                self.report.skipped[logical_id] = f"condition {resource.condition} is false"
                continue
            handler = self._handlers.get(resource.type)
            if handler is not None:
                try:
                    handler(resource)
                except Exception as exc:
                    if self.create or not _is_client_error(exc):
                        raise
                    self.report.skipped[logical_id] = f"not found in the running stack: {exc}"
                    continue
                self.report.created[logical_id] = resource.type
            elif resource.type in self._named:
                self._named[resource.type](resource)
                self.report.known[logical_id] = resource.type
            elif resource.type in self._served:
                self._served[resource.type](resource)
                self.report.served[logical_id] = resource.type
            elif resource.type.startswith("AWS::SageMaker::"):
                self.report.skipped[logical_id] = (
                    f"{resource.type}: SageMaker is served by the local hosting service"
                )
            else:
                self.report.skipped[logical_id] = f"{resource.type} is not provisioned locally"
        self._function_events()
        return self.report

    def _order(self) -> list[str]:
        """Template order, except that a resource comes after those it refers to."""
        resources = self.template.resources
        pending = {
            lid: {
                dep
                for dep in references(r.properties) | set(r.depends_on)
                if dep in resources and dep != lid
            }
            for lid, r in resources.items()
        }
        order: list[str] = []
        while pending:
            ready = [lid for lid, deps in pending.items() if not deps - set(order)]
            if not ready:  # a cycle: keep template order and let resolution say what is missing
                ready = list(pending)
            for lid in ready:
                order.append(lid)
                del pending[lid]
        return order

    def _resolve(self, resource: Resource, key: str, default: Any = None) -> Any:
        value = resource.properties.get(key)
        if value is None:
            return default
        return resolve(value, self.ctx, f"{resource.path}.{key}")

    def _implicit_resources(self) -> None:
        """What SAM adds: ServerlessRestApi and the functions' and state machines' roles."""
        ctx = self.ctx
        for function in self.template.functions.values():
            if function.type == SERVERLESS_FUNCTION and "Role" not in function.properties:
                self._set_role(f"{function.logical_id}Role")
            for event in function.events.values():
                if (
                    event.type == "Api"
                    and "RestApiId" not in event.properties
                    and "ServerlessRestApi" not in ctx.resources
                ):
                    api_id = _api_id(ctx, "ServerlessRestApi")
                    ctx.set_resource("ServerlessRestApi", api_id, RootResourceId=api_id[:6])
                    self.report.known["ServerlessRestApi"] = "AWS::Serverless::Api (implicit)"
        for resource in self.template.resources.values():
            if resource.type == "AWS::Serverless::StateMachine" and not (
                {"Role", "RoleArn"} & set(resource.properties)
            ):
                self._set_role(f"{resource.logical_id}Role")

    def _set_role(self, logical_id: str) -> None:
        name = physical_name(self.ctx, logical_id)
        self.ctx.set_resource(
            logical_id,
            name,
            Arn=self.ctx.arn("iam", f"role/{name}", region=False),
            RoleId=f"AROA{_suffix(self.ctx, logical_id, 17)}",
        )
        self.report.known[logical_id] = "AWS::IAM::Role (implicit)"

    # ---------------------------------------------------------------- created

    def _bucket(self, resource: Resource) -> None:
        ctx = self.ctx
        name = self._resolve(resource, "BucketName") or physical_name(
            ctx, resource.logical_id, limit=63, lower=True
        )
        s3 = self.clients("s3")
        if self.create:
            kwargs: dict[str, Any] = {"Bucket": name}
            if ctx.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
            try:
                s3.create_bucket(**kwargs)
            except Exception as exc:  # provisioning twice (a restarted wiring) keeps the bucket
                if not _is_client_error(exc, "BucketAlreadyOwnedByYou") and not _is_client_error(
                    exc, "BucketAlreadyExists"
                ):
                    raise
            versioning = self._resolve(resource, "VersioningConfiguration")
            if isinstance(versioning, dict) and versioning.get("Status"):
                s3.put_bucket_versioning(
                    Bucket=name, VersioningConfiguration={"Status": versioning["Status"]}
                )
            notification = self._notification(resource)
            if notification:
                s3.put_bucket_notification_configuration(
                    Bucket=name, NotificationConfiguration=notification
                )
        else:
            s3.head_bucket(Bucket=name)
        ctx.set_resource(
            resource.logical_id,
            name,
            Arn=f"arn:{ctx.partition}:s3:::{name}",
            DomainName=f"{name}.s3.{ctx.url_suffix}",
            RegionalDomainName=f"{name}.s3.{ctx.region}.{ctx.url_suffix}",
            DualStackDomainName=f"{name}.s3.dualstack.{ctx.region}.{ctx.url_suffix}",
            WebsiteURL=f"http://{name}.s3-website.{ctx.region}.{ctx.url_suffix}",
        )

    def _notification(self, resource: Resource) -> dict[str, Any]:
        """CloudFormation's NotificationConfiguration in the shape of the S3 API."""
        raw = self._resolve(resource, "NotificationConfiguration") or {}
        result: dict[str, Any] = {}
        eventbridge = raw.get("EventBridgeConfiguration")
        if isinstance(eventbridge, dict) and _text(
            eventbridge.get("EventBridgeEnabled", True)
        ).lower() in ("true", "1"):
            result["EventBridgeConfiguration"] = {}
        for cfn_key, api_key, target in (
            ("QueueConfigurations", "QueueConfigurations", ("Queue", "QueueArn")),
            ("TopicConfigurations", "TopicConfigurations", ("Topic", "TopicArn")),
        ):
            entries = []
            for entry in raw.get(cfn_key) or []:
                converted: dict[str, Any] = {
                    target[1]: entry[target[0]],
                    "Events": [entry["Event"]],
                }
                rules = ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules")
                if rules:
                    converted["Filter"] = {"Key": {"FilterRules": rules}}
                entries.append(converted)
            if entries:
                result[api_key] = entries
        if raw.get("LambdaConfigurations"):
            self.report.notes.append(
                f"{resource.logical_id}: LambdaConfigurations are not delivered locally "
                "(use EventBridge notifications and a rule)"
            )
        return result

    def _queue(self, resource: Resource) -> None:
        ctx = self.ctx
        props = {key: self._resolve(resource, key) for key in _SQS_ATTRIBUTES}
        fifo = _text(props.get("FifoQueue") or "false").lower() == "true"
        name = self._resolve(resource, "QueueName") or (
            physical_name(ctx, resource.logical_id, limit=75) + (".fifo" if fifo else "")
        )
        sqs = self.clients("sqs")
        if self.create:
            attributes = {
                key: json.dumps(value) if isinstance(value, (dict, list)) else _text(value)
                for key, value in props.items()
                if value is not None
            }
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        else:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        ctx.set_resource(
            resource.logical_id,
            url,
            Arn=ctx.arn("sqs", name),
            QueueName=name,
            QueueUrl=url,
        )

    def _topic(self, resource: Resource) -> None:
        name = self._resolve(resource, "TopicName") or physical_name(
            self.ctx, resource.logical_id, limit=256
        )
        if self.create:
            attributes = {}
            if self._resolve(resource, "FifoTopic"):
                attributes["FifoTopic"] = "true"
            arn = self.clients("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        else:
            arn = self.ctx.arn("sns", name)
        self.ctx.set_resource(resource.logical_id, arn, TopicArn=arn, TopicName=name)

    def _event_bus(self, resource: Resource) -> None:
        name = self._resolve(resource, "Name")
        if self.create:
            arn = self.clients("events").create_event_bus(Name=name)["EventBusArn"]
        else:
            arn = self.ctx.arn("events", f"event-bus/{name}")
        self.ctx.set_resource(resource.logical_id, name, Arn=arn, Name=name)

    def _function_for_arn(self, arn: str) -> str | None:
        """The logical id of the template's function that a (qualified) ARN names."""
        parts = arn.split(":")
        if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
            return None
        unqualified = ":".join(parts[:7])
        for logical_id in self.template.functions:
            if self.ctx.resources.get(logical_id, {}).get("Arn") == unqualified:
                return logical_id
        return None

    def _rule(self, resource: Resource) -> None:
        props = {
            key: self._resolve(resource, key)
            for key in (
                "Name",
                "EventBusName",
                "EventPattern",
                "ScheduleExpression",
                "State",
                "Description",
                "RoleArn",
                "Targets",
            )
        }
        name = props["Name"] or physical_name(self.ctx, resource.logical_id)
        targets = []
        for target in props["Targets"] or []:
            function = self._function_for_arn(str(target.get("Arn", "")))
            if props["ScheduleExpression"]:
                # Schedules run in LocalWiring's threads; moto would match a schedule rule
                # against every event, so its targets stay out of moto.
                if function is None:
                    self.report.notes.append(
                        f"{resource.logical_id}: schedule target {target.get('Id')} "
                        "is not delivered locally"
                    )
            elif function is not None:
                # moto cannot invoke a function (and fails on a Lambda target): relay it.
                retries = (target.get("RetryPolicy") or {}).get("MaximumRetryAttempts", 2)
                relay_id = f"{resource.logical_id}.{target.get('Id')}"
                targets.append(self._relay_target(relay_id, function, name, target, retries))
            else:
                targets.append(dict(target))
        arn = self._put_rule(
            name,
            bus=props["EventBusName"],
            pattern=props["EventPattern"],
            schedule=props["ScheduleExpression"],
            state=props["State"],
            description=props["Description"],
            role=props["RoleArn"],
            targets=targets,
        )
        bus = props["EventBusName"]
        # Ref of a rule on a custom bus is "bus|rule", as CloudFormation returns it.
        ref = f"{bus.split('/')[-1]}|{name}" if bus and bus.split("/")[-1] != "default" else name
        self.ctx.set_resource(resource.logical_id, ref, Arn=arn)

    def _put_rule(
        self,
        name: str,
        *,
        bus: str | None = None,
        pattern: Any = None,
        schedule: str | None = None,
        state: str | None = None,
        description: str | None = None,
        role: str | None = None,
        targets: list[dict[str, Any]] | None = None,
    ) -> str:
        bus_name = bus.split("/")[-1] if isinstance(bus, str) and bus else "default"
        resource = name if bus_name == "default" else f"{bus_name}/{name}"
        arn = self.ctx.arn("events", f"rule/{resource}")
        if not self.create:
            return arn
        events = self.clients("events")
        kwargs: dict[str, Any] = {"Name": name, "EventBusName": bus_name}
        if pattern is not None:
            kwargs["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
        if schedule:
            kwargs["ScheduleExpression"] = schedule
        kwargs["State"] = state or "ENABLED"
        if description:
            kwargs["Description"] = description
        if role:
            kwargs["RoleArn"] = role
        arn = events.put_rule(**kwargs)["RuleArn"]
        if targets:
            events.put_targets(Rule=name, EventBusName=bus_name, Targets=targets)
        return str(arn)

    def _relay_target(
        self,
        logical_id: str,
        function: str,
        rule_name: str,
        target: Mapping[str, Any],
        max_retries: Any,
    ) -> dict[str, Any]:
        """An SQS target that a poller drains into the function (moto cannot invoke it)."""
        queue_name = physical_name(self.ctx, f"relay-{logical_id}".replace(".", "-"), limit=80)
        url = ""
        if self.create:
            url = self.clients("sqs").create_queue(
                QueueName=queue_name,
                Attributes={"VisibilityTimeout": str(RELAY_VISIBILITY_TIMEOUT_S)},
            )["QueueUrl"]
        arn = self.ctx.arn("sqs", queue_name)
        self.report.relays[logical_id] = RelaySpec(
            logical_id,
            function,
            url,
            arn,
            rule_name,
            int(max_retries),
            _constant_input(target.get("Input")),
        )
        target_id = target.get("Id") or (target.get("Target") or {}).get("Id")
        relay = {"Id": str(target_id or f"{logical_id}LambdaTarget"), "Arn": arn}
        for key in ("InputPath", "InputTransformer"):
            if key in target:
                relay[key] = target[key]
        return relay

    def _state_machine(self, resource: Resource) -> None:
        ctx = self.ctx
        serverless = resource.type == "AWS::Serverless::StateMachine"
        name = self._resolve(resource, "Name" if serverless else "StateMachineName") or (
            physical_name(ctx, resource.logical_id, limit=80, with_stack=False)
        )
        arn = ctx.arn("states", f"stateMachine:{name}")
        role = (
            self._resolve(resource, "Role")
            or self._resolve(resource, "RoleArn")
            or ctx.resources.get(f"{resource.logical_id}Role", {}).get("Arn")
            or ctx.arn(
                "iam", f"role/{physical_name(ctx, resource.logical_id + 'Role')}", region=False
            )
        )
        if self.create:
            definition = self._definition(resource, serverless)
            kwargs: dict[str, Any] = {"name": name, "definition": definition, "roleArn": role}
            kind = self._resolve(resource, "Type" if serverless else "StateMachineType")
            if kind:
                kwargs["type"] = kind
            sfn = self.clients("stepfunctions")
            try:
                arn = sfn.create_state_machine(**kwargs)["stateMachineArn"]
            except Exception as exc:
                if not _is_client_error(exc, "StateMachineAlreadyExists"):
                    raise
                sfn.update_state_machine(stateMachineArn=arn, definition=definition, roleArn=role)
        ctx.set_resource(resource.logical_id, arn, Arn=arn, Name=name)
        if serverless:
            self._state_machine_events(resource, arn, role)

    def _definition(self, resource: Resource, serverless: bool) -> str:
        """The ASL text with DefinitionSubstitutions applied, as CloudFormation does."""
        path = resource.path
        props = resource.properties
        if serverless and "DefinitionUri" in props:
            uri = self._resolve(resource, "DefinitionUri")
            if not isinstance(uri, str):
                raise ProvisionError(f"{path}.DefinitionUri: only a local file works here: {uri!r}")
            file = self.template.base_dir / uri
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ProvisionError(f"{path}.DefinitionUri: cannot read {file}: {exc}") from exc
        elif "Definition" in props:
            text = json.dumps(self._resolve(resource, "Definition"))
        elif "DefinitionString" in props:
            text = str(self._resolve(resource, "DefinitionString"))
        else:
            raise ProvisionError(f"{path}: no Definition, DefinitionUri or DefinitionString")
        substitutions = self._resolve(resource, "DefinitionSubstitutions") or {}
        for key, value in substitutions.items():
            text = text.replace("${" + key + "}", _text(value))
        return text

    def _state_machine_events(self, resource: Resource, arn: str, role: str) -> None:
        for event_name, body in (resource.properties.get("Events") or {}).items():
            event = EventSpec(event_name, str(body.get("Type")), dict(body.get("Properties") or {}))
            logical_id = f"{resource.logical_id}{event_name}"
            path = f"{resource.path}.Events.{event_name}.Properties"
            props = resolve(event.properties, self.ctx, path) or {}
            if event.type not in ("EventBridgeRule", "CloudWatchEvent", "Schedule", "ScheduleV2"):
                self.report.notes.append(
                    f"{logical_id}: {event.type} events of state machines are not wired locally"
                )
                continue
            name = props.get("RuleName") or props.get("Name") or physical_name(self.ctx, logical_id)
            target: dict[str, Any] = {
                "Id": (props.get("Target") or {}).get("Id") or f"{logical_id}StepFunctionsTarget",
                "Arn": arn,
                "RoleArn": role,
            }
            for key in ("Input", "InputPath"):
                if key in props:
                    target[key] = props[key]
            rule_arn = self._put_rule(
                name,
                bus=props.get("EventBusName"),
                pattern=props.get("Pattern"),
                schedule=props.get("Schedule") or props.get("ScheduleExpression"),
                state=props.get("State"),
                targets=[target],
            )
            self.ctx.set_resource(logical_id, name, Arn=rule_arn)
            self.report.created[logical_id] = (
                f"AWS::Events::Rule ({event.type} of {resource.logical_id})"
            )
            if event.type != "EventBridgeRule" and event.type != "CloudWatchEvent":
                self.report.notes.append(
                    f"{logical_id}: schedules that start a state machine do not fire locally"
                )

    def _secret(self, resource: Resource) -> None:
        name = self._resolve(resource, "Name") or physical_name(
            self.ctx, resource.logical_id, with_stack=False, limit=512
        )
        manager = self.clients("secretsmanager")
        if self.create:
            secret = self._resolve(resource, "SecretString")
            if secret is None:
                secret = self._generated_secret(resource)
            kwargs: dict[str, Any] = {"Name": name, "SecretString": secret}
            description = self._resolve(resource, "Description")
            if description:
                kwargs["Description"] = description
            try:
                arn = manager.create_secret(**kwargs)["ARN"]
            except Exception as exc:
                if not _is_client_error(exc, "ResourceExistsException"):
                    raise
                arn = manager.describe_secret(SecretId=name)["ARN"]
        else:
            arn = manager.describe_secret(SecretId=name)["ARN"]
        self.ctx.set_resource(resource.logical_id, arn, Id=arn, Name=name)

    def _generated_secret(self, resource: Resource) -> str:
        spec = self._resolve(resource, "GenerateSecretString") or {}
        options = {
            key: spec[key]
            for key in (
                "PasswordLength",
                "ExcludeCharacters",
                "ExcludeNumbers",
                "ExcludePunctuation",
                "ExcludeUppercase",
                "ExcludeLowercase",
                "IncludeSpace",
                "RequireEachIncludedType",
            )
            if key in spec
        }
        if "PasswordLength" in options:
            options["PasswordLength"] = int(options["PasswordLength"])
        password = self.clients("secretsmanager").get_random_password(**options)["RandomPassword"]
        template_text = spec.get("SecretStringTemplate")
        key = spec.get("GenerateStringKey")
        if template_text and key:
            document = json.loads(template_text)
            document[key] = password
            return json.dumps(document)
        return str(password)

    def _ssm_parameter(self, resource: Resource) -> None:
        name = self._resolve(resource, "Name") or physical_name(self.ctx, resource.logical_id)
        kind = self._resolve(resource, "Type", "String")
        value = self._resolve(resource, "Value")
        if self.create:
            self.clients("ssm").put_parameter(
                Name=name, Value=_text(value), Type=kind, Overwrite=True
            )
        else:
            value = self.clients("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        self.ctx.set_resource(resource.logical_id, name, Type=kind, Value=value)

    # ---------------------------------------------------------------- named only

    def _role(self, resource: Resource) -> None:
        name = self._resolve(resource, "RoleName") or physical_name(self.ctx, resource.logical_id)
        path = self._resolve(resource, "Path") or "/"
        self.ctx.set_resource(
            resource.logical_id,
            name,
            Arn=self.ctx.arn("iam", f"role{path}{name}", region=False),
            RoleId=f"AROA{_suffix(self.ctx, resource.logical_id, 17)}",
        )

    def _log_group(self, resource: Resource) -> None:
        name = self._resolve(resource, "LogGroupName") or physical_name(
            self.ctx, resource.logical_id
        )
        self.ctx.set_resource(
            resource.logical_id, name, Arn=self.ctx.arn("logs", f"log-group:{name}:*")
        )

    def _rest_api(self, resource: Resource) -> None:
        api_id = _api_id(self.ctx, resource.logical_id)
        self.ctx.set_resource(resource.logical_id, api_id, RootResourceId=api_id[:6])

    def _event_source_mapping(self, resource: Resource) -> None:
        key = f"{self.ctx.stack_name}/{resource.logical_id}"
        self.ctx.set_resource(resource.logical_id, str(uuid.uuid5(uuid.NAMESPACE_URL, key)))

    def _database_cluster(self, resource: Resource) -> None:
        """An Aurora cluster: named only. The functions' DATABASE_URL (SQLite, or the MySQL
        the stack was given) wins over the host and secret that resolve here."""
        ctx = self.ctx
        name = self._resolve(resource, "DBClusterIdentifier") or physical_name(
            ctx, resource.logical_id, limit=63, lower=True
        )
        port = str(self._resolve(resource, "Port") or 3306)
        secret = f"rds!cluster-{uuid.uuid5(uuid.NAMESPACE_URL, f'{ctx.stack_name}/{name}')}"
        ctx.set_resource(
            resource.logical_id,
            name,
            **{
                "DBClusterArn": ctx.arn("rds", f"cluster:{name}"),
                "DBClusterResourceId": f"cluster-{_suffix(ctx, resource.logical_id, 26)}",
                "Endpoint.Address": "127.0.0.1",
                "Endpoint.Port": port,
                "ReadEndpoint.Address": "127.0.0.1",
                "MasterUserSecret.SecretArn": ctx.arn("secretsmanager", f"secret:{secret}-AbCdEf"),
            },
        )
        self.report.notes.append(
            f"{resource.logical_id}: {resource.type} is not created (the functions use the local "
            "stack's database); its endpoint and secret resolve"
        )

    def _sagemaker(self, resource: Resource) -> None:
        key, kind = _SAGEMAKER_NAMES[resource.type]
        name = self._resolve(resource, key) or physical_name(
            self.ctx, resource.logical_id, limit=63
        )
        arn = self.ctx.arn("sagemaker", f"{kind}/{str(name).lower()}")
        self.ctx.set_resource(resource.logical_id, arn, **{key: name})
        self.report.notes.append(
            f"{resource.logical_id}: {resource.type} is not created in moto (the local hosting "
            "service serves SageMaker); its name and ARN resolve"
        )

    # ---------------------------------------------------------------- AppSync

    def _appsync_api(self, resource: Resource) -> None:
        ctx = self.ctx
        api_id = _suffix(ctx, resource.logical_id, 26).lower()
        arn = ctx.arn("appsync", f"apis/{api_id}")
        host = f"{api_id}.appsync-api.{ctx.region}.{ctx.url_suffix}"
        realtime = f"{api_id}.appsync-realtime-api.{ctx.region}.{ctx.url_suffix}"
        ctx.set_resource(
            resource.logical_id,
            arn,
            ApiId=api_id,
            Arn=arn,
            GraphQLDns=host,
            GraphQLUrl=f"https://{host}/graphql",
            GraphQLEndpointArn=arn,
            RealtimeDns=realtime,
            RealtimeUrl=f"wss://{realtime}/graphql",
        )

    def _appsync_part(self, resource: Resource) -> None:
        """Schema, API key, data source or resolver: the ids CloudFormation would return."""
        ctx = self.ctx
        api_id = self._resolve(resource, "ApiId")
        kind = resource.type.rsplit("::", 1)[-1]
        if kind == "GraphQLSchema":
            ctx.set_resource(resource.logical_id, f"{api_id}GraphQLSchema")
        elif kind == "ApiKey":
            key_id = f"da2-{_suffix(ctx, resource.logical_id, 26).lower()}"
            arn = ctx.arn("appsync", f"apis/{api_id}/apikeys/{key_id}")
            ctx.set_resource(resource.logical_id, arn, ApiKey=key_id, ApiKeyId=key_id, Arn=arn)
        elif kind == "DataSource":
            name = self._resolve(resource, "Name")
            arn = ctx.arn("appsync", f"apis/{api_id}/datasources/{name}")
            ctx.set_resource(resource.logical_id, arn, DataSourceArn=arn, Name=name)
        else:
            type_name = self._resolve(resource, "TypeName")
            field_name = self._resolve(resource, "FieldName")
            arn = ctx.arn("appsync", f"apis/{api_id}/types/{type_name}/resolvers/{field_name}")
            ctx.set_resource(
                resource.logical_id, arn, ResolverArn=arn, TypeName=type_name, FieldName=field_name
            )

    # ---------------------------------------------------------------- function events

    def _function_events(self) -> None:
        for function in self.template.functions.values():
            if not self.template.is_enabled(function.logical_id, self.ctx):
                continue
            for event in function.events.values():
                self._function_event(function.logical_id, event)

    def _function_event(self, function: str, event: EventSpec) -> None:
        logical_id = f"{function}{event.name}"
        path = f"Resources.{function}.Properties.Events.{event.name}.Properties"
        if event.type in ("Api", "SQS"):
            if event.type == "SQS":
                key = f"{self.ctx.stack_name}/{logical_id}"
                self.ctx.set_resource(logical_id, str(uuid.uuid5(uuid.NAMESPACE_URL, key)))
            return
        if event.type in ("Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent"):
            props = resolve(event.properties, self.ctx, path) or {}
            name = props.get("Name") or props.get("RuleName") or physical_name(self.ctx, logical_id)
            schedule = props.get("Schedule") or props.get("ScheduleExpression")
            targets: list[dict[str, Any]] = []
            if not schedule:  # a schedule runs in LocalWiring's threads, not through moto
                retries = (props.get("RetryPolicy") or {}).get("MaximumRetryAttempts", 2)
                targets.append(self._relay_target(logical_id, function, name, props, retries))
            enabled = props.get("Enabled", True) is not False and props.get("State") != "DISABLED"
            arn = self._put_rule(
                name,
                bus=props.get("EventBusName"),
                pattern=props.get("Pattern"),
                schedule=schedule,
                state="ENABLED" if enabled else "DISABLED",
                description=props.get("Description"),
                targets=targets,
            )
            self.ctx.set_resource(logical_id, name, Arn=arn)
            self.report.created[logical_id] = f"AWS::Events::Rule ({event.type} of {function})"
            return
        self.report.notes.append(
            f"{logical_id}: {event.type} events are not delivered to functions locally"
        )


def _is_client_error(exc: BaseException, code: str | None = None) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return code is None or (response.get("Error") or {}).get("Code") == code


def provision(
    template: Template, ctx: ResolveContext, clients: AwsClients, *, create: bool = True
) -> ProvisionReport:
    """Create the template's resources in moto (or find them again) and fill ``ctx``."""
    return Provisioner(template, ctx, clients, create=create).run()


# --------------------------------------------------------------------------- schedules

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_WEEKDAYS = {d: i + 1 for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a ``rate(...)`` expression; None for anything else."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    return int(match.group(1)) * _UNITS[match.group(2).rstrip("s")]


def _cron_field(text: str, low: int, high: int, names: Mapping[str, int]) -> set[int] | None:
    """Values of one cron field; None means "any" (``*`` or ``?``)."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            first, last = part.split("-", 1)
            start, end = _cron_value(first, names), _cron_value(last, names)
        else:
            start = _cron_value(part, names)
            end = high if step > 1 else start
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"{text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _cron_value(text: str, names: Mapping[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise ValueError(f"unsupported cron value {text!r} (L, W and # are not supported here)")
    return int(text)


def next_cron_time(expression: str, after: dt.datetime) -> dt.datetime:
    """The next UTC minute after ``after`` that an EventBridge ``cron(...)`` matches."""
    match = re.match(r"^cron\((.*)\)$", expression.strip())
    fields = match.group(1).split() if match else []
    if len(fields) != 6:
        raise ValueError(f"not an EventBridge cron expression: {expression!r}")
    minutes = _cron_field(fields[0], 0, 59, {})
    hours = _cron_field(fields[1], 0, 23, {})
    days = _cron_field(fields[2], 1, 31, {})
    months = _cron_field(fields[3], 1, 12, _MONTHS)
    weekdays = _cron_field(fields[4], 1, 7, _WEEKDAYS)
    years = _cron_field(fields[5], 1970, 2199, {})
    start = (after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)).replace(tzinfo=None)
    day = start.date()
    for _ in range(366 * 5):
        weekday = (day.isoweekday() % 7) + 1  # SUN=1 ... SAT=7
        if (
            (years is None or day.year in years)
            and (months is None or day.month in months)
            and (days is None or day.day in days)
            and (weekdays is None or weekday in weekdays)
        ):
            for hour in sorted(hours) if hours is not None else range(24):
                for minute in sorted(minutes) if minutes is not None else range(60):
                    candidate = dt.datetime.combine(day, dt.time(hour, minute))
                    if candidate >= start:
                        return candidate.replace(tzinfo=dt.UTC)
        day += dt.timedelta(days=1)
    raise ValueError(f"{expression!r} never fires in the next five years")


@dataclass(frozen=True)
class ScheduleSpec:
    """A scheduled invocation: a function's Schedule event, or a schedule rule's target."""

    logical_id: str
    function: str
    expression: str
    input: Any = None
    enabled: bool = True
    rule_arn: str = ""

    def interval(self, now: dt.datetime | None = None) -> float:
        """Seconds until the next run (``rate``) or until the next matching minute (``cron``)."""
        seconds = rate_seconds(self.expression)
        if seconds is not None:
            return float(seconds)
        now = now or dt.datetime.now(dt.UTC)
        return max(0.0, (next_cron_time(self.expression, now) - now).total_seconds())


def scheduled_event(spec: ScheduleSpec, ctx: ResolveContext) -> Any:
    """What EventBridge delivers: the constant Input if set, else a "Scheduled Event"."""
    if spec.input is not None:
        return spec.input
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ctx.account_id,
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": ctx.region,
        "resources": [spec.rule_arn] if spec.rule_arn else [],
        "detail": {},
    }


# --------------------------------------------------------------------------- SQS


@dataclass(frozen=True)
class QueueMapping:
    """An SQS event source mapping (or a relay queue drained into a function)."""

    logical_id: str
    function: str
    queue_arn: str
    queue_url: str
    batch_size: int = 10
    batching_window_s: float = 0.0
    report_batch_item_failures: bool = False
    enabled: bool = True
    relay: bool = False
    max_retries: int = 2
    input: Any = None


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the SQS batch event Lambda builds from a received message."""
    attributes = message.get("Attributes") or {}
    message_attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        entry: dict[str, Any] = {}
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            entry["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        entry.update(stringListValues=[], binaryListValues=[], dataType=value.get("DataType"))
        message_attributes[name] = entry
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {
            key: attributes[key]
            for key in (
                "ApproximateReceiveCount",
                "AWSTraceHeader",
                "SentTimestamp",
                "SequenceNumber",
                "MessageGroupId",
                "SenderId",
                "MessageDeduplicationId",
                "ApproximateFirstReceiveTimestamp",
            )
            if key in attributes
        },
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_message_ids(payload: Any, message_ids: set[str]) -> set[str]:
    """The ids a ReportBatchItemFailures response marks failed (all of them if it is invalid)."""
    if payload is None or payload == {}:
        return set()
    if not isinstance(payload, dict):
        return set(message_ids)
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return set(message_ids)  # Lambda treats a malformed answer as a failed batch
        failed.add(identifier)
    return failed


# --------------------------------------------------------------------------- API Gateway


@dataclass(frozen=True)
class Route:
    """One ``Type: Api`` event: an API, a path template and a method."""

    api: str
    function: str
    event: str
    path: str
    method: str

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(part for part in self.path.split("/") if part)

    @property
    def rank(self) -> tuple[int, ...]:
        """Static segments beat ``{param}``, which beats ``{proxy+}`` (API Gateway's order)."""
        return tuple(
            2 if s.endswith("+}") else 1 if s.startswith("{") else 0 for s in self.segments
        )

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        pattern = self.segments
        for index, part in enumerate(pattern):
            if part.startswith("{") and part.endswith("+}"):
                rest = segments[index:]
                if not rest:
                    return None
                params[part[1:-2]] = "/".join(rest)
                return params
            if index >= len(segments):
                return None
            if part.startswith("{") and part.endswith("}"):
                params[part[1:-1]] = segments[index]
            elif part != segments[index]:
                return None
        return params if len(segments) == len(pattern) else None


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    api_id: str
    stage: str
    binary_media_types: tuple[str, ...]
    routes: tuple[Route, ...]


class _Malformed(Exception):
    pass


def _media_type_matches(content_type: str, patterns: tuple[str, ...]) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    for pattern in patterns:
        pattern = pattern.replace("~1", "/").lower()
        if pattern in ("*/*", kind) or (pattern.endswith("/*") and kind.startswith(pattern[:-1])):
            return True
    return False


def proxy_response(payload: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda proxy integration result as HTTP; ``_Malformed`` if API Gateway would reject it."""
    allowed = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
    if not isinstance(payload, dict) or not set(payload) <= allowed:
        raise _Malformed(f"not a proxy result: {payload!r}"[:200])
    status = payload.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, (int, str)) or not str(status).isdigit():
        raise _Malformed(f"statusCode must be a number, got {status!r}")
    headers = _proxy_headers(payload)
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        raise _Malformed(f"body must be a string, got {type(body).__name__}")
    data = (body or "").encode()
    if payload.get("isBase64Encoded") and body:
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise _Malformed(f"body is not base64: {exc}") from exc
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return int(status), headers, data


def _proxy_headers(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """headers and multiValueHeaders merged; a pair given in both appears once."""
    single = payload.get("headers") or {}
    multi = payload.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise _Malformed("headers and multiValueHeaders must be mappings")
    headers: list[tuple[str, str]] = []
    for name, values in multi.items():
        if not isinstance(values, list):
            raise _Malformed(f"multiValueHeaders[{name!r}] must be a list")
        headers.extend((str(name), _text(v)) for v in values)
    present = {(name.lower(), value) for name, value in headers}
    for name, value in single.items():
        if isinstance(value, (dict, list)):
            raise _Malformed(f"headers[{name!r}] must be a scalar")
        if (str(name).lower(), _text(value)) not in present:
            headers.append((str(name), _text(value)))
    return headers


def _json_answer(status: int, message: str, extra: list[tuple[str, str]] | None = None) -> Any:
    body = json.dumps({"message": message}).encode()
    return status, [("Content-Type", "application/json"), *(extra or [])], body


class ApiGateway:
    """One REST API: routes requests to functions as payload v1.0 proxy events."""

    def __init__(self, spec: ApiSpec, wiring: LocalWiring) -> None:
        self.spec = spec
        self.wiring = wiring

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urlsplit(target)
        segments = tuple(unquote(part) for part in parts.path.split("/") if part)
        matches = [
            (route, params)
            for route in self.spec.routes
            if (params := route.match(segments)) is not None
        ]
        if not matches:
            return _json_answer(UNKNOWN_ROUTE_STATUS, "Missing Authentication Token")
        best = min(route.rank for route, _ in matches)
        matches = [(r, p) for r, p in matches if r.rank == best]
        chosen = next(((r, p) for r, p in matches if r.method == method.upper()), None)
        chosen = chosen or next(((r, p) for r, p in matches if r.method == "ANY"), None)
        if chosen is None:
            allowed = ", ".join(sorted({r.method for r, _ in matches}))
            return _json_answer(UNKNOWN_METHOD_STATUS, "Method Not Allowed", [("Allow", allowed)])
        route, params = chosen
        event, request_id = self.event(route, method, parts, params, headers, body, source_ip)
        result = self.wiring.invoke("api", f"{route.function}{route.event}", route.function, event)
        extra = [("x-amzn-RequestId", request_id)]
        if result.error is not None:
            return _json_answer(502, "Internal server error", extra)
        try:
            status, response_headers, data = proxy_response(result.payload)
        except _Malformed as exc:
            _log.warning("%s returned a malformed proxy response: %s", route.function, exc)
            return _json_answer(502, "Internal server error", extra)
        return status, [*response_headers, *extra], data

    def event(
        self,
        route: Route,
        method: str,
        parts: Any,
        params: dict[str, str],
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> tuple[dict[str, Any], str]:
        """The API Gateway REST proxy event (payload format 1.0)."""
        ctx = self.wiring.ctx
        multi_headers: dict[str, list[str]] = collections.defaultdict(list)
        for name, value in headers:
            multi_headers[name].append(value)
        single_headers = {name: values[-1] for name, values in multi_headers.items()}
        query = parse_qsl(parts.query, keep_blank_values=True)
        multi_query: dict[str, list[str]] = collections.defaultdict(list)
        for name, value in query:
            multi_query[name].append(value)
        lowered = {name.lower(): value for name, value in single_headers.items()}
        content_type = lowered.get("content-type", "")
        binary = bool(body) and _media_type_matches(content_type, self.spec.binary_media_types)
        text: str | None = None
        if body and not binary:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        if binary:
            text = base64.b64encode(body).decode()
        now = time.time()
        request_id = str(uuid.uuid4())
        api = self.spec
        event = {
            "resource": route.path,
            "path": parts.path,
            "httpMethod": method.upper(),
            "headers": single_headers or None,
            "multiValueHeaders": dict(multi_headers) or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": dict(multi_query) or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": hashlib.sha1(route.path.encode()).hexdigest()[:6],
                "resourcePath": route.path,
                "httpMethod": method.upper(),
                "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:12]).decode(),
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "path": f"/{api.stage}{parts.path}",
                "accountId": ctx.account_id,
                "protocol": "HTTP/1.1",
                "stage": api.stage,
                "domainPrefix": api.api_id,
                "requestTimeEpoch": int(now * 1000),
                "requestId": request_id,
                "identity": {
                    "cognitoIdentityPoolId": None,
                    "accountId": None,
                    "cognitoIdentityId": None,
                    "caller": None,
                    "sourceIp": source_ip,
                    "principalOrgId": None,
                    "accessKey": None,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                    "userArn": None,
                    "userAgent": lowered.get("user-agent"),
                    "user": None,
                },
                "domainName": lowered.get("host", "localhost"),
                "apiId": api.api_id,
            },
            "body": text,
            "isBase64Encoded": binary,
        }
        return event, request_id


class _ApiHttpServer(LocalHTTPServer):
    gateway: ApiGateway


class _ApiRequestHandler(BaseHTTPRequestHandler):
    server: _ApiHttpServer
    # One request per connection: nothing lingers on a keep-alive socket after stop().
    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, headers, data = self.server.gateway.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        except Exception:
            _log.exception("the local API failed on %s %s", self.command, self.path)
            status, headers, data = _json_answer(500, "Internal server error")
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("api: " + format, *args)


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True)
class TriggerRecord:
    """One delivery by the wiring (kept for inspection and tests)."""

    source: str  # "sqs" | "relay" | "schedule" | "manual" (trigger_schedule) | "api" | "graphql"
    trigger: str
    function: str
    event: Any
    result: InvocationResult
    at: float = field(default_factory=time.time)


class LocalWiring:
    """The triggers around the functions: SQS pollers, schedules, rule relays and the REST API.

    ``pool.ctx`` is the context that provisioning fills. ``schedule_interval`` replaces the
    time between scheduled runs (tests pass a fraction of a second for ``rate(1 minute)``);
    ``poll_wait_seconds`` is the SQS long-poll wait (short, so ``stop()`` is quick).
    """

    def __init__(
        self,
        template: Template,
        pool: FunctionPool,
        *,
        session: Any = None,
        endpoint_url: str,
        api_host: str = "127.0.0.1",
        api_port: int = 0,
        poll_wait_seconds: int = 1,
        schedule_interval: Callable[[ScheduleSpec], float] | None = None,
        history_size: int = 1000,
    ) -> None:
        self.template = template
        self.pool = pool
        self.ctx = pool.ctx
        if session is None:
            import boto3

            session = boto3.session.Session(
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name=self.ctx.region,
            )
        self.clients = AwsClients(session, endpoint_url, self.ctx.region)
        self.api_host = api_host
        self.api_port = api_port
        self.poll_wait_seconds = max(0, min(20, int(poll_wait_seconds)))
        self.schedule_interval = schedule_interval
        self.report: ProvisionReport | None = None
        self.history: collections.deque[TriggerRecord] = collections.deque(maxlen=history_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers: dict[str, tuple[_ApiHttpServer, threading.Thread]] = {}
        self._api_urls: dict[str, str] = {}
        self._started = False

    def __enter__(self) -> LocalWiring:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- provisioning

    def provision(self) -> ProvisionReport:
        self.report = provision(self.template, self.ctx, self.clients, create=True)
        for note in self.report.notes:
            _log.info("%s", note)
        return self.report

    # ---------------------------------------------------------------- discovery

    def queue_mappings(self) -> list[QueueMapping]:
        """SQS events of functions, explicit event source mappings, and rule relays."""
        mappings: list[QueueMapping] = []
        for function in self.template.functions.values():
            if not self.template.is_enabled(function.logical_id, self.ctx):
                continue
            for event in function.events.values():
                if event.type != "SQS":
                    continue
                path = f"Resources.{function.logical_id}.Properties.Events.{event.name}.Properties"
                props = resolve(event.properties, self.ctx, path) or {}
                mappings.append(
                    self._mapping(f"{function.logical_id}{event.name}", function.logical_id, props)
                )
        for resource in self.template.resources.values():
            if resource.type != "AWS::Lambda::EventSourceMapping":
                continue
            if not self.template.is_enabled(resource.logical_id, self.ctx):
                continue
            props = resolve(resource.properties, self.ctx, resource.path) or {}
            source = str(props.get("EventSourceArn", ""))
            if ":sqs:" not in source:
                continue
            props["Queue"] = source
            target = self.pool.logical_id(str(props.get("FunctionName")))
            mappings.append(self._mapping(resource.logical_id, target, props))
        for relay in (self.report.relays if self.report else {}).values():
            mappings.append(
                QueueMapping(
                    logical_id=relay.logical_id,
                    function=relay.function,
                    queue_arn=relay.queue_arn,
                    queue_url=relay.queue_url or self._queue_url(relay.queue_arn),
                    batch_size=1,
                    relay=True,
                    max_retries=relay.max_retries,
                    input=relay.input,
                )
            )
        return mappings

    def _mapping(self, logical_id: str, function: str, props: Mapping[str, Any]) -> QueueMapping:
        queue_arn = str(props.get("Queue"))
        types = props.get("FunctionResponseTypes") or []
        if props.get("FilterCriteria"):
            _log.warning("%s: FilterCriteria are not applied locally", logical_id)
        return QueueMapping(
            logical_id=logical_id,
            function=function,
            queue_arn=queue_arn,
            queue_url=self._queue_url(queue_arn),
            batch_size=int(props.get("BatchSize", 10)),
            batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures" in types,
            enabled=_text(props.get("Enabled", True)).lower() != "false",
        )

    def _queue_url(self, queue_arn: str) -> str:
        for entry in self.ctx.resources.values():
            if entry.get("Arn") == queue_arn and "QueueUrl" in entry:
                return str(entry["QueueUrl"])
        name = queue_arn.rsplit(":", 1)[-1]
        return str(self.clients("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    def schedules(self) -> dict[str, ScheduleSpec]:
        """Schedule events of functions and schedule rules that target functions."""
        specs: dict[str, ScheduleSpec] = {}
        for function in self.template.functions.values():
            if not self.template.is_enabled(function.logical_id, self.ctx):
                continue
            for event in function.events.values():
                if event.type not in ("Schedule", "ScheduleV2"):
                    continue
                path = f"Resources.{function.logical_id}.Properties.Events.{event.name}.Properties"
                props = resolve(event.properties, self.ctx, path) or {}
                logical_id = f"{function.logical_id}{event.name}"
                specs[logical_id] = ScheduleSpec(
                    logical_id=logical_id,
                    function=function.logical_id,
                    expression=str(props.get("Schedule") or props.get("ScheduleExpression")),
                    input=_constant_input(props.get("Input")),
                    enabled=props.get("Enabled", True) is not False
                    and props.get("State") != "DISABLED",
                    rule_arn=str(self.ctx.resources.get(logical_id, {}).get("Arn", "")),
                )
        for resource in self.template.resources.values():
            if (
                resource.type != "AWS::Events::Rule"
                or "ScheduleExpression" not in resource.properties
            ):
                continue
            if not self.template.is_enabled(resource.logical_id, self.ctx):
                continue
            props = resolve(resource.properties, self.ctx, resource.path) or {}
            for target in props.get("Targets") or []:
                try:
                    target_function = self.pool.logical_id(str(target.get("Arn")))
                except LookupError:
                    continue
                logical_id = resource.logical_id
                if logical_id in specs:
                    logical_id = f"{resource.logical_id}.{target.get('Id')}"
                specs[logical_id] = ScheduleSpec(
                    logical_id=logical_id,
                    function=target_function,
                    expression=str(props["ScheduleExpression"]),
                    input=_constant_input(target.get("Input")),
                    enabled=props.get("State", "ENABLED") != "DISABLED",
                    rule_arn=str(self.ctx.resources.get(resource.logical_id, {}).get("Arn", "")),
                )
        return specs

    def apis(self) -> dict[str, ApiSpec]:
        """The REST APIs: the implicit ServerlessRestApi and every AWS::Serverless::Api."""
        routes: dict[str, list[Route]] = collections.defaultdict(list)
        for function in self.template.functions.values():
            if not self.template.is_enabled(function.logical_id, self.ctx):
                continue
            for event in function.events.values():
                if event.type != "Api":
                    continue
                props = event.properties
                api = _ref_target(props.get("RestApiId")) or "ServerlessRestApi"
                path = f"Resources.{function.logical_id}.Properties.Events.{event.name}"
                routes[api].append(
                    Route(
                        api=api,
                        function=function.logical_id,
                        event=event.name,
                        path=str(resolve(props.get("Path"), self.ctx, f"{path}.Path")),
                        method=str(
                            resolve(props.get("Method"), self.ctx, f"{path}.Method")
                        ).upper(),
                    )
                )
        global_api = self.template.globals.get("Api") or {}
        specs: dict[str, ApiSpec] = {}
        for api, api_routes in routes.items():
            resource = self.template.resources.get(api)
            props = dict(global_api)
            if resource is not None:
                props.update(resource.properties)
            stage = resolve(props.get("StageName"), self.ctx) or "Prod"
            binary = resolve(props.get("BinaryMediaTypes"), self.ctx) or []
            entry = self.ctx.resources.get(api) or {}
            specs[api] = ApiSpec(
                logical_id=api,
                api_id=str(entry.get("Ref") or _api_id(self.ctx, api)),
                stage=str(stage),
                binary_media_types=tuple(str(b) for b in binary),
                routes=tuple(api_routes),
            )
        return specs

    # ---------------------------------------------------------------- running

    def start(self) -> None:
        """Provision (once) and start the pollers, the schedules and the API servers."""
        if self._started:
            return
        if self.report is None:
            self.provision()
        self._stop.clear()
        for mapping in self.queue_mappings():
            if mapping.enabled:
                self._thread(
                    f"sqs-{mapping.logical_id}", self._poll, mapping, self.clients.new("sqs")
                )
        for spec in self.schedules().values():
            if spec.enabled:
                try:
                    self._interval(spec)
                except ValueError as exc:
                    _log.warning("%s does not run periodically: %s", spec.logical_id, exc)
                    continue
                self._thread(f"schedule-{spec.logical_id}", self._run_schedule, spec)
        for api in self.apis().values():
            server = _ApiHttpServer((self.api_host, self.api_port), _ApiRequestHandler)
            server.gateway = ApiGateway(api, self)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"api-{api.logical_id}",
                daemon=True,
            )
            thread.start()
            host, port = server.server_address[:2]
            self._servers[api.logical_id] = (server, thread)
            self._api_urls[api.logical_id] = f"http://{host!s}:{port}"
        self._started = True

    def stop(self) -> None:
        """Stop every thread and server, and free the ports."""
        self._stop.set()
        for server, thread in self._servers.values():
            server.shutdown()
            server.server_close()
            thread.join(5)
        self._servers.clear()
        self._api_urls.clear()
        for thread in self._threads:
            thread.join(self.poll_wait_seconds + 10)
        self._threads.clear()
        self._started = False

    @property
    def api_urls(self) -> dict[str, str]:
        return dict(self._api_urls)

    @property
    def api_url(self) -> str | None:
        """The base URL of the implicit API (or of the only API)."""
        if "ServerlessRestApi" in self._api_urls:
            return self._api_urls["ServerlessRestApi"]
        return next(iter(self._api_urls.values()), None)

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def invoke(self, source: str, trigger: str, function: str, event: Any) -> InvocationResult:
        """Invoke and record; a failure to start the function becomes an error result."""
        try:
            result = self.pool.invoke(function, event)
        except Exception as exc:
            _log.exception("%s could not invoke %s", trigger, function)
            result = InvocationResult(
                None, error_shape(type(exc).__name__, str(exc)), False, None, 0.0, ""
            )
        self.history.append(TriggerRecord(source, trigger, function, event, result))
        if result.error is not None:
            _log.info("%s → %s failed: %s", trigger, function, result.error.get("errorMessage"))
        return result

    def records(self, source: str | None = None, trigger: str | None = None) -> list[TriggerRecord]:
        return [
            r
            for r in list(self.history)
            if (source is None or r.source == source) and (trigger is None or r.trigger == trigger)
        ]

    # ---------------------------------------------------------------- SQS

    def _poll(self, mapping: QueueMapping, sqs: Any) -> None:
        """Receive and deliver until stopped, backing off while whole batches fail.

        Lambda backs off an SQS event source mapping whose function fails, reducing its
        concurrency until batches go through again. With one poller here, backing off is
        waiting: after a batch of which nothing went through, ``SQS_BACKOFF_FIRST_S``, doubling
        up to ``SQS_BACKOFF_MAX_S``, and no wait once one goes through. Meanwhile new messages
        wait on the queue, not in its visibility timeout.
        """
        failed_in_a_row = 0
        while not self._stop.is_set():
            try:
                messages = self._receive(mapping, sqs)
                if messages:
                    if mapping.relay:
                        self._relay(mapping, messages, sqs)
                    elif self._deliver(mapping, messages, sqs):
                        failed_in_a_row = 0
                    else:
                        failed_in_a_row += 1
                        self._stop.wait(sqs_backoff_s(failed_in_a_row))
            except Exception:
                if self._stop.is_set():
                    return
                _log.exception("%s: polling %s failed", mapping.logical_id, mapping.queue_url)
                self._stop.wait(1.0)

    def _receive(self, mapping: QueueMapping, sqs: Any) -> list[dict[str, Any]]:
        """Up to BatchSize messages, gathering for at most the batching window."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + mapping.batching_window_s
        wait = self.poll_wait_seconds
        while len(messages) < mapping.batch_size and not self._stop.is_set():
            answer = sqs.receive_message(
                QueueUrl=mapping.queue_url,
                MaxNumberOfMessages=min(10, mapping.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages.extend(answer.get("Messages") or [])
            if not messages or time.monotonic() >= deadline:
                break
            wait = 0 if not answer.get("Messages") else wait
            if not answer.get("Messages"):
                self._stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        return messages

    def _deliver(self, mapping: QueueMapping, messages: list[dict[str, Any]], sqs: Any) -> bool:
        """Invoke the function on a batch and delete what it handled; False if nothing was."""
        event = {"Records": [sqs_record(m, mapping.queue_arn, self.ctx.region) for m in messages]}
        result = self.invoke("sqs", mapping.logical_id, mapping.function, event)
        if result.error is not None:
            return False  # all of them come back after the visibility timeout
        done = messages
        if mapping.report_batch_item_failures:
            failed = failed_message_ids(result.payload, {m["MessageId"] for m in messages})
            done = [m for m in messages if m["MessageId"] not in failed]
        _delete(sqs, mapping.queue_url, done)
        return bool(done)

    def _relay(self, mapping: QueueMapping, messages: list[dict[str, Any]], sqs: Any) -> None:
        """Asynchronous invocation: retried up to MaximumRetryAttempts, then dropped."""
        for message in messages:
            try:
                event = json.loads(message.get("Body") or "null")
            except json.JSONDecodeError:
                event = message.get("Body")
            if isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
                _delete(sqs, mapping.queue_url, [message])
                continue
            if mapping.input is not None:
                event = mapping.input
            result = self.invoke("relay", mapping.logical_id, mapping.function, event)
            attempts = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
            if result.error is None or attempts > mapping.max_retries:
                _delete(sqs, mapping.queue_url, [message])

    # ---------------------------------------------------------------- schedules

    def _interval(self, spec: ScheduleSpec) -> float:
        if self.schedule_interval is not None:
            return float(self.schedule_interval(spec))
        return spec.interval()

    def _run_schedule(self, spec: ScheduleSpec) -> None:
        while not self._stop.wait(self._interval(spec)):
            self.invoke("schedule", spec.logical_id, spec.function, scheduled_event(spec, self.ctx))

    def trigger_schedule(self, logical_id: str) -> InvocationResult:
        """Run a schedule now (by its rule's logical id, its event name or its function)."""
        specs = self.schedules()
        spec = specs.get(logical_id)
        if spec is None:
            candidates = [
                s
                for s in specs.values()
                if s.function == logical_id or s.logical_id == f"{s.function}{logical_id}"
            ]
            if len(candidates) != 1:
                known = ", ".join(sorted(specs)) or "none"
                raise LookupError(f"no single schedule {logical_id!r} (schedules: {known})")
            spec = candidates[0]
        return self.invoke(
            "manual", spec.logical_id, spec.function, scheduled_event(spec, self.ctx)
        )


def _constant_input(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


SQS_BACKOFF_FIRST_S = 1.0
SQS_BACKOFF_MAX_S = 8.0


def sqs_backoff_s(failed_in_a_row: int) -> float:
    """How long an SQS poller waits after that many batches in a row of which none went through."""
    if failed_in_a_row < 1:
        return 0.0
    return min(SQS_BACKOFF_MAX_S, SQS_BACKOFF_FIRST_S * 2 ** min(failed_in_a_row - 1, 16))


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ],
        )
