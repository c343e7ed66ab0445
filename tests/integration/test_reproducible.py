"""Same data, settings and seed: the same model, to the last bit of its training history."""

from __future__ import annotations

from pathlib import Path

from tweetgen_build.pipeline import TrainOptions, run_training
from tweetgen_build.training import TrainSettings


def _train(
    tiny_run: dict[str, Path], tiny_data: list[Path], out: Path, seed: int
) -> dict[str, object]:
    result = run_training(
        TrainOptions(
            model="lstm",
            data=tiny_data,
            out=out,
            preset="tiny",
            settings=TrainSettings(epochs=2, sequence_length=32, seed=seed),
            max_tweets=1200,
            tokenizer=tiny_run["tokenizer"],
            samples=8,
            version="repro",
        ),
        log=lambda _: None,
    )
    return result.metrics


def test_training_is_seeded_and_reproducible(
    tiny_run: dict[str, Path], tiny_data: list[Path], tmp_path: Path
) -> None:
    first = _train(tiny_run, tiny_data, tmp_path / "a", seed=5)
    second = _train(tiny_run, tiny_data, tmp_path / "b", seed=5)
    other = _train(tiny_run, tiny_data, tmp_path / "c", seed=6)
    assert first["history"] == second["history"]
    assert first["metrics"]["test_perplexity"] == second["metrics"]["test_perplexity"]  # type: ignore[index]
    assert first["history"] != other["history"]
