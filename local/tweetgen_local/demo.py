"""``tweetgen demo``: the whole story on one machine.

Both tiny models are trained on the shared tweets (cached by the hash of their inputs), the
local stack starts from ``template.yaml``, both artifacts are uploaded and rolled out state by
state, simulated users with a hidden true preference generate and give feedback through the
REST API, the experiment is aggregated and printed as it converges until the decision is taken
and applied; then the stack keeps serving until Ctrl-C (or ends with ``--no-serve``), leaving
``report.json`` behind.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROMPTS = ["i love", "today is", "my phone", ""]
DEFAULT_RATES = {"lstm": 0.10, "gpt2": 0.30}


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
    template: Path = Path("template.yaml")
    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    users: int = 600
    round_users: int = 100
    serve: bool = True
    #: Template parameters for the demo's stack: an ab test that may decide after 50 likes or
    #: dislikes per variant, aggregated once per round of users (not on the clock).
    parameters: dict[str, Any] = field(
        default_factory=lambda: {
            "DecisionPolicy": "ab",
            "ExperimentMinSamplesPerVariant": "50",
            "AggregateSchedule": "rate(1 day)",
        }
    )


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


def roll_out(artifacts: dict[str, Path], state_dir: Path) -> None:
    """Upload each artifact to the local stack's bucket and follow its rollout."""
    from tweetgen_local.deploy import deploy_model, find_target

    target = find_target(state_dir)
    for model, archive in artifacts.items():
        _say(f"\n== rollout of {model}: {archive}")
        status = deploy_model(
            archive, variant=model, version=None, target=target, wait=True, out=_say
        )
        if status != 0:
            raise RuntimeError(f"the rollout of {model} failed (see above)")


def run_experiment(stack: Any, options: DemoOptions) -> dict[str, Any]:
    """Simulated users in rounds; after each round the aggregate function runs and the
    experiment's state is printed (``tweetgen simulate``'s rounds, on the demo's stack)."""
    from tweetgen_local.simulate import UserSimulation, run_rounds, services_for
    from tweetgen_local.stack import stack_database_url

    api = str(stack.endpoints["api"])
    hidden = ", ".join(f"{k} {v:.0%}" for k, v in options.rates.items())
    _say(f"\n== experiment: {options.users} simulated users, true like rates {hidden} (hidden)")
    report = run_rounds(
        UserSimulation(api, options.rates, seed=options.seed),
        services_for(api, stack.pool, stack_database_url(stack.options.state_dir)),
        users=options.users,
        round_users=options.round_users,
        policy=str(options.parameters.get("DecisionPolicy", "ab")),
        log=lambda line: _say(f"   {line}"),
    )
    for line in report.summary():
        _say(f"   {line}")
    return report.as_dict()


def _serve_until_interrupted(stack: Any) -> None:
    from tweetgen_local.stack import wait_for_signal

    _say("\nserving until Ctrl-C:")
    for key in ("api", "graphql", "dashboard", "sagemaker_runtime", "aws"):
        if stack.endpoints.get(key):
            _say(f"   {key:<18} {stack.endpoints[key]}")
    wait_for_signal(threading.Event(), stack.stop)


def run_demo(options: DemoOptions) -> int:
    from tweetgen_local.stack import LocalStack, StackOptions

    artifacts = train_models(options)
    show_generations(artifacts, options.prompts, options.seed)
    state_dir = options.out / "stack"
    _say(f"\n== local stack ({state_dir})")
    stack = LocalStack(
        StackOptions(
            state_dir=state_dir, template=options.template, parameter_overrides=options.parameters
        ),
        log=lambda line: _say(f"   {line}"),
    )
    stack.start()
    try:
        roll_out(artifacts, state_dir)
        outcome = run_experiment(stack, options)
        report = options.out / "report.json"
        report.write_text(
            json.dumps({"endpoints": stack.endpoints, "experiment": outcome}, indent=2, default=str)
            + "\n"
        )
        _say(f"\nreport: {report}")
        if stack.endpoints.get("dashboard"):
            _say(f"dashboard: {stack.endpoints['dashboard']}")
        if options.serve:
            _serve_until_interrupted(stack)
            return 0
    finally:
        stack.stop()
    return 0
