"""Both models' size settings: plain dataclasses, importable without TensorFlow.

``tweetgen train`` checks a preset and its ``--set`` overrides against them before it imports
TensorFlow, so a misspelt setting is reported at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
