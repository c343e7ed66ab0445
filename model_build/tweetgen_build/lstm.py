"""The LSTM generator: embedding, LSTM layer(s), vocabulary logits (Keras 3)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tweetgen_build.configs import LSTMConfig, check_row_groups
from tweetgen_build.generation import (
    GeneratorServing,
    Unsaved,
    head_logits,
    part_sizes,
    sampling_head,
)
from tweetgen_build.tokenizer import EOS_ID


class LSTMLanguageModel(keras.Model):
    """Next-token logits over the vocabulary; states can be carried between calls."""

    def __init__(self, config: LSTMConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embedding = keras.layers.Embedding(config.vocab_size, config.embedding_dim)
        self.rnns = [
            keras.layers.LSTM(config.units, return_sequences=True, return_state=True)
            for _ in range(config.num_layers)
        ]
        self.drop = keras.layers.Dropout(config.dropout)
        self.head = keras.layers.Dense(config.vocab_size)

    def encode(
        self,
        input_ids: tf.Tensor,
        mask: tf.Tensor | None = None,
        states: list[tf.Tensor] | None = None,
        training: bool = False,
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The last layer's outputs at every position (before the vocabulary head) and the
        final [h, c] of every layer.

        Masked (padding) steps carry the state unchanged, so a left-padded prompt ends in the
        same state as the prompt alone.
        """
        x = self.embedding(input_ids)
        new_states: list[tf.Tensor] = []
        for layer_index, rnn in enumerate(self.rnns):
            initial = None if states is None else states[2 * layer_index : 2 * layer_index + 2]
            x, h, c = rnn(x, mask=mask, initial_state=initial, training=training)
            x = self.drop(x, training=training)
            new_states += [h, c]
        return x, new_states

    def call(self, input_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        x, _ = self.encode(input_ids, training=training)
        return self.head(x)


def build_lstm(config: LSTMConfig) -> LSTMLanguageModel:
    model = LSTMLanguageModel(config)
    model(tf.zeros([1, 2], tf.int32))
    return model


class LSTMServing(GeneratorServing):
    """The LSTM's serving module: the prompt's final states are the cache.

    The module saves the TensorFlow variables behind the Keras model's weights, not the Keras
    model. A Keras 3 variable wraps a ``tf.Variable``, and a SavedModel of a ``tf.Module`` that
    tracks the Keras model gets two handles per weight: its signatures read one and its restore
    op fills the other. ``tf.saved_model.load`` matches them through the object graph, but
    TensorFlow Serving runs the signature in a session after the restore op, where every request
    would fail with "Could not find variable lstm_language_model/embeddings"
    (keras-team/keras#20095).
    Tracking the TensorFlow variables themselves, as Keras' own ``ExportArchive`` does, leaves one
    handle per weight, which the restore op fills and the signatures read.
    """

    def __init__(
        self,
        model: LSTMLanguageModel,
        eos_id: int = EOS_ID,
        *,
        head_parts: int = 1,
        row_groups: int = 1,
    ) -> None:
        super().__init__(name="lstm_serving")
        self._keras = Unsaved(model)
        self.weights = [weight.value for weight in model.weights]
        self.eos_id = eos_id
        # The decoding loop's vocabulary head, whole or in parts along its input width (for a
        # model server whose inter-op pool runs them side by side: see tweetgen_build.generation).
        self.head_parts = head_parts
        part_sizes(model.config.units, head_parts)  # a bad count fails here, not at a request
        self.row_groups = check_row_groups(row_groups)

    @property
    def model(self) -> LSTMLanguageModel:
        return self._keras.value

    def prefill(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tuple[tf.Tensor, Any]:
        # A left-padded prompt's last position is its last token: the head runs there only.
        x, states = self.model.encode(input_ids, mask=tf.cast(attention_mask, tf.bool))
        return self.model.head(x[:, -1, :]), states

    def generation_prefill(
        self, input_ids: tf.Tensor, attention_mask: tf.Tensor, budget: tf.Tensor
    ) -> tuple[tf.Tensor, Any]:
        """The prompt's states and the vocabulary head widened and split once per request
        (sampling_head)."""
        x, states = self.model.encode(input_ids, mask=tf.cast(attention_mask, tf.bool))
        dense = self.model.head
        head = sampling_head(
            tf.convert_to_tensor(dense.kernel),
            tf.convert_to_tensor(dense.bias),
            parts=self.head_parts,
            batch=tf.shape(input_ids)[0],
        )
        return head_logits(x[:, -1, :], head), (tuple(states), head)

    def step(self, token: tf.Tensor, cache: Any) -> tuple[tf.Tensor, Any]:
        previous, head = cache
        # One token: call each layer's cell directly (the layer would run a whole RNN loop).
        # The rows of the embedding variable (one ResourceGather): the layer's call also maps
        # negative ids, four more operations per token for ids that are never negative.
        x = tf.gather(self.model.embedding.embeddings.value, token)
        states: list[tf.Tensor] = []
        for index, rnn in enumerate(self.model.rnns):
            x, (h, c) = rnn.cell(x, list(previous[2 * index : 2 * index + 2]), training=False)
            states += [h, c]
        return head_logits(x, head), (tuple(states), head)

    def cache_invariants(self, cache: Any) -> Any:
        states, head = cache
        return (
            tuple(tf.TensorShape([None, s.shape[-1]]) for s in states),
            tf.nest.map_structure(lambda tensor: tensor.shape, head),
        )

    def full_logits(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        x, _ = self.model.encode(input_ids)
        return self.model.head(x)
