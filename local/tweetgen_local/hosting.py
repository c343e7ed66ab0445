"""Local SageMaker hosting of one artifact, honouring the TensorFlow Serving container's contract.

The container loads ``<model>/<version>/saved_model.pb`` into TensorFlow Serving, imports
``code/inference.py`` and, per request, either calls ``handler(data, context)`` or
``input_handler`` → TFS REST ``predict`` → ``output_handler``. Here TensorFlow Serving's REST
predict API is answered in-process from the loaded SavedModel, and ``output_handler`` receives
a real ``requests.Response``. Handler exceptions become HTTP 500 ``{"error": "..."}``, which
SageMaker surfaces to callers as ``ModelError``.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

_VERSION_DIR = re.compile(r"^\d+$")
_module_ids = itertools.count()


@dataclass(frozen=True)
class Context:
    """The fields the container passes to handlers (read them by name)."""

    model_name: str
    model_version: str
    method: str
    rest_uri: str
    grpc_port: str
    custom_attributes: str | None
    request_content_type: str
    accept_header: str
    content_length: int


@dataclass(frozen=True)
class Invocation:
    status: int
    body: bytes
    content_type: str


def find_saved_model(root: Path) -> Path:
    """The one ``<name>/<number>/saved_model.pb`` directory of an unpacked artifact."""
    found = sorted(
        p.parent for p in root.glob("*/*/saved_model.pb") if _VERSION_DIR.match(p.parent.name)
    )
    if root.joinpath("saved_model.pb").exists() and _VERSION_DIR.match(root.name):
        found.append(root)
    if len(found) != 1:
        raise ValueError(
            f"{root}: expected one <model>/<version>/saved_model.pb, found {len(found)}"
        )
    return found[0]


def _load_handlers(code_dir: Path) -> ModuleType | None:
    script = code_dir / "inference.py"
    if not script.is_file():
        return None
    lib = code_dir / "lib"
    if lib.is_dir() and str(lib) not in sys.path:
        sys.path.insert(0, str(lib))
    spec = importlib.util.spec_from_file_location(f"tweetgen_inference_{next(_module_ids)}", script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TFServingPredict:
    """TensorFlow Serving's REST ``predict`` (columnar ``inputs`` and row ``instances``) in-process."""

    def __init__(self, saved_model_dir: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(str(saved_model_dir))
        self.model_name = saved_model_dir.parent.name
        self.model_version = saved_model_dir.name

    def predict(self, body: bytes) -> tuple[int, dict[str, Any]]:
        tf = self._tf
        try:
            request = json.loads(body)
            name = request.get("signature_name", "serving_default")
            if name not in self.loaded.signatures:
                return 400, {
                    "error": f'Serving signature name: "{name}" not found in signature def'
                }
            signature = self.loaded.signatures[name]
            specs = signature.structured_input_signature[1]
            columnar = "inputs" in request
            if columnar == ("instances" in request):
                return 400, {
                    "error": "JSON Value must contain exactly one of 'instances' or 'inputs'"
                }
            values = request["inputs"] if columnar else _rows_to_columns(request["instances"])
            if not isinstance(values, dict):
                values = {next(iter(specs)): values}
            missing = sorted(set(specs) - set(values))
            if missing:
                return 400, {"error": f"Missing inputs: {missing}"}
            tensors = {
                key: tf.constant(values[key], dtype=spec.dtype) for key, spec in specs.items()
            }
            outputs = {k: v.numpy().tolist() for k, v in signature(**tensors).items()}
        except (ValueError, TypeError, KeyError, AttributeError, tf.errors.OpError) as exc:
            return 400, {
                "error": str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            }
        if columnar:
            return 200, {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}
        rows = len(next(iter(outputs.values())))
        return 200, {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(rows)]}


def _rows_to_columns(instances: Any) -> Any:
    if isinstance(instances, list) and instances and all(isinstance(r, dict) for r in instances):
        return {key: [row[key] for row in instances] for key in instances[0]}
    return instances


def _response(status: int, payload: dict[str, Any], url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(payload).encode()
    response.headers["Content-Type"] = "application/json"
    response.url = url
    response.encoding = "utf-8"
    return response


class ServedModel:
    """One unpacked artifact, served as the SageMaker TensorFlow Serving container serves it."""

    def __init__(self, root: Path, rest_port: int = 8501, grpc_port: int = 9000) -> None:
        self.root = root
        self.tfs = TFServingPredict(find_saved_model(root))
        self.handlers = _load_handlers(root / "code")
        self.rest_uri = f"http://localhost:{rest_port}/v1/models/{self.tfs.model_name}:predict"
        self.grpc_port = str(grpc_port)

    def ping(self) -> bool:
        return True

    def invoke(
        self,
        body: bytes,
        content_type: str = "application/json",
        accept: str = "application/json",
        custom_attributes: str | None = None,
    ) -> Invocation:
        context = Context(
            model_name=self.tfs.model_name,
            model_version=self.tfs.model_version,
            method="POST",
            rest_uri=self.rest_uri,
            grpc_port=self.grpc_port,
            custom_attributes=custom_attributes,
            request_content_type=content_type,
            accept_header=accept,
            content_length=len(body),
        )
        try:
            return self._handle(body, context)
        except Exception as exc:
            return Invocation(500, json.dumps({"error": str(exc)}).encode(), "application/json")

    def _handle(self, body: bytes, context: Context) -> Invocation:
        module = self.handlers
        if module is not None and hasattr(module, "handler"):
            result, content_type = module.handler(io.BytesIO(body), context)
            return Invocation(200, _as_bytes(result), content_type)
        if module is not None and hasattr(module, "input_handler"):
            request = module.input_handler(io.BytesIO(body), context)
        else:
            request = body
        status, payload = self.tfs.predict(_as_bytes(request))
        if module is not None and hasattr(module, "output_handler"):
            result, content_type = module.output_handler(
                _response(status, payload, context.rest_uri), context
            )
            return Invocation(200, _as_bytes(result), content_type)
        return Invocation(status, json.dumps(payload).encode(), "application/json")


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")
