"""A SAM template read the way CloudFormation and SAM read it, for the docker-free local stack.

The local stack must run the handlers with exactly the settings that ``sam deploy`` gives them,
so everything it knows about a function (handler, code folder, layers, environment, events)
comes from ``template.yaml`` through this module: short-form tags become their long form,
``Globals.Function`` is merged into every function as SAM merges it, and intrinsic functions
are resolved against a :class:`ResolveContext` that provisioning fills with physical ids.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_STACK_NAME = "tweetgen"
DEFAULT_TIMEOUT_S = 3
DEFAULT_MEMORY_MB = 128

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
SERVERLESS_LAYER = "AWS::Serverless::LayerVersion"
LAMBDA_LAYER = "AWS::Lambda::LayerVersion"


class TemplateError(Exception):
    """The template cannot be read, or lacks what is asked of it."""


class ResolveError(TemplateError):
    """An intrinsic function could not be resolved; names the reference and where it sits."""

    def __init__(self, path: str, reason: str, reference: str | None = None) -> None:
        super().__init__(f"{path or '<value>'}: {reason}")
        self.path = path
        self.reason = reason
        self.reference = reference


# --------------------------------------------------------------------------- YAML


class CfnYamlLoader(yaml.SafeLoader):
    """A SafeLoader that knows CloudFormation's short-form tags.

    A subclass, so the global loader is untouched. Timestamps stay strings because
    CloudFormation reads ``AWSTemplateFormatVersion: 2010-09-09`` as text, not as a date.
    """


CfnYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

#: short tag → long-form key
SHORT_TAGS: dict[str, str] = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "Sub",
            "GetAtt",
            "Join",
            "If",
            "Select",
            "Split",
            "Equals",
            "Not",
            "And",
            "Or",
            "FindInMap",
            "ImportValue",
            "GetAZs",
            "Base64",
            "Cidr",
            "ToJsonString",
            "Length",
        )
    },
}


def _tag_constructor(long_name: str) -> Callable[[yaml.Loader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if long_name == "Fn::GetAtt" and isinstance(value, str):
            # "!GetAtt Res.Attr.Nested" is ["Res", "Attr.Nested"] in long form
            value = value.split(".", 1)
        return {long_name: value}

    return construct


for _short, _long in SHORT_TAGS.items():
    CfnYamlLoader.add_constructor(f"!{_short}", _tag_constructor(_long))


def load_yaml(text: str) -> Any:
    """Parse template text (YAML or JSON) into long-form CloudFormation."""
    return yaml.load(text, Loader=CfnYamlLoader)


# --------------------------------------------------------------------------- context


@dataclass
class ResolveContext:
    """What intrinsic functions resolve against.

    ``resources`` maps a logical id to ``{"Ref": value, attribute: value, ...}``; provisioning
    fills it with the physical ids that CloudFormation would return.
    """

    parameters: dict[str, Any] = field(default_factory=dict)
    region: str = DEFAULT_REGION
    account_id: str = ACCOUNT_ID
    stack_name: str = DEFAULT_STACK_NAME
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    conditions: Mapping[str, Any] = field(default_factory=dict)
    mappings: Mapping[str, Any] = field(default_factory=dict)
    imports: dict[str, Any] = field(default_factory=dict)
    _condition_values: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def stack_id(self) -> str:
        return (
            f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:"
            f"stack/{self.stack_name}/00000000-0000-4000-8000-000000000000"
        )

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account_id if account else ''}:{resource}"
        )

    def set_resource(self, logical_id: str, ref: Any, **attributes: Any) -> dict[str, Any]:
        entry = {"Ref": ref, **attributes}
        self.resources[logical_id] = entry
        return entry

    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::NotificationARNs": [],
        }
        return values.get(name, _MISSING)

    def condition(self, name: str, path: str = "") -> bool:
        """Evaluate a named condition once (conditions may refer to each other)."""
        if name in self._condition_values:
            return self._condition_values[name]
        if name not in self.conditions:
            raise ResolveError(path, f"unknown condition {name!r}", name)
        self._condition_values[name] = False  # a cycle reads as false rather than recursing
        value = _truth(_resolve(self.conditions[name], self, f"Conditions.{name}"))
        self._condition_values[name] = value
        return value


_MISSING = object()


class _NoValue:
    """``AWS::NoValue``: the property (or list item) is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ResolveError("", f"expected a boolean condition value, got {value!r}")


