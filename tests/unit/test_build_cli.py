"""How the model build's command line ends a command that fails."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from tweetgen_build import pipeline
from tweetgen_build.cli import (
    MAX_INT,
    Command,
    _positive,
    add_evaluate_arguments,
    add_train_arguments,
    run,
    train_command,
    validate_command,
)
from tweetgen_build.errors import InputError, ServingMismatch


def _failing(exc: Exception) -> Command:
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (InputError("data.csv: no such file"), 2, "tweetgen: error: data.csv: no such file"),
        (
            ServingMismatch("the SavedModel in out/model/1 does not run"),
            1,
            "tweetgen: error: the SavedModel in out/model/1 does not run; nothing was packaged",
        ),
    ],
)
def test_a_failed_command_ends_with_one_line_and_its_status(
    exc: Exception, status: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(_failing(exc), argparse.Namespace()) == status
    assert capsys.readouterr().err == line + "\n"


def _train_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(["--model", "lstm", "--data", "tweets.txt", "--out", "out", *extra])


@pytest.mark.parametrize(
    ("given", "expected"), [(None, 2e-3), ("0", 0.0), ("1e-4", 1e-4), ("nan", math.nan)]
)
def test_only_a_missing_learning_rate_takes_the_default(
    given: str | None, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[float] = []
    monkeypatch.setattr(
        pipeline, "run_training", lambda options: taken.append(options.settings.learning_rate)
    )
    args = _train_args() if given is None else _train_args("--learning-rate", given)
    assert train_command(args) == 0
    assert taken == [pytest.approx(expected, nan_ok=True)]


def test_a_zero_learning_rate_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # tweets.txt does not exist: the setting is refused before any data is read.
    assert run(train_command, _train_args("--learning-rate", "0")) == 2
    assert capsys.readouterr().err == (
        "tweetgen: error: --learning-rate must be a positive finite number, got 0.0\n"
    )


def test_validate_artifact_on_a_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(path=tmp_path, variant=None, allow_xla=False)
    assert run(validate_command, args) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"tweetgen: error: {tmp_path}: is a directory; a model.tar.gz is expected"
    )
    assert err.count("\n") == 1


def _integer_options(add: Callable[[argparse.ArgumentParser], None]) -> list[str]:
    parser = argparse.ArgumentParser()
    add(parser)
    return [action.option_strings[0] for action in parser._actions if action.type is _positive]


TRAIN_INTEGERS = _integer_options(add_train_arguments)
EVALUATE_INTEGERS = _integer_options(add_evaluate_arguments)


def test_every_count_option_is_bounded() -> None:
    assert set(TRAIN_INTEGERS) == {
        "--epochs",
        "--batch-size",
        "--sequence-length",
        "--patience",
        "--max-tweets",
        "--vocab-size",
        "--samples",
    }
    assert set(EVALUATE_INTEGERS) == {"--max-tweets", "--samples"}


@pytest.mark.parametrize(
    ("add", "required", "option"),
    [
        (add_train_arguments, ["--model", "lstm", "--data", "t.txt", "--out", "o"], o)
        for o in TRAIN_INTEGERS
    ]
    + [(add_evaluate_arguments, ["model.tar.gz", "--data", "t.txt"], o) for o in EVALUATE_INTEGERS],
)
def test_an_integer_option_above_2_to_the_31_is_refused_in_one_line(
    add: Callable[[argparse.ArgumentParser], None],
    required: list[str],
    option: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 10**20 used to reach the tokenizers library (OverflowError) or TensorFlow (ValueError).
    parser = argparse.ArgumentParser(prog="tweetgen")
    add(parser)
    largest = parser.parse_args([*required, option, str(MAX_INT)])
    assert getattr(largest, option[2:].replace("-", "_")) == MAX_INT
    with pytest.raises(SystemExit) as caught:
        parser.parse_args([*required, option, str(10**20)])
    assert caught.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == (
        f"tweetgen: error: argument {option}: must be at most 2147483647 (2**31 - 1),"
        " got 100000000000000000000"
    )


def test_row_groups_are_one_by_default_and_bounded_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="tweetgen train")
    add_train_arguments(parser)
    required = ["--model", "lstm", "--data", "t.txt", "--out", "o"]
    assert parser.parse_args(required).row_groups == 1
    assert parser.parse_args([*required, "--row-groups", "8"]).row_groups == 8
    for bad in ("0", "9"):
        with pytest.raises(SystemExit):
            parser.parse_args([*required, "--row-groups", bad])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert (
            error == f"tweetgen train: error: argument --row-groups: must be from 1 to 8, got {bad}"
        )


def test_validate_artifact_names_a_file_with_a_newline_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "bad\nname.tar.gz"
    archive.write_bytes(b"not a tarball")
    args = argparse.Namespace(path=archive, variant=None, allow_xla=False)
    assert run(validate_command, args) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{tmp_path}/bad\\nname.tar.gz: ")
