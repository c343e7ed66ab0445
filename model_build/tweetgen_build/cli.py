"""Command-line entry points of the model build (``tweetgen train`` / ``evaluate`` / ``validate-artifact``).

Heavy imports (TensorFlow) happen inside the commands, so ``--help`` and validation stay fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tweetgen_build.configs import MAX_INT, MAX_ROW_GROUPS, check_row_groups
from tweetgen_build.errors import InputError, ServingMismatch, check_artifact_path, printable

PROG = "tweetgen"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {number}")
    if number > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT} (2**31 - 1), got {number}")
    return number


def _row_groups(value: str) -> int:
    number = int(value)
    try:
        return check_row_groups(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be from 1 to {MAX_ROW_GROUPS}, got {number}"
        ) from None


def _override(value: str) -> tuple[str, Any]:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    name, raw = value.split("=", 1)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    return name.strip(), parsed


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=["lstm", "gpt2"], help="which generator")
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        metavar="PATH",
        help="tweet files (Sentiment140 CSV with or without header, or one tweet per line) or folders",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="writes OUT/model.tar.gz and OUT/metrics.json"
    )
    parser.add_argument(
        "--preset", default="small", help="model size: tiny, small (default) or gpt2-small"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        metavar="NAME=VALUE",
        help="override one model setting of the preset, e.g. --set units=256 (repeatable)",
    )
    parser.add_argument("--epochs", type=_positive, default=10)
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument(
        "--sequence-length", type=_positive, default=64, help="tokens per training window"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="default 2e-3 (LSTM), 5e-4 (GPT-2)"
    )
    parser.add_argument(
        "--patience", type=_positive, default=2, help="early-stopping patience in epochs"
    )
    parser.add_argument("--max-tweets", type=_positive, default=None, help="use at most N tweets")
    parser.add_argument(
        "--vocab-size",
        type=_positive,
        default=8000,
        help="tokens in the trained tokenizer, placeholders included (a multiple of 16, like the"
        " default, spares the sampler a copy of the vocabulary head per request)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="reuse this tokenizer.json (share it across models)",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="PATH_OR_NAME",
        help="GPT-2 only: start from a pretrained checkpoint (local folder, or a hub name with network)",
    )
    parser.add_argument(
        "--xla-decode",
        action="store_true",
        help=(
            "GPT-2 only: compile the decoding step with XLA (faster on CPU, compiles at the first"
            " request of each batch size and length bucket). The model server must allow XLA:"
            " TensorFlow Serving needs --xla_cpu_compilation_enabled, which the SageMaker"
            " TensorFlow Serving container does not pass, and fails requests without it; the"
            " rollout refuses such an artifact unless new variants run on GPU instances"
        ),
    )
    parser.add_argument(
        "--row-groups",
        type=_row_groups,
        default=1,
        metavar="N",
        help=(
            "decode a request of several prompts as N groups of rows, each in a loop of its"
            " own, side by side on the model server's inter-op pool (the stack's"
            " InferenceInterOpThreads must then be 0, or at least N): a lone request is"
            " answered sooner, but requests that arrive together cost more CPU in all"
            f" (default 1, at most {MAX_ROW_GROUPS})"
        ),
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="production variant the artifact is for (default: the model kind)",
    )
    parser.add_argument(
        "--version", default=None, help="artifact version (default: timestamp, kind and data hash)"
    )
    parser.add_argument(
        "--samples", type=_positive, default=64, help="samples drawn for distinct-n metrics"
    )
    parser.add_argument(
        "--unpacked",
        action="store_true",
        help="write the artifact tree into OUT instead of OUT/model.tar.gz",
    )
    parser.add_argument(
        "--metrics-dir",
        type=Path,
        default=None,
        help="where metrics.json and the curve go (default OUT)",
    )
    parser.add_argument("--keep-urls", action="store_true", help="do not replace URLs by <url>")
    parser.add_argument(
        "--keep-mentions", action="store_true", help="do not replace @mentions by <user>"
    )
    parser.add_argument("--lowercase", action="store_true", help="lowercase every tweet")


def train_command(args: argparse.Namespace) -> int:
    from tweetgen_build.data import CleaningOptions
    from tweetgen_build.pipeline import TrainOptions, run_training
    from tweetgen_build.training import TrainSettings

    if args.init_from and args.model != "gpt2":
        raise InputError("--init-from applies to --model gpt2 only")
    if args.xla_decode and args.model != "gpt2":
        raise InputError("--xla-decode applies to --model gpt2 only")
    # Only a missing option takes the default: 0 (or nan) is refused by run_training's checks.
    learning_rate = (
        (2e-3 if args.model == "lstm" else 5e-4)
        if args.learning_rate is None
        else args.learning_rate
    )
    options = TrainOptions(
        model=args.model,
        data=list(args.data),
        out=args.out,
        preset=args.preset,
        overrides=dict(args.overrides),
        settings=TrainSettings(
            epochs=args.epochs,
            batch_size=args.batch_size,
            sequence_length=args.sequence_length,
            learning_rate=learning_rate,
            patience=args.patience,
            seed=args.seed,
        ),
        max_tweets=args.max_tweets,
        vocab_size=args.vocab_size,
        tokenizer=args.tokenizer,
        init_from=args.init_from,
        xla_decode=args.xla_decode,
        row_groups=args.row_groups,
        variant=args.variant,
        version=args.version,
        unpacked=args.unpacked,
        metrics_dir=args.metrics_dir,
        samples=args.samples,
        cleaning=CleaningOptions(
            replace_urls=not args.keep_urls,
            replace_users=not args.keep_mentions,
            lowercase=args.lowercase,
        ),
    )
    run_training(options)
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", type=Path, help="a model.tar.gz")
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        metavar="PATH",
        help="the tweets it was trained on: the test split is recomputed from them",
    )
    parser.add_argument("--max-tweets", type=_positive, default=None)
    parser.add_argument("--samples", type=_positive, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def evaluate_command(args: argparse.Namespace) -> int:
    from tweetgen_build.evaluate import evaluate_artifact

    metrics = evaluate_artifact(
        args.artifact, args.data, max_tweets=args.max_tweets, samples=args.samples, seed=args.seed
    )
    if args.json:
        # Strict JSON (other tools read it): an infinite perplexity becomes null, as in
        # pydantic's JSON, where Python's json module would write the non-standard Infinity.
        print(json.dumps({k: _json_number(v) for k, v in metrics.items()}, indent=2))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            print(
                f"{key:<{width}}  {value:.4g}"
                if isinstance(value, float)
                else f"{key:<{width}}  {value}"
            )
    return 0


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a model.tar.gz")
    parser.add_argument("--variant", default=None, help="the production variant it must be for")
    parser.add_argument(
        "--allow-xla",
        action="store_true",
        help=(
            "accept a SavedModel with XLA-compiled functions (--xla-decode), for a model server"
            " that compiles them: TensorFlow Serving on GPU instances"
        ),
    )


def validate_command(args: argparse.Namespace) -> int:
    from tweetgen.domain.artifact import validate_artifact

    check_artifact_path(args.path)
    with open(args.path, "rb") as handle:
        report = validate_artifact(handle, expected_variant=args.variant, allow_xla=args.allow_xla)
    if report.ok:
        meta = report.metadata
        assert meta is not None
        print(
            f"{printable(str(args.path))}: ok ({meta.kind} for variant {meta.variant},"
            f" version {meta.version}, {report.members} files, {report.total_bytes:,} bytes)"
        )
        return 0
    print(f"{printable(str(args.path))}: {len(report.problems)} problem(s)", file=sys.stderr)
    for problem in report.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {
    "train": ("train one model and package it as model.tar.gz", add_train_arguments, train_command),
    "evaluate": ("offline metrics of a packaged model", add_evaluate_arguments, evaluate_command),
    "validate-artifact": (
        "check an artifact as the rollout will",
        add_validate_arguments,
        validate_command,
    ),
}


def run(command: Command, args: argparse.Namespace) -> int:
    """Run a command; bad input ends with one line and exit status 2, never a traceback."""
    try:
        return command(args)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ServingMismatch as exc:
        print(f"{PROG}: error: {exc}; nothing was packaged", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def train_main(argv: list[str] | None = None) -> int:
    """``tweetgen train`` alone (the SageMaker script-mode entry point uses this)."""
    parser = argparse.ArgumentParser(prog=f"{PROG} train", description=COMMANDS["train"][0])
    add_train_arguments(parser)
    return run(train_command, parser.parse_args(argv))