def _text(value: Any) -> str:
    """CloudFormation compares and substitutes scalars as strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def resolve(value: Any, ctx: ResolveContext, path: str = "") -> Any:
    """Resolve every intrinsic function in ``value``; ``AWS::NoValue`` at the top gives None.

    ``path`` names where the value sits in the template (``Resources.X.Properties.Y``) so an
    unresolvable reference says which resource and which property it breaks.
    """
    out = _resolve(value, ctx, path)
    return None if out is NO_VALUE else out


def _resolve(value: Any, ctx: ResolveContext, path: str) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            key, arg = next(iter(value.items()))
            handler = _INTRINSICS.get(key)
            if handler is not None and (key != "Condition" or isinstance(arg, str)):
                return handler(arg, ctx, _child(path, key))
        result = {}
        for key, item in value.items():
            resolved = _resolve(item, ctx, _child(path, str(key)))
            if resolved is not NO_VALUE:
                result[key] = resolved
        return result
    if isinstance(value, list):
        items = [_resolve(item, ctx, _child(path, i)) for i, item in enumerate(value)]
        return [item for item in items if item is not NO_VALUE]
    return value


def _args(arg: Any, count: int | tuple[int, ...], name: str, path: str) -> list[Any]:
    counts = (count,) if isinstance(count, int) else count
    if not isinstance(arg, list) or len(arg) not in counts:
        raise ResolveError(path, f"{name} takes a list of {' or '.join(map(str, counts))} items")
    return arg


def _ref(arg: Any, ctx: ResolveContext, path: str) -> Any:
    name = _resolve(arg, ctx, path)
    if not isinstance(name, str):
        raise ResolveError(path, f"Ref takes a name, got {name!r}")
    if name == "AWS::NoValue":
        return NO_VALUE
    pseudo = ctx.pseudo(name)
    if pseudo is not _MISSING:
        return pseudo
    if name in ctx.parameters:
        return ctx.parameters[name]
    entry = ctx.resources.get(name)
    if entry is not None and "Ref" in entry:
        return entry["Ref"]
    raise ResolveError(
        path,
        f"Ref {name!r} cannot be resolved: it is no parameter, pseudo parameter or "
        "provisioned resource",
        name,
    )


def _get_att(arg: Any, ctx: ResolveContext, path: str) -> Any:
    arg = _resolve(arg, ctx, path)
    if isinstance(arg, str):
        arg = arg.split(".", 1)
    if not isinstance(arg, list) or len(arg) != 2 or not all(isinstance(a, str) for a in arg):
        raise ResolveError(path, f"Fn::GetAtt takes [resource, attribute], got {arg!r}")
    logical_id, attribute = arg
    entry = ctx.resources.get(logical_id)
    if entry is None:
        raise ResolveError(
            path,
            f"Fn::GetAtt {logical_id}.{attribute} cannot be resolved: resource "
            f"{logical_id!r} is not provisioned",
            logical_id,
        )
    if attribute not in entry:
        known = ", ".join(sorted(k for k in entry if k != "Ref")) or "none"
        raise ResolveError(
            path,
            f"Fn::GetAtt {logical_id}.{attribute} cannot be resolved: resource "
            f"{logical_id!r} has no attribute {attribute!r} (known: {known})",
            logical_id,
        )
    return entry[attribute]


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _sub(arg: Any, ctx: ResolveContext, path: str) -> str:
    variables: dict[str, Any] = {}
    if isinstance(arg, list):
        template_text, raw_vars = _args(arg, 2, "Fn::Sub", path)
        if not isinstance(raw_vars, dict):
            raise ResolveError(path, "Fn::Sub variables must be a mapping")
        variables = {k: _resolve(v, ctx, _child(_child(path, 1), k)) for k, v in raw_vars.items()}
    else:
        template_text = arg
    if not isinstance(template_text, str):
        raise ResolveError(path, f"Fn::Sub takes a string, got {template_text!r}")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            value = variables[name]
        elif "." in name and ctx.pseudo(name) is _MISSING:
            value = _get_att(name.split(".", 1), ctx, path)
        else:
            value = _ref(name, ctx, path)
        if isinstance(value, (dict, list)) or value is NO_VALUE:
            raise ResolveError(path, f"Fn::Sub variable {name!r} is not a string: {value!r}", name)
        return _text(value)

    return _SUB_VARIABLE.sub(replace, template_text)


def _join(arg: Any, ctx: ResolveContext, path: str) -> str:
    delimiter, items = _args(arg, 2, "Fn::Join", path)
    values = _resolve(items, ctx, _child(path, 1))
    if not isinstance(values, list):
        raise ResolveError(path, f"Fn::Join takes a list of values, got {values!r}")
    return _text(delimiter).join(_text(v) for v in values)


def _select(arg: Any, ctx: ResolveContext, path: str) -> Any:
    index, items = _args(arg, 2, "Fn::Select", path)
    position = int(_text(_resolve(index, ctx, _child(path, 0))))
    values = _resolve(items, ctx, _child(path, 1))
    if not isinstance(values, list) or not 0 <= position < len(values):
        raise ResolveError(path, f"Fn::Select index {position} is outside {values!r}")
    return values[position]


def _split(arg: Any, ctx: ResolveContext, path: str) -> list[str]:
    delimiter, source = _args(arg, 2, "Fn::Split", path)
    return _text(_resolve(source, ctx, _child(path, 1))).split(_text(delimiter))


def _if(arg: Any, ctx: ResolveContext, path: str) -> Any:
    name, when_true, when_false = _args(arg, 3, "Fn::If", path)
    chosen = 1 if ctx.condition(name, path) else 2
    return _resolve(when_true if chosen == 1 else when_false, ctx, _child(path, chosen))


def _equals(arg: Any, ctx: ResolveContext, path: str) -> bool:
    left, right = _args(arg, 2, "Fn::Equals", path)
    resolved_left = _resolve(left, ctx, _child(path, 0))
    resolved_right = _resolve(right, ctx, _child(path, 1))
    if isinstance(resolved_left, (list, dict)) or isinstance(resolved_right, (list, dict)):
        return bool(resolved_left == resolved_right)
    return _text(resolved_left) == _text(resolved_right)


def _not(arg: Any, ctx: ResolveContext, path: str) -> bool:
    (item,) = _args(arg, 1, "Fn::Not", path)
    return not _truth(_resolve(item, ctx, _child(path, 0)))


def _and(arg: Any, ctx: ResolveContext, path: str) -> bool:
    items = _args(arg, tuple(range(2, 11)), "Fn::And", path)
    return all(_truth(_resolve(item, ctx, _child(path, i))) for i, item in enumerate(items))


def _or(arg: Any, ctx: ResolveContext, path: str) -> bool:
    items = _args(arg, tuple(range(2, 11)), "Fn::Or", path)
    return any(_truth(_resolve(item, ctx, _child(path, i))) for i, item in enumerate(items))


def _condition(arg: Any, ctx: ResolveContext, path: str) -> bool:
    return ctx.condition(arg, path)


def _find_in_map(arg: Any, ctx: ResolveContext, path: str) -> Any:
    items = _args(arg, (3, 4), "Fn::FindInMap", path)
    names = [_text(_resolve(item, ctx, _child(path, i))) for i, item in enumerate(items[:3])]
    try:
        return _resolve(ctx.mappings[names[0]][names[1]][names[2]], ctx, path)
    except (KeyError, TypeError):
        if len(items) == 4 and isinstance(items[3], dict) and "DefaultValue" in items[3]:
            return _resolve(items[3]["DefaultValue"], ctx, _child(path, 3))
        raise ResolveError(
            path, f"Fn::FindInMap: mapping {'.'.join(names)} does not exist", names[0]
        ) from None


def _import_value(arg: Any, ctx: ResolveContext, path: str) -> Any:
    name = _text(_resolve(arg, ctx, path))
    if name not in ctx.imports:
        raise ResolveError(
            path, f"Fn::ImportValue {name!r} cannot be resolved: no stack exports it here", name
        )
    return ctx.imports[name]


def _get_azs(arg: Any, ctx: ResolveContext, path: str) -> list[str]:
    region = _text(_resolve(arg, ctx, path)) or ctx.region
    return [f"{region}{zone}" for zone in "abc"]


def _base64(arg: Any, ctx: ResolveContext, path: str) -> str:
    return base64.b64encode(_text(_resolve(arg, ctx, path)).encode()).decode()


def _cidr(arg: Any, ctx: ResolveContext, path: str) -> list[str]:
    block, count, bits = (
        _resolve(item, ctx, _child(path, i))
        for i, item in enumerate(_args(arg, 3, "Fn::Cidr", path))
    )
    network = ipaddress.ip_network(_text(block), strict=False)
    prefix = network.max_prefixlen - int(_text(bits))
    if prefix < network.prefixlen:
        raise ResolveError(path, f"Fn::Cidr: {bits} bits do not fit in {block}")
    subnets = network.subnets(new_prefix=prefix)
    return [str(next(subnets)) for _ in range(int(_text(count)))]


def _to_json_string(arg: Any, ctx: ResolveContext, path: str) -> str:
    return json.dumps(_resolve(arg, ctx, path), separators=(",", ":"))


def _length(arg: Any, ctx: ResolveContext, path: str) -> int:
    value = _resolve(arg, ctx, path)
    if not isinstance(value, list):
        raise ResolveError(path, f"Fn::Length takes a list, got {value!r}")
    return len(value)


_INTRINSICS: dict[str, Callable[[Any, ResolveContext, str], Any]] = {
    "Ref": _ref,
    "Condition": _condition,
    "Fn::GetAtt": _get_att,
    "Fn::Sub": _sub,
    "Fn::Join": _join,
    "Fn::Select": _select,
    "Fn::Split": _split,
    "Fn::If": _if,
    "Fn::Equals": _equals,
    "Fn::Not": _not,
    "Fn::And": _and,
    "Fn::Or": _or,
    "Fn::FindInMap": _find_in_map,
    "Fn::ImportValue": _import_value,
    "Fn::GetAZs": _get_azs,
    "Fn::Base64": _base64,
    "Fn::Cidr": _cidr,
    "Fn::ToJsonString": _to_json_string,
    "Fn::Length": _length,
}


def is_intrinsic(value: Any) -> bool:
    """A one-key mapping whose key is an intrinsic function (SAM merges these as scalars)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _INTRINSICS


