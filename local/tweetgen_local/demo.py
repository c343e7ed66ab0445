"""``tweetgen demo``: both tiny models trained on the shared tweets, then served and sampled."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROMPTS = ["i love", "today is", "my phone", ""]


@dataclass
class DemoOptions:
    data: list[Path]
    out: Path = Path(".tweetgen/demo")
    max_tweets: int = 20000
    epochs: int = 3
    preset: str = "tiny"
    vocab_size: int = 4000
    seed: int = 42
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    retrain: bool = False


def _say(message: str) -> None:
    print(message, flush=True)


def _cache_key(options: DemoOptions, model: str, data_fingerprint: str) -> str:
    """Trained models are reused while their inputs (data, settings, code) are unchanged."""
    import tweetgen_build

    code = hashlib.sha256()
    for source in sorted(Path(tweetgen_build.__file__).parent.rglob("*.py")):
        code.update(source.read_bytes())
    settings = {
        "model": model,
        "data": data_fingerprint,
        "max_tweets": options.max_tweets,
        "epochs": options.epochs,
        "preset": options.preset,
        "vocab_size": options.vocab_size,
        "seed": options.seed,
        "code": code.hexdigest(),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def train_models(options: DemoOptions) -> dict[str, Path]:
    from tweetgen_build.data import CleaningOptions
    from tweetgen_build.pipeline import TrainOptions, prepare_data, run_training
    from tweetgen_build.tokenizer import train_tokenizer
    from tweetgen_build.training import TrainSettings

    _say(f"== 1. data: {', '.join(str(p) for p in options.data)}")
    splits, _ = prepare_data(options.data, CleaningOptions(), options.max_tweets, _say)
    options.out.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Path] = {}
    tokenizer_path = options.out / "tokenizer.json"
    for step, model in enumerate(("lstm", "gpt2"), start=2):
        key = _cache_key(options, model, splits.fingerprint())
        model_dir = options.out / model
        archive = model_dir / "model.tar.gz"
        key_file = model_dir / "cache-key"
        if (
            not options.retrain
            and archive.is_file()
            and key_file.is_file()
            and key_file.read_text() == key
        ):
            _say(f"== {step}. {model}: unchanged inputs, reusing {archive}")
            artifacts[model] = archive
            continue
        if not tokenizer_path.is_file() or options.retrain:
            tokenizer = train_tokenizer(splits.train, vocab_size=options.vocab_size)
            tokenizer.save(str(tokenizer_path))
            _say(f"   shared tokenizer: {tokenizer.get_vocab_size():,} tokens -> {tokenizer_path}")
        _say(f"== {step}. train {model} ({options.preset}, up to {options.epochs} epochs)")
        result = run_training(
            TrainOptions(
                model=model,  # type: ignore[arg-type]
                data=options.data,
                out=model_dir,
                preset=options.preset,
                settings=TrainSettings(
                    epochs=options.epochs,
                    learning_rate=2e-3 if model == "lstm" else 1e-3,
                    seed=options.seed,
                ),
                max_tweets=options.max_tweets,
                tokenizer=tokenizer_path,
                version=f"demo-{key[:8]}",
            ),
            log=_say,
        )
        key_file.write_text(key)
        artifacts[model] = result.artifact
    return artifacts


def show_generations(
    artifacts: dict[str, Path], prompts: list[str], seed: int
) -> dict[str, list[str]]:
    """Validate each artifact as the rollout will, load it as the server does, and sample."""
    from tweetgen.domain.artifact import validate_artifact
    from tweetgen_build.packaging import read_metadata, unpack_artifact

    from tweetgen_local.hosting import ServedModel

    texts: dict[str, list[str]] = {}
    for model, archive in artifacts.items():
        with open(archive, "rb") as handle:
            report = validate_artifact(handle, expected_variant=model)
        if not report.ok:
            raise RuntimeError(f"{archive} failed validation: {report.problems}")
        metadata = read_metadata(archive)
        m = metadata.metrics
        _say(
            f"\n== {model} {metadata.version}: test perplexity {m['test_perplexity']:.1f}"
            f" (n-gram baseline {m['ngram_perplexity']:.1f}), distinct-2 {m['distinct_2']:.2f}"
        )
        with tempfile.TemporaryDirectory(prefix="tweetgen-demo-") as tmp:
            served = ServedModel(unpack_artifact(archive, Path(tmp)))
            request = {"inputs": prompts, "parameters": {"max_new_tokens": 24, "seed": seed}}
            answer = served.invoke(json.dumps(request).encode())
        if answer.status != 200:
            raise RuntimeError(f"{model} answered {answer.status}: {answer.body.decode()}")
        texts[model] = [item["generated_text"] for item in json.loads(answer.body)]
        for prompt, text in zip(prompts, texts[model], strict=True):
            _say(f"   {prompt!r:>12} -> {prompt}{text}")
    return texts


def run_demo(options: DemoOptions) -> int:
    artifacts = train_models(options)
    show_generations(artifacts, options.prompts, options.seed)
    _say(f"\nartifacts: {', '.join(str(p) for p in artifacts.values())}")
    print(
        "(the local stack, rollout and live experiment are not part of this demo yet)",
        file=sys.stderr,
    )
    return 0
