"""The model server's thread pools: the stack's setting against TensorFlow's own.

A rollout gives every model TensorFlow Serving's intra-op and inter-op thread counts from the
template (``InferenceIntraOpThreads``, ``InferenceInterOpThreads``). This measures that setting
against TensorFlow's own pools (0 and 0: both sized by the cores, the model server's default),
one thread per pool (1 and 1) and an inter-op pool of one thread per core (1 and 0, the stack's
setting before -1), each in a model server process of its own that loads the SavedModel as
TensorFlow Serving does:

- a lone request (32 new tokens, top-k 40, 1 and 8 prompts): ms in the server, the settings
  timed in turns with a pause between calls (so no pool's idle threads still spin while the
  next is timed); medians;
- two clients at once, each sending such requests back to back for a few seconds to the same
  session (two Python threads in the server process, as two of TensorFlow Serving's request
  threads): requests answered per second, the settings in turns.

The same two figures at batch 8 compare each model's default module (one loop for the whole
batch) with its ``row_groups=2`` export (``tweetgen train --row-groups 2``: the rows in two
groups, each in a loop of its own, side by side on the inter-op pool), both served with an
inter-op pool (1 and 0), which row groups need: a lone request gains what two clients at once
pay.

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
    GPT2_GROUPS,
    INTER_OP_POOL,
    LABELS,
    LSTM_GROUPS,
    ROW_GROUPS,
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
    where = f"{inter} inter-op" + (" (each request on its own thread)" if inter < 0 else "")
    if threads == stack:
        return f"the stack's pools ({intra} intra-op, {where})"
    if threads == TF_POOLS:
        return "TensorFlow's own pools (0, 0)"
    return f"{intra} intra-op, {where}"


def measure(
    kind: str,
    preset: str,
    sides: dict[str, tuple[Path, tuple[int, int]]],
    prompts: np.ndarray,
    seed: int,
    rounds: int,
    seconds: float,
    batches: tuple[int, ...] = BATCHES,
) -> dict[str, Any]:
    """Lone-request ms and two-client requests/s of every side (a SavedModel and the pools it
    is served with), in turns."""
    workers: dict[str, Worker] = {}
    try:
        for side, (directory, threads) in sides.items():
            workers[side] = Worker(
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
        for batch in batches:
            for worker in workers.values():  # warm-up
                for _ in range(2):
                    worker.call({"batch": batch})
            lone: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(rounds):
                for side, worker in workers.items():
                    time.sleep(PAUSE_S)
                    lone[side].append(float(worker.call({"batch": batch})["ms"]))
            together: dict[str, float] = {}
            for side, worker in workers.items():
                time.sleep(PAUSE_S)
                request = {"batch": batch, "clients": CLIENTS, "seconds": seconds}
                together[side] = float(worker.call(request)["per_second"])
            figures[f"batch{batch}"] = {"lone_ms": lone, "together_per_second": together}
            log(
                f"{kind} {preset} batch {batch}: lone "
                + ", ".join(f"{side}: {median(v):,.2f} ms" for side, v in lone.items())
                + f"; {CLIENTS} clients "
                + ", ".join(f"{side}: {v:,.1f}/s" for side, v in together.items())
            )
        return figures
    finally:
        for worker in workers.values():
            worker.close()


def pools_key(threads: tuple[int, int]) -> str:
    return f"{threads[0]},{threads[1]}"


def comparison_rows(
    subject: str, figures: dict[str, Any], side: str, base: str, baseline_name: str
) -> list[Row]:
    """A side's lone-request ms and two-client requests/s against a base side's."""
    rows: list[Row] = []
    for key, batch_figures in figures.items():
        batch = int(key.removeprefix("batch"))
        prompts = "1 prompt" if batch == 1 else f"{batch} prompts"
        rows.append(
            make_row(
                NAME,
                f"{subject}: a lone request of {prompts}, ms",
                median(batch_figures["lone_ms"][side]),
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
                batch_figures["together_per_second"][side],
                "requests/s",
                batch_figures["together_per_second"][base],
                baseline_name,
                higher_is_better=True,
            )
        )
    return rows


def rows_of(
    kind: str,
    preset: str,
    parameters: int,
    figures: dict[str, Any],
    settings: list[tuple[int, int]],
    stack: tuple[int, int],
) -> list[Row]:
    """Each setting other than TensorFlow's own pools against those pools."""
    rows: list[Row] = []
    for threads in settings:
        if threads == TF_POOLS:
            continue
        subject = f"{LABELS[kind]} {preset} ({parameters:,} params), {setting_name(threads, stack)}"
        rows += comparison_rows(
            subject,
            figures,
            pools_key(threads),
            pools_key(TF_POOLS),
            setting_name(TF_POOLS, stack),
        )
    return rows


