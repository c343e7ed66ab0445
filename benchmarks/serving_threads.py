"""The model server's thread pools: the stack's setting against TensorFlow's own.

A rollout gives every model TensorFlow Serving's intra-op and inter-op thread counts from the
template (``InferenceIntraOpThreads``, ``InferenceInterOpThreads``). This measures that setting
against TensorFlow's own pools (0 and 0: both sized by the cores, the model server's default)
and against one thread per pool (1 and 1), each in a model server process of its own that
loads the SavedModel as TensorFlow Serving does (``SessionSavedModel``):

- a lone request (32 new tokens, top-k 40, 1 and 8 prompts): ms in the server, the settings
  timed in turns with a pause between calls (so no pool's idle threads still spin while the
  next is timed); medians;
- two clients at once, each sending such requests back to back for a few seconds to the same
  session (two Python threads in the server process, as two of TensorFlow Serving's request
  threads): requests answered per second, the settings in turns.

Both models of the ``tiny`` and ``small`` presets (``--quick``: ``tiny``), untrained (the time
does not depend on the weights' values), vocabulary 8,000, prompts of 8 tokens from held-out
tweets, as in ``generation_speedup``.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_DATA,
    OUT_DIR,
    BenchResult,
    Handler,
    Row,
    Worker,
    base_parser,
    ensure_project_importable,
    finish,
    make_row,
    median,
    progress,
    stack_thread_pools,
)
from benchmarks.generation_speedup import (
    LABELS,
    VOCAB_SIZE,
    Models,
    load_prompts,
    load_served,
    served_call,
)

NAME = "serving_threads"
KINDS = ("lstm", "gpt2")
BATCHES = (1, 8)
CLIENTS = 2
PAUSE_S = 0.05
TF_POOLS = (0, 0)
ONE_EACH = (1, 1)


def log(message: str) -> None:
    progress(NAME, message)


def server(
    directory: str, prompts: list[list[int]], seed: int, threads: list[int]
) -> tuple[dict[str, Any], Handler]:
    """A model server's process: the SavedModel loaded with these (intra-op, inter-op) pools.

    ``{"batch": b}`` answers the ms of one request of ``b`` prompts; with ``"clients"`` and
    ``"seconds"`` too, that many threads send such requests back to back and it answers the
    requests per second.
    """
    loaded = load_served(directory, threads)
    ids = np.array(prompts, dtype=np.int32)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        call = served_call(loaded, ids[: int(request["batch"])], seed)
        clients = int(request.get("clients", 0))
        if not clients:
            start = time.perf_counter()
            call()
            return {"ms": (time.perf_counter() - start) * 1e3}
        start = time.perf_counter()
        stop = start + float(request["seconds"])
        answered = [0] * clients

        def client(index: int) -> None:
            while time.perf_counter() < stop:
                call()
                answered[index] += 1

        workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        # Until the last request ended: each client's last one runs past ``stop``.
        return {"per_second": sum(answered) / (time.perf_counter() - start)}

    return {"threads": threads}, handle


def setting_name(threads: tuple[int, int], stack: tuple[int, int]) -> str:
    intra, inter = threads
    if threads == stack:
        return f"the stack's pools ({intra} intra-op, {inter} inter-op)"
    if threads == TF_POOLS:
        return "TensorFlow's own pools (0, 0)"
    return f"{intra} intra-op, {inter} inter-op"


def measure(
    kind: str,
    preset: str,
    directory: Path,
    prompts: np.ndarray,
    seed: int,
    settings: list[tuple[int, int]],
    rounds: int,
    seconds: float,
) -> dict[str, Any]:
    """Lone-request ms and two-client requests/s of every setting, in turns."""
    workers: dict[tuple[int, int], Worker] = {}
    try:
        for threads in settings:
            workers[threads] = Worker(
                f"benchmarks.{NAME}:server",
                {
                    "directory": str(directory),
                    "prompts": prompts.tolist(),
                    "seed": seed,
                    "threads": list(threads),
                },
                env={"TF_CPP_MIN_LOG_LEVEL": "2"},
            )
        figures: dict[str, Any] = {}
        for batch in BATCHES:
            for worker in workers.values():  # warm-up
                for _ in range(2):
                    worker.call({"batch": batch})
            lone: dict[tuple[int, int], list[float]] = {t: [] for t in settings}
            for _ in range(rounds):
                for threads, worker in workers.items():
                    time.sleep(PAUSE_S)
                    lone[threads].append(float(worker.call({"batch": batch})["ms"]))
            together: dict[tuple[int, int], float] = {}
            for threads, worker in workers.items():
                time.sleep(PAUSE_S)
                request = {"batch": batch, "clients": CLIENTS, "seconds": seconds}
                together[threads] = float(worker.call(request)["per_second"])
            figures[f"batch{batch}"] = {
                "lone_ms": {f"{t[0]},{t[1]}": values for t, values in lone.items()},
                "together_per_second": {f"{t[0]},{t[1]}": v for t, v in together.items()},
            }
            log(
                f"{kind} {preset} batch {batch}: lone "
                + ", ".join(f"{t}: {median(v):,.2f} ms" for t, v in lone.items())
                + f"; {CLIENTS} clients "
                + ", ".join(f"{t}: {v:,.1f}/s" for t, v in together.items())
            )
        return figures
    finally:
        for worker in workers.values():
            worker.close()


def rows_of(
    kind: str,
    preset: str,
    parameters: int,
    figures: dict[str, Any],
    settings: list[tuple[int, int]],
    stack: tuple[int, int],
) -> list[Row]:
    """Each setting other than TensorFlow's own pools against those pools."""
    base = f"{TF_POOLS[0]},{TF_POOLS[1]}"
    baseline_name = setting_name(TF_POOLS, stack)
    rows: list[Row] = []
    for threads in settings:
        if threads == TF_POOLS:
            continue
        key = f"{threads[0]},{threads[1]}"
        name = setting_name(threads, stack)
        for batch in BATCHES:
            batch_figures = figures[f"batch{batch}"]
            prompts = "1 prompt" if batch == 1 else f"{batch} prompts"
            subject = f"{LABELS[kind]} {preset} ({parameters:,} params), {name}"
            rows.append(
                make_row(
                    NAME,
                    f"{subject}: a lone request of {prompts}, ms",
                    median(batch_figures["lone_ms"][key]),
                    "ms",
                    median(batch_figures["lone_ms"][base]),
                    baseline_name,
                    higher_is_better=False,
                )
            )
            rows.append(
                make_row(
                    NAME,
                    f"{subject}: {CLIENTS} clients at once, {prompts} each, requests/s",
                    batch_figures["together_per_second"][key],
                    "requests/s",
                    batch_figures["together_per_second"][base],
                    baseline_name,
                    higher_is_better=True,
                )
            )
    return rows


