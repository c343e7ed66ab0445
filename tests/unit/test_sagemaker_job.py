"""The SageMaker scale path: script-mode environment → ``tweetgen train`` argv, and the launcher.

The translation tests need nothing beyond the standard library. The launcher tests need the
sagemaker SDK (not a project dependency) and skip without it; with it they start a job against
moto, so no AWS account is involved.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tweetgen_build import sagemaker_job
from tweetgen_build.errors import InputError
from tweetgen_build.sagemaker_job import (
    TrainingJobSpec,
    channel_dirs,
    encode_hyperparameters,
    hyperparameters_from_env,
    script_mode_argv,
    spec_from_args,
    stage_source,
    validate_hyperparameters,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_BUILD = REPO_ROOT / "model_build"

# What ModelTrainer's container drivers export for a job with one "train" channel.
JOB_ENV = {
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
    "SM_INPUT_DATA_DIR": "/opt/ml/input/data",
    "SM_CHANNELS": json.dumps(["train", "code", "sm_drivers"]),
    "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
    "SM_CHANNEL_CODE": "/opt/ml/input/data/code",
    "SM_CHANNEL_SM_DRIVERS": "/opt/ml/input/data/sm_drivers",
}
BASE_ARGV = [
    "--model",
    "gpt2",
    "--data",
    "/opt/ml/input/data/train",
    "--out",
    "/opt/ml/model",
    "--unpacked",
    "--metrics-dir",
    "/opt/ml/output/data",
]


def test_job_environment_becomes_train_arguments() -> None:
    hps = {"model": "gpt2", "epochs": 3, "batch_size": 16, "seed": 7, "max_tweets": 5000}
    assert script_mode_argv(JOB_ENV, hps) == [
        *BASE_ARGV,
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--max-tweets",
        "5000",
        "--seed",
        "7",
    ]


def test_string_values_as_sagemaker_sends_them() -> None:
    hps = {
        "model": "gpt2",
        "epochs": " 2 ",
        "learning-rate": "5e-4",
        "keep_urls": "true",
        "lowercase": "False",
        "overrides": '{"n_layer": 2, "dropout": 0.0}',
        "version": 3,
        "preset": "tiny",
    }
    assert script_mode_argv(JOB_ENV, hps) == [
        *BASE_ARGV,
        "--epochs",
        "2",
        "--preset",
        "tiny",
        "--set",
        "dropout=0.0",
        "--set",
        "n_layer=2",
        "--learning-rate",
        "0.0005",
        "--version",
        "3",
        "--keep-urls",
    ]


def test_hyperparameters_from_sm_hps_or_sm_hp_variables() -> None:
    assert hyperparameters_from_env({"SM_HPS": '{"model": "lstm", "epochs": 2}'}) == {
        "model": "lstm",
        "epochs": 2,
    }
    env = {"SM_HP_MODEL": "lstm", "SM_HP_MAX_TWEETS": "10", "SM_MODEL_DIR": "/m"}
    assert hyperparameters_from_env(env) == {"model": "lstm", "max_tweets": "10"}
    with pytest.raises(InputError, match="SM_HPS is not valid JSON"):
        hyperparameters_from_env({"SM_HPS": "{model"})
    with pytest.raises(InputError, match="JSON object"):
        hyperparameters_from_env({"SM_HPS": "[1]"})


def test_without_a_train_channel_every_data_channel_is_data() -> None:
    env = {
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_CHANNEL_TWEETS_B": "/data/b",
        "SM_CHANNEL_TWEETS_A": "/data/a",
        "SM_CHANNEL_CODE": "/opt/ml/input/data/code",
        "SM_CHANNEL_SM_DRIVERS": "/opt/ml/input/data/sm_drivers",
        "SM_CHANNEL_TOKENIZER": "/opt/ml/input/data/tokenizer",
    }
    argv = script_mode_argv(env, {"model": "lstm"})
    assert argv[:4] == ["--model", "lstm", "--data", "/data/a"]
    assert argv[4] == "/data/b"
    assert "--metrics-dir" not in argv
    assert argv[argv.index("--tokenizer") + 1] == "/opt/ml/input/data/tokenizer/tokenizer.json"


def test_channel_folders_default_under_the_input_data_dir() -> None:
    env = {"SM_CHANNELS": '["train"]', "SM_INPUT_DATA_DIR": "/in"}
    assert channel_dirs(env) == {"train": "/in/train"}
    with pytest.raises(InputError, match="SM_CHANNELS"):
        channel_dirs({"SM_CHANNELS": '{"train": 1}'})


def test_no_data_channel_is_a_clear_error() -> None:
    env = {"SM_MODEL_DIR": "/m", "SM_CHANNELS": '["code", "sm_drivers"]'}
    with pytest.raises(InputError, match=r"no training data.*'train' channel.*code, sm_drivers"):
        script_mode_argv(env, {"model": "lstm"})


def test_missing_model_dir_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="SM_MODEL_DIR"):
        script_mode_argv({"SM_CHANNEL_TRAIN": "/d"}, {"model": "lstm"})


def test_tokenizer_and_init_channels() -> None:
    env = {
        **JOB_ENV,
        "SM_CHANNELS": '["train", "tokenizer", "init"]',
        "SM_CHANNEL_TOKENIZER": "/opt/ml/input/data/tokenizer",
        "SM_CHANNEL_INIT": "/opt/ml/input/data/init",
    }
    argv = script_mode_argv(env, {"model": "gpt2", "tokenizer": "shared.json"})
    assert argv[argv.index("--tokenizer") + 1] == "/opt/ml/input/data/tokenizer/shared.json"
    assert argv[argv.index("--init-from") + 1] == "/opt/ml/input/data/init"
    argv = script_mode_argv(env, {"model": "gpt2", "init_from": "checkpoint-3"})
    assert argv[argv.index("--init-from") + 1] == "/opt/ml/input/data/init/checkpoint-3"
    with pytest.raises(InputError, match="'init' channel applies to model gpt2 only"):
        script_mode_argv(env, {"model": "lstm"})


def test_path_hyperparameters_without_channels_pass_through() -> None:
    argv = script_mode_argv(JOB_ENV, {"model": "gpt2", "init_from": "distilgpt2"})
    assert argv[argv.index("--init-from") + 1] == "distilgpt2"


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"model": "lstm", "epoch": 3}, r"unknown hyperparameter 'epoch' \(known: model, epochs"),
        ({"model": "lstm", "data": "/x"}, "'data' cannot be set: the data comes from the input"),
        ({"model": "lstm", "out": "/x"}, "'out' cannot be set: the artifact goes to SM_MODEL_DIR"),
        ({"model": "rnn"}, "'model': must be one of lstm, gpt2, got 'rnn'"),
        ({}, "'model' is required"),
        ({"model": None}, "'model' is required"),
        ({"model": "lstm", "epochs": "0"}, "'epochs': must be at least 1, got 0"),
        ({"model": "lstm", "epochs": "three"}, "'epochs': expected an integer, got 'three'"),
        ({"model": "lstm", "epochs": 2.5}, "'epochs': expected an integer, got 2.5"),
        ({"model": "lstm", "epochs": True}, "'epochs': expected an integer, got True"),
        ({"model": "lstm", "seed": -1}, "'seed': must be at least 0"),
        ({"model": "lstm", "learning_rate": "-1"}, "'learning_rate': must be a positive number"),
        ({"model": "lstm", "learning_rate": "nan"}, "'learning_rate': must be a positive number"),
        ({"model": "lstm", "keep_urls": "maybe"}, "'keep_urls': expected true or false"),
        ({"model": "lstm", "overrides": "[1]"}, "'overrides': expected a JSON object"),
        ({"model": "lstm", "overrides": {"a=b": 1}}, "'overrides': bad setting name 'a=b'"),
        # Both names become "units": keeping one value would silently drop the other.
        (
            {"model": "lstm", "overrides": {" units ": 5, "units": 6}},
            "'overrides': 'units' and ' units ' are the same setting",
        ),
        (
            {"model": "lstm", "overrides": '{"units": 5, "units ": 6}'},
            "'overrides': 'units ' and 'units' are the same setting",
        ),
        (
            {"model": "lstm", "overrides": {"units": 2**31}},
            "'overrides': setting 'units' must be at most 2147483647, got 2147483648",
        ),
        ({"model": "lstm", "preset": " "}, "'preset': must not be empty"),
        ({"model": "lstm", "max-tweets": 1, "max_tweets": 2}, "are the same hyperparameter"),
        ({"model": "lstm", "init_from": "gpt2"}, "'init_from' applies to model gpt2 only"),
        ({"model": "lstm", "row_groups": 9}, "'row_groups': must be at most 8, got 9"),
        ({"model": "lstm", "xla_decode": True}, "'xla_decode' applies to model gpt2 only"),
        ({"model": "lstm", "row_groups": 0}, "'row_groups': must be at least 1"),
    ],
)
def test_bad_hyperparameters_are_rejected(hyperparameters: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        script_mode_argv(JOB_ENV, hyperparameters)


INTEGER_HYPERPARAMETERS = [
    name
    for name, spec in sagemaker_job.HYPERPARAMETERS.items()
    if spec.flag
    in {
        "--epochs",
        "--batch-size",
        "--max-tweets",
        "--sequence-length",
        "--patience",
        "--vocab-size",
        "--samples",
        "--seed",
    }
]


@pytest.mark.parametrize("name", INTEGER_HYPERPARAMETERS)
def test_integer_hyperparameters_have_an_upper_bound(name: str) -> None:
    # Unbounded, 10**20 failed deep in the job (OverflowError from tokenizers, ValueError
    # from TensorFlow) after minutes of provisioning and data loading.
    maximum = 2**32 - 1 if name == "seed" else 2**31 - 1
    assert validate_hyperparameters({"model": "lstm", name: maximum})[name] == maximum
    for value in (maximum + 1, str(10**20)):
        with pytest.raises(InputError) as caught:
            validate_hyperparameters({"model": "lstm", name: value})
        assert str(caught.value) == (
            f"hyperparameter {name!r}: must be at most {maximum}, got {int(value)}"
        )


def test_the_integer_bound_is_the_command_lines() -> None:
    from tweetgen_build import cli, configs, pipeline

    # One bound, from the model settings' module: the command line, the launcher and --set.
    assert sagemaker_job.MAX_INT is cli.MAX_INT is configs.MAX_INT == 2**31 - 1
    assert sagemaker_job.MAX_SEED is pipeline.MAX_SEED is configs.MAX_SEED == 2**32 - 1
    assert len(INTEGER_HYPERPARAMETERS) == 8


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InputError) as caught:
        validate_hyperparameters({"model": "rnn", "epochs": 0, "colour": "red"})
    message = str(caught.value)
    assert "'model'" in message and "'epochs'" in message and "'colour'" in message
    assert "\n" not in message


def test_platform_hyperparameters_and_nulls_are_ignored() -> None:
    hps = {
        "model": "lstm",
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": "s3://b/k",
        "model_dir": "s3://b/model",
        "epochs": None,
    }
    assert validate_hyperparameters(hps) == {"model": "lstm"}


def container_decodes(value: str) -> object:
    """What the training container does to each hyperparameter before it writes SM_HPS."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


