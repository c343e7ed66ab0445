"""The sampling and loop pieces shared by both models, on toy logits (no training)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tweetgen_build.generation import generate_loop, select_next, step_uniforms


def test_step_uniforms_are_in_range_deterministic_and_roughly_uniform() -> None:
    seeds = tf.constant([0, 1, 2**40 + 7], tf.int64)
    u = step_uniforms(seeds, tf.constant(20000)).numpy()
    assert u.shape == (20000, 3)
    assert (u > 0).all() and (u < 1).all()
    np.testing.assert_array_equal(u, step_uniforms(seeds, tf.constant(20000)).numpy())
    for row in u.T:  # each row's draws over the steps: mean 1/2 and a flat histogram
        assert abs(row.mean() - 0.5) < 0.01
        counts, _ = np.histogram(row, bins=10, range=(0, 1))
        assert counts.min() > 1800 and counts.max() < 2200
    # Different rows and steps give different draws, uncorrelated from one step to the next.
    assert not np.allclose(u[:, 0], u[:, 1])
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03
    # A row's draws depend on its own seed only, not on the batch it is in.
    np.testing.assert_array_equal(u[:, 2], step_uniforms(seeds[2:], tf.constant(20000))[:, 0])
    # Many seeds at one step are uniform too (a batch's rows at the same token).
    across = step_uniforms(tf.range(20000, dtype=tf.int64), tf.constant(1)).numpy()[0]
    counts, _ = np.histogram(across, bins=10, range=(0, 1))
    assert counts.min() > 1800 and counts.max() < 2200


def test_select_next_is_greedy_at_zero_temperature_and_top1() -> None:
    logits = tf.constant([[0.1, 3.0, 0.2, 2.9], [5.0, 0.0, 0.0, 0.0]])
    seeds = tf.constant([1, 2], tf.int64)
    greedy = select_next(logits, tf.constant(0.0), tf.constant(40), seeds, tf.constant(0))
    assert greedy.numpy().tolist() == [1, 0]
    top1 = select_next(logits, tf.constant(1.0), tf.constant(1), seeds, tf.constant(0))
    assert top1.numpy().tolist() == [1, 0]


def test_greedy_picks_the_largest_logit_even_among_fewer_finite_values_than_k() -> None:
    """Greedy decoding draws 0, which picks the first candidate whatever the others' weights:
    at temperature 0 a candidate of logit -inf has weight NaN, which the search passes over."""
    rng = np.random.default_rng(5)
    logits = np.full((4, 8000), -np.inf, np.float32)
    for row, finite in enumerate((3, 39, 40, 8000)):
        ids = rng.choice(8000, size=finite, replace=False)
        logits[row, ids] = rng.normal(size=finite)
    seeds = tf.range(4, dtype=tf.int64)
    for top_k in (40, 0, 1):
        for temperature in (0.0, -1.0):
            greedy = select_next(
                tf.constant(logits),
                tf.constant(temperature),
                tf.constant(top_k),
                seeds,
                tf.constant(3),
            )
            assert greedy.numpy().tolist() == np.argmax(logits, axis=-1).tolist()
    # Sampling from the same rows never picks a -inf logit.
    for step in range(10):
        sampled = select_next(
            tf.constant(logits), tf.constant(1.0), tf.constant(40), seeds, tf.constant(step)
        ).numpy()
        assert np.isfinite(logits[np.arange(4), sampled]).all()


def test_sampling_stays_within_top_k_and_follows_the_distribution() -> None:
    probs = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = tf.constant(np.log(np.maximum(probs, 1e-12))[None, :].repeat(4000, 0), tf.float32)
    seeds = tf.range(4000, dtype=tf.int64)
    top2 = select_next(logits, tf.constant(1.0), tf.constant(2), seeds, tf.constant(0)).numpy()
    assert set(top2.tolist()) == {0, 1}
    # Renormalised over the top 2: 0.5/0.8 = 0.625 for token 0.
    assert abs((top2 == 0).mean() - 0.625) < 0.03
    full = select_next(logits, tf.constant(1.0), tf.constant(0), seeds, tf.constant(0)).numpy()
    frequencies = np.bincount(full, minlength=5) / len(full)
    np.testing.assert_allclose(frequencies, probs, atol=0.03)


def _counting_model(vocab: int, eos_at: dict[int, int]) -> tuple[Any, Any]:
    """A toy model whose next token is (last token + 1), or eos when a row reaches a set length."""

    def logits_for(last: tf.Tensor, produced: tf.Tensor) -> tf.Tensor:
        nxt = (last + 1) % vocab
        limits = tf.constant([eos_at.get(i, 10**6) for i in range(2)])[: tf.shape(last)[0]]
        stop = limits <= produced
        nxt = tf.where(stop, 0, nxt)
        return tf.one_hot(nxt, vocab) * 10.0

    def prefill(ids: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, Any]:
        produced = tf.zeros([tf.shape(ids)[0]], tf.int32)
        return logits_for(ids[:, -1], produced), produced

    def step(token: tf.Tensor, produced: tf.Tensor) -> tuple[tf.Tensor, Any]:
        produced = produced + 1
        return logits_for(token, produced), produced

    return prefill, step


def test_loop_stops_rows_at_end_of_text_and_reports_lengths() -> None:
    prefill, step = _counting_model(50, {0: 3})
    out = generate_loop(
        prefill,
        step,
        lambda c: tf.TensorShape([None]),
        tf.constant([[0, 5], [0, 20]]),
        tf.ones([2, 2], tf.int32),
        tf.constant(6),
        tf.constant(0.0),
        tf.constant(1),
        tf.constant(0, tf.int64),
        0,
    )
    ids, lengths = out["generated_ids"].numpy(), out["lengths"].numpy()
    assert ids[0].tolist() == [6, 7, 8, 0, 0, 0]  # eos, then eos padding
    assert ids[1].tolist() == [21, 22, 23, 24, 25, 26]
    assert lengths.tolist() == [3, 6]


def test_loop_ends_early_when_every_row_is_done_and_accepts_zero_tokens() -> None:
    prefill, step = _counting_model(50, {0: 1, 1: 2})
    out = generate_loop(
        prefill,
        step,
        lambda c: tf.TensorShape([None]),
        tf.constant([[0, 5], [0, 9]]),
        tf.ones([2, 2], tf.int32),
        tf.constant(30),
        tf.constant(0.0),
        tf.constant(1),
        tf.constant(0, tf.int64),
        0,
    )
    assert out["generated_ids"].shape[1] == 3  # not 30
    assert out["lengths"].numpy().tolist() == [1, 2]
    none = generate_loop(
        prefill,
        step,
        lambda c: tf.TensorShape([None]),
        tf.constant([[0, 5]]),
        tf.ones([1, 2], tf.int32),
        tf.constant(0),
        tf.constant(0.0),
        tf.constant(1),
        tf.constant(0, tf.int64),
        0,
    )
    assert none["generated_ids"].shape == (1, 0)


def test_top_k_candidates_equal_tf_top_k() -> None:
    from tweetgen_build.generation import top_k_candidates

    rng = np.random.default_rng(3)
    for vocab, k in [(8000, 40), (8003, 40), (8000, 1), (100, 6), (100, 7), (33, 33), (5, 2)]:
        # Normal draws (no ties): the ids are tf.math.top_k's too, in its order.
        logits = tf.constant(rng.normal(size=(3, vocab)).astype(np.float32))
        values, ids = top_k_candidates(logits, tf.constant(k))
        expected_values, expected_ids = tf.math.top_k(logits, k=k)
        np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
        np.testing.assert_array_equal(ids.numpy(), expected_ids.numpy())
    # Mostly -inf: a row with 100 finite values, one whose top k lies in a single block, and
    # one with fewer than k finite values (the k-th largest block maximum is -inf).
    sparse = np.full((3, 8000), -np.inf, np.float32)
    sparse[:, rng.choice(8000, size=100, replace=False)] = rng.normal(size=100)
    sparse[1, :16] = 50.0 + np.arange(16)
    sparse[2] = -np.inf
    sparse[2, rng.choice(8000, size=10, replace=False)] = rng.normal(size=10)
    values, ids = top_k_candidates(tf.constant(sparse), tf.constant(40))
    expected_values, expected_ids = tf.math.top_k(sparse, k=40)
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
    np.testing.assert_array_equal(ids.numpy()[:, :10], expected_ids.numpy()[:, :10])
    np.testing.assert_array_equal(ids.numpy()[:2], expected_ids.numpy()[:2])
    # Ties: equal values come out lowest id first where their blocks' maxima are equal too.
    flat = tf.zeros([2, 1000])
    _, ids = top_k_candidates(flat, tf.constant(20))
    assert ids.numpy().tolist() == [list(range(20))] * 2


def test_top_k_candidates_put_the_lowest_id_of_the_largest_value_first() -> None:
    """Greedy decoding takes the first candidate: it must be tf.argmax's choice, whatever ties.

    Equal values in blocks of different maxima come out in the order of those maxima, so only
    the values are compared with tf.math.top_k where they tie.
    """
    from tweetgen_build.generation import top_k_candidates

    rng = np.random.default_rng(11)
    # Few distinct values: every row ties at its maximum in several blocks, and below it.
    logits = rng.integers(0, 4, size=(6, 8000)).astype(np.float32)
    logits[0, 5000] = 9.0  # one row with a single largest value, late in the vocabulary
    logits[1, [4000, 17, 7999]] = 9.0  # its largest value in three blocks
    values, ids = top_k_candidates(tf.constant(logits), tf.constant(40))
    expected_values, _ = tf.math.top_k(logits, k=40)
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
    np.testing.assert_array_equal(ids.numpy()[:, 0], tf.argmax(logits, axis=-1).numpy())
    assert ids.numpy()[1, 0] == 17
    # Every id holds the value it comes with, and no id comes twice.
    np.testing.assert_array_equal(np.take_along_axis(logits, ids.numpy(), -1), values.numpy())
    assert all(len(set(row)) == 40 for row in ids.numpy().tolist())


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_a_widened_head_keeps_the_logits_and_hides_the_extra_ids(parts: int) -> None:
    from tweetgen_build.generation import block_width, head_logits, part_sizes, sampling_head

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    kernel = rng.normal(size=(8, 50)).astype(np.float32)
    bias = rng.normal(size=50).astype(np.float32)
    assert block_width(50) == 64 and block_width(64) == 64
    for with_bias in (True, False):
        for batch in (None, tf.constant(3)):
            head = sampling_head(
                tf.constant(kernel),
                tf.constant(bias) if with_bias else None,
                parts=parts,
                batch=batch,
            )
            # The kernel's rows in parts; 50 ids are widened to 64, so there is a bias (-inf
            # past the vocabulary), repeated for every row where the batch is given.
            assert [k.shape.as_list() for k in head.kernels] == [
                [rows, 64] for rows in part_sizes(8, parts)
            ]
            assert [b.shape.as_list() for b in head.bias] == [[64] if batch is None else [3, 64]]
            logits = head_logits(tf.constant(x), head).numpy()
            assert logits.shape == (3, 64)
            np.testing.assert_allclose(
                logits[:, :50], x @ kernel + (bias if with_bias else 0.0), rtol=1e-5, atol=1e-5
            )
            assert np.all(np.isneginf(logits[:, 50:]))
    # A tied table [vocab, d] of whole blocks and no bias stays without one, split or not.
    table = rng.normal(size=(64, 8)).astype(np.float32)
    head = sampling_head(tf.constant(table), vocab_axis=0, parts=parts, batch=tf.constant(3))
    assert head.bias == ()
    assert [k.shape.as_list() for k in head.kernels] == [[64, r] for r in part_sizes(8, parts)]


def test_part_sizes() -> None:
    from tweetgen_build.generation import part_sizes

    assert part_sizes(128, 1) == [128]
    assert part_sizes(128, 2) == [64, 64]
    assert part_sizes(8, 3) == [3, 3, 2]
    for parts in (0, 9):
        with pytest.raises(ValueError, match=f"splits into 1 to 8 parts, not {parts}"):
            part_sizes(8, parts)


def test_sampling_never_picks_a_widened_id_even_from_the_whole_width() -> None:
    from tweetgen_build.generation import _pick, head_logits, sampling_head, sampling_plan

    rng = np.random.default_rng(6)
    head = sampling_head(tf.constant(rng.normal(size=(4, 50)).astype(np.float32)), parts=2)
    logits = head_logits(tf.constant(rng.normal(size=(16, 4)).astype(np.float32)), head)
    # top_k 0 means the whole width (64 here), at a high temperature, draws near 1.
    for step in range(20):
        picked = select_next(
            logits,
            tf.constant(5.0),
            tf.constant(0),
            tf.range(16, dtype=tf.int64),
            tf.constant(step),
        )
        assert int(tf.reduce_max(picked)) < 50
    nearly_one = tf.constant(1.0 - 1e-7)
    plan = sampling_plan(tf.constant(0.2), tf.constant(64), logits)
    picked = _pick(logits, plan, tf.fill([16, 1], nearly_one))
    assert int(tf.reduce_max(picked)) < 50
