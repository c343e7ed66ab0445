"""In-graph generation (one SavedModel call per request) vs the original notebook's loop.

The notebook generated one token per ``model.predict`` call on the whole growing sequence,
picked the next token on the host and appended it, 32 times. Ours is the exported
``serving_default`` signature, loaded as TensorFlow Serving loads it (the MetaGraph in a
session, the restore op, tensors fed by name: ``tweetgen_build.packaging.SessionSavedModel``)
in a process of its own, as the model server runs beside the notebook's: one request is a call
to that process (its time includes the pipe there and back). The model servers run with the
thread pools that the stack gives every model (template.yaml's defaults of
``InferenceIntraOpThreads`` and ``InferenceInterOpThreads``) and, for each model's default
module, also with TensorFlow's own pools (0 and 0: both sized by the cores).

Both models at two sizes, the ``tiny`` preset (``make demo``'s) and the ``small`` preset
(``tweetgen train``'s default; ``--quick``: ``tiny`` only), with a byte-level BPE vocabulary of
8,000 trained on the shared tweets; their weights are random (seeded, untrained): the time of a
forward pass does not depend on the weights' values. The prompts are the first 8 tokens of
held-out tweets. Both paths sample top-k 40 at temperature 0.8 and produce 32 new tokens (ours
is checked to run all 32 steps: it stops early only when every row has sampled end-of-text).
The loops and the served modules are timed in turns, one call of each per round, so a burst of
load on a shared machine falls on both sides of a ratio. A loop takes a turn in only a few
rounds (``REPEATS``): it takes one to two seconds, and a served module's call that comes right
after one is slower, as after any idle time (on a 2-core Zen 4 EPYC, a served call of the tiny
LSTM at batch 8 right after 1.5 s asleep took 17.2 ms against 13.8 ms back to back, medians of
6); the medians are over many calls, so the few that follow a loop do not decide them.
GPT-2 is exported three ways against the same loops: the library's default module (static
key/value cache, no XLA), the same with its decoding step compiled by XLA (``jit_compile=True``,
an export option that the model server must allow), and with transformers' growing cache (the
module before the static cache). Both models are also exported with ``row_groups=2``
(``tweetgen train --row-groups 2``, served with an inter-op pool, which they need): a batch
decoded as two groups of rows side by side, which answers a lone request of several prompts
sooner and costs concurrent requests more CPU (``serving_threads`` measures both).

The goal (100 times as fast) is on what the stack serves by default: each model's default module
with the stack's pools, at the ``tiny`` preset (``make demo``'s models). The other rows are
there to compare. The ``small`` preset does 7 to 9 times the arithmetic per generated token
(the notes give the multiply-adds of each model) while the notebook's loop, which is mostly the
cost of a ``predict`` call, grows far less: its ratio is bounded by the model's matrix products
on one core, not by the cost of the calls that in-graph generation removes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_DATA,
    OUT_DIR,
    SAMPLE_20K,
    BenchResult,
    Handler,
    Row,
    Worker,
    base_parser,
    ensure_project_importable,
    finish,
    interleaved_runs,
    make_row,
    median,
    progress,
    stack_thread_pools,
)

NAME = "generation_speedup"
NEW_TOKENS = 32
PROMPT_TOKENS = 8
TOP_K = 40
TEMPERATURE = 0.8
VOCAB_SIZE = 8000
BATCHES = (1, 8)
GOAL = 100.0
# The preset whose default modules carry the goal.
GOAL_PRESET = "tiny"
LOOP = "notebook-loop"
EAGER = "eager-loop"
XLA = "gpt2-xla"
GROWING = "gpt2-growing"
LSTM_GROUPS = "lstm-groups"
GPT2_GROUPS = "gpt2-groups"
ROW_GROUPS = 2
# Calls timed per batch size: (each served module's, each loop's), in a --quick run and a full one.
REPEATS = {"quick": (15, 2), "full": (30, 3)}
SERVED = {"lstm": ["lstm", LSTM_GROUPS], "gpt2": ["gpt2", XLA, GROWING, GPT2_GROUPS]}
# Row groups run their loops side by side on the inter-op pool: served with one and carrying
# no goal. INTER_OP_POOL is one thread per operation and an inter-op pool of one thread per
# core (intra-op 1, inter-op 0), the stack's setting before -1.
GROUPED = (LSTM_GROUPS, GPT2_GROUPS)
INTER_OP_POOL = (1, 0)
LABELS = {
    "lstm": "LSTM",
    "gpt2": "GPT-2",
    XLA: "GPT-2 [XLA decoding step]",
    GROWING: "GPT-2 [growing cache]",
    LSTM_GROUPS: f"LSTM [rows in {ROW_GROUPS} groups]",
    GPT2_GROUPS: f"GPT-2 [rows in {ROW_GROUPS} groups]",
}
# The default module of each model is also served with TensorFlow's own thread pools.
TF_POOLS = "@tf"
SETTINGS = {TF_POOLS: "TensorFlow's own thread pools"}

PredictLast = Callable[[np.ndarray], np.ndarray]


def log(message: str) -> None:
    progress(NAME, message)


def sample_top_k(
    logits: np.ndarray, top_k: int, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """The host-side pick of the notebook loop: top-k sampling with numpy, one id per row."""
    candidates = np.argpartition(logits, -top_k, axis=-1)[:, -top_k:]
    picked = np.take_along_axis(logits, candidates, axis=-1) / temperature
    probs = np.exp(picked - picked.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    choice = np.array([rng.choice(top_k, p=row) for row in probs])
    return np.take_along_axis(candidates, choice[:, None], axis=-1)[:, 0].astype(np.int32)


def notebook_generate(
    predict_last: PredictLast, prompt: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One forward call per new token on the whole sequence so far, as the notebook did."""
    sequence = prompt
    for _ in range(NEW_TOKENS):
        logits = predict_last(sequence)
        token = sample_top_k(logits, TOP_K, TEMPERATURE, rng)
        sequence = np.concatenate([sequence, token[:, None]], axis=1)
    return sequence[:, prompt.shape[1] :]


