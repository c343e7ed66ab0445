"""The model build as a SageMaker training job: script-mode arguments inside, a launcher outside.

Inside the training container SageMaker describes the job with ``SM_*`` environment variables
(channel folders, model and output folders, hyperparameters as JSON), not with ``tweetgen
train``'s command line. :func:`script_mode_argv` translates one into the other, so a job runs
exactly the training code that runs locally, and rejects a bad hyperparameter with one clear
line instead of a traceback after minutes of provisioning.

Outside, :func:`launch_training_job` starts such a job with the sagemaker SDK v3
``ModelTrainer``. The SDK is imported only inside the launcher functions: with its
dependencies it is about 1 GB and some of its pins clash with the project's lock, so nothing
else in the project may need it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tweetgen_build.configs import MAX_INT, MAX_ROW_GROUPS, MAX_SEED
from tweetgen_build.errors import InputError

if TYPE_CHECKING:
    import boto3
    from sagemaker.train import ModelTrainer

# Channels with a meaning of their own. "code" and "sm_drivers" are the ones ModelTrainer adds
# for the source code and its drivers: they are never training data.
TRAIN_CHANNEL = "train"
TOKENIZER_CHANNEL = "tokenizer"
INIT_CHANNEL = "init"
SDK_CHANNELS = frozenset({"code", "sm_drivers"})
DEFAULT_TOKENIZER_FILE = "tokenizer.json"
DEFAULT_INPUT_DATA_DIR = "/opt/ml/input/data"

# Set from the environment, never by a hyperparameter: a job has one place for each.
FROM_ENVIRONMENT = {
    "data": "the data comes from the input channels",
    "out": "the artifact goes to SM_MODEL_DIR",
    "unpacked": "a job always writes the artifact tree; SageMaker packs model.tar.gz",
    "metrics_dir": "metrics go to SM_OUTPUT_DATA_DIR",
}
# Older SDKs add these on their own; they say nothing about the model.
PLATFORM_PREFIX = "sagemaker_"
PLATFORM_NAMES = frozenset({"model_dir"})

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _problem(name: str, message: str) -> InputError:
    return InputError(f"hyperparameter {name!r}: {message}")


def _parse_int(name: str, value: object, minimum: int | None, maximum: int = MAX_INT) -> int:
    # SageMaker hands hyperparameters over as strings or JSON-decoded values: accept both, but
    # never a bool (an int in Python) nor a float that would silently lose its fraction.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _problem(name, f"expected an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise _problem(name, f"expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise _problem(name, f"must be at least {minimum}, got {number}")
    if number > maximum:
        raise _problem(name, f"must be at most {maximum}, got {number}")
    return number


def _parse_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _problem(name, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _problem(name, f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise _problem(name, f"must be a positive number, got {value!r}")
    return number


def _parse_text(name: str, value: object) -> str:
    # A text such as a version "3" arrives JSON-decoded as the number 3: take it back as text.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _problem(name, f"expected text, got {value!r}")
    text = str(value).strip()
    if not text:
        raise _problem(name, "must not be empty")
    return text


def _parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _problem(name, f"expected true or false, got {value!r}")


def _parse_overrides(name: str, value: object) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _problem(
                name, f"expected a JSON object of model settings, got {value!r}"
            ) from None
    if not isinstance(value, dict):
        raise _problem(name, f"expected a JSON object of model settings, got {value!r}")
    settings: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, setting in value.items():
        if not isinstance(key, str) or not key.strip() or "=" in key:
            raise _problem(name, f"bad setting name {key!r}")
        stripped = key.strip()
        if stripped in given:
            # Keeping either value would silently drop the other.
            raise _problem(name, f"{key!r} and {given[stripped]!r} are the same setting")
        if isinstance(setting, int) and not isinstance(setting, bool) and setting > MAX_INT:
            # As tweetgen train refuses it, but before a job is provisioned.
            raise _problem(name, f"setting {stripped!r} must be at most {MAX_INT}, got {setting}")
        given[stripped] = key
        settings[stripped] = setting
    return settings


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: how to read its value and which ``tweetgen train`` option it sets."""

    flag: str
    parse: Callable[[str, object], object]
    help: str

    def argv(self, value: object) -> list[str]:
        if isinstance(value, bool):
            return [self.flag] if value else []
        if isinstance(value, dict):
            # Repeatable NAME=VALUE option; the value stays JSON so numbers stay numbers.
            return [
                part
                for key in sorted(value)
                for part in (self.flag, f"{key}={json.dumps(value[key])}")
            ]
        return [self.flag, str(value)]


