"""Prototypes of faster GPT-2 decoding for the SavedModel, measured by ``gpt2_vs_pytorch --variants``.

What they change against ``tweetgen_build.gpt2.GPT2Serving`` (same signatures, same loop,
same sampling, same transformers blocks and weights):

- ``embed``: look the token embeddings up in the *value* of the tied embedding matrix
  (ReadVariableOp + GatherV2) and hand the model ``inputs_embeds``. The model's own lookup is a
  ResourceGather on the variable, which puts that variable into TensorFlow's copy-on-read mode
  for the rest of the process; from then on every dense read of it (the vocabulary head, once
  per generated token) copies all 154 MB of GPT-2 small's embedding matrix.
- ``head``: apply the vocabulary head to the last position only, as a plain MatMul on the
  matrix's value (transformers applies it to every position, on a one-element list of
  variables that is packed into a new tensor: another copy).
- ``xla``: compile the decoding step with XLA (``jit_compile``). The key/value cache grows by one
  position per token, so XLA compiles one executable per cache length: fast once every length
  has been seen, slow on first use of every new prompt length and batch size.

Variant names join these with ``+`` (see ``benchmarks.gpt2_variants``).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tweetgen_build.generation import (
    GENERATE_SIGNATURE,
    GeneratorServing,
    generate_loop,
    left_pad_positions,
)

from benchmarks.gpt2_variants import FastOptions


class FastGPT2Serving(GeneratorServing):
    """``GPT2Serving`` with the changes that ``options`` switches on."""

    def __init__(self, model: Any, eos_id: int, options: FastOptions) -> None:
        super().__init__(name="gpt2_serving")
        self.model = model
        self.eos_id = eos_id
        self.options = options
        self.n_head = model.config.n_head
        self.head_dim = model.config.n_embd // model.config.n_head
        self.n_positions = model.config.n_positions
        self._step = tf.function(self._step_impl, jit_compile=True) if options.jit_step else None

    def _table(self) -> tf.Tensor:
        """The embedding matrix's value: a read that copies nothing unless copy-on-read is on."""
        return tf.convert_to_tensor(self.model.transformer.wte.embeddings)

    def _forward(
        self,
        input_ids: tf.Tensor,
        attention_mask: tf.Tensor,
        position_ids: tf.Tensor | None,
        past: Any,
    ) -> tuple[tf.Tensor, Any]:
        """Hidden states of the last layer (after the final layer norm) and the new cache."""
        inputs: dict[str, Any] = (
            {"input_ids": None, "inputs_embeds": tf.gather(self._table(), input_ids)}
            if self.options.own_embedding
            else {"input_ids": input_ids}
        )
        out = self.model.transformer(
            **inputs,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            training=False,
        )
        return out.last_hidden_state, out.past_key_values

    def _last_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        if self.options.last_position_head:
            return tf.matmul(hidden[:, -1, :], self._table(), transpose_b=True)
        # As transformers' head does it: every position, on the packed list of weights.
        return tf.matmul(hidden, self.model.transformer.wte.weights, transpose_b=True)[:, -1, :]

    def prefill(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tuple[tf.Tensor, Any]:
        positions = left_pad_positions(attention_mask)
        hidden, past = self._forward(input_ids, attention_mask, positions, None)
        cache = (tuple(past), attention_mask, positions[:, -1])
        return self._last_logits(hidden), cache

    def _step_impl(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        past, mask, last_position = cache
        mask = tf.concat([mask, tf.ones_like(token)[:, None]], axis=1)
        position = last_position + 1
        hidden, new_past = self._forward(token[:, None], mask, position[:, None], past)
        return self._last_logits(hidden), (tuple(new_past), mask, position)

    def step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        if self._step is not None:
            logits, new_cache = self._step(token, cache)
            return logits, new_cache
        return self._step_impl(token, cache)

    def cache_invariants(self, cache: Any) -> Any:
        past, _, _ = cache
        layer = tf.TensorShape([2, None, self.n_head, None, self.head_dim])
        return (tuple(layer for _ in past), tf.TensorShape([None, None]), tf.TensorShape([None]))

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        hidden, _ = self._forward(input_ids, attention_mask, None, None)
        if self.options.last_position_head:
            return tf.einsum("btd,vd->btv", hidden, self._table())
        return tf.matmul(hidden, self.model.transformer.wte.weights, transpose_b=True)

    def token_budget(self, input_ids: tf.Tensor, max_new_tokens: tf.Tensor) -> tf.Tensor:
        return tf.minimum(max_new_tokens, self.n_positions - tf.shape(input_ids)[1])


def _layer_norm(x: tf.Tensor, layer: Any) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + layer.epsilon) * layer.gamma + layer.beta


class StaticCacheGPT2Serving(FastGPT2Serving):
    """``embed+head`` for the prompt; each new token through a hand-written decoding step.

    The step writes into a key/value cache allocated once per request, ``bucket``-rounded to
    the prompt length plus the token budget, so its shapes stay the same from token to token:
    with ``jit`` XLA compiles it once per (batch size, cache bucket), not once per token. The
    step uses the transformers layers' weights as they are (no copy, same SavedModel size).
    """

    def __init__(self, model: Any, eos_id: int, *, jit: bool, bucket: int = 64) -> None:
        super().__init__(model, eos_id, FastOptions(own_embedding=True, last_position_head=True))
        self.bucket = bucket
        self.scale = 1.0 / float(self.head_dim) ** 0.5
        self._decode = tf.function(self._decode_impl, jit_compile=True) if jit else None

    @tf.function(input_signature=GENERATE_SIGNATURE)
    def generate(
        self,
        input_ids: tf.Tensor,
        attention_mask: tf.Tensor,
        max_new_tokens: tf.Tensor,
        temperature: tf.Tensor,
        top_k: tf.Tensor,
        seed: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        budget = tf.maximum(self.token_budget(input_ids, max_new_tokens), 0)
        needed = tf.shape(input_ids)[1] + budget
        cache_length = (needed + self.bucket - 1) // self.bucket * self.bucket

        def prefill(ids: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, Any]:
            return self._static_prefill(ids, mask, cache_length)

        return generate_loop(
            prefill,
            self.step,
            self.cache_invariants,
            input_ids,
            attention_mask,
            budget,
            temperature,
            top_k,
            seed,
            self.eos_id,
        )

    def _static_prefill(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, cache_length: tf.Tensor
    ) -> tuple[tf.Tensor, Any]:
        positions = left_pad_positions(attention_mask)
        hidden, past = self._forward(input_ids, attention_mask, positions, None)
        prompt_length = tf.shape(input_ids)[1]
        pad = [[0, 0], [0, 0], [0, cache_length - prompt_length], [0, 0]]
        keys = tuple(tf.pad(layer[0], pad) for layer in past)
        values = tuple(tf.pad(layer[1], pad) for layer in past)
        slots = tf.pad(attention_mask, [[0, 0], [0, cache_length - prompt_length]])
        cache = (keys, values, slots, positions[:, -1], prompt_length)
        return self._last_logits(hidden), cache

    def _decode_impl(
        self,
        token: tf.Tensor,
        keys: tuple[tf.Tensor, ...],
        values: tuple[tf.Tensor, ...],
        slots: tf.Tensor,
        last_position: tf.Tensor,
        slot: tf.Tensor,
    ) -> tuple[Any, ...]:
        main = self.model.transformer
        table = self._table()
        position = last_position + 1
        x = tf.gather(table, token) + tf.gather(tf.convert_to_tensor(main.wpe.embeddings), position)
        written = tf.one_hot(slot, tf.shape(slots)[1], dtype=slots.dtype)
        slots = tf.maximum(slots, written[None, :])
        bias = (1.0 - tf.cast(slots, tf.float32))[:, None, :] * -1e9
        fresh = tf.cast(written, tf.float32)[None, None, :, None]
        batch = tf.shape(token)[0]
        heads = [batch, self.n_head, self.head_dim]
        new_keys: list[tf.Tensor] = []
        new_values: list[tf.Tensor] = []
        for block, k_cache, v_cache in zip(main.h, keys, values, strict=True):
            a = _layer_norm(x, block.ln_1)
            qkv = tf.matmul(a, block.attn.c_attn.weight) + block.attn.c_attn.bias
            q, k, v = (tf.reshape(part, heads) for part in tf.split(qkv, 3, axis=-1))
            k_cache = k_cache * (1.0 - fresh) + k[:, :, None, :] * fresh
            v_cache = v_cache * (1.0 - fresh) + v[:, :, None, :] * fresh
            scores = tf.einsum("bhd,bhld->bhl", q, k_cache) * self.scale + bias
            attended = tf.einsum("bhl,bhld->bhd", tf.nn.softmax(scores, axis=-1), v_cache)
            merged = tf.reshape(attended, [batch, self.n_head * self.head_dim])
            x = x + tf.matmul(merged, block.attn.c_proj.weight) + block.attn.c_proj.bias
            m = _layer_norm(x, block.ln_2)
            m = tf.nn.gelu(tf.matmul(m, block.mlp.c_fc.weight) + block.mlp.c_fc.bias, True)
            x = x + tf.matmul(m, block.mlp.c_proj.weight) + block.mlp.c_proj.bias
            new_keys.append(k_cache)
            new_values.append(v_cache)
        logits = tf.matmul(_layer_norm(x, main.ln_f), table, transpose_b=True)
        return logits, tuple(new_keys), tuple(new_values), slots, position, slot + 1

    def step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        decode = self._decode if self._decode is not None else self._decode_impl
        logits, *rest = decode(token, *cache)
        return logits, tuple(rest)

    def cache_invariants(self, cache: Any) -> Any:
        keys, values, _, _, _ = cache
        layer = tf.TensorShape([None, self.n_head, None, self.head_dim])
        return (
            tuple(layer for _ in keys),
            tuple(layer for _ in values),
            tf.TensorShape([None, None]),
            tf.TensorShape([None]),
            tf.TensorShape([]),
        )


def serving_for(model: Any, eos_id: int, options: FastOptions) -> GeneratorServing:
    """The prototype module that ``options`` names."""
    if options.static_cache:
        return StaticCacheGPT2Serving(model, eos_id, jit=options.jit_step)
    return FastGPT2Serving(model, eos_id, options)
