"""GPT-2 small (124M, random init, fp32) through our SavedModel vs transformers 5 PyTorch ``generate``.

Both sides: the same configuration, the same prompts (8 random token ids per row), 32 new
tokens sampled top-k 40 at temperature 1, 2 threads, median of the timed runs after warm-up.
The PyTorch side runs in its own virtual environment, ``.venv-bench-torch``, created here on
first use (``pip install torch==2.13.0 transformers==5.24.0``; the CPU build of torch).
Ours is the exported ``serving_default`` signature loaded with ``tf.saved_model.load``, in a
fresh process, as it is served. ``--variants`` also measures the faster decoding prototypes of
``benchmarks.gpt2_fast`` the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    OUT_DIR,
    REPO_ROOT,
    BenchResult,
    Row,
    Worker,
    base_parser,
    call_in_child,
    finish,
    make_row,
    median,
    progress,
)
from benchmarks.gpt2_variants import inter_op_threads, needs_prototype, options_of, runtime_env

NAME = "gpt2_vs_pytorch"
TORCH_VENV = REPO_ROOT / ".venv-bench-torch"
TORCH_REQUIREMENTS = ("torch==2.13.0", "transformers==5.24.0")
GPT2_SMALL = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}
EOS_ID = 0  # our tokenizer's end-of-text id; both sides use it
PROMPT_TOKENS = 8
NEW_TOKENS = 32
TOP_K = 40
TEMPERATURE = 1.0
THREADS = 2
GOAL = 1.0
TORCH = "pytorch"
PAUSE_S = 0.3


def log(message: str) -> None:
    progress(NAME, message)


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a child that must use ``threads`` threads (OpenMP and oneDNN read it)."""
    return {"OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}


# ---- our side (each function runs in a child process) --------------------------------------


def export_gpt2_small(directory: str, seed: int, variant: str = "library") -> dict[str, Any]:
    """Build GPT-2 small with random weights and export it (the library's module or a prototype)."""
    import tensorflow as tf
    from tweetgen_build.gpt2 import GPT2Serving, GPT2Settings, build_gpt2
    from tweetgen_build.packaging import export_saved_model

    tf.keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    model = build_gpt2(GPT2Settings(**GPT2_SMALL))
    parameters = int(model.count_params())
    serving: tf.Module
    if needs_prototype(variant):
        from benchmarks.gpt2_fast import serving_for

        serving = serving_for(model, EOS_ID, options_of(variant))
    else:
        serving = GPT2Serving(model, eos_id=EOS_ID)
    export_started = time.perf_counter()
    export_saved_model(serving, Path(directory))
    size = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
    return {
        "parameters": parameters,
        "build_s": export_started - started,
        "export_s": time.perf_counter() - export_started,
        "saved_model_mb": size / 2**20,
    }


def serving_worker(
    directory: str,
    prompts: dict[str, list[list[int]]],
    new_tokens: int,
    top_k: int,
    temperature: float,
    threads: int,
    inter_threads: int,
    seed: int,
) -> tuple[dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]:
    """Load the SavedModel as a server does; each request times one ``serving_default`` call."""
    import resource

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_threads)
    started = time.perf_counter()
    generate = tf.saved_model.load(directory).signatures["serving_default"]
    load_s = time.perf_counter() - started
    arguments: dict[str, dict[str, Any]] = {}
    for batch, rows in prompts.items():
        ids = tf.constant(rows, tf.int32)
        arguments[batch] = {
            "input_ids": ids,
            "attention_mask": tf.ones_like(ids),
            "max_new_tokens": tf.constant(new_tokens, tf.int32),
            "temperature": tf.constant(temperature, tf.float32),
            "top_k": tf.constant(top_k, tf.int32),
            "seed": tf.constant(seed, tf.int64),
        }

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        out = generate(**arguments[str(request["batch"])])
        lengths = out["lengths"].numpy()
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "lengths": [int(n) for n in lengths],
            "steps": int(out["generated_ids"].shape[1]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }

    info = {
        "load_s": load_s,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    return info, handle


# ---- the PyTorch environment --------------------------------------------------------------


def torch_python() -> Path:
    return TORCH_VENV / "bin" / "python"


def torch_env_ready() -> bool:
    if not torch_python().exists():
        return False
    check = (
        "import importlib.metadata as m, sys;"
        "sys.exit(0 if m.version('torch').startswith('2.13.0')"
        " and m.version('transformers') == '5.24.0' else 1)"
    )
    return subprocess.run([str(torch_python()), "-c", check], check=False).returncode == 0


def ensure_torch_env() -> None:
    """Create ``.venv-bench-torch`` with the CPU torch build and transformers 5 if it is missing."""
    if torch_env_ready():
        return
    log(f"creating {TORCH_VENV.name} (torch + transformers 5, about a minute)")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(TORCH_VENV)], check=True)
    subprocess.run(
        [
            str(torch_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            *TORCH_REQUIREMENTS,
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if not torch_env_ready():
        raise RuntimeError(f"{TORCH_VENV}: torch 2.13.0 + transformers 5.24.0 did not install")
    version = subprocess.run(
        [str(torch_python()), "-c", "import torch; print(torch.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if "+cpu" not in version:
        # pip should take the local CPU wheel (its local version sorts first); say so if not.
        log(f"warning: torch {version} is not the CPU build")


# ---- the benchmark ------------------------------------------------------------------------


def make_prompts(seed: int, batches: list[int]) -> dict[str, list[list[int]]]:
    """Random prompt ids (never end-of-text), the same for both sides; batch b = first b rows."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, GPT2_SMALL["vocab_size"], size=(max(batches), PROMPT_TOKENS))
    return {str(b): rows[:b].tolist() for b in batches}


def tokens_per_second(measured: dict[str, Any], batch: str) -> float:
    return int(batch) * NEW_TOKENS / float(measured["results"][batch]["median_s"])


def short_rows(measured: dict[str, Any], batch: str) -> int:
    """How many rows in the timed runs stopped before NEW_TOKENS (end-of-text sampled)."""
    return sum(
        1 for run in measured["results"][batch]["lengths"] for n in run if int(n) < NEW_TOKENS
    )


def export_variant(variant: str, seed: int) -> tuple[Path, dict[str, Any]]:
    directory = OUT_DIR / f"gpt2-small-{variant.replace('+', '-')}"
    shutil.rmtree(directory, ignore_errors=True)
    log(f"ours ({variant}): build GPT-2 small and export the SavedModel (fresh process)")
    exported = call_in_child(
        "benchmarks.gpt2_vs_pytorch:export_gpt2_small",
        {"directory": str(directory), "seed": seed, "variant": variant},
        env={**thread_env(THREADS), **runtime_env(variant)},
    )
    log(
        f"ours ({variant}): {exported['parameters']:,} parameters, exported in"
        f" {exported['export_s']:.0f} s, {exported['saved_model_mb']:.0f} MB"
    )
    return directory, exported


def start_workers(
    variants: list[str], directories: dict[str, Path], prompts: dict[str, Any], seed: int
) -> dict[str, Worker]:
    """One serving process per variant and one PyTorch process, all loaded before timing."""
    sampling = {
        "prompts": prompts,
        "new_tokens": NEW_TOKENS,
        "top_k": TOP_K,
        "temperature": TEMPERATURE,
        "threads": THREADS,
        "seed": seed,
    }
    workers: dict[str, Worker] = {}
    try:
        log("PyTorch: transformers 5 GPT2LMHeadModel, same configuration (fresh process)")
        config = {
            **GPT2_SMALL,
            "bos_token_id": EOS_ID,
            "eos_token_id": EOS_ID,
            "pad_token_id": EOS_ID,
        }
        workers[TORCH] = Worker(
            "benchmarks.torch_generate:worker",
            {"config": config, **sampling},
            env=thread_env(THREADS),
            python=str(torch_python()),
        )
        for variant in variants:
            log(f"ours ({variant}): load the SavedModel in a serving process")
            workers[variant] = Worker(
                "benchmarks.gpt2_vs_pytorch:serving_worker",
                {
                    "directory": str(directories[variant]),
                    "inter_threads": inter_op_threads(variant, THREADS),
                    **sampling,
                },
                env={**thread_env(THREADS), **runtime_env(variant)},
            )
    except BaseException:
        for worker in workers.values():
            worker.close()
        raise
    return workers


def measure_interleaved(
    workers: dict[str, Worker], batches: list[int], repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Warm every side up, then time them in turn, rotating the order at every round."""
    answers: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {str(b): [] for b in batches} for name in workers
    }
    first_call: dict[str, dict[str, float]] = {name: {} for name in workers}
    names = list(workers)
    for batch in batches:
        for name in names:
            for index in range(warmup):
                seconds = workers[name].call({"batch": batch})["seconds"]
                if index == 0:
                    first_call[name][str(batch)] = seconds
        for round_index in range(repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                # Let the previous side's threads stop spinning before this one starts.
                time.sleep(PAUSE_S)
                answers[name][str(batch)].append(workers[name].call({"batch": batch}))
        log(
            f"batch {batch}: "
            + ", ".join(
                f"{name} {median([a['seconds'] for a in answers[name][str(batch)]]) * 1e3:,.0f} ms"
                for name in names
            )
        )
    measured: dict[str, dict[str, Any]] = {}
    for name in names:
        results: dict[str, Any] = {}
        for key, runs in answers[name].items():
            seconds = [a["seconds"] for a in runs]
            results[key] = {
                "seconds": seconds,
                "median_s": median(seconds),
                "min_s": min(seconds),
                "first_call_s": first_call[name][key],
                "lengths": [a.get("lengths", [a.get("new_tokens", NEW_TOKENS)]) for a in runs],
            }
        last = answers[name][str(batches[-1])][-1]
        measured[name] = {
            **workers[name].info,
            "peak_rss_mb": last["peak_rss_mb"],
            "results": results,
        }
    return measured


def compare_rows(label: str, ours: dict[str, Any], torch: dict[str, Any]) -> list[Row]:
    return [
        make_row(
            NAME,
            f"GPT-2 124M {label}, batch {batch}, {NEW_TOKENS} new tokens",
            tokens_per_second(ours, batch),
            "tokens/s",
            tokens_per_second(torch, batch),
            "PyTorch transformers 5 generate",
            higher_is_better=True,
            goal=GOAL,
        )
        for batch in ours["results"]
    ]


def run(
    data: Path | None = None,
    *,
    quick: bool = False,
    seed: int = 7,
    variants: list[str] | None = None,
) -> BenchResult:
    """``data`` is unused (random prompts on a random model); accepted for a uniform interface."""
    started = time.perf_counter()
    batches = [1, 8]
    repeats, warmup = (3, 1) if quick else (7, 2)
    prompts = make_prompts(seed, batches)
    names = ["library", *(variants or [])]
    for name in names:
        options_of(name)  # fail early on an unknown variant
    ensure_torch_env()
    exports: dict[str, dict[str, Any]] = {}
    directories: dict[str, Path] = {}
    try:
        for name in names:
            directories[name], exports[name] = export_variant(name, seed)
        workers = start_workers(names, directories, prompts, seed)
        try:
            measured = measure_interleaved(workers, batches, repeats, warmup)
        finally:
            for worker in workers.values():
                worker.close()
    finally:
        for directory in directories.values():
            shutil.rmtree(directory, ignore_errors=True)
    torch = measured.pop(TORCH)

    rows: list[Row] = []
    notes: list[str] = []
    for name, ours in measured.items():
        ours["export"] = exports[name]
        label = "SavedModel" if name == "library" else f"SavedModel [{name}]"
        rows += compare_rows(label, ours, torch)
        for batch in ours["results"]:
            short = short_rows(ours, batch)
            if short:
                notes.append(
                    f"{name}, batch {batch}: {short} row(s) sampled end-of-text before"
                    f" {NEW_TOKENS} tokens (the loop still ran while any row went on)"
                )
            first = ours["results"][batch]["first_call_s"]
            if first > 10 * ours["results"][batch]["median_s"]:
                notes.append(f"{name}, batch {batch}: first call {first:.1f} s (compilation)")
    best = "; ".join(
        f"{name} batch {batch}: {int(batch) * NEW_TOKENS / ours['results'][batch]['min_s']:,.1f}"
        f" vs {int(batch) * NEW_TOKENS / torch['results'][batch]['min_s']:,.1f} tokens/s"
        f" ({torch['results'][batch]['min_s'] / ours['results'][batch]['min_s']:.2f}x)"
        for name, ours in measured.items()
        for batch in ours["results"]
    )
    notes.append(f"best runs instead of medians (ours vs PyTorch): {best}")
    spread = max(
        max(r["seconds"]) / min(r["seconds"])
        for side in [torch, *measured.values()]
        for r in side["results"].values()
    )
    if spread > 2:
        notes.append(
            f"the slowest run of one side took {spread:.1f}x its fastest: the machine was busy"
            " (other processes); medians and best runs both shown"
        )
    notes.append(
        f"both sides: fp32, random weights, {THREADS} threads, {PROMPT_TOKENS}-token prompts,"
        f" {NEW_TOKENS} new tokens (torch: min_new_tokens={NEW_TOKENS}), top-k {TOP_K},"
        f" temperature {TEMPERATURE}; each side in its own process, loaded before timing, the"
        f" sides timed in turn (rotating order); median of {repeats} rounds after {warmup} warm-up"
    )
    notes.append(
        f"peak RSS: ours {measured['library']['peak_rss_mb']:,.0f} MB (serving process),"
        f" PyTorch {torch['peak_rss_mb']:,.0f} MB; SavedModel"
        f" {exports['library']['saved_model_mb']:,.0f} MB; torch {torch['torch']},"
        f" transformers {torch['transformers']} ({torch['attn_implementation']} attention)"
    )
    return BenchResult(
        name=NAME,
        title="GPT-2 small: our SavedModel vs PyTorch generate (tokens/s)",
        rows=rows,
        notes=notes,
        details={"torch": torch, "ours": measured, "prompts": prompts},
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="also measure these prototypes of benchmarks.gpt2_fast (e.g. static, static+xla)",
    )
    args = parser.parse_args(argv)
    result = run(args.data, quick=args.quick, seed=args.seed, variants=args.variants)
    finish(result, args.json)


if __name__ == "__main__":
    main()
