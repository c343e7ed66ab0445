"""Both tiny models: training output, export, reload, and the in-graph generation contract."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

MODELS = ("lstm", "gpt2")
# (intra-op, inter-op) threads: TensorFlow's own pools, the stack's default, one inter-op thread
# alone, one thread each.
SETTINGS = ((0, 0), (1, 0), (0, 1), (1, 1))
# In a fresh process's script: the names of its threads (TensorFlow's inter-op pool's are
# "tf_Compute").
THREAD_NAMES = (
    'names = [open(f"/proc/self/task/{task}/comm").read().strip()'
    ' for task in os.listdir("/proc/self/task")]'
)


def _load(unpacked: dict[str, Path], model: str) -> Any:
    return tf.saved_model.load(str(unpacked[model] / "model" / "1"))


def _left_padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The rows left-padded with id 0 to the longest, and their attention mask."""
    width = max(len(r) for r in rows)
    ids = np.array([[0] * (width - len(r)) + r for r in rows], np.int32)
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], np.int32)
    return ids, mask


def _generate(
    loaded: Any, rows: list[list[int]], *, new: int, temperature: float, seed: int, top_k: int = 40
) -> list[list[int]]:
    """Left-pad the rows and call the serving signature; return each row's tokens."""
    ids, mask = _left_padded(rows)
    out = loaded.signatures["serving_default"](
        input_ids=tf.constant(ids),
        attention_mask=tf.constant(mask),
        max_new_tokens=tf.constant(new),
        temperature=tf.constant(temperature),
        top_k=tf.constant(top_k),
        seed=tf.constant(seed, tf.int64),
    )
    return [
        row[:n].tolist()
        for row, n in zip(out["generated_ids"].numpy(), out["lengths"].numpy(), strict=True)
    ]


def _run_fresh(script: str) -> dict[str, Any]:
    """Run a script in a fresh process with only TensorFlow's own modules; its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _prompts(tokenizer_path: Path) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    texts = ["i love my", "today is the best day of", "ugh", "<user> thanks for the"]
    return [[0, *tok.encode(t).ids] for t in texts]


def test_metadata_is_read_from_the_archive_root_only(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    from tweetgen_build.packaging import read_metadata

    with tarfile.open(tiny_run["lstm"], "r:gz") as tar:
        (member,) = [m for m in tar if m.name.removeprefix("./") == "metadata.json"]
        content = tar.extractfile(member).read()  # type: ignore[union-attr]
    outside = tmp_path / "outside.tar.gz"
    with tarfile.open(outside, "w:gz") as tar:
        info = tarfile.TarInfo("../metadata.json")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    with pytest.raises(FileNotFoundError, match=r"no metadata\.json"):
        read_metadata(outside)
    assert read_metadata(tiny_run["lstm"]).kind == "lstm"


def test_training_writes_metrics_curve_and_shared_fingerprints(tiny_run: dict[str, Path]) -> None:
    from tweetgen_build.packaging import read_metadata

    metas = {m: read_metadata(tiny_run[m]) for m in MODELS}
    for model in MODELS:
        report = json.loads((tiny_run[model].parent / "metrics.json").read_text())
        metrics = report["metrics"]
        # Trained for real: better than uniform over the 800-token vocabulary.
        assert 1.0 < metrics["test_perplexity"] < 800
        assert metrics["ngram_perplexity"] > 1.0
        assert 0.0 < metrics["distinct_1"] <= 1.0
        assert len(report["history"]["val_loss"]) >= 1
        curve = tiny_run[model].parent / "training_curve.png"
        assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert metas[model].kind == model and metas[model].variant == model
        assert metas[model].metrics["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    # One tokenizer and one data split for both models: their perplexities compare.
    assert metas["lstm"].tokenizer.sha256 == metas["gpt2"].tokenizer.sha256
    assert metas["lstm"].data.sha256 == metas["gpt2"].data.sha256


def test_artifacts_pass_the_rollout_validation(tiny_run: dict[str, Path]) -> None:
    from tweetgen.domain.artifact import validate_artifact

    for model in MODELS:
        with open(tiny_run[model], "rb") as handle:
            report = validate_artifact(handle, expected_variant=model)
        assert report.ok, report.problems
        with open(tiny_run[model], "rb") as handle:
            wrong = validate_artifact(handle, expected_variant="other")
        assert not wrong.ok


@pytest.mark.parametrize("model", MODELS)
def test_greedy_generation_equals_stepwise_argmax_of_the_full_model(
    unpacked: dict[str, Path], tiny_run: dict[str, Path], model: str
) -> None:
    loaded = _load(unpacked, model)
    for prompt in _prompts(tiny_run["tokenizer"])[:2]:
        [generated] = _generate(loaded, [prompt], new=12, temperature=0.0, seed=0)
        sequence = list(prompt)
        expected: list[int] = []
        for _ in range(12):  # one full forward pass per token, the slow way
            logits = loaded.signatures["next_token_logits"](
                input_ids=tf.constant([sequence]),
                attention_mask=tf.ones([1, len(sequence)], tf.int32),
            )["logits"].numpy()[0]
            token = int(logits.argmax())
            if token == 0:
                break
            expected.append(token)
            sequence.append(token)
        assert generated == expected


@pytest.mark.parametrize("model", MODELS)
def test_seeded_sampling_is_reproducible_and_seeds_differ(
    unpacked: dict[str, Path], model: str
) -> None:
    loaded = _load(unpacked, model)
    prompt = [[0]]
    first = _generate(loaded, prompt * 4, new=16, temperature=1.5, seed=11, top_k=0)
    again = _generate(loaded, prompt * 4, new=16, temperature=1.5, seed=11, top_k=0)
    other = _generate(loaded, prompt * 4, new=16, temperature=1.5, seed=12, top_k=0)
    assert first == again
    assert first != other
    # Rows of one request draw different samples even for the same prompt.
    assert len({tuple(r) for r in first}) > 1


@pytest.mark.parametrize("model", MODELS)
def test_left_padded_batch_rows_equal_each_prompt_alone(
    unpacked: dict[str, Path], tiny_run: dict[str, Path], model: str
) -> None:
    loaded = _load(unpacked, model)
    prompts = _prompts(tiny_run["tokenizer"])
    assert len({len(p) for p in prompts}) > 1  # really mixed lengths
    greedy = _generate(loaded, prompts, new=10, temperature=0.0, seed=0)
    sampled = _generate(loaded, prompts, new=10, temperature=1.0, seed=100)
    for i, prompt in enumerate(prompts):
        assert greedy[i] == _generate(loaded, [prompt], new=10, temperature=0.0, seed=0)[0]
        # Row i of a batch is sampled with seed + i.
        assert sampled[i] == _generate(loaded, [prompt], new=10, temperature=1.0, seed=100 + i)[0]


def test_gpt2_never_generates_past_its_position_table(unpacked: dict[str, Path]) -> None:
    loaded = _load(unpacked, "gpt2")
    context = json.loads((unpacked["gpt2"] / "metadata.json").read_text())["generation"][
        "max_context"
    ]
    prompt = [[0] + [5] * (context - 4)]
    out = _generate(loaded, prompt, new=50, temperature=0.0, seed=0)
    assert len(out[0]) <= 3


@pytest.mark.parametrize("model", MODELS)
def test_saved_model_reloads_in_a_fresh_process_with_tensorflow_only(
    unpacked: dict[str, Path], tiny_run: dict[str, Path], model: str
) -> None:
    prompt = _prompts(tiny_run["tokenizer"])[0]
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        loaded = tf.saved_model.load({str(unpacked[model] / "model" / "1")!r})
        out = loaded.signatures["serving_default"](
            input_ids=tf.constant([{prompt!r}]), attention_mask=tf.ones([1, {len(prompt)}], tf.int32),
            max_new_tokens=tf.constant(8), temperature=tf.constant(0.0), top_k=tf.constant(40),
            seed=tf.constant(0, tf.int64))
        n = int(out["lengths"][0])
        print(json.dumps({{"ids": out["generated_ids"].numpy()[0][:n].tolist(),
            "foreign": [m for m in ("transformers", "tf_keras") if m in sys.modules]}}))
        """
    )
    result = _run_fresh(script)
    assert result["foreign"] == []
    assert (
        result["ids"]
        == _generate(_load(unpacked, model), [prompt], new=8, temperature=0.0, seed=0)[0]
    )


