"""``tweetgen train``: tweets → tokenizer → model → SavedModel artifact with offline metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from tokenizers import Tokenizer
from tweetgen.domain.artifact import (
    ArtifactMetadata,
    DataMetadata,
    GenerationMetadata,
    TokenizerMetadata,
)
from tweetgen.domain.model_key import ModelKey, is_variant_name

from tweetgen_build.configs import (
    MAX_ROW_GROUPS,
    MAX_SEED,
    GPT2Settings,
    LSTMConfig,
    check_row_groups,
    setting_problem,
)
from tweetgen_build.data import CleaningOptions, Splits, load_corpus, split_corpus
from tweetgen_build.errors import InputError, error_line, printable
from tweetgen_build.tokenizer import (
    EOS_TOKEN,
    MIN_VOCAB_SIZE,
    encode_tweets,
    eos_id_of,
    load_tokenizer,
    tokenizer_sha256,
    train_tokenizer,
)
from tweetgen_build.training import TrainSettings, pack_windows

ModelKind = Literal["lstm", "gpt2"]
C = TypeVar("C")
DATA_SUFFIXES = (".csv", ".txt")
MAX_BATCH_SIZE = 16
MAX_NEW_TOKENS = 128
LSTM_CONTEXT = 256
EVAL_MAX_LENGTH = 128
# What the hub takes as a model name ("gpt2", "openai-community/gpt2"); see local_checkpoint.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?", re.ASCII)
# The files a run writes into --out (packed or --unpacked) and into the metrics folder.
ARTIFACT_FILES = ("model.tar.gz",)
UNPACKED_FILES = ("metadata.json",)
METRICS_FILES = ("metrics.json", "tokenizer.json", "training_curve.png")

# Model sizes by name; every value can still be overridden one by one.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "lstm": {"embedding_dim": 64, "units": 128, "num_layers": 1, "dropout": 0.0},
        "gpt2": {"n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 2, "dropout": 0.0},
    },
    "small": {
        "lstm": {"embedding_dim": 256, "units": 512, "num_layers": 2, "dropout": 0.1},
        "gpt2": {"n_positions": 128, "n_embd": 256, "n_layer": 4, "n_head": 4, "dropout": 0.1},
    },
    "gpt2-small": {
        "lstm": {"embedding_dim": 768, "units": 1024, "num_layers": 2, "dropout": 0.1},
        "gpt2": {"n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "dropout": 0.1},
    },
}


@dataclass
class TrainOptions:
    model: ModelKind
    data: list[Path]
    out: Path
    preset: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)
    settings: TrainSettings = field(default_factory=TrainSettings)
    max_tweets: int | None = None
    vocab_size: int = 8000
    tokenizer: Path | None = None
    init_from: str | None = None
    # GPT-2 only: compile the decoding step with XLA (the model server must allow XLA).
    xla_decode: bool = False
    # Decode a batch request's rows in this many groups, side by side (see
    # tweetgen_build.generation.GeneratorServing): faster alone, costlier under load.
    row_groups: int = 1
    variant: str | None = None
    version: str | None = None
    unpacked: bool = False
    metrics_dir: Path | None = None
    samples: int = 64
    cleaning: CleaningOptions = field(default_factory=CleaningOptions)


@dataclass
class TrainResult:
    artifact: Path
    metrics_path: Path
    curve_path: Path
    metadata: ArtifactMetadata
    metrics: dict[str, Any]


Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def expand_inputs(paths: Iterable[Path], log: Log | None = None) -> list[Path]:
    """Files as given; a directory stands for its ``.csv``/``.txt`` files but README files.

    ``log`` hears of every README file skipped, so that leaving one out is never silent.
    """
    files: list[Path] = []
    for path in paths:
        if os.path.isdir(path):
            shown = printable(str(path))
            try:
                # Case-insensitive like a single file's format detection: TWEETS.CSV is a CSV.
                candidates = sorted(
                    p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                )
            except OSError as exc:
                raise InputError(
                    f"{shown}: cannot list the directory ({printable(error_line(exc))})"
                ) from None
            found = [p for p in candidates if not p.stem.upper().startswith("README")]
            if log is not None:
                for skipped in sorted(set(candidates) - set(found)):
                    log(f"skipped {printable(str(skipped))}: a README, not tweets")
            if not found:
                raise InputError(f"{shown}: directory holds no .csv or .txt file")
            files += found
        else:
            files.append(path)
    if not files:
        raise InputError("no input given: pass --data with at least one file")
    return files


def prepare_data(
    paths: list[Path], cleaning: CleaningOptions, max_tweets: int | None, log: Log
) -> tuple[Splits, list[Path]]:
    files = expand_inputs(paths, log)
    corpus = load_corpus(files, cleaning, max_tweets)
    log(corpus.summary())
    splits = split_corpus(list(corpus.texts))
    log(
        f"split: {len(splits.train):,} train / {len(splits.validation):,} validation /"
        f" {len(splits.test):,} test tweets"
    )
    if not splits.validation or not splits.test:
        raise InputError(
            f"{', '.join(printable(str(f)) for f in files)}: too few tweets ({len(corpus)}) for a"
            " validation and a test split: give more data"
        )
    return splits, files


def serialisable(text: str) -> str:
    """``text`` as one printable line that any JSON encoder takes.

    A file name that is not valid UTF-8 reaches Python with lone surrogates (``os.fsdecode``),
    which neither UTF-8 nor the artifact's metadata.json can hold: its bytes are written as
    ``\\xff`` escapes instead, and control characters as ``printable`` writes them.
    """
    return printable(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def source_names(files: Iterable[Path]) -> list[str]:
    """The data files' names as the artifact's metadata records them (see ``serialisable``)."""
    return [serialisable(path.name) for path in files]


def _variant_of(options: TrainOptions) -> str:
    return options.model if options.variant is None else options.variant


def check_seed(seed: int) -> None:
    """Refuse a seed that TensorFlow's and numpy's seeding would fail on (``--seed``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed must lie between 0 and 2**32 - 1, got {seed}")


def check_output_dir(flag: str, path: Path, files: Iterable[str]) -> None:
    """Refuse, before any data is read, a folder the run could not write its ``files`` into.

    A regular file there (or where one of its parents should be) used to end the run with
    ``FileExistsError`` after the whole training.
    """
    shown = f"{flag} {printable(str(path))}"
    # os.path never raises: a parent that cannot be looked into reads as missing.
    existing = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    if existing is None:
        return
    if not os.path.isdir(existing):
        if existing == path:
            raise InputError(f"{shown}: exists and is not a directory")
        raise InputError(f"{shown}: {printable(str(existing))} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{shown}: {printable(str(existing))} is not writable")
    for name in files:
        if os.path.isdir(path / name):
            raise InputError(f"{shown}: {name} in it is a directory, where a file goes")


def write_error(flag: str, path: Path, exc: OSError) -> InputError:
    """An output folder that could not be written after all, as a one-line error."""
    return InputError(
        f"{flag} {printable(str(path))}: cannot write there ({printable(error_line(exc))})"
    )


def local_checkpoint(value: str) -> Path | None:
    """The folder that ``--init-from`` names, or None where it names a model on the hub.

    A value is a local path where it exists, starts with ``/``, ``.`` or ``~``, or has another
    shape than a hub name (``gpt2``, ``openai-community/gpt2``): such a value never reaches the
    hub, whose client would refuse it with a traceback.
    """
    if (
        os.path.lexists(value)
        or value.startswith((os.sep, ".", "~"))
        or _HUB_NAME.fullmatch(value) is None
        or "--" in value
        or ".." in value
    ):
        return Path(value).expanduser()
    return None


def checkpoint_source(value: str) -> str:
    """What the checkpoint loaders get for ``--init-from``: the folder (``~`` expanded) or the
    hub name."""
    folder = local_checkpoint(value)
    return value if folder is None else str(folder)


def check_init_from(value: str) -> None:
    """A local ``--init-from`` must be a folder written by ``save_pretrained`` (config.json)."""
    shown = f"--init-from {printable(value)}"
    if not value.strip():
        raise InputError(f"--init-from must name a checkpoint folder or a hub model, got {value!r}")
    folder = local_checkpoint(value)
    if folder is None:
        return
    if not os.path.isdir(folder):
        problem = "is not a folder" if os.path.lexists(folder) else "no such folder"
        raise InputError(
            f"{shown}: {problem}; a checkpoint folder written by save_pretrained is expected"
        )
    if not os.path.isfile(folder / "config.json"):
        raise InputError(
            f"{shown}: the folder holds no config.json; a checkpoint folder written by"
            " save_pretrained is expected"
        )


def check_options(options: TrainOptions) -> None:
    """Refuse settings the run would fail on late, before any data is read.

    A variant or version that the artifact metadata refuses used to surface as a schema error
    after the whole training, and a learning rate that is not a positive finite number trains
    nothing useful (or NaN weights). The names are checked with the rules the metadata schema
    and the rollout apply (:class:`ModelKey`), so the three cannot drift apart.
    """
    variant = _variant_of(options)
    version = (
        default_version(options.model, "0" * 64) if options.version is None else options.version
    )
    try:
        ModelKey(variant=variant, version=version)
    except ValueError as exc:
        flag = "--version" if is_variant_name(variant) else "--variant"
        raise InputError(f"{flag}: {printable(str(exc))}") from None
    rate = options.settings.learning_rate
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise InputError(f"--learning-rate must be a positive finite number, got {rate!r}")
    check_seed(options.settings.seed)
    try:
        check_row_groups(options.row_groups)
    except ValueError:
        raise InputError(
            f"--row-groups must be from 1 to {MAX_ROW_GROUPS}, got {options.row_groups!r}"
        ) from None
    if options.init_from is not None and options.model == "gpt2":
        check_init_from(options.init_from)
    artifact_files = UNPACKED_FILES if options.unpacked else ARTIFACT_FILES
    if options.metrics_dir is None:
        check_output_dir("--out", options.out, (*artifact_files, *METRICS_FILES))
    else:
        check_output_dir("--out", options.out, artifact_files)
        check_output_dir("--metrics-dir", options.metrics_dir, METRICS_FILES)
    trains_tokenizer = options.tokenizer is None and not (
        options.init_from is not None and options.model == "gpt2"
    )
    if trains_tokenizer and options.vocab_size < MIN_VOCAB_SIZE:
        raise InputError(
            f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + merges),"
            f" got {options.vocab_size}"
        )


