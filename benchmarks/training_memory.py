"""Training throughput and peak memory of both models, and the notebook's one-hot data beside ours.

On the shared 20,000 tweets (``sample_20k.csv``, cleaned and split as ``tweetgen train`` does):

- Throughput: one epoch of the ``tiny`` preset (vocabulary 8,000, windows of 64 tokens, batch
  32) through the library's own ``train_lstm``/``train_gpt2``, in a fresh process per model;
  tokens/s = predicted tokens of the training windows / wall time of ``fit`` (first-step
  tracing and the end-of-epoch validation pass included). The LSTM's baseline is the
  notebook's way of training the same layers on the same tokens: every prefix of every tweet
  padded to the longest, one target per row, one-hot labels, the head on the last step.
- Memory: the notebook's preparation (a word-level Keras ``Tokenizer`` over the same tweets,
  every n-gram prefix as a ``pad_sequences`` row of the maximum length, the last word's label as
  ``to_categorical`` over the whole vocabulary, float32) against our packed integer windows
  of the same tweets. The notebook arrays' sizes are computed from their shapes; the labels are
  also really allocated (all of them if they fit in the memory budget, else as many rows as do)
  and every page written, to check the computation against the resident memory it takes.
- Peak RSS (``getrusage`` max RSS) of each training process, beside the notebook's arrays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_DATA,
    SAMPLE_20K,
    BenchResult,
    Row,
    base_parser,
    call_in_child,
    current_rss_mb,
    finish,
    make_row,
    peak_rss_mb,
    progress,
)

NAME = "training_memory"
VOCAB_SIZE = 8000
SEQUENCE_LENGTH = 64
BATCH_SIZE = 32
PRESET = "tiny"
MIB = 2**20


def log(message: str) -> None:
    progress(NAME, message)


def load_texts(data: str, max_tweets: int | None) -> tuple[Any, list[str]]:
    """The cleaned, deduplicated tweets and their splits, as the pipeline reads them."""
    from tweetgen_build.data import CleaningOptions
    from tweetgen_build.pipeline import prepare_data

    splits, _ = prepare_data(
        [Path(data) / SAMPLE_20K], CleaningOptions(), max_tweets, lambda _: None
    )
    return splits, [*splits.train, *splits.validation, *splits.test]


def _touch(array: Any) -> None:
    """Write every page (zeroed pages are mapped lazily until written)."""
    flat = array.reshape(-1)
    flat[::1024] = flat[::1024]


def notebook_memory(data: str, max_tweets: int | None, budget_mb: float) -> dict[str, Any]:
    """The notebook's n-gram arrays for the tweets, and our packed windows of the same tweets."""
    import numpy as np
    from tf_keras.preprocessing.sequence import pad_sequences
    from tf_keras.preprocessing.text import Tokenizer
    from tf_keras.utils import to_categorical
    from tweetgen_build.tokenizer import EOS_ID, encode_tweets, train_tokenizer
    from tweetgen_build.training import pack_windows

    splits, texts = load_texts(data, max_tweets)
    started_rss = current_rss_mb()

    words = Tokenizer()
    words.fit_on_texts(texts)
    total_words = len(words.word_index) + 1
    sequences: list[list[int]] = []
    for token_list in words.texts_to_sequences(texts):
        sequences.extend(token_list[: i + 1] for i in range(1, len(token_list)))
    max_len = max(len(s) for s in sequences)
    padded = np.array(pad_sequences(sequences, maxlen=max_len, padding="pre"))
    labels = padded[:, -1]
    rows = len(sequences)
    label_bytes = rows * total_words * np.dtype("float32").itemsize
    # pad_sequences' matrix; the notebook's xs is a view of it (no further bytes until fit copies).
    input_bytes = int(padded.nbytes)

    allocate_rows = min(rows, int(budget_mb * MIB // (total_words * 4)))
    before = current_rss_mb()
    started = time.perf_counter()
    one_hot = to_categorical(labels[:allocate_rows], num_classes=total_words)
    _touch(one_hot)
    allocated_s = time.perf_counter() - started
    resident_mb = current_rss_mb() - before
    allocated_bytes = int(one_hot.nbytes)
    del one_hot

    tokenizer = train_tokenizer(splits.train, vocab_size=VOCAB_SIZE)
    encoded = encode_tweets(tokenizer, texts)
    windows = pack_windows(encoded, SEQUENCE_LENGTH, EOS_ID)
    return {
        "tweets": len(texts),
        "word_vocabulary": total_words,
        "ngram_rows": rows,
        "max_sequence_len": max_len,
        "input_bytes": input_bytes,
        "label_bytes": label_bytes,
        "notebook_bytes": input_bytes + label_bytes,
        "allocated_rows": allocate_rows,
        "allocated_label_bytes": allocated_bytes,
        "allocated_resident_mb": resident_mb,
        "allocated_s": allocated_s,
        "all_allocated": allocate_rows == rows,
        "rss_before_notebook_mb": started_rss,
        "peak_rss_mb": peak_rss_mb(),
        "bpe_vocabulary": tokenizer.get_vocab_size(),
        "bpe_tokens": sum(len(e) for e in encoded),
        "window_count": len(windows),
        "window_bytes": int(windows.nbytes),
    }


def train_one_epoch(kind: str, data: str, max_tweets: int | None, seed: int) -> dict[str, Any]:
    """One epoch of the library's training on the tweets; time, tokens and peak RSS."""
    from tweetgen_build.pipeline import PRESETS
    from tweetgen_build.tokenizer import EOS_ID, encode_tweets, train_tokenizer
    from tweetgen_build.training import (
        TrainSettings,
        pack_windows,
        seed_everything,
        train_gpt2,
        train_lstm,
    )

    splits, _ = load_texts(data, max_tweets)
    tokenizer = train_tokenizer(splits.train, vocab_size=VOCAB_SIZE)
    vocab = tokenizer.get_vocab_size()
    train = pack_windows(encode_tweets(tokenizer, splits.train), SEQUENCE_LENGTH, EOS_ID)
    validation = pack_windows(encode_tweets(tokenizer, splits.validation), SEQUENCE_LENGTH, EOS_ID)
    settings = TrainSettings(
        epochs=1, batch_size=BATCH_SIZE, sequence_length=SEQUENCE_LENGTH, seed=seed
    )
    seed_everything(seed)
    model: Any
    if kind == "lstm":
        from tweetgen_build.lstm import LSTMConfig, build_lstm

        model = build_lstm(LSTMConfig(vocab_size=vocab, **PRESETS[PRESET]["lstm"]))
    else:
        from tweetgen_build.gpt2 import GPT2Settings, build_gpt2

        model = build_gpt2(GPT2Settings(vocab_size=vocab, **PRESETS[PRESET]["gpt2"]))
    rss_before = current_rss_mb()
    fit = train_lstm if kind == "lstm" else train_gpt2
    started = time.perf_counter()
    history = fit(model, train, validation, settings)
    seconds = time.perf_counter() - started
    tokens = len(train) * SEQUENCE_LENGTH
    return {
        "parameters": int(model.count_params()),
        "train_windows": len(train),
        "train_tokens": tokens,
        "fit_s": seconds,
        "tokens_per_s": tokens / seconds,
        "loss": history["loss"][-1],
        "rss_before_fit_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "window_bytes": int(train.nbytes),
    }


def notebook_training(data: str, max_tweets: int | None, seed: int, rows: int) -> dict[str, Any]:
    """The notebook's training scheme on our tokens and LSTM layers: targets per second."""
    import keras
    import numpy as np
    from tf_keras.preprocessing.sequence import pad_sequences
    from tweetgen_build.lstm import LSTMConfig, build_lstm
    from tweetgen_build.pipeline import PRESETS
    from tweetgen_build.tokenizer import encode_tweets, train_tokenizer

    from benchmarks.generation_speedup import last_position_lstm

    splits, _ = load_texts(data, max_tweets)
    tokenizer = train_tokenizer(splits.train, vocab_size=VOCAB_SIZE)
    vocab = tokenizer.get_vocab_size()
    prefixes = [
        ids[: i + 1] for ids in encode_tweets(tokenizer, splits.train) for i in range(1, len(ids))
    ]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(prefixes), size=min(rows, len(prefixes)), replace=False)
    longest = max(len(p) for p in prefixes)
    # The notebook padded to the longest prefix; a few odd tweets run to many BPE tokens, so
    # cap at our window (64 inputs + the target) to keep the baseline's cost comparable.
    max_len = min(longest, SEQUENCE_LENGTH + 1)
    padded = pad_sequences(
        [prefixes[i] for i in chosen], maxlen=max_len, padding="pre", truncating="pre"
    )
    xs, labels = padded[:, :-1], padded[:, -1]
    ys = keras.utils.to_categorical(labels, num_classes=vocab)
    keras.utils.set_random_seed(seed)
    lm = build_lstm(LSTMConfig(vocab_size=vocab, **PRESETS[PRESET]["lstm"]))
    model = last_position_lstm(lm)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    started = time.perf_counter()
    model.fit(xs, ys, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    return {
        "rows": len(chosen),
        "all_prefixes": len(prefixes),
        "max_sequence_len": max_len,
        "longest_prefix": longest,
        "fit_s": seconds,
        "targets_per_s": len(chosen) / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def run(
    data: Path = DEFAULT_DATA,
    *,
    quick: bool = False,
    seed: int = 7,
    budget_mb: float = 4096.0,
) -> BenchResult:
    started = time.perf_counter()
    max_tweets = 3000 if quick else None
    notebook_rows = 1600 if quick else 6400
    source = {"data": str(data), "max_tweets": max_tweets}

    log("notebook preparation (word Tokenizer, padded n-grams, one-hot labels) vs packed windows")
    memory = call_in_child(
        "benchmarks.training_memory:notebook_memory", {**source, "budget_mb": budget_mb}
    )
    log(
        f"notebook: {memory['ngram_rows']:,} n-gram rows x {memory['max_sequence_len']} words,"
        f" one-hot over {memory['word_vocabulary']:,} words ="
        f" {memory['notebook_bytes'] / MIB:,.0f} MiB; ours: {memory['window_bytes'] / MIB:,.2f} MiB"
    )
    trained: dict[str, dict[str, Any]] = {}
    for kind in ("lstm", "gpt2"):
        log(f"{kind}: one epoch of the {PRESET} preset (fresh process)")
        trained[kind] = call_in_child(
            "benchmarks.training_memory:train_one_epoch", {"kind": kind, **source, "seed": seed}
        )
        log(
            f"{kind}: {trained[kind]['tokens_per_s']:,.0f} tokens/s,"
            f" peak RSS {trained[kind]['peak_rss_mb']:,.0f} MB"
        )
    log(f"notebook-style training of the same LSTM layers on {notebook_rows:,} rows")
    notebook = call_in_child(
        "benchmarks.training_memory:notebook_training",
        {**source, "seed": seed, "rows": notebook_rows},
    )

    notebook_mb = memory["notebook_bytes"] / MIB
    rows: list[Row] = [
        make_row(
            NAME,
            f"training data of {memory['tweets']:,} tweets: packed int32 windows, MiB",
            memory["window_bytes"] / MIB,
            "MiB",
            notebook_mb,
            "notebook: padded n-grams + one-hot labels",
            higher_is_better=False,
        ),
        make_row(
            NAME,
            f"LSTM {PRESET} ({trained['lstm']['parameters']:,} params), training, tokens/s",
            trained["lstm"]["tokens_per_s"],
            "tokens/s",
            notebook["targets_per_s"],
            "notebook scheme: one target per padded prefix",
            higher_is_better=True,
        ),
        make_row(
            NAME,
            f"GPT-2 {PRESET} ({trained['gpt2']['parameters']:,} params), training, tokens/s",
            trained["gpt2"]["tokens_per_s"],
            "tokens/s",
            None,
            "",
            higher_is_better=True,
        ),
    ]
    for kind, label in (("lstm", "LSTM"), ("gpt2", "GPT-2")):
        rows.append(
            make_row(
                NAME,
                f"{label} {PRESET}, whole training process, peak RSS MiB",
                trained[kind]["peak_rss_mb"],
                "MiB",
                notebook_mb,
                "notebook's arrays alone",
                higher_is_better=False,
            )
        )
    allocated = "all of them" if memory["all_allocated"] else f"{memory['allocated_rows']:,} rows"
    notes = [
        f"notebook data: {memory['ngram_rows']:,} rows x {memory['max_sequence_len']} int32"
        f" ({memory['input_bytes'] / MIB:,.0f} MiB) + one-hot float32 labels over"
        f" {memory['word_vocabulary']:,} words ({memory['label_bytes'] / MIB:,.0f} MiB), computed"
        f" from the shapes; labels allocated for {allocated}:"
        f" {memory['allocated_label_bytes'] / MIB:,.0f} MiB computed,"
        f" {memory['allocated_resident_mb']:,.0f} MiB resident",
        f"ours: {memory['window_count']:,} windows of {SEQUENCE_LENGTH + 1} int32 ids"
        f" ({memory['bpe_tokens']:,} BPE tokens, vocabulary {memory['bpe_vocabulary']:,})",
        f"notebook-style LSTM training: {notebook['rows']:,} of {notebook['all_prefixes']:,}"
        f" prefixes, padded (pre) to {notebook['max_sequence_len']} tokens (the longest prefix"
        f" has {notebook['longest_prefix']}: capped at our window), one-hot over the BPE"
        f" vocabulary, head on the last step; {notebook['fit_s']:.1f} s",
        f"training: 1 epoch, batch {BATCH_SIZE}, windows of {SEQUENCE_LENGTH}; LSTM"
        f" {trained['lstm']['fit_s']:.0f} s, GPT-2 {trained['gpt2']['fit_s']:.0f} s (validation"
        " pass and first-step tracing included); RSS before fit: LSTM"
        f" {trained['lstm']['rss_before_fit_mb']:,.0f} MiB, GPT-2"
        f" {trained['gpt2']['rss_before_fit_mb']:,.0f} MiB",
    ]
    return BenchResult(
        name=NAME,
        title="Training throughput and memory vs the notebook's one-hot n-grams",
        rows=rows,
        notes=notes,
        details={"memory": memory, "training": trained, "notebook_training": notebook},
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=4096.0,
        help="at most this much memory for the notebook's one-hot labels (the rest is computed)",
    )
    args = parser.parse_args(argv)
    result = run(args.data, quick=args.quick, seed=args.seed, budget_mb=args.budget_mb)
    finish(result, args.json)


if __name__ == "__main__":
    main()
