"""The local host honours the SageMaker TensorFlow Serving container's contract.

In the spirit of the container's own tests: tiny SavedModels built here with ``tf.Module`` (no
training), artifacts laid out as ``model/1/`` + ``code/``, requests in every form the container
accepts, and the answers it gives, errors included.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf
from tweetgen_local.hosting import BatchingConfig, HandlerImportError, ServedModel, ThreadPools


def _save_half_plus(directory: Path, offset: float) -> None:
    class HalfPlus(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def __call__(self, x: Any) -> dict[str, Any]:
            return {"y": x / 2.0 + offset}

    module = HalfPlus()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})


def _save_scale(directory: Path) -> None:
    """Two inputs: a batch of rows and a scalar, the shape of tweetgen's generate signature."""

    class Scale(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.float32, name="x"),
                tf.TensorSpec([], tf.float32, name="factor"),
            ]
        )
        def __call__(self, x: Any, factor: Any) -> dict[str, Any]:
            return {"y": x * factor, "rows": tf.fill([tf.shape(x)[0]], tf.shape(x)[0])}

    module = Scale()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})


def _save_keras_module(directory: Path, *, track: str) -> None:
    """A Keras 3 layer served from a tf.Module, tracked as a layer or as its tf.Variables."""
    import keras

    layer = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones")
    layer.build((None, 2))

    class Served(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def __call__(self, x: Any) -> dict[str, Any]:
            return {"y": layer(x)[:, 0]}

    module = Served()
    if track == "layer":
        module.layer = layer
    else:
        module.weights = [weight.value for weight in layer.weights]
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved-models")
    _save_half_plus(root / "half_plus_three", 3.0)
    _save_scale(root / "scale")
    _save_keras_module(root / "keras_layer", track="layer")
    _save_keras_module(root / "keras_variables", track="variables")
    return {name: root / name for name in ("half_plus_three", "scale", *KERAS_MODELS)}


KERAS_MODELS = ("keras_layer", "keras_variables")
ArtifactFactory = Callable[..., Path]


@pytest.fixture
def make_artifact(saved_models: dict[str, Path], tmp_path: Path) -> ArtifactFactory:
    """Lay out an unpacked artifact: ``model/1/`` plus the given ``code/`` files."""
    counter = iter(range(1000))

    def make(model: str = "half_plus_three", code: dict[str, str] | None = None) -> Path:
        root = tmp_path / f"artifact-{next(counter)}"
        shutil.copytree(saved_models[model], root / "model" / "1")
        for relative, text in (code or {}).items():
            path = root / "code" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return make


Serve = Callable[..., ServedModel]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """ServedModel, closed after the test."""
    served: list[ServedModel] = []

    def make(root: Path, **kwargs: Any) -> ServedModel:
        served.append(ServedModel(root, **kwargs))
        return served[-1]

    yield make
    for model in served:
        model.close()


def _json(answer: Any) -> Any:
    return json.loads(answer.body)


# -- no inference.py: the container's own request handling ------------------------------------


def test_instances_form_gives_predictions(make_artifact: ArtifactFactory, serve: Serve) -> None:
    served = serve(make_artifact())
    answer = served.invoke(b'{"instances": [1.0, 2.0, 5.0]}')
    assert answer.status == 200 and answer.content_type == "application/json"
    assert _json(answer) == {"predictions": [3.5, 4.0, 5.5]}


def test_a_model_is_served_as_tensorflow_serving_loads_it(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    # Both SavedModels answer tf.saved_model.load; TensorFlow Serving (a session, the restore
    # op, tensors fed by name) cannot read a Keras 3 layer tracked as a layer: neither can we.
    for name in KERAS_MODELS:
        reloaded = tf.saved_model.load(str(make_artifact(name) / "model" / "1"))
        assert reloaded.signatures["serving_default"](x=tf.ones([1, 2]))["y"].numpy() == [3.0]
    tracked_layer = serve(make_artifact("keras_layer")).invoke(b'{"instances": [[1.0, 1.0]]}')
    assert tracked_layer.status == 400
    assert "Could not find variable" in _json(tracked_layer)["error"]
    tracked_variables = serve(make_artifact("keras_variables"))
    assert _json(tracked_variables.invoke(b'{"instances": [[1.0, 1.0]]}')) == {"predictions": [3.0]}


def test_inputs_form_gives_outputs(make_artifact: ArtifactFactory, serve: Serve) -> None:
    served = serve(make_artifact())
    assert _json(served.invoke(b'{"inputs": [1.0, 2.0, 5.0]}')) == {"outputs": [3.5, 4.0, 5.5]}
    named = served.invoke(b'{"inputs": {"x": [1.0]}, "signature_name": "serving_default"}')
    assert _json(named) == {"outputs": [3.5]}


def test_plain_json_csv_and_json_lines_become_instances(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    served = serve(make_artifact())
    assert _json(served.invoke(b"2.0")) == {"predictions": [4.0]}  # one value, one instance
    one_row = served.invoke(b"[1.0, 2.0]")  # a plain list is ONE instance, as in the container
    assert one_row.status == 400 and "has shape [1, 2]" in _json(one_row)["error"]
    assert _json(served.invoke(b"1.0\n2.0\n5.0\n", "text/csv")) == {"predictions": [3.5, 4.0, 5.5]}
    lines = served.invoke(b"[1.0]\n[2.0]", "application/jsonlines")
    assert lines.status == 400  # rows of one value each are [1] shapes: TFS's shape error
    assert "shape" in _json(lines)["error"]


def test_columnar_answer_with_several_outputs(make_artifact: ArtifactFactory, serve: Serve) -> None:
    served = serve(make_artifact("scale"))
    answer = served.invoke(b'{"instances": [{"x": [1.0, 2.0], "factor": 2.0}]}')
    assert answer.status == 400  # rank-0 factor cannot be given per instance
    columnar = served.invoke(b'{"inputs": {"x": [[1.0, 2.0], [3.0, 4.0]], "factor": 2.0}}')
    assert _json(columnar) == {"outputs": {"y": [[2.0, 4.0], [6.0, 8.0]], "rows": [2, 2]}}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"", "application/json", 400, "'instances' must be a non-empty list"),
        (b'{"instances": []}', "application/json", 400, "'instances' must be a non-empty list"),
        (b'{"inputs": [1], "instances": [1]}', "application/json", 400, "exactly one of"),
        (b'{"instances": [1.0]', "application/json", 400, "JSON Parse error"),
        (b'{"inputs": {"z": [1.0]}}', "application/json", 400, "Missing inputs: ['x']"),
        (b'{"inputs": [[1.0]]}', "application/json", 400, "has shape [1, 1]"),
        (b'{"inputs": [1], "signature_name": "no"}', "application/json", 400, '"no" not found'),
        (b"<x/>", "application/xml", 415, "Unsupported Media Type: application/xml"),
        (b"[1.0]", None, 415, "Unsupported Media Type: Unknown"),
    ],
)
def test_bad_requests_get_clear_errors(
    make_artifact: ArtifactFactory,
    serve: Serve,
    body: bytes,
    content_type: str | None,
    status: int,
    message: str,
) -> None:
    answer = serve(make_artifact()).invoke(body, content_type)
    assert answer.status == status
    assert message in _json(answer)["error"]


