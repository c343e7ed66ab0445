"""The SAM template as the local stack reads it: tags, Globals, functions and intrinsics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tweetgen_local.template import (
    LayerSpec,
    ResolveContext,
    ResolveError,
    Template,
    TemplateError,
    load_yaml,
    merge_globals,
    references,
    resolve,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "local_stack"

EVERY_TAG = """
Ref: !Ref Bucket
SubText: !Sub "arn:${AWS::Partition}:s3:::${Bucket}/*"
SubVars: !Sub
  - "${Name}-${AWS::Region}"
  - Name: !Ref Stage
GetAttDotted: !GetAtt Queue.Arn
GetAttNested: !GetAtt Stack.Outputs.Url
GetAttList: !GetAtt [Queue, QueueName]
Join: !Join [",", [a, !Ref Stage]]
If: !If [IsProd, big, small]
Select: !Select [1, !Split [",", "a,b,c"]]
Equals: !Equals [!Ref Stage, prod]
Not: !Not [!Condition IsProd]
And: !And [!Condition IsProd, !Equals [a, a]]
Or: !Or [!Condition IsProd, !Equals [a, b]]
FindInMap: !FindInMap [Sizes, !Ref Stage, Memory]
ImportValue: !ImportValue shared-vpc
Condition: !Condition IsProd
GetAZs: !GetAZs ""
Base64: !Base64 hello
Cidr: !Cidr ["10.0.0.0/16", 2, 8]
Date: 2010-09-09
"""


def test_every_short_tag_becomes_its_long_form() -> None:
    doc = load_yaml(EVERY_TAG)
    assert doc == {
        "Ref": {"Ref": "Bucket"},
        "SubText": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}/*"},
        "SubVars": {"Fn::Sub": ["${Name}-${AWS::Region}", {"Name": {"Ref": "Stage"}}]},
        "GetAttDotted": {"Fn::GetAtt": ["Queue", "Arn"]},
        "GetAttNested": {"Fn::GetAtt": ["Stack", "Outputs.Url"]},
        "GetAttList": {"Fn::GetAtt": ["Queue", "QueueName"]},
        "Join": {"Fn::Join": [",", ["a", {"Ref": "Stage"}]]},
        "If": {"Fn::If": ["IsProd", "big", "small"]},
        "Select": {"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]},
        "Equals": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "Not": {"Fn::Not": [{"Condition": "IsProd"}]},
        "And": {"Fn::And": [{"Condition": "IsProd"}, {"Fn::Equals": ["a", "a"]}]},
        "Or": {"Fn::Or": [{"Condition": "IsProd"}, {"Fn::Equals": ["a", "b"]}]},
        "FindInMap": {"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "Memory"]},
        "ImportValue": {"Fn::ImportValue": "shared-vpc"},
        "Condition": {"Condition": "IsProd"},
        "GetAZs": {"Fn::GetAZs": ""},
        "Base64": {"Fn::Base64": "hello"},
        "Cidr": {"Fn::Cidr": ["10.0.0.0/16", 2, 8]},
        "Date": "2010-09-09",  # CloudFormation reads dates as text
    }


def test_the_global_yaml_loader_is_left_alone() -> None:
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("a: !Ref B")
    assert yaml.safe_load("d: 2010-09-09")["d"].year == 2010


def test_unknown_tags_are_rejected() -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: !NotATag b")


def _ctx(**resources: dict[str, Any]) -> ResolveContext:
    ctx = ResolveContext(
        parameters={"Stage": "prod", "Subnets": ["a", "b"]},
        region="eu-west-1",
        stack_name="demo",
        conditions={
            "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
            "IsDev": {"Fn::Not": [{"Condition": "IsProd"}]},
        },
        mappings={"Sizes": {"prod": {"Memory": 1024}, "dev": {"Memory": 128}}},
        imports={"shared-vpc": "vpc-123"},
    )
    for logical_id, attributes in resources.items():
        ctx.resources[logical_id] = attributes
    return ctx


def test_intrinsics_resolve_against_the_context() -> None:
    ctx = _ctx(
        Bucket={"Ref": "demo-bucket", "Arn": "arn:aws:s3:::demo-bucket"},
        Queue={"Ref": "https://q", "Arn": "arn:aws:sqs:eu-west-1:123456789012:q", "QueueName": "q"},
        Stack={"Ref": "s", "Outputs.Url": "https://x"},
    )
    doc = load_yaml(EVERY_TAG)
    doc.pop("Date")
    assert resolve(doc, ctx) == {
        "Ref": "demo-bucket",
        "SubText": "arn:aws:s3:::demo-bucket/*",
        "SubVars": "prod-eu-west-1",
        "GetAttDotted": "arn:aws:sqs:eu-west-1:123456789012:q",
        "GetAttNested": "https://x",
        "GetAttList": "q",
        "Join": "a,prod",
        "If": "big",
        "Select": "b",
        "Equals": True,
        "Not": False,
        "And": True,
        "Or": True,
        "FindInMap": 1024,
        "ImportValue": "vpc-123",
        "Condition": True,
        "GetAZs": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
        "Base64": "aGVsbG8=",
        "Cidr": ["10.0.0.0/24", "10.0.1.0/24"],
    }


def test_sub_forms_pseudo_parameters_and_escapes() -> None:
    ctx = _ctx(Api={"Ref": "abc123"})
    text = (
        "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${!Literal}/${AWS::AccountId}"
    )
    assert resolve({"Fn::Sub": text}, ctx) == (
        "https://abc123.execute-api.eu-west-1.amazonaws.com/${Literal}/123456789012"
    )
    assert resolve({"Fn::Sub": ["${A}-${AWS::StackName}", {"A": {"Ref": "Stage"}}]}, ctx) == (
        "prod-demo"
    )
    assert resolve({"Ref": "AWS::Partition"}, ctx) == "aws"
    assert resolve({"Fn::Join": ["|", {"Ref": "Subnets"}]}, ctx) == "a|b"
    assert resolve({"Fn::ToJsonString": {"a": [1, {"Ref": "Stage"}]}}, ctx) == '{"a":[1,"prod"]}'


def test_no_value_removes_the_key_or_the_item() -> None:
    ctx = _ctx()
    value = {
        "Keep": 1,
        "Drop": {"Fn::If": ["IsDev", "x", {"Ref": "AWS::NoValue"}]},
        "List": ["a", {"Ref": "AWS::NoValue"}, "b"],
    }
    assert resolve(value, ctx) == {"Keep": 1, "List": ["a", "b"]}


def test_find_in_map_default_and_iam_condition_blocks_are_not_intrinsics() -> None:
    ctx = _ctx()
    assert resolve({"Fn::FindInMap": ["Sizes", "test", "Memory", {"DefaultValue": 64}]}, ctx) == 64
    statement = {"Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}
    assert resolve(statement, ctx) == {
        "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    }


def test_unresolvable_references_name_the_resource_and_the_path() -> None:
    ctx = _ctx(Queue={"Ref": "https://q", "Arn": "arn:q"})
    path = "Resources.Fn.Properties.Environment.Variables.QUEUE_URL"
    with pytest.raises(ResolveError) as missing:
        resolve({"Ref": "FeedbackQueue"}, ctx, path)
    assert missing.value.reference == "FeedbackQueue"
    assert missing.value.path.startswith(path)
    assert "FeedbackQueue" in str(missing.value) and path in str(missing.value)

    with pytest.raises(ResolveError, match=r"'Secret' is not provisioned"):
        resolve({"Fn::GetAtt": ["Secret", "Arn"]}, ctx, path)
    with pytest.raises(ResolveError, match=r"no attribute 'Url' \(known: Arn\)"):
        resolve({"Fn::Sub": "${Queue.Url}"}, ctx, path)
    with pytest.raises(ResolveError, match="unknown condition 'Nope'"):
        resolve({"Fn::If": ["Nope", 1, 2]}, ctx, path)
    with pytest.raises(ResolveError, match="no stack exports"):
        resolve({"Fn::ImportValue": "other"}, ctx, path)
    with pytest.raises(ResolveError, match=r"Join\[1\]\[0\]"):
        resolve({"Fn::Join": [",", [{"Ref": "Missing"}]]}, ctx, path)


def test_references_lists_what_a_value_points_at() -> None:
    value = load_yaml(
        """
        A: !Ref Queue
        B: !GetAtt Bucket.Arn
        C: !Sub "${Topic.TopicName}-${AWS::Region}-${Local}-${!Skip}"
        D: !Sub ["${Local}", {Local: !Ref Param}]
        """
    )
    assert references(value) == {"Queue", "Bucket", "Topic", "AWS::Region", "Local", "Param"}


def test_globals_merge_like_sam() -> None:
    merged = merge_globals(
        {
            "Timeout": 5,
            "Layers": ["L1"],
            "Environment": {"Variables": {"A": "global", "B": "global"}},
            "Tags": {"Ref": "GlobalTags"},
        },
        {
            "Timeout": 9,
            "Layers": ["L2"],
            "Environment": {"Variables": {"B": "local", "C": "local"}},
            "Tags": {"team": "ml"},
        },
    )
    assert merged == {
        "Timeout": 9,
        "Layers": ["L1", "L2"],
        "Environment": {"Variables": {"A": "global", "B": "local", "C": "local"}},
        "Tags": {"team": "ml"},  # an intrinsic merges as a scalar: local wins
    }


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load(FIXTURE / "template.yaml")


def test_functions_get_their_settings_from_globals_and_their_own(template: Template) -> None:
    probe = template.function("ProbeFunction")
    other = template.function("OtherProbeFunction")
    assert probe.handler == "app.lambda_handler" and probe.runtime == "python3.11"
    assert probe.code_uri == FIXTURE / "functions" / "probe"
    assert (probe.timeout, probe.memory_size) == (5, 256)
    assert (other.timeout, other.memory_size) == (1, 128)
    assert [layer.logical_id for layer in probe.layers] == ["CommonLayer"]
    assert probe.layers[0].import_paths("python3.11") == [FIXTURE / "layers" / "common"]
    assert set(other.environment) == {"STAGE", "LOG_LEVEL", "POWERTOOLS_SERVICE_NAME", "OTHER"}
    assert other.environment["LOG_LEVEL"] == "DEBUG"
    assert probe.environment["LOG_LEVEL"] == {"Ref": "LogLevel"}

    ctx = template.context(stack_name="unit")
    resolved = other.resolve(ctx)
    assert resolved.name == "unit-other-probe"
    assert resolved.arn == "arn:aws:lambda:us-east-1:123456789012:function:unit-other-probe"
    assert resolved.environment == {
        "STAGE": "dev",
        "LOG_LEVEL": "DEBUG",
        "POWERTOOLS_SERVICE_NAME": "fixture",
        "OTHER": "1",
    }
    assert resolved.import_paths == (FIXTURE / "functions" / "probe", FIXTURE / "layers" / "common")
    assert (resolved.timeout, resolved.memory_size) == (1.0, 128)
    assert template.function("TickFunction").physical_name(ctx) == "unit-TickFunction"


def test_events_keep_their_type_and_properties(template: Template) -> None:
    events = template.function("ApiFunction").events
    assert events["GetItem"].type == "Api"
    assert events["GetItem"].properties == {"Path": "/items/{id}", "Method": "get"}
    consumer = template.function("ConsumerFunction").events["Work"]
    assert consumer.type == "SQS"
    assert consumer.properties["Queue"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert consumer.properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    tick = template.function("TickFunction").events
    assert {name: e.type for name, e in tick.items()} == {
        "EveryMinute": "Schedule",
        "Nightly": "Schedule",
    }
    assert template.function("WatcherFunction").events["Uploaded"].type == "EventBridgeRule"


def test_parameters_defaults_overrides_and_conditions(template: Template) -> None:
    assert template.parameter_values() == {"Stage": "dev", "LogLevel": "INFO"}
    ctx = template.context(parameter_overrides={"Stage": "prod"})
    assert ctx.parameters["Stage"] == "prod"
    assert ctx.condition("IsProd") is True
    env = template.function("ProbeFunction").environment
    assert resolve(env["ONLY_IN_PROD"], ctx) == "yes"
    assert resolve(env["ONLY_IN_PROD"], template.context()) is None
    with pytest.raises(TemplateError, match="not one of dev, prod"):
        template.parameter_values({"Stage": "qa"})
    with pytest.raises(TemplateError, match="unknown parameter"):
        template.parameter_values({"Nope": "x"})


def test_a_function_with_unprovisioned_references_says_which(template: Template) -> None:
    ctx = template.context()
    with pytest.raises(ResolveError) as error:
        template.function("ProbeFunction").resolve(ctx)
    assert error.value.path.startswith("Resources.ProbeFunction.Properties.Environment.Variables.")
    assert error.value.reference in {"WorkQueue", "ArtifactBucket", "DatabaseSecret"}


def test_layer_folders_as_sam_builds_them(tmp_path: Path) -> None:
    (tmp_path / "plain" / "python").mkdir(parents=True)
    built = LayerSpec("Built", tmp_path / "built", "python3.11", {})
    plain = LayerSpec("Plain", tmp_path / "plain", None, {})
    assert built.import_paths("python3.11") == [tmp_path / "built"]
    assert plain.import_paths("python3.11") == [tmp_path / "plain" / "python"]
    site = tmp_path / "plain" / "python" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    assert plain.import_paths("python3.11") == [site, tmp_path / "plain" / "python"]


def test_template_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read template"):
        Template.load(tmp_path / "missing.yaml")
    (tmp_path / "t.yaml").write_text("Resources:\n  Fn:\n    Properties: {}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"Resources\.Fn: no Type"):
        Template.load(tmp_path / "t.yaml")
    with pytest.raises(TemplateError, match="no function 'Nope'"):
        Template.load(FIXTURE / "template.yaml").function("Nope")
