"""The template's custom resources, run as CloudFormation runs them, on the local stack.

For each ``Custom::*`` (or ``AWS::CloudFormation::CustomResource``) the function named by its
``ServiceToken`` is invoked in its worker with a real ``Create`` request, whose ``ResponseURL``
points at a local listener; the answer that the function PUTs there decides, as in
CloudFormation: ``FAILED`` stops the stack with the function's reason. So the database schema
is migrated by the same function, the same way, as in a deploy.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tweetgen_local.functions import FunctionPool
from tweetgen_local.http_server import LocalHTTPServer
from tweetgen_local.template import ResolveContext, Template, TemplateError, resolve

__all__ = ["CUSTOM_RESOURCE_TYPES", "CustomResourceFailed", "run_custom_resources"]

CUSTOM_RESOURCE_TYPES = ("AWS::CloudFormation::CustomResource",)


class CustomResourceFailed(TemplateError):
    """A custom resource answered FAILED, or never answered; names it and says why."""


def is_custom_resource(resource_type: str) -> bool:
    return resource_type.startswith("Custom::") or resource_type in CUSTOM_RESOURCE_TYPES


class _Answers(LocalHTTPServer):
    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _AnswerHandler)
        self.received: dict[str, dict[str, Any]] = {}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _AnswerHandler(BaseHTTPRequestHandler):
    server: _Answers

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            answer = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self.send_response(400)
            self.end_headers()
            return
        self.server.received[self.path.lstrip("/")] = answer
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def create_event(
    logical_id: str, resource_type: str, properties: dict[str, Any], ctx: ResolveContext, url: str
) -> dict[str, Any]:
    """The request CloudFormation sends a custom resource on stack creation."""
    request_id = str(uuid.uuid4())
    return {
        "RequestType": "Create",
        "ServiceToken": properties["ServiceToken"],
        "ResponseURL": f"{url}/{request_id}",
        "StackId": ctx.stack_id,
        "RequestId": request_id,
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type,
        "ResourceProperties": properties,
    }


def run_custom_resources(
    template: Template,
    ctx: ResolveContext,
    pool: FunctionPool,
    log: Callable[[str], None] = print,
    host: str = "127.0.0.1",
) -> dict[str, dict[str, Any]]:
    """Create every enabled custom resource in template order; returns their answers."""
    found = [
        resource
        for logical_id, resource in template.resources.items()
        if is_custom_resource(resource.type) and template.is_enabled(logical_id, ctx)
    ]
    if not found:
        return {}
    answers: dict[str, dict[str, Any]] = {}
    server = _Answers(host)
    thread = threading.Thread(target=server.serve_forever, name="custom-resources", daemon=True)
    thread.start()
    try:
        for resource in found:
            properties = resolve(resource.properties, ctx, resource.path)
            if not isinstance(properties, dict) or not properties.get("ServiceToken"):
                raise CustomResourceFailed(f"{resource.logical_id}: no ServiceToken")
            event = create_event(resource.logical_id, resource.type, properties, ctx, server.url)
            result = pool.invoke(str(properties["ServiceToken"]), event)
            answer = server.received.get(event["RequestId"])
            if answer is None:
                error = result.error or {}
                raise CustomResourceFailed(
                    f"{resource.logical_id} did not answer CloudFormation: "
                    f"{error.get('errorType', '')} {error.get('errorMessage', '')}".strip()
                )
            if answer.get("Status") != "SUCCESS":
                raise CustomResourceFailed(
                    f"{resource.logical_id} failed: {answer.get('Reason') or 'no reason given'}"
                )
            data = answer.get("Data") or {}
            ctx.resources[resource.logical_id] = {"Ref": answer.get("PhysicalResourceId"), **data}
            answers[resource.logical_id] = answer
            log(f"{resource.logical_id} ({resource.type}): {answer.get('Reason') or 'created'}")
    finally:
        server.shutdown()
        server.server_close()
    return answers