@pytest.mark.parametrize("model", MODELS)
def test_saved_model_serves_from_a_session_as_tensorflow_serving_loads_it(
    unpacked: dict[str, Path], tiny_run: dict[str, Path], model: str
) -> None:
    """TensorFlow Serving does not rebuild the Python objects: it imports the MetaGraph into a
    session, runs the restore op on ``variables/`` and feeds the signature's tensors by name.
    The TF1 loader does the same; a signature that reads a variable the restore op did not fill
    fails there ("Could not find variable ...") while ``tf.saved_model.load`` works."""
    prompt = _prompts(tiny_run["tokenizer"])[1]
    script = textwrap.dedent(
        f"""
        import json
        import numpy as np
        import tensorflow as tf
        tf1 = tf.compat.v1
        tf1.disable_eager_execution()
        session = tf1.Session()
        meta = tf1.saved_model.loader.load(session, ["serve"], {str(unpacked[model] / "model" / "1")!r})

        def run(name, **inputs):
            signature = meta.signature_def[name]
            feed = {{signature.inputs[k].name: v for k, v in inputs.items()}}
            return session.run({{k: v.name for k, v in signature.outputs.items()}}, feed)

        ids = np.array([{prompt!r}], np.int32)
        out = run("serving_default", input_ids=ids, attention_mask=np.ones_like(ids),
                  max_new_tokens=np.int32(8), temperature=np.float32(0.0), top_k=np.int32(40),
                  seed=np.int64(0))
        scored = run("score", input_ids=ids, attention_mask=np.ones_like(ids))
        n = int(out["lengths"][0])
        print(json.dumps({{"ids": out["generated_ids"][0][:n].tolist(),
                           "log_probs": scored["token_log_probs"][0].tolist()}}))
        """
    )
    result = _run_fresh(script)
    loaded = _load(unpacked, model)
    assert result["ids"] == _generate(loaded, [prompt], new=8, temperature=0.0, seed=0)[0]
    expected = loaded.signatures["score"](
        input_ids=tf.constant([prompt]), attention_mask=tf.ones([1, len(prompt)], tf.int32)
    )["token_log_probs"].numpy()[0]
    np.testing.assert_allclose(result["log_probs"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every setting is one thread")
def test_each_thread_pool_setting_serves_the_same_tokens_and_sizes_its_own_pool(
    unpacked: dict[str, Path], tiny_run: dict[str, Path]
) -> None:
    """``intra_op_threads`` and ``inter_op_threads`` are the model server's thread settings
    (the stack's InferenceIntraOpThreads and InferenceInterOpThreads).

    A process's thread pools are those of its first session (or eager context), so each
    setting is loaded in a fresh process, first thing, and counts the threads it then has;
    both models are served there (the second session gets the first one's pools).
    TensorFlow names its inter-op pool's threads ``tf_Compute``: one inter-op thread leaves one
    of them, whatever the intra-op setting; one intra-op thread takes a thread off the others.
    """
    rows = _prompts(tiny_run["tokenizer"])[:2]
    width = max(len(row) for row in rows)
    ids = [[0] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    directories = {model: str(unpacked[model] / "model" / "1") for model in MODELS}
    served = {}
    for intra, inter in SETTINGS:
        served[intra, inter] = _run_fresh(
            textwrap.dedent(
                f"""
                import json, os
                from pathlib import Path
                import numpy as np
                from tweetgen_build.packaging import SessionSavedModel
                tokens = {{}}
                for model, directory in {directories!r}.items():
                    loaded = SessionSavedModel(
                        Path(directory), intra_op_threads={intra}, inter_op_threads={inter})
                    out = loaded.run("serving_default", {{
                        "input_ids": np.array({ids!r}, np.int32),
                        "attention_mask": np.array({mask!r}, np.int32),
                        "max_new_tokens": np.int32(8), "temperature": np.float32(0.8),
                        "top_k": np.int32(40), "seed": np.int64(5)}})
                    tokens[model] = [
                        row[:n].tolist() for row, n in zip(out["generated_ids"], out["lengths"])]
                {THREAD_NAMES}
                print(json.dumps({{
                    "tokens": tokens,
                    "inter": names.count("tf_Compute"),
                    "other": len(names) - names.count("tf_Compute")}}))
                """
            )
        )
    for model in MODELS:
        expected = _generate(_load(unpacked, model), rows, new=8, temperature=0.8, seed=5)
        tokens = [served[setting]["tokens"][model] for setting in SETTINGS]
        assert tokens == [expected] * len(SETTINGS), model
    pool = {setting: served[setting]["inter"] for setting in SETTINGS}
    rest = {setting: served[setting]["other"] for setting in SETTINGS}
    assert pool[0, 0] == pool[1, 0] > pool[0, 1] == pool[1, 1] == 1
    assert rest[0, 0] == rest[0, 1] > rest[1, 0] == rest[1, 1]


def test_an_inter_op_setting_of_minus_one_runs_each_request_on_its_callers_thread(
    tmp_path: Path,
) -> None:
    """The stack's InferenceInterOpThreads of -1: a session loaded as TensorFlow Serving loads
    it runs a request's operations on the thread that called it (two callers at once, each on
    its own), where 0 hands them to the inter-op pool. An operation of the signature reports
    the thread it runs on. Both sessions in one process: -1 is each session's own setting."""
    served = _run_fresh(
        textwrap.dedent(
            f"""
            import json, threading
            from pathlib import Path
            import numpy as np
            import tensorflow as tf
            from tweetgen_build.packaging import SessionSavedModel

            def thread_id(x):
                return np.int64(threading.get_native_id())

            class Probe(tf.Module):
                @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="x")])
                def where(self, x):
                    return {{"thread": tf.numpy_function(thread_id, [x], tf.int64)}}

            probe = Probe()
            directory = Path({str(tmp_path / "probe")!r})
            tf.saved_model.save(probe, str(directory), signatures=probe.where)
            seen = {{}}
            for inter in (-1, 0):
                served = SessionSavedModel(directory, intra_op_threads=1, inter_op_threads=inter)
                seen[inter] = []

                def call():
                    out = served.run("serving_default", {{"x": np.int64(0)}})
                    seen[inter].append(threading.get_native_id() == int(out["thread"]))

                callers = [threading.Thread(target=call) for _ in range(2)]
                for caller in callers:
                    caller.start()
                for caller in callers:
                    caller.join()
            print(json.dumps({{"on_caller": [seen[-1], seen[0]]}}))
            """
        )
    )
    assert served["on_caller"] == [[True, True], [False, False]]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every setting is one thread")
def test_the_local_endpoint_serves_a_model_with_its_containers_thread_pools(
    unpacked: dict[str, Path],
) -> None:
    """The local stack reads a model's SAGEMAKER_TFS_*_OP_PARALLELISM as the container does; in
    a process whose first TensorFlow work is that model (``tweetgen local up``'s), its pools
    are the model server's."""
    root = unpacked["lstm"]
    counted = {}
    for environment in ({}, {"SAGEMAKER_TFS_INTER_OP_PARALLELISM": "1"}):
        counted[len(environment)] = _run_fresh(
            textwrap.dedent(
                f"""
                import json, os
                from pathlib import Path
                from tweetgen_local.hosting import ServedModel, ThreadPools
                served = ServedModel(
                    Path({str(root)!r}), threads=ThreadPools.from_environment({environment!r}))
                answer = served.invoke(json.dumps({{"inputs": "i love",
                                                  "parameters": {{"max_new_tokens": 4}}}}).encode())
                {THREAD_NAMES}
                print(json.dumps({{"status": answer.status, "inter": names.count("tf_Compute")}}))
                """
            )
        )
    assert counted[0]["status"] == counted[1]["status"] == 200
    assert counted[0]["inter"] > counted[1]["inter"] == 1


def test_the_build_checks_an_export_as_tensorflow_serving_runs_it(
    unpacked: dict[str, Path], tmp_path: Path
) -> None:
    import keras
    from tweetgen_build.errors import ServingMismatch
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm
    from tweetgen_build.packaging import check_served_generation, export_saved_model

    for model in MODELS:
        tokens = check_served_generation(unpacked[model] / "model" / "1", [0])
        expected = _generate(_load(unpacked, model), [[0]], new=8, temperature=0.0, seed=0)[0]
        assert tokens == expected

    class TrackingTheKerasModel(LSTMServing):
        """The LSTM module as it was: the Keras 3 model tracked, not its tf.Variables."""

        def __init__(self, model: Any) -> None:
            super().__init__(model, eos_id=0)
            del self.weights
            self.keras_model = model

    keras.utils.set_random_seed(3)
    lstm = build_lstm(LSTMConfig(vocab_size=50, embedding_dim=8, units=8, num_layers=1))
    export_saved_model(TrackingTheKerasModel(lstm), tmp_path / "old")
    with pytest.raises(
        ServingMismatch,
        match=r"does not run as TensorFlow Serving loads it .*: Could not find variable",
    ):
        check_served_generation(tmp_path / "old", [0])
    export_saved_model(LSTMServing(lstm, eos_id=0), tmp_path / "new")
    assert len(check_served_generation(tmp_path / "new", [0])) <= 8


@pytest.fixture(scope="module")
def random_gpt2() -> Any:
    """A small random GPT-2 (no training): the decoding paths must agree on any weights.

    A new model's layer norms are the identity (scale 1, offset 0) and its biases 0, which a
    decoding step that dropped or misplaced any of them would still match: all of them get
    random values here.
    """
    import keras
    from tweetgen_build.gpt2 import GPT2Settings, build_gpt2

    keras.utils.set_random_seed(5)
    settings = GPT2Settings(
        vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2, dropout=0.0
    )
    return _randomised(build_gpt2(settings))


def _randomised(model: Any) -> Any:
    """``model`` with random layer norm scales and offsets and random biases (seeded)."""
    rng = np.random.default_rng(5)
    for weight in model.weights:
        name = weight.name.split("/")[-1]
        if name.startswith("gamma"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
        elif name.startswith(("beta", "bias")):
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
    return model


def _module_output(
    module: Any, rows: list[list[int]], *, new: int, temperature: float, seed: int
) -> dict[str, Any]:
    """``module.generate`` on the rows left-padded: its ids and lengths as lists."""
    ids, mask = _left_padded(rows)
    out = module.generate(
        tf.constant(ids),
        tf.constant(mask),
        tf.constant(new),
        tf.constant(temperature),
        tf.constant(40),
        tf.constant(seed, tf.int64),
    )
    return {key: value.numpy().tolist() for key, value in out.items()}


def _module_generate(
    module: Any, rows: list[list[int]], *, new: int, temperature: float, seed: int
) -> list[list[int]]:
    """Each row's tokens before end-of-text."""
    out = _module_output(module, rows, new=new, temperature=temperature, seed=seed)
    return [row[:n] for row, n in zip(out["generated_ids"], out["lengths"], strict=True)]


@pytest.mark.parametrize("bucket", [1, 4, 64])
def test_gpt2_static_cache_equals_the_growing_cache_across_bucket_sizes(
    random_gpt2: Any, bucket: int
) -> None:
    from tweetgen_build.gpt2 import GPT2Serving

    growing = GPT2Serving(random_gpt2, eos_id=0, static_cache=False)
    static = GPT2Serving(random_gpt2, eos_id=0, cache_bucket=bucket)
    prompts = [[0, 5, 17, 250, 3], [0, 9], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    # Prompt + new tokens below, at, and past a bucket boundary, and past the position table
    # (32 positions: the budget is cut to what fits).
    for new in (1, 5, 13, 40):
        for temperature, seed in ((0.0, 0), (1.0, 21)):
            expected = _module_generate(
                growing, prompts, new=new, temperature=temperature, seed=seed
            )
            got = _module_generate(static, prompts, new=new, temperature=temperature, seed=seed)
            assert got == expected, (bucket, new, temperature)


def test_gpt2_prompt_pass_equals_transformers_layers(random_gpt2: Any) -> None:
    """The static cache's hand-written pass over the prompt gives transformers' last hidden
    state and, at every position that is not padding, its keys and values."""
    from tweetgen_build.generation import left_pad_positions
    from tweetgen_build.gpt2 import GPT2Serving

    module = GPT2Serving(random_gpt2, eos_id=0)
    ids, mask = _left_padded([[0, 5, 17, 250, 3], [0, 9], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    ids, mask = tf.constant(ids), tf.constant(mask)
    positions = left_pad_positions(mask)
    decoding = module._decoding(mask, tf.shape(ids)[1])
    hidden, keys, values = module._prompt_pass(ids, mask, positions, decoding)
    expected_hidden, past = module._forward(ids, mask, positions, None)
    np.testing.assert_allclose(hidden, expected_hidden[:, -1, :], rtol=1e-4, atol=1e-4)
    real = mask.numpy().T.astype(bool)  # [positions, batch], as the slot-major cache
    assert len(keys) == len(values) == len(past) == 2
    for key, value, (expected_key, expected_value) in zip(keys, values, past, strict=True):
        for got, expected in ((key, expected_key), (value, expected_value)):
            expected = tf.transpose(expected, [2, 0, 1, 3]).numpy()  # [positions, batch, ...]
            assert got.shape == expected.shape
            np.testing.assert_allclose(got.numpy()[real], expected[real], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_fast"])
def test_gpt2_static_cache_uses_the_checkpoints_activation(activation: str) -> None:
    """A checkpoint loaded with --init-from may use another activation than GPT-2's tanh
    GELU ("gelu_new"): the hand-written decoding step computes the model's own."""
    import keras
    from transformers import GPT2Config, TFGPT2LMHeadModel
    from tweetgen_build.gpt2 import GPT2Serving

    keras.utils.set_random_seed(9)
    config = GPT2Config(
        vocab_size=300,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function=activation,
    )
    model = TFGPT2LMHeadModel(config)
    model(tf.zeros([1, 2], tf.int32))
    model = _randomised(model)
    growing = GPT2Serving(model, eos_id=0, static_cache=False)
    static = GPT2Serving(model, eos_id=0)
    prompts = [[0, 5, 17, 250, 3], [0, 9]]
    for temperature, seed in ((0.0, 0), (1.0, 3)):
        expected = _module_generate(growing, prompts, new=12, temperature=temperature, seed=seed)
        got = _module_generate(static, prompts, new=12, temperature=temperature, seed=seed)
        assert got == expected, (activation, temperature)


def test_gpt2_cache_written_in_place_belongs_to_its_request(
    random_gpt2: Any, tmp_path: Path
) -> None:
    """The static cache's rows are written into its own buffer (InplaceUpdate aliases its
    input): requests served one after another, and two at a time, in a session as TensorFlow
    Serving runs them, each get exactly what they get alone."""
    from concurrent.futures import ThreadPoolExecutor

    from tweetgen_build.gpt2 import GPT2Serving
    from tweetgen_build.packaging import SessionSavedModel, export_saved_model

    export_saved_model(GPT2Serving(random_gpt2, eos_id=0), tmp_path / "gpt2")
    served = SessionSavedModel(tmp_path / "gpt2", intra_op_threads=1, inter_op_threads=2)
    requests = [
        ([[0, 5, 17, 250, 3], [0, 9]], 0.0, 0),
        ([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], 1.0, 21),
        ([[0, 9], [0, 7, 7], [0, 1, 2, 3]], 1.0, 5),
    ]

    def answer(request: tuple[list[list[int]], float, int]) -> list[list[int]]:
        rows, temperature, seed = request
        ids, mask = _left_padded(rows)
        out = served.run(
            "serving_default",
            {
                "input_ids": ids,
                "attention_mask": mask,
                "max_new_tokens": np.int32(12),
                "temperature": np.float32(temperature),
                "top_k": np.int32(40),
                "seed": np.int64(seed),
            },
        )
        generated, lengths = out["generated_ids"].tolist(), out["lengths"].tolist()
        return [row[:n] for row, n in zip(generated, lengths, strict=True)]

    module = GPT2Serving(random_gpt2, eos_id=0, static_cache=False)
    alone = [
        _module_generate(module, rows, new=12, temperature=temperature, seed=seed)
        for rows, temperature, seed in requests
    ]
    assert [answer(request) for request in requests] == alone
    assert [answer(request) for request in reversed(requests)] == alone[::-1]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(4):
            assert list(pool.map(answer, requests * 2)) == alone * 2


def test_gpt2_layer_norms_fold_into_the_linear_layers_that_read_them() -> None:
    from tweetgen_build.gpt2 import _folded, _layer_norm, _normalize

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(2.0, 3.0, (5, 16)).astype(np.float32))
    norm = (
        tf.constant(rng.uniform(0.5, 1.5, 16).astype(np.float32)),
        tf.constant(rng.normal(0.0, 0.5, 16).astype(np.float32)),
    )
    linear = (
        tf.constant(rng.normal(0.0, 0.3, (16, 12)).astype(np.float32)),
        tf.constant(rng.normal(0.0, 0.5, 12).astype(np.float32)),
    )
    expected = tf.matmul(_layer_norm(x, norm, 1e-5), linear[0]) + linear[1]
    kernel, bias = _folded(norm, linear)
    np.testing.assert_allclose(
        tf.matmul(_normalize(x, 1e-5), kernel) + bias, expected, rtol=1e-5, atol=1e-5
    )
    # Scaled columns: the attention's 1 / sqrt(head_dim) on its queries only.
    columns = tf.constant([0.25] * 4 + [1.0] * 8)
    kernel, bias = _folded(norm, linear, columns)
    np.testing.assert_allclose(
        tf.matmul(_normalize(x, 1e-5), kernel) + bias, expected * columns, rtol=1e-5, atol=1e-5
    )


def test_gpt2_decoding_gelu_is_the_tanh_gelu() -> None:
    from tweetgen_build.gpt2 import _gelu

    x = tf.constant(np.linspace(-30.0, 30.0, 2001, dtype=np.float32))
    np.testing.assert_allclose(_gelu(x), tf.nn.gelu(x, approximate=True), rtol=1e-5, atol=1e-6)


def test_gpt2_xla_decoding_step_gives_the_same_tokens(random_gpt2: Any) -> None:
    from tweetgen_build.gpt2 import GPT2Serving

    plain = GPT2Serving(random_gpt2, eos_id=0, cache_bucket=8)
    xla = GPT2Serving(random_gpt2, eos_id=0, cache_bucket=8, jit_compile=True)
    prompts = [[0, 5, 17, 250, 3], [0, 9]]
    for new in (3, 12):  # two cache lengths: 8 and 24 slots
        assert _module_generate(xla, prompts, new=new, temperature=0.0, seed=0) == (
            _module_generate(plain, prompts, new=new, temperature=0.0, seed=0)
        )


def test_the_rollout_refuses_an_xla_export_and_accepts_the_default_one(
    random_gpt2: Any, tmp_path: Path
) -> None:
    import io

    from tweetgen.domain.artifact import validate_artifact
    from tweetgen_build.gpt2 import GPT2Serving
    from tweetgen_build.packaging import export_saved_model

    from tests.unit.test_artifact import artifact_bytes, good_files

    for jit_compile in (True, False):
        directory = tmp_path / f"jit-{jit_compile}"
        export_saved_model(GPT2Serving(random_gpt2, eos_id=0, jit_compile=jit_compile), directory)
        graph = (directory / "saved_model.pb").read_bytes()
        archive = artifact_bytes(good_files(**{"model/1/saved_model.pb": graph}))
        report = validate_artifact(io.BytesIO(archive))
        assert report.ok is not jit_compile, report.problems
        assert validate_artifact(io.BytesIO(archive), allow_xla=True).ok


@pytest.mark.parametrize("model", ["lstm", "gpt2"])
def test_generation_samples_only_ids_of_the_vocabulary(random_gpt2: Any, model: str) -> None:
    """Both heads are widened to the sampler's blocks (vocabularies of 50 and 300 here)."""
    import keras
    from tweetgen_build.gpt2 import GPT2Serving
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm

    if model == "lstm":
        keras.utils.set_random_seed(4)
        module: Any = LSTMServing(build_lstm(LSTMConfig(vocab_size=50, embedding_dim=8, units=8)))
        vocab = 50
    else:
        module, vocab = GPT2Serving(random_gpt2, eos_id=0), 300
    ids = tf.constant([[0, 0, 3, 7], [1, 2, 3, 4]], tf.int32)
    mask = tf.constant([[0, 0, 1, 1], [1, 1, 1, 1]], tf.int32)
    for top_k in (0, 10_000):  # the whole vocabulary, two ways
        for seed in range(5):
            out = module.generate(
                ids,
                mask,
                tf.constant(20),
                tf.constant(3.0),
                tf.constant(top_k),
                tf.constant(seed, tf.int64),
            )
            assert int(tf.reduce_max(out["generated_ids"])) < vocab


@pytest.mark.parametrize(("vocab", "copies"), [(64, 0), (50, 1)])
def test_a_vocabulary_of_whole_blocks_samples_from_the_head_as_it_is(
    vocab: int, copies: int
) -> None:
    """The default vocabulary (8,000 = 500 blocks of 16) costs no widened copy per request."""
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm

    module = LSTMServing(build_lstm(LSTMConfig(vocab_size=vocab, embedding_dim=8, units=8)))
    graph = module.generate.get_concrete_function().graph
    kernel_pads = [
        op
        for op in graph.get_operations()
        if op.type in ("Pad", "PadV2")
        and op.outputs[0].shape.rank == 2
        and op.outputs[0].shape[0] == 8
    ]
    assert len(kernel_pads) == copies


def test_a_gpt2_vocabulary_of_whole_blocks_adds_no_bias_to_its_logits() -> None:
    """The tied table has no bias: only a widened head (300 ids) gets one, -inf past them, as
    rows of the batch (a bias [width] would be fused into the product, which runs slower)."""
    import keras
    from tweetgen_build.generation import Head
    from tweetgen_build.gpt2 import GPT2Serving, GPT2Settings, build_gpt2

    for vocab, biases in ((320, []), (300, [[3, 304]])):
        keras.utils.set_random_seed(5)
        model = build_gpt2(
            GPT2Settings(vocab_size=vocab, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        )
        head = GPT2Serving(model, eos_id=0)._sampling_head(tf.constant(3))
        assert isinstance(head, Head)
        assert [bias.shape.as_list() for bias in head.bias] == biases


def test_gpt2_tables_above_the_limit_decode_unwidened_to_the_same_tokens(
    random_gpt2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tweetgen_build import gpt2

    widened = gpt2.GPT2Serving(random_gpt2, eos_id=0)
    monkeypatch.setattr(gpt2, "WIDEN_MAX_ELEMENTS", 0)
    plain = gpt2.GPT2Serving(random_gpt2, eos_id=0)
    assert widened.widen_head and not plain.widen_head
    for rows in ([[0, 5, 17, 250, 3]], [[0, 5, 17, 250, 3], [0, 9]]):  # batch 1 and 2
        for temperature, seed in ((0.0, 0), (1.0, 21)):
            assert _module_generate(plain, rows, new=12, temperature=temperature, seed=seed) == (
                _module_generate(widened, rows, new=12, temperature=temperature, seed=seed)
            )


@pytest.mark.parametrize("vocab", [300, 320])
def test_gpt2_decoding_logits_have_their_width_when_the_graph_is_built(vocab: int) -> None:
    """The sampler's blocks come from the logits' static width: an unknown one made it pad the
    logits and compute its shapes at every generated token. Both kinds of head: one widened to
    whole blocks (300 ids) and one already of whole blocks (320, as the default 8,000)."""
    from tweetgen_build.generation import block_width
    from tweetgen_build.gpt2 import GPT2Serving, GPT2Settings, build_gpt2

    settings = GPT2Settings(vocab_size=vocab, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    module = GPT2Serving(build_gpt2(settings), eos_id=0)
    widths = []

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2)
    def decode(ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        logits, cache = module.generation_prefill(ids, mask, tf.constant(4))
        next_logits, _ = module.step(tf.zeros_like(ids[:, 0]), cache)
        widths.extend([logits.shape[-1], next_logits.shape[-1]])
        return next_logits

    decode.get_concrete_function()
    assert widths == [block_width(vocab)] * 2


def test_an_lstm_head_in_parts_generates_the_same_tokens_as_the_whole_one(
    tmp_path: Path,
) -> None:
    """The head split along its input width into 2 or 3 parts (products side by side on the
    inter-op pool, summed) picks what the whole head picks: greedy and sampled, batch 1 and a
    left-padded batch of 2, a vocabulary widened to whole blocks (50 ids), random biases; and
    so it does exported, in a session as TensorFlow Serving runs it (with its pools)."""
    import keras
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm
    from tweetgen_build.packaging import check_served_generation, export_saved_model

    keras.utils.set_random_seed(4)
    lstm = _randomised(build_lstm(LSTMConfig(vocab_size=50, embedding_dim=8, units=8)))
    whole, *split = (LSTMServing(lstm, eos_id=0, head_parts=parts) for parts in (1, 2, 3))
    for rows in ([[0, 5, 17, 44, 3]], [[0, 5, 17, 44, 3], [0, 9]]):
        for temperature, seed in ((0.0, 0), (1.0, 21), (1.5, 3)):
            expected = _module_generate(whole, rows, new=12, temperature=temperature, seed=seed)
            for module in split:
                got = _module_generate(module, rows, new=12, temperature=temperature, seed=seed)
                assert got == expected, (module.head_parts, rows, temperature)
    export_saved_model(split[0], tmp_path / "split")
    prompt = [0, 5, 17, 44, 3]
    greedy = _module_generate(whole, [prompt], new=8, temperature=0.0, seed=0)[0]
    assert len(greedy) >= 4  # a few tokens before end-of-text, or this would prove little
    assert check_served_generation(tmp_path / "split", prompt)[: len(greedy)] == greedy


def test_the_lstm_head_is_whole_by_default_and_refuses_a_bad_count() -> None:
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm

    toy = build_lstm(LSTMConfig(vocab_size=50, embedding_dim=8, units=8))
    assert LSTMServing(toy).head_parts == 1
    assert LSTMServing(toy, head_parts=2).head_parts == 2
    with pytest.raises(ValueError, match="a head of input width 8 splits into 1 to 8 parts, not 9"):
        LSTMServing(toy, head_parts=9)


def _generate_batch(module: Any, rows: list[list[int]], temperature: float) -> dict[str, Any]:
    return _module_output(module, rows, new=12, temperature=temperature, seed=7)


@pytest.mark.parametrize("model", ["lstm", "gpt2"])
def test_rows_decoded_in_groups_get_the_tokens_of_one_loop(
    random_gpt2: Any, model: str, tmp_path: Path
) -> None:
    """A batch in 2 or 3 groups of rows (each its own loop) answers exactly what one loop
    answers: the same ids (rows that finish early padded with end-of-text to the same width)
    and lengths, greedy and sampled, for batches of 1 to 5 left-padded prompts (fewer rows
    than groups: one loop); and so it does exported, in a session as TensorFlow Serving runs
    it."""
    import keras
    from tweetgen_build.gpt2 import GPT2Serving
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm
    from tweetgen_build.packaging import SessionSavedModel, export_saved_model

    keras.utils.set_random_seed(4)
    lstm = _randomised(build_lstm(LSTMConfig(vocab_size=50, embedding_dim=8, units=8)))

    def serving(groups: int, eos_id: int) -> Any:
        if model == "gpt2":
            return GPT2Serving(random_gpt2, eos_id=eos_id, row_groups=groups)
        return LSTMServing(lstm, eos_id=eos_id, row_groups=groups)

    prompts = [[3, 5, 17, 44, 3], [9], [7, 8], [1, 2, 3, 4], [6, 6, 6]]
    # End-of-text is a token that row 1 samples third: it stops early, the others go on.
    eos = _generate_batch(serving(1, 0), prompts, 1.0)["generated_ids"][1][2]
    whole = serving(1, eos)
    for groups in (2, 3):
        grouped = serving(groups, eos)
        assert grouped.row_groups == groups
        for size in (1, 2, 3, 5):
            for temperature in (0.0, 1.0):
                expected = _generate_batch(whole, prompts[:size], temperature)
                got = _generate_batch(grouped, prompts[:size], temperature)
                assert got == expected, (groups, size, temperature)
    assert min(_generate_batch(whole, prompts, 1.0)["lengths"]) < 12  # some row stopped early
    export_saved_model(serving(2, eos), tmp_path / "grouped")
    ids = np.array([[0, 0, 0, 0, 9], [3, 5, 17, 44, 3], [0, 0, 0, 7, 8]], np.int32)
    served = SessionSavedModel(tmp_path / "grouped", intra_op_threads=1).run(
        "serving_default",
        {
            "input_ids": ids,
            "attention_mask": (ids > 0).astype(np.int32),
            "max_new_tokens": np.int32(12),
            "temperature": np.float32(1.0),
            "top_k": np.int32(40),
            "seed": np.int64(7),
        },
    )
    expected = _generate_batch(whole, [[9], [3, 5, 17, 44, 3], [7, 8]], 1.0)
    assert served["generated_ids"].tolist() == expected["generated_ids"]
    assert served["lengths"].tolist() == expected["lengths"]


def test_the_build_gives_both_serving_modules_its_row_groups() -> None:
    from tweetgen_build.configs import GPT2Settings, LSTMConfig
    from tweetgen_build.pipeline import TrainOptions, build_model

    for model, settings in (
        ("lstm", LSTMConfig(vocab_size=50, embedding_dim=8, units=8)),
        ("gpt2", GPT2Settings(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)),
    ):
        for groups in (1, 3):
            options = TrainOptions(model=model, data=[], out=Path("o"), row_groups=groups)  # type: ignore[arg-type]
            _, serving, _, _ = build_model(options, settings, settings.vocab_size, 0)
            assert serving.row_groups == groups


def test_serving_modules_refuse_a_bad_number_of_row_groups(random_gpt2: Any) -> None:
    from tweetgen_build.gpt2 import GPT2Serving
    from tweetgen_build.lstm import LSTMConfig, LSTMServing, build_lstm

    lstm = build_lstm(LSTMConfig(vocab_size=50, embedding_dim=8, units=8))
    for groups in (0, 9, 2.0, True):
        with pytest.raises(
            ValueError, match=f"row_groups must be an integer from 1 to 8, not {groups!r}"
        ):
            LSTMServing(lstm, row_groups=groups)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="row_groups must be an integer from 1 to 8"):
            GPT2Serving(random_gpt2, row_groups=groups)  # type: ignore[arg-type]


def test_gpt2_cache_bucket_is_one_slot_without_xla(random_gpt2: Any) -> None:
    from tweetgen_build.gpt2 import CACHE_BUCKET, GPT2Serving

    assert GPT2Serving(random_gpt2).cache_bucket == 1
    assert GPT2Serving(random_gpt2, jit_compile=True).cache_bucket == CACHE_BUCKET
    assert GPT2Serving(random_gpt2, cache_bucket=8).cache_bucket == 8


def test_gpt2_serving_rejects_inconsistent_options(random_gpt2: Any) -> None:
    from tweetgen_build.gpt2 import GPT2Serving

    with pytest.raises(ValueError, match="static cache"):
        GPT2Serving(random_gpt2, static_cache=False, jit_compile=True)
    with pytest.raises(ValueError, match="cache_bucket"):
        GPT2Serving(random_gpt2, cache_bucket=0)


def test_a_gpt2_export_serves_its_tied_table_as_it_was_when_exported(tmp_path: Path) -> None:
    """``export_saved_model`` saves ``GPT2Serving.for_export()``: a module whose widened,
    transposed vocabulary head is a copy of the tied table taken at export. Weights changed
    after the module was built, as training changes them, are the ones the export serves (in a
    session, as TensorFlow Serving runs it); the module itself keeps reading the table. A
    vocabulary of 300 is no whole number of sampler blocks: the copy carries the -inf bias
    columns. Without a widened head (XLA, the growing cache) the export is the module itself."""
    import keras
    from tweetgen_build.gpt2 import GPT2Serving, GPT2Settings, build_gpt2
    from tweetgen_build.packaging import SessionSavedModel, export_saved_model

    keras.utils.set_random_seed(6)
    settings = GPT2Settings(
        vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2, dropout=0.0
    )
    model = _randomised(build_gpt2(settings))
    module = GPT2Serving(model, eos_id=0)
    rows = [[3, 5, 17, 44], [9]]
    before = _module_output(module, rows, new=10, temperature=1.0, seed=2)
    table = model.transformer.wte.embeddings
    table.assign(table * -1.5 + 0.1)
    after = _module_output(module, rows, new=10, temperature=1.0, seed=2)
    assert after != before

    exported = module.for_export()
    assert exported is not module and exported.for_export() is exported
    assert module._head_kernel is None and exported._head_kernel is not None
    copied = exported._head_kernel.numpy()
    assert copied.shape == (32, 304)
    np.testing.assert_array_equal(copied[:, :300], table.numpy().T)
    export_saved_model(module, tmp_path / "gpt2")
    ids, mask = _left_padded(rows)
    served = SessionSavedModel(tmp_path / "gpt2", intra_op_threads=1, inter_op_threads=-1).run(
        "serving_default",
        {
            "input_ids": ids,
            "attention_mask": mask,
            "max_new_tokens": np.int32(10),
            "temperature": np.float32(1.0),
            "top_k": np.int32(40),
            "seed": np.int64(2),
        },
    )
    assert served["generated_ids"].tolist() == after["generated_ids"]
    assert served["lengths"].tolist() == after["lengths"]
    for plain in (
        GPT2Serving(model, eos_id=0, jit_compile=True),
        GPT2Serving(model, eos_id=0, static_cache=False),
    ):
        assert plain.for_export() is plain