def obtain_tokenizer(options: TrainOptions, splits: Splits, log: Log) -> Tokenizer:
    if options.tokenizer is not None:
        shown = printable(str(options.tokenizer))
        if not options.tokenizer.is_file():
            raise InputError(f"{shown}: tokenizer file not found")
        log(f"tokenizer: {shown}")
        tokenizer = load_tokenizer(options.tokenizer)
        # Every model frames tweets with it: without it encoding fails after TensorFlow loads.
        if tokenizer.token_to_id(EOS_TOKEN) is None:
            raise InputError(
                f"{shown}: the tokenizer has no {EOS_TOKEN} token, which frames every tweet;"
                " pass a tokenizer.json that tweetgen train wrote"
            )
        return tokenizer
    if options.init_from is not None and options.model == "gpt2":
        from tweetgen_build.gpt2 import load_pretrained_tokenizer

        shown = printable(options.init_from)
        log(f"tokenizer: from {shown}")
        tokenizer = load_pretrained_tokenizer(checkpoint_source(options.init_from))
        if tokenizer.token_to_id(EOS_TOKEN) is None:
            raise InputError(
                f"--init-from {shown}: the checkpoint's tokenizer has no {EOS_TOKEN} token,"
                " which frames every tweet"
            )
        return tokenizer
    started = time.perf_counter()
    tokenizer = train_tokenizer(splits.train, vocab_size=options.vocab_size)
    log(
        f"tokenizer: byte-level BPE, {tokenizer.get_vocab_size():,} tokens,"
        f" trained in {time.perf_counter() - started:.1f}s"
    )
    return tokenizer