def load_prompts(data: Path, seed: int) -> tuple[Any, np.ndarray, int]:
    """Tokenizer trained on the training split; prompts from held-out tweets of >= 8 tokens."""
    from tweetgen_build.data import CleaningOptions
    from tweetgen_build.pipeline import prepare_data
    from tweetgen_build.tokenizer import encode_tweets, eos_id_of, train_tokenizer

    splits, _ = prepare_data([data / SAMPLE_20K], CleaningOptions(), None, lambda _: None)
    tokenizer = train_tokenizer(splits.train, vocab_size=VOCAB_SIZE)
    encoded = encode_tweets(tokenizer, list(splits.test))
    long_enough = [ids[:PROMPT_TOKENS] for ids in encoded if len(ids) > PROMPT_TOKENS]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(long_enough), size=max(BATCHES), replace=False)
    prompts = np.array([long_enough[i] for i in chosen], dtype=np.int32)
    return tokenizer, prompts, eos_id_of(tokenizer)


class Models:
    """The Keras models (for the notebook loop) and their exported SavedModels (for ours)."""

    def __init__(self, preset: str, vocab_size: int, eos_id: int, seed: int) -> None:
        import keras
        import tensorflow as tf
        from tweetgen_build.gpt2 import GPT2Serving, GPT2Settings, build_gpt2
        from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm
        from tweetgen_build.pipeline import PRESETS

        keras.utils.set_random_seed(seed)
        self.lstm = build_lstm(LSTMConfig(vocab_size=vocab_size, **PRESETS[preset]["lstm"]))
        self.gpt2 = build_gpt2(GPT2Settings(vocab_size=vocab_size, **PRESETS[preset]["gpt2"]))
        self.serving: dict[str, tf.Module] = {
            "lstm": LSTMServing(self.lstm, eos_id),
            "gpt2": GPT2Serving(self.gpt2, eos_id),
            XLA: GPT2Serving(self.gpt2, eos_id, jit_compile=True),
            GROWING: GPT2Serving(self.gpt2, eos_id, static_cache=False),
            LSTM_GROUPS: LSTMServing(self.lstm, eos_id, row_groups=ROW_GROUPS),
            GPT2_GROUPS: GPT2Serving(self.gpt2, eos_id, row_groups=ROW_GROUPS),
        }
        self.parameters = {
            "lstm": int(self.lstm.count_params()),
            "gpt2": int(self.gpt2.count_params()),
        }
        self.multiply_adds = {
            "lstm": multiply_adds(self.lstm, self.lstm.embedding.weights),
            "gpt2": multiply_adds(self.gpt2, self.gpt2.transformer.wpe.weights),
        }
        self.last_lstm = last_position_lstm(self.lstm)

    def predict_last(self, kind: str) -> PredictLast:
        """``model.predict`` on the whole sequence, logits of the last position."""
        if kind == "lstm":
            return lambda ids: np.asarray(self.last_lstm.predict(ids, verbose=0))
        return lambda ids: np.asarray(self.gpt2.predict(ids, verbose=0)["logits"][:, -1, :])

    def call_last(self, kind: str) -> PredictLast:
        """The model called eagerly on the whole sequence (no ``predict`` machinery)."""
        if kind == "lstm":
            return lambda ids: np.asarray(self.last_lstm(ids, training=False))
        return lambda ids: np.asarray(self.gpt2(ids, training=False).logits[:, -1, :])


