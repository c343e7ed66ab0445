"""``tweetgen experiment status`` on a local stack's database (the stack itself stopped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tweetgen.adapters.database import Database
from tweetgen.services.experiment import experiment_status
from tweetgen_local.cli import main

from tests.unit.test_experiment_service import aws, make_endpoint, run, traffic

__all__ = ["aws"]  # the fixture, shared


@pytest.fixture
def state_dir(tmp_path: Path, aws: None) -> Path:
    """A state dir as a stopped local stack leaves it, holding a decided experiment."""
    state = tmp_path / "stack"
    state.mkdir()
    url = f"sqlite:///{state / 'tweetgen.db'}"
    (state / "database.url").write_text(url, encoding="utf-8")
    db = Database.from_url(url)
    db.migrate()
    sagemaker = make_endpoint({"lstm": 1.0, "gpt2": 1.0})
    traffic(db, {"lstm": (5, 35), "gpt2": (34, 6)})
    assert run(db, sagemaker).applied
    return state


def test_json_is_the_status_of_get_experiment(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["experiment", "status", "--state-dir", str(state_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    db = Database.from_url(f"sqlite:///{state_dir / 'tweetgen.db'}")
    assert printed == experiment_status(db, "tweetgen", None)
    assert printed["last_decision"]["winner"] == "gpt2"


def test_the_table_shows_each_figure(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["experiment", "status", "--state-dir", str(state_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("experiment on endpoint tweetgen: policy ab; figures as of 20")
    header = lines[2].split()
    assert header[:4] == ["variant", "in", "service", "version"] and "P(best)" in header
    gpt2 = next(line.split() for line in lines if line.startswith("gpt2 "))
    # variant, in service, version, weight, served, errors, feedback, liked
    assert gpt2[:8] == ["gpt2", "yes", "-", "100.0%", "40", "0", "40", "85.0%"]
    text = "\n".join(lines)
    assert "lstm - gpt2: difference -0.725" in text and ", significant" in text
    assert "sample ratio since the weights were set" in text and "): ok" in text
    assert "applied; weights gpt2 100.0%, lstm 0.0%" in text
    assert "ab: gpt2 wins" in text


def test_without_a_database_it_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["experiment", "status", "--state-dir", str(tmp_path / "nothing")]) == 2
    assert "no local stack database" in capsys.readouterr().err