def _hyperparameters(options: TrainOptions, model_config: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "preset": options.preset,
        **model_config,
        **options.settings.to_dict(),
    }
    if options.init_from:
        # A path as it was given, in a form metadata.json can hold (see serialisable).
        merged["init_from"] = serialisable(options.init_from)
    if options.xla_decode:
        merged["xla_decode"] = True
    if options.row_groups != 1:
        merged["row_groups"] = options.row_groups
    return merged


def _model_config(cls: type[C], label: str, vocab_size: int, values: dict[str, Any]) -> C:
    names = {f.name for f in dataclasses.fields(cls)} - {"vocab_size"}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown {label} settings {unknown}: known are {sorted(names)}")
    for name, value in values.items():
        problem = setting_problem(cls, name, value)  # type: ignore[arg-type]
        if problem is not None:
            raise InputError(f"{label} setting --set {name}={printable(repr(value))}: {problem}")
    return cls(vocab_size=vocab_size, **values)  # type: ignore[call-arg]


def model_settings(options: TrainOptions, vocab_size: int) -> LSTMConfig | GPT2Settings | None:
    """The model's size settings from its preset and overrides (None: from ``--init-from``).

    Needs no TensorFlow, so a wrong preset or setting name is reported before it is imported.
    """
    preset = PRESETS.get(options.preset)
    if preset is None:
        raise InputError(f"unknown preset {options.preset!r}: choose from {sorted(PRESETS)}")
    values = {**preset[options.model], **options.overrides}
    if options.model == "lstm":
        return _model_config(LSTMConfig, "LSTM", vocab_size, values)
    if options.init_from:
        return None
    gpt2 = _model_config(GPT2Settings, "GPT-2", vocab_size, values)
    if gpt2.n_embd % gpt2.n_head:
        # transformers splits the embedding evenly across the attention heads.
        raise InputError(
            f"GPT-2 settings: n_embd ({gpt2.n_embd}) must be a multiple of n_head ({gpt2.n_head})"
        )
    if gpt2.n_positions < 2:
        raise InputError("GPT-2 setting n_positions must be at least 2: one token in, one out")
    return gpt2