def multiply_adds(model: Any, lookups: list[Any]) -> int:
    """Multiply-adds of one generated token for one row in ``model``'s matrices: every 2-D
    weight is one product per token, except the tables that are only looked up (``lookups``).
    GPT-2's token table counts: it is also the vocabulary head. Biases, norms and attention's
    products with the cache are left out."""
    skip = {id(weight) for weight in lookups}
    return sum(
        int(np.prod(weight.shape))
        for weight in model.weights
        if len(weight.shape) == 2 and min(weight.shape) > 1 and id(weight) not in skip
    )


def last_position_lstm(lm: Any) -> Any:
    """The notebook's shape of model: the LSTM's layers, the vocabulary head on the last step only.

    It shares the weights of ``lm``; ``predict`` on it returns [batch, vocab] like the
    notebook's ``Sequential(Embedding, LSTM, Dense)``.
    """
    import keras

    ids = keras.Input(shape=(None,), dtype="int32")
    x = lm.embedding(ids)
    for rnn in lm.rnns:
        x, _, _ = rnn(x)
    return keras.Model(ids, lm.head(x[:, -1, :]))


def export_all(models: Models, root: Path) -> None:
    """Export each serving module to ``root / name``."""
    from tweetgen_build.packaging import export_saved_model

    for name, module in models.serving.items():
        directory = root / name
        shutil.rmtree(directory, ignore_errors=True)
        export_saved_model(module, directory)


def served_call(loaded: Any, prompt: np.ndarray, seed: int) -> Callable[[], dict[str, Any]]:
    """One request to the ``serving_default`` signature, fed by tensor name."""
    arrays = {
        "input_ids": prompt,
        "attention_mask": np.ones_like(prompt),
        "max_new_tokens": np.int32(NEW_TOKENS),
        "temperature": np.float32(TEMPERATURE),
        "top_k": np.int32(TOP_K),
        "seed": np.int64(seed),
    }
    return partial(loaded.run, "serving_default", arrays)