def run(data: Path = DEFAULT_DATA, *, quick: bool = False, seed: int = 7) -> BenchResult:
    ensure_project_importable()
    from tweetgen_build.packaging import export_saved_model

    started = time.perf_counter()
    stack = stack_thread_pools()
    settings = list(dict.fromkeys([stack, TF_POOLS, ONE_EACH]))
    presets = ["tiny"] if quick else ["tiny", "small"]
    rounds, seconds = (8, 2.0) if quick else (20, 4.0)
    log(f"tokenizer (vocab {VOCAB_SIZE:,}) and prompts from {data}")
    tokenizer, prompts, eos_id = load_prompts(data, seed)
    rows: list[Row] = []
    details: dict[str, Any] = {"settings": [list(t) for t in settings]}
    for preset in presets:
        log(f"build untrained {preset}-preset models and export them")
        models = Models(preset, tokenizer.get_vocab_size(), eos_id, seed)
        root = OUT_DIR / NAME / preset
        try:
            for kind in KINDS:
                directory = root / kind
                shutil.rmtree(directory, ignore_errors=True)
                export_saved_model(models.serving[kind], directory)
                figures = measure(kind, preset, directory, prompts, seed, settings, rounds, seconds)
                details[f"{kind}-{preset}"] = figures
                rows += rows_of(kind, preset, models.parameters[kind], figures, settings, stack)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    notes = [
        f"stack: template.yaml's defaults, InferenceIntraOpThreads {stack[0]} and"
        f" InferenceInterOpThreads {stack[1]}; 0 lets TensorFlow size a pool by the cores",
        f"lone: median of {rounds} requests per setting, in turns, {PAUSE_S * 1e3:.0f} ms apart;"
        f" {CLIENTS} clients: {seconds:.0f} s per setting, in turns; 32 new tokens, top-k 40,"
        " temperature 0.8, prompts of 8 tokens",
    ]
    return BenchResult(
        name=NAME,
        title="Model server thread pools: the stack's setting vs TensorFlow's own",
        rows=rows,
        notes=notes,
        details=details,
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    result = run(args.data, quick=args.quick, seed=args.seed)
    finish(result, args.json)


if __name__ == "__main__":
    main()
