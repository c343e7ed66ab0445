"""``tweetgen train``'s checks before TensorFlow, and the evaluation helpers that need none.

Every bad setting here used to surface only after training (a schema error when the metadata
was built, an OverflowError in the perplexity) or as a traceback from deep inside a library.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest
from tweetgen.domain.artifact import METADATA_PATH, DataMetadata
from tweetgen_build.configs import GPT2Settings, LSTMConfig
from tweetgen_build.data import CleaningOptions
from tweetgen_build.errors import InputError, check_artifact_path
from tweetgen_build.evaluate import evaluate_artifact, perplexity_of, recorded_cleaning
from tweetgen_build.packaging import read_unpacked
from tweetgen_build.pipeline import (
    ModelKind,
    TrainOptions,
    _hyperparameters,
    check_options,
    checkpoint_source,
    expand_inputs,
    local_checkpoint,
    model_settings,
    obtain_tokenizer,
    prepare_data,
    refuse_diverged,
    source_names,
    training_windows,
    write_error,
)
from tweetgen_build.tokenizer import EOS_ID
from tweetgen_build.training import TrainSettings

from tests.unit.test_artifact import artifact_bytes, good_files, metadata_dict


def options(model: ModelKind = "lstm", **changes: Any) -> TrainOptions:
    settings = TrainSettings(**changes.pop("settings", {}))
    out = changes.pop("out", Path("out"))
    return TrainOptions(model=model, data=[], out=out, settings=settings, **changes)


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
        ({"settings": {"seed": 2**32}}, ("--seed", "4294967296")),
        ({"vocab_size": 10}, ("--vocab-size", "300", "got 10")),
        ({"row_groups": 0}, ("--row-groups must be from 1 to 8, got 0",)),
        ({"row_groups": 9}, ("--row-groups", "got 9")),
        ({"row_groups": 2.0}, ("--row-groups", "got 2.0")),
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
        # Used to end in an OverflowError from TensorFlow once the data and tokenizer were done.
        ("lstm", {"units": 10**20}, ("units=100000000000000000000", "at most 2147483647")),
        ("gpt2", {"n_layer": 2**31}, ("n_layer=2147483648", "at most 2147483647")),
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


def test_an_empty_folder_with_a_newline_in_its_name_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "nl\ndir"
    folder.mkdir()
    with pytest.raises(InputError) as caught:
        expand_inputs([folder])
    one_line(caught, "nl\\ndir", "holds no .csv or .txt file")


def test_too_few_tweets_in_a_file_with_a_newline_in_its_name_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "two\nlines.txt"
    data.write_text("one lonely tweet\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        prepare_data([data], CleaningOptions(), None, lambda _: None)
    one_line(caught, "two\\nlines.txt", "too few tweets (1)")


# --- names that are not UTF-8 ----------------------------------------------------------------


def test_a_data_file_name_that_is_not_utf8_is_recorded_in_a_form_metadata_json_holds(
    tmp_path: Path,
) -> None:
    # A name with the byte \xff reaches Python as a lone surrogate, which used to fail the
    # metadata's JSON serialisation after the whole training.
    os.makedirs(os.fsencode(tmp_path) + b"/data")
    with open(os.fsencode(tmp_path) + b"/data/tw\xffeets\n.txt", "wb") as handle:
        handle.write(b"a tweet\n")
    files = expand_inputs([tmp_path / "data"])
    names = source_names(files)
    assert names == ["tw\\xffeets\\n.txt"]
    data = DataMetadata(
        sha256="0" * 64, n_train=1, n_validation=1, n_test=1, sources=names, cleaning={}
    )
    assert json.loads(data.model_dump_json().encode("utf-8"))["sources"] == names
    assert source_names([Path("tweets é.csv")]) == ["tweets é.csv"]  # valid names stay as they are


def test_row_groups_are_recorded_with_the_hyperparameters_when_not_one() -> None:
    check_options(options(row_groups=8))
    assert "row_groups" not in _hyperparameters(options(), {})
    assert _hyperparameters(options("gpt2", row_groups=2), {})["row_groups"] == 2


def test_an_init_from_path_that_is_not_utf8_is_recorded_in_a_form_metadata_json_holds() -> None:
    recorded = _hyperparameters(options("gpt2", init_from=os.fsdecode(b"/ckpt/\xff")), {})
    assert recorded["init_from"] == "/ckpt/\\xff"
    json.dumps(recorded).encode("utf-8")


# --- output folders --------------------------------------------------------------------------


def test_an_output_folder_that_is_a_file_is_refused_before_the_data_is_read(
    tmp_path: Path,
) -> None:
    regular = tmp_path / "results.txt"
    regular.write_text("not a folder\n", encoding="utf-8")
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"out": regular}, ("--out", "results.txt", "exists and is not a directory")),
        ({"out": regular / "run1"}, ("--out", "results.txt is not a directory")),
        (
            {"out": tmp_path / "out", "metrics_dir": regular},
            ("--metrics-dir", "results.txt", "exists and is not a directory"),
        ),
        (
            {"out": tmp_path / "out", "metrics_dir": regular / "m" / "n"},
            ("--metrics-dir", "results.txt is not a directory"),
        ),
    ]
    for changes, fragments in cases:
        with pytest.raises(InputError) as caught:
            check_options(options(**changes))
        one_line(caught, *fragments)


def test_a_folder_where_an_output_file_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out" / "model.tar.gz").mkdir(parents=True)
    with pytest.raises(InputError) as caught:
        check_options(options(out=tmp_path / "out"))
    one_line(caught, "--out", "model.tar.gz in it is a directory")
    (tmp_path / "metrics" / "metrics.json").mkdir(parents=True)
    with pytest.raises(InputError) as caught:
        check_options(options(out=tmp_path / "new", metrics_dir=tmp_path / "metrics"))
    one_line(caught, "--metrics-dir", "metrics.json in it is a directory")
    # --unpacked writes the tree, not model.tar.gz.
    check_options(options(out=tmp_path / "out", unpacked=True))


def test_output_folders_that_exist_or_can_be_made_pass(tmp_path: Path) -> None:
    check_options(options(out=tmp_path))
    check_options(options(out=tmp_path / "a" / "b", metrics_dir=tmp_path / "c" / "d"))


def test_an_output_folder_that_cannot_be_written_after_all_is_one_line(tmp_path: Path) -> None:
    regular = tmp_path / "results.txt"
    regular.write_text("", encoding="utf-8")
    with pytest.raises(OSError) as caught:
        regular.mkdir(parents=True, exist_ok=True)  # what run_training did after the training
    message = str(write_error("--metrics-dir", regular, caught.value))
    assert message.startswith(f"--metrics-dir {regular}: cannot write there (")
    assert len(message.splitlines()) == 1


# --- --init-from ---------------------------------------------------------------------------


def test_a_local_init_from_must_be_a_checkpoint_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    regular = tmp_path / "config.json"
    regular.write_text("{}", encoding="utf-8")
    cases = [
        (str(tmp_path / "nonexistent_ckpt"), ("nonexistent_ckpt", "no such folder")),
        ("./nonexistent_ckpt", ("./nonexistent_ckpt", "no such folder")),
        ("~/nonexistent_tweetgen_ckpt", ("~/nonexistent_tweetgen_ckpt", "no such folder")),
        ("a/b/c", ("a/b/c", "no such folder")),  # no hub name has two slashes
        (str(empty), ("empty", "holds no config.json")),
        (str(regular), ("config.json", "is not a folder")),
        ("two\nlines/", ("two\\nlines/", "no such folder")),
        ("", ("--init-from",)),
    ]
    for value, fragments in cases:
        with pytest.raises(InputError) as caught:
            check_options(options("gpt2", init_from=value))
        one_line(caught, "--init-from", *fragments)


def test_a_checkpoint_folder_or_a_hub_name_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}", encoding="utf-8")
    check_options(options("gpt2", init_from=str(tmp_path / "ckpt")))
    monkeypatch.chdir(tmp_path)
    check_options(options("gpt2", init_from="ckpt"))  # an existing folder is a folder
    for name in ("gpt2", "openai-community/gpt2", "distilgpt2"):
        assert local_checkpoint(name) is None
        assert checkpoint_source(name) == name
        check_options(options("gpt2", init_from=name))  # left to the hub (needs network)
    assert checkpoint_source("~/ckpt") == str(Path("~/ckpt").expanduser())


# --- evaluate: everything it can check before TensorFlow -----------------------------------


def artifact_files(**overrides: bytes) -> dict[str, bytes]:
    """The members of an artifact whose metadata.json the build's own schema takes."""
    generation = {"max_context": 64, "max_new_tokens": 32, "max_batch_size": 16}
    metadata = json.dumps(metadata_dict(generation=generation)).encode()
    return good_files(**{METADATA_PATH: metadata, **overrides})