def context_of(settings: LSTMConfig | GPT2Settings | None) -> int | None:
    """The context length ``build_model`` will give (None: known once a checkpoint loads)."""
    if isinstance(settings, LSTMConfig):
        return LSTM_CONTEXT
    return None if settings is None else settings.n_positions


def training_windows(
    encoded: dict[str, list[list[int]]], length: int, eos_id: int
) -> tuple[Any, Any]:
    """Training and validation windows of ``length`` tokens, or a one-line error.

    Built before TensorFlow is imported where the context length is known: too few tweets for
    one window is a matter of the data and ``--sequence-length``, not of the model.
    """
    windows = []
    for name in ("train", "validation"):
        try:
            windows.append(pack_windows(encoded[name], length, eos_id))
        except ValueError as exc:
            raise InputError(
                f"--sequence-length {length}: the {name} split is too short ({exc}):"
                " give more tweets (--data, --max-tweets) or a shorter --sequence-length"
            ) from None
    return windows[0], windows[1]


def refuse_diverged(values: dict[str, float], learning_rate: float) -> None:
    """A training whose loss or perplexity is not finite is not packaged.

    The artifact schema takes finite metrics only, and a model with infinite perplexity is no
    candidate for an A/B test: the run ends with a one-line error instead of an artifact.
    """
    broken = [f"{name} {value}" for name, value in values.items() if not math.isfinite(value)]
    if broken:
        raise InputError(
            f"training diverged ({', '.join(broken)}); nothing was packaged: train again with"
            f" a --learning-rate lower than {learning_rate:g}"
        )


