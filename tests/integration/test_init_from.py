"""GPT-2 from a pretrained checkpoint on disk (the hub path uses the same loading code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tweetgen_build.errors import InputError
from tweetgen_build.gpt2 import load_pretrained_gpt2, load_pretrained_tokenizer
from tweetgen_build.packaging import load_served_model, unpack_artifact
from tweetgen_build.pipeline import TrainOptions, run_training
from tweetgen_build.tokenizer import load_tokenizer, tokenizer_sha256
from tweetgen_build.training import TrainSettings


def _checkpoint(tokenizer_path: Path, where: Path) -> tuple[Path, np.ndarray]:
    """Save a small GPT-2 and its tokenizer the way save_pretrained lays out a checkpoint."""
    from transformers import GPT2Config, PreTrainedTokenizerFast, TFGPT2LMHeadModel

    tokenizer = load_tokenizer(tokenizer_path)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=64, n_embd=32, n_layer=1, n_head=2
    )
    model = TFGPT2LMHeadModel(config)
    probe = tf.constant([[0, 5, 9, 14]])
    logits = model(probe).logits.numpy()[0, -1]
    model.save_pretrained(where)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(
        where
    )
    return where, logits


def test_training_starts_from_the_checkpoint_weights_and_tokenizer(
    tiny_run: dict[str, Path], tiny_data: list[Path], tmp_path: Path
) -> None:
    checkpoint, before = _checkpoint(tiny_run["tokenizer"], tmp_path / "checkpoint")
    result = run_training(
        TrainOptions(
            model="gpt2",
            data=tiny_data,
            out=tmp_path / "out",
            # A vanishing learning rate leaves the weights as loaded: the export must match them.
            settings=TrainSettings(epochs=1, learning_rate=1e-12, sequence_length=32),
            max_tweets=1500,
            init_from=str(checkpoint),
            samples=4,
        ),
        log=lambda _: None,
    )
    assert result.metadata.hyperparameters["init_from"] == str(checkpoint)
    assert result.metadata.generation.max_context == 64
    assert result.metadata.tokenizer.sha256 == tokenizer_sha256(
        load_tokenizer(tiny_run["tokenizer"])
    )
    loaded, _, _ = load_served_model(unpack_artifact(result.artifact, tmp_path / "unpacked"))
    after = loaded.signatures["next_token_logits"](
        input_ids=tf.constant([[0, 5, 9, 14]]), attention_mask=tf.ones([1, 4], tf.int32)
    )["logits"].numpy()[0]
    np.testing.assert_allclose(after, before, atol=1e-4)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["kind"] == "gpt2"


def test_a_checkpoint_that_does_not_load_is_a_one_line_error(
    tiny_data: list[Path], tmp_path: Path
) -> None:
    # Folders that pass the early check (they hold a config.json) but that transformers cannot
    # load: its errors (and huggingface_hub's, and AttributeError) used to reach the user as
    # tracebacks. Local folders only: nothing here needs the network.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_embd": ', encoding="utf-8")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text('{"model_type": "gpt2"}', encoding="utf-8")
    for folder in (broken, weightless, tmp_path / "missing", tmp_path):
        for load, part in (
            (load_pretrained_tokenizer, "tokenizer"),
            (load_pretrained_gpt2, "model"),
        ):
            with pytest.raises(InputError) as caught:
                load(str(folder))
            message = str(caught.value)
            assert message.startswith(f"--init-from {folder}: cannot load the checkpoint's {part}")
            assert len(message.splitlines()) == 1
    with pytest.raises(InputError) as caught:
        run_training(
            TrainOptions(
                model="gpt2",
                data=tiny_data,
                out=tmp_path / "out",
                max_tweets=1500,
                init_from=str(broken),
            ),
            log=lambda _: None,
        )
    assert str(caught.value).startswith(f"--init-from {broken}: cannot load the checkpoint's")
    assert not (tmp_path / "out").exists()