def _int(minimum: int | None, maximum: int = MAX_INT) -> Callable[[str, object], object]:
    return lambda name, value: _parse_int(name, value, minimum, maximum)


def _choice(*choices: str) -> Callable[[str, object], object]:
    def parse(name: str, value: object) -> str:
        text = _parse_text(name, value)
        if text not in choices:
            raise _problem(name, f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


# Names are ``tweetgen train``'s long options with underscores (hyphens are accepted too).
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "model": Hyperparameter("--model", _choice("lstm", "gpt2"), "lstm or gpt2 (required)"),
    "epochs": Hyperparameter("--epochs", _int(1), "training epochs"),
    "batch_size": Hyperparameter("--batch-size", _int(1), "sequences per step"),
    "max_tweets": Hyperparameter("--max-tweets", _int(1), "use at most N tweets"),
    "seed": Hyperparameter("--seed", _int(0, MAX_SEED), "random seed"),
    "tokenizer": Hyperparameter(
        "--tokenizer", _parse_text, "tokenizer.json to reuse (inside the 'tokenizer' channel)"
    ),
    "init_from": Hyperparameter(
        "--init-from", _parse_text, "GPT-2 checkpoint folder (inside the 'init' channel) or name"
    ),
    "preset": Hyperparameter("--preset", _parse_text, "model size: tiny, small, gpt2-small"),
    "overrides": Hyperparameter(
        "--set", _parse_overrides, 'model settings over the preset, e.g. {"units": 256}'
    ),
    "sequence_length": Hyperparameter("--sequence-length", _int(1), "tokens per window"),
    "learning_rate": Hyperparameter("--learning-rate", _parse_positive_float, "optimizer step"),
    "patience": Hyperparameter("--patience", _int(1), "early-stopping patience in epochs"),
    "vocab_size": Hyperparameter("--vocab-size", _int(1), "tokenizer vocabulary"),
    "xla_decode": Hyperparameter(
        "--xla-decode", _parse_bool, "GPT-2: the decoding step compiled by XLA (GPU endpoints)"
    ),
    "row_groups": Hyperparameter(
        "--row-groups", _int(1, MAX_ROW_GROUPS), "decode a batch in N groups of rows side by side"
    ),
    "variant": Hyperparameter("--variant", _parse_text, "production variant of the artifact"),
    "version": Hyperparameter("--version", _parse_text, "artifact version"),
    "samples": Hyperparameter("--samples", _int(1), "samples drawn for distinct-n metrics"),
    "keep_urls": Hyperparameter("--keep-urls", _parse_bool, "keep URLs"),
    "keep_mentions": Hyperparameter("--keep-mentions", _parse_bool, "keep @mentions"),
    "lowercase": Hyperparameter("--lowercase", _parse_bool, "lowercase every tweet"),
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def validate_hyperparameters(hyperparameters: Mapping[str, object]) -> dict[str, object]:
    """Check and convert hyperparameters; raise one InputError that lists every problem.

    ``None`` means "not set". SageMaker's own names (``sagemaker_*``, ``model_dir``) are
    ignored; every other unknown name is an error, so a typo never trains with a default.
    """
    values: dict[str, object] = {}
    seen: dict[str, str] = {}
    failed: set[str] = set()
    problems: list[str] = []
    for raw_name, value in hyperparameters.items():
        name = _normalise(str(raw_name))
        if name.startswith(PLATFORM_PREFIX) or name in PLATFORM_NAMES:
            continue
        if name in seen:
            problems.append(f"{raw_name!r} and {seen[name]!r} are the same hyperparameter")
            continue
        seen[name] = str(raw_name)
        if name in FROM_ENVIRONMENT:
            problems.append(f"{raw_name!r} cannot be set: {FROM_ENVIRONMENT[name]}")
        elif name not in HYPERPARAMETERS:
            problems.append(
                f"unknown hyperparameter {raw_name!r} (known: {', '.join(HYPERPARAMETERS)})"
            )
        elif value is not None:
            try:
                values[name] = HYPERPARAMETERS[name].parse(name, value)
            except InputError as exc:
                failed.add(name)
                problems.append(str(exc))
    if "model" not in values and "model" not in failed:
        problems.append("hyperparameter 'model' is required (lstm or gpt2)")
    if values.get("init_from") is not None and values.get("model", "gpt2") != "gpt2":
        problems.append("hyperparameter 'init_from' applies to model gpt2 only")
    if values.get("xla_decode") and values.get("model", "gpt2") != "gpt2":
        problems.append("hyperparameter 'xla_decode' applies to model gpt2 only")
    if problems:
        raise InputError("; ".join(problems))
    return values


def in_training_job(env: Mapping[str, str]) -> bool:
    """Whether this process runs inside a SageMaker training container."""
    return "SM_MODEL_DIR" in env


def hyperparameters_from_env(env: Mapping[str, str]) -> dict[str, object]:
    """The job's hyperparameters: ``SM_HPS`` (a JSON object), else every ``SM_HP_<NAME>``."""
    raw = env.get("SM_HPS")
    if raw is None:
        prefix = "SM_HP_"
        return {
            key[len(prefix) :].lower(): value
            for key, value in env.items()
            if key.startswith(prefix)
        }
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"SM_HPS is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InputError(f"SM_HPS must be a JSON object, got {type(parsed).__name__}")
    return {str(key): value for key, value in parsed.items()}


def channel_dirs(env: Mapping[str, str]) -> dict[str, str]:
    """Input channels by name → their folder in the container."""
    raw = env.get("SM_CHANNELS")
    if raw is not None:
        try:
            names = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"SM_CHANNELS is not valid JSON: {exc}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"SM_CHANNELS must be a JSON list of names, got {raw!r}")
    else:
        prefix = "SM_CHANNEL_"
        names = [key[len(prefix) :].lower() for key in env if key.startswith(prefix)]
    base = env.get("SM_INPUT_DATA_DIR", DEFAULT_INPUT_DATA_DIR)
    return {name: env.get(f"SM_CHANNEL_{name.upper()}") or f"{base}/{name}" for name in names}


def _data_dirs(channels: Mapping[str, str]) -> list[str]:
    if TRAIN_CHANNEL in channels:
        return [channels[TRAIN_CHANNEL]]
    special = SDK_CHANNELS | {TOKENIZER_CHANNEL, INIT_CHANNEL}
    data = [channels[name] for name in sorted(channels) if name not in special]
    if not data:
        found = ", ".join(sorted(channels)) or "none"
        raise InputError(
            f"no training data: give the job a {TRAIN_CHANNEL!r} channel (channels found: {found})"
        )
    return data


def script_mode_argv(env: Mapping[str, str], hyperparameters: Mapping[str, object]) -> list[str]:
    """``tweetgen train`` arguments for a SageMaker training job in script mode.

    Data: the ``train`` channel, else every channel except the special ones. The artifact
    tree goes unpacked into ``SM_MODEL_DIR`` (SageMaker packs it as model.tar.gz), metrics
    into ``SM_OUTPUT_DATA_DIR``. A ``tokenizer`` channel supplies ``--tokenizer`` (its
    tokenizer.json, or the hyperparameter's file inside it), an ``init`` channel
    ``--init-from`` (the channel folder, or the hyperparameter's folder inside it).
    """
    values = validate_hyperparameters(hyperparameters)
    model_dir = env.get("SM_MODEL_DIR")
    if not model_dir:
        raise InputError("SM_MODEL_DIR is not set: this is not a SageMaker training job")
    channels = channel_dirs(env)
    if TOKENIZER_CHANNEL in channels:
        inside = str(values.get("tokenizer", DEFAULT_TOKENIZER_FILE))
        values["tokenizer"] = str(PurePosixPath(channels[TOKENIZER_CHANNEL]) / inside)
    if INIT_CHANNEL in channels:
        if values["model"] != "gpt2":
            raise InputError(f"the {INIT_CHANNEL!r} channel applies to model gpt2 only")
        inside = str(values.get("init_from", "."))
        values["init_from"] = str(PurePosixPath(channels[INIT_CHANNEL]) / inside)

    argv = ["--model", str(values.pop("model")), "--data", *_data_dirs(channels)]
    argv += ["--out", model_dir, "--unpacked"]
    if env.get("SM_OUTPUT_DATA_DIR"):
        argv += ["--metrics-dir", env["SM_OUTPUT_DATA_DIR"]]
    for name, spec in HYPERPARAMETERS.items():
        if name in values:
            argv += spec.argv(values[name])
    return argv


def encode_hyperparameters(hyperparameters: Mapping[str, object]) -> dict[str, str]:
    """Validate hyperparameters and write them as the strings CreateTrainingJob takes.

    The container JSON-decodes every value, so a text that reads as JSON (a version "1.10",
    a variant "true") is sent JSON-quoted: it comes back as the same text, not 1.1 or True.
    """
    encoded: dict[str, str] = {}
    for name, value in validate_hyperparameters(hyperparameters).items():
        if isinstance(value, str):
            try:
                json.loads(value)
            except json.JSONDecodeError:
                encoded[name] = value
            else:
                encoded[name] = json.dumps(value)
        else:
            encoded[name] = json.dumps(value)
    return encoded


# --- the launcher (sagemaker SDK v3, imported lazily) ---------------------------------------

MODEL_BUILD_DIR = Path(__file__).resolve().parents[1]
ENTRY_SCRIPT = "train.py"
REQUIREMENTS_FILE = "requirements.txt"
FRAMEWORK_VERSION = "2.21"
PY_VERSION = "py312"  # the only Python the TensorFlow 2.21 training image offers
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
MAX_RUNTIME_LIMIT_S = 28 * 24 * 3600
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")
# ModelTrainer appends "-<14-digit timestamp>" and cuts the name at 63: a longer base would
# lose the timestamp, and with it the name's uniqueness.
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,47}$")
_IGNORED_FILES = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache"
)


