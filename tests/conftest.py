"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def eventually(check: Callable[[], Any], timeout: float) -> Any:
    """``check()``'s first truthy value, polling until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.25)


def sam_cli() -> str:
    """The AWS SAM CLI: ``SAM_CLI``, else ``.venv-sam/bin/sam`` (``make sam-venv``), else ``sam``
    on PATH. Without one the calling test is skipped, except in CI (``CI=true``), where it fails.
    """
    configured = os.environ.get("SAM_CLI")
    candidates = [configured or str(REPO_ROOT / ".venv-sam" / "bin" / "sam"), shutil.which("sam")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = (
        f"AWS SAM CLI not found (SAM_CLI={configured or 'unset'}, .venv-sam, PATH);"
        " `make sam-venv` installs it from requirements-sam.lock"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def shared_data_dir() -> Path:
    """The shared Sentiment140 files (never copied into the repository)."""
    configured = os.environ.get("TWEETGEN_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "sentiment140"


@pytest.fixture(scope="session")
def sentiment140() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared tweets not found at {path} (set TWEETGEN_DATA_DIR)")
        pytest.skip(f"shared tweets not found at {path} (set TWEETGEN_DATA_DIR)")
    return path


# Tiny models trained once per session on real shared tweets, through the real pipeline.
TINY_TWEETS = 3000


@pytest.fixture(scope="session")
def tiny_data(sentiment140: Path) -> list[Path]:
    return [sentiment140 / "sample_20k.csv"]


def _train_tiny(root: Path, data: list[Path]) -> None:
    """The tokenizer and both tiny models, trained through the real pipeline into ``root``."""
    from tweetgen_build.data import CleaningOptions
    from tweetgen_build.pipeline import TrainOptions, prepare_data, run_training
    from tweetgen_build.tokenizer import train_tokenizer
    from tweetgen_build.training import TrainSettings

    splits, _ = prepare_data(data, CleaningOptions(), TINY_TWEETS, lambda _: None)
    tokenizer = train_tokenizer(splits.train, vocab_size=800)
    tokenizer.save(str(root / "tokenizer.json"))
    for model in ("lstm", "gpt2"):
        run_training(
            TrainOptions(
                model=model,
                data=data,
                out=root / model,
                preset="tiny",
                settings=TrainSettings(
                    epochs=2, batch_size=32, sequence_length=32, learning_rate=3e-3
                ),
                max_tweets=TINY_TWEETS,
                tokenizer=root / "tokenizer.json",
                samples=16,
            ),
            log=lambda _: None,
        )


@pytest.fixture(scope="session")
def tiny_run(
    tiny_data: list[Path], tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> dict[str, Path]:
    """The tokenizer and both tiny models, trained once per run and shared by every test
    (and by every pytest-xdist worker: the first to arrive trains, the others wait)."""
    if worker_id == "master":
        root = tmp_path_factory.mktemp("tiny-run")
        _train_tiny(root, tiny_data)
    else:
        from filelock import FileLock

        root = tmp_path_factory.getbasetemp().parent / "tiny-run"
        with FileLock(f"{root}.lock"):
            if not (root / ".trained").is_file():
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir()
                _train_tiny(root, tiny_data)
                (root / ".trained").touch()
    paths = {"tokenizer": root / "tokenizer.json", "root": root}
    for model in ("lstm", "gpt2"):
        paths[model] = root / model / "model.tar.gz"
        assert paths[model].is_file(), f"training left no {paths[model]}"
    return paths


@pytest.fixture(scope="session")
def unpacked(
    tiny_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    from tweetgen_build.packaging import unpack_artifact

    root = tmp_path_factory.mktemp("unpacked")
    return {m: unpack_artifact(tiny_run[m], root / m) for m in ("lstm", "gpt2")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files marked ``long`` go first, in their own order, then the rest in theirs.

    The suite's workers take whole files in this order (``make test`` passes ``--dist loadfile
    --no-loadscope-reorder``); a minute-long file taken last would keep one worker busy while the
    other has nothing left to do.
    """
    long_files = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in long_files)
