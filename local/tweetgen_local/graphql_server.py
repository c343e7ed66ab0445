"""AppSync's GraphQL endpoint on the local stack: the template's schema, executed by graphql-core.

The schema is the file the template's ``AWS::AppSync::GraphQLSchema`` names (what ``sam
package`` uploads), with AppSync's built-in scalars (``AWSDateTime``, ``AWSJSON``...) and
authorisation directives (``@aws_api_key``, ``@aws_iam``...) added as AppSync knows them. Each
``AWS::AppSync::Resolver`` binds a root field to a data source; an ``AWS_LAMBDA`` data source
without mapping templates is a direct Lambda resolver, so the field is resolved by invoking that
function in its worker with the event AppSync sends (``arguments``, ``identity``, ``source``,
``request.headers``, ``info``, ``prev``, ``stash``), and its answer is the field's value.

Answers follow AppSync's: a failed invocation is an entry in ``errors`` with the function's
``errorType`` and ``errorMessage`` (the field is null); a document that does not parse or
validate is answered 200 with ``data: null`` and the reasons; a body that is not a GraphQL
request is answered 400 ``MalformedHttpRequestException``. The local stack checks no API key
and no IAM signature (``identity`` is null, as with an API key).

:class:`LocalWebServer` is the HTTP server: a table of path → handler, so other local pages
(the dashboard) can be added beside ``/graphql``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    SelectionSetNode,
    Source,
    StringValueNode,
    ValueNode,
    build_ast_schema,
    concat_ast,
    execute_sync,
    parse,
    print_ast,
    validate,
)
from tweetgen_local.functions import InvocationResult
from tweetgen_local.http_server import LocalHTTPServer
from tweetgen_local.template import ResolveContext, Template, TemplateError, resolve

__all__ = [
    "APPSYNC_SCALARS",
    "GRAPHQL_PATH",
    "FieldBinding",
    "GraphQLApiSpec",
    "GraphQLEndpoint",
    "GraphQLSetupError",
    "Invoker",
    "LambdaResolverError",
    "LocalWebServer",
    "WebRequest",
    "WebResponse",
    "appsync_error",
    "appsync_schema",
    "graphql_apis",
    "resolver_event",
    "serve_graphql",
]

_log = logging.getLogger(__name__)

GRAPHQL_PATH = "/graphql"
#: (function logical id, trigger name, event) → what the invocation gave.
Invoker = Callable[[str, str, dict[str, Any]], InvocationResult]


class GraphQLSetupError(TemplateError):
    """The template's GraphQL API cannot be served: names the resource and the reason."""


# --------------------------------------------------------------------------- the schema

APPSYNC_SCALARS = (
    "AWSDate",
    "AWSTime",
    "AWSDateTime",
    "AWSTimestamp",
    "AWSEmail",
    "AWSJSON",
    "AWSPhone",
    "AWSURL",
    "AWSIPAddress",
)
# AppSync's authorisation directives; a schema uses them without declaring them.
_APPSYNC_DIRECTIVES = {
    "aws_api_key": "directive @aws_api_key on OBJECT | FIELD_DEFINITION",
    "aws_iam": "directive @aws_iam on OBJECT | FIELD_DEFINITION",
    "aws_oidc": "directive @aws_oidc on OBJECT | FIELD_DEFINITION",
    "aws_lambda": "directive @aws_lambda on OBJECT | FIELD_DEFINITION",
    "aws_cognito_user_pools": (
        "directive @aws_cognito_user_pools(cognito_groups: [String]) on OBJECT | FIELD_DEFINITION"
    ),
    "aws_auth": "directive @aws_auth(cognito_groups: [String]) on FIELD_DEFINITION",
    "aws_subscribe": "directive @aws_subscribe(mutations: [String]) on FIELD_DEFINITION",
}