@pytest.mark.parametrize("text", ["1.10", "007", "true", "null", "3", '"quoted"', "v1.2", "a b"])
def test_encoded_text_survives_the_containers_json_decoding(text: str) -> None:
    encoded = encode_hyperparameters({"model": "gpt2", "version": text, "epochs": 4})
    decoded = {name: container_decodes(value) for name, value in encoded.items()}
    assert decoded == {"model": "gpt2", "version": text, "epochs": 4}
    assert all(isinstance(value, str) for value in encoded.values())


def test_encoded_values_round_trip_through_script_mode() -> None:
    hps = {"model": "lstm", "learning_rate": 2e-3, "lowercase": True, "overrides": {"units": 64}}
    encoded = encode_hyperparameters(hps)
    assert encoded == {
        "model": "lstm",
        "learning_rate": "0.002",
        "lowercase": "true",
        "overrides": '{"units": 64}',
    }
    env = {**JOB_ENV, "SM_HPS": json.dumps({k: container_decodes(v) for k, v in encoded.items()})}
    argv = script_mode_argv(env, hyperparameters_from_env(env))
    assert argv[len(BASE_ARGV) :] == [
        "--set",
        "units=64",
        "--learning-rate",
        "0.002",
        "--lowercase",
    ]


def test_arguments_parse_with_the_train_command() -> None:
    cli = pytest.importorskip("tweetgen_build.cli")
    if not hasattr(cli, "add_train_arguments"):
        pytest.skip("tweetgen_build.cli has no add_train_arguments")
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    hps: dict[str, Any] = {name: None for name in sagemaker_job.HYPERPARAMETERS}
    hps |= {
        "model": "gpt2",
        "epochs": 2,
        "batch_size": 8,
        "max_tweets": 100,
        "seed": 1,
        "tokenizer": "/t/tokenizer.json",
        "init_from": "/ckpt",
        "preset": "tiny",
        "overrides": {"n_layer": 1},
        "sequence_length": 32,
        "learning_rate": 1e-3,
        "patience": 3,
        "vocab_size": 500,
        "variant": "gpt2",
        "version": "v7",
        "samples": 4,
        "row_groups": 2,
        "xla_decode": True,
        "keep_urls": True,
        "keep_mentions": True,
        "lowercase": True,
    }
    args = parser.parse_args(script_mode_argv(JOB_ENV, hps))
    assert args.model == "gpt2" and args.unpacked is True
    assert [str(p) for p in args.data] == ["/opt/ml/input/data/train"]
    assert str(args.out) == "/opt/ml/model" and str(args.metrics_dir) == "/opt/ml/output/data"
    assert (args.epochs, args.batch_size, args.max_tweets, args.seed) == (2, 8, 100, 1)
    assert str(args.tokenizer) == "/t/tokenizer.json" and args.init_from == "/ckpt"
    assert dict(args.overrides) == {"n_layer": 1}
    assert (args.sequence_length, args.learning_rate, args.patience) == (32, 1e-3, 3)
    assert (args.vocab_size, args.variant, args.version, args.samples) == (500, "gpt2", "v7", 4)
    assert args.keep_urls and args.keep_mentions and args.lowercase and args.row_groups == 2
    assert args.xla_decode is True