def references(value: Any) -> set[str]:
    """Logical ids (and parameter names) that ``value`` points at through Ref/GetAtt/Sub."""
    if isinstance(value, list):
        return set().union(*(references(item) for item in value))
    if not isinstance(value, dict):
        return set()
    if len(value) == 1:
        key, arg = next(iter(value.items()))
        if key == "Ref" and isinstance(arg, str):
            return {arg}
        if key == "Fn::GetAtt":
            target = arg.split(".", 1)[0] if isinstance(arg, str) else arg[0]
            return {target} if isinstance(target, str) else set()
        if key == "Fn::Sub":
            return _sub_references(arg)
    return set().union(*(references(item) for item in value.values()))


def _sub_references(arg: Any) -> set[str]:
    text = arg[0] if isinstance(arg, list) and arg else arg
    local = (
        set(arg[1])
        if isinstance(arg, list) and len(arg) > 1 and isinstance(arg[1], dict)
        else set()
    )
    found: set[str] = set()
    if isinstance(text, str):
        for name in _SUB_VARIABLE.findall(text):
            head = name.split(".", 1)[0].strip()
            if not name.startswith("!") and head not in local:
                found.add(head)
    if isinstance(arg, list):
        found |= references(arg[1:])
    return found


# --------------------------------------------------------------------------- Globals


