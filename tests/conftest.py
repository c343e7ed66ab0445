"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The shared Sentiment140 files (never copied into the repository)."""
    configured = os.environ.get("TWEETGEN_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "sentiment140"


@pytest.fixture(scope="session")
def sentiment140() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared tweets not found at {path} (set TWEETGEN_DATA_DIR)")
        pytest.skip(f"shared tweets not found at {path} (set TWEETGEN_DATA_DIR)")
    return path