# --- model_build/train.py ------------------------------------------------------------------


@pytest.fixture
def train_script(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[list[str]]]]:
    """train.py's main with ``tweetgen_build.cli`` replaced by a recorder (no TensorFlow)."""
    import importlib.util

    calls: list[list[str]] = []
    fake_cli = types.ModuleType("tweetgen_build.cli")

    def train_main(argv: list[str]) -> int:
        calls.append(list(argv))
        return 0

    fake_cli.train_main = train_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tweetgen_build.cli", fake_cli)
    spec = importlib.util.spec_from_file_location("tweetgen_train_entry", MODEL_BUILD / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, calls


def test_train_script_inside_a_job_uses_the_environment(
    train_script: tuple[Any, list[list[str]]],
) -> None:
    module, calls = train_script
    env = {**JOB_ENV, "SM_HPS": json.dumps({"model": "gpt2", "epochs": 1})}
    # The command line inside a job is SageMaker's copy of the hyperparameters: ignored.
    assert module.main(["--model", "gpt2", "--epochs", "1"], env) == 0
    assert calls == [[*BASE_ARGV, "--epochs", "1"]]


def test_train_script_outside_a_job_passes_the_command_line(
    train_script: tuple[Any, list[list[str]]],
) -> None:
    module, calls = train_script
    argv = ["--model", "lstm", "--data", "d.csv", "--out", "out"]
    assert module.main(argv, {}) == 0
    assert calls == [argv]


def test_train_script_bad_hyperparameter_exits_2_with_one_line(
    train_script: tuple[Any, list[list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    module, calls = train_script
    env = {**JOB_ENV, "SM_HPS": json.dumps({"model": "lstm", "epochz": 1})}
    assert module.main([], env) == 2
    assert calls == []
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: unknown hyperparameter 'epochz'")
    assert err.count("\n") == 1


# --- what travels to the container -----------------------------------------------------------


def _requirement_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in io.StringIO(text):
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_container_requirements_match_the_lock() -> None:
    wanted = _requirement_pins((MODEL_BUILD / "requirements.txt").read_text())
    locked = _requirement_pins((REPO_ROOT / "requirements.lock").read_text())
    assert set(wanted) == {
        "tensorflow",
        "tf-keras",
        "transformers",
        "tokenizers",
        "numpy",
        "matplotlib",
        "tqdm",
        "pydantic",
        "nltk",
    }
    assert {name: locked.get(name) for name in wanted} == wanted


def test_staged_source_holds_the_entry_point_and_both_packages(tmp_path: Path) -> None:
    staged = stage_source(tmp_path / "src")
    for relative in (
        "train.py",
        "requirements.txt",
        "tweetgen_build/__init__.py",
        "tweetgen_build/sagemaker_job.py",
        "tweetgen_build/serving/inference.py",
        "tweetgen/__init__.py",
        "tweetgen/domain/artifact.py",
    ):
        assert (staged / relative).is_file(), relative
    assert not list(staged.rglob("__pycache__")) and not list(staged.rglob("*.pyc"))


def test_importing_the_module_loads_neither_sagemaker_nor_tensorflow() -> None:
    code = (
        "import sys, tweetgen_build.sagemaker_job\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sagemaker', 'tensorflow', 'boto3'})\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == ""


# --- the launcher's own checks (no SDK needed) -----------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/tweetgen-training"


def _spec(**changes: Any) -> TrainingJobSpec:
    values: dict[str, Any] = {
        "role_arn": ROLE,
        "train_s3_uri": "s3://tweetgen-data/sentiment140/",
        "output_s3_uri": "s3://tweetgen-artifacts/training/",
        "hyperparameters": {"model": "gpt2", "epochs": 2},
        "region": "eu-west-1",
    }
    values.update(changes)
    return TrainingJobSpec(**values)


def test_launcher_command_line_builds_the_spec() -> None:
    spec, wait = spec_from_args(
        [
            "--role-arn",
            ROLE,
            "--train",
            "s3://tweetgen-data/sentiment140/",
            "--output",
            "s3://tweetgen-artifacts/training/",
            "-H",
            "model=gpt2",
            "--hyperparameter",
            "epochs=2",
            "--region",
            "eu-west-1",
            "--instance-type",
            "ml.m5.xlarge",
            "--init",
            "s3://tweetgen-data/distilgpt2/",
            "--wait",
        ]
    )
    assert wait is True
    assert spec == _spec(
        hyperparameters={"model": "gpt2", "epochs": "2"},
        instance_type="ml.m5.xlarge",
        init_s3_uri="s3://tweetgen-data/distilgpt2/",
    )
    spec.check()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"role_arn": "tweetgen-training"}, "role_arn must be an IAM role ARN"),
        ({"train_s3_uri": "/local/tweets"}, "train_s3_uri must be an s3://"),
        ({"output_s3_uri": "s3://A_bad_bucket/x"}, "output_s3_uri must be an s3://"),
        ({"instance_count": 2}, "instance_count must be 1"),
        ({"max_runtime_s": 0}, "max_runtime_s must be"),
        ({"base_job_name": "tweet_gen"}, "base_job_name must be"),
        ({"base_job_name": "t" * 49}, "base_job_name must be"),
        ({"instance_type": "g5.xlarge"}, "instance_type must be an ml.* type"),
        ({"hyperparameters": {"model": "lstm", "epochs": 0}}, "'epochs': must be at least 1"),
        (
            {"hyperparameters": {"model": "lstm"}, "init_s3_uri": "s3://b/ckpt"},
            "init_s3_uri applies to model gpt2 only",
        ),
    ],
)
def test_launcher_rejects_a_bad_spec_before_aws(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        _spec(**changes).check()


# --- the launcher against moto (needs the sagemaker SDK) -------------------------------------


@pytest.fixture
def sagemaker_sdk() -> Any:
    return pytest.importorskip("sagemaker")


@pytest.fixture
def offline_aws(
    sagemaker_sdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """moto answering STS, S3 and SageMaker, with the SDK's IAM checks and telemetry off."""
    from moto import mock_aws

    config = tmp_path / "sagemaker-config.yaml"
    config.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
    )
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="eu-west-1")
        for bucket in ("tweetgen-data", "tweetgen-artifacts"):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
        yield boto3


def test_training_image_is_found_offline(sagemaker_sdk: Any) -> None:
    gpu = sagemaker_job.training_image_uri("eu-west-1", "ml.g5.xlarge")
    cpu = sagemaker_job.training_image_uri("us-east-1", "ml.m5.xlarge")
    assert gpu == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.21-gpu-py312"
    assert cpu == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.21-cpu-py312"


@pytest.mark.filterwarnings("ignore:sagemaker.train.configs has been moved:DeprecationWarning")
def test_launch_sends_the_training_job_request(offline_aws: Any) -> None:
    boto3 = offline_aws
    spec = _spec(
        hyperparameters={"model": "gpt2", "epochs": 2, "version": "1.10", "max_tweets": 5000},
        instance_type="ml.g5.2xlarge",
        max_runtime_s=7200,
        tokenizer_s3_uri="s3://tweetgen-data/tokenizer/",
    )
    name = sagemaker_job.launch_training_job(spec)
    assert re.fullmatch(r"tweetgen-\d{14}", name)

    job = boto3.client("sagemaker", region_name="eu-west-1").describe_training_job(
        TrainingJobName=name
    )
    algorithm = job["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.21-gpu-py312"
    )
    assert job["HyperParameters"] == {
        "model": "gpt2",
        "epochs": "2",
        "version": '"1.10"',
        "max_tweets": "5000",
    }
    assert job["RoleArn"] == ROLE
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://tweetgen-artifacts/training/"
    resources = job["ResourceConfig"]
    assert (resources["InstanceType"], resources["InstanceCount"]) == ("ml.g5.2xlarge", 1)
    assert resources["VolumeSizeInGB"] == 50
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200

    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
    }
    assert channels["train"] == "s3://tweetgen-data/sentiment140/"
    assert channels["tokenizer"] == "s3://tweetgen-data/tokenizer/"
    assert set(channels) == {"train", "tokenizer", "code", "sm_drivers"}
    # The code is staged beside the output, which the stack's training role may read (it
    # reads nothing else but the training data).
    for name in ("code", "sm_drivers"):
        assert channels[name].startswith("s3://tweetgen-artifacts/training/tweetgen/"), channels
    buckets = {
        b["Name"] for b in boto3.client("s3", region_name="eu-west-1").list_buckets()["Buckets"]
    }
    assert buckets == {"tweetgen-data", "tweetgen-artifacts"}  # no SageMaker default bucket

    # The code channel holds the entry point, its requirements and both packages; the drivers
    # channel names train.py as the entry script and requirements.txt as what to install.
    s3 = boto3.client("s3", region_name="eu-west-1")

    def keys(uri: str) -> dict[str, str]:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        return {obj["Key"][len(prefix) :].lstrip("/"): f"{bucket}/{obj['Key']}" for obj in listed}

    code = keys(channels["code"])
    for relative in ("train.py", "requirements.txt", "tweetgen_build/sagemaker_job.py"):
        assert relative in code
    assert "tweetgen/domain/artifact.py" in code
    drivers = keys(channels["sm_drivers"])
    bucket, _, key = drivers["sourcecode.json"].partition("/")
    source = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert source["entry_script"] == "train.py"
    assert source["requirements"] == "requirements.txt"