def merge_globals(global_properties: Mapping[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's rule: maps merge key by key, lists are global + local, anything else local wins."""
    merged = copy.deepcopy(dict(global_properties))
    for key, value in local.items():
        merged[key] = _merge_value(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def _merge_value(global_value: Any, local_value: Any) -> Any:
    if is_intrinsic(global_value) or is_intrinsic(local_value):
        return copy.deepcopy(local_value)
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        return merge_globals(global_value, local_value)
    if isinstance(global_value, list) and isinstance(local_value, list):
        return copy.deepcopy(global_value) + copy.deepcopy(local_value)
    return copy.deepcopy(local_value)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any
    allowed_values: tuple[Any, ...] | None = None
    description: str = ""

    def value(self, raw: Any) -> Any:
        """The value ``Ref`` gives: text, or a list for the list types."""
        if raw is None:
            raise TemplateError(f"parameter {self.name!r} has no default and no value was given")
        if self.type == "CommaDelimitedList" or self.type.startswith("List<"):
            return [_text(v) for v in raw] if isinstance(raw, list) else _text(raw).split(",")
        text = _text(raw)
        if self.allowed_values is not None and text not in {_text(v) for v in self.allowed_values}:
            allowed = ", ".join(_text(v) for v in self.allowed_values)
            raise TemplateError(f"parameter {self.name!r}: {text!r} is not one of {allowed}")
        return text


@dataclass(frozen=True)
class Resource:
    logical_id: str
    type: str
    properties: dict[str, Any]
    condition: str | None = None
    depends_on: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"Resources.{self.logical_id}.Properties"


@dataclass(frozen=True)
class EventSpec:
    """One entry of a function's ``Events`` (Api, SQS, Schedule, EventBridgeRule, S3...)."""

    name: str
    type: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class LayerSpec:
    logical_id: str
    content_dir: Path | None
    build_method: str | None
    properties: dict[str, Any]

    def import_paths(self, runtime: str | None) -> list[Path]:
        """Where the layer's Python code is importable, as Lambda would see it under /opt.

        ``sam build`` with a Python BuildMethod copies ContentUri into ``python/`` of the layer,
        so the folder itself holds importable packages; without a BuildMethod the folder is
        zipped as it is and Lambda imports from its ``python/`` (and that folder's
        ``lib/pythonX.Y/site-packages``).
        """
        if self.content_dir is None:
            return []
        method = (self.build_method or "").lower()
        if method.startswith("python"):
            return [self.content_dir]
        python_dir = self.content_dir / "python"
        paths = [python_dir]
        if runtime and runtime.startswith("python"):
            paths.insert(0, python_dir / "lib" / runtime / "site-packages")
        existing = [p for p in paths if p.is_dir()]
        if method == "makefile" and not existing:
            return [self.content_dir]
        return existing


@dataclass(frozen=True)
class ResolvedFunction:
    """One function with every value resolved: what a worker process is started with."""

    logical_id: str
    name: str
    arn: str
    handler: str
    runtime: str | None
    code_dir: Path
    timeout: float
    memory_size: int
    import_paths: tuple[Path, ...]
    environment: dict[str, str]
    architectures: tuple[str, ...] = ("x86_64",)


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the template declares it (Globals merged, values still unresolved)."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    base_dir: Path
    layers: tuple[LayerSpec, ...] = ()
    external_layers: tuple[Any, ...] = ()
    condition: str | None = None

    @property
    def path(self) -> str:
        return f"Resources.{self.logical_id}.Properties"

    @property
    def handler(self) -> Any:
        return self.properties.get("Handler")

    @property
    def runtime(self) -> Any:
        return self.properties.get("Runtime")

    @property
    def code_uri(self) -> Path | None:
        """The code folder (relative CodeUri is relative to the template's folder)."""
        uri = self.properties.get("CodeUri", self.properties.get("Code"))
        if isinstance(uri, str) and not uri.startswith("s3://"):
            return (self.base_dir / uri).resolve()
        if uri is None and self.type == SERVERLESS_FUNCTION and "InlineCode" not in self.properties:
            return self.base_dir.resolve()  # SAM's default CodeUri is the template's folder
        return None

    @property
    def timeout(self) -> Any:
        return self.properties.get("Timeout", DEFAULT_TIMEOUT_S)

    @property
    def memory_size(self) -> Any:
        return self.properties.get("MemorySize", DEFAULT_MEMORY_MB)

    @property
    def environment(self) -> dict[str, Any]:
        env = self.properties.get("Environment") or {}
        variables = env.get("Variables") if isinstance(env, dict) else None
        return dict(variables or {})

    @property
    def events(self) -> dict[str, EventSpec]:
        raw = self.properties.get("Events") or {}
        return {
            name: EventSpec(name, str(body.get("Type", "")), dict(body.get("Properties") or {}))
            for name, body in raw.items()
            if isinstance(body, dict)
        }

    def physical_name(self, ctx: ResolveContext) -> str:
        name = resolve(self.properties.get("FunctionName"), ctx, f"{self.path}.FunctionName")
        return _text(name) if name else f"{ctx.stack_name}-{self.logical_id}"

    def arn(self, ctx: ResolveContext) -> str:
        return ctx.arn("lambda", f"function:{self.physical_name(ctx)}")

    def resolve(self, ctx: ResolveContext) -> ResolvedFunction:
        """Resolve every setting a worker needs; a clear error names what is missing."""
        path = self.path
        handler = resolve(self.handler, ctx, f"{path}.Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"{path}.Handler: expected module.function, got {handler!r}")
        code_dir = self.code_uri
        if code_dir is None:
            raise TemplateError(
                f"{path}.CodeUri: only a local folder can run locally, got "
                f"{self.properties.get('CodeUri', self.properties.get('Code'))!r}"
            )
        if not code_dir.is_dir():
            raise TemplateError(f"{path}.CodeUri: {code_dir} is not a folder")
        runtime = resolve(self.runtime, ctx, f"{path}.Runtime")
        environment: dict[str, str] = {}
        for name, raw in self.environment.items():
            value = resolve(raw, ctx, f"{path}.Environment.Variables.{name}")
            if value is None:
                continue
            if isinstance(value, (dict, list)):
                raise TemplateError(
                    f"{path}.Environment.Variables.{name}: a value must be text, got {value!r}"
                )
            environment[str(name)] = _text(value)
        import_paths = [code_dir]
        for layer in self.layers:
            import_paths.extend(layer.import_paths(runtime))
        architectures = resolve(self.properties.get("Architectures"), ctx) or ["x86_64"]
        return ResolvedFunction(
            logical_id=self.logical_id,
            name=self.physical_name(ctx),
            arn=self.arn(ctx),
            handler=handler,
            runtime=runtime,
            code_dir=code_dir,
            timeout=float(_text(resolve(self.timeout, ctx, f"{path}.Timeout"))),
            memory_size=int(_text(resolve(self.memory_size, ctx, f"{path}.MemorySize"))),
            import_paths=tuple(import_paths),
            environment=environment,
            architectures=tuple(architectures),
        )


class Template:
    """A loaded SAM template: parameters, conditions, resources, layers and functions."""

    def __init__(
        self,
        document: Mapping[str, Any],
        base_dir: Path,
        *,
        path: Path | None = None,
        parameter_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(document, Mapping) or not isinstance(document.get("Resources"), Mapping):
            raise TemplateError(f"{path or 'template'}: no Resources section")
        self.document = document
        self.base_dir = base_dir
        self.path = path
        self.parameter_overrides = dict(parameter_overrides or {})
        self.parameters = {
            name: Parameter(
                name=name,
                type=str(body.get("Type", "String")),
                default=body.get("Default"),
                allowed_values=tuple(body["AllowedValues"]) if "AllowedValues" in body else None,
                description=str(body.get("Description", "")),
            )
            for name, body in (document.get("Parameters") or {}).items()
        }
        self.conditions: dict[str, Any] = dict(document.get("Conditions") or {})
        self.mappings: dict[str, Any] = dict(document.get("Mappings") or {})
        self.globals: dict[str, Any] = dict(document.get("Globals") or {})
        self.outputs: dict[str, Any] = dict(document.get("Outputs") or {})
        self.resources: dict[str, Resource] = {}
        for logical_id, body in document["Resources"].items():
            if not isinstance(body, Mapping) or "Type" not in body:
                raise TemplateError(f"Resources.{logical_id}: no Type")
            depends = body.get("DependsOn") or ()
            self.resources[logical_id] = Resource(
                logical_id=logical_id,
                type=str(body["Type"]),
                properties=dict(body.get("Properties") or {}),
                condition=body.get("Condition"),
                depends_on=(depends,) if isinstance(depends, str) else tuple(depends),
                metadata=dict(body.get("Metadata") or {}),
            )
        self.layers = {
            r.logical_id: self._layer(r)
            for r in self.resources.values()
            if r.type in (SERVERLESS_LAYER, LAMBDA_LAYER)
        }
        self.functions = {
            r.logical_id: self._function(r)
            for r in self.resources.values()
            if r.type in (SERVERLESS_FUNCTION, LAMBDA_FUNCTION)
        }

    def global_environment(self) -> dict[str, str]:
        """The plain-text variables ``Globals`` gives every function (intrinsics left out)."""
        function = self.globals.get("Function") or {}
        variables = (function.get("Environment") or {}).get("Variables") or {}
        return {name: value for name, value in variables.items() if isinstance(value, str)}

    @classmethod
    def load(
        cls, path: str | Path, parameter_overrides: Mapping[str, Any] | None = None
    ) -> Template:
        template_path = Path(path)
        try:
            text = template_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read template {template_path}: {exc}") from exc
        try:
            document = load_yaml(text)
        except yaml.YAMLError as exc:
            raise TemplateError(f"{template_path}: not a valid template: {exc}") from exc
        return cls(
            document,
            template_path.resolve().parent,
            path=template_path,
            parameter_overrides=parameter_overrides,
        )

    def _layer(self, resource: Resource) -> LayerSpec:
        props = resource.properties
        uri = props.get("ContentUri", props.get("Content"))
        content_dir = (self.base_dir / uri).resolve() if isinstance(uri, str) else None
        build_method = (resource.metadata or {}).get("BuildMethod")
        return LayerSpec(resource.logical_id, content_dir, build_method, props)

    def _function(self, resource: Resource) -> FunctionSpec:
        properties = resource.properties
        if resource.type == SERVERLESS_FUNCTION:
            properties = merge_globals(self.globals.get("Function") or {}, properties)
        layers: list[LayerSpec] = []
        external: list[Any] = []
        for entry in properties.get("Layers") or []:
            target = entry.get("Ref") if isinstance(entry, dict) and len(entry) == 1 else None
            if isinstance(target, str) and target in self.layers:
                layers.append(self.layers[target])
            else:
                external.append(entry)
        return FunctionSpec(
            logical_id=resource.logical_id,
            type=resource.type,
            properties=properties,
            base_dir=self.base_dir,
            layers=tuple(layers),
            external_layers=tuple(external),
            condition=resource.condition,
        )

    def parameter_values(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Each parameter's value: the override if given, else its default."""
        given = {**self.parameter_overrides, **(overrides or {})}
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise TemplateError(f"unknown parameter(s): {', '.join(unknown)}")
        return {
            name: param.value(given.get(name, param.default))
            for name, param in self.parameters.items()
        }

    def context(
        self,
        *,
        region: str = DEFAULT_REGION,
        stack_name: str = DEFAULT_STACK_NAME,
        account_id: str = ACCOUNT_ID,
        parameter_overrides: Mapping[str, Any] | None = None,
    ) -> ResolveContext:
        """A fresh context with parameters, conditions and mappings; functions registered."""
        ctx = ResolveContext(
            parameters=self.parameter_values(parameter_overrides),
            region=region,
            account_id=account_id,
            stack_name=stack_name,
            conditions=self.conditions,
            mappings=self.mappings,
        )
        self.register_functions(ctx)
        return ctx

    def register_functions(self, ctx: ResolveContext) -> None:
        """Fill Ref (name) and Arn of every function and layer: known without provisioning."""
        for function in self.functions.values():
            if function.logical_id not in ctx.resources:
                ctx.set_resource(
                    function.logical_id, function.physical_name(ctx), Arn=function.arn(ctx)
                )
        for layer in self.layers.values():
            if layer.logical_id not in ctx.resources:
                name = resolve(layer.properties.get("LayerName"), ctx) or (
                    f"{ctx.stack_name}-{layer.logical_id}"
                )
                ctx.set_resource(layer.logical_id, ctx.arn("lambda", f"layer:{name}:1"))

    def is_enabled(self, logical_id: str, ctx: ResolveContext) -> bool:
        """False when the resource's Condition is false in this context."""
        resource = self.resources[logical_id]
        return resource.condition is None or ctx.condition(
            resource.condition, f"Resources.{logical_id}.Condition"
        )

    def function(self, logical_id: str) -> FunctionSpec:
        try:
            return self.functions[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise TemplateError(
                f"no function {logical_id!r} in the template (functions: {known})"
            ) from None
