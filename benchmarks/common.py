"""What every benchmark shares: result rows, timing, the machine, peak memory, child processes.

A benchmark module exposes ``run(...) -> dict`` (see ``BenchResult``) and a ``main()`` that parses
the common options (``--data``, ``--quick``, ``--seed``, ``--json``). Measurements that need a
fresh process (peak memory, thread settings that TensorFlow fixes at start-up) go through
``call_in_child``, which runs ``python -m benchmarks.common MODULE:FUNCTION`` and reads back the
JSON that the function returned.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

REPO_ROOT = Path(__file__).resolve().parents[1]
# Scratch space for exported models and partial results (ignored by git).
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "sentiment140"
SAMPLE_20K = "sample_20k.csv"


def ensure_project_importable() -> None:
    """Make ``tweetgen_build`` importable when the project is not installed in the environment."""
    try:
        importlib.import_module("tweetgen_build")
    except ModuleNotFoundError:
        for sub in ("model_build", "layers/common"):
            sys.path.insert(0, str(REPO_ROOT / sub))


@functools.cache
def stack_thread_pools() -> tuple[int, int]:
    """The model server's (intra-op, inter-op) threads that a rollout gives each model: the
    defaults of template.yaml's InferenceIntraOpThreads and InferenceInterOpThreads."""
    from tweetgen_local.template import Template

    values = Template.load(REPO_ROOT / "template.yaml").parameter_values()
    return int(values["InferenceIntraOpThreads"]), int(values["InferenceInterOpThreads"])


class Row(TypedDict):
    """One figure beside its baseline, measured in the same run."""

    benchmark: str
    figure: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    ratio: float | None
    higher_is_better: bool
    goal: float | None


class BenchResult(TypedDict):
    name: str
    title: str
    rows: list[Row]
    notes: list[str]
    details: dict[str, Any]
    seconds: float


def make_row(
    benchmark: str,
    figure: str,
    value: float,
    unit: str,
    baseline: float | None,
    baseline_name: str,
    *,
    higher_is_better: bool,
    goal: float | None = None,
) -> Row:
    """The ratio is always "how many times better than the baseline" (> 1 means better)."""
    ratio: float | None = None
    if baseline is not None and value > 0 and baseline > 0:
        ratio = value / baseline if higher_is_better else baseline / value
    return Row(
        benchmark=benchmark,
        figure=figure,
        value=value,
        unit=unit,
        baseline=baseline,
        baseline_name=baseline_name,
        ratio=ratio,
        higher_is_better=higher_is_better,
        goal=goal,
    )


def fmt_number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{fmt_number(ratio)}x"


def goal_text(row: Row) -> str:
    if row["goal"] is None:
        return "—"
    met = row["ratio"] is not None and row["ratio"] >= row["goal"]
    return f"≥ {fmt_number(row['goal'])}x ({'met' if met else 'NOT met'})"


def describe_row(row: Row) -> str:
    baseline = (
        "no baseline"
        if row["baseline"] is None
        else f"{fmt_number(row['baseline'])} {row['unit']} ({row['baseline_name']})"
    )
    return (
        f"{row['figure']}: {fmt_number(row['value'])} {row['unit']} vs {baseline}"
        f" -> ratio {fmt_ratio(row['ratio'])}; goal {goal_text(row)}"
    )


def progress(name: str, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp} {name}] {message}", flush=True)


def timed_runs(fn: Callable[[], object], *, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def interleaved_runs(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: Mapping[str, int],
    warmup: Mapping[str, int],
) -> dict[str, list[float]]:
    """Seconds of each call, the callables timed in turns (one call of each per round).

    On a shared machine load comes in bursts; in turns, a burst falls on every side of a
    comparison instead of on whichever happened to be measured then. A callable with fewer
    ``repeats`` (a slow baseline) runs in rounds spread evenly over the others.
    """
    for name, fn in fns.items():
        for _ in range(warmup.get(name, 0)):
            fn()
    rounds = max(repeats.values(), default=0)
    turns = {
        name: {i * rounds // repeats[name] for i in range(repeats[name])}
        for name in fns
        if repeats.get(name, 0) > 0
    }
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(rounds):
        for name, fn in fns.items():
            if round_ in turns.get(name, ()):
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    return seconds


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu_model(),
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "memory": f"{memory_gb:.1f} GiB",
        "python": platform.python_version(),
        "tensorflow": package_version("tensorflow"),
        "transformers": package_version("transformers"),
        "numpy": package_version("numpy"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def call_in_child(
    target: str,
    kwargs: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh interpreter and return its JSON result.

    The child's output streams to ours (progress stays visible); the result travels in a file.
    """
    with tempfile.TemporaryDirectory(prefix="tweetgen-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [
            python or sys.executable,
            "-m",
            "benchmarks.common",
            target,
            json.dumps(kwargs),
            str(result_path),
        ]
        child_env = {**os.environ, **(env or {})}
        completed = subprocess.run(command, cwd=REPO_ROOT, env=child_env, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"{target} failed in a child process (exit {completed.returncode})")
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
        return result


RESULT_PREFIX = "@@bench@@ "
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Worker:
    """A long-lived child that loads something once, then answers requests one at a time.

    ``target`` names a factory ``module:function(**kwargs) -> (info, handler)``; every request
    is a JSON object sent on the child's stdin and answered on its stdout. Several workers can
    be alive at once and be called in turn, so that what they measure is interleaved in time:
    a machine that slows down for a while slows every side alike.
    """

    def __init__(
        self,
        target: str,
        kwargs: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.target = target
        self.process = subprocess.Popen(
            [
                python or sys.executable,
                "-m",
                "benchmarks.common",
                "--worker",
                target,
                json.dumps(kwargs),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(RESULT_PREFIX):
                answer: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                return answer
            print(line, end="", flush=True)
        raise RuntimeError(f"worker {self.target} ended (exit {self.process.wait()})")

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            # A child that has gone (its error printed) leaves a broken pipe: just reap it.
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _worker_main(target: str, raw_kwargs: str) -> None:
    module_name, function_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    info, handler = factory(**json.loads(raw_kwargs))
    print(RESULT_PREFIX + json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(RESULT_PREFIX + json.dumps(handler(json.loads(line))), flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the shared Sentiment140 folder (holds sample_20k.csv)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the result here as JSON")
    return parser


def finish(result: BenchResult, json_path: Path | None) -> None:
    """Print the rows and write the JSON file that benchmarks.run reads."""
    print(f"\n== {result['title']} ({result['seconds']:.0f} s)", flush=True)
    for row in result["rows"]:
        print("  " + describe_row(row), flush=True)
    for note in result["notes"]:
        print("  note: " + note, flush=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _child_main(argv: list[str]) -> None:
    target, raw_kwargs, result_path = argv
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(raw_kwargs))
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    ensure_project_importable()
    if sys.argv[1:2] == ["--worker"]:
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        _child_main(sys.argv[1:])
