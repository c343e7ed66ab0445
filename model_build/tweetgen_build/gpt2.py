"""The GPT-2 generator: transformers' TFGPT2LMHeadModel, from a config or a pretrained checkpoint.

transformers 4.57 is the last line with TensorFlow classes; they run on tf-keras (Keras 2). The
exported SavedModel needs neither transformers nor tf-keras to load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from tweetgen_build.generation import (
    GeneratorServing,
    Head,
    left_pad_positions,
    sampling_head,
    widen_logits,
)
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


# How many cache positions the static key/value cache adds at a time when XLA compiles the
# decoding step: a request's cache holds its prompt and its token budget rounded up to this, so
# XLA sees few distinct shapes (one compilation each). Without XLA the cache holds exactly what
# the request needs: every unused slot would be attended to, masked, at every token.
CACHE_BUCKET = 64

# The largest tied table (vocabulary x width, in elements) whose widened copy, and transposed
# one, are made once per request for the decoding loop (see GPT2Serving._sampling_head). The
# tiny preset's (8,003 x 64) costs a fraction of a millisecond and saves a pad of the logits at
# every token; GPT-2 small's (50,257 x 768) took 8.9 ms to pad and 27 ms to pad and transpose
# per request on a 2-core machine, more than the pads it saves. Above it the loop multiplies by
# the table itself and the sampler pads the logits.
WIDEN_MAX_ELEMENTS = 1 << 22


def _layer_norm(x: tf.Tensor, layer: Any) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + layer.epsilon) * layer.gamma + layer.beta


def _linear(x: tf.Tensor, layer: Any) -> tf.Tensor:
    """transformers' Conv1D on one position; BiasAdd (not Add) lets Grappler fuse it into MatMul."""
    return tf.nn.bias_add(tf.matmul(x, layer.weight), tf.reshape(layer.bias, [-1]))


