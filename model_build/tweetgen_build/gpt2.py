"""The GPT-2 generator: transformers' TFGPT2LMHeadModel, from a config or a pretrained checkpoint.

transformers 4.57 is the last line with TensorFlow classes; they run on tf-keras (Keras 2). The
exported SavedModel needs neither transformers nor tf-keras to load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from tweetgen_build.generation import GeneratorServing, left_pad_positions
from tweetgen_build.tokenizer import EOS_ID


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


def build_gpt2(settings: GPT2Settings) -> Any:
    """A randomly initialised GPT-2 of the given size (end-of-text is id 0 in our tokenizer)."""
    from transformers import GPT2Config, TFGPT2LMHeadModel

    config = GPT2Config(
        vocab_size=settings.vocab_size,
        n_positions=settings.n_positions,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=settings.dropout,
        embd_pdrop=settings.dropout,
        attn_pdrop=settings.dropout,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
    )
    model = TFGPT2LMHeadModel(config)
    model(tf.zeros([1, 2], tf.int32))
    return model


def load_pretrained_gpt2(path_or_name: str) -> Any:
    """Load GPT-2 weights from a local directory or a hub name (the hub needs network).

    A checkpoint that only has PyTorch weights (``pytorch_model.bin`` / ``model.safetensors``)
    is converted on load (that needs ``torch`` installed); TensorFlow weights load directly.
    The checkpoint's own tokenizer must then be used for the run (see ``load_pretrained_tokenizer``).
    """
    from transformers import TFGPT2LMHeadModel

    local = Path(path_or_name)
    from_pt = local.is_dir() and not (local / "tf_model.h5").exists()
    return TFGPT2LMHeadModel.from_pretrained(path_or_name, from_pt=from_pt)


def load_pretrained_tokenizer(path_or_name: str) -> Any:
    """The byte-level BPE tokenizer that ships with a pretrained GPT-2 checkpoint."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_name).backend_tokenizer


def settings_of(model: Any) -> GPT2Settings:
    c = model.config
    return GPT2Settings(
        vocab_size=c.vocab_size,
        n_positions=c.n_positions,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        dropout=c.resid_pdrop,
    )


class GPT2Serving(GeneratorServing):
    """GPT-2's serving module: the key/value cache, the attention mask and the last position."""

    def __init__(self, model: Any, eos_id: int = EOS_ID) -> None:
        super().__init__(name="gpt2_serving")
        self.model = model
        self.eos_id = eos_id
        self.n_head = model.config.n_head
        self.head_dim = model.config.n_embd // model.config.n_head
        self.n_positions = model.config.n_positions

    def _table(self) -> tf.Tensor:
        """The tied embedding matrix's value.

        Reading the value (instead of the model's own ResourceGather on the variable) keeps the
        variable out of TensorFlow's copy-on-read mode, which otherwise copies the whole matrix
        at every use of the vocabulary head, i.e. at every generated token.
        """
        return tf.convert_to_tensor(self.model.transformer.wte.embeddings)

    def _forward(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, position_ids: Any, past: Any
    ) -> tuple[tf.Tensor, Any]:
        """The last layer's hidden states (after the final layer norm) and the new cache."""
        out = self.model.transformer(
            input_ids=None,
            inputs_embeds=tf.gather(self._table(), input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            training=False,
        )
        return out.last_hidden_state, out.past_key_values

    def _next_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        # The vocabulary head on the last position only: one row, not the whole sequence.
        return tf.matmul(hidden[:, -1, :], self._table(), transpose_b=True)

    def prefill(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tuple[tf.Tensor, Any]:
        positions = left_pad_positions(attention_mask)
        hidden, past = self._forward(input_ids, attention_mask, positions, None)
        cache = (tuple(past), attention_mask, positions[:, -1])
        return self._next_logits(hidden), cache

    def step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        past, mask, last_position = cache
        mask = tf.concat([mask, tf.ones_like(token)[:, None]], axis=1)
        position = last_position + 1
        hidden, new_past = self._forward(token[:, None], mask, position[:, None], past)
        return self._next_logits(hidden), (tuple(new_past), mask, position)

    def cache_invariants(self, cache: Any) -> Any:
        past, _, _ = cache
        layer = tf.TensorShape([2, None, self.n_head, None, self.head_dim])
        return (tuple(layer for _ in past), tf.TensorShape([None, None]), tf.TensorShape([None]))

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        hidden, _ = self._forward(input_ids, attention_mask, None, None)
        return tf.einsum("btd,vd->btv", hidden, self._table())

    def token_budget(self, input_ids: tf.Tensor, max_new_tokens: tf.Tensor) -> tf.Tensor:
        # Never past the position table: the last usable position is n_positions - 1.
        return tf.minimum(max_new_tokens, self.n_positions - tf.shape(input_ids)[1])
