"""The GPT-2 generator: transformers' TFGPT2LMHeadModel, from a config or a pretrained checkpoint.

transformers 4.57 is the last line with TensorFlow classes; they run on tf-keras (Keras 2). The
exported SavedModel needs neither transformers nor tf-keras to load.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import tensorflow as tf

from tweetgen_build.configs import GPT2Settings, check_row_groups
from tweetgen_build.errors import InputError, error_line, printable
from tweetgen_build.generation import (
    GeneratorServing,
    Head,
    Unsaved,
    bias_rows,
    left_pad_positions,
    sampling_head,
    widen_logits,
    with_bias,
)
from tweetgen_build.tokenizer import EOS_ID


class _PinnedOnPurpose(logging.Filter):
    """Drops transformers' notice that its TensorFlow classes go in v5: this project pins the
    last line that has them (see above), and the notice, at every model built, told users to
    migrate from what they cannot change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("TensorFlow and JAX classes are deprecated")


logging.getLogger("transformers.modeling_tf_utils").addFilter(_PinnedOnPurpose())


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
    A checkpoint that does not load is an :class:`InputError` naming it.
    """
    from transformers import TFGPT2LMHeadModel

    local = Path(path_or_name)
    from_pt = local.is_dir() and not (local / "tf_model.h5").exists()
    try:
        return TFGPT2LMHeadModel.from_pretrained(path_or_name, from_pt=from_pt)
    except Exception as exc:
        raise _unloadable(path_or_name, "model", exc) from None


def load_pretrained_tokenizer(path_or_name: str) -> Any:
    """The byte-level BPE tokenizer that ships with a pretrained GPT-2 checkpoint.

    A checkpoint without one (or that does not load) is an :class:`InputError` naming it.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path_or_name).backend_tokenizer
    except Exception as exc:
        raise _unloadable(path_or_name, "tokenizer", exc) from None


def _unloadable(path_or_name: str, part: str, exc: Exception) -> InputError:
    """A checkpoint that transformers or the hub client cannot load, as one line.

    They raise many kinds of errors (OSError for a missing file, huggingface_hub's validation
    error for a name the hub refuses, AttributeError for a tokenizer without a fast backend...),
    none of which should reach the user as a traceback.
    """
    return InputError(
        f"--init-from {printable(path_or_name)}: cannot load the checkpoint's {part}"
        f" ({type(exc).__name__}: {printable(error_line(exc))})"
    )


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


# A pair of weight values: a linear layer's (kernel, bias) or a layer norm's (gamma, beta).
Pair = tuple[tf.Tensor, tf.Tensor]


def _normalize(x: tf.Tensor, epsilon: float) -> tf.Tensor:
    """A layer norm without its gamma and beta (see ``_folded``)."""
    centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(centered * centered, axis=-1, keepdims=True)
    return centered * tf.math.rsqrt(variance + epsilon)


def _layer_norm(x: tf.Tensor, norm: Pair, epsilon: float) -> tf.Tensor:
    gamma, beta = norm
    return _normalize(x, epsilon) * gamma + beta


def _folded(norm: Pair, linear: Pair, columns: tf.Tensor | None = None) -> Pair:
    """A layer norm's gamma and beta folded into the linear layer that reads it:
    ``layer_norm(x) @ W + b == normalize(x) @ (gamma[:, None] * W) + (beta @ W + b)``; with
    ``columns``, each output column also scaled by its factor.

    Done once per request (``GPT2Serving._decoding``): each decoding step then runs two
    operations fewer per layer norm (one fewer for the attention's scale), and the loop carries
    four tensors fewer per block. With the GELU below and the AddN of ``_residual``, tiny GPT-2
    served in turns on a 2-core AMD EPYC (200 rounds at batch 8) was 1.04 times as fast, with
    the same tokens; alone, on a Xeon, neither had been measurably faster.
    """
    gamma, beta = norm
    kernel, bias = linear
    kernel, bias = gamma[:, None] * kernel, tf.linalg.matvec(kernel, beta, transpose_a=True) + bias
    if columns is not None:
        kernel, bias = kernel * columns, bias * columns
    return kernel, bias