def _vocab_head(x: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
    """Logits [batch, vocab] of hidden states [batch, d] against the tied table [vocab, d].

    At batch 1 (a matrix-vector product) this is MatMul with ``transpose_b``. Above batch 1 it
    is an einsum, which oneDNN runs as a batched product. Which form is fastest depends on the
    CPU; measured per token inside a loop on a 2-core AVX-512 Xeon, GPT-2 small's head at
    batch 8 took 11.2 ms as an einsum, 13.6 ms as ``transpose(table @ x^T)``
    and 18.7 ms with ``transpose_b``; at batch 2, 9.9, 13.9 and 6.8 ms. On another Xeon,
    ``transpose_b`` took 95 ms at batch 2 against 20 ms for ``transpose(table @ x^T)``.
    """
    return tf.cond(
        tf.shape(x)[0] > 1,
        lambda: tf.einsum("bd,vd->bv", x, table),
        lambda: tf.matmul(x, table, transpose_b=True),
    )


def _softmax(x: tf.Tensor) -> tf.Tensor:
    # Plain element-wise ops: for one query row, oneDNN's Softmax costs more than the arithmetic.
    e = tf.exp(x - tf.reduce_max(x, axis=-1, keepdims=True))
    return e / tf.reduce_sum(e, axis=-1, keepdims=True)


class GPT2Serving(GeneratorServing):
    """GPT-2's serving module: the key/value cache, the attention mask and the last position.

    The prompt runs through transformers' own layers. Each new token then goes through one of
    two decoding steps:

    - ``static_cache=True`` (the default): a hand-written step over the same layers' weights that
      writes each new key and value into a cache allocated once per request (the prompt plus the
      token budget, rounded up to ``cache_bucket`` positions: by default 1 without XLA and
      ``CACHE_BUCKET`` with it) and masks the slots not yet written. Its shapes stay the same
      from token to token, and it runs far fewer operations per token than transformers' layers
      (attention for one query row as element-wise products and sums: oneDNN's BatchMatMul and
      Softmax cost more than the arithmetic at that size). Up to ``WIDEN_MAX_ELEMENTS``, its
      vocabulary head is the tied table widened once per request (``sampling_head``), so its
      logits come out as wide as the sampler's blocks.
    - ``static_cache=False``: transformers' layers with their growing cache (``past_key_values``,
      one concatenation per token and layer).

    ``jit_compile=True`` compiles the static decoding step with XLA (one compilation per batch
    size and cache length, at its first request). It is off by default because the model server
    must allow it: TensorFlow Serving disables XLA:CPU unless started with
    ``--xla_cpu_compilation_enabled``, and then fails such requests ("XLA compilation
    disabled") rather than running them without XLA; the SageMaker TensorFlow Serving container
    does not pass that flag. ``tf.saved_model.load`` in Python allows XLA.
    """

    def __init__(
        self,
        model: Any,
        eos_id: int = EOS_ID,
        *,
        static_cache: bool = True,
        cache_bucket: int | None = None,
        jit_compile: bool = False,
    ) -> None:
        super().__init__(name="gpt2_serving")
        if cache_bucket is None:
            cache_bucket = CACHE_BUCKET if jit_compile else 1
        if cache_bucket < 1:
            raise ValueError(f"cache_bucket must be >= 1, not {cache_bucket}")
        if jit_compile and not static_cache:
            raise ValueError("jit_compile needs the static cache (a growing cache recompiles)")
        self.model = model
        self.eos_id = eos_id
        self.n_head = model.config.n_head
        self.head_dim = model.config.n_embd // model.config.n_head
        self.n_positions = model.config.n_positions
        self.static_cache = static_cache
        self.cache_bucket = cache_bucket
        self.jit_compile = jit_compile
        # With XLA the compiled step widens its own logits (see _decode_step).
        self.widen_head = (
            not jit_compile and model.config.vocab_size * model.config.n_embd <= WIDEN_MAX_ELEMENTS
        )
        self._decode: Callable[..., tuple[Any, ...]] = (
            tf.function(self._decode_step, jit_compile=True) if jit_compile else self._decode_step
        )

    def _table(self) -> tf.Tensor:
        """The tied embedding matrix's value.

        Reading the value (instead of the model's own ResourceGather on the variable) keeps the
        variable out of TensorFlow's copy-on-read mode, which otherwise copies the whole matrix
        at every use of the vocabulary head, i.e. at every generated token.
        """
        return tf.convert_to_tensor(self.model.transformer.wte.embeddings)

    def _model_inputs(self, input_ids: tf.Tensor) -> dict[str, Any]:
        """The token embeddings, looked up in the matrix's value (see ``_table``)."""
        return {"input_ids": None, "inputs_embeds": tf.gather(self._table(), input_ids)}

    def _forward(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, position_ids: Any, past: Any
    ) -> tuple[tf.Tensor, Any]:
        """The last layer's hidden states (after the final layer norm) and the new cache."""
        out = self.model.transformer(
            **self._model_inputs(input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            training=False,
        )
        return out.last_hidden_state, out.past_key_values

    def _next_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        # The vocabulary head on the last position only: one row, not the whole sequence.
        return _vocab_head(hidden[:, -1, :], self._table())

    # --- the growing cache (transformers' layers at every step) -------------------------------

    def prefill(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tuple[tf.Tensor, Any]:
        positions = left_pad_positions(attention_mask)
        hidden, past = self._forward(input_ids, attention_mask, positions, None)
        cache = (tuple(past), attention_mask, positions[:, -1])
        return self._next_logits(hidden), cache

    def step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        if self.static_cache:
            *state, head = cache
            logits, *rest = self._decode(token, *state, head)
            return logits, (*rest, head)
        past, mask, last_position = cache
        mask = tf.concat([mask, tf.ones_like(token)[:, None]], axis=1)
        position = last_position + 1
        hidden, new_past = self._forward(token[:, None], mask, position[:, None], past)
        return self._next_logits(hidden), (tuple(new_past), mask, position)

    def cache_invariants(self, cache: Any) -> Any:
        if self.static_cache:
            keys, values, _, _, _, head = cache
            layer = tf.TensorShape([None, self.n_head, None, self.head_dim])
            return (
                tuple(layer for _ in keys),
                tuple(layer for _ in values),
                tf.TensorShape([None, None]),
                tf.TensorShape([None]),
                tf.TensorShape([]),
                (tf.TensorShape([None, None]), head[1].shape) if head else (),
            )
        past, _, _ = cache
        layer = tf.TensorShape([2, None, self.n_head, None, self.head_dim])
        return (tuple(layer for _ in past), tf.TensorShape([None, None]), tf.TensorShape([None]))

    # --- the static cache ---------------------------------------------------------------------

    def cache_length(self, input_ids: tf.Tensor, budget: tf.Tensor) -> tf.Tensor:
        """Cache slots for this request: the prompt and the budget, rounded up to the bucket.

        The last generated token needs no slot (it is never fed back), so this is at least one
        more than needed.
        """
        needed = tf.shape(input_ids)[1] + tf.maximum(budget, 0)
        return (needed + self.cache_bucket - 1) // self.cache_bucket * self.cache_bucket

    def _sampling_head(self, batch: tf.Tensor) -> Head | tuple[()]:
        """The tied table widened once per request (``sampling_head``), laid out for the batch;
        ``()`` where the table is not widened (``widen_head``: with XLA, or above
        ``WIDEN_MAX_ELEMENTS``).

        One row of hidden states reads the table [vocab, d] row by row (MatMul with
        ``transpose_b``). Above one row it is transposed to [d, vocab] once, for a plain MatMul
        at every token. Per tiny-GPT-2 request of 32 tokens on a 2-core AMD EPYC: at batch 8,
        17.1 ms against 18.2 ms with the einsum on [vocab, d]; at batch 1, 8.5 ms against
        9.3 ms with the transposed table.
        """
        if not self.widen_head:
            return ()
        rows, bias = sampling_head(self._table(), vocab_axis=0)
        return tf.cond(batch > 1, lambda: tf.transpose(rows), lambda: rows), bias

    def _head_logits(self, hidden: tf.Tensor, head: Head | tuple[()]) -> tf.Tensor:
        """Logits of hidden states [batch, d]: widened to whole sampler blocks where ``head``
        is (see _sampling_head), else the table's own (the sampler pads them)."""
        if not head:
            return _vocab_head(hidden, self._table())
        weights, bias = head
        # The bias outside the branches: fused into MatMul, oneDNN runs one row slower.
        product = tf.cond(
            tf.shape(hidden)[0] > 1,
            lambda: tf.matmul(hidden, weights),
            lambda: tf.matmul(hidden, weights, transpose_b=True),
        )
        return tf.nn.bias_add(product, bias)

    def generation_prefill(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, budget: tf.Tensor
    ) -> tuple[tf.Tensor, Any]:
        if not self.static_cache:
            return self.prefill(input_ids, attention_mask)
        positions = left_pad_positions(attention_mask)
        hidden, past = self._forward(input_ids, attention_mask, positions, None)
        head = self._sampling_head(tf.shape(input_ids)[0])
        prompt_length = tf.shape(input_ids)[1]
        free = self.cache_length(input_ids, budget) - prompt_length
        pad = [[0, 0], [0, 0], [0, free], [0, 0]]
        keys = tuple(tf.pad(layer[0], pad) for layer in past)
        values = tuple(tf.pad(layer[1], pad) for layer in past)
        # Additive attention bias over the cache slots: the prompt's padding is never visible;
        # the free slots become visible one per step (see _decode_step).
        padding = tf.cast(1 - attention_mask, tf.float32) * -1e9
        prompt_bias = tf.pad(padding, [[0, 0], [0, free]])
        cache = (keys, values, prompt_bias, positions[:, -1], prompt_length, head)
        return self._head_logits(hidden[:, -1, :], head), cache

    def _decode_step(
        self,
        token: tf.Tensor,
        keys: tuple[tf.Tensor, ...],
        values: tuple[tf.Tensor, ...],
        prompt_bias: tf.Tensor,
        last_position: tf.Tensor,
        slot: tf.Tensor,
        head: Head | tuple[()],
    ) -> tuple[Any, ...]:
        """One token through every block, its key and value written into cache slot ``slot``.

        The same computation as transformers' TFBlock (pre-norm attention and MLP, tanh GELU),
        on the same weights, for a single position.
        """
        main = self.model.transformer
        table = self._table()
        position = last_position + 1
        x = tf.gather(table, token) + tf.gather(tf.convert_to_tensor(main.wpe.embeddings), position)
        batch = tf.shape(token)[0]
        slots = tf.shape(prompt_bias)[1]
        # Slots after this one are not written yet: hide them.
        bias = prompt_bias + tf.where(tf.range(slots) > slot, -1e9, 0.0)[None, :]
        bias = bias[:, None, :]
        # Where this token's key/value goes in every [batch, head] row of the cache.
        rows = tf.reshape(tf.range(batch * self.n_head), [batch, self.n_head])
        where = tf.stack(
            [rows // self.n_head, rows % self.n_head, tf.fill([batch, self.n_head], slot)],
            axis=-1,
        )
        heads = [batch, self.n_head, self.head_dim]
        scale = 1.0 / float(self.head_dim) ** 0.5
        new_keys: list[tf.Tensor] = []
        new_values: list[tf.Tensor] = []
        for block, k_cache, v_cache in zip(main.h, keys, values, strict=True):
            a = _layer_norm(x, block.ln_1)
            qkv = _linear(a, block.attn.c_attn)
            q, k, v = (tf.reshape(part, heads) for part in tf.split(qkv, 3, axis=-1))
            k_cache = tf.tensor_scatter_nd_update(k_cache, where, k)
            v_cache = tf.tensor_scatter_nd_update(v_cache, where, v)
            scores = tf.reduce_sum(q[:, :, None, :] * k_cache, axis=-1) * scale + bias
            attended = tf.reduce_sum(_softmax(scores)[..., None] * v_cache, axis=2)
            merged = tf.reshape(attended, [batch, self.n_head * self.head_dim])
            x = x + _linear(merged, block.attn.c_proj)
            m = _layer_norm(x, block.ln_2)
            m = tf.nn.gelu(_linear(m, block.mlp.c_fc), approximate=True)
            x = x + _linear(m, block.mlp.c_proj)
            new_keys.append(k_cache)
            new_values.append(v_cache)
        hidden = _layer_norm(x, main.ln_f)
        if self.jit_compile:  # XLA fuses the widening into the product
            logits = widen_logits(_vocab_head(hidden, table))
        else:
            logits = self._head_logits(hidden, head)
        return logits, tuple(new_keys), tuple(new_values), prompt_bias, position, slot + 1

    # --- scoring ------------------------------------------------------------------------------

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        hidden, _ = self._forward(input_ids, attention_mask, None, None)
        return tf.einsum("btd,vd->btv", hidden, self._table())

    def token_budget(self, input_ids: tf.Tensor, max_new_tokens: tf.Tensor) -> tf.Tensor:
        # Never past the position table: the last usable position is n_positions - 1.
        return tf.minimum(max_new_tokens, self.n_positions - tf.shape(input_ids)[1])
