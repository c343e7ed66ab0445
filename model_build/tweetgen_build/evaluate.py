"""Offline metrics of a packaged model: held-out perplexity and properties of its samples."""

from __future__ import annotations

import dataclasses
import math
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tweetgen_build.data import CleaningOptions
from tweetgen_build.errors import InputError, check_artifact_path, error_line, printable
from tweetgen_build.ngram import KneserNeyLM
from tweetgen_build.tokenizer import EOS_ID

if TYPE_CHECKING:
    import tensorflow as tf

# TensorFlow is imported where it is used: ``evaluate_artifact`` checks its artifact first.
Signature = Callable[..., "dict[str, tf.Tensor]"]
# The largest x with a finite math.exp(x).
_MAX_EXP = math.log(sys.float_info.max)


def _right_padded(batch: Sequence[Sequence[int]], limit: int) -> tuple[np.ndarray, np.ndarray]:
    width = min(max(len(s) for s in batch), limit)
    ids = np.full((len(batch), width), EOS_ID, dtype=np.int32)
    mask = np.zeros((len(batch), width), dtype=np.int32)
    for row, seq in enumerate(batch):
        seq = seq[:width]
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def model_perplexity(
    score: Signature, sequences: Sequence[Sequence[int]], *, max_length: int, batch_size: int = 64
) -> tuple[float, int]:
    """Per-token perplexity of framed tweets (every token after the leading eos is predicted).

    Tweets longer than ``max_length`` tokens are cut there, for every model alike.
    """
    import tensorflow as tf

    ordered = sorted(sequences, key=len)
    total, count = 0.0, 0
    for start in range(0, len(ordered), batch_size):
        ids, mask = _right_padded(ordered[start : start + batch_size], max_length)
        out = score(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
        total += float(tf.reduce_sum(out["token_log_probs"]))
        count += int(mask[:, 1:].sum())
    if count == 0:
        raise ValueError("no tokens to score")
    return perplexity_of(total, count), count


def perplexity_of(total_log_prob: float, tokens: int) -> float:
    """``exp(-total_log_prob / tokens)``, infinite where that exceeds a float.

    A diverged model scores tokens at log-probabilities of thousands of nats below zero, where
    ``math.exp`` raises ``OverflowError`` instead of saying how bad the model is.
    """
    mean_loss = -total_log_prob / tokens
    return math.inf if mean_loss >= _MAX_EXP else math.exp(mean_loss)  # NaN stays NaN


def ngram_perplexity(
    train: Sequence[Sequence[int]],
    test: Sequence[Sequence[int]],
    *,
    vocab_size: int,
    max_length: int,
    order: int = 3,
) -> float:
    """The baseline: interpolated Kneser-Ney on the same tokens, split and truncation."""
    lm = KneserNeyLM(order=order, vocab_size=vocab_size).fit([s[:max_length] for s in train])
    return lm.perplexity([s[:max_length] for s in test])


def generate_samples(
    generate: Signature,
    count: int,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.8,
    top_k: int = 40,
    seed: int = 0,
    batch_size: int = 16,
    eos_id: int = EOS_ID,
) -> list[list[int]]:
    """Unconditional samples (the prompt is the start token alone)."""
    import tensorflow as tf

    samples: list[list[int]] = []
    for start in range(0, count, batch_size):
        rows = min(batch_size, count - start)
        out = generate(
            input_ids=tf.fill([rows, 1], eos_id),
            attention_mask=tf.ones([rows, 1], tf.int32),
            max_new_tokens=tf.constant(max_new_tokens, tf.int32),
            temperature=tf.constant(temperature, tf.float32),
            top_k=tf.constant(top_k, tf.int32),
            seed=tf.constant(seed + start, tf.int64),
        )
        ids, lengths = out["generated_ids"].numpy(), out["lengths"].numpy()
        samples += [row[:n].tolist() for row, n in zip(ids, lengths, strict=True)]
    return samples


def sample_metrics(samples: Sequence[Sequence[int]]) -> dict[str, float]:
    """distinct-1/2 (unique n-grams over all n-grams of all samples), repetition rate (share of
    bigrams inside a sample that already occurred earlier in it) and mean length in tokens."""
    unigrams = [t for s in samples for t in s]
    bigrams = [tuple(s[i : i + 2]) for s in samples for i in range(len(s) - 1)]
    repeats, pairs = 0, 0
    for s in samples:
        seen: set[tuple[int, ...]] = set()
        for i in range(len(s) - 1):
            pair = tuple(s[i : i + 2])
            repeats += pair in seen
            pairs += 1
            seen.add(pair)
    return {
        "distinct_1": len(set(unigrams)) / len(unigrams) if unigrams else 0.0,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "repetition_rate": repeats / pairs if pairs else 0.0,
        "mean_length": float(np.mean([len(s) for s in samples])) if samples else 0.0,
    }


def offline_metrics(
    loaded: Any,
    train: Sequence[Sequence[int]],
    test: Sequence[Sequence[int]],
    *,
    vocab_size: int,
    max_length: int,
    samples: int = 64,
    seed: int = 0,
    eos_id: int = EOS_ID,
) -> dict[str, float]:
    """Every offline metric of one SavedModel, with the n-gram baseline on the same split."""
    perplexity, tokens = model_perplexity(loaded.signatures["score"], test, max_length=max_length)
    baseline = ngram_perplexity(train, test, vocab_size=vocab_size, max_length=max_length)
    generated = generate_samples(
        loaded.signatures["serving_default"], samples, seed=seed, eos_id=eos_id
    )
    return {
        "test_perplexity": perplexity,
        "test_tokens": float(tokens),
        "ngram_perplexity": baseline,
        "perplexity_vs_ngram": perplexity / baseline,
        **sample_metrics(generated),
    }


def recorded_cleaning(recorded: dict[str, bool], log: Callable[[str], None]) -> CleaningOptions:
    """The cleaning options an artifact's metadata records, for this build's cleaning code.

    The metadata schema keeps keys a newer build adds (``validate-artifact`` accepts them), so
    an option this build does not know is left out with a note rather than a crash: the data
    fingerprint check then tells whether the recomputed split is the recorded one.
    """
    known = {option.name for option in dataclasses.fields(CleaningOptions)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        log(
            "note: ignoring cleaning options this build does not know:"
            f" {printable(', '.join(unknown))}; the test split may differ from the recorded one"
        )
    return CleaningOptions(**{name: value for name, value in recorded.items() if name in known})


def evaluate_artifact(
    archive: Path,
    data: list[Path],
    *,
    max_tweets: int | None = None,
    samples: int = 64,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Offline metrics of a ``model.tar.gz`` on the test split of ``data``.

    The split is recomputed with the cleaning options recorded in the artifact; a data
    fingerprint different from the training run's is reported rather than hidden.

    The seed, the archive (unpacked whole), its metadata and tokenizer, and the data are
    checked before TensorFlow is imported (seconds), which loading the SavedModel needs.
    """
    from tweetgen_build.packaging import load_saved_model, read_unpacked, unpack_artifact
    from tweetgen_build.pipeline import EVAL_MAX_LENGTH, check_seed, prepare_data
    from tweetgen_build.tokenizer import encode_tweets

    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    check_seed(seed)
    check_artifact_path(archive)
    shown = printable(str(archive))
    if not tarfile.is_tarfile(archive):
        raise InputError(f"{shown}: not a tweetgen artifact (not a tar archive)")

    def unloadable(exc: BaseException) -> InputError:
        return InputError(
            f"{shown}: not a loadable tweetgen artifact ({printable(error_line(exc))})"
        )

    with tempfile.TemporaryDirectory(prefix="tweetgen-eval-") as tmp:
        try:
            # A truncated gzip stream ends in EOFError, a corrupt one in zlib.error.
            root = unpack_artifact(archive, Path(tmp))
            metadata, tokenizer = read_unpacked(root)
        except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError) as exc:
            raise unloadable(exc) from None
        cleaning = recorded_cleaning(metadata.data.cleaning, say)
        splits, _ = prepare_data(data, cleaning, max_tweets, say)
        same_data = splits.fingerprint() == metadata.data.sha256
        if not same_data:
            say(
                "note: this data differs from the training run's; the test split is not the one recorded"
            )
        import tensorflow as tf

        try:
            # A SavedModel that does not parse ends in OSError.
            loaded = load_saved_model(root, metadata)
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise unloadable(exc) from None
        train = encode_tweets(tokenizer, list(splits.train))
        test = encode_tweets(tokenizer, list(splits.test))
        metrics = offline_metrics(
            loaded,
            train,
            test,
            vocab_size=metadata.tokenizer.vocab_size,
            max_length=min(EVAL_MAX_LENGTH, metadata.generation.max_context),
            samples=samples,
            seed=seed,
            eos_id=metadata.tokenizer.eos_token_id,
        )
    return {
        "kind": metadata.kind,
        "variant": metadata.variant,
        "version": metadata.version,
        "same_data_as_training": same_data,
        **metrics,
    }
