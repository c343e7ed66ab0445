"""The serving rules: request bounds, rewards, sticky assignment, signed generation ids."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tweetgen.domain.serving import (
    MAX_PROMPT_CHARS,
    AssignmentError,
    FeedbackRequest,
    GenerateRequest,
    GenerationIds,
    ServingLimits,
    assign_variant,
    new_user_id,
    normalise_reward,
)

# --------------------------------------------------------------------------- requests


def test_an_empty_generate_request_takes_the_defaults() -> None:
    request = GenerateRequest.model_validate_json("{}")
    assert (request.prompt, request.max_new_tokens, request.temperature, request.top_k) == (
        "",
        32,
        0.8,
        40,
    )
    assert request.user_id is None and request.seed is None


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ('{"prompt": "' + "x" * (MAX_PROMPT_CHARS + 1) + '"}', "prompt", "at most 280"),
        ('{"max_new_tokens": 0}', "max_new_tokens", "greater than or equal to 1"),
        ('{"max_new_tokens": "5"}', "max_new_tokens", "valid integer"),
        ('{"max_new_tokens": 5.5}', "max_new_tokens", "valid integer"),
        ('{"temperature": 2.5}', "temperature", "less than or equal to 2"),
        ('{"temperature": -1}', "temperature", "greater than or equal to 0"),
        ('{"top_k": 5000}', "top_k", "less than or equal to 1000"),
        ('{"prompt": 7}', "prompt", "valid string"),
        ('{"promt": "typo"}', "promt", "Extra inputs"),
        ('{"user_id": "a b"}', "user_id", "pattern"),
        ('{"user_id": "x' + "y" * 200 + '"}', "user_id", "pattern"),
    ],
)
def test_a_bad_generate_request_names_the_field_and_the_problem(
    body: str, field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        GenerateRequest.model_validate_json(body)
    errors = raised.value.errors()
    assert any(e["loc"][0] == field and reason in e["msg"] for e in errors), errors


def test_sql_in_a_prompt_is_just_text() -> None:
    prompt = "'; DROP TABLE generations; --"
    assert GenerateRequest.model_validate_json(f'{{"prompt": "{prompt}"}}').prompt == prompt


def test_limits_refuse_more_tokens_than_the_deployment_allows() -> None:
    limits = ServingLimits.from_environment({"MAX_NEW_TOKENS": "16"})
    assert limits.check(GenerateRequest(max_new_tokens=16)) == []
    (problem,) = limits.check(GenerateRequest(max_new_tokens=17))
    assert "at most 16" in problem
    with pytest.raises(ValueError, match="MAX_NEW_TOKENS must be an integer"):
        ServingLimits.from_environment({"MAX_NEW_TOKENS": "lots"})
    with pytest.raises(ValueError, match="between 1 and 256"):
        ServingLimits.from_environment({"MAX_NEW_TOKENS": "0"})


@pytest.mark.parametrize(
    ("reward", "value"), [("like", 1.0), ("dislike", 0.0), (1, 0.0), (3, 0.5), (5, 1.0)]
)
def test_rewards_are_normalised_to_the_unit_interval(reward: str | int, value: float) -> None:
    request = FeedbackRequest.model_validate({"reward": reward})
    assert normalise_reward(request.reward) == value


@pytest.mark.parametrize("reward", ["LIKE", "love", 0, 6, 3.0, True, None, [1]])
def test_other_rewards_are_refused_with_the_choices(reward: object) -> None:
    with pytest.raises(ValidationError, match="'like', 'dislike' or a rating from 1 to 5"):
        FeedbackRequest.model_validate({"reward": reward})


# --------------------------------------------------------------------------- assignment

weights_strategy = st.dictionaries(
    st.sampled_from(["lstm", "gpt2", "ngram", "big"]),
    st.floats(min_value=0.01, max_value=100, allow_nan=False),
    min_size=1,
)


@given(user=st.text(min_size=1, max_size=40), weights=weights_strategy)
def test_a_user_keeps_their_variant_while_the_weights_stand(
    user: str, weights: dict[str, float]
) -> None:
    first = assign_variant(user, weights)
    assert first in weights
    assert all(assign_variant(user, dict(weights)) == first for _ in range(3))
    # Order of the mapping does not matter either.
    assert assign_variant(user, dict(reversed(list(weights.items())))) == first


@settings(max_examples=10, deadline=None)
@given(
    share=st.floats(min_value=0.05, max_value=0.95),
    salt=st.text(max_size=8),
)
def test_shares_of_many_users_follow_the_weights(share: float, salt: str) -> None:
    users = 10_000
    counts = Counter(
        assign_variant(f"user-{i}", {"lstm": share, "gpt2": 1 - share}, salt) for i in range(users)
    )
    observed = counts["lstm"] / users
    # Five standard errors: a true assignment practically never fails this.
    assert abs(observed - share) < 5 * math.sqrt(share * (1 - share) / users)


def test_weights_need_not_sum_to_one_and_zero_weights_get_no_one() -> None:
    weights = {"lstm": 3.0, "gpt2": 0.0, "ngram": -1.0, "broken": float("nan")}
    assert {assign_variant(f"u{i}", weights) for i in range(500)} == {"lstm"}
    with pytest.raises(AssignmentError, match="no variant has a positive weight"):
        assign_variant("u", {"lstm": 0.0})
    with pytest.raises(AssignmentError):
        assign_variant("u", {})


def test_moving_weight_moves_only_the_users_it_has_to() -> None:
    users = [f"user-{i}" for i in range(5000)]
    before = {u: assign_variant(u, {"gpt2": 0.5, "lstm": 0.5}) for u in users}
    after = {u: assign_variant(u, {"gpt2": 0.6, "lstm": 0.4}) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    # Only lstm users move to gpt2, about a tenth of everyone.
    assert all(before[u] == "lstm" and after[u] == "gpt2" for u in moved)
    assert 0.07 < len(moved) / len(users) < 0.13


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        ({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 2.0, "b": 1.0, "c": 1.0}, "a"),
        # A canary joins: users leave the others for it only.
        ({"gpt2": 1.0, "lstm": 1.0}, {"gpt2": 1.0, "lstm": 1.0, "bert": 0.2}, "bert"),
        ({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 0.5, "c": 3.0}, "b"),
    ],
)
def test_users_of_variants_whose_weights_stand_never_move_between_them(
    before: dict[str, float], after: dict[str, float], changed: str
) -> None:
    users = [f"user-{i}" for i in range(20_000)]
    first = {u: assign_variant(u, before) for u in users}
    then = {u: assign_variant(u, after) for u in users}
    moved = [u for u in users if first[u] != then[u]]
    # Every move is to or from the variant whose weight changed...
    assert all(changed in (first[u], then[u]) for u in moved)
    # ...and no more users move than its share changed by (within sampling error).
    share = {
        name: weights.get(changed, 0.0) / sum(weights.values())
        for name, weights in (("before", before), ("after", after))
    }
    expected = abs(share["after"] - share["before"])
    assert abs(len(moved) / len(users) - expected) < 5 * math.sqrt(expected / len(users)) + 1e-9


@settings(max_examples=10, deadline=None)
@given(weights=st.lists(st.floats(min_value=0.05, max_value=10), min_size=3, max_size=3))
def test_shares_of_three_variants_follow_the_weights(weights: list[float]) -> None:
    names = ["a", "b", "c"]
    users = 12_000
    counts = Counter(
        assign_variant(f"user-{i}", dict(zip(names, weights, strict=True))) for i in range(users)
    )
    for name, weight in zip(names, weights, strict=True):
        share = weight / sum(weights)
        assert abs(counts[name] / users - share) < 5 * math.sqrt(share * (1 - share) / users)


def test_anonymous_users_get_distinct_ids_that_the_api_accepts() -> None:
    ids = {new_user_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(GenerateRequest(user_id=i).user_id == i for i in ids)


# --------------------------------------------------------------------------- generation ids


def test_an_issued_id_names_its_variant_and_only_its_key_accepts_it() -> None:
    ids = GenerationIds(b"k" * 32)
    generation_id = ids.issue("gpt2")
    assert ids.variant_of(generation_id) == "gpt2"
    assert GenerationIds(b"other-key-of-32-bytes-----------").variant_of(generation_id) is None
    token, variant, signature = generation_id.split(".")
    assert ids.variant_of(f"{token}.lstm.{signature}") is None  # the variant is signed too
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert ids.variant_of(f"{token}.{variant}.{flipped}") is None
    for bogus in ("", "abc", "' OR 1=1 --", generation_id + "x", generation_id.upper()):
        assert ids.variant_of(bogus) is None


def test_ids_are_unique_and_the_key_must_be_strong_enough() -> None:
    ids = GenerationIds(b"k" * 16)
    assert len({ids.issue("lstm") for _ in range(1000)}) == 1000
    with pytest.raises(ValueError, match="at least 16 bytes"):
        GenerationIds(b"short")
    with pytest.raises(ValueError, match="not a SageMaker variant name"):
        ids.issue("no spaces")
