"""``tweetgen train``'s checks before TensorFlow, and the evaluation helpers that need none.

Every bad setting here used to surface only after training (a schema error when the metadata
was built, an OverflowError in the perplexity) or as a traceback from deep inside a library.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from tweetgen_build.configs import GPT2Settings, LSTMConfig
from tweetgen_build.data import CleaningOptions
from tweetgen_build.errors import InputError, check_artifact_path
from tweetgen_build.evaluate import evaluate_artifact, perplexity_of, recorded_cleaning
from tweetgen_build.pipeline import (
    ModelKind,
    TrainOptions,
    check_options,
    expand_inputs,
    model_settings,
    obtain_tokenizer,
    refuse_diverged,
    training_windows,
)
from tweetgen_build.tokenizer import EOS_ID
from tweetgen_build.training import TrainSettings


def options(model: ModelKind = "lstm", **changes: Any) -> TrainOptions:
    settings = TrainSettings(**changes.pop("settings", {}))
    return TrainOptions(model=model, data=[], out=Path("out"), settings=settings, **changes)


def one_line(error: pytest.ExceptionInfo[InputError], *fragments: str) -> str:
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message
    return message


# --- variant, version, learning rate, seed, vocabulary size --------------------------------


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"variant": "bad_variant!"}, ("--variant", "'bad_variant!'", "letters, digits")),
        ({"variant": ""}, ("--variant", "''")),
        ({"variant": "a" * 64}, ("--variant",)),
        ({"variant": "two\nlines"}, ("--variant", "two\\nlines")),
        ({"version": "v1/evil"}, ("--version", "'v1/evil'")),
        ({"version": ".hidden"}, ("--version",)),
        ({"settings": {"learning_rate": math.nan}}, ("--learning-rate", "nan")),
        ({"settings": {"learning_rate": math.inf}}, ("--learning-rate", "inf")),
        ({"settings": {"learning_rate": -1e-3}}, ("--learning-rate", "-0.001")),
        ({"settings": {"learning_rate": 0.0}}, ("--learning-rate", "positive")),
        ({"settings": {"seed": -1}}, ("--seed",)),
        ({"vocab_size": 10}, ("--vocab-size", "300", "got 10")),
    ],
)
def test_bad_settings_are_refused_before_the_data_is_read(
    changes: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(InputError) as caught:
        check_options(options(**changes))
    one_line(caught, *fragments)


def test_good_settings_pass_the_checks() -> None:
    check_options(options())
    check_options(options("gpt2", variant="gpt2-b", version="20240101-1.2_rc"))
    check_options(options(settings={"learning_rate": 1e4}))  # diverges, but is a number
    # Whoever brings a tokenizer trains none, so --vocab-size is unused there.
    check_options(options(vocab_size=10, tokenizer=Path("tokenizer.json")))
    check_options(options("gpt2", vocab_size=10, init_from="gpt2"))


# --- model settings (--set) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "overrides", "fragments"),
    [
        ("lstm", {"units": "abc"}, ("units='abc'", "must be an integer", "str")),
        ("lstm", {"units": 1.5}, ("units=1.5", "must be an integer")),
        ("lstm", {"num_layers": True}, ("num_layers=True", "must be an integer")),
        ("lstm", {"embedding_dim": 0}, ("embedding_dim=0", "positive")),
        ("lstm", {"dropout": "high"}, ("dropout='high'", "must be a number")),
        ("lstm", {"dropout": 1.0}, ("dropout=1.0", "rate")),
        ("lstm", {"dropout": math.nan}, ("dropout=nan", "rate")),
        ("gpt2", {"n_head": [2]}, ("n_head=[2]", "must be an integer", "list")),
        ("gpt2", {"n_embd": 64, "n_head": 3}, ("n_embd (64)", "n_head (3)")),
        ("gpt2", {"n_positions": 1}, ("n_positions",)),
    ],
)
def test_model_settings_of_the_wrong_type_or_range_are_refused(
    model: ModelKind, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(InputError) as caught:
        model_settings(options(model, preset="tiny", overrides=overrides), vocab_size=400)
    one_line(caught, *fragments)


def test_model_settings_of_the_right_type_are_taken() -> None:
    lstm = model_settings(options(preset="tiny", overrides={"units": 32, "dropout": 0}), 400)
    assert lstm == LSTMConfig(vocab_size=400, embedding_dim=64, units=32, num_layers=1, dropout=0)
    gpt2 = model_settings(options("gpt2", preset="tiny", overrides={"n_embd": 96}), 400)
    assert isinstance(gpt2, GPT2Settings) and gpt2.n_embd == 96


# --- tokenizer file, training windows ------------------------------------------------------


def test_a_tokenizer_without_the_end_of_text_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(
        '{"version":"1.0","model":{"type":"BPE","vocab":{"a":0},"merges":[]}}', encoding="utf-8"
    )
    with pytest.raises(InputError) as caught:
        obtain_tokenizer(options(tokenizer=path), splits=None, log=print)  # type: ignore[arg-type]
    one_line(caught, "tokenizer.json", "<|endoftext|>")


def test_a_tokenizer_file_that_is_no_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tweets.txt"
    path.write_text("a tweet\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        obtain_tokenizer(options(tokenizer=path), splits=None, log=print)  # type: ignore[arg-type]
    one_line(caught, "tweets.txt", "not a tokenizer JSON file")


def test_too_few_tokens_for_one_window_is_a_one_line_error() -> None:
    encoded = {"train": [[EOS_ID, *range(1, 30), EOS_ID]] * 10, "validation": [[EOS_ID, 5, EOS_ID]]}
    with pytest.raises(InputError) as caught:
        training_windows(encoded, 250, EOS_ID)
    one_line(caught, "--sequence-length 250", "validation", "have 3")
    train, validation = training_windows(encoded, 2, EOS_ID)
    assert train.shape[1] == validation.shape[1] == 3


# --- divergence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "tokens", "expected"),
    [(-1e6, 10, math.inf), (-2 * 710.0, 2, math.inf), (-10.0, 5, math.exp(2.0)), (0.0, 3, 1.0)],
)
def test_perplexity_of_a_diverged_model_is_infinite(
    total: float, tokens: int, expected: float
) -> None:
    assert perplexity_of(total, tokens) == pytest.approx(expected)


def test_a_diverged_training_is_not_packaged() -> None:
    refuse_diverged({"test_perplexity": 12.5, "best_val_loss": 2.5}, 2e-3)
    with pytest.raises(InputError) as caught:
        refuse_diverged({"test_perplexity": math.inf, "best_val_loss": math.nan}, 1e4)
    one_line(caught, "diverged", "test_perplexity inf", "best_val_loss nan", "--learning-rate")


# --- inputs and artifacts ------------------------------------------------------------------


def test_a_folder_of_upper_case_files_is_read(tmp_path: Path) -> None:
    for name in ("A.CSV", "B.TXT", "c.Csv", "README.TXT", "notes.md"):
        (tmp_path / name).write_text("hello\n", encoding="utf-8")
    said: list[str] = []
    assert [p.name for p in expand_inputs([tmp_path], said.append)] == ["A.CSV", "B.TXT", "c.Csv"]
    assert said == [f"skipped {tmp_path / 'README.TXT'}: a README, not tweets"]


def test_a_directory_is_no_artifact(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        check_artifact_path(tmp_path)
    one_line(caught, str(tmp_path), "is a directory", "model.tar.gz")
    with pytest.raises(InputError) as caught:
        evaluate_artifact(tmp_path, [tmp_path / "tweets.txt"])
    one_line(caught, "is a directory", "model.tar.gz")
    with pytest.raises(InputError) as caught:
        check_artifact_path(tmp_path / "gone.tar.gz")
    one_line(caught, "gone.tar.gz", "no such file")


def test_cleaning_options_of_a_newer_build_are_ignored_with_a_note() -> None:
    notes: list[str] = []
    recorded = {"lowercase": True, "strip_emoji": True, "replace_urls": False}
    assert recorded_cleaning(recorded, notes.append) == CleaningOptions(
        lowercase=True, replace_urls=False
    )
    assert len(notes) == 1 and "strip_emoji" in notes[0] and "\n" not in notes[0]
    assert recorded_cleaning({"lowercase": False}, notes.append) == CleaningOptions()
    assert len(notes) == 1
