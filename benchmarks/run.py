"""Run every benchmark, each in its own process, and write ``benchmarks/RESULTS.md``.

``python -m benchmarks.run --data ../shared/data/sentiment140`` (what ``make bench`` runs).
``--only NAME`` (repeatable) runs a subset; ``--quick`` uses smaller sizes. A run with either
writes ``benchmarks/out/RESULTS.md`` instead, so the full results are not replaced by partial
ones (``--output`` chooses the file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_DATA,
    OUT_DIR,
    REPO_ROOT,
    BenchResult,
    Row,
    fmt_number,
    fmt_ratio,
    goal_text,
    machine,
    make_row,
    progress,
)

BENCH_DIR = REPO_ROOT / "benchmarks"
# Each runs as ``python -m benchmarks.NAME`` and writes its BenchResult as JSON. These come
# first; any other module here with a ``run`` and the common command line follows.
MODULES = ("generation_speedup", "gpt2_vs_pytorch", "training_memory")
NOT_BENCHMARKS = {"__init__", "common", "run"}
# A plain script with its own output format, included when it exists.
NGRAM_SCRIPT = BENCH_DIR / "ngram_speed.py"
NGRAM = "ngram_speed"
# The decoding prototypes measured beside the library's GPT-2 module (see gpt2_fast.py).
GPT2_VARIANTS = ("embed", "static+xla")
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"


def _is_benchmark(path: Path) -> bool:
    if path.stem in NOT_BENCHMARKS or path.stem == NGRAM:
        return False
    text = path.read_text(encoding="utf-8")
    return "\ndef run(" in text and "base_parser(" in text


def available() -> list[str]:
    found = sorted(p.stem for p in BENCH_DIR.glob("*.py") if _is_benchmark(p))
    ordered = [name for name in MODULES if name in found]
    ordered += [name for name in found if name not in MODULES]
    return [*ordered, *([NGRAM] if NGRAM_SCRIPT.exists() else [])]


def log(message: str) -> None:
    progress("run", message)


def run_module(name: str, args: argparse.Namespace) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="tweetgen-bench-") as tmp:
        json_path = Path(tmp) / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            f"benchmarks.{name}",
            "--data",
            str(args.data),
            "--seed",
            str(args.seed),
            "--json",
            str(json_path),
        ]
        if args.quick:
            command.append("--quick")
        if name == "gpt2_vs_pytorch" and args.gpt2_variants:
            command += ["--variants", *args.gpt2_variants]
        completed = subprocess.run(command, cwd=REPO_ROOT, check=False)
        if completed.returncode != 0 or not json_path.exists():
            raise RuntimeError(f"benchmarks.{name} exited with {completed.returncode}")
        result: BenchResult = json.loads(json_path.read_text(encoding="utf-8"))
        return result


def _seconds(pattern: str, text: str) -> float | None:
    found = re.search(pattern, text)
    return float(found.group(1).replace(",", "")) if found else None


def run_ngram(quick: bool) -> BenchResult:
    """Run ngram_speed.py as it is and read its figures from what it prints."""
    started = time.perf_counter()
    command = [sys.executable, str(NGRAM_SCRIPT)]
    if quick:
        command += ["--train-tokens", "300000", "--eval-tokens", "20000"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    if process.wait() != 0:
        raise RuntimeError(f"{NGRAM_SCRIPT.name} exited with {process.returncode}")
    text = "\n".join(lines)
    ours = _seconds(r"(?m)^ours:[^\n]*?=\s*([\d,.]+)\s*s", text)
    nltk = _seconds(r"(?m)^nltk:[^\n]*?=\s*([\d,.]+)\s*s", text)
    rows: list[Row] = []
    notes: list[str] = []
    if ours is not None and nltk is not None:
        row = make_row(
            NGRAM,
            "Kneser-Ney n-gram baseline, fit + score, seconds",
            ours,
            "s",
            nltk,
            "nltk KneserNeyInterpolated (scoring extrapolated)",
            higher_is_better=False,
        )
        # The script's own ratio comes from unrounded times.
        printed = _seconds(r"(?m)^ratio[^\n]*?:\s*([\d,.]+)x", text)
        if printed is not None:
            row["ratio"] = printed
        rows.append(row)
    else:
        notes.append("its figures could not be read from its output; the output follows")
    notes += [line for line in lines if line.strip()][-6:]
    return BenchResult(
        name=NGRAM,
        title=f"{NGRAM_SCRIPT.name} (run as a script)",
        rows=rows,
        notes=notes,
        details={"output": lines},
        seconds=time.perf_counter() - started,
    )


def torch_versions(results: list[BenchResult]) -> str | None:
    for result in results:
        torch = result["details"].get("torch")
        if isinstance(torch, dict) and "torch" in torch:
            return (
                f"torch {torch['torch']} + transformers {torch['transformers']}"
                " (in .venv-bench-torch, for gpt2_vs_pytorch)"
            )
    return None


def render(
    results: list[BenchResult],
    failures: dict[str, str],
    command: str,
    seconds: float,
    info: dict[str, str],
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {info['date']}; the whole run took {seconds / 60:.1f} min.",
        "Every baseline was measured in the same run, on the same machine.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']} |",
        f"| cores | {info['cores']} |",
        f"| memory | {info['memory']} |",
        f"| Python | {info['python']} |",
        f"| TensorFlow | {info['tensorflow']} |",
        f"| transformers | {info['transformers']} |",
        f"| numpy | {info['numpy']} |",
    ]
    other = torch_versions(results)
    if other:
        lines.append(f"| other side | {other} |")
    lines += [
        "",
        "Ratio = how many times better than the baseline: baseline / ours for times and memory,"
        " ours / baseline for throughput.",
        "",
        "| benchmark | figure | measured | baseline | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            baseline = (
                "—"
                if row["baseline"] is None
                else f"{fmt_number(row['baseline'])} {row['unit']} ({row['baseline_name']})"
            )
            lines.append(
                f"| {row['benchmark']} | {row['figure']} | {fmt_number(row['value'])} {row['unit']}"
                f" | {baseline} | {fmt_ratio(row['ratio'])} | {goal_text(row)} |"
            )
    for name, error in failures.items():
        lines.append(f"| {name} | FAILED: {error} | | | | |")
    for result in results:
        lines += ["", f"## {result['name']}: {result['title']} ({result['seconds']:.0f} s)", ""]
        lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument(
        "--only", action="append", choices=available(), metavar="NAME", help=", ".join(available())
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--gpt2-variants",
        nargs="*",
        default=list(GPT2_VARIANTS),
        help="decoding prototypes that gpt2_vs_pytorch measures besides the library (none: skip)",
    )
    parser.add_argument("--output", type=Path, help="where to write the markdown results")
    args = parser.parse_args(argv)
    names = args.only or available()
    partial = bool(args.quick or args.only)
    output = args.output or (OUT_DIR / "RESULTS.md" if partial else RESULTS)
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])

    started = time.perf_counter()
    results: list[BenchResult] = []
    failures: dict[str, str] = {}
    for index, name in enumerate(names, 1):
        log(f"({index}/{len(names)}) {name}")
        bench_started = time.perf_counter()
        load_before = os.getloadavg()[0]
        try:
            result = run_ngram(args.quick) if name == NGRAM else run_module(name, args)
        except (RuntimeError, OSError) as error:
            failures[name] = str(error)
            log(f"{name} FAILED: {error}")
        else:
            # Other processes on the machine slow every figure: say how busy it was.
            result["notes"].append(
                f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
                f" (this benchmark's own processes count; {os.cpu_count()} cores)"
            )
            results.append(result)
        log(f"{name} done in {time.perf_counter() - bench_started:.0f} s")
    seconds = time.perf_counter() - started
    info = machine()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(results, failures, command.strip(), seconds, info), encoding="utf-8")
    raw: dict[str, Any] = {"machine": info, "seconds": seconds, "results": results}
    (OUT_DIR / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {output} ({seconds / 60:.1f} min)")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
