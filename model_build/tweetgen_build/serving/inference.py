"""Request and response handlers for the SageMaker TensorFlow Serving container.

Shipped as ``code/inference.py`` in every tweetgen artifact. The container calls
``input_handler(data, context)``, POSTs what it returns to TensorFlow Serving's REST API, and
passes the response to ``output_handler(response, context)``. Needs only ``tokenizers``.

Request (``application/json``), the Hugging Face text-generation shape::

    {"inputs": "a prompt" | ["prompt", ...],
     "parameters": {"max_new_tokens": 32, "temperature": 0.8, "top_k": 40, "seed": 7}}

Every parameter is optional and bounded; ``temperature`` 0 (or ``"do_sample": false``) means
greedy decoding; ``top_k`` 0, or one at least the vocabulary's size, samples from the whole
vocabulary; input ``i`` of a batch is sampled with ``seed + i``. Response: one
``{"generated_text": "..."}`` per input, the continuation without the prompt.

A request that cannot be served as sent raises :class:`RequestError`, whose message starts
with ``request refused: ``. The container answers every exception with a 500, so that prefix
is what tells a caller (tweetgen's generate function) that the request is at fault, not the
model.
"""

from __future__ import annotations

import codecs
import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

CODE_DIR = Path(__file__).resolve().parent
DEFAULTS: dict[str, Any] = {"max_new_tokens": 32, "temperature": 0.8, "top_k": 40}
MAX_PROMPT_CHARS = 1000
MAX_TEMPERATURE = 5.0
MAX_SEED = 2**62


#: Starts the message of every request refused (tweetgen.services.errors holds the same).
REFUSAL_PREFIX = "request refused: "
#: The largest value the serving signature's int32 inputs hold.
MAX_INT32 = 2**31 - 1


class RequestError(ValueError):
    """The request cannot be served as sent; the message says what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSAL_PREFIX + reason)


@lru_cache(maxsize=1)
def _model_files() -> tuple[dict[str, Any], Tokenizer]:
    metadata = json.loads((CODE_DIR.parent / "metadata.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(CODE_DIR.parent / metadata["tokenizer"]["path"]))
    # A prompt that spells <|endoftext|> means the characters: the token would end the text
    # before the model saw the rest (tokenizer JSON does not save this setting).
    tokenizer.encode_special_tokens = True
    return metadata, tokenizer


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(params: dict[str, Any], name: str, low: float, high: float) -> float:
    value = params[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestError(f"parameters.{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"parameters.{name} must be between {low} and {high}, got {value}")
    return float(value)


def _integer(params: dict[str, Any], name: str, low: int, high: int) -> int:
    value = params[name]
    if not _is_int(value):
        raise RequestError(f"parameters.{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"parameters.{name} must be between {low} and {high}, got {value}")
    return int(value)


def _parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(f"unsupported content type {content_type!r}: send application/json")
    if not body or not body.strip():
        raise RequestError('empty request body: send {"inputs": "a prompt"}')
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError("request body is nested too deeply to read") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise RequestError(f"request body holds a number too long to read: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError('request body must be a JSON object like {"inputs": "a prompt"}')
    unknown = sorted(set(payload) - {"inputs", "parameters"})
    if unknown:
        raise RequestError(f"unknown request keys {unknown}: expected 'inputs' and 'parameters'")
    if "inputs" not in payload:
        raise RequestError("missing 'inputs': a prompt string or a list of prompt strings")
    return payload


def _parse_inputs(inputs: Any, max_batch_size: int) -> list[str]:
    prompts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(prompts, list) or not prompts:
        raise RequestError("'inputs' must be a string or a non-empty list of strings")
    if len(prompts) > max_batch_size:
        raise RequestError(f"too many inputs: {len(prompts)} > {max_batch_size} per request")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise RequestError(f"inputs[{i}] must be a string, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(f"inputs[{i}] is longer than {MAX_PROMPT_CHARS} characters")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            # JSON's \ud83d escapes can spell half a surrogate pair: no character at all.
            raise RequestError(
                f"inputs[{i}] is not Unicode text: a lone surrogate at character {exc.start}"
                " (half of a character such as an emoji)"
            ) from None
    return prompts


def _parse_parameters(params: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise RequestError("'parameters' must be a JSON object")
    known = {"max_new_tokens", "temperature", "top_k", "seed", "do_sample"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise RequestError(f"unknown parameters {unknown}: supported are {sorted(known)}")
    cap = metadata["generation"]["max_new_tokens"]
    # A model whose cap is under the default (a small context) serves requests without one.
    merged = {**DEFAULTS, "max_new_tokens": min(DEFAULTS["max_new_tokens"], cap), **params}
    resolved = {
        "max_new_tokens": _integer(merged, "max_new_tokens", 1, cap),
        "temperature": _number(merged, "temperature", 0.0, MAX_TEMPERATURE),
        # Above the vocabulary, top-k keeps every token, as 0 does: the generation loop clamps
        # it to the vocabulary (tweetgen_build.generation.candidate_count).
        "top_k": _integer(merged, "top_k", 0, MAX_INT32),
        "seed": _integer(merged, "seed", 0, MAX_SEED) if "seed" in params else None,
    }
    if "do_sample" in params:
        if not isinstance(params["do_sample"], bool):
            raise RequestError("parameters.do_sample must be true or false")
        if not params["do_sample"]:
            resolved["temperature"] = 0.0
    return resolved


def parse_request(
    body: bytes, content_type: str | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Validate a request body; return the prompts and the resolved generation parameters."""
    payload = _parse_body(body, content_type)
    prompts = _parse_inputs(payload["inputs"], metadata["generation"]["max_batch_size"])
    parameters = payload.get("parameters")
    parameters = {} if parameters is None else parameters
    return {"prompts": prompts, **_parse_parameters(parameters, metadata)}