def measure_row_groups(
    models: Models,
    preset: str,
    root: Path,
    prompts: np.ndarray,
    seed: int,
    timing: tuple[int, float],
) -> tuple[list[Row], dict[str, Any]]:
    """Each model's default module against its ``row_groups`` export, both served with an
    inter-op pool (``INTER_OP_POOL``: row groups need one), at batch 8: what a lone request
    gains and what requests that arrive together pay."""
    from tweetgen_build.packaging import export_saved_model

    rows: list[Row] = []
    details: dict[str, Any] = {}
    for kind, grouped in (("lstm", LSTM_GROUPS), ("gpt2", GPT2_GROUPS)):
        directory = root / grouped
        shutil.rmtree(directory, ignore_errors=True)
        export_saved_model(models.serving[grouped], directory)
        sides = {"one loop": (root / kind, INTER_OP_POOL), grouped: (directory, INTER_OP_POOL)}
        figures = measure(kind, preset, sides, prompts, seed, *timing, batches=(max(BATCHES),))
        details[f"{grouped}-{preset}"] = figures
        subject = f"{LABELS[grouped]} {preset} ({models.parameters[kind]:,} params)"
        rows += comparison_rows(subject, figures, grouped, "one loop", "one loop (the default)")
    return rows, details


def run(data: Path = DEFAULT_DATA, *, quick: bool = False, seed: int = 7) -> BenchResult:
    ensure_project_importable()
    from tweetgen_build.packaging import export_saved_model

    started = time.perf_counter()
    stack = stack_thread_pools()
    settings = list(dict.fromkeys([stack, TF_POOLS, ONE_EACH, INTER_OP_POOL]))
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
                sides = {pools_key(threads): (directory, threads) for threads in settings}
                figures = measure(kind, preset, sides, prompts, seed, rounds, seconds)
                details[f"{kind}-{preset}"] = figures
                rows += rows_of(kind, preset, models.parameters[kind], figures, settings, stack)
            group_rows, group_details = measure_row_groups(
                models, preset, root, prompts, seed, (rounds, seconds)
            )
            rows += group_rows
            details.update(group_details)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    notes = [
        f"stack: template.yaml's defaults, InferenceIntraOpThreads {stack[0]} and"
        f" InferenceInterOpThreads {stack[1]}; 0 lets TensorFlow size a pool by the cores,"
        " and an inter-op setting of -1 runs each request on the thread that called the session",
        f"lone: median of {rounds} requests per setting, in turns, {PAUSE_S * 1e3:.0f} ms apart;"
        f" {CLIENTS} clients: {seconds:.0f} s per setting, in turns; 32 new tokens, top-k 40,"
        " temperature 0.8, prompts of 8 tokens",
        f"[rows in {ROW_GROUPS} groups]: the row_groups={ROW_GROUPS} export (tweetgen train"
        " --row-groups) against the default module (one loop for the whole batch), both with"
        f" an inter-op pool ({INTER_OP_POOL[0]} intra-op, {INTER_OP_POOL[1]} inter-op: the"
        f" groups' loops run side by side there), at batch {max(BATCHES)}",
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