def load_served(directory: str, threads: list[int]) -> Any:
    """A SavedModel loaded as TensorFlow Serving loads it, with (intra-op, inter-op) threads:
    in a process of its own, whose pools these become."""
    ensure_project_importable()
    from tweetgen_build.packaging import SessionSavedModel

    intra, inter = threads
    return SessionSavedModel(Path(directory), intra_op_threads=intra, inter_op_threads=inter)


def serving_worker(
    directory: str, prompts: list[list[int]], seed: int, threads: list[int]
) -> tuple[dict[str, Any], Handler]:
    """A model server's process (``benchmarks.common.Worker``): one SavedModel loaded as
    TensorFlow Serving loads it, with its thread pools; a request names the batch size and is
    answered with the generated tokens."""
    loaded = load_served(directory, threads)
    ids = np.array(prompts, dtype=np.int32)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        out = served_call(loaded, ids[: int(request["batch"])], seed)()
        return {
            "generated_ids": out["generated_ids"].tolist(),
            "lengths": out["lengths"].tolist(),
        }

    return {"threads": threads}, handle


def start_servers(kind: str, root: Path, prompts: np.ndarray, seed: int) -> dict[str, Worker]:
    """A serving process per module of this kind with the stack's thread pools (row groups with
    ``INTER_OP_POOL``: ``GROUPED``), and one with TensorFlow's own pools for its default module;
    all loaded before anything is timed."""
    stack = stack_thread_pools()
    plan = [(name, name, INTER_OP_POOL if name in GROUPED else stack) for name in SERVED[kind]]
    plan.append((kind + TF_POOLS, kind, (0, 0)))
    servers: dict[str, Worker] = {}
    try:
        for side, module, threads in plan:
            servers[side] = Worker(
                "benchmarks.generation_speedup:serving_worker",
                {
                    "directory": str(root / module),
                    "prompts": prompts.tolist(),
                    "seed": seed,
                    "threads": list(threads),
                },
                env={"TF_CPP_MIN_LOG_LEVEL": "2"},
            )
    except BaseException:
        for server in servers.values():
            server.close()
        raise
    return servers


def label(side: str) -> str:
    """A served side's name in the rows: the module's, and how it was served if not default."""
    for suffix, setting in SETTINGS.items():
        if side.endswith(suffix):
            return f"{LABELS[side.removesuffix(suffix)]} [{setting}]"
    return LABELS[side]


def measure_kind(
    kind: str,
    preset: str,
    models: Models,
    root: Path,
    prompts: np.ndarray,
    seed: int,
    reps: tuple[int, int],
) -> tuple[list[Row], dict[str, Any]]:
    """Both loops and every served side of this kind, timed in turns, per batch size."""
    in_graph_reps, loop_reps = reps
    rows: list[Row] = []
    details: dict[str, Any] = {}
    servers = start_servers(kind, root, prompts, seed)
    try:
        for batch in BATCHES:
            prompt = prompts[:batch]
            rng = np.random.default_rng(seed)
            calls: dict[str, Callable[[], Any]] = {
                side: partial(server.call, {"batch": batch}) for side, server in servers.items()
            }
            first_ms: dict[str, float] = {}
            outs: dict[str, dict[str, Any]] = {}
            for side, call in calls.items():  # the first call alone (XLA compiles there)
                first = time.perf_counter()
                outs[side] = {key: np.asarray(value) for key, value in call().items()}
                first_ms[side] = (time.perf_counter() - first) * 1e3
            runs = interleaved_runs(
                {
                    LOOP: partial(notebook_generate, models.predict_last(kind), prompt, rng),
                    EAGER: partial(notebook_generate, models.call_last(kind), prompt, rng),
                    **calls,
                },
                repeats={
                    LOOP: loop_reps,
                    EAGER: loop_reps,
                    **dict.fromkeys(calls, in_graph_reps),
                },
                warmup={LOOP: 1, EAGER: 1, **dict.fromkeys(calls, 2)},
            )
            batch_rows, batch_details = batch_results(
                kind, preset, models, batch, runs, outs, first_ms
            )
            rows += batch_rows
            details.update(batch_details)
    finally:
        for server in servers.values():
            server.close()
    return rows, details