def build_model(
    options: TrainOptions,
    settings: LSTMConfig | GPT2Settings | None,
    vocab_size: int,
    eos_id: int,
) -> tuple[Any, Any, dict[str, Any], int]:
    """The Keras model, its serving module, its config and its context length.

    ``settings``: what ``model_settings`` gave for these options.
    """
    if isinstance(settings, LSTMConfig):
        from tweetgen_build.lstm import LSTMServing, build_lstm

        lstm = build_lstm(settings)
        serving = LSTMServing(lstm, eos_id, row_groups=options.row_groups)
        return lstm, serving, settings.to_dict(), LSTM_CONTEXT
    from tweetgen_build.gpt2 import GPT2Serving, build_gpt2, load_pretrained_gpt2, settings_of

    if settings is None:
        assert options.init_from is not None
        gpt2 = load_pretrained_gpt2(checkpoint_source(options.init_from))
        if gpt2.config.vocab_size < vocab_size:
            raise InputError(
                f"--init-from {printable(options.init_from)}: checkpoint vocabulary is smaller"
                " than the tokenizer's"
            )
        settings = settings_of(gpt2)
    else:
        gpt2 = build_gpt2(settings)
    serving = GPT2Serving(
        gpt2, eos_id, jit_compile=options.xla_decode, row_groups=options.row_groups
    )
    return gpt2, serving, settings.to_dict(), settings.n_positions


def default_version(kind: str, data_sha: str) -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{kind}-{data_sha[:8]}"


