"""The REST API end to end over HTTP, as ``curl`` would use it: a local stack from the real
template, both tiny models rolled out, the real generate, feedback, query and recorder
functions in their workers, the events queue on moto and the database on SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from tweetgen.adapters.database import Database
from tweetgen.adapters.database.schema import generation_failures as failures
from tweetgen_local.stack import LocalStack

from tests import conftest
from tests.e2e import stacks

WAIT_S = 30.0


class Api:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.url = str(stack.endpoints["api"])
        self.state_dir = stack.options.state_dir
        self.db = Database.from_url(f"sqlite:///{self.state_dir / 'tweetgen.db'}")

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        return requests.post(self.url + path, data=data, timeout=60, **kwargs)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=60)

    def generate(self, **body: Any) -> dict[str, Any]:
        answer = self.post("/generations", body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


def eventually(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    return conftest.eventually(check, timeout)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_run: dict[str, Path]) -> Iterator[Api]:
    with stacks.rolled_out_stack(tmp_path_factory.mktemp("api-stack"), tiny_run) as stack:
        yield Api(stack)


def test_generate_then_feedback_then_the_experiment_counts_it(api: Api) -> None:
    served = api.generate(prompt="good morning", max_new_tokens=6, user_id="alice", seed=1)
    assert set(served) == {
        "generation_id",
        "text",
        "variant",
        "model_version",
        "latency_ms",
        "user_id",
    }
    assert served["variant"] in ("lstm", "gpt2") and served["model_version"] == "v1"
    assert isinstance(served["text"], str) and served["latency_ms"] > 0
    # Sticky: the same user is served by the same variant while the weights stand.
    assert {api.generate(user_id="alice")["variant"] for _ in range(3)} == {served["variant"]}

    stored = eventually(
        lambda: (r := api.get(f"/generations/{served['generation_id']}")).ok and r.json()
    )
    assert stored["text"] == served["text"] and stored["prompt"] == "good morning"

    answer = api.post(
        f"/generations/{served['generation_id']}/feedback", {"reward": "like", "user_id": "alice"}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["variant"] == served["variant"]

    def counted() -> dict[str, Any] | None:
        # The figures are as of the last aggregation: run it now, not at its next minute.
        api.stack.wiring.trigger_schedule("AggregateFunction")
        rows = {r["variant"]: r for r in api.get("/experiment").json()["variants"]}
        row = rows.get(served["variant"])
        return row if row and row["feedback"] >= 1 else None

    row = eventually(counted)
    assert row["in_service"] and row["served"] >= 1 and row["positive"] >= 1
    assert row["weight"] > 0 and row["model_version"] == "v1"


def test_an_anonymous_user_gets_an_id_and_curl_style_form_bodies_are_read_as_json(
    api: Api,
) -> None:
    # curl -d sends application/x-www-form-urlencoded; the API speaks JSON whatever the header.
    answer = requests.post(api.url + "/generations", data='{"max_new_tokens": 4}', timeout=60)
    assert answer.status_code == 201, answer.text
    assert answer.json()["user_id"].startswith("anon-")
    assert api.post("/generations").status_code == 201  # no body at all: every default


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "reason"),
    [
        ("/generations", "{not json", 422, "body", "not valid JSON"),
        ("/generations", {"prompt": "hi", "colour": "red"}, 422, "body.colour", "Extra inputs"),
        ("/generations", {"max_new_tokens": "8"}, 422, "body.max_new_tokens", "valid integer"),
        ("/generations", {"prompt": "x" * 281}, 422, "body.prompt", "at most 280"),
        ("/generations", {"max_new_tokens": 65}, 422, None, "at most 64"),
        ("/generations", {"temperature": 3.5}, 422, "body.temperature", "less than or equal"),
        ("/generations", [1, 2], 422, "body", "valid dictionary"),
        ("/generations/abc/feedback", {"reward": "like"}, 404, None, "no generation 'abc'"),
        ("/generations/abc/feedback", {}, 422, "body.reward", "Field required"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(
    api: Api, path: str, body: Any, status: int, field: str | None, reason: str
) -> None:
    answer = api.post(path, body)
    assert answer.status_code == status, answer.text
    payload = answer.json()
    texts = [payload["message"], *(e["reason"] for e in payload["errors"])]
    assert any(reason in text for text in texts), payload
    if field is not None:
        assert field in [e["field"] for e in payload["errors"]], payload


def test_an_unknown_route_is_refused_by_the_gateway_with_a_message(api: Api) -> None:
    answer = api.post("/nowhere", {})
    assert answer.status_code in (403, 404) and answer.json()["message"]


def test_bad_feedback_values_are_refused_for_a_real_generation(api: Api) -> None:
    generation_id = api.generate(max_new_tokens=2)["generation_id"]
    for reward in ("LIKE", 0, 6, 2.5, None):
        answer = api.post(f"/generations/{generation_id}/feedback", {"reward": reward})
        assert answer.status_code == 422, (reward, answer.text)
        assert "'like', 'dislike' or a rating from 1 to 5" in answer.text
    tampered = generation_id[:-1] + ("0" if generation_id[-1] != "0" else "1")
    answer = api.post(f"/generations/{tampered}/feedback", {"reward": "like"})
    assert answer.status_code == 404


def test_sql_injection_strings_are_stored_literally(api: Api) -> None:
    prompt = "'; DROP TABLE generations; --"
    served = api.generate(prompt=prompt, max_new_tokens=2, user_id="bobby")
    stored = eventually(
        lambda: (r := api.get(f"/generations/{served['generation_id']}")).ok and r.json()
    )
    assert stored["prompt"] == prompt
    assert api.get("/generations/' OR 1=1 --").status_code == 404
    # Ids are checked before anything else sees them.
    answer = api.post("/generations", {"user_id": "bobby' OR '1'='1"})
    assert answer.status_code == 422 and "body.user_id" in answer.text


def _failures(api: Api) -> int:
    with api.db.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(failures)).scalar_one())


def test_a_prompt_too_long_for_the_model_is_a_422_not_counted_against_its_variant(
    api: Api,
) -> None:
    # One user per variant (assignment is sticky), found by a short generation each.
    users: dict[str, str] = {}
    for i in range(40):
        users.setdefault(
            api.generate(user_id=f"long-{i}", max_new_tokens=1)["variant"], f"long-{i}"
        )
        if len(users) == 2:
            break
    assert set(users) == {"lstm", "gpt2"}
    time.sleep(2)  # what the recorder would have received by now
    before = _failures(api)
    # 280 characters (the API's bound), each several tokens of the byte-level vocabulary: more
    # than either model's context.
    for variant, user in users.items():
        answer = api.post(
            "/generations",
            {"prompt": "\N{PARTY POPPER}" * 280, "max_new_tokens": 8, "user_id": user},
        )
        assert answer.status_code == 422, (variant, answer.text)
        payload = answer.json()
        assert payload["message"] == "the model refused the request"
        assert "prompt too long" in payload["errors"][0]["reason"]
        # Above the vocabulary, top_k samples from all of it: served, not refused.
        assert api.generate(user_id=user, max_new_tokens=2, top_k=1000)["variant"] == variant
    time.sleep(2)
    assert _failures(api) == before


# Last in this module: it takes the stack's SageMaker runtime down.
def test_an_endpoint_that_does_not_answer_is_a_502_and_nothing_is_recorded(api: Api) -> None:
    before = api.db.generations.variant_totals()
    api.stack.runtime.close()  # the endpoint stops answering (connection refused)
    answer = api.post("/generations", {"max_new_tokens": 2, "user_id": "carol"})
    assert answer.status_code == 502, answer.text
    assert "did not answer" in answer.json()["message"]
    time.sleep(2)  # what the recorder would have received by now
    assert api.db.generations.variant_totals() == before