def test_evaluate_refuses_a_seed_out_of_range_before_anything_is_read(tmp_path: Path) -> None:
    for seed in (10**20, -1, 2**32):
        with pytest.raises(InputError) as caught:
            evaluate_artifact(tmp_path / "missing.tar.gz", [tmp_path / "tweets.txt"], seed=seed)
        one_line(caught, "--seed", str(seed))


def test_evaluate_refuses_a_truncated_artifact_in_one_line(tmp_path: Path) -> None:
    # Random bytes do not compress: cutting the archive cuts the gzip stream mid-member.
    weights = random.Random(0).randbytes(400_000)
    whole = artifact_bytes(
        artifact_files(**{"model/1/variables/variables.data-00000-of-00001": weights})
    )
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(whole[:200_000])
    with pytest.raises(InputError) as caught:
        evaluate_artifact(truncated, [tmp_path / "tweets.txt"])
    one_line(caught, "t.tar.gz", "not a loadable tweetgen artifact")


def test_evaluate_refuses_an_artifact_whose_tokenizer_is_no_tokenizer(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(artifact_bytes(artifact_files(**{"code/tokenizer.json": b'{"no": 1}'})))
    with pytest.raises(InputError) as caught:
        evaluate_artifact(archive, [tmp_path / "tweets.txt"])
    one_line(caught, "model.tar.gz", "code/tokenizer.json is not a tokenizer JSON file")


def test_an_unpacked_artifact_with_a_broken_tokenizer_is_a_value_error(tmp_path: Path) -> None:
    for name, data in artifact_files(**{"code/tokenizer.json": b"not json"}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=r"code/tokenizer\.json is not a tokenizer JSON file"):
        read_unpacked(tmp_path)
