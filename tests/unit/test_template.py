"""The SAM template as the local stack reads it: tags, Globals, functions and intrinsics."""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------- the AppSync API

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project() -> Template:
    return Template.load(REPO / "template.yaml")


def _of_type(template: Template, kind: str) -> dict[str, Any]:
    return {lid: r for lid, r in template.resources.items() if r.type == kind}


def _permissions(policies: list[Any]) -> set[str]:
    """A function's policies as (action, resource) pairs and SAM policy templates, as text."""
    found = set()
    for policy in policies:
        if "Statement" not in policy:
            found.add(json.dumps(policy, sort_keys=True))
            continue
        for statement in policy["Statement"]:
            actions = statement["Action"]
            resources = statement["Resource"]
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in resources if isinstance(resources, list) else [resources]:
                    found.add(json.dumps([statement["Effect"], action, resource], sort_keys=True))
    return found


def test_every_root_field_of_the_schema_has_one_direct_lambda_resolver(project: Template) -> None:
    from tweetgen_local.graphql_server import appsync_schema

    (schema_id,) = _of_type(project, "AWS::AppSync::GraphQLSchema")
    schema_resource = project.resources[schema_id]
    location = schema_resource.properties["DefinitionS3Location"]
    assert location == "graphql/schema.graphql"
    assert schema_resource.properties["ApiId"] == {"Fn::GetAtt": ["GraphQLApi", "ApiId"]}
    schema = appsync_schema((REPO / location).read_text(encoding="utf-8"))
    fields = {
        (root.name, name)
        for root in (schema.query_type, schema.mutation_type)
        if root is not None
        for name in root.fields
    }
    resolvers = _of_type(project, "AWS::AppSync::Resolver")
    bound = [(r.properties["TypeName"], r.properties["FieldName"]) for r in resolvers.values()]
    assert sorted(bound) == sorted(fields)
    for resolver in resolvers.values():
        assert resolver.properties == {
            "ApiId": {"Fn::GetAtt": ["GraphQLApi", "ApiId"]},
            "TypeName": resolver.properties["TypeName"],
            "FieldName": resolver.properties["FieldName"],
            "DataSourceName": {"Fn::GetAtt": ["GraphQLDataSource", "Name"]},
            "Kind": "UNIT",  # and no mapping templates or code: a direct Lambda resolver
        }
        assert resolver.depends_on == (schema_id,)


def test_the_api_takes_an_api_key_or_iam_on_every_type(project: Template) -> None:
    from tweetgen_local.graphql_server import appsync_schema

    from graphql import GraphQLObjectType

    api = project.resources["GraphQLApi"].properties
    assert api["AuthenticationType"] == "API_KEY"
    assert api["AdditionalAuthenticationProviders"] == [{"AuthenticationType": "AWS_IAM"}]
    assert project.resources["GraphQLApiKey"].type == "AWS::AppSync::ApiKey"
    # With a second mode, AppSync lets a type through only to the modes its directives name.
    schema = appsync_schema((REPO / "graphql" / "schema.graphql").read_text(encoding="utf-8"))
    for name, kind in schema.type_map.items():
        if isinstance(kind, GraphQLObjectType) and not name.startswith("__"):
            assert kind.ast_node is not None
            directives = {d.name.value for d in kind.ast_node.directives or ()}
            assert {"aws_api_key", "aws_iam"} <= directives, name
    assert project.outputs["GraphQLUrl"]["Value"] == {"Fn::GetAtt": ["GraphQLApi", "GraphQLUrl"]}


def test_appsync_may_invoke_the_graphql_function_and_nothing_else(project: Template) -> None:
    source = project.resources["GraphQLDataSource"].properties
    assert source["Type"] == "AWS_LAMBDA"
    assert source["LambdaConfig"] == {
        "LambdaFunctionArn": {"Fn::GetAtt": ["GraphQLFunction", "Arn"]}
    }
    assert source["ServiceRoleArn"] == {"Fn::GetAtt": ["GraphQLDataSourceRole", "Arn"]}
    role = project.resources["GraphQLDataSourceRole"].properties
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "appsync.amazonaws.com"}
    statements = [
        statement
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": [
                {"Fn::GetAtt": ["GraphQLFunction", "Arn"]},
                {"Fn::Sub": "${GraphQLFunction.Arn}:*"},
            ],
        }
    ]


