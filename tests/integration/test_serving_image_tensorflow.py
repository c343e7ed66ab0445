"""The artifacts generate under the TensorFlow of the serving image that template.yaml deploys.

The models are exported with the TensorFlow this project pins, and SageMaker serves them with
the TensorFlow Serving of the image in the template's ``InferenceImages`` map, which can be an
older release: an export that used an operation or attribute the older release does not know
would load here and fail there. So both tiny artifacts are loaded as TensorFlow Serving loads
them (the MetaGraph into a session, then the signature fed by tensor name) by that release's
TensorFlow, installed into a virtual environment of its own, and must generate exactly what
they generate here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
from tweetgen_build.packaging import SessionSavedModel

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.long

_IMAGE = re.compile(r"/tensorflow-inference:(\d+\.\d+)-cpu-")

_PROBE = """
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow.python.util import deprecation

saved_model, requests = sys.argv[1], json.loads(sys.argv[2])
graph = tf.Graph()
session = tf.compat.v1.Session(graph=graph)
with graph.as_default(), deprecation.silence():
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model)
signature = meta.signature_def["serving_default"]
answers = []
for request in requests:
    feed = {signature.inputs[k].name: np.asarray(v, dtype=t) for k, (v, t) in request.items()}
    fetch = {k: info.name for k, info in signature.outputs.items()}
    answers.append({k: v.tolist() for k, v in session.run(fetch, feed).items()})
print(json.dumps({"version": tf.__version__, "answers": answers}))
"""


def serving_image_release() -> str:
    """The TensorFlow release (``major.minor``) of the template's serving images."""
    releases = set(_IMAGE.findall((REPO_ROOT / "template.yaml").read_text(encoding="utf-8")))
    assert len(releases) == 1, releases
    return releases.pop()


@pytest.fixture(scope="module")
def serving_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with the serving image's TensorFlow (CPU build)."""
    venv = tmp_path_factory.mktemp("serving-tensorflow") / "venv"
    uv = Path(sys.executable).parent / "uv"  # the Makefile installs uv into the environment
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, venv], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            f"tensorflow-cpu=={serving_image_release()}.*",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def _requests(prompt: list[int]) -> list[dict[str, Any]]:
    """Greedy and sampled generation of ``prompt`` and a shorter one beside it (left-padded),
    as (value, dtype) per signature input."""
    requests = []
    for temperature in (0.0, 0.9):
        ids = [prompt, prompt[:-2]]
        longest = max(len(row) for row in ids)
        requests.append(
            {
                "input_ids": ([[0] * (longest - len(r)) + r for r in ids], "int32"),
                "attention_mask": ([[0] * (longest - len(r)) + [1] * len(r) for r in ids], "int32"),
                "max_new_tokens": (12, "int32"),
                "temperature": (temperature, "float32"),
                "top_k": (40, "int32"),
                "seed": (7, "int64"),
            }
        )
    return requests


@pytest.mark.parametrize("model", ["lstm", "gpt2"])
def test_the_serving_images_tensorflow_generates_what_ours_does(
    model: str, unpacked: dict[str, Path], serving_python: Path
) -> None:
    root = unpacked[model]
    saved_model = next(root.rglob("saved_model.pb")).parent
    metadata = json.loads((root / "metadata.json").read_text(encoding="utf-8"))
    tokenizer = tokenizers.Tokenizer.from_file(str(root / metadata["tokenizer"]["path"]))
    requests = _requests([0, *tokenizer.encode("good morning to").ids])
    done = subprocess.run(
        [serving_python, "-c", _PROBE, str(saved_model), json.dumps(requests)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs["version"].startswith(serving_image_release() + ".")
    ours = SessionSavedModel(saved_model)
    for request, answer in zip(requests, theirs["answers"], strict=True):
        arrays = {k: np.asarray(v, dtype=t) for k, (v, t) in request.items()}
        expected = {k: v.tolist() for k, v in ours.run("serving_default", arrays).items()}
        assert answer == expected
    # Sampled, at least: a tiny model may well end the greedy tweet at once.
    assert any(max(answer["lengths"]) > 0 for answer in theirs["answers"])