def _json_out(value: Any) -> str:
    """AWSJSON goes to the client as a JSON string, whatever the resolver returned."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            raise GraphQLError(
                f"AWSJSON cannot represent a string that is not JSON: {value!r}"
            ) from None
        return value
    return json.dumps(value, separators=(",", ":"))


def _json_in(value: Any) -> Any:
    if not isinstance(value, str):
        raise GraphQLError(f"AWSJSON takes a JSON string, got {value!r}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise GraphQLError(f"AWSJSON: not valid JSON ({exc})") from None


def _text_scalar(name: str, check: Callable[[str], object] | None = None) -> dict[str, Any]:
    def coerce(value: Any) -> str:
        if not isinstance(value, str):
            raise GraphQLError(f"{name} takes a string, got {value!r}")
        if check is not None:
            try:
                check(value)
            except ValueError:
                raise GraphQLError(f"{name} cannot represent {value!r}") from None
        return value

    def literal(node: ValueNode, _variables: Any = None) -> str:
        if not isinstance(node, StringValueNode):
            raise GraphQLError(f"{name} takes a string literal")
        return coerce(node.value)

    return {"serialize": coerce, "parse_value": coerce, "parse_literal": literal}


def _iso_datetime(text: str) -> object:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _json_literal(node: ValueNode, _variables: Any = None) -> Any:
    if not isinstance(node, StringValueNode):
        raise GraphQLError("AWSJSON takes a JSON string literal")
    return _json_in(node.value)


def _timestamp(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphQLError(f"AWSTimestamp takes whole seconds since the epoch, got {value!r}")
    return value


_SCALAR_BEHAVIOUR: dict[str, dict[str, Any]] = {
    "AWSJSON": {"serialize": _json_out, "parse_value": _json_in, "parse_literal": _json_literal},
    "AWSDateTime": _text_scalar("AWSDateTime", _iso_datetime),
    "AWSDate": _text_scalar("AWSDate", dt.date.fromisoformat),
    "AWSTime": _text_scalar("AWSTime", lambda t: dt.time.fromisoformat(t.replace("Z", ""))),
    "AWSTimestamp": {"serialize": _timestamp, "parse_value": _timestamp},
    **{name: _text_scalar(name) for name in ("AWSEmail", "AWSPhone", "AWSURL", "AWSIPAddress")},
}


def appsync_schema(sdl: str, source_name: str = "schema.graphql") -> GraphQLSchema:
    """The schema as AppSync reads it; :class:`GraphQLSetupError` says what is wrong with it."""
    try:
        document = parse(Source(sdl, source_name))
    except GraphQLSyntaxError as exc:
        raise GraphQLSetupError(f"{source_name}: {exc.message} {_where(exc)}") from None
    defined = {getattr(getattr(node, "name", None), "value", None) for node in document.definitions}
    builtins = [f"scalar {name}" for name in APPSYNC_SCALARS if name not in defined]
    builtins += [text for name, text in _APPSYNC_DIRECTIVES.items() if name not in defined]
    try:
        schema = build_ast_schema(concat_ast([document, parse("\n".join(builtins))]))
    except (GraphQLError, TypeError) as exc:
        raise GraphQLSetupError(f"{source_name}: {exc}") from None
    for name, behaviour in _SCALAR_BEHAVIOUR.items():
        scalar = schema.type_map.get(name)
        if isinstance(scalar, GraphQLScalarType):
            for attribute, function in behaviour.items():
                setattr(scalar, attribute, function)
    return schema


def _where(error: GraphQLError) -> str:
    locations = error.locations or []
    return ", ".join(f"(line {loc.line}, column {loc.column})" for loc in locations)


# --------------------------------------------------------------------------- the template


@dataclass(frozen=True)
class FieldBinding:
    """One ``AWS::AppSync::Resolver``: a root field and the function that resolves it."""

    type_name: str
    field_name: str
    resolver: str
    function: str | None = None
    #: Why the field cannot be resolved locally (a pipeline, a mapping template...).
    problem: str | None = None


@dataclass(frozen=True)
class GraphQLApiSpec:
    """One ``AWS::AppSync::GraphQLApi`` of the template with its schema and resolvers."""

    logical_id: str
    api_id: str
    schema_text: str
    schema_source: str
    bindings: tuple[FieldBinding, ...] = ()


def _of_type(template: Template, ctx: ResolveContext, kind: str) -> list[tuple[str, Any]]:
    found = []
    for logical_id, resource in template.resources.items():
        if resource.type == kind and template.is_enabled(logical_id, ctx):
            found.append((logical_id, resolve(resource.properties, ctx, resource.path) or {}))
    return found


def _schema_text(template: Template, logical_id: str, props: Mapping[str, Any]) -> tuple[str, str]:
    path = f"Resources.{logical_id}.Properties"
    if isinstance(props.get("Definition"), str):
        return props["Definition"], f"{logical_id}.Definition"
    location = props.get("DefinitionS3Location")
    if not isinstance(location, str) or not location:
        raise GraphQLSetupError(f"{path}: neither Definition nor DefinitionS3Location is given")
    if location.startswith("s3://"):
        raise GraphQLSetupError(
            f"{path}.DefinitionS3Location: {location} is in S3; locally the schema must be a "
            "file of the repository (sam package uploads it)"
        )
    file = template.base_dir / location
    try:
        return file.read_text(encoding="utf-8"), str(Path(location))
    except OSError as exc:
        raise GraphQLSetupError(f"{path}.DefinitionS3Location: cannot read {file}: {exc}") from None


def _binding(
    logical_id: str,
    props: Mapping[str, Any],
    data_sources: Mapping[str, Mapping[str, Any]],
    function_of: Callable[[str], str],
) -> FieldBinding:
    type_name, field_name = str(props.get("TypeName")), str(props.get("FieldName"))

    def unserved(problem: str) -> FieldBinding:
        return FieldBinding(type_name, field_name, logical_id, problem=f"{logical_id}: {problem}")

    if props.get("Kind") == "PIPELINE" or props.get("PipelineConfig"):
        return unserved("pipeline resolvers are not served locally")
    templates = [
        key
        for key in (
            "RequestMappingTemplate",
            "RequestMappingTemplateS3Location",
            "ResponseMappingTemplate",
            "ResponseMappingTemplateS3Location",
            "Code",
            "CodeS3Location",
        )
        if props.get(key)
    ]
    if templates:
        return unserved(f"{', '.join(templates)}: only direct Lambda resolvers are served locally")
    source_name = str(props.get("DataSourceName"))
    source = data_sources.get(source_name)
    if source is None:
        known = ", ".join(sorted(data_sources)) or "none"
        raise GraphQLSetupError(
            f"Resources.{logical_id}: no data source named {source_name!r} (data sources: {known})"
        )
    if source.get("Type") != "AWS_LAMBDA":
        return unserved(f"data source {source_name} is {source.get('Type')}, not AWS_LAMBDA")
    arn = str((source.get("LambdaConfig") or {}).get("LambdaFunctionArn", ""))
    try:
        function = function_of(arn)
    except LookupError as exc:
        raise GraphQLSetupError(f"data source {source_name}: {exc}") from None
    return FieldBinding(type_name, field_name, logical_id, function=function)


def graphql_apis(
    template: Template, ctx: ResolveContext, function_of: Callable[[str], str]
) -> list[GraphQLApiSpec]:
    """The template's GraphQL APIs; ``ctx`` must be provisioned (ids and ARNs resolve).

    ``function_of`` turns a function ARN into its logical id (``FunctionPool.logical_id``).
    """
    schemas = {
        str(props.get("ApiId")): (logical_id, props)
        for logical_id, props in _of_type(template, ctx, "AWS::AppSync::GraphQLSchema")
    }
    data_sources: dict[str, dict[str, Mapping[str, Any]]] = {}
    for _, props in _of_type(template, ctx, "AWS::AppSync::DataSource"):
        data_sources.setdefault(str(props.get("ApiId")), {})[str(props.get("Name"))] = props
    resolvers: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for logical_id, props in _of_type(template, ctx, "AWS::AppSync::Resolver"):
        resolvers.setdefault(str(props.get("ApiId")), []).append((logical_id, props))
    apis = []
    for logical_id, _ in _of_type(template, ctx, "AWS::AppSync::GraphQLApi"):
        api_id = str(ctx.resources.get(logical_id, {}).get("ApiId", ""))
        if api_id not in schemas:
            raise GraphQLSetupError(f"Resources.{logical_id}: no AWS::AppSync::GraphQLSchema")
        schema_id, schema_props = schemas[api_id]
        text, source = _schema_text(template, schema_id, schema_props)
        bindings = tuple(
            _binding(resolver_id, props, data_sources.get(api_id, {}), function_of)
            for resolver_id, props in resolvers.get(api_id, [])
        )
        apis.append(GraphQLApiSpec(logical_id, api_id, text, source, bindings))
    return apis


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class WebRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client: str

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in reversed(self.headers) if k.lower() == lowered), None)


@dataclass(frozen=True)
class WebResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
    ) -> WebResponse:
        return cls(status, json.dumps(payload).encode(), headers=tuple(headers))


Handler = Callable[[WebRequest], WebResponse]


@dataclass
class _Route:
    handler: Handler
    methods: tuple[str, ...]


class _HttpServer(LocalHTTPServer):
    site: LocalWebServer


class _RequestHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._answer(WebResponse.json(400, {"message": "Content-Length is not a length"}))
            return
        parts = urlsplit(self.path)
        request = WebRequest(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=tuple(self.headers.items()),
            body=self.rfile.read(length) if length else b"",
            client=self.client_address[0],
        )
        try:
            response = self.server.site.dispatch(request)
        except Exception:
            _log.exception("the local web server failed on %s %s", self.command, self.path)
            response = WebResponse.json(500, {"message": "Internal server error"})
        self._answer(response)

    def _answer(self, response: WebResponse) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("web: " + format, *args)


class LocalWebServer:
    """A small threaded HTTP server of exact paths: ``route("/graphql", handler, ...)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._routes: dict[str, _Route] = {}
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, path: str, handler: Handler, methods: Sequence[str] = ("GET",)) -> None:
        """Serve ``path`` (exactly; a trailing slash is ignored) with ``handler``."""
        self._routes[path.rstrip("/") or "/"] = _Route(handler, tuple(m.upper() for m in methods))

    @property
    def paths(self) -> list[str]:
        return list(self._routes)

    def dispatch(self, request: WebRequest) -> WebResponse:
        route = self._routes.get(request.path.rstrip("/") or "/")
        if route is None:
            return WebResponse.json(404, {"message": f"nothing is served at {request.path}"})
        if request.method not in route.methods:
            allowed = ", ".join(route.methods)
            return WebResponse.json(
                405,
                {"message": f"{request.method} is not allowed on {request.path} (use {allowed})"},
                [("Allow", allowed)],
            )
        return route.handler(request)

    def start(self) -> str:
        server = _HttpServer((self.host, self.port), _RequestHandler)
        server.site = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="web", daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the web server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None


