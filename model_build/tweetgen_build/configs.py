"""Both models' size settings: plain dataclasses, importable without TensorFlow.

``tweetgen train`` checks a preset and its ``--set`` overrides against them before it imports
TensorFlow, so a misspelt setting or a value of the wrong type is reported at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, get_type_hints

# The largest count or size any option or model setting takes: TensorFlow and the tokenizers
# library hold them in 32-bit integers and fail on larger ones after minutes of work
# (OverflowError from the tokenizer trainer, ValueError from TensorFlow).
MAX_INT = 2**31 - 1
# Seeds: what numpy's and TensorFlow's seeding take.
MAX_SEED = 2**32 - 1
# The most row groups a serving module may decode a batch in (``tweetgen train --row-groups``,
# see tweetgen_build.generation.GeneratorServing): each is a copy of the generation loop in the
# exported graph.
MAX_ROW_GROUPS = 8


def check_row_groups(groups: int) -> int:
    """``groups`` if it is a valid ``row_groups`` setting, else ValueError. The command line,
    the build's options and the serving modules all check with it."""
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= MAX_ROW_GROUPS:
        raise ValueError(
            f"row_groups must be an integer from 1 to {MAX_ROW_GROUPS}, not {groups!r}"
        )
    return groups


@dataclass(frozen=True)
class LSTMConfig:
    vocab_size: int
    embedding_dim: int = 256
    units: int = 512
    num_layers: int = 2
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GPT2Settings:
    vocab_size: int
    n_positions: int = 128
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def setting_problem(config: type[LSTMConfig | GPT2Settings], name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the field ``name`` of ``config``, or None.

    ``--set`` values arrive as parsed JSON (or the raw string), so ``units=abc`` is a string
    and ``units=1.5`` a float: either would fail deep inside Keras after the data and the
    tokenizer are done. Every integer field is a size or a count, hence positive; the only
    float field is a dropout rate.
    """
    known = {field.name for field in fields(config)}
    if name not in known:
        return "unknown setting"
    expected = get_type_hints(config)[name]
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, not {type(value).__name__}"
        if value < 1:
            return "must be a positive integer"
        if value > MAX_INT:
            return f"must be at most {MAX_INT}"
    elif expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, not {type(value).__name__}"
        if not math.isfinite(value) or not 0 <= value < 1:
            return "must be a rate from 0 up to (not including) 1"
    return None