@dataclass(frozen=True)
class TrainingJobSpec:
    """Everything one training job needs, checked before anything reaches AWS."""

    role_arn: str
    train_s3_uri: str
    output_s3_uri: str
    hyperparameters: Mapping[str, object]
    region: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    volume_size_gb: int = 50
    max_runtime_s: int = 24 * 3600
    base_job_name: str = "tweetgen"
    framework_version: str = FRAMEWORK_VERSION
    py_version: str = PY_VERSION
    image_uri: str | None = None
    tokenizer_s3_uri: str | None = None
    init_s3_uri: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise InputError for a spec that SageMaker would refuse or that would waste a job."""
        problems = self._resource_problems()
        try:
            values = validate_hyperparameters(self.hyperparameters)
        except InputError as exc:
            problems.append(str(exc))
        else:
            if self.init_s3_uri and values.get("model") != "gpt2":
                problems.append("init_s3_uri applies to model gpt2 only")
        if problems:
            raise InputError("; ".join(problems))

    def _resource_problems(self) -> list[str]:
        problems: list[str] = []
        if not self.role_arn.startswith("arn:") or ":iam::" not in self.role_arn:
            problems.append(f"role_arn must be an IAM role ARN, got {self.role_arn!r}")
        uris: dict[str, str | None] = {
            "train_s3_uri": self.train_s3_uri,
            "output_s3_uri": self.output_s3_uri,
            "tokenizer_s3_uri": self.tokenizer_s3_uri,
            "init_s3_uri": self.init_s3_uri,
        }
        for label, uri in uris.items():
            if uri is not None and not _S3_URI.match(uri):
                problems.append(f"{label} must be an s3://bucket/prefix URI, got {uri!r}")
        if self.instance_count != 1:
            # The training code runs on one host: more hosts would only repeat its work.
            problems.append(f"instance_count must be 1, got {self.instance_count}")
        if not 1 <= self.max_runtime_s <= MAX_RUNTIME_LIMIT_S:
            problems.append(
                f"max_runtime_s must be 1..{MAX_RUNTIME_LIMIT_S}, got {self.max_runtime_s}"
            )
        if self.volume_size_gb < 1:
            problems.append(f"volume_size_gb must be positive, got {self.volume_size_gb}")
        if not _JOB_NAME.match(self.base_job_name):
            problems.append(
                "base_job_name must be letters, digits and hyphens (at most 48),"
                f" got {self.base_job_name!r}"
            )
        if not self.instance_type.startswith("ml."):
            problems.append(f"instance_type must be an ml.* type, got {self.instance_type!r}")
        return problems


def training_image_uri(
    region: str,
    instance_type: str,
    framework_version: str = FRAMEWORK_VERSION,
    py_version: str = PY_VERSION,
) -> str:
    """The TensorFlow training image for this region and instance (CPU or GPU), found offline."""
    from sagemaker.core import image_uris

    return str(
        image_uris.retrieve(
            framework="tensorflow",
            region=region,
            version=framework_version,
            image_scope="training",
            instance_type=instance_type,
            py_version=py_version,
        )
    )


def stage_source(dest: Path) -> Path:
    """Copy into ``dest`` what the container runs: model_build's entry point and package, and
    the shared ``tweetgen`` package that it imports (it lives in layers/common, not model_build/).
    """
    spec = importlib.util.find_spec("tweetgen")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the shared package 'tweetgen' (layers/common) is not importable")
    shared = Path(next(iter(spec.submodule_search_locations)))
    dest.mkdir(parents=True, exist_ok=True)
    for name in (ENTRY_SCRIPT, REQUIREMENTS_FILE):
        shutil.copy2(MODEL_BUILD_DIR / name, dest / name)
    shutil.copytree(Path(__file__).resolve().parent, dest / "tweetgen_build", ignore=_IGNORED_FILES)
    shutil.copytree(shared, dest / "tweetgen", ignore=_IGNORED_FILES)
    return dest


def build_model_trainer(
    spec: TrainingJobSpec,
    *,
    source_dir: Path,
    boto_session: boto3.Session | None = None,
) -> ModelTrainer:
    """A ModelTrainer for ``spec`` running ``source_dir`` (see :func:`stage_source`)."""
    import boto3
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.training.configs import (
        Compute,
        InputData,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train import ModelTrainer

    spec.check()
    session = boto_session or boto3.Session(region_name=spec.region)
    region = spec.region or session.region_name
    if not region:
        raise InputError("no AWS region: pass region or set AWS_DEFAULT_REGION")
    image = spec.image_uri or training_image_uri(
        region, spec.instance_type, spec.framework_version, spec.py_version
    )
    # Stage the code beside the job's output (the deployed stack's training-jobs/ prefix):
    # the training role can read it there, and no SageMaker default bucket is created.
    output_bucket, _, output_prefix = spec.output_s3_uri.removeprefix("s3://").partition("/")
    channels = [InputData(channel_name=TRAIN_CHANNEL, data_source=spec.train_s3_uri)]
    if spec.tokenizer_s3_uri:
        channels.append(
            InputData(channel_name=TOKENIZER_CHANNEL, data_source=spec.tokenizer_s3_uri)
        )
    if spec.init_s3_uri:
        channels.append(InputData(channel_name=INIT_CHANNEL, data_source=spec.init_s3_uri))
    return ModelTrainer(
        sagemaker_session=Session(
            boto_session=session,
            default_bucket=output_bucket,
            default_bucket_prefix=output_prefix.strip("/") or None,
        ),
        role=spec.role_arn,
        base_job_name=spec.base_job_name,
        training_image=image,
        source_code=SourceCode(
            source_dir=str(source_dir), entry_script=ENTRY_SCRIPT, requirements=REQUIREMENTS_FILE
        ),
        compute=Compute(
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            volume_size_in_gb=spec.volume_size_gb,
        ),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=spec.max_runtime_s),
        output_data_config=OutputDataConfig(s3_output_path=spec.output_s3_uri),
        input_data_config=channels,
        hyperparameters=encode_hyperparameters(spec.hyperparameters),
        environment=dict(spec.environment),
    )


def launch_training_job(
    spec: TrainingJobSpec,
    *,
    wait: bool = False,
    boto_session: boto3.Session | None = None,
) -> str:
    """Start the training job (optionally follow it to the end) and return its name.

    The source is staged in a temporary folder that lives until ModelTrainer has uploaded it.
    """
    spec.check()
    with tempfile.TemporaryDirectory(prefix="tweetgen-source-") as tmp:
        trainer = build_model_trainer(
            spec, source_dir=stage_source(Path(tmp)), boto_session=boto_session
        )
        trainer.train(wait=wait, logs=wait)
    # ModelTrainer keeps the job it started here (its own docstring reads it the same way).
    job = trainer._latest_training_job
    return str(job.training_job_name)


# --- command line: python -m tweetgen_build.sagemaker_job ... ------------------------------


def _hyperparameter_arg(value: str) -> tuple[str, str]:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    name, raw = value.split("=", 1)
    return name.strip(), raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tweetgen_build.sagemaker_job",
        description="Start a SageMaker training job that runs `tweetgen train` (needs the sagemaker SDK).",
        epilog="hyperparameters: "
        + "; ".join(f"{name}: {spec.help}" for name, spec in HYPERPARAMETERS.items()),
    )
    parser.add_argument("--role-arn", required=True, help="the job's execution role")
    parser.add_argument("--train", required=True, metavar="S3_URI", help="tweets (channel 'train')")
    parser.add_argument("--output", required=True, metavar="S3_URI", help="where model.tar.gz goes")
    parser.add_argument(
        "-H",
        "--hyperparameter",
        dest="hyperparameters",
        action="append",
        type=_hyperparameter_arg,
        default=[],
        metavar="NAME=VALUE",
        help="repeatable, e.g. -H model=gpt2 -H epochs=3",
    )
    parser.add_argument("--region", default=None)
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    parser.add_argument("--volume-size-gb", type=int, default=50)
    parser.add_argument("--max-runtime-s", type=int, default=24 * 3600)
    parser.add_argument("--base-job-name", default="tweetgen")
    parser.add_argument("--image-uri", default=None, help="default: the TensorFlow 2.21 image")
    parser.add_argument("--tokenizer", metavar="S3_URI", default=None, help="channel 'tokenizer'")
    parser.add_argument("--init", metavar="S3_URI", default=None, help="channel 'init' (GPT-2)")
    parser.add_argument(
        "--wait", action="store_true", help="follow the job and its logs to the end"
    )
    return parser


def spec_from_args(argv: Sequence[str]) -> tuple[TrainingJobSpec, bool]:
    """The job spec (and whether to wait) for a launcher command line."""
    args = _parser().parse_args(list(argv))
    spec = TrainingJobSpec(
        role_arn=args.role_arn,
        train_s3_uri=args.train,
        output_s3_uri=args.output,
        hyperparameters=dict(args.hyperparameters),
        region=args.region,
        instance_type=args.instance_type,
        volume_size_gb=args.volume_size_gb,
        max_runtime_s=args.max_runtime_s,
        base_job_name=args.base_job_name,
        image_uri=args.image_uri,
        tokenizer_s3_uri=args.tokenizer,
        init_s3_uri=args.init,
    )
    return spec, bool(args.wait)


def main(argv: Sequence[str] | None = None) -> int:
    spec, wait = spec_from_args(sys.argv[1:] if argv is None else argv)
    try:
        spec.check()
        name = launch_training_job(spec, wait=wait)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "sagemaker":
            print(
                "error: the launcher needs the sagemaker SDK: pip install sagemaker==3.27.0",
                file=sys.stderr,
            )
            return 2
        raise
    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