# --------------------------------------------------------------------------- GraphQL


class LambdaResolverError(Exception):
    """A direct Lambda resolver's function failed: AppSync reports its error type and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass
class _Request:
    request_id: str
    headers: dict[str, str]
    variables: dict[str, Any]
    fragments: dict[str, FragmentDefinitionNode] = field(default_factory=dict)


_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Headers", "Content-Type, x-api-key, Authorization, X-Amz-Date"),
    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
)


def _malformed(message: str, headers: Sequence[tuple[str, str]]) -> WebResponse:
    error = {"message": message, "errorType": "MalformedHttpRequestException"}
    return WebResponse.json(400, {"errors": [error]}, headers)


def _locations(error: GraphQLError) -> list[dict[str, Any]] | None:
    if not error.locations:
        return None
    return [{"line": loc.line, "column": loc.column, "sourceName": None} for loc in error.locations]


def appsync_error(error: GraphQLError) -> dict[str, Any]:
    """One entry of ``errors`` as AppSync writes it."""
    original = error.original_error
    if error.path is None:  # the document did not parse or validate
        return {"path": None, "locations": _locations(error), "message": error.message}
    entry: dict[str, Any] = {"path": list(error.path), "data": None}
    if isinstance(original, LambdaResolverError):
        entry["errorType"] = original.error_type
    entry.update(errorInfo=None, locations=_locations(error), message=error.message)
    return entry


def _selection_list(
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    prefix: str = "",
) -> list[str]:
    """AppSync's ``selectionSetList``: every selected field as ``parent/child``, aliases by
    their alias, fragments expanded."""
    found: list[str] = []
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            name = (selection.alias or selection.name).value
            if name.startswith("__"):
                continue
            found.append(prefix + name)
            found.extend(_selection_list(selection.selection_set, fragments, f"{prefix}{name}/"))
        elif isinstance(selection, InlineFragmentNode):
            found.extend(_selection_list(selection.selection_set, fragments, prefix))
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                found.extend(_selection_list(fragment.selection_set, fragments, prefix))
    return list(dict.fromkeys(found))


def resolver_event(
    info: GraphQLResolveInfo, arguments: Mapping[str, Any], request: _Request
) -> dict[str, Any]:
    """The event AppSync sends a direct Lambda resolver (API key authorisation: no identity)."""
    selections = tuple(
        selection
        for node in info.field_nodes
        if node.selection_set is not None
        for selection in node.selection_set.selections
    )
    selection_set = SelectionSetNode(selections=selections) if selections else None
    return {
        "arguments": dict(arguments),
        "identity": None,
        "source": info.root_value,
        "request": {"headers": dict(request.headers), "domainName": None},
        "prev": None,
        "info": {
            "selectionSetList": _selection_list(selection_set, request.fragments),
            "selectionSetGraphQL": print_ast(selection_set) if selection_set else "",
            "fieldName": info.field_name,
            "parentTypeName": info.parent_type.name,
            "variables": dict(request.variables),
        },
        "stash": {},
    }


class GraphQLEndpoint:
    """One GraphQL API: its schema, its root fields bound to functions, and ``handle``."""

    def __init__(self, spec: GraphQLApiSpec, invoke: Invoker) -> None:
        self.spec = spec
        self.invoke = invoke
        self.schema = appsync_schema(spec.schema_text, spec.schema_source)
        self.bindings: dict[tuple[str, str], FieldBinding] = {}
        for binding in spec.bindings:
            parent = self.schema.type_map.get(binding.type_name)
            fields = getattr(parent, "fields", None)
            if not fields or binding.field_name not in fields:
                raise GraphQLSetupError(
                    f"Resources.{binding.resolver}: {spec.schema_source} has no field "
                    f"{binding.type_name}.{binding.field_name}"
                )
            key = (binding.type_name, binding.field_name)
            if key in self.bindings:
                raise GraphQLSetupError(
                    f"Resources.{binding.resolver}: {binding.type_name}.{binding.field_name} "
                    f"already has resolver {self.bindings[key].resolver}"
                )
            self.bindings[key] = binding
            fields[binding.field_name].resolve = self._resolver(binding)

    def _resolver(self, binding: FieldBinding) -> Callable[..., Any]:
        trigger = f"{binding.type_name}.{binding.field_name}"

        def resolve_field(_source: Any, info: GraphQLResolveInfo, **arguments: Any) -> Any:
            if binding.function is None:
                raise LambdaResolverError("NotServedLocally", str(binding.problem))
            event = resolver_event(info, arguments, info.context)
            result = self.invoke(binding.function, trigger, event)
            if result.error is not None:
                raise LambdaResolverError(
                    str(result.error.get("errorType") or "Lambda:Unhandled"),
                    str(result.error.get("errorMessage") or ""),
                )
            return result.payload

        return resolve_field

    def handle(self, request: WebRequest) -> WebResponse:
        request_id = str(uuid.uuid4())
        headers = (("x-amzn-RequestId", request_id), *_CORS)
        if request.method == "OPTIONS":
            return WebResponse(200, headers=headers)
        if not request.body.strip():
            return _malformed("Request body is empty.", headers)
        parsed = _graphql_request(request.body)
        if parsed is None:
            return _malformed("Unable to parse GraphQL query.", headers)
        query, variables, operation_name = parsed
        try:
            document = parse(query)
        except GraphQLSyntaxError as exc:
            return WebResponse.json(200, {"data": None, "errors": [appsync_error(exc)]}, headers)
        problems = validate(self.schema, document)
        if problems:
            errors = [appsync_error(problem) for problem in problems]
            return WebResponse.json(200, {"data": None, "errors": errors}, headers)
        return WebResponse.json(
            200, self.execute(document, variables, operation_name, request, request_id), headers
        )

    def execute(
        self,
        document: DocumentNode,
        variables: dict[str, Any],
        operation_name: str | None,
        request: WebRequest,
        request_id: str,
    ) -> dict[str, Any]:
        context = _Request(
            request_id=request_id,
            headers={name.lower(): value for name, value in request.headers},
            variables=variables,
            fragments={
                node.name.value: node
                for node in document.definitions
                if isinstance(node, FragmentDefinitionNode)
            },
        )
        result = execute_sync(
            self.schema,
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
        )
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [appsync_error(error) for error in result.errors]
        return answer


def _graphql_request(body: bytes) -> tuple[str, dict[str, Any], str | None] | None:
    """(query, variables, operationName) of a JSON body; None when it is not one."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    query, variables = payload.get("query"), payload.get("variables")
    operation_name = payload.get("operationName")
    if isinstance(variables, str):  # some clients send the variables as a JSON string
        try:
            variables = json.loads(variables) if variables.strip() else None
        except json.JSONDecodeError:
            return None
    if (
        not isinstance(query, str)
        or not query.strip()
        or not isinstance(variables, dict | None)
        or not isinstance(operation_name, str | None)
    ):
        return None
    return query, dict(variables or {}), operation_name


def serve_graphql(
    server: LocalWebServer,
    template: Template,
    ctx: ResolveContext,
    function_of: Callable[[str], str],
    invoke: Invoker,
) -> GraphQLEndpoint | None:
    """Route ``/graphql`` on ``server`` to the template's GraphQL API (None when it has none).

    A template with several GraphQL APIs gets the first one served; the others are logged.
    """
    apis = graphql_apis(template, ctx, function_of)
    if not apis:
        return None
    for other in apis[1:]:
        _log.warning(
            "%s is not served: only one GraphQL API (%s) is served locally",
            other.logical_id,
            apis[0].logical_id,
        )
    endpoint = GraphQLEndpoint(apis[0], invoke)
    server.route(GRAPHQL_PATH, endpoint.handle, methods=("POST", "OPTIONS"))
    return endpoint
