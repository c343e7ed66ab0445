"""The tweetgen command as users run it: exit statuses and one-line errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def tweetgen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tweetgen_local.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={
            "PATH": "/usr/bin:/bin",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": ":".join(sys.path),
        },
    )


def _one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("tweetgen: error:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_train_with_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    done = tweetgen(
        "train", "--model", "lstm", "--data", str(missing), "--out", str(tmp_path / "o")
    )
    _one_line_error(done, str(missing))


def test_train_with_binary_data_exits_2(tmp_path: Path) -> None:
    blob = tmp_path / "tweets.txt"
    blob.write_bytes(b"hello\x00\x01\x02world\n" * 10)
    _one_line_error(
        tweetgen("train", "--model", "gpt2", "--data", str(blob), "--out", str(tmp_path)),
        "tweets.txt",
    )


def test_train_with_wrong_csv_columns_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text('"0","1","2"\n"0","1","2"\n', encoding="utf-8")
    _one_line_error(
        tweetgen("train", "--model", "lstm", "--data", str(bad), "--out", str(tmp_path)), "bad.csv"
    )


def test_train_with_an_empty_corpus_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    _one_line_error(
        tweetgen("train", "--model", "lstm", "--data", str(empty), "--out", str(tmp_path)),
        "empty.txt",
    )


def test_train_with_an_unknown_model_setting_exits_2(tmp_path: Path, sentiment140: Path) -> None:
    done = tweetgen(
        "train",
        "--model",
        "lstm",
        "--data",
        str(sentiment140 / "testdata.manual.2009.06.14.csv"),
        "--out",
        str(tmp_path),
        "--preset",
        "tiny",
        "--set",
        "wings=2",
        "--max-tweets",
        "400",
    )
    _one_line_error(done, "wings")


def test_validate_artifact_accepts_a_good_one_and_lists_every_problem(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    ok = tweetgen("validate-artifact", str(tiny_run["gpt2"]), "--variant", "gpt2")
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout

    broken = tmp_path / "model.tar.gz"
    with tarfile.open(tiny_run["lstm"]) as src, tarfile.open(broken, "w:gz") as dst:
        for member in src:
            if member.name not in ("code/inference.py", "code/tokenizer.json"):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    done = tweetgen("validate-artifact", str(broken), "--variant", "gpt2")
    assert done.returncode == 1
    assert "code/inference.py" in done.stderr
    assert "tokenizer.json" in done.stderr
    assert "gpt2" in done.stderr  # the variant mismatch is reported too


def test_validate_artifact_refuses_xla_unless_allowed(tmp_path: Path) -> None:
    from tests.unit.test_artifact import artifact_bytes, good_files, saved_model_pb

    graph = saved_model_pb(graph=b"graph\n\x0f_XlaMustCompile\x12\x02(\x01rest")  # jit_compile
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(artifact_bytes(good_files(**{"model/1/saved_model.pb": graph})))
    refused = tweetgen("validate-artifact", str(archive))
    assert refused.returncode == 1
    assert "compiled with XLA" in refused.stderr
    allowed = tweetgen("validate-artifact", str(archive), "--allow-xla")
    assert allowed.returncode == 0, allowed.stderr


def test_evaluate_reports_offline_metrics_of_an_artifact(
    tiny_run: dict[str, Path], tiny_data: list[Path]
) -> None:
    done = tweetgen(
        "evaluate",
        str(tiny_run["lstm"]),
        "--data",
        *map(str, tiny_data),
        "--max-tweets",
        "3000",
        "--samples",
        "8",
        "--json",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout)
    recorded = json.loads((tiny_run["lstm"].parent / "metrics.json").read_text())["metrics"]
    assert metrics["same_data_as_training"] is True
    # The same artifact on the same split gives the perplexity recorded at training time.
    assert metrics["test_perplexity"] == pytest.approx(recorded["test_perplexity"], rel=1e-4)
    assert metrics["ngram_perplexity"] == pytest.approx(recorded["ngram_perplexity"], rel=1e-9)
    assert {"distinct_1", "distinct_2", "repetition_rate", "mean_length"} <= set(metrics)


def test_evaluate_rejects_something_that_is_not_an_artifact(
    tmp_path: Path, tiny_data: list[Path]
) -> None:
    fake = tmp_path / "model.tar.gz"
    fake.write_bytes(b"not a tarball")
    _one_line_error(tweetgen("evaluate", str(fake), "--data", *map(str, tiny_data)), "model.tar.gz")


TRAIN = ["train", "--data", "tweets.txt", "--out", "out", "--vocab-size", "300"]


def _write_broken_artifacts(folder: Path) -> None:
    """truncated.tar.gz (``head -c`` of an artifact) and notokenizer.tar.gz."""
    from tweetgen.domain.artifact import METADATA_PATH

    from tests.unit.test_artifact import artifact_bytes, good_files, metadata_dict

    generation = {"max_context": 64, "max_new_tokens": 32, "max_batch_size": 16}
    metadata = json.dumps(metadata_dict(generation=generation)).encode()
    weights = random.Random(0).randbytes(400_000)  # incompressible: the cut is mid-stream
    whole = artifact_bytes(
        good_files(
            **{METADATA_PATH: metadata, "model/1/variables/variables.data-00000-of-00001": weights}
        )
    )
    (folder / "truncated.tar.gz").write_bytes(whole[:200_000])
    broken = good_files(**{METADATA_PATH: metadata, "code/tokenizer.json": b'{"no": 1}'})
    (folder / "notokenizer.tar.gz").write_bytes(artifact_bytes(broken))


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ([*TRAIN, "--model", "lstm", "--preset", "tiny", "--set", "wings=2"], "wings"),
        ([*TRAIN, "--model", "gpt2", "--data", "missing.csv"], "missing.csv"),
        (["evaluate", "model.tar.gz", "--data", "tweets.txt"], "not a tar archive"),
        # Settings that used to fail only after the training, or with a traceback.
        ([*TRAIN, "--model", "lstm", "--variant", "bad_variant!"], "--variant"),
        ([*TRAIN, "--model", "gpt2", "--version", "v1/x"], "--version"),
        ([*TRAIN, "--model", "lstm", "--learning-rate", "nan"], "--learning-rate"),
        ([*TRAIN, "--model", "lstm", "--learning-rate", "0"], "--learning-rate"),
        ([*TRAIN, "--model", "lstm", "--vocab-size", "10"], "--vocab-size"),
        ([*TRAIN, "--model", "lstm", "--set", "units=abc"], "units='abc'"),
        ([*TRAIN, "--model", "gpt2", "--tokenizer", "tweets.txt"], "not a tokenizer JSON"),
        ([*TRAIN, "--model", "gpt2", "--tokenizer", "noeos.json"], "<|endoftext|>"),
        (
            [*TRAIN, "--model", "lstm", "--max-tweets", "60", "--sequence-length", "250"],
            "--sequence-length 250",
        ),
        (["evaluate", ".", "--data", "tweets.txt"], "is a directory"),
        (["validate-artifact", "."], "is a directory"),
        # Used to end in tracebacks (EOFError, a bare Exception, ValueError from TensorFlow).
        (["evaluate", "truncated.tar.gz", "--data", "tweets.txt"], "not a loadable tweetgen"),
        (["evaluate", "notokenizer.tar.gz", "--data", "tweets.txt"], "not a tokenizer JSON"),
        (["evaluate", "model.tar.gz", "--data", "tweets.txt", "--seed", "9" * 20], "--seed"),
        # Used to fail with FileExistsError after the whole training.
        ([*TRAIN, "--model", "lstm", "--out", "tweets.txt"], "--out tweets.txt: exists"),
        ([*TRAIN, "--model", "lstm", "--metrics-dir", "tweets.txt/m"], "--metrics-dir"),
        # Used to end in huggingface_hub's HFValidationError or an AttributeError.
        ([*TRAIN, "--model", "gpt2", "--init-from", "./nonexistent_ckpt"], "no such folder"),
        ([*TRAIN, "--model", "gpt2", "--init-from", "empty"], "holds no config.json"),
        # A newline in a folder's name used to split the message over two lines.
        ([*TRAIN, "--model", "lstm", "--data", "nl\ndir"], "nl\\ndir: directory holds no"),
    ],
)
def test_bad_input_is_reported_before_tensorflow_is_imported(
    tmp_path: Path, command: list[str], problem: str
) -> None:
    (tmp_path / "tweets.txt").write_text(
        "".join(f"tweet number {i} about the weather\n" for i in range(300)), encoding="utf-8"
    )
    (tmp_path / "model.tar.gz").write_bytes(b"not a tarball")
    (tmp_path / "noeos.json").write_text(
        '{"version":"1.0","model":{"type":"BPE","vocab":{"a":0},"merges":[]}}', encoding="utf-8"
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "nl\ndir").mkdir()
    _write_broken_artifacts(tmp_path)
    probe = (
        "import sys\n"
        "from tweetgen_local.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "print(status, sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert problem in done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("tweetgen: error:")]
    assert len(errors) == 1 and problem in errors[0], done.stderr