def test_the_graphql_function_may_do_what_the_rest_functions_do_together_and_no_more(
    project: Template,
) -> None:
    graphql = project.function("GraphQLFunction")
    rest = [project.function(f"{name}Function") for name in ("Generate", "Feedback", "Query")]
    assert graphql.code_uri is not None and (graphql.code_uri / "app.py").is_file()
    assert (graphql.code_uri / "requirements.txt").is_file()
    assert [layer.logical_id for layer in graphql.layers] == ["CommonLayer"]
    assert _permissions(graphql.properties["Policies"]) == set().union(
        *(_permissions(function.properties["Policies"]) for function in rest)
    )
    # The same settings as the REST functions (CORS is AppSync's business here).
    environment = {
        name: value
        for function in rest
        for name, value in function.environment.items()
        if name not in ("CORS_ORIGIN", "POWERTOOLS_SERVICE_NAME")
    }
    assert {k: v for k, v in graphql.environment.items() if k != "POWERTOOLS_SERVICE_NAME"} == (
        environment
    )
    query = project.function("QueryFunction").properties
    assert graphql.properties.get("VpcConfig") == query.get("VpcConfig")


# --------------------------------------------------------------------------- production stack

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def stack() -> Template:
    return Template.load(TEMPLATE)


def _resources(template: Template, kind: str) -> dict[str, Any]:
    return {lid: r.properties for lid, r in template.resources.items() if r.type == kind}


def _statements(document: Any) -> list[dict[str, Any]]:
    """Every IAM statement in a template value: role policies and SAM policy statements."""
    found: list[dict[str, Any]] = []
    if isinstance(document, dict):
        statement = document.get("Statement")
        if isinstance(statement, list) and all(isinstance(s, dict) for s in statement):
            found.extend(statement)
        for value in document.values():
            found.extend(_statements(value))
    elif isinstance(document, list):
        for value in document:
            found.extend(_statements(value))
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_iam_never_allows_every_action_on_every_resource(stack: Template) -> None:
    statements = _statements(stack.document["Resources"])
    assert len(statements) > 30
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _listed(statement.get("Action"))]
        assert not any(a == "*" or a.endswith(":*") for a in actions), statement
        if "*" in _listed(statement.get("Resource")):
            assert all(":" in a and "*" not in a for a in actions), statement