def build_predict_request(
    request: dict[str, Any], tokenizer: Tokenizer, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Tokenise and left-pad the prompts into TensorFlow Serving's columnar predict request."""
    eos = metadata["tokenizer"]["eos_token_id"]
    pad = metadata["tokenizer"]["pad_token_id"]
    encoded = [[eos, *enc.ids] for enc in tokenizer.encode_batch(request["prompts"])]
    longest = max(len(ids) for ids in encoded)
    context = metadata["generation"]["max_context"]
    if longest + request["max_new_tokens"] > context:
        raise RequestError(
            f"prompt too long: {longest - 1} tokens + max_new_tokens {request['max_new_tokens']}"
            f" exceeds the model's context of {context - 1} tokens"
        )
    seed = request["seed"] if request["seed"] is not None else secrets.randbelow(MAX_SEED)
    return {
        "signature_name": metadata["generation"]["signature"],
        "inputs": {
            "input_ids": [[pad] * (longest - len(ids)) + ids for ids in encoded],
            "attention_mask": [[0] * (longest - len(ids)) + [1] * len(ids) for ids in encoded],
            "max_new_tokens": request["max_new_tokens"],
            "temperature": request["temperature"],
            "top_k": request["top_k"],
            "seed": seed,
        },
    }


def _byte_of_symbol() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the symbol a byte-level token writes each byte as.

    Printable bytes stand for themselves; the others (controls, space, ...) are written as
    U+0100, U+0101, ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [byte for byte in range(256) if byte not in printable]
    table = {chr(byte): byte for byte in printable}
    table.update({chr(0x100 + n): byte for n, byte in enumerate(others)})
    return table


_BYTE_OF_SYMBOL = _byte_of_symbol()
# A character's bytes that can stand unfinished at the end: a UTF-8 character has at most 4.
_UNFINISHED_BYTES = 3


def _ends_inside_a_character(ids: list[int], tokenizer: Tokenizer) -> bool:
    """Whether the bytes of ``ids`` end with a character begun but not finished.

    Every byte-level token holds at least one byte, so the last three tokens hold any such
    unfinished character whole.
    """
    symbols = "".join(tokenizer.id_to_token(i) or "" for i in ids[-_UNFINISHED_BYTES:])
    tail = bytes(_BYTE_OF_SYMBOL[s] for s in symbols if s in _BYTE_OF_SYMBOL)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(tail, final=False)
    pending, _ = decoder.getstate()
    return bool(pending)


def decode_text(ids: list[int], tokenizer: Tokenizer) -> str:
    """The text of ``ids``, without a character that the last tokens only began.

    ``max_new_tokens`` can cut a character between its bytes, which the tokenizer decodes as
    one U+FFFD at the end of the text: that one is left out. A whole U+FFFD the model
    generated (its three bytes complete) stays.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if text.endswith("\ufffd") and _ends_inside_a_character(ids, tokenizer):
        return text[:-1]
    return text


def decode_outputs(outputs: dict[str, Any], tokenizer: Tokenizer) -> list[dict[str, str]]:
    ids, lengths = outputs["generated_ids"], outputs["lengths"]
    return [
        {"generated_text": decode_text(list(row[:n]), tokenizer)}
        for row, n in zip(ids, lengths, strict=True)
    ]


def _quality(params: list[str]) -> float:
    """A media range's ``q`` (1 when absent; 0 when it is not a number)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header admits ``application/json`` (no header admits anything).

    As RFC 9110 says: the most specific media range that matches (``application/json``, then
    ``application/*``, then ``*/*``) gives the quality, and a quality of 0 refuses.
    """
    if not accept or not accept.strip():
        return True
    specificity = {"application/json": 2, "application/*": 1, "*/*": 0}
    best: tuple[int, float] | None = None
    for media_range in accept.split(","):
        media_type, *params = (part.strip().lower() for part in media_range.split(";"))
        rank = specificity.get(media_type)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, _quality(params))
    return best is not None and best[1] > 0


def input_handler(data: Any, context: Any) -> str:
    accept = getattr(context, "accept_header", None)
    if not accepts_json(accept):
        # Refused before the model runs: this handler answers only JSON.
        raise RequestError(f"unsupported accept type {accept!r}: accept application/json")
    metadata, tokenizer = _model_files()
    body = data.read() if hasattr(data, "read") else data
    request = parse_request(body, getattr(context, "request_content_type", None), metadata)
    return json.dumps(build_predict_request(request, tokenizer, metadata))


def output_handler(response: Any, context: Any) -> tuple[str, str]:
    if response.status_code != 200:
        raise ValueError(f"TensorFlow Serving answered {response.status_code}: {response.text}")
    _, tokenizer = _model_files()
    return json.dumps(decode_outputs(response.json()["outputs"], tokenizer)), "application/json"
