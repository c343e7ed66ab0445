"""``tweetgen demo --no-serve`` end to end with small sizes, then again from its cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.long


def _demo(
    sentiment140: Path, out: Path, users: int = 200, round_users: int = 100
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tweetgen_local.cli",
            "demo",
            "--no-serve",
            "--data",
            str(sentiment140),
            "--out",
            str(out),
            "--max-tweets",
            "2000",
            "--epochs",
            "1",
            "--vocab-size",
            "600",
            "--users",
            str(users),
            "--round-users",
            str(round_users),
            "--template",
            str(REPO_ROOT / "template.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )


def test_demo_trains_both_models_serves_them_and_reuses_its_cache(
    sentiment140: Path, tmp_path: Path
) -> None:
    first = _demo(sentiment140, tmp_path / "demo")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for model in ("lstm", "gpt2"):
        assert (tmp_path / "demo" / model / "model.tar.gz").is_file()
        assert f"== {model} demo-" in first.stdout
    # Every prompt got a generation from each served model.
    assert first.stdout.count("'today is' -> today is") == 2
    # Both rolled out on the local stack, then simulated users went through the REST API.
    for model in ("lstm", "gpt2"):
        assert f"== rollout of {model}" in first.stdout
    assert "SmokeTest" in first.stdout
    # moto's warning at every SageMaker task of a rollout is not the demo's to show.
    assert "Unsupported Optimised service integration" not in first.stdout + first.stderr
    # Nor transformers' notice that its TensorFlow classes go in v5 (the pin is deliberate).
    assert "TensorFlow and JAX classes are deprecated" not in first.stdout + first.stderr
    experiment = json.loads((tmp_path / "demo" / "report.json").read_text())["experiment"]
    assert experiment["simulation"]["users"] == 200
    assert sum(experiment["simulation"]["served"].values()) == 200
    assert [r["users"] for r in experiment["rounds"]] == [100, 200]
    assert set(experiment["rounds"][-1]["weights"]) == {"lstm", "gpt2"}
    # Again from the cache: only the models' training is skipped (a few users suffice here).
    second = _demo(sentiment140, tmp_path / "demo", users=20, round_users=20)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("unchanged inputs, reusing") == 2
    assert "Epoch" not in second.stdout