def batch_results(
    kind: str,
    preset: str,
    models: Models,
    batch: int,
    runs: dict[str, list[float]],
    outs: dict[str, dict[str, Any]],
    first_ms: dict[str, float],
) -> tuple[list[Row], dict[str, Any]]:
    """The rows and details of one batch size: every served side against both loops."""
    rows: list[Row] = []
    details: dict[str, Any] = {}
    loop, eager = runs[LOOP], runs[EAGER]
    loop_ms, eager_ms = median(loop) * 1e3, median(eager) * 1e3
    for side, out in outs.items():
        ours = runs[side]
        ours_ms = median(ours) * 1e3
        log(
            f"{label(side)} {preset} batch {batch}: in-graph {ours_ms:,.1f} ms, notebook"
            f" predict loop {loop_ms:,.0f} ms ({loop_ms / ours_ms:,.0f}x), eager-call loop"
            f" {eager_ms:,.0f} ms"
        )
        figure = (
            f"{label(side)} {preset} ({models.parameters[kind]:,} params),"
            f" batch {batch}, ms/request"
        )
        # The stack's default pools, in a process of its own.
        default = side in SERVED[kind] and side not in GROUPED
        goal = GOAL if side == kind and preset == GOAL_PRESET else None
        rows.append(
            make_row(
                NAME,
                figure,
                ours_ms,
                "ms",
                loop_ms,
                "notebook: model.predict per token",
                higher_is_better=False,
                goal=goal,
            )
        )
        if default:
            rows.append(
                make_row(
                    NAME,
                    figure + " (vs an eager-call loop)",
                    ours_ms,
                    "ms",
                    eager_ms,
                    "eager model call per token",
                    higher_is_better=False,
                )
            )
        details[f"{side}-{preset}-batch{batch}"] = {
            "in_graph_ms": [x * 1e3 for x in ours],
            "first_call_ms": first_ms[side],
            "predict_loop_ms": [x * 1e3 for x in loop],
            "eager_loop_ms": [x * 1e3 for x in eager],
            "steps_run": int(out["generated_ids"].shape[1]),
            "tokens": out["generated_ids"].tolist(),
            "lengths": out["lengths"].tolist(),
            "predict_ms_per_token": loop_ms / NEW_TOKENS,
        }
    return rows, details


def measure_preset(
    preset: str, vocab_size: int, eos_id: int, prompts: np.ndarray, seed: int, quick: bool
) -> tuple[list[Row], dict[str, Any]]:
    reps = REPEATS["quick" if quick else "full"]
    log(f"build untrained {preset}-preset models (vocab {vocab_size:,}) and export them")
    models = Models(preset, vocab_size, eos_id, seed)
    root = OUT_DIR / NAME / preset
    export_all(models, root)
    rows: list[Row] = []
    details: dict[str, Any] = {
        "parameters": models.parameters,
        "multiply_adds_per_token": models.multiply_adds,
    }
    try:
        for kind in ("lstm", "gpt2"):
            kind_rows, kind_details = measure_kind(kind, preset, models, root, prompts, seed, reps)
            rows += kind_rows
            details.update(kind_details)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows, details


