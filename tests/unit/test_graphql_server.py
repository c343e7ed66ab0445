"""The local GraphQL server: a template's AppSync API served over HTTP, each root field resolved by
invoking its function in a worker process with the event AppSync sends a direct Lambda resolver.

The fixture API (tests/fixtures/graphql) has one function that echoes its event, raises or
answers null on purpose; nothing here needs AWS (its resources are only named).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from tweetgen_local.functions import FunctionPool
from tweetgen_local.graphql_server import (
    GraphQLEndpoint,
    GraphQLSetupError,
    LocalWebServer,
    graphql_apis,
    serve_graphql,
)
from tweetgen_local.template import ResolveContext, Template
from tweetgen_local.wiring import AwsClients, ProvisionReport, provision

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "graphql"


def _provisioned(template: Template) -> tuple[ResolveContext, ProvisionReport]:
    ctx = template.context(stack_name="unit")
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=ctx.region
    )
    # Nothing of this template is created in AWS: no call reaches the (absent) endpoint.
    return ctx, provision(template, ctx, AwsClients(session, "http://127.0.0.1:9"))


@dataclass
class Served:
    url: str
    report: ProvisionReport
    ctx: ResolveContext
    events: list[dict[str, Any]]

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return requests.post(self.url, data=data, timeout=30, **kwargs)

    def query(self, query: str, variables: Any = None, **kwargs: Any) -> dict[str, Any]:
        answer = self.post({"query": query, "variables": variables}, **kwargs)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    template = Template.load(FIXTURE / "template.yaml")
    ctx, report = _provisioned(template)
    events: list[dict[str, Any]] = []
    server = LocalWebServer()
    with FunctionPool(template, ctx) as pool:

        def invoke(function: str, trigger: str, event: dict[str, Any]) -> Any:
            events.append(event)
            return pool.invoke(function, event)

        assert serve_graphql(server, template, ctx, pool.logical_id, invoke) is not None
        url = server.start()
        try:
            yield Served(f"{url}/graphql", report, ctx, events)
        finally:
            server.stop()


def test_the_appsync_resources_are_served_locally_not_skipped(served: Served) -> None:
    appsync = {"Api", "Schema", "Key", "EchoSource", "NoneSource", "EchoResolver", "ShoutResolver"}
    assert appsync <= set(served.report.served)
    assert not appsync & set(served.report.skipped)
    assert "served by the local GraphQL server: Api, Schema" in served.report.summary()
    api = served.ctx.resources["Api"]
    assert api["GraphQLUrl"] == (
        f"https://{api['ApiId']}.appsync-api.us-east-1.amazonaws.com/graphql"
    )
    assert served.ctx.resources["EchoSource"]["Name"] == "Echo"


ECHO = """
query Echo($text: String!) {
  echo(text: $text) {
    event
    text
    shouted: text
    nested { a ... on Nested { b } }
    ...When
  }
}
fragment When on Echo { when }
"""


def test_a_root_field_gets_appsyncs_direct_lambda_resolver_event(served: Served) -> None:
    answer = served.query(ECHO, {"text": "hi"}, headers={"x-api-key": "da2-test"})
    assert "errors" not in answer, answer
    echo = answer["data"]["echo"]
    assert echo["text"] == echo["shouted"] == "hi"
    assert echo["nested"] == {"a": 1, "b": 2} and echo["when"] == "2026-01-01T00:00:00.000Z"
    event = json.loads(echo["event"])  # AWSJSON reaches the client as a JSON string
    assert set(event) == {"arguments", "identity", "source", "request", "prev", "info", "stash"}
    # The argument's default applies; an argument not given is absent.
    assert event["arguments"] == {"text": "hi", "times": 2}
    assert event["identity"] is None and event["source"] is None and event["prev"] is None
    assert event["stash"] == {}
    assert event["request"]["headers"]["x-api-key"] == "da2-test"
    assert event["request"]["headers"]["user-agent"].startswith("python-requests")
    assert event["info"] == {
        "fieldName": "echo",
        "parentTypeName": "Query",
        "variables": {"text": "hi"},
        "selectionSetList": ["event", "text", "shouted", "nested", "nested/a", "nested/b", "when"],
        "selectionSetGraphQL": (
            "{\n  event\n  text\n  shouted: text\n  nested {\n    a\n    ... on Nested {\n"
            "      b\n    }\n  }\n  ...When\n}"
        ),
    }


def test_a_failing_function_is_a_field_error_with_its_type_and_message(served: Served) -> None:
    answer = served.query('{ fail echo(text: "x") { text } }')
    assert answer["data"] == {"fail": None, "echo": {"text": "x"}}
    assert answer["errors"] == [
        {
            "path": ["fail"],
            "data": None,
            "errorType": "TeapotError",
            "errorInfo": None,
            "locations": [{"line": 1, "column": 3, "sourceName": None}],
            "message": "I am a teapot",
        }
    ]


def test_null_for_a_non_null_field_nulls_its_parent(served: Served) -> None:
    answer = served.query("{ must }")
    assert answer["data"] is None
    (error,) = answer["errors"]
    assert error["path"] == ["must"]
    assert "Cannot return null for non-nullable field Query.must" in error["message"]


def test_fields_without_a_lambda_resolver(served: Served) -> None:
    answer = served.query("{ unbound nothing }")
    assert answer["data"] == {"unbound": None, "nothing": None}
    (error,) = answer["errors"]
    assert error["path"] == ["nothing"] and error["errorType"] == "NotServedLocally"
    assert "NothingResolver: data source Nothing is NONE, not AWS_LAMBDA" in error["message"]


def test_a_mutation(served: Served) -> None:
    answer = served.query('mutation { shout(text: "quiet") }')
    assert answer == {"data": {"shout": "QUIET"}}
    assert served.events[-1]["info"]["parentTypeName"] == "Mutation"


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        ("{ echo(text: ", None, "Syntax Error: Unexpected <EOF>."),
        ("{ nope }", None, "Cannot query field 'nope' on type 'Query'."),
        ("{ echo { text } }", None, "argument 'text' of type 'String!' is required"),
        ("{ echo(text: 5) { text } }", None, "String cannot represent a non string value: 5"),
        ("{ echo(text: 1) }", None, "Field 'echo' of type 'Echo' must have a selection"),
        ("query Q($t: String!) { echo(text: $t) { text } }", {}, "was not provided"),
        ("query Q($t: String!) { echo(text: $t) { text } }", {"t": 7}, "got invalid value 7"),
        ("subscription { echo }", None, "Schema is not configured to execute subscription"),
    ],
)
def test_documents_that_do_not_parse_or_validate_are_graphql_errors(
    served: Served, query: str, variables: Any, message: str
) -> None:
    calls = len(served.events)
    answer = served.query(query, variables)
    assert answer["data"] is None
    assert any(message in error["message"] for error in answer["errors"]), answer
    assert len(served.events) == calls  # no function was invoked


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Request body is empty."),
        (b"   ", "Request body is empty."),
        (b"meow", "Unable to parse GraphQL query."),
        (b"{}", "Unable to parse GraphQL query."),
        (b"[]", "Unable to parse GraphQL query."),
        (b'{"query": 5}', "Unable to parse GraphQL query."),
        (b'{"query": "{ fail }", "variables": [1]}', "Unable to parse GraphQL query."),
        (b"\xff\xfe", "Unable to parse GraphQL query."),
    ],
)
def test_bodies_that_are_no_graphql_request_are_400(
    served: Served, body: bytes, message: str
) -> None:
    answer = served.post(body)
    assert answer.status_code == 400
    assert answer.json() == {
        "errors": [{"message": message, "errorType": "MalformedHttpRequestException"}]
    }


def test_variables_may_come_as_a_json_string_and_the_path_may_end_in_a_slash(
    served: Served,
) -> None:
    body = {"query": "mutation M($t: String!) { shout(text: $t) }", "variables": '{"t": "a"}'}
    answer = requests.post(served.url + "/", json=body, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"data": {"shout": "A"}}


def test_routes_methods_and_cors(served: Served) -> None:
    wrong_method = requests.get(served.url, timeout=30)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST, OPTIONS"
    elsewhere = requests.post(served.url.replace("/graphql", "/nowhere"), timeout=30)
    assert elsewhere.status_code == 404
    assert elsewhere.json() == {"message": "nothing is served at /nowhere"}
    preflight = requests.options(served.url, timeout=30)
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"]
    answered = served.post({"query": "{ unbound }"})
    assert answered.headers["Access-Control-Allow-Origin"] == "*"
    assert answered.headers["x-amzn-RequestId"]


def _copy(tmp_path: Path, edit: dict[str, tuple[str, str]]) -> Template:
    """The fixture with ``{file: (old, new)}`` replaced."""
    target = tmp_path / "api"
    shutil.copytree(FIXTURE, target)
    for name, (old, new) in edit.items():
        path = target / name
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new), encoding="utf-8")
    return Template.load(target / "template.yaml")


def _endpoint(template: Template) -> GraphQLEndpoint:
    ctx, _ = _provisioned(template)
    with FunctionPool(template, ctx) as pool:
        (spec,) = graphql_apis(template, ctx, pool.logical_id)
    return GraphQLEndpoint(spec, lambda *_: pytest.fail("nothing is invoked"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"template.yaml": ("FieldName: fail", "FieldName: missing")},
            "Resources.FailResolver: schema.graphql has no field Query.missing",
        ),
        (
            {"template.yaml": ("FieldName: fail", "FieldName: echo")},
            "Query.echo already has resolver EchoResolver",
        ),
        (
            {
                "template.yaml": (
                    "DefinitionS3Location: schema.graphql",
                    "DefinitionS3Location: x.gql",
                )
            },
            "Resources.Schema.Properties.DefinitionS3Location: cannot read",
        ),
        (
            {"template.yaml": ("schema.graphql", "s3://bucket/schema.graphql")},
            "is in S3; locally the schema must be a file of the repository",
        ),
        (
            {"schema.graphql": ("type Nested {", "type Nested")},
            "schema.graphql: Syntax Error",
        ),
        (
            {"schema.graphql": ("nested: Nested", "nested: Unknown")},
            "Unknown type 'Unknown'",
        ),
        (
            {
                "template.yaml": (
                    "DataSourceName: !GetAtt EchoSource.Name\n      Kind: UNIT\n\n  Fail",
                    "DataSourceName: Other\n      Kind: UNIT\n\n  Fail",
                )
            },
            "Resources.EchoResolver: no data source named 'Other' (data sources: Echo, Nothing)",
        ),
    ],
)
def test_an_api_that_cannot_be_served_says_why(
    tmp_path: Path, edit: dict[str, tuple[str, str]], message: str
) -> None:
    with pytest.raises(GraphQLSetupError) as refused:
        _endpoint(_copy(tmp_path, edit))
    assert message in str(refused.value)


def test_pipelines_and_mapping_templates_answer_an_error_naming_the_resolver(
    tmp_path: Path,
) -> None:
    template = _copy(
        tmp_path,
        {"template.yaml": ("FieldName: fail\n", "FieldName: fail\n      Code: export {}\n")},
    )
    endpoint = _endpoint(template)
    binding = endpoint.bindings[("Query", "fail")]
    assert binding.function is None
    assert binding.problem == "FailResolver: Code: only direct Lambda resolvers are served locally"
