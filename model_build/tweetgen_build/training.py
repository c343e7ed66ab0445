"""Training: packed token windows from tf.data, early stopping on validation loss, seeded runs."""

from __future__ import annotations

import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tweetgen_build.tokenizer import EOS_ID

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 32
    sequence_length: int = 64
    learning_rate: float = 1e-3
    patience: int = 2
    seed: int = 42
    clipnorm: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Same seed, same data order, same initial weights, same result (op determinism on)."""
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()


def pack_windows(sequences: list[list[int]], length: int, eos_id: int = EOS_ID) -> np.ndarray:
    """Concatenate ``[eos] + tweet`` streams and cut windows of ``length + 1`` tokens.

    Packing wastes no compute on padding; each window gives ``length`` next-token targets.
    Never a one-hot over the vocabulary: targets stay integer ids.
    """
    stream: list[int] = []
    for seq in sequences:
        # Each framed tweet ends with eos, which is also the next tweet's start token.
        stream.extend(seq[:-1] if seq and seq[-1] == eos_id else seq)
    stream.append(eos_id)
    n = (len(stream) - 1) // length
    if n == 0:
        raise ValueError(
            f"not enough tokens for one training window of {length} (have {len(stream)})"
        )
    arr = np.asarray(stream[: n * length + 1], dtype=np.int32)
    starts = np.arange(n) * length
    return np.stack([arr[s : s + length + 1] for s in starts])


def window_dataset(
    windows: np.ndarray, batch_size: int, *, shuffle: bool, seed: int, for_gpt2: bool
) -> tf.data.Dataset:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(windows)
    if shuffle:
        ds = ds.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
    if for_gpt2:
        # transformers shifts labels inside the model: same targets as the LSTM's.
        ds = ds.map(lambda w: {"input_ids": w, "labels": w})
    else:
        ds = ds.map(lambda w: (w[:-1], w[1:]))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _verbosity() -> int:
    return 1 if sys.stdout.isatty() else 2


def _fit(
    model: Any,
    keras_module: Any,
    train: np.ndarray,
    validation: np.ndarray,
    settings: TrainSettings,
    *,
    for_gpt2: bool,
    loss: Any = None,
) -> dict[str, list[float]]:
    """Adam with gradient clipping, early stopping on validation loss, best weights kept."""
    optimizer = keras_module.optimizers.Adam(settings.learning_rate, clipnorm=settings.clipnorm)
    # Without a loss argument, transformers models use their own language-model loss.
    model.compile(optimizer=optimizer, **({} if loss is None else {"loss": loss}))
    history = model.fit(
        window_dataset(
            train, settings.batch_size, shuffle=True, seed=settings.seed, for_gpt2=for_gpt2
        ),
        validation_data=window_dataset(
            validation, settings.batch_size, shuffle=False, seed=settings.seed, for_gpt2=for_gpt2
        ),
        epochs=settings.epochs,
        shuffle=False,  # the dataset shuffles itself, seeded
        callbacks=[
            keras_module.callbacks.EarlyStopping(
                monitor="val_loss", patience=settings.patience, restore_best_weights=True
            )
        ],
        verbose=_verbosity(),
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train_lstm(
    model: Any, train: np.ndarray, validation: np.ndarray, settings: TrainSettings
) -> dict[str, list[float]]:
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _fit(model, keras, train, validation, settings, for_gpt2=False, loss=loss)


def train_gpt2(
    model: Any, train: np.ndarray, validation: np.ndarray, settings: TrainSettings
) -> dict[str, list[float]]:
    """transformers computes the language-model loss inside the model (no Keras loss)."""
    import tensorflow as tf
    import tf_keras

    # Keras traces the training step with AutoGraph, which would rewrite every function of
    # transformers' model it reaches (about ten seconds before the first batch, on 2 cores).
    # That code runs as plain graph code (the serving signatures trace it so too), so it is
    # called unconverted; the training itself is the same, loss for loss.
    model.call = tf.autograph.experimental.do_not_convert(model.call)
    return _fit(model, tf_keras, train, validation, settings, for_gpt2=True)


def plot_curve(history: dict[str, list[float]], title: str, path: Path) -> None:
    """Training and validation loss per epoch, written next to metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            ax.plot(epochs, history[key], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy per token (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