def run_training(options: TrainOptions, log: Log = _stderr) -> TrainResult:
    """Train one model and write ``model.tar.gz`` (or the unpacked tree) plus metrics.json.

    The options, the data, the tokenizer, the model settings and the training windows come
    first, before TensorFlow is imported (seconds): bad input is reported at once.
    """
    started = time.perf_counter()
    check_options(options)
    splits, files = prepare_data(options.data, options.cleaning, options.max_tweets, log)
    tokenizer = obtain_tokenizer(options, splits, log)
    vocab_size = tokenizer.get_vocab_size()
    model_sizes = model_settings(options, vocab_size)
    settings = options.settings
    eos = eos_id_of(tokenizer)
    encoded = {
        name: encode_tweets(tokenizer, list(getattr(splits, name)))
        for name in ("train", "validation", "test")
    }
    known_context = context_of(model_sizes)
    windows = (
        None
        if known_context is None
        else training_windows(encoded, min(settings.sequence_length, known_context - 1), eos)
    )

    import tensorflow as tf

    from tweetgen_build.evaluate import offline_metrics
    from tweetgen_build.packaging import (
        MODEL_NAME,
        MODEL_VERSION,
        TOKENIZER_PATH,
        check_served_generation,
        pack_artifact,
        stage_artifact,
    )
    from tweetgen_build.training import plot_curve, seed_everything, train_gpt2, train_lstm

    seed_everything(settings.seed)
    model, serving, model_config, context = build_model(options, model_sizes, vocab_size, eos)
    length = min(settings.sequence_length, context - 1)
    if windows is None:  # --init-from: the checkpoint's context length is known only now
        windows = training_windows(encoded, length, eos)
    train_windows, val_windows = windows
    log(
        f"{options.model}: {model.count_params():,} parameters; {len(train_windows):,} training"
        f" windows of {length} tokens; up to {settings.epochs} epochs"
    )
    fit = train_lstm if options.model == "lstm" else train_gpt2
    train_started = time.perf_counter()
    history = fit(model, train_windows, val_windows, settings)
    train_seconds = time.perf_counter() - train_started
    # Early stopping keeps the best finite epoch; with none, exporting would be wasted time.
    best_val_loss = min((v for v in history["val_loss"] if math.isfinite(v)), default=math.nan)
    refuse_diverged({"best val_loss": best_val_loss}, settings.learning_rate)

    data_sha = splits.fingerprint()
    metadata = ArtifactMetadata(
        schema_version=1,
        kind=options.model,
        variant=_variant_of(options),
        version=options.version or default_version(options.model, data_sha),
        created=datetime.now(UTC),
        model_name=MODEL_NAME,
        model_version=MODEL_VERSION,
        tokenizer=TokenizerMetadata(
            type="byte_level_bpe",
            path=TOKENIZER_PATH,
            vocab_size=vocab_size,
            sha256=tokenizer_sha256(tokenizer),
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        data=DataMetadata(
            sha256=data_sha,
            n_train=len(splits.train),
            n_validation=len(splits.validation),
            n_test=len(splits.test),
            sources=source_names(files),
            cleaning=dataclasses.asdict(options.cleaning),
        ),
        hyperparameters=_hyperparameters(options, model_config),
        metrics={},
        generation=GenerationMetadata(
            max_context=context,
            max_new_tokens=min(MAX_NEW_TOKENS, context - 1),
            max_batch_size=MAX_BATCH_SIZE,
        ),
    )
    with tempfile.TemporaryDirectory(prefix="tweetgen-stage-") as tmp:
        stage = Path(tmp) / "artifact"
        log("export: SavedModel with in-graph generation")
        stage_artifact(serving, tokenizer, metadata, stage)
        exported = stage / MODEL_NAME / str(MODEL_VERSION)
        loaded = tf.saved_model.load(str(exported))
        log("check: the export generates as TensorFlow Serving loads it")
        check_served_generation(exported, [eos], loaded=loaded)
        log("evaluate: held-out perplexity, n-gram baseline, samples (from the exported model)")
        metrics = offline_metrics(
            loaded,
            encoded["train"],
            encoded["test"],
            vocab_size=vocab_size,
            max_length=min(EVAL_MAX_LENGTH, context),
            samples=options.samples,
            seed=settings.seed,
            eos_id=eos,
        )
        metrics["best_val_loss"] = best_val_loss
        metrics["epochs_trained"] = float(len(history["loss"]))
        metrics["train_seconds"] = train_seconds
        metrics["train_tokens_per_second"] = (
            train_windows.shape[0] * length * len(history["loss"]) / train_seconds
            if train_seconds
            else 0.0
        )
        refuse_diverged(metrics, settings.learning_rate)
        metadata = metadata.model_copy(update={"metrics": metrics})
        (stage / "metadata.json").write_text(
            metadata.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )
        try:
            options.out.mkdir(parents=True, exist_ok=True)
            if options.unpacked:
                _copy_tree(stage, options.out)
                artifact = options.out
            else:
                artifact = pack_artifact(stage, options.out / "model.tar.gz")
        except OSError as exc:
            raise write_error("--out", options.out, exc) from None
    metrics_flag = "--out" if options.metrics_dir is None else "--metrics-dir"
    metrics_dir = options.metrics_dir or options.out
    curve_path = metrics_dir / "training_curve.png"
    try:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        # To share with the next model's run; written as tokenizer.save writes it, but with an
        # OSError where it fails (the tokenizers library raises a bare Exception).
        (metrics_dir / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
        plot_curve(history, f"{options.model} ({options.preset})", curve_path)
    except OSError as exc:
        raise write_error(metrics_flag, metrics_dir, exc) from None
    report = {
        "kind": metadata.kind,
        "variant": metadata.variant,
        "version": metadata.version,
        "metrics": metrics,
        "history": history,
        "hyperparameters": metadata.hyperparameters,
        "parameters": int(model.count_params()),
        "seconds": time.perf_counter() - started,
    }
    metrics_path = metrics_dir / "metrics.json"
    try:
        metrics_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise write_error(metrics_flag, metrics_dir, exc) from None
    log(
        f"done: {printable(str(artifact))} (test perplexity {metrics['test_perplexity']:.1f},"
        f" n-gram baseline {metrics['ngram_perplexity']:.1f})"
    )
    return TrainResult(artifact, metrics_path, curve_path, metadata, report)


def _copy_tree(source: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(source, dest, dirs_exist_ok=True)