def run(data: Path = DEFAULT_DATA, *, quick: bool = False, seed: int = 7) -> BenchResult:
    ensure_project_importable()
    started = time.perf_counter()
    presets = ["tiny"] if quick else ["tiny", "small"]
    log(f"tokenizer (vocab {VOCAB_SIZE:,}) and prompts from {data / SAMPLE_20K}")
    tokenizer, prompts, eos_id = load_prompts(data, seed)
    rows: list[Row] = []
    details: dict[str, Any] = {}
    for preset in presets:
        preset_rows, details[preset] = measure_preset(
            preset, tokenizer.get_vocab_size(), eos_id, prompts, seed, quick
        )
        rows += preset_rows
    notes: list[str] = []
    for preset in presets:
        for key, value in details[preset].items():
            if not isinstance(value, dict) or "steps_run" not in value:
                continue
            if value["steps_run"] != NEW_TOKENS:
                notes.append(f"{key}: ours ran {value['steps_run']} steps, not {NEW_TOKENS}")
            if min(value["lengths"]) < NEW_TOKENS:
                notes.append(f"{key}: some rows sampled end-of-text early: {value['lengths']}")
            if key.startswith(XLA):
                notes.append(f"{key}: first call {value['first_call_ms']:,.0f} ms (XLA compiles)")
    notes.append(
        f"models: presets {', '.join(presets)}, random (untrained, seeded) weights; prompts of"
        f" {PROMPT_TOKENS} tokens from held-out tweets; {NEW_TOKENS} new tokens, top-k {TOP_K},"
        f" temperature {TEMPERATURE}; medians after warm-up"
    )
    arithmetic = "; ".join(
        f"{LABELS[kind]} "
        + ", ".join(
            f"{preset} {details[preset]['multiply_adds_per_token'][kind]:,}" for preset in presets
        )
        for kind in SERVED
    )
    notes.append(
        f"multiply-adds per generated token and row in the models' matrices: {arithmetic}. The"
        f" goal is on each model's default module at the {GOAL_PRESET} preset (make demo's); a"
        " larger model's ratio is bounded by its own arithmetic on one core"
    )
    notes.append(
        "notebook loop: LSTM = the same layers with the head on the last step (the notebook's"
        " Sequential shape), GPT-2 = TFGPT2LMHeadModel.predict (all positions, no cache)"
    )
    notes.append(
        f"GPT-2 = the library's default module (static key/value cache, no XLA: what the SageMaker"
        f" TensorFlow Serving container can run); {LABELS[XLA]} = its jit_compile=True export"
        f" option (TensorFlow Serving runs it only with --xla_cpu_compilation_enabled);"
        f" {LABELS[GROWING]} = static_cache=False (transformers' layers at every step, the module"
        f" before the static cache)"
    )
    notes.append(
        f"{LABELS[LSTM_GROUPS]} and {LABELS[GPT2_GROUPS]} = the row_groups={ROW_GROUPS} export"
        " option (tweetgen train --row-groups): the rows of a request decoded as groups, each in"
        " a loop of its own, side by side on the inter-op pool, so served with one (intra-op"
        f" {INTER_OP_POOL[0]}, inter-op {INTER_OP_POOL[1]}); at batch 1, one loop as by default."
        " It costs requests that arrive together more CPU: see serving_threads"
    )
    intra, inter = stack_thread_pools()
    notes.append(
        "ours: each module served by a process of its own (a request is a call there and back"
        " over a pipe), with the thread pools that the stack gives every model (intra-op"
        f" {intra}, inter-op {inter}: template.yaml's InferenceIntraOpThreads and"
        f" InferenceInterOpThreads; inter-op -1 runs each request on the thread that called"
        f" the session); [{SETTINGS[TF_POOLS]}]: the same process started with 0 and 0"
        " (TensorFlow sizes both pools by the cores)"
    )
    for preset in presets:
        for batch in BATCHES:
            for kind in SERVED:
                served = details[preset]
                reference = served[f"{kind}-{preset}-batch{batch}"]
                differ = [
                    label(side)
                    for side in [*SERVED[kind][1:], kind + TF_POOLS]
                    if any(
                        served[f"{side}-{preset}-batch{batch}"][key] != reference[key]
                        for key in ("tokens", "lengths")
                    )
                ]
                if differ:
                    notes.append(
                        f"{LABELS[kind]} {preset} batch {batch}: other tokens than the default"
                        f" module's from {', '.join(differ)}"
                    )
    return BenchResult(
        name=NAME,
        title="In-graph generation vs the notebook's predict-per-token loop",
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