# tanh GELU (transformers' "gelu_new", GPT-2's, and "gelu_fast"): 0.5 x (1 + tanh(z)) is
# x * sigmoid(2 z), with z = sqrt(2 / pi) (x + 0.044715 x^3): six operations where
# tf.nn.gelu takes eight.
_GELU_LINEAR = 2.0 * (2.0 / math.pi) ** 0.5
_GELU_CUBIC = _GELU_LINEAR * 0.044715
TANH_GELU = ("gelu_new", "gelu_fast")


def _gelu(x: tf.Tensor) -> tf.Tensor:
    return x * tf.sigmoid(x * (_GELU_LINEAR + _GELU_CUBIC * (x * x)))


def _value(variable: Any) -> tf.Tensor:
    return tf.convert_to_tensor(variable)


def _conv1d(layer: Any) -> Pair:
    """transformers' Conv1D as the values of its (kernel, bias)."""
    return _value(layer.weight), tf.reshape(_value(layer.bias), [-1])


def _norm(layer: Any) -> Pair:
    """A layer norm's (gamma, beta) values."""
    return _value(layer.gamma), _value(layer.beta)


def _bias_rows(linear: Pair, batch: tf.Tensor) -> Pair:
    """The kernel, and the bias repeated for every row of the batch (see ``_apply``)."""
    kernel, bias = linear
    return kernel, bias_rows(bias, batch)


def _apply(x: tf.Tensor, linear: Pair) -> tf.Tensor:
    """MatMul, then Add of the bias rows [batch, n] that ``_bias_rows`` made for the request.

    Grappler fuses a MatMul and the Add of a bias [n] into one operation, which oneDNN runs
    (with a kernel that is not a graph constant, as a variable's value is not) about 2.5 times as
    long as the MatMul alone at these sizes: 13 to 16 microseconds against 5.5 for a [1 or 8, 64]
    by [64, 192] product on a 2-core Xeon (Sapphire Rapids). A bias of the batch's shape is not
    fused. Tiny GPT-2, served in turns on that machine: 1.07 times as fast at batch 1, 1.10 at
    batch 8; with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), both forms took the same time.
    """
    kernel, bias = linear
    return tf.matmul(x, kernel) + bias


def _apply_rows(x: tf.Tensor, linear: Pair) -> tf.Tensor:
    """``x`` [batch * positions, n] through a linear layer of ``_Decoding``, whose bias comes as
    rows of the batch [batch, n] (all equal): its first row, added to every position's."""
    kernel, bias = linear
    return tf.matmul(x, kernel) + bias[:1]


def _residual(x: tf.Tensor, inputs: tf.Tensor, linear: Pair) -> tf.Tensor:
    """``x + _apply(inputs, linear)`` as one AddN of the residual, the product and the bias rows."""
    kernel, bias = linear
    return tf.add_n([x, tf.matmul(inputs, kernel), bias])


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
    """Softmax over the first axis (the cache's slots: see ``GPT2Serving._decode_step``).

    Plain element-wise ops: for one query row, oneDNN's Softmax costs more than the arithmetic.
    """
    e = tf.exp(x - tf.reduce_max(x, axis=0))
    return e / tf.reduce_sum(e, axis=0)


class _Block(NamedTuple):
    """One block's weights for the decoding step, each bias as rows of the batch (_apply); the
    two layer norms' gamma and beta folded into the layers that read them (_folded), and the
    attention's 1 / sqrt(head_dim) into its queries."""

    attention: Pair
    projection: Pair
    feed_forward: Pair
    output: Pair


class _Decoding(NamedTuple):
    """What every decoding step of a request reads and none changes, prepared once per request:
    no variable is read, and no mask or index rebuilt, inside the loop."""

    blocks: tuple[_Block, ...]
    final_norm: Pair
    head: Head | tuple[()]  # the widened head, or () (see _sampling_head)
    prompt_bias: tf.Tensor  # [slots, batch, 1]: the prompt's padding, never visible
    # With XLA, [slots, slots, 1, 1]: row s hides the slots after slot s; else () (the step
    # attends to the slots written so far only).
    future: tf.Tensor | tuple[()]
    positions: tf.Tensor  # the position embeddings' value
    table: tf.Tensor  # the token embeddings' value


