"""code/inference.py called exactly as the SageMaker TensorFlow Serving container calls it."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tweetgen.services.errors import MODEL_REFUSAL_PREFIX
from tweetgen_local.hosting import Context, ServedModel

pytestmark = pytest.mark.long


@pytest.fixture(scope="module", params=["lstm", "gpt2"])
def served(request: pytest.FixtureRequest, unpacked: dict[str, Path]) -> ServedModel:
    return ServedModel(unpacked[request.param])


def _invoke(served: ServedModel, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = served.invoke(body, **kwargs)
    return answer.status, json.loads(answer.body)


def test_single_prompt_gives_one_continuation_without_the_prompt(served: ServedModel) -> None:
    status, body = _invoke(
        served, {"inputs": "i love", "parameters": {"seed": 3, "max_new_tokens": 8}}
    )
    assert status == 200
    assert isinstance(body, list) and len(body) == 1
    assert set(body[0]) == {"generated_text"}
    assert not body[0]["generated_text"].startswith("i love")


def test_batch_request_is_seeded_and_answers_each_input(served: ServedModel) -> None:
    payload = {
        "inputs": ["good morning", "", "why is"],
        "parameters": {"seed": 9, "temperature": 1.0},
    }
    status, first = _invoke(served, payload)
    _, again = _invoke(served, payload)
    assert status == 200 and len(first) == 3
    assert first == again
    # Input i of a batch is sampled with seed + i: the third alone with seed 11 matches.
    _, alone = _invoke(served, {"inputs": "why is", "parameters": {"seed": 11, "temperature": 1.0}})
    assert alone[0] == first[2]


def test_greedy_when_sampling_is_off(served: ServedModel) -> None:
    a = _invoke(served, {"inputs": "hello", "parameters": {"do_sample": False, "seed": 1}})
    b = _invoke(served, {"inputs": "hello", "parameters": {"temperature": 0, "seed": 2}})
    assert a == b and a[0] == 200


def _inference_module(root: Path) -> ModuleType:
    """An artifact's code/inference.py, imported from the artifact."""
    spec = importlib.util.spec_from_file_location(
        "inference_under_test", root / "code" / "inference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_container_context_fields_reach_the_handlers(unpacked: dict[str, Path]) -> None:
    """input_handler/output_handler read the context by field name, as in the container."""
    module = _inference_module(unpacked["lstm"])
    context = Context(
        "model",
        "1",
        "POST",
        "http://localhost:8501/v1/models/model:predict",
        "9000",
        None,
        "application/json; charset=utf-8",
        "application/json",
        20,
    )
    request = json.loads(module.input_handler(io.BytesIO(b'{"inputs": ["a", "bc"]}'), context))
    inputs = request["inputs"]
    assert request["signature_name"] == "serving_default"
    assert len(inputs["input_ids"]) == 2 and len(inputs["input_ids"][0]) == len(
        inputs["input_ids"][1]
    )
    assert inputs["attention_mask"][0][0] == 0  # the shorter prompt is left-padded
    assert inputs["max_new_tokens"] == 32 and inputs["top_k"] == 40


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "empty request body"),
        (b"   ", "application/json", "empty request body"),
        (b'{"inputs": "hi"}', "text/csv", "unsupported content type"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'["hi"]', "application/json", "must be a JSON object"),
        (b'{"parameters": {}}', "application/json", "missing 'inputs'"),
        (b'{"inputs": []}', "application/json", "non-empty list"),
        (b'{"inputs": [1]}', "application/json", "inputs[0] must be a string"),
        (b'{"inputs": "hi", "extra": 1}', "application/json", "unknown request keys"),
        (
            b'{"inputs": "hi", "parameters": {"max_new_tokens": 100000}}',
            "application/json",
            "max_new_tokens must be between",
        ),
        (
            b'{"inputs": "hi", "parameters": {"max_new_tokens": 0}}',
            "application/json",
            "max_new_tokens must be between",
        ),
        (
            b'{"inputs": "hi", "parameters": {"temperature": -1}}',
            "application/json",
            "temperature must be between",
        ),
        (
            b'{"inputs": "hi", "parameters": {"top_k": "many"}}',
            "application/json",
            "top_k must be an integer",
        ),
        (b'{"inputs": "hi", "parameters": {"beam": 2}}', "application/json", "unknown parameters"),
        (b'{"inputs": "hi", "parameters": []}', "application/json", "must be a JSON object"),
        (b'{"inputs": "hi", "parameters": 0}', "application/json", "must be a JSON object"),
        (b'{"inputs": "hi", "parameters": ""}', "application/json", "must be a JSON object"),
        (b"[" * 100_000, "application/json", "nested too deeply"),
        (
            b'{"inputs": "hi", "parameters": {"seed": ' + b"1" * 5000 + b"}}",
            "application/json",
            "number too long",
        ),
        # Valid JSON, yet no text: half of a surrogate pair (a client that cut an emoji).
        (b'{"inputs": "half \\ud83d"}', "application/json", "lone surrogate at character 5"),
        (
            b'{"inputs": "hi", "parameters": {"seed": -4}}',
            "application/json",
            "seed must be between",
        ),
    ],
)
def test_bad_requests_get_a_clear_error(
    served: ServedModel, body: bytes, content_type: str, message: str
) -> None:
    status, answer = _invoke(served, body, content_type=content_type)
    assert status == 500  # what the container answers; SageMaker surfaces it as ModelError
    assert message in answer["error"]
    # The prefix tells the generate function that the request, not the model, is at fault.
    assert answer["error"].startswith(MODEL_REFUSAL_PREFIX)


