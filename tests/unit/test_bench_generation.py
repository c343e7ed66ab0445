"""The generation benchmark's count of each model's arithmetic per generated token."""

from __future__ import annotations

import keras
from tweetgen_build.gpt2 import GPT2Settings, build_gpt2
from tweetgen_build.lstm import LSTMConfig, build_lstm

from benchmarks.generation_speedup import multiply_adds


def test_multiply_adds_count_every_matrix_but_the_lookup_tables() -> None:
    keras.utils.set_random_seed(0)
    vocab, embedding, units = 300, 16, 24
    lstm = build_lstm(
        LSTMConfig(vocab_size=vocab, embedding_dim=embedding, units=units, num_layers=2)
    )
    # Two layers' input and recurrent kernels (4 gates each) and the vocabulary head; the
    # embedding table is only looked up.
    gates = 4 * units
    expected = embedding * gates + units * gates + units * gates + units * gates + units * vocab
    assert multiply_adds(lstm, lstm.embedding.weights) == expected
    assert multiply_adds(lstm, []) == expected + vocab * embedding

    width, layers = 32, 2
    gpt2 = build_gpt2(
        GPT2Settings(vocab_size=vocab, n_positions=64, n_embd=width, n_layer=layers, n_head=2)
    )
    # Per block: the query/key/value projection, attention's output, the two MLP matrices
    # (4 times as wide); then the token table as the tied head. The position table is only
    # looked up, and the biases and norms are no products.
    block = width * 3 * width + width * width + 2 * width * 4 * width
    assert multiply_adds(gpt2, gpt2.transformer.wpe.weights) == layers * block + vocab * width
