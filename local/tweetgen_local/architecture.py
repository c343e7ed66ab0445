"""The architecture diagram, drawn from ``template.yaml`` (a Mermaid flowchart).

Nodes are the template's main resources (functions, queues, the state machine, APIs, the
bucket, the database, secrets); edges are what the template wires: event sources (API routes,
queues, schedules, EventBridge rules, AppSync resolvers), the state machine's task functions,
and what each function's environment points at. ``make diagram`` rewrites the block between
the markers in README.md; a unit test fails when that block is out of date.

    python -m tweetgen_local.architecture [--template template.yaml] [--write README.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tweetgen_local.template import Template, references

__all__ = [
    "BEGIN",
    "CONFIG_BEGIN",
    "CONFIG_END",
    "END",
    "configuration",
    "mermaid",
    "update_readme",
]

BEGIN = "<!-- BEGIN architecture (make diagram; generated from template.yaml) -->"
END = "<!-- END architecture -->"
CONFIG_BEGIN = "<!-- BEGIN configuration (make diagram; generated from template.yaml) -->"
CONFIG_END = "<!-- END configuration -->"

# Resource type → (shape, label prefix); other types are left out of the picture.
_SHAPES: dict[str, tuple[str, str]] = {
    "AWS::Serverless::Function": ("([{}])", "λ "),
    "AWS::Serverless::StateMachine": ("[[{}]]", "Step Functions: "),
    "AWS::SQS::Queue": ("[/{}/]", "SQS: "),
    "AWS::S3::Bucket": ("[({})]", "S3: "),
    "AWS::Serverless::Api": ("{{{{{}}}}}", "API Gateway: "),
    "AWS::AppSync::GraphQLApi": ("{{{{{}}}}}", "AppSync: "),
    "AWS::RDS::DBCluster": ("[({})]", "Aurora: "),
    "AWS::SecretsManager::Secret": ("[/{}/]", "Secret: "),
    "AWS::SageMaker::Endpoint": ("[{}]", "SageMaker: "),
}
_EXTERNAL = {
    "Endpoint": 'SageMaker[["SageMaker endpoint (variants lstm, gpt2)"]]',
    "Users": "Users((client))",
}


def _node(logical_id: str, resource_type: str) -> str:
    shape, prefix = _SHAPES[resource_type]
    return f"{logical_id}{shape.format(chr(34) + prefix + logical_id + chr(34))}"


Edge = tuple[str, str, str]


def _event_edges(logical_id: str, events: dict[str, Any], shown: set[str]) -> Iterable[Edge]:
    for name, event in events.items():
        kind = str(event.get("Type", ""))
        props = event.get("Properties") or {}
        sources = references(props) & shown
        label = f"{props.get('Method', '').upper()} {props.get('Path')}" if kind == "Api" else kind
        for source in sorted(sources):
            yield source, logical_id, label
        if kind == "Schedule":
            rate = props.get("Schedule")
            yield "Schedule", logical_id, rate if isinstance(rate, str) else name
        if kind in ("EventBridgeRule", "CloudWatchEvent") and not sources:
            yield "EventBridge", logical_id, name


def _resource_edges(
    logical_id: str, resource_type: str, props: dict[str, Any], shown: set[str]
) -> Iterable[Edge]:
    yield from _event_edges(logical_id, props.get("Events") or {}, shown)
    if resource_type == "AWS::Serverless::StateMachine":
        for target in sorted(references(props.get("DefinitionSubstitutions") or {}) & shown):
            yield logical_id, target, "task"
        yield logical_id, "Endpoint", "create / update"
    if resource_type == "AWS::Serverless::Function":
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        for target in sorted(references(variables) & shown):
            yield logical_id, target, ""
        if "ENDPOINT_NAME" in variables:
            yield logical_id, "Endpoint", ""


def _resolver_edges(template: Template, shown: set[str]) -> Iterable[Edge]:
    for resource in template.resources.values():
        if resource.type != "AWS::AppSync::Resolver":
            continue
        source_id = next(iter(references(resource.properties.get("DataSourceName"))), "")
        data_source = template.resources.get(source_id)
        api = next(iter(references(resource.properties.get("ApiId")) & shown), None)
        if data_source is None or api is None:
            continue
        for function in sorted(references(data_source.properties) & shown):
            if template.resources[function].type == "AWS::Serverless::Function":
                yield api, function, "resolvers"


def _edges(template: Template, shown: set[str]) -> Iterable[Edge]:
    for logical_id, resource in template.resources.items():
        if logical_id in shown:
            yield from _resource_edges(logical_id, resource.type, resource.properties, shown)
    yield from _resolver_edges(template, shown)


def mermaid(template: Template) -> str:
    """The flowchart, one line per node and edge, in template order (stable output)."""
    shown = {
        logical_id
        for logical_id, resource in template.resources.items()
        if resource.type in _SHAPES
    }
    lines = ["flowchart LR"]
    for logical_id, resource in template.resources.items():
        if logical_id in shown:
            lines.append(f"  {_node(logical_id, resource.type)}")
    entry = [
        ("Users", logical_id, "HTTPS")
        for logical_id, resource in template.resources.items()
        if resource.type in ("AWS::Serverless::Api", "AWS::AppSync::GraphQLApi")
    ]
    entry.append(("Users", "ArtifactBucket", "upload model.tar.gz"))
    edges = list(dict.fromkeys([*entry, *_edges(template, shown)]))
    used = {a for a, _, _ in edges} | {b for _, b, _ in edges}
    for name, node in _EXTERNAL.items():
        if name in used:
            lines.append(f"  {node}")
    if "Schedule" in used:
        lines.append('  Schedule(("schedule"))')
    if "EventBridge" in used:
        lines.append('  EventBridge(("EventBridge"))')
    for source, target, label in edges:
        source_id = "SageMaker" if source == "Endpoint" else source
        target_id = "SageMaker" if target == "Endpoint" else target
        text = re.sub(r"[\"|]", "", label)
        arrow = f"-->|{text}|" if text else "-->"
        lines.append(f"  {source_id} {arrow} {target_id}")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else _intrinsic(value)
    return " ".join(str(text).split()).replace("|", "\\|")


def _value_cell(value: Any) -> str:
    """An environment variable's value; plain text Markdown would read as emphasis
    (``__all__``) is shown as code."""
    if isinstance(value, str) and any(mark in value for mark in "_*"):
        return _cell(f"`{value}`")
    return _cell(value)


def _intrinsic(value: Any) -> str:
    """A short reading of an unresolved value: ``Ref X`` → ``X``, ``!GetAtt A.B`` → ``A.B``."""
    if isinstance(value, dict) and len(value) == 1:
        ((name, arg),) = value.items()
        if name == "Ref":
            return f"`{arg}`"
        if name == "Fn::GetAtt":
            return f"`{'.'.join(arg) if isinstance(arg, list) else arg}`"
        if name == "Fn::Sub":
            return f"`{arg if isinstance(arg, str) else arg[0]}`"
        return f"({name.removeprefix('Fn::')})"
    return "" if value is None else str(value)


def configuration(template: Template) -> str:
    """Markdown tables: every template parameter, and every function's environment variable."""
    lines = ["| parameter | default | what it sets |", "|---|---|---|"]
    for name, parameter in template.parameters.items():
        default = (
            ""
            if parameter.default is None
            else f"`{parameter.default}`"
            if parameter.default != ""
            else "(empty)"
        )
        lines.append(f"| `{name}` | {_cell(default)} | {_cell(parameter.description)} |")
    users: dict[str, dict[str, list[str]]] = {}
    for logical_id, function in template.functions.items():
        for variable, value in function.environment.items():
            users.setdefault(variable, {}).setdefault(_value_cell(value), []).append(logical_id)
    lines += ["", "| environment variable | value | functions |", "|---|---|---|"]
    for variable in sorted(users):
        for value, functions in users[variable].items():
            where = (
                "every function"
                if len(functions) == len(template.functions)
                else ", ".join(sorted(functions))
            )
            lines.append(f"| `{variable}` | {value} | {where} |")
    return "\n".join(lines) + "\n"


def _replace_block(text: str, begin: str, end: str, body: str, source: Path) -> str:
    if begin not in text or end not in text:
        raise ValueError(f"{source} has no {begin!r} ... {end!r} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def update_readme(readme: Path, diagram: str, config: str | None = None) -> bool:
    """Put ``diagram`` (and ``config``, when given) between their markers; True on a change."""
    text = readme.read_text(encoding="utf-8")
    updated = _replace_block(text, BEGIN, END, f"```mermaid\n{diagram}```\n", readme)
    if config is not None:
        updated = _replace_block(updated, CONFIG_BEGIN, CONFIG_END, config, readme)
    if updated == text:
        return False
    readme.write_text(updated, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--write", type=Path, help="rewrite the diagram block of this README")
    args = parser.parse_args(argv)
    template = Template.load(args.template)
    diagram = mermaid(template)
    if args.write is None:
        sys.stdout.write(diagram)
        return 0
    changed = update_readme(args.write, diagram, configuration(template))
    print(f"{args.write}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