def test_the_artifact_marks_refusals_as_the_service_reads_them(unpacked: dict[str, Path]) -> None:
    module = _inference_module(unpacked["lstm"])
    assert module.REFUSAL_PREFIX == MODEL_REFUSAL_PREFIX


def test_a_character_cut_by_max_new_tokens_is_left_out(unpacked: dict[str, Path]) -> None:
    module = _inference_module(unpacked["lstm"])
    _, tokenizer = module._model_files()
    text = "ok x\N{PARTY POPPER}"
    ids = tokenizer.encode(text).ids
    # The byte-level symbols read back as the text's own bytes.
    symbols = "".join(tokenizer.id_to_token(i) for i in ids)
    assert bytes(module._BYTE_OF_SYMBOL[c] for c in symbols) == text.encode()
    assert module.decode_text(ids, tokenizer) == text
    for cut in range(1, len(ids)):  # a generation that stopped anywhere before the end
        lossy = tokenizer.decode(ids[:cut], skip_special_tokens=True)
        # Only the unfinished emoji goes: whatever else its token holds ("x") stays.
        assert module.decode_text(ids[:cut], tokenizer) == lossy.removesuffix("\ufffd")
        assert text.startswith(lossy.removesuffix("\ufffd"))
    # Replacement characters the model generated whole are its own, and kept.
    for kept in ("no \ufffd here", "no \ufffd"):
        assert module.decode_text(tokenizer.encode(kept).ids, tokenizer) == kept


def test_a_prompt_that_spells_the_end_token_is_text(unpacked: dict[str, Path]) -> None:
    module = _inference_module(unpacked["gpt2"])
    metadata, tokenizer = module._model_files()
    eos = metadata["tokenizer"]["eos_token_id"]
    request = module.parse_request(
        json.dumps({"inputs": "so <|endoftext|> what"}).encode(), "application/json", metadata
    )
    ids = module.build_predict_request(request, tokenizer, metadata)["inputs"]["input_ids"][0]
    # The start-of-text frame is the only end-of-text token the model sees.
    assert ids[0] == eos and eos not in ids[1:]
    assert tokenizer.decode(ids[1:]) == "so <|endoftext|> what"


