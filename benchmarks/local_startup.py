"""Start-up time of ``tweetgen local up`` until every URL answers, against moto's server alone.

Both are started as a user starts them (a fresh process), and timed until their URLs answer;
the ratio says what the local stack adds on top of moto (hosting, template wiring, the gaps).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tweetgen_local.stack import free_port

from benchmarks.common import (
    DEFAULT_DATA,
    REPO_ROOT,
    BenchResult,
    base_parser,
    finish,
    make_row,
    median,
    progress,
)

NAME = "local_startup"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status < 500)
    except urllib.error.HTTPError as refused:  # a 404 or 405 is an answer too
        return refused.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _until(
    check: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float = 120
) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"exited early with {process.returncode}")
        if check():
            return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError("did not answer in time")


def time_local_up() -> float:
    with tempfile.TemporaryDirectory(prefix="tweetgen-startup-") as tmp:
        state = Path(tmp)
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "tweetgen_local.cli", "local", "up", "--state-dir", str(state)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def ready() -> bool:
                path = state / "endpoints.json"
                if not path.is_file():
                    return False
                endpoints = json.loads(path.read_text())
                urls = [
                    f"{endpoints['aws']}/moto-api/data.json",
                    f"{endpoints['sagemaker_runtime']}/ping",
                ]
                urls += [endpoints[k] for k in ("api", "graphql", "dashboard") if endpoints.get(k)]
                return all(_answers(u) for u in urls)

            _until(ready, process)
            return time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(30)


def time_moto_server() -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: _answers(f"http://127.0.0.1:{port}/moto-api/data.json"), process)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)


def run(quick: bool = False, data: Path = DEFAULT_DATA, seed: int = 7) -> BenchResult:
    started = time.perf_counter()
    repeats = 3 if quick else 5
    stack, moto = [], []
    for i in range(repeats):
        progress(NAME, f"run {i + 1}/{repeats}")
        moto.append(time_moto_server())
        stack.append(time_local_up())
    rows = [
        make_row(
            NAME,
            "`tweetgen local up` until every URL answers",
            median(stack),
            "s",
            median(moto),
            "moto_server alone",
            higher_is_better=False,
        ),
    ]
    return {
        "name": NAME,
        "title": "Local stack start-up",
        "rows": rows,
        "notes": [f"median of {repeats} fresh starts each; template.yaml of the repository"],
        "details": {"local_up_s": stack, "moto_server_s": moto},
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    finish(run(args.quick, args.data, args.seed), args.json)


if __name__ == "__main__":
    main()