class GPT2Serving(GeneratorServing):
    """GPT-2's serving module: the key/value cache, the attention mask and the last position.

    Two ways to decode:

    - ``static_cache=True`` (the default): a hand-written pass over the prompt (``_prompt_pass``)
      and a hand-written step per new token, over the same layers' weights: the step
      writes each new key and value into a cache allocated once per request (the prompt plus the
      token budget, rounded up to ``cache_bucket`` positions: by default 1 without XLA and
      ``CACHE_BUCKET`` with it), and attends to the slots written so far (with XLA, whose
      shapes must not change from token to token, to every slot, those not yet written masked).
      It runs far fewer operations per token than transformers' layers (attention for one query
      row as element-wise products and sums: oneDNN's BatchMatMul and Softmax cost more than the
      arithmetic at that size). Up to ``WIDEN_MAX_ELEMENTS``, its
      vocabulary head is the tied table widened once per request (``sampling_head``), so its
      logits come out as wide as the sampler's blocks; in a SavedModel, once at export
      (``for_export``, which builds a module with ``head_snapshot=True``).
    - ``static_cache=False``: transformers' layers, over the prompt and then with their growing
      cache (``past_key_values``, one concatenation per token and layer).

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
        row_groups: int = 1,
        head_snapshot: bool = False,
    ) -> None:
        super().__init__(name="gpt2_serving")
        if cache_bucket is None:
            cache_bucket = CACHE_BUCKET if jit_compile else 1
        if cache_bucket < 1:
            raise ValueError(f"cache_bucket must be >= 1, not {cache_bucket}")
        if jit_compile and not static_cache:
            raise ValueError("jit_compile needs the static cache (a growing cache recompiles)")
        self.row_groups = check_row_groups(row_groups)
        # The variables, not the Keras model (see ``Unsaved``): they are what the signatures read.
        self._keras = Unsaved(model)
        self.weights = list(model.weights)
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
        # With ``head_snapshot`` (``for_export``), the widened head [d, width] is copied from the
        # tied table now, into a variable of this module, instead of at every request.
        self._head_kernel: tf.Variable | None = None
        self._head_bias: tuple[tf.Tensor, ...] = ()
        if head_snapshot and static_cache and self.widen_head:
            head = sampling_head(self._table(), vocab_axis=0)
            (rows,) = head.kernels
            self._head_kernel = tf.Variable(tf.transpose(rows), trainable=False, name="head")
            self._head_bias = head.bias

    def for_export(self) -> GeneratorServing:
        """A module over the same model whose widened, transposed vocabulary head is a copy of
        the tied table taken now, saved with the SavedModel, instead of one made at every request
        (``_sampling_head``); this module itself where it has no such head (XLA, the growing
        cache, a table above ``WIDEN_MAX_ELEMENTS``).

        Taken when the model is exported, after training (``tweetgen train`` builds the module
        before it trains), never when this module was built: the copy is of the weights that the
        SavedModel serves. This module keeps reading the table at every call. With each request
        on its own thread, nothing overlaps the per-request transpose (about 0.35 ms of a tiny
        GPT-2's request of eight prompts in a trace); in turns on a 2-core AMD EPYC (AVX-512),
        with the same tokens, the tiny GPT-2 was 1.05-1.07 times as fast at batch 1 and 1.03 or
        more at batch 8 (300 rounds, each order), ``small`` 1.10 and 0.98 (60 rounds).
        The SavedModel holds the table twice (tiny: 2 MB more, ``small``: 8 MB).
        """
        if not (self.static_cache and self.widen_head) or self._head_kernel is not None:
            return self
        return GPT2Serving(
            self.model,
            self.eos_id,
            static_cache=self.static_cache,
            cache_bucket=self.cache_bucket,
            jit_compile=self.jit_compile,
            row_groups=self.row_groups,
            head_snapshot=True,
        )

    @property
    def model(self) -> Any:
        """transformers' ``TFGPT2LMHeadModel`` whose weights this module serves."""
        return self._keras.value

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
            *state, decoding = cache
            logits, *rest = self._decode(token, *state, decoding)
            return logits, (*rest, decoding)
        past, mask, last_position = cache
        mask = tf.concat([mask, tf.ones_like(token)[:, None]], axis=1)
        position = last_position + 1
        hidden, new_past = self._forward(token[:, None], mask, position[:, None], past)
        return self._next_logits(hidden), (tuple(new_past), mask, position)

    def cache_invariants(self, cache: Any) -> Any:
        if self.static_cache:
            keys, values, _, _, decoding = cache
            layer = tf.TensorShape([None, None, self.n_head, self.head_dim])
            return (
                tuple(layer for _ in keys),
                tuple(layer for _ in values),
                tf.TensorShape([None]),
                tf.TensorShape([]),
                tf.nest.map_structure(lambda tensor: tensor.shape, decoding),
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
        """The tied table widened once per request (``sampling_head``) and transposed to
        [d, vocab], for a plain MatMul at every token; ``()`` where the table is not widened
        (``widen_head``: with XLA, or above ``WIDEN_MAX_ELEMENTS``).

        At batch 1 the loop used to multiply by the table [vocab, d] itself (MatMul with
        ``transpose_b``), chosen by a branch at every token; the branch cost more than that
        layout saved. Transposed for every batch size, served in turns on a 2-core AMD EPYC:
        tiny GPT-2 1.10 times as fast at batch 1 and 1.02 at batch 8, ``small`` 1.13 and 1.04,
        with the same tokens.
        """
        if not self.widen_head:
            return ()
        if self._head_kernel is not None:  # see for_export
            bias = tuple(bias_rows(row, batch) for row in self._head_bias)
            return Head((tf.convert_to_tensor(self._head_kernel),), bias)
        head = sampling_head(self._table(), vocab_axis=0, batch=batch)
        (rows,) = head.kernels
        return head._replace(kernels=(tf.transpose(rows),))

    def _head_logits(self, hidden: tf.Tensor, decoding: _Decoding) -> tf.Tensor:
        """Logits of hidden states [batch, d]: widened to whole sampler blocks where the
        request's head is (see _sampling_head), else the table's own (the sampler pads them)."""
        head = decoding.head
        if not head:
            return _vocab_head(hidden, decoding.table)
        (weights,) = head.kernels
        return with_bias(tf.matmul(hidden, weights), head)

    def _decoding(self, attention_mask: tf.Tensor, slots: tf.Tensor) -> _Decoding:
        """The request's constants for every decoding step (see ``_Decoding``)."""
        main = self.model.transformer
        batch = tf.shape(attention_mask)[0]
        width = self.n_head * self.head_dim
        queries = tf.constant([self.head_dim**-0.5] * width + [1.0] * (2 * width))
        blocks = tuple(
            _Block(
                _bias_rows(_folded(_norm(block.ln_1), _conv1d(block.attn.c_attn), queries), batch),
                _bias_rows(_conv1d(block.attn.c_proj), batch),
                _bias_rows(_folded(_norm(block.ln_2), _conv1d(block.mlp.c_fc)), batch),
                _bias_rows(_conv1d(block.mlp.c_proj), batch),
            )
            for block in main.h
        )
        # Additive attention bias over the cache slots: the prompt's padding is never visible;
        # with XLA (which attends to every slot), the free slots become visible one per step.
        padding = tf.cast(1 - attention_mask, tf.float32) * -1e9
        prompt_bias = tf.pad(padding, [[0, 0], [0, slots - tf.shape(attention_mask)[1]]])
        future: tf.Tensor | tuple[()] = ()
        if self.jit_compile:
            slot = tf.range(slots)
            future = tf.where(slot[None, :] > slot[:, None], -1e9, 0.0)[:, :, None, None]
        return _Decoding(
            blocks=blocks,
            final_norm=_norm(main.ln_f),
            head=self._sampling_head(batch),
            prompt_bias=tf.transpose(prompt_bias)[:, :, None],
            future=future,
            positions=_value(main.wpe.embeddings),
            table=self._table(),
        )

    def generation_prefill(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, budget: tf.Tensor
    ) -> tuple[tf.Tensor, Any]:
        if not self.static_cache:
            return self.prefill(input_ids, attention_mask)
        positions = left_pad_positions(attention_mask)
        prompt_length = tf.shape(input_ids)[1]
        slots = self.cache_length(input_ids, budget)
        decoding = self._decoding(attention_mask, slots)
        hidden, keys, values = self._prompt_pass(input_ids, attention_mask, positions, decoding)
        pad = [[0, slots - prompt_length], [0, 0], [0, 0], [0, 0]]
        keys = tuple(tf.pad(key, pad) for key in keys)
        values = tuple(tf.pad(value, pad) for value in values)
        logits = self._head_logits(hidden, decoding)
        return logits, (keys, values, positions[:, -1], prompt_length, decoding)

    def _prompt_pass(
        self,
        input_ids: tf.Tensor,
        attention_mask: tf.Tensor,
        positions: tf.Tensor,
        decoding: _Decoding,
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...], tuple[tf.Tensor, ...]]:
        """The left-padded prompt through every block at once: the last position's hidden state
        (after the final layer norm) and each layer's keys and values, slot-major
        [positions, batch, n_head, head_dim] (see ``_decode_step``).

        The same computation as transformers' TFBlock over the whole prompt, on the request's
        ``_Decoding`` weights (the layer norms and the attention's scale folded in), as
        ``_decode_step`` is for one token: a position attends to the prompt's tokens up to
        itself, never to its padding. Padding positions' own outputs are computed and never
        read (their keys and values are hidden from every later step by ``prompt_bias``).

        It replaced transformers' layers over the prompt (about 320 operations for the tiny
        model, each linear layer's MatMul and bias fused, which oneDNN runs slower: see
        ``_apply``). Same tokens; in turns on a 2-core Zen 4 EPYC (150 rounds), tiny GPT-2 1.02
        times as fast at batch 1 and 1.03 at batch 8; ``small`` the same (0.99 and 1.01, 40
        rounds).
        """
        main = self.model.transformer
        batch, length = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        width = self.n_head * self.head_dim
        x = tf.gather(decoding.table, input_ids) + tf.gather(decoding.positions, positions)
        x = tf.reshape(x, [-1, width])  # [batch * positions, width]: plain MatMuls below
        # [batch, 1, query, key]: the keys up to the query's own position that are not padding.
        visible = tf.logical_and(
            tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)[None, None],
            tf.cast(attention_mask, tf.bool)[:, None, None, :],
        )
        bias = tf.where(visible, 0.0, -1e9)
        heads = [batch, length, 3, self.n_head, self.head_dim]
        keys: list[tf.Tensor] = []
        values: list[tf.Tensor] = []
        for layer, weights in zip(main.h, decoding.blocks, strict=True):
            a = _normalize(x, layer.ln_1.epsilon)
            q, k, v = tf.unstack(tf.reshape(_apply_rows(a, weights.attention), heads), axis=2)
            scores = tf.einsum("bqhd,bkhd->bhqk", q, k) + bias
            attended = tf.einsum("bhqk,bkhd->bqhd", tf.nn.softmax(scores), v)
            x = x + _apply_rows(tf.reshape(attended, [-1, width]), weights.projection)
            m = self._activation(layer)(
                _apply_rows(_normalize(x, layer.ln_2.epsilon), weights.feed_forward)
            )
            x = x + _apply_rows(m, weights.output)
            keys.append(tf.transpose(k, [1, 0, 2, 3]))
            values.append(tf.transpose(v, [1, 0, 2, 3]))
        last = tf.reshape(x, [batch, length, width])[:, -1, :]
        hidden = _layer_norm(last, decoding.final_norm, main.ln_f.epsilon)
        return hidden, tuple(keys), tuple(values)

    def _decode_step(
        self,
        token: tf.Tensor,
        keys: tuple[tf.Tensor, ...],
        values: tuple[tf.Tensor, ...],
        last_position: tf.Tensor,
        slot: tf.Tensor,
        decoding: _Decoding,
    ) -> tuple[Any, ...]:
        """One token through every block, its key and value written into cache slot ``slot``.

        The same computation as transformers' TFBlock (pre-norm attention and MLP with the
        model's activation: ``_activation``), on the same weights, for a single position, read
        from the request's ``_Decoding`` (whose linear layers carry the layer norms' gamma and
        beta and the attention's scale).
        """
        main = self.model.transformer
        position = last_position + 1
        x = tf.gather(decoding.table, token) + tf.gather(decoding.positions, position)

        # The cache is slot-major, [slots, batch, n_head, head_dim]: this token's key and value
        # for every row and head are one contiguous piece (one row of the cache), and the slots
        # written so far are its first ones, a slice that copies nothing. Without XLA the step
        # attends to those only, so the attention costs what the tokens so far need (slot-major
        # against the former [batch, n_head, slots, head_dim] cache, every slot masked: tiny
        # GPT-2 served in turns on a 2-core AMD EPYC, 1.07x as fast at batch 8; `small`, 1.15x at
        # batch 1 and 1.04x at batch 8). XLA needs the same shapes at every token: it attends to
        # every slot and hides those after this one.
        def written(cache: tf.Tensor) -> tf.Tensor:
            return cache if self.jit_compile else cache[: slot + 1]

        if self.jit_compile:
            bias = decoding.prompt_bias + tf.gather(decoding.future, slot)
        else:
            bias = written(decoding.prompt_bias)
        # Without XLA, this token's row is written into the cache's own buffer (InplaceUpdate
        # aliases its input): TensorScatterUpdate copied the whole cache at every token and
        # layer, since inside the loop it cannot take over its input's buffer. The buffer is the
        # request's own (``generation_prefill`` pads it into being) and nothing reads a slot
        # before this step has written it: the previous token's reads all lead to this token.
        # Tiny GPT-2 served in turns on a 2-core AMD EPYC, 200 rounds: 1.09x as fast at batch 8.
        # XLA updates its buffers in place by itself.
        where = tf.reshape(slot, [1, 1] if self.jit_compile else [1])

        def write(cache: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
            if self.jit_compile:
                return tf.tensor_scatter_nd_update(cache, where, item)
            return tf.raw_ops.InplaceUpdate(x=cache, i=where, v=item)

        # Shapes with -1 for the batch: constants, not a Shape, a slice and a Pack per token.
        # The query, key and value come out as [1, batch, n_head, head_dim]: one row of the
        # cache each, and the query broadcast along the slots.
        heads = [1, -1, 3, self.n_head, self.head_dim]
        new_keys: list[tf.Tensor] = []
        new_values: list[tf.Tensor] = []
        for layer, weights, k_cache, v_cache in zip(
            main.h, decoding.blocks, keys, values, strict=True
        ):
            a = _normalize(x, layer.ln_1.epsilon)
            q, k, v = tf.unstack(tf.reshape(_apply(a, weights.attention), heads), axis=2)
            k_cache = write(k_cache, k)
            v_cache = write(v_cache, v)
            # [slots, batch, n_head]: q broadcast along the slots, its leading axis.
            scores = tf.reduce_sum(q * written(k_cache), axis=-1) + bias
            attended = tf.reduce_sum(_softmax(scores)[..., None] * written(v_cache), axis=0)
            merged = tf.reshape(attended, [-1, self.n_head * self.head_dim])
            x = _residual(x, merged, weights.projection)
            m = self._activation(layer)(
                _apply(_normalize(x, layer.ln_2.epsilon), weights.feed_forward)
            )
            x = _residual(x, m, weights.output)
            new_keys.append(k_cache)
            new_values.append(v_cache)
        hidden = _layer_norm(x, decoding.final_norm, main.ln_f.epsilon)
        if self.jit_compile:  # XLA fuses the widening into the product
            logits = widen_logits(_vocab_head(hidden, decoding.table))
        else:
            logits = self._head_logits(hidden, decoding)
        return logits, tuple(new_keys), tuple(new_values), position, slot + 1

    def _activation(self, layer: Any) -> Callable[[tf.Tensor], tf.Tensor]:
        """The MLP's activation in the decoding step: the model's own (a checkpoint may use
        another than GPT-2's), or the same tanh GELU in fewer operations."""
        if self.model.config.activation_function in TANH_GELU:
            return _gelu
        activation: Callable[[tf.Tensor], tf.Tensor] = layer.mlp.act
        return activation

    # --- scoring ------------------------------------------------------------------------------

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        hidden, _ = self._forward(input_ids, attention_mask, None, None)
        return tf.einsum("btd,vd->btv", hidden, self._table())

    def token_budget(self, input_ids: tf.Tensor, max_new_tokens: tf.Tensor) -> tf.Tensor:
        # Never past the position table: the last usable position is n_positions - 1.
        return tf.minimum(max_new_tokens, self.n_positions - tf.shape(input_ids)[1])