def test_a_model_whose_cap_is_under_the_default_serves_requests_without_one(
    unpacked: dict[str, Path],
) -> None:
    module = _inference_module(unpacked["lstm"])
    metadata, _ = module._model_files()
    small = {**metadata, "generation": {**metadata["generation"], "max_new_tokens": 5}}
    assert module.DEFAULTS["max_new_tokens"] > 5
    request = module.parse_request(b'{"inputs": "hi"}', "application/json", small)
    assert request["max_new_tokens"] == 5
    # A value the client sends is still held to the cap.
    with pytest.raises(module.RequestError, match="between 1 and 5"):
        module.parse_request(
            b'{"inputs": "hi", "parameters": {"max_new_tokens": 6}}', "application/json", small
        )


def test_a_null_parameters_object_takes_the_defaults(served: ServedModel) -> None:
    status, answer = _invoke(served, {"inputs": "i love", "parameters": None})
    assert status == 200 and len(answer) == 1 and "generated_text" in answer[0]


def test_a_top_k_above_the_vocabulary_samples_from_all_of_it(served: ServedModel) -> None:
    vocab = json.loads((served.root / "metadata.json").read_text())["tokenizer"]["vocab_size"]
    common = {"seed": 5, "temperature": 1.5, "max_new_tokens": 12}
    status, above = _invoke(served, {"inputs": "i", "parameters": {**common, "top_k": vocab + 500}})
    _, whole = _invoke(served, {"inputs": "i", "parameters": {**common, "top_k": 0}})
    assert status == 200
    assert above == whole
    status, answer = _invoke(served, {"inputs": "i", "parameters": {"top_k": 2**31}})
    assert status == 500 and "top_k must be between" in answer["error"]


def test_too_many_inputs_and_too_long_prompts_are_refused(served: ServedModel) -> None:
    limits = json.loads((served.root / "metadata.json").read_text())["generation"]
    status, answer = _invoke(served, {"inputs": ["x"] * (limits["max_batch_size"] + 1)})
    assert status == 500 and "too many inputs" in answer["error"]
    status, answer = _invoke(
        served, {"inputs": "word " * 190, "parameters": {"max_new_tokens": 100}}
    )
    assert status == 500 and "prompt too long" in answer["error"]


def test_unsupported_accept_type_is_refused(served: ServedModel) -> None:
    status, answer = _invoke(served, {"inputs": "hi"}, accept="text/csv")
    assert status == 500 and "accept" in answer["error"]
    for refusing in (
        "application/json;q=0, text/csv",
        "application/json;q=0, */*",  # the most specific range decides
        "*/*;q=0.5, application/json;q=0",
        "application/json;q=0., application/*;q=0.5",
    ):
        status, answer = _invoke(served, {"inputs": "hi"}, accept=refusing)
        assert status == 500 and "accept" in answer["error"], refusing


@pytest.mark.parametrize(
    "accept",
    [
        "application/json, text/plain",
        "text/html,application/json;q=0.9",
        "Application/JSON",
        "application/*",
        "*/*",
        "application/*;q=0, application/json",
        "text/plain;q=1, application/json; q = 0.1",
    ],
)
def test_accept_headers_that_admit_json_are_served(served: ServedModel, accept: str) -> None:
    status, answer = _invoke(served, {"inputs": "hi"}, accept=accept)
    assert status == 200 and len(answer) == 1


def test_tensorflow_serving_rest_predict_forms(served: ServedModel) -> None:
    """The in-process TFS answers both request forms and reports bad ones as TFS does."""
    inputs = {
        "input_ids": [[0, 5]],
        "attention_mask": [[1, 1]],
        "max_new_tokens": 3,
        "temperature": 0.0,
        "top_k": 1,
        "seed": 0,
    }
    status, columnar = served.tfs.predict(json.dumps({"inputs": inputs}).encode())
    assert status == 200 and set(columnar["outputs"]) == {"generated_ids", "lengths"}
    status, bad = served.tfs.predict(
        json.dumps({"signature_name": "nope", "inputs": inputs}).encode()
    )
    assert status == 400 and "nope" in bad["error"]
    status, bad = served.tfs.predict(json.dumps({"inputs": {"input_ids": [[0]]}}).encode())
    assert status == 400 and "Missing inputs" in bad["error"]