def test_tfs_custom_attributes_pick_model_version_and_method(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    served = serve(make_artifact())
    good = served.invoke(b"1.0", custom_attributes="tfs-model-name=model,tfs-model-version=1")
    assert good.status == 200
    missing = served.invoke(b"1.0", custom_attributes="tfs-model-version=2")
    assert missing.status == 404 and "Specific(model, 2)" in _json(missing)["error"]
    classify = served.invoke(b"1.0", custom_attributes="tfs-method=classify")
    assert classify.status == 400 and "only predict" in _json(classify)["error"]


# -- code/inference.py ------------------------------------------------------------------------

PAIR = """
    import json

    SEEN = []

    def input_handler(data, context):
        SEEN.append(context)
        body = data.read()
        if not body:
            raise ValueError("empty request body: send {\\"values\\": [...]}")
        if context.request_content_type != "application/json":
            raise ValueError(f"unsupported content type {context.request_content_type}")
        return json.dumps({"instances": json.loads(body)["values"]})

    def output_handler(response, context):
        if response.status_code != 200:
            raise ValueError(response.text)
        return json.dumps({"y": response.json()["predictions"]}), context.accept_header
"""


def test_handler_pair_goes_through_tfs_with_the_container_context(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    served = serve(make_artifact(code={"inference.py": PAIR}))
    body = b'{"values": [1.0, 5.0]}'
    answer = served.invoke(body, "application/json", "application/json", "trace=7")
    assert answer.status == 200 and _json(answer) == {"y": [3.5, 5.5]}
    assert served.handlers is not None
    context = served.handlers.SEEN[-1]
    assert context.rest_uri == "http://localhost:8501/v1/models/model:predict"
    assert (context.model_name, context.model_version, context.method) == (None, None, None)
    assert context.grpc_port == "9000"
    assert context.custom_attributes == "trace=7"
    assert context.request_content_type == "application/json"
    assert context.accept_header == "application/json"
    assert context.content_length == len(body)
    defaults = served.invoke(body, None, None)
    assert defaults.status == 200 and defaults.content_type == "application/json"
    assert served.handlers.SEEN[-1].request_content_type == "application/json"


def test_handler_errors_are_500_with_the_message(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    served = serve(make_artifact(code={"inference.py": PAIR}))
    empty = served.invoke(b"")
    assert empty.status == 500 and "empty request body" in _json(empty)["error"]
    wrong_type = served.invoke(b'{"values": [1.0]}', "text/csv")
    assert wrong_type.status == 500 and "unsupported content type" in _json(wrong_type)["error"]
    tfs_error = served.invoke(b'{"values": [[1.0]]}')
    assert tfs_error.status == 500 and "shape" in _json(tfs_error)["error"]


SINGLE = """
    import requests

    def handler(data, context):
        response = requests.post(context.rest_uri, data=data.read())
        return response.content, context.accept_header

    def input_handler(data, context):
        raise AssertionError("handler wins over the pair")

    def output_handler(response, context):
        raise AssertionError("handler wins over the pair")
"""


def test_single_handler_reaches_a_real_tfs_rest_port(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    served = serve(make_artifact(code={"inference.py": SINGLE}))
    try:
        assert served.rest_uri.startswith("http://127.0.0.1:")
        answer = served.invoke(b'{"instances": [1.0, 2.0, 5.0]}', accept="application/json")
        assert answer.status == 200 and _json(answer) == {"predictions": [3.5, 4.0, 5.5]}
    finally:
        served.close()


def test_inference_without_handlers_fails_to_load(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    root = make_artifact(code={"inference.py": "def input_handler(data, context):\n    pass\n"})
    with pytest.raises(HandlerImportError, match="defines neither handler"):
        ServedModel(root)


LIB_HANDLER = """
    import json

    import helper
    from textkit import shout

    def handler(data, context):
        import helper as late  # imported while serving, long after loading
        return json.dumps({"value": helper.VALUE, "late": late.VALUE, "shout": shout("hi")}), "application/json"
"""


def _lib(value: str) -> dict[str, str]:
    return {
        "inference.py": LIB_HANDLER,
        "lib/helper.py": f"VALUE = {value!r}\n",
        "lib/textkit/__init__.py": "from .core import shout\n",
        "lib/textkit/core.py": f"def shout(text):\n    return text.upper() + {value!r}\n",
        "requirements.txt": "definitely-not-installed-package==1.0\n",
    }


def test_code_lib_takes_precedence_over_requirements(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    served = serve(make_artifact(code=_lib("a")))
    try:
        answer = served.invoke(b"{}")
        assert _json(answer) == {"value": "a", "late": "a", "shout": "HIa"}
    finally:
        served.close()


def test_two_artifacts_with_same_module_names_do_not_interfere(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    path_before, modules_before = list(sys.path), set(sys.modules)
    first = serve(make_artifact(code=_lib("first")))
    second = serve(make_artifact(code=_lib("second")))
    assert first.imports is not None and second.imports is not None
    packages = (first.imports.package, second.imports.package)
    assert packages[0] != packages[1]
    try:
        for _ in range(2):  # interleaved, after both are loaded
            assert _json(first.invoke(b"{}")) == {
                "value": "first",
                "late": "first",
                "shout": "HIfirst",
            }
            assert _json(second.invoke(b"{}"))["value"] == "second"
        assert sys.path == path_before
        leaked = {m for m in set(sys.modules) - modules_before if not m.startswith("_tweetgen_")}
        assert not {"helper", "textkit", "inference"} & leaked
        assert {"helper", "textkit", "textkit.core", "inference"} <= set(first.imports.modules())
    finally:
        first.close()
        second.close()
    assert not [m for m in sys.modules if m.startswith(packages)]


def test_missing_requirement_is_reported_clearly(
    make_artifact: ArtifactFactory, serve: Serve
) -> None:
    code = {
        "inference.py": "import definitely_not_installed_package\n\ndef handler(d, c):\n    pass\n",
        "requirements.txt": "definitely-not-installed-package==1.0\n",
    }
    with pytest.raises(HandlerImportError) as raised:
        serve(make_artifact(code=code))
    message = str(raised.value)
    assert "No module named 'definitely_not_installed_package'" in message
    assert "code/requirements.txt asks for ['definitely-not-installed-package==1.0']" in message
    assert "never installs requirements" in message


def test_missing_module_with_code_lib_says_requirements_are_ignored(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    code = {
        "inference.py": "from helper import nothing_here\n\ndef handler(d, c):\n    pass\n",
        "lib/helper.py": "VALUE = 1\n",
        "requirements.txt": "something==1.0\n",
    }
    with pytest.raises(HandlerImportError) as raised:
        serve(make_artifact(code=code))
    message = str(raised.value)
    assert "cannot import name 'nothing_here' from 'helper'" in message
    assert "code/lib is present, so code/requirements.txt is ignored" in message


# -- dynamic batching --------------------------------------------------------------------------


def _concurrently(count: int, call: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_batching_merges_concurrent_requests_with_equal_scalars(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    config = BatchingConfig(max_batch_size=8, batch_timeout_s=0.2, num_batch_threads=1)
    served = serve(make_artifact("scale"), batching=config)

    def call(i: int) -> Any:
        body = {"inputs": {"x": [[float(i), 1.0]], "factor": 2.0}}
        return served.invoke(json.dumps(body).encode())

    answers = _concurrently(8, call)
    for i, answer in enumerate(answers):
        outputs = _json(answer)["outputs"]
        assert outputs["y"] == [[2.0 * i, 2.0]]
        assert outputs["rows"][0] > 1  # computed in a merged call
    stats = served.tfs.batch_stats
    assert stats is not None and stats.requests == 8 and stats.calls < 8
    assert stats.merged_requests >= 2 and stats.largest_batch_rows <= 8


def test_batching_keeps_different_scalars_and_shapes_apart(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    config = BatchingConfig(max_batch_size=8, batch_timeout_s=0.1, num_batch_threads=1)
    served = serve(make_artifact("scale"), batching=config)

    def call(i: int) -> Any:
        width = 2 if i % 2 else 3
        body = {"inputs": {"x": [[1.0] * width], "factor": float(i)}}
        return _json(served.invoke(json.dumps(body).encode()))["outputs"]

    for i, outputs in enumerate(_concurrently(4, call)):
        assert outputs["rows"] == [1] and outputs["y"][0][0] == float(i)
    stats = served.tfs.batch_stats
    assert stats is not None and stats.calls == 4 and stats.merged_requests == 0


def test_batching_is_off_by_default_and_strict_mode_refuses_scalars(
    make_artifact: ArtifactFactory,
    serve: Serve,
) -> None:
    assert serve(make_artifact("scale")).tfs.batch_stats is None
    strict = serve(make_artifact("scale"), batching=BatchingConfig(strict_tfs=True))
    answer = strict.invoke(b'{"inputs": {"x": [[1.0]], "factor": 2.0}}')
    assert answer.status == 400 and "at least one dimension" in _json(answer)["error"]


def test_batching_settings_come_from_the_container_environment() -> None:
    assert BatchingConfig.from_environment({}) is None
    config = BatchingConfig.from_environment(
        {
            "SAGEMAKER_TFS_ENABLE_BATCHING": "true",
            "SAGEMAKER_TFS_MAX_BATCH_SIZE": "16",
            "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "5000",
            "SAGEMAKER_TFS_NUM_BATCH_THREADS": "3",
        }
    )
    assert config == BatchingConfig(max_batch_size=16, batch_timeout_s=0.005, num_batch_threads=3)
    with pytest.raises(ValueError, match="'true' or 'false'"):
        BatchingConfig.from_environment({"SAGEMAKER_TFS_ENABLE_BATCHING": "yes"})
    # Each count is named in its error, as the thread pools' are.
    on = {"SAGEMAKER_TFS_ENABLE_BATCHING": "true"}
    for name, raw, message in [
        ("SAGEMAKER_TFS_MAX_BATCH_SIZE", "8.5", "must be a whole number of rows, not '8.5'"),
        ("SAGEMAKER_TFS_MAX_BATCH_SIZE", "0", "must be 1 or more, not 0"),
        ("SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS", "-5", "must be 0 or more, not -5"),
        (
            "SAGEMAKER_TFS_NUM_BATCH_THREADS",
            "many",
            "must be a whole number of threads, not 'many'",
        ),
        ("SAGEMAKER_TFS_NUM_BATCH_THREADS", "0", "must be 1 or more, not 0"),
    ]:
        with pytest.raises(ValueError) as caught:
            BatchingConfig.from_environment({**on, name: raw})
        assert str(caught.value) == f"{name} {message}"
    assert BatchingConfig.from_environment({**on, "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "0"}) == (
        BatchingConfig(batch_timeout_s=0.0)
    )


def test_thread_pools_come_from_the_container_environment() -> None:
    assert ThreadPools.from_environment({}) == ThreadPools(0, 0)
    pools = ThreadPools.from_environment(
        {"SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "1", "SAGEMAKER_TFS_INTER_OP_PARALLELISM": "0"}
    )
    assert pools == ThreadPools(intra_op=1, inter_op=0)
    with pytest.raises(ValueError, match=r"SAGEMAKER_TFS_INTRA_OP_PARALLELISM .* 'two'"):
        ThreadPools.from_environment({"SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "two"})
    # -1: each request's operations on the thread that received it (no inter-op pool). Like
    # TensorFlow Serving, which applies the two settings only when one is above 0.
    caller = {"SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "1", "SAGEMAKER_TFS_INTER_OP_PARALLELISM": "-1"}
    assert ThreadPools.from_environment(caller) == ThreadPools(intra_op=1, inter_op=-1)
    alone = {"SAGEMAKER_TFS_INTER_OP_PARALLELISM": "-1"}
    assert ThreadPools.from_environment(alone) == ThreadPools(0, 0)
    with pytest.raises(
        ValueError,
        match=r"SAGEMAKER_TFS_INTER_OP_PARALLELISM must be -1 \(each request on its own thread\) or more, not -2",
    ):
        ThreadPools.from_environment({"SAGEMAKER_TFS_INTER_OP_PARALLELISM": "-2"})
    with pytest.raises(ValueError, match=r"SAGEMAKER_TFS_INTRA_OP_PARALLELISM must be 0 .* not -1"):
        ThreadPools.from_environment({"SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "-1"})
