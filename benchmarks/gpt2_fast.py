"""GPT-2 decoding variants for the benchmarks, as switches on ``tweetgen_build.gpt2.GPT2Serving``.

The library's module has every change below built in (``static``, with ``xla`` as its
``jit_compile`` option); ``FastGPT2Serving`` turns them off one by one to measure each, with
the same signatures, loop, sampling, transformers blocks and weights:

- ``embed``: look the token embeddings up in the *value* of the tied embedding matrix
  (ReadVariableOp + GatherV2) and hand the model ``inputs_embeds``. The model's own lookup is a
  ResourceGather on the variable, which puts that variable into TensorFlow's copy-on-read mode
  for the rest of the process; from then on every dense read of it (the vocabulary head, once
  per generated token) copies all 154 MB of GPT-2 small's embedding matrix.
- ``head``: apply the vocabulary head to the last position only, as a plain MatMul on the
  matrix's value (transformers applies it to every position, on a one-element list of
  variables that is packed into a new tensor: another copy).
- ``static``: the library's static key/value cache and hand-written decoding step (implies
  ``embed`` and ``head``); without it, transformers' layers run every step on a growing cache.
- ``xla``: compile the decoding step with XLA (``jit_compile``). With ``static`` it compiles
  once per (batch size, cache bucket); on the growing cache it compiles once per cache length:
  fast once every length has been seen, slow on first use of every new prompt length.

Variant names join these with ``+`` (see ``benchmarks.gpt2_variants``): ``embed+head`` is the
library's former module (growing cache), ``static`` its default, ``static+xla`` its
``jit_compile=True``.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tweetgen_build.gpt2 import GPT2Serving

from benchmarks.gpt2_variants import FastOptions


class FastGPT2Serving(GPT2Serving):
    """``GPT2Serving`` with the changes that ``options`` switches on (and only those)."""

    def __init__(self, model: Any, eos_id: int, options: FastOptions) -> None:
        static = options.static_cache
        super().__init__(
            model, eos_id, static_cache=static, jit_compile=options.jit_step and static
        )
        self.options = options
        # The static step reads the matrix's value itself: embed and head come with it.
        self.own_embedding = options.own_embedding or static
        self.last_position_head = options.last_position_head or static
        self._jit_growing_step = (
            tf.function(self._growing_step, jit_compile=True)
            if options.jit_step and not static
            else None
        )

    def for_export(self) -> GPT2Serving:
        """Itself: each variant is exported as it is measured."""
        return self

    def _model_inputs(self, input_ids: tf.Tensor) -> dict[str, Any]:
        if self.own_embedding:
            return super()._model_inputs(input_ids)
        return {"input_ids": input_ids}

    def _next_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        if self.last_position_head:
            return super()._next_logits(hidden)
        # As transformers' head does it: every position, on the packed list of weights.
        return tf.matmul(hidden, self.model.transformer.wte.weights, transpose_b=True)[:, -1, :]

    def _growing_step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        return super().step(token, cache)

    def step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        if self._jit_growing_step is not None:
            logits, new_cache = self._jit_growing_step(token, cache)
            return logits, new_cache
        return super().step(token, cache)

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        if self.last_position_head:
            return super().full_logits(input_ids, attention_mask)
        hidden, _ = self._forward(input_ids, attention_mask, None, None)
        return tf.matmul(hidden, self.model.transformer.wte.weights, transpose_b=True)


def serving_for(model: Any, eos_id: int, options: FastOptions) -> GPT2Serving:
    """The module that ``options`` names."""
    return FastGPT2Serving(model, eos_id, options)
