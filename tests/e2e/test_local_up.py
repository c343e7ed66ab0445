"""``tweetgen local up`` as users run it: URLs written, a second run refused politely, Ctrl-C clean."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPO_ROOT


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"local up exited early: {process.communicate()}")
        if path.is_file():
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise AssertionError("endpoints.json never appeared")


def _port_free(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def _tweetgen(*args: str) -> list[str]:
    return [sys.executable, "-m", "tweetgen_local.cli", *args]


def test_local_up_serves_every_url_refuses_a_second_run_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    state = tmp_path / "state"
    process = subprocess.Popen(
        _tweetgen("local", "up", "--state-dir", str(state)),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        endpoints = _wait_for(state / "endpoints.json", process)
        assert {
            "aws",
            "sagemaker_runtime",
            "api",
            "graphql",
            "dashboard",
            "region",
            "artifact_bucket",
            "endpoint_name",
        } <= set(endpoints)
        assert endpoints["endpoint_name"] == "tweetgen"
        assert str(endpoints["artifact_bucket"]).startswith("tweetgen-artifactbucket")
        with urllib.request.urlopen(f"{endpoints['aws']}/moto-api/data.json", timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{endpoints['sagemaker_runtime']}/ping", timeout=5) as answer:
            assert answer.status == 200

        second = subprocess.run(
            _tweetgen("local", "up", "--state-dir", str(state)),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0
        assert "already running" in second.stdout + second.stderr
        assert process.poll() is None  # the first one is untouched

        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "stopped" in output
    assert not (state / "endpoints.json").exists()
    assert _port_free(str(endpoints["aws"])) and _port_free(str(endpoints["sagemaker_runtime"]))