def test_the_endpoint_role_reads_only_the_models_and_training_only_its_prefixes(
    stack: Template,
) -> None:
    def s3_grants(role: str) -> dict[str, Any]:
        return {
            action: statement["Resource"]
            for statement in _statements(stack.resources[role].properties["Policies"])
            for action in _listed(statement["Action"])
            if action.startswith("s3:")
        }

    assert s3_grants("SageMakerExecutionRole") == {
        "s3:GetObject": [
            {"Fn::Sub": "${ArtifactBucket.Arn}/validated/*"},
            {"Fn::Sub": "${ArtifactBucket.Arn}/models/*"},
        ]
    }
    training = s3_grants("SageMakerTrainingRole")
    assert training["s3:PutObject"] == {"Fn::Sub": "${ArtifactBucket.Arn}/training-jobs/*"}
    assert training["s3:ListBucket"] == {"Fn::GetAtt": ["ArtifactBucket", "Arn"]}
    outputs = stack.outputs
    assert outputs["TrainingRoleArn"]["Value"] == {"Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]}
    assert outputs["TrainingDataUri"]["Value"] == {
        "Fn::Sub": "s3://${ArtifactBucket}/training-data/"
    }


def test_only_the_validate_function_writes_the_validated_copies(stack: Template) -> None:
    validated = {"Fn::Sub": "${ArtifactBucket.Arn}/validated/*"}
    policy = stack.resources["ArtifactBucketPolicy"].properties["PolicyDocument"]
    (deny,) = [s for s in policy["Statement"] if s.get("Resource") == validated]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Action"] == ["s3:PutObject", "s3:DeleteObject"]
    assert deny["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["RolloutValidateFunctionRole", "Arn"]}}
    }
    grants = {
        action: statement["Resource"]
        for statement in _statements(stack.function("RolloutValidateFunction").properties)
        for action in _listed(statement["Action"])
        if statement["Resource"] == validated
    }
    assert grants == {"s3:GetObject": validated, "s3:PutObject": validated}
    # HeadObject answers 404 for a missing copy only with ListBucket (else 403); where there is
    # no copy, the function asks SageMaker whether the version's model exists.
    others = {
        action: statement["Resource"]
        for statement in _statements(stack.function("RolloutValidateFunction").properties)
        for action in _listed(statement["Action"])
        if statement["Resource"] != validated
    }
    assert others["s3:ListBucket"] == {"Fn::GetAtt": ["ArtifactBucket", "Arn"]}
    assert others["sagemaker:DescribeModel"] == {
        "Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
        ":model/${EndpointName}-*"
    }
    # The endpoint reads the copies; the state machine creates models from them.
    definition = json.loads(Path("statemachines/rollout.asl.json").read_text(encoding="utf-8"))
    container = definition["States"]["CreateModel"]["Parameters"]["PrimaryContainer"]
    assert container["ModelDataUrl.$"] == "$.artifact.model_data_url"


def test_the_database_functions_run_in_the_private_subnets(stack: Template) -> None:
    vpc = {
        "SecurityGroupIds": [{"Ref": "FunctionSecurityGroup"}],
        "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
    }
    secret = {"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]}
    users = {lid for lid, f in stack.functions.items() if "DATABASE_SECRET_ARN" in f.environment}
    assert {"QueryFunction", "RecorderFunction", "MigrateFunction", "RolloutRecordFunction"} <= (
        users
    )
    for logical_id in users:
        function = stack.function(logical_id)
        assert function.properties.get("VpcConfig") == vpc, logical_id
        env = function.environment
        assert env["DATABASE_SECRET_ARN"] == secret
        assert env["DATABASE_HOST"] == {"Fn::GetAtt": ["DatabaseCluster", "Endpoint.Address"]}
        assert env["DATABASE_PORT"] == {"Fn::GetAtt": ["DatabaseCluster", "Endpoint.Port"]}
        assert {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": secret}} in (
            function.properties["Policies"]
        )
    for logical_id in ("GenerateFunction", "FeedbackFunction"):
        assert "VpcConfig" not in stack.function(logical_id).properties


def test_a_stalled_database_fails_a_call_before_the_function_times_out(stack: Template) -> None:
    """Connecting and then waiting for an answer both fit in the function's timeout, so a
    database that stops answering is an error the function reports (503, batch left queued)."""
    users = {lid for lid, f in stack.functions.items() if "DATABASE_SECRET_ARN" in f.environment}
    for logical_id in users:
        function = stack.function(logical_id)
        env = function.environment
        waits = float(env["DATABASE_CONNECT_TIMEOUT"]) + float(env["DATABASE_QUERY_TIMEOUT"])
        assert waits < float(function.timeout), logical_id


def test_only_the_functions_reach_the_database_and_nothing_reaches_the_internet(
    stack: Template,
) -> None:
    types = {r.type for r in stack.resources.values()}
    assert not types & {"AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"}
    assert not [r for r in _resources(stack, "AWS::EC2::Route").values()]
    groups = _resources(stack, "AWS::EC2::SecurityGroup")
    database = groups["DatabaseSecurityGroup"]
    assert database["SecurityGroupIngress"] == [
        {
            "Description": "MySQL from the tweetgen functions",
            "IpProtocol": "tcp",
            "FromPort": 3306,
            "ToPort": 3306,
            "SourceSecurityGroupId": {"Ref": "FunctionSecurityGroup"},
        }
    ]
    extra = [
        (lid, stack.resources[lid].condition)
        for lid, rule in _resources(stack, "AWS::EC2::SecurityGroupIngress").items()
        if rule["GroupId"] == {"Ref": "DatabaseSecurityGroup"}
    ]
    assert extra == [("QuickSightToDatabaseIngress", "UsesQuickSight")]
    for name, group in groups.items():
        for rule in group.get("SecurityGroupIngress", []):
            assert "CidrIp" not in rule and "CidrIpv6" not in rule, name
    assert stack.resources["Vpc"].properties["EnableDnsHostnames"] is True


def test_vpc_endpoints_cover_every_service_the_private_functions_call(stack: Template) -> None:
    endpoints = _resources(stack, "AWS::EC2::VPCEndpoint")
    services = {
        str(e["ServiceName"]["Fn::Sub"]).rsplit("}.", 1)[1]: e["VpcEndpointType"]
        for e in endpoints.values()
    }
    assert services == {
        "s3": "Gateway",
        "sagemaker.api": "Interface",
        "sagemaker.runtime": "Interface",
        "secretsmanager": "Interface",
        "sqs": "Interface",
        "states": "Interface",
        "logs": "Interface",
        "application-autoscaling": "Interface",
    }
    for endpoint in endpoints.values():
        if endpoint["VpcEndpointType"] == "Interface":
            assert endpoint["PrivateDnsEnabled"] is True
            assert endpoint["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]
    assert stack.resources["AutoScalingEndpoint"].condition == "AutoScalesEndpoint"


def test_aurora_serverless_v2_is_encrypted_managed_and_kept_in_prod(stack: Template) -> None:
    assert "AWS::LanguageExtensions" in stack.document["Transform"]
    body = stack.document["Resources"]["DatabaseCluster"]
    cluster = body["Properties"]
    assert cluster["Engine"] == "aurora-mysql"
    assert stack.parameters["DatabaseEngineVersion"].default.startswith("8.0.mysql_aurora.3.")
    assert cluster["ManageMasterUserPassword"] is True and "MasterUserPassword" not in cluster
    assert cluster["StorageEncrypted"] is True
    prod_only = {"Fn::If": ["IsProd", True, False]}
    assert cluster["DeletionProtection"] == prod_only
    assert body["DeletionPolicy"] == {"Fn::If": ["IsProd", "Snapshot", "Delete"]}
    assert body["UpdateReplacePolicy"] == {"Fn::If": ["IsProd", "Snapshot", "Delete"]}
    assert cluster["BackupRetentionPeriod"] == {"Fn::If": ["IsProd", 14, 1]}
    scaling = cluster["ServerlessV2ScalingConfiguration"]
    assert scaling["MinCapacity"] == {"Ref": "DatabaseMinCapacity"}
    instances = _resources(stack, "AWS::RDS::DBInstance")
    assert {i["DBInstanceClass"] for i in instances.values()} == {"db.serverless"}
    assert all(i["PubliclyAccessible"] is False for i in instances.values())
    # The schema migration runs once the writer exists and the way to it is open.
    assert {"DatabaseWriter", "FunctionToDatabaseEgress", "S3GatewayEndpoint"} <= set(
        stack.resources["DatabaseSchema"].depends_on
    )


def test_the_artifact_bucket_is_private_encrypted_versioned_tls_only(stack: Template) -> None:
    bucket = stack.resources["ArtifactBucket"].properties
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-old-artifact-versions"]["NoncurrentVersionExpiration"]
    statements = stack.resources["ArtifactBucketPolicy"].properties["PolicyDocument"]["Statement"]
    (statement,) = [s for s in statements if s["Sid"] == "DenyInsecureTransport"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_rest_api_needs_a_key_throttles_validates_and_logs(stack: Template) -> None:
    api = stack.resources["Api"].properties
    assert api["Auth"]["ApiKeyRequired"] is True
    assert api["Auth"]["AddApiKeyRequiredToCorsPreflight"] is False
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}
    assert api["Cors"]["AllowOrigin"]["Fn::If"][0] == "HasCorsOrigin"
    assert api["GatewayResponses"]["BAD_REQUEST_BODY"]["StatusCode"] == "422"
    plan = stack.resources["ApiUsagePlan"].properties
    assert plan["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": "Api.Stage"}}]
    assert set(plan["Throttle"]) == {"RateLimit", "BurstLimit"}
    assert plan["Quota"]["Period"] == "DAY"
    key = stack.resources["ApiUsagePlanKey"].properties
    assert key["KeyId"] == {"Ref": "ApiKey"} and key["UsagePlanId"] == {"Ref": "ApiUsagePlan"}
    models = {
        (lid, name): event.properties.get("RequestModel")
        for lid, function in stack.functions.items()
        for name, event in function.events.items()
        if event.type == "Api" and event.properties.get("Method") == "post"
    }
    assert models == {
        ("GenerateFunction", "Generate"): {
            "Model": "GenerateRequest",
            "Required": False,
            "ValidateBody": True,
            "ValidateParameters": False,
        },
        ("FeedbackFunction", "Feedback"): {
            "Model": "FeedbackRequest",
            "Required": True,
            "ValidateBody": True,
            "ValidateParameters": False,
        },
    }


GENERATE_BODIES: list[Any] = [
    {},
    {"prompt": "good morning", "max_new_tokens": 256, "temperature": 2, "top_k": 0},
    {"prompt": "x" * 280, "temperature": 0.5, "seed": 0, "user_id": "u-1@example"},
    {"seed": None, "user_id": None},
    {"prompt": "x" * 281},
    {"max_new_tokens": 0},
    {"max_new_tokens": 257},
    {"max_new_tokens": "3"},
    {"temperature": 2.5},
    {"top_k": 1001},
    {"seed": -1},
    {"user_id": "bad user"},
    {"promt": "typo"},
    [],
    "text",
]
FEEDBACK_BODIES: list[Any] = [
    {"reward": "like"},
    {"reward": "dislike", "user_id": "u1"},
    {"reward": 1},
    {"reward": 5, "user_id": None},
    {"reward": 0},
    {"reward": 6},
    {"reward": "love"},
    {"reward": "3"},
    {},
    {"reward": "like", "extra": 1},
]


@pytest.mark.parametrize(
    ("model", "bodies"),
    [("GenerateRequest", GENERATE_BODIES), ("FeedbackRequest", FEEDBACK_BODIES)],
)
def test_the_gateway_models_agree_with_the_functions_models(
    stack: Template, model: str, bodies: list[Any]
) -> None:
    """API Gateway never refuses a body the function accepts, and refuses what it refuses."""
    import jsonschema
    import pydantic
    from tweetgen.domain import serving

    schema = stack.resources["Api"].properties["Models"][model]
    validator = jsonschema.Draft4Validator(schema)
    validator.check_schema(schema)
    function_model = getattr(serving, model)
    for body in bodies:
        try:
            function_model.model_validate_json(json.dumps(body))
            accepted = True
        except pydantic.ValidationError:
            accepted = False
        assert validator.is_valid(body) == accepted, body
    assert set(schema["properties"]) == set(function_model.model_fields)
    assert set(schema.get("required", [])) == {
        name for name, field in function_model.model_fields.items() if field.is_required()
    }


def test_alarms_cover_the_queue_the_api_the_functions_and_the_variants(stack: Template) -> None:
    alarms = _resources(stack, "AWS::CloudWatch::Alarm")
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    watched = {(a.get("Namespace"), a.get("MetricName")) for a in alarms.values()}
    assert {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/SageMaker", "Invocation5XXErrors"),
        ("AWS/SageMaker", "ModelLatency"),
        ("AWS/States", "ExecutionsFailed"),
    } <= watched
    dlq = alarms["EventsDeadLetterAlarm"]["Dimensions"][0]["Value"]
    assert dlq == {"Fn::GetAtt": ["EventsDeadLetterQueue", "QueueName"]}
    summed = {
        metric["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for metric in alarms["FunctionErrorsAlarm"]["Metrics"]
        if "MetricStat" in metric
    }
    serving = {
        lid
        for lid, function in stack.functions.items()
        if {e.type for e in function.events.values()} & {"Api", "SQS", "Schedule"}
    }
    assert serving <= summed
    queues = _resources(stack, "AWS::SQS::Queue")
    assert all(queue["SqsManagedSseEnabled"] is True for queue in queues.values())


def test_rollout_settings_follow_the_environment_and_hosting_parameters(stack: Template) -> None:
    from tweetgen.domain.rollout import ScalingSettings, ServerlessSettings
    from tweetgen.services.rollout import RolloutSettings

    def settings(**overrides: Any) -> RolloutSettings:
        ctx = stack.context(parameter_overrides=overrides)
        env: dict[str, str] = {}
        for logical_id in ("RolloutPlanFunction", "RolloutRecordFunction"):
            for name, raw in stack.function(logical_id).environment.items():
                if name.startswith(("ENDPOINT_", "NEW_VARIANT_", "SCALING_")):
                    env[name] = str(resolve(raw, ctx))
        return RolloutSettings.from_environment(env)

    dev = settings()
    assert dev.scaling is None and dev.new_variant.serverless is None
    prod = settings(
        Environment="prod",
        AutoScalingMinInstances=2,
        AutoScalingMaxInstances=6,
        InferenceInstanceCount=2,
    )
    assert prod.scaling == ScalingSettings(2, 6, 60.0)
    assert prod.new_variant.instance_count == 2
    serverless = settings(
        ServerlessInference="true", ServerlessMemorySizeMB=4096, ServerlessMaxConcurrency=10
    )
    assert serverless.new_variant.serverless == ServerlessSettings(4096, 10)
    # Serverless variants scale by themselves, even in prod.
    assert settings(Environment="prod", ServerlessInference="true").scaling is None


def test_samconfig_deploys_dev_and_prod_with_known_parameters(stack: Template) -> None:
    import tomllib

    config = tomllib.loads((TEMPLATE.parent / "samconfig.toml").read_text(encoding="utf-8"))
    for env, expected in (("default", "dev"), ("prod", "prod")):
        deploy = config[env]["deploy"]["parameters"]
        overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
        assert overrides["Environment"] == expected
        stack.parameter_values(overrides)  # every name is a parameter, every value allowed
        assert "CAPABILITY_AUTO_EXPAND" in deploy["capabilities"].split()
    # dev and prod can share an account and a region: stacks and endpoints differ.
    stacks, endpoints = set(), set()
    for env in ("default", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        stacks.add(deploy["stack_name"])
        endpoints.add(dict(i.split("=", 1) for i in deploy["parameter_overrides"])["EndpointName"])
    assert len(stacks) == len(endpoints) == 2


def test_the_outputs_name_what_a_deployment_hands_over(stack: Template) -> None:
    assert {
        "ApiUrl",
        "ApiKeyId",
        "GraphQLUrl",
        "ArtifactBucketName",
        "EndpointName",
        "TrainingRoleArn",
        "TrainingDataUri",
        "TrainingOutputUri",
    } <= set(stack.outputs)
    assert {
        "Environment",
        "InferenceImageUri",
        "InferenceInstanceType",
        "InferenceInstanceCount",
        "InitialVariantWeight",
        "CorsOrigin",
        "EnableQuickSight",
        "ServerlessInference",
        "DatabaseMinCapacity",
        "AutoScalingMinInstances",
        "AutoScalingMaxInstances",
    } <= set(stack.parameters)


def test_the_deploy_runs_every_migration_the_layer_holds(project: Template) -> None:
    """CloudFormation calls the migration's custom resource only when a property changes, so
    ``SchemaVersion`` must name the newest migration: else an existing stack would migrate
    only when some function happens to open the database."""
    from tweetgen.adapters.database.migrations import MIGRATIONS

    schema = project.resources["DatabaseSchema"]
    assert schema.type == "Custom::DatabaseSchema"
    assert schema.properties["SchemaVersion"] == max(m.version for m in MIGRATIONS)
