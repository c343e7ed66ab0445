"""In-graph generation shared by both models: one SavedModel call per request, not one per token.

Each model supplies ``generation_prefill`` (run the left-padded prompt, return the last logits
and a cache) and ``step`` (feed one token per row and that cache, return the next logits and the
updated cache); the loop, sampling and stopping live here once, so both artifacts expose the
same serving signature.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any, Generic, NamedTuple, TypeVar

import tensorflow as tf

_MASK32 = 0xFFFFFFFF
T = TypeVar("T")

# Serving signature shared by both models (code/inference.py relies on these names).
GENERATE_SIGNATURE = (
    tf.TensorSpec([None, None], tf.int32, name="input_ids"),
    tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.int64, name="seed"),
)
TOKENS_SIGNATURE = (
    tf.TensorSpec([None, None], tf.int32, name="input_ids"),
    tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
)


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """An integer hash on 32-bit values held in int64 (multipliers < 2**31 so nothing overflows)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = tf.bitwise.bitwise_and(x * 0x7FEB352D, _MASK32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = tf.bitwise.bitwise_and(x * 0x2C1B3C6D, _MASK32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _seed_hash(row_seeds: tf.Tensor) -> tf.Tensor:
    """Each row's 64-bit seed folded into 32 bits."""
    seeds = tf.cast(row_seeds, tf.int64)
    lo = tf.bitwise.bitwise_and(seeds, _MASK32)
    hi = tf.bitwise.bitwise_and(tf.bitwise.right_shift(seeds, 32), _MASK32)
    return _mix32(tf.bitwise.bitwise_xor(lo, _mix32(hi + 0x3C6EF372)))


def step_uniforms(row_seeds: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """Uniform(0, 1) draws of shape [steps, rows] that depend only on (row seed, step).

    Sampling takes one draw per row and generated token, all computed once per request. A
    row's draws do not depend on the other rows of the batch, so row ``i`` of a batch sampled
    with seed ``s`` equals that prompt alone sampled with seed ``s + i``, and every step gets a
    fresh draw (a stateless op with one fixed seed would repeat itself at every step).
    """
    step_hash = _mix32(tf.range(tf.cast(steps, tf.int64), dtype=tf.int64) + 0x632BE5AB)
    mixed = tf.bitwise.bitwise_xor(step_hash[:, None], _seed_hash(row_seeds)[None, :])
    bits = _mix32(_mix32(mixed))
    return tf.cast((tf.cast(bits, tf.float64) + 0.5) / 4294967296.0, tf.float32)


# Width of the blocks that ``top_k_candidates`` takes the maximum of.
_BLOCK = 16


class Candidates(NamedTuple):
    """The k largest logits of each row and where they are, as ``block_candidates`` finds them."""

    values: tf.Tensor  # [batch, k], largest first (``tf.math.top_k``'s values)
    positions: tf.Tensor  # [batch, k], each value's place among the chosen blocks' ids
    blocks: tf.Tensor  # [batch, min(k, blocks)], the chosen blocks, largest maximum first


def candidate_ids(positions: tf.Tensor, blocks: tf.Tensor) -> tf.Tensor:
    """The vocabulary ids at ``positions`` [batch, n] among the ids of the chosen ``blocks``."""
    return tf.gather(blocks, positions // _BLOCK, batch_dims=1) * _BLOCK + positions % _BLOCK


def block_choice(k: tf.Tensor, blocks: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """How many blocks hold the k largest values, ``min(k, blocks)``, and the floor's shift:
    0 when each of them has a chosen block (``k`` <= ``blocks``), else -inf, added to the
    smallest chosen maximum, the floor below which no value is among the k largest. Computed
    once per request: every token of a request has the same k."""
    return tf.minimum(k, blocks), tf.where(k <= blocks, 0.0, float("-inf"))


def block_count(logits: tf.Tensor) -> Any:
    """How many blocks of ``_BLOCK`` ids ``logits`` hold once widened (``widen_logits``), counted
    without widening them: a Python int when the vocabulary size is known when the graph is
    built (every model's), else a tensor."""
    width: Any = logits.shape[-1]
    return -(-(tf.shape(logits)[-1] if width is None else width) // _BLOCK)


def block_candidates(
    logits: tf.Tensor, k: tf.Tensor, chosen: tf.Tensor, floor_shift: tf.Tensor
) -> Candidates:
    """The ``k`` largest ``logits`` of each row, in two small top-k passes (see
    ``top_k_candidates``). ``chosen`` and ``floor_shift`` are ``block_choice(k, blocks)``: the
    decoding loop computes them once per request, not at every token."""
    logits = widen_logits(logits)
    grouped = tf.reshape(logits, [-1, block_count(logits), _BLOCK])
    maxima, best = tf.math.top_k(tf.reduce_max(grouped, axis=-1), k=chosen)
    candidates = tf.reshape(tf.gather(grouped, best, batch_dims=1), [-1, chosen * _BLOCK])
    # The k chosen blocks each hold a value at least their smallest maximum, so the k largest
    # values are all at least that. Those below it are raised to just below it (nextafter):
    # still below every one of the k largest, and all equal, which TopK's heap turns away at
    # once. One Maximum, where a mask to -inf was a comparison and a select; a NaN stays NaN.
    floor = tf.math.nextafter(maxima[:, -1:] + floor_shift, float("-inf"))
    values, positions = tf.math.top_k(tf.maximum(candidates, floor), k=k)
    return Candidates(values, positions, best)


def top_k_candidates(logits: tf.Tensor, k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.math.top_k(logits, k)`` (values, ids), in two small passes.

    TensorFlow's TopK over a whole vocabulary costs more than the vocabulary head itself at
    batch 8. The k largest values all lie in the k blocks (of ``_BLOCK`` ids) with the largest
    maxima, so: the maximum of every block, the top k of those, then the top k of those blocks'
    ids (those below the k-th largest maximum first raised to just below it: none is among the
    k largest). The values are ``tf.math.top_k``'s. Equal values come out in the order of their
    blocks' maxima (TopK keeps the order of equal values), then of their ids; so the first id
    is the lowest of those with the largest value (``tf.argmax``'s: greedy decoding's choice),
    and the ids are ``tf.math.top_k``'s wherever no two candidates tie in blocks of different
    maxima. Sorting the chosen blocks by id, to give ``tf.math.top_k``'s ids for every tie,
    was one TopK and two negations more at every token: without them, the tiny models served in
    turns on a 2-core AMD EPYC were 1.05 (LSTM) and 1.06 (GPT-2) times as fast at batch 8
    (1.07 and 1.01 at batch 1), with the same tokens. When k
    is at least the number of blocks, every block is a candidate (no branch: this runs once
    per generated token, inside the loop). With a vocabulary size known when the graph is
    built (every model's), the block arithmetic costs no operation per token.
    """
    found = block_candidates(logits, k, *block_choice(k, block_count(logits)))
    return found.values, candidate_ids(found.positions, found.blocks)


def block_width(vocab: int) -> int:
    """``vocab`` ids rounded up to whole blocks of ``top_k_candidates``."""
    return -(-vocab // _BLOCK) * _BLOCK


def widen_logits(logits: tf.Tensor) -> tf.Tensor:
    """Logits [batch, vocab] padded with -inf to whole blocks (unchanged if they are already).

    With a vocabulary size known when the graph is built this costs no operation when there is
    nothing to pad; a vocabulary head widened by ``sampling_head`` makes that so at every token.
    """
    vocab: Any = logits.shape[-1]
    if vocab is None:
        vocab = tf.shape(logits)[-1]
    padding = (-vocab) % _BLOCK
    if isinstance(padding, int) and not padding:
        return logits
    return tf.pad(logits, [[0, 0], [0, padding]], constant_values=float("-inf"))


# A vocabulary head can run as parts along its input width (each part of the hidden state times
# its rows of the kernel, one AddN summing the products: a Dense kernel's rows are contiguous, so
# the split copies nothing): ``LSTMServing(head_parts=N)``. The parts are independent
# operations, which a model server with an inter-op pool (InferenceInterOpThreads 0) runs side
# by side: the tiny LSTM's head (128 by 8,000) in 2 parts was 1.25x as fast at batch 1 and
# 1.23x at batch 8 on a 2-core Xeon served that way. The stack's default runs each request on
# the thread that received it (InferenceInterOpThreads -1), where the parts run one after the
# other and only add operations: served so, in turns on a 2-core AMD EPYC (AVX2), the whole head
# was 1.10x as fast at batch 1 and at batch 8, so it is the default. GPT-2 keeps its tied table
# whole (splitting it changed no timing).


def part_sizes(width: int, parts: int) -> list[int]:
    """The rows of each part of a head of input width ``width`` in ``parts`` parts: as even as
    they can be, the first ones a row longer where they cannot."""
    if not 1 <= parts <= width:
        raise ValueError(
            f"a head of input width {width} splits into 1 to {width} parts, not {parts}"
        )
    return [width // parts + (i < width % parts) for i in range(parts)]


def bias_rows(bias: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """A bias [n] repeated for every row of the batch, [batch, n]: added to a product as an
    operation of its own rather than fused into the MatMul, which oneDNN then runs slower (see
    ``tweetgen_build.gpt2._apply``)."""
    return tf.tile(bias[None, :], [batch, 1])


class Head(NamedTuple):
    """A vocabulary head as the decoding loop applies it (see ``sampling_head``).

    No None in it: it travels in the loop's state, which holds tensors only.
    """

    kernels: tuple[tf.Tensor, ...]  # the kernel's rows in parts, [rows, width] each
    bias: tuple[tf.Tensor, ...] = ()  # (), or (the bias [width] or its rows [batch, width],)


def sampling_head(
    weights: tf.Tensor,
    bias: tf.Tensor | None = None,
    *,
    vocab_axis: int = -1,
    parts: int = 1,
    batch: tf.Tensor | None = None,
) -> Head:
    """A vocabulary head (``weights`` and ``bias`` [vocab]) widened to whole blocks of ids,
    its kernel split into ``parts`` parts along its input width (``part_sizes``).

    ``vocab_axis``: the axis of ``weights`` that runs over the vocabulary (-1 for a Dense kernel
    [d, vocab], 0 for a tied embedding table [vocab, d], which is split along its columns, a
    copy). The ids past the vocabulary get zero weights and a bias of -inf, so their logits are
    -inf: never a candidate, and the logits come out as wide as ``top_k_candidates`` groups
    them, which then pads nothing at each token. With ``batch``, the bias is repeated for every
    row of the batch (a bias [width] is fused into the MatMul, which oneDNN then runs slower: see
    ``tweetgen_build.gpt2._apply``). Built once per request, outside the decoding loop;
    ``head_logits`` applies it. A head without a bias that needs no widening stays without one
    (GPT-2's tied table): no zeros added to every logit of every token. That was an operation of
    its own, unfused, in GPT-2's decoding step; taking it out changed no timing measurably (tiny
    GPT-2 at batch 8, old and new in turns).
    """
    vocab = weights.shape[vocab_axis]
    if vocab is None:
        raise ValueError("the vocabulary head needs a static vocabulary size")
    input_axis = 1 if vocab_axis in (0, -2) else 0
    sizes = part_sizes(weights.shape[input_axis], parts)
    extra = block_width(vocab) - vocab
    if extra:  # a vocabulary of whole blocks (the default 8,000 is one) needs no copy
        padding = [[0, 0], [0, 0]]
        padding[vocab_axis] = [0, extra]
        weights = tf.pad(weights, padding)
        bias = tf.pad(
            tf.zeros([vocab], weights.dtype) if bias is None else bias,
            [[0, extra]],
            constant_values=float("-inf"),
        )
    kernels = (weights,) if parts == 1 else tuple(tf.split(weights, sizes, axis=input_axis))
    if bias is None:
        return Head(kernels)
    if batch is not None:
        bias = bias_rows(bias, batch)
    return Head(kernels, (bias,))


def with_bias(product: tf.Tensor, head: Head) -> tf.Tensor:
    """``product`` (hidden states times the head's kernel) plus the head's bias, if it has one."""
    return product + head.bias[0] if head.bias else product


def head_logits(x: tf.Tensor, head: Head) -> tf.Tensor:
    """Logits [batch, block_width(vocab)] of hidden states [batch, d] (see ``sampling_head``).

    A head in parts multiplies each part of ``x`` by its rows, and one AddN sums the products
    (and the bias rows).
    """
    if len(head.kernels) == 1:
        return with_bias(tf.matmul(x, head.kernels[0]), head)
    pieces = tf.split(x, [kernel.shape[0] for kernel in head.kernels], axis=-1)
    products = [
        tf.matmul(piece, kernel) for piece, kernel in zip(pieces, head.kernels, strict=True)
    ]
    if head.bias and head.bias[0].shape.rank == 2:
        return tf.add_n([*products, head.bias[0]])
    return with_bias(tf.add_n(products), head)


def candidate_count(top_k: tf.Tensor, vocab: tf.Tensor) -> tf.Tensor:
    """How many candidates sampling draws from: ``top_k``, or all ``vocab`` if <= 0.

    ``vocab`` is the logits' width, which a widened head (``sampling_head``) makes a multiple of
    the sampler's blocks: its extra candidates have weight 0 and are never drawn.
    """
    return tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)


class SamplingPlan(NamedTuple):
    """What picking a token needs that is the same at every token of a request: computed once,
    before the decoding loop (``sampling_plan``)."""

    inverse_temperature: tf.Tensor  # 1/T, or 0 for greedy decoding
    k: tf.Tensor  # how many candidates (``candidate_count``)
    chosen: tf.Tensor  # how many blocks hold them: min(k, blocks) (``block_choice``)
    floor_shift: tf.Tensor  # the floor's shift (``block_choice``)


def sampling_plan(temperature: tf.Tensor, top_k: tf.Tensor, logits: tf.Tensor) -> SamplingPlan:
    """The plan for a request whose logits are as wide as ``logits`` once widened to whole
    blocks (``widen_logits``)."""
    blocks = block_count(logits)
    k = candidate_count(top_k, blocks * _BLOCK)
    return SamplingPlan(_inverse_temperature(temperature), k, *block_choice(k, blocks))


def sampling_draws(uniforms: tf.Tensor, plan: SamplingPlan) -> tf.Tensor:
    """``uniforms`` as ``_pick`` takes them: 0 for greedy decoding, which then picks the first
    candidate, the largest logit (no comparison or select per token to tell the two apart)."""
    return tf.where(plan.inverse_temperature > 0.0, uniforms, 0.0)


def _pick(logits: tf.Tensor, plan: SamplingPlan, draw: tf.Tensor) -> tf.Tensor:
    """The next token per row: top-k sampling by inverse CDF with one draw per row.

    The candidates come sorted by logit, so the first is the greedy choice and the scaled
    weights ``exp((v - v_max) / T)`` start at 1. The chosen candidate is the first whose
    cumulative weight reaches ``draw`` (the row's draw, [batch, 1], from ``sampling_draws``)
    times the total: a binary search of each row (LowerBound); candidates of weight 0 (a logit
    of -inf) are never chosen. A draw of 0 (greedy decoding) chooses the first candidate: no
    cumulative weight is below 0, nor below NaN, the total when ``inverse_temperature`` is 0 and
    some candidate's logit is -inf. Only the chosen candidate's id is computed.

    Against the former sampler (a greedy choice and a select at every token, the count of the
    cumulative weights below the draw, the ids of all k candidates, the floor as a mask to -inf
    chosen by a comparison with k at every token), served in turns on a 2-core AMD EPYC (Zen 4,
    150 rounds): the tiny LSTM 1.05 and 1.02 times as fast at batch 1 and 8, GPT-2 1.04 and
    1.02, with the same tokens.
    """
    found = block_candidates(logits, plan.k, plan.chosen, plan.floor_shift)
    values = found.values
    cumulative = tf.cumsum(tf.exp((values - values[:, :1]) * plan.inverse_temperature), axis=-1)
    at = tf.raw_ops.LowerBound(sorted_inputs=cumulative, values=draw * cumulative[:, -1:])
    return candidate_ids(tf.gather(found.positions, at, batch_dims=1), found.blocks)[:, 0]


def _inverse_temperature(temperature: tf.Tensor) -> tf.Tensor:
    """1/T for sampling; 0 for greedy decoding (temperature <= 0)."""
    return tf.where(temperature > 0.0, 1.0 / tf.maximum(temperature, 1e-6), 0.0)


def select_next(
    logits: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    row_seeds: tf.Tensor,
    step: tf.Tensor,
) -> tf.Tensor:
    """Next token per row: greedy when temperature <= 0, else top-k sampling.

    Sampling only among the top-k candidates keeps the cost independent of the vocabulary size.
    """
    plan = sampling_plan(temperature, top_k, logits)
    uniform = step_uniforms(row_seeds, step + 1)[step][:, None]
    return _pick(logits, plan, sampling_draws(uniform, plan))


class Unsaved(Generic[T]):
    """Holds a value as a plain attribute: a tf.Module neither tracks nor saves what is inside.

    Both serving modules hold their Keras model this way and track its variables themselves:
    a SavedModel of a module that tracks a Keras model also saves the model's Keras metadata and
    a traced function per layer call, which the serving signatures never use (for GPT-2 that
    was most of the time ``tf.saved_model.save`` took).
    """

    def __init__(self, value: T) -> None:
        self.value = value


Cache = Any
Prefill = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, Cache]]
Step = Callable[[tf.Tensor, Cache], tuple[tf.Tensor, Cache]]


def generate_loop(
    prefill: Prefill,
    step: Step,
    cache_invariants: Callable[[Cache], Cache],
    input_ids: tf.Tensor,
    attention_mask: tf.Tensor,
    max_new_tokens: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    seed: tf.Tensor,
    eos_id: int,
) -> dict[str, tf.Tensor]:
    """Generate up to ``max_new_tokens`` per row inside the graph; rows stop at end-of-text.

    Returns ``generated_ids`` [batch, steps] (end-of-text after a row has finished) and
    ``lengths`` [batch], the number of tokens before end-of-text.
    """
    batch = tf.shape(input_ids)[0]
    logits, cache = prefill(input_ids, attention_mask)
    max_new_tokens = tf.maximum(max_new_tokens, 0)
    # What sampling needs, computed once per request: the plan, and one draw per row and
    # token, [steps, batch, 1] as ``_pick`` takes them (no reshape per token).
    plan = sampling_plan(temperature, top_k, logits)
    draws = sampling_draws(
        step_uniforms(
            tf.cast(seed, tf.int64) + tf.range(batch, dtype=tf.int64),
            tf.maximum(max_new_tokens, 1),
        )[:, :, None],
        plan,
    )

    def pick(logits: tf.Tensor, i: tf.Tensor, running: tf.Tensor) -> tf.Tensor:
        token = _pick(logits, plan, draws[i])
        return tf.where(running, token, tf.constant(eos_id, tf.int32))

    # The first token comes from the prompt's logits; each turn of the loop then runs one
    # step on the previous token and picks the next, so the last token costs no forward pass
    # and the loop has no branch in it. A budget of 0 is cut off at the end.
    first = pick(logits, tf.constant(0), tf.ones([batch], tf.bool))
    out = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=tf.TensorShape([None]))
    out = out.write(0, first)

    # ``running``: the rows that have not generated end-of-text yet.
    def cond(
        i: tf.Tensor, token: tf.Tensor, cache: Cache, running: tf.Tensor, out: Any
    ) -> tf.Tensor:
        return tf.logical_and(i < max_new_tokens, tf.reduce_any(running))

    def body(
        i: tf.Tensor, token: tf.Tensor, cache: Cache, running: tf.Tensor, out: Any
    ) -> tuple[Any, ...]:
        logits, cache = step(token, cache)
        token = pick(logits, i, running)
        out = out.write(i, token)
        return i + 1, token, cache, tf.logical_and(running, tf.not_equal(token, eos_id)), out

    loop_vars = (tf.constant(1), first, cache, tf.not_equal(first, eos_id), out)
    invariants = (
        tf.TensorShape([]),
        tf.TensorShape([None]),
        cache_invariants(cache),
        tf.TensorShape([None]),
        tf.TensorShape(None),
    )
    _, _, _, _, out = tf.while_loop(cond, body, loop_vars, shape_invariants=invariants)
    generated = tf.transpose(out.stack())[:, : tf.minimum(out.size(), max_new_tokens)]
    is_eos = tf.cast(tf.equal(generated, eos_id), tf.int32)
    lengths = tf.reduce_sum(1 - tf.minimum(tf.cumsum(is_eos, axis=1), 1), axis=1)
    return {"generated_ids": generated, "lengths": lengths}


def left_pad_positions(attention_mask: tf.Tensor) -> tf.Tensor:
    """Position ids for a left-padded batch: each row's first real token is position 0."""
    return tf.maximum(tf.cumsum(attention_mask, axis=1) - 1, 0)


def token_log_probs(
    logits: tf.Tensor, input_ids: tf.Tensor, attention_mask: tf.Tensor
) -> tf.Tensor:
    """log p(input_ids[:, t+1] | prefix) for a right-padded batch; 0 where the target is padding."""
    targets = input_ids[:, 1:]
    log_probs = tf.nn.log_softmax(tf.cast(logits[:, :-1, :], tf.float32), axis=-1)
    picked = tf.gather(log_probs, targets, batch_dims=2)
    return picked * tf.cast(attention_mask[:, 1:], tf.float32)


GenerateRows = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]


def generate_in_row_groups(
    generate_rows: GenerateRows,
    input_ids: tf.Tensor,
    attention_mask: tf.Tensor,
    groups: int,
    eos_id: int,
) -> dict[str, tf.Tensor]:
    """``generate_rows(ids, mask, first_row)`` on ``groups`` groups of consecutive rows, each
    its own loop, merged into one answer; a batch of fewer rows than groups in one loop.

    Nothing in a loop depends on another, so the model server's inter-op pool runs the groups
    side by side. ``first_row`` (int64) is the group's first row in the batch: a row's draws
    come from the request's seed plus its row number, so every row gets the tokens it gets in
    one loop. A group stops when its own rows have finished; its ids are padded with
    end-of-text to the widest group's, as one loop pads a row that finished early.
    """
    batch = tf.shape(input_ids)[0]

    def whole() -> tuple[tf.Tensor, tf.Tensor]:
        out = generate_rows(input_ids, attention_mask, tf.constant(0, tf.int64))
        return out["generated_ids"], out["lengths"]

    def grouped() -> tuple[tf.Tensor, tf.Tensor]:
        bounds = [batch * i // groups for i in range(groups + 1)]
        outs = [
            generate_rows(input_ids[start:end], attention_mask[start:end], tf.cast(start, tf.int64))
            for start, end in pairwise(bounds)
        ]
        widths = [tf.shape(out["generated_ids"])[1] for out in outs]
        width = tf.reduce_max(tf.stack(widths))
        generated = [
            tf.pad(out["generated_ids"], [[0, 0], [0, width - w]], constant_values=eos_id)
            for out, w in zip(outs, widths, strict=True)
        ]
        lengths = [out["lengths"] for out in outs]
        return tf.concat(generated, 0), tf.concat(lengths, 0)

    generated, lengths = tf.cond(batch >= groups, grouped, whole)
    return {"generated_ids": generated, "lengths": lengths}


class GeneratorServing(tf.Module):
    """What every SavedModel exports: generation, scoring and next-token logits.

    A model supplies ``prefill``, ``step``, ``cache_invariants`` and ``full_logits``; the three
    signatures are defined here once, so both models serve the same contract.

    ``row_groups`` (1 unless a model's module sets it): how many groups of rows ``generate``
    decodes a batch in, each in a loop of its own, side by side on the model server's inter-op
    pool (``generate_in_row_groups``; a server that runs each request on its own thread, the
    stack's default, runs the loops one after the other). A lone request of several prompts may
    be answered sooner, depending on the model and the machine; each loop runs as many
    operations per token as one loop for the whole batch, so requests that arrive together,
    which keep every core busy anyway, cost more CPU in all. Tiny models at batch 8 in 2 groups
    (``benchmarks/serving_threads.py``): on a 2-core Xeon a lone request 1.13 to 1.65 times as
    fast, two clients at once 0.70 to 0.72 times the requests per second; on a 2-core AMD EPYC
    a lone request 1.34 times as fast for the LSTM but 0.77 times for GPT-2, two clients 0.75
    and 0.67 times.
    """

    eos_id: int
    row_groups: int = 1

    def for_export(self) -> GeneratorServing:
        """The module to save as a SavedModel (``packaging.export_saved_model``): this one, or a
        new one over the same model's weights as they are now, with what every request would
        otherwise derive from them kept as variables of its own."""
        return self

    def prefill(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tuple[tf.Tensor, Cache]:
        raise NotImplementedError

    def step(self, token: tf.Tensor, cache: Cache) -> tuple[tf.Tensor, Cache]:
        raise NotImplementedError

    def cache_invariants(self, cache: Cache) -> Cache:
        raise NotImplementedError

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        """Logits at every position of a right-padded batch."""
        raise NotImplementedError

    def token_budget(self, input_ids: tf.Tensor, max_new_tokens: tf.Tensor) -> tf.Tensor:
        """How many tokens may be generated after this prompt (a context limit, if any)."""
        return max_new_tokens

    def generation_prefill(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, budget: tf.Tensor
    ) -> tuple[tf.Tensor, Cache]:
        """``prefill`` for a request that will generate up to ``budget`` tokens.

        A model whose cache is sized per request (GPT-2's static key/value cache) overrides it,
        and so does one that prepares its vocabulary head once per request: the logits of
        generation (here and from ``step``) may be widened by ``sampling_head``, whose extra
        ids have a logit of -inf and are never sampled.
        """
        return self.prefill(input_ids, attention_mask)

    @tf.function(input_signature=GENERATE_SIGNATURE, autograph=False)
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

        def prefill(ids: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, Cache]:
            return self.generation_prefill(ids, mask, budget)

        def generate_rows(
            ids: tf.Tensor, mask: tf.Tensor, first_row: tf.Tensor
        ) -> dict[str, tf.Tensor]:
            return generate_loop(
                prefill,
                self.step,
                self.cache_invariants,
                ids,
                mask,
                budget,
                temperature,
                top_k,
                seed + first_row,
                self.eos_id,
            )

        if self.row_groups == 1:
            return generate_rows(input_ids, attention_mask, tf.constant(0, tf.int64))
        return generate_in_row_groups(
            generate_rows, input_ids, attention_mask, self.row_groups, self.eos_id
        )

    @tf.function(input_signature=TOKENS_SIGNATURE, autograph=False)
    def score(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = self.full_logits(input_ids, attention_mask)
        return {"token_log_probs": token_log_probs(logits, input_ids, attention_mask)}

    @tf.function(input_signature=TOKENS_SIGNATURE, autograph=False)
    def next_token_logits(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        logits, _ = self.prefill(input_ids, attention_mask)
        return {"logits": logits}
