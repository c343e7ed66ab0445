"""The serving API's rules: request bounds, rewards, sticky assignment and generation ids.

Pure code (no AWS, no SQL): the generate and feedback functions, the recorder and the local
stack all apply these, so a request means the same thing wherever it is handled.

- Requests are validated by pydantic models with ``extra="forbid"`` and strict types, so a
  misspelt field or a number sent as a string is a 4xx with a reason, not a silent default.
- Rewards are normalised to [0, 1]: like 1, dislike 0, a rating ``r`` of 1-5 as ``(r - 1) / 4``;
  a reward of at least 0.5 counts as positive.
- Assignment hashes the user onto the variants' current weights: a user keeps their variant
  while the weights stand, and the shares of many users follow the weights.
- Generation ids are signed (HMAC-SHA256 with a key from Secrets Manager), so the feedback
  function can reject an id that this service never issued without asking the database,
  which may be paused or down while the feedback is accepted and queued.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StringConstraints

from tweetgen.domain.aggregation import POSITIVE_REWARD
from tweetgen.domain.events import MAX_PROMPT_CHARS, USER_ID_PATTERN

__all__ = [
    "MAX_PROMPT_CHARS",
    "POSITIVE_REWARD",
    "USER_ID_PATTERN",
    "AssignmentError",
    "FeedbackRequest",
    "GenerateRequest",
    "GenerationIds",
    "ServingLimits",
    "assign_variant",
    "new_user_id",
    "normalise_reward",
    "unit_interval",
]

#: The highest ``max_new_tokens`` a deployment may allow (``MAX_NEW_TOKENS`` picks one below).
MAX_NEW_TOKENS_CEILING = 256
DEFAULT_MAX_NEW_TOKENS_CAP = 64
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 1000

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GenerateRequest(_Strict):
    """``POST /generations``: every field optional, every field bounded."""

    prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)] = ""
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS_CEILING)] = 32
    temperature: Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)] = 0.8
    top_k: Annotated[int, Field(ge=0, le=MAX_TOP_K)] = 40
    seed: Annotated[int, Field(ge=0, le=2**62)] | None = None
    user_id: UserId | None = None


REWARD_CHOICES = "'like', 'dislike' or a rating from 1 to 5"


def _reward(value: Any) -> str | int:
    if value in ("like", "dislike") and isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return value
    raise ValueError(f"reward must be {REWARD_CHOICES}, got {value!r}")


Reward = Annotated[
    str | int,
    PlainValidator(_reward, json_schema_input_type=Literal["like", "dislike"] | int),
]


class FeedbackRequest(_Strict):
    """``POST /generations/{id}/feedback``: ``like``/``dislike`` or a rating from 1 to 5."""

    reward: Reward
    user_id: UserId | None = None


def normalise_reward(reward: str | int) -> float:
    """like 1, dislike 0, a rating ``r`` of 1-5 as ``(r - 1) / 4``."""
    if reward == "like":
        return 1.0
    if reward == "dislike":
        return 0.0
    if isinstance(reward, int) and not isinstance(reward, bool) and 1 <= reward <= 5:
        return (reward - 1) / 4
    raise ValueError(f"a reward is {REWARD_CHOICES}, got {reward!r}")


@dataclass(frozen=True)
class ServingLimits:
    """What one deployment allows beyond the request models' own bounds."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS_CAP

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_CEILING:
            raise ValueError(
                f"MAX_NEW_TOKENS must be between 1 and {MAX_NEW_TOKENS_CEILING}, "
                f"got {self.max_new_tokens}"
            )

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> ServingLimits:
        raw = env.get("MAX_NEW_TOKENS", "").strip()
        if not raw:
            return cls()
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"MAX_NEW_TOKENS must be an integer, got {raw!r}") from None
        return cls(max_new_tokens=value)

    def check(self, request: GenerateRequest) -> list[str]:
        """The reasons ``request`` exceeds this deployment's limits (empty when it does not)."""
        if request.max_new_tokens > self.max_new_tokens:
            return [
                f"max_new_tokens is {request.max_new_tokens}; this service allows at most "
                f"{self.max_new_tokens}"
            ]
        return []


# --------------------------------------------------------------------------- assignment


class AssignmentError(ValueError):
    """No variant can take traffic (no weights, or none above zero)."""


def unit_interval(*parts: str) -> float:
    """A uniform number in [0, 1) from ``parts``: the same parts always give the same number."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_variant(user_id: str, weights: Mapping[str, float], salt: str = "") -> str:
    """The variant ``user_id`` is served by while ``weights`` stand.

    Weighted rendezvous hashing: every variant draws the user a hash ``u`` in (0, 1), and the
    variant with the smallest ``-ln(u) / weight`` serves them, which gives each variant its
    share of users (an exponential race). A weight that changes moves only users between that
    variant and the others, and only as many as the change in its share: users of two variants
    whose weights stand never move between them, whatever a third one does (a canary added,
    the bandit moving traffic). Weights need not sum to 1 (SageMaker's do not); negative, zero
    and non-finite weights take no traffic.
    """
    live = sorted(
        (name, float(weight))
        for name, weight in weights.items()
        if math.isfinite(float(weight)) and float(weight) > 0
    )
    if not live:
        raise AssignmentError(f"no variant has a positive weight: {dict(weights)!r}")
    if len(live) == 1:
        return live[0][0]

    def race(variant: tuple[str, float]) -> float:
        name, weight = variant
        # 1 - u is in (0, 1]: its logarithm is finite.
        return -math.log(1.0 - unit_interval(salt, user_id, name)) / weight

    return min(live, key=race)[0]


def new_user_id() -> str:
    """An anonymous user id, returned to the client so that its next requests stay sticky."""
    return f"anon-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- generation ids


class GenerationIds:
    """Issues and checks generation ids ``<32 hex>.<variant>.<24 hex signature>``.

    The signature covers the token and the variant, so the feedback function learns which
    variant it is about (for its metrics) and that the id is genuine, with no database read.
    """

    SIGNATURE_HEX = 24
    _FORMAT = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9](?:-*[A-Za-z0-9]){0,62})\.([0-9a-f]{24})$")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the generation id key must be at least 16 bytes")
        self._key = key

    def _signature(self, token: str, variant: str) -> str:
        mac = hmac.new(self._key, f"{token}.{variant}".encode("ascii"), hashlib.sha256)
        return mac.hexdigest()[: self.SIGNATURE_HEX]

    def issue(self, variant: str) -> str:
        token = uuid.uuid4().hex
        generation_id = f"{token}.{variant}.{self._signature(token, variant)}"
        if self._FORMAT.fullmatch(generation_id) is None:
            raise ValueError(f"{variant!r} is not a SageMaker variant name")
        return generation_id

    def variant_of(self, generation_id: str) -> str | None:
        """The variant of an id issued with this key; None for any other string."""
        match = self._FORMAT.fullmatch(generation_id)
        if match is None:
            return None
        token, variant, signature = match.groups()
        if not hmac.compare_digest(signature, self._signature(token, variant)):
            return None
        return variant
