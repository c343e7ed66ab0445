"""Local SageMaker hosting, honouring the SageMaker TensorFlow Serving container's contract.

Two layers:

* :class:`ServedModel` serves ONE unpacked artifact as the container does. The container loads
  ``<model>/<version>/saved_model.pb`` into TensorFlow Serving (TFS), imports
  ``code/inference.py`` and, per request, calls ``handler(data, context)`` or
  ``input_handler`` → TFS REST ``predict`` → ``output_handler``; without ``inference.py`` its
  nginx script turns JSON/CSV bodies into TFS requests itself. TFS's REST predict API is
  answered in-process from the loaded SavedModel (``output_handler`` receives a real
  ``requests.Response``); a ``handler`` that POSTs to ``context.rest_uri`` itself reaches a
  small TFS REST server on a free local port. Handler exceptions become HTTP 500
  ``{"error": "..."}``, which SageMaker surfaces to callers as ``ModelError``.
* :class:`LocalHosting` follows a SageMaker control plane (moto locally): for every endpoint it
  loads each production variant's ``model.tar.gz`` from S3 and keeps serving through
  CreateEndpoint, UpdateEndpoint, weight updates and DeleteEndpoint, switching atomically
  (load the new models, swap, retire the old ones once their requests finish).
  ``tweetgen_local.runtime`` puts the SageMaker Runtime HTTP API in front of it.

Artifacts are isolated from one another: each ``inference.py`` runs with its own ``import``
that resolves the artifact's ``code/lib`` (then ``code/``) modules under a private package
name, so two variants shipping a ``helper`` module of the same name never see each other's,
and ``sys.path`` is never changed. Modules that the artifact does not ship come from this
environment; ``code/requirements.txt`` is never installed here (the container installs it only
when ``code/lib`` is absent), and a failed import says so. Known limit: a module loaded with
``importlib.import_module`` (instead of an ``import`` statement) bypasses the private import.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import itertools
import json
import logging
import os
import random
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests
from tweetgen_build.errors import error_line

from tweetgen_local.http_server import LocalHTTPServer

LOG = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^\d+$")
_TFS_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?::(?P<method>[A-Za-z]+))?$"
)
_TFS_ATTRIBUTE = re.compile(r"tfs-[a-z\-]+=[^,]+")
_TFS_JSON = re.compile(r'"(instances|inputs|examples)"\s*:')
_JSON_LINES = re.compile(r"[}\]]\s*[\[{]")
_NUMERIC_FIELD = re.compile(r"^\s*(\"|[\d.Ee+\-]+)")
_artifact_ids = itertools.count()
_real_import = builtins.__import__

DEFAULT_CONTENT_TYPE = "application/json"
DEFAULT_ACCEPT = "application/json"
JSON_CONTENT_TYPES = ("application/json", "application/jsonlines", "application/jsons")
# Statuses in which SageMaker keeps answering InvokeEndpoint with the variants in force.
SERVING_STATUSES = frozenset({"InService", "Updating", "SystemUpdating", "RollingBack"})


# --------------------------------------------------------------------------------------------
# The container's request context and answers


@dataclass(frozen=True)
class Context:
    """The fields the container passes to handlers (read them by name).

    As in the container, ``model_name``, ``model_version`` and ``method`` are the
    ``tfs-model-name``, ``tfs-model-version`` and ``tfs-method`` custom attributes (None when
    the request does not set them); ``rest_uri`` is where TFS predict answers.
    """

    model_name: str | None
    model_version: str | None
    method: str | None
    rest_uri: str
    grpc_port: str
    custom_attributes: str | None
    request_content_type: str
    accept_header: str
    content_length: int


@dataclass(frozen=True)
class Invocation:
    """What the container answered: status, body and content type."""

    status: int
    body: bytes
    content_type: str


class HandlerImportError(RuntimeError):
    """``code/inference.py`` cannot be imported or defines no usable handlers."""


def parse_tfs_attributes(custom_attributes: str | None) -> dict[str, str]:
    """The ``tfs-*=value`` pairs of the custom attributes header, as the container reads them."""
    if not custom_attributes:
        return {}
    pairs = (match.split("=", 1) for match in _TFS_ATTRIBUTE.findall(custom_attributes))
    return {key: value for key, value in pairs}


def find_saved_model(root: Path) -> Path:
    """The SavedModel version directory that the container serves by default.

    Like the container, any ``saved_model.pb`` whose parent folder is a number counts
    (``1/saved_model.pb`` at the archive root too); a model with several versions is served at
    its highest, as TFS does. Several models in one artifact are refused: one model per variant.
    """
    models: dict[Path, list[Path]] = {}
    for pb in root.rglob("saved_model.pb"):
        if _VERSION_DIR.match(pb.parent.name):
            models.setdefault(pb.parent.parent, []).append(pb.parent)
    if len(models) != 1:
        raise ValueError(
            f"{root}: expected one <model>/<version>/saved_model.pb, found {len(models)} models"
        )
    versions = next(iter(models.values()))
    return max(versions, key=lambda path: int(path.name))


def _tfs_model_name(root: Path, version_dir: Path) -> str:
    """The container names the model after its folder; a version folder at the root is ``model``."""
    return "model" if version_dir.parent == root else version_dir.parent.name


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Per-artifact imports: code/lib and code/ under a private package name


class _BuiltinsLoader(importlib.abc.Loader):
    """Wraps a module's loader so the module runs with its artifact's own ``__import__``."""

    def __init__(self, inner: Any, namespace: dict[str, Any]) -> None:
        self._inner = inner
        self._namespace = namespace

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self._inner.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = self._namespace
        self._inner.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _PrivateFinder(importlib.abc.MetaPathFinder):
    """Finds the submodules of each artifact's private package (and only those)."""

    def __init__(self) -> None:
        self._spaces: dict[str, ArtifactImports] = {}
        self._lock = threading.Lock()

    def register(self, space: ArtifactImports) -> None:
        with self._lock:
            self._spaces[space.package] = space
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)

    def unregister(self, space: ArtifactImports) -> None:
        with self._lock:
            self._spaces.pop(space.package, None)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, dot, _ = fullname.partition(".")
        space = self._spaces.get(package)
        if space is None or not dot:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _BuiltinsLoader(spec.loader, space.builtins)
        return spec


_FINDER = _PrivateFinder()


class ArtifactImports:
    """One artifact's own modules, importable by that artifact's code only.

    The container puts ``code/lib`` and then ``code/`` first on ``sys.path``. Here the same
    search order applies, but through a private package (``_tweetgen_artifact_<n>``) and an
    ``__import__`` given to the artifact's modules only: ``import helper`` inside the artifact
    loads ``_tweetgen_artifact_<n>.helper``, whichever variant imported a ``helper`` first.
    Everything else (the standard library, tensorflow, tokenizers...) comes from this
    environment as usual.
    """

    def __init__(self, code_dir: Path) -> None:
        self.code_dir = code_dir
        lib = code_dir / "lib"
        self.search = [str(lib)] if lib.is_dir() else []
        self.search.append(str(code_dir))
        self.package = f"_tweetgen_artifact_{next(_artifact_ids)}"
        namespace = dict(vars(builtins))
        namespace["__import__"] = self._import
        self.builtins = namespace
        self._provided: dict[str, bool] = {}
        spec = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
        spec.submodule_search_locations = list(self.search)
        package = importlib.util.module_from_spec(spec)
        package.__path__ = list(self.search)
        sys.modules[self.package] = package
        _FINDER.register(self)

    def provides(self, top: str) -> bool:
        """Whether the artifact ships a top-level module or package of this name."""
        known = self._provided.get(top)
        if known is None:
            known = importlib.machinery.PathFinder.find_spec(top, self.search) is not None
            self._provided[top] = known
        return known

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        if level == 0 and name:
            top = name.partition(".")[0]
            if top != self.package and self.provides(top):
                module = _real_import(f"{self.package}.{name}", globals, locals, fromlist, 0)
                return module if fromlist else sys.modules[f"{self.package}.{top}"]
        return _real_import(name, globals, locals, fromlist, level)

    def load_script(self, path: Path, name: str) -> ModuleType:
        """Import ``path`` as ``<private package>.<name>``, with the artifact's imports."""
        fullname = f"{self.package}.{name}"
        spec = importlib.util.spec_from_file_location(fullname, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__builtins__"] = self.builtins
        sys.modules[fullname] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        return module

    def modules(self) -> list[str]:
        """The artifact's modules loaded so far (names without the private prefix)."""
        prefix = self.package + "."
        return sorted(name[len(prefix) :] for name in list(sys.modules) if name.startswith(prefix))

    def public_name(self, text: str) -> str:
        """Error messages name the artifact's modules as the artifact does."""
        return text.replace(self.package + ".", "")

    def close(self) -> None:
        _FINDER.unregister(self)
        prefix = self.package + "."
        for name in [n for n in list(sys.modules) if n == self.package or n.startswith(prefix)]:
            sys.modules.pop(name, None)


def _requirements(code_dir: Path) -> list[str]:
    path = code_dir / "requirements.txt"
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [line for line in lines if line]


def _explain_import_failure(code_dir: Path, exc: BaseException, imports: ArtifactImports) -> str:
    message = imports.public_name(
        f"code/inference.py failed to import: {type(exc).__name__}: {exc}"
    )
    if not isinstance(exc, ImportError):
        return message
    if (code_dir / "lib").is_dir():
        return (
            message + "; code/lib is present, so code/requirements.txt is ignored (as in the"
            " container): ship the missing module in code/lib"
        )
    wanted = _requirements(code_dir)
    if wanted:
        return (
            message + f"; code/requirements.txt asks for {wanted}, but the local host never"
            " installs requirements: install them into this environment or ship them in"
            " code/lib"
        )
    return message + "; ship the missing module in code/lib"


# --------------------------------------------------------------------------------------------
# TensorFlow Serving's REST predict API, in-process, with optional dynamic batching


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching, as ``SAGEMAKER_TFS_ENABLE_BATCHING`` turns it on in the container.

    The rule (an honest subset of TFS's batching, extended to scalar inputs): concurrent predict
    calls for the same signature are merged into one SavedModel call when every input that has
    a batch dimension agrees on the dimensions after the first, and every rank-0 input (for
    tweetgen: ``max_new_tokens``, ``temperature``, ``top_k``, ``seed``) has the same value.
    Inputs are never padded, so prompts of different token lengths are not merged. A batch holds
    at most ``max_batch_size`` rows; it runs after ``batch_timeout_s`` or when full, on one of
    ``num_batch_threads`` batch threads, and keeps taking requests while it waits for a thread.
    A merged batch must return one output row per input row, else each request runs alone.

    Caveats, both real: a model whose rows depend on their position in the batch gives a merged
    request other values than it would get alone (tweetgen samples row ``i`` with ``seed + i``:
    greedy requests are unaffected, seeded sampling is not reproducible under batching); and
    TensorFlow Serving's own batching refuses rank-0 inputs outright ("Batching session Run()
    input tensors must have at least one dimension") — ``strict_tfs`` reproduces that refusal.
    """

    max_batch_size: int = 8
    batch_timeout_s: float = 0.001
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    strict_tfs: bool = False

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> BatchingConfig | None:
        """The container's variables (a model's ``PrimaryContainer.Environment``); None = off."""
        flag = environment.get("SAGEMAKER_TFS_ENABLE_BATCHING", "false").lower()
        if flag not in ("true", "false"):
            raise ValueError("SAGEMAKER_TFS_ENABLE_BATCHING must be 'true' or 'false'")
        if flag == "false":
            return None
        default = cls()
        return cls(
            max_batch_size=environment_count(
                environment, "SAGEMAKER_TFS_MAX_BATCH_SIZE", default.max_batch_size, "rows", 1
            ),
            batch_timeout_s=environment_count(
                environment, "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS", 1000, "microseconds", 0
            )
            / 1e6,
            num_batch_threads=environment_count(
                environment,
                "SAGEMAKER_TFS_NUM_BATCH_THREADS",
                default.num_batch_threads,
                "threads",
                1,
            ),
        )


def environment_count(
    environment: Mapping[str, str],
    name: str,
    default: int,
    unit: str,
    minimum: int,
    minimum_means: str = "",
) -> int:
    """A whole number from a container variable (``default`` when unset), at least ``minimum``
    (``minimum_means``: what that value asks for, named in the error); ValueError naming the
    variable otherwise (the model then fails to load, as it would in the container, whose model
    server refuses such a flag)."""
    raw = environment.get(name)
    if raw is None:
        return default
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of {unit}, not {raw!r}") from None
    if count < minimum:
        floor = f"{minimum} ({minimum_means})" if minimum_means else str(minimum)
        raise ValueError(f"{name} must be {floor} or more, not {count}")
    return count


@dataclass(frozen=True)
class ThreadPools:
    """The model server's thread pools: TensorFlow Serving's ``--tensorflow_intra_op_parallelism``
    and ``--tensorflow_inter_op_parallelism``, which the container takes from
    ``SAGEMAKER_TFS_INTRA_OP_PARALLELISM`` and ``SAGEMAKER_TFS_INTER_OP_PARALLELISM``; 0 lets
    TensorFlow size a pool by the cores, and an inter-op setting of -1 runs each request's
    operations on the thread that called the session (the request's own), with no pool.

    TensorFlow gives every session of a process the pools of its first session or eager
    context, so pool sizes take effect only when the model is the first TensorFlow work of the
    process (``tweetgen local up``'s), and are the pools of every model it serves after. The
    inter-op setting -1 is each session's own: it applies to every model served.
    """

    intra_op: int = 0
    inter_op: int = 0

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> ThreadPools:
        """The container's variables (a model's ``PrimaryContainer.Environment``); unset = 0.

        As TensorFlow Serving reads its two flags: it applies them only when one is above 0,
        and otherwise gives both pools TensorFlow's choice (so an inter-op setting of -1 needs
        an intra-op one of 1 or more).
        """
        pools = cls(
            environment_count(
                environment,
                "SAGEMAKER_TFS_INTRA_OP_PARALLELISM",
                0,
                "threads",
                0,
                "TensorFlow's choice",
            ),
            environment_count(
                environment,
                "SAGEMAKER_TFS_INTER_OP_PARALLELISM",
                0,
                "threads",
                -1,
                "each request on its own thread",
            ),
        )
        return pools if max(pools.intra_op, pools.inter_op) > 0 else cls()


@dataclass
class BatchStats:
    """What the batcher did: SavedModel calls, requests, and requests that shared a call."""

    calls: int = 0
    requests: int = 0
    merged_requests: int = 0
    largest_batch_rows: int = 0


Arrays = dict[str, np.ndarray]
RunSignature = Callable[[str, Arrays], Arrays]


class _TFSError(Exception):
    """A TFS REST error answer: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Batch:
    def __init__(self, arrays: Arrays, rows: int) -> None:
        self.items: list[Arrays] = [arrays]
        self.sizes: list[int] = [rows]
        self.rows = rows
        self.full = threading.Event()
        self.done = threading.Event()
        self.results: list[Arrays | BaseException] = []


class _Batcher:
    """Leader/follower batching: the first request of a batch waits, runs it, hands out rows."""

    def __init__(self, run: RunSignature, config: BatchingConfig) -> None:
        self._run = run
        self.config = config
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch] = {}
        self._slots = threading.BoundedSemaphore(max(1, config.num_batch_threads))
        self.stats = BatchStats()

    def run(self, signature: str, specs: Mapping[str, Any], arrays: Arrays) -> Arrays:
        plan = _merge_plan(signature, specs, arrays)
        if plan is None or plan[1] >= self.config.max_batch_size:
            with self._slots:
                self._count(1, 1, plan[1] if plan else 0)
                return self._run(signature, arrays)
        key, rows = plan
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and batch.rows + rows <= self.config.max_batch_size:
                index = len(batch.items)
                batch.items.append(arrays)
                batch.sizes.append(rows)
                batch.rows += rows
                if batch.rows >= self.config.max_batch_size:
                    del self._open[key]
                    batch.full.set()
                leader = False
            else:
                if batch is not None:
                    batch.full.set()
                batch = _Batch(arrays, rows)
                self._open[key] = batch
                index, leader = 0, True
        if leader:
            batch.full.wait(self.config.batch_timeout_s)
            with self._slots:
                with self._lock:
                    if self._open.get(key) is batch:
                        del self._open[key]
                self._execute(signature, batch)
        else:
            batch.done.wait()
        result = batch.results[index]
        if isinstance(result, BaseException):
            raise result
        return result

    def _count(self, calls: int, requests_: int, rows: int) -> None:
        with self._lock:
            self.stats.calls += calls
            self.stats.requests += requests_
            if requests_ > 1:
                self.stats.merged_requests += requests_
            self.stats.largest_batch_rows = max(self.stats.largest_batch_rows, rows)

    def _execute(self, signature: str, batch: _Batch) -> None:
        try:
            if len(batch.items) == 1:
                batch.results = [self._run_one(signature, batch.items[0])]
                self._count(1, 1, batch.rows)
                return
            merged = {
                name: np.concatenate([item[name] for item in batch.items])
                if value.ndim > 0
                else value
                for name, value in batch.items[0].items()
            }
            try:
                outputs = self._run(signature, merged)
            except Exception:
                outputs = None  # one bad request must not fail the others: run them alone
            if outputs is not None and all(
                v.ndim > 0 and v.shape[0] == batch.rows for v in outputs.values()
            ):
                bounds = np.cumsum([0, *batch.sizes])
                batch.results = [
                    {k: v[a:b] for k, v in outputs.items()}
                    for a, b in itertools.pairwise(bounds.tolist())
                ]
                self._count(1, len(batch.items), batch.rows)
            else:
                batch.results = [self._run_one(signature, item) for item in batch.items]
                self._count(len(batch.items), len(batch.items), batch.rows)
        finally:
            batch.done.set()

    def _run_one(self, signature: str, arrays: Arrays) -> Arrays | BaseException:
        try:
            return self._run(signature, arrays)
        except Exception as exc:
            return exc


def _scalar_key(value: np.ndarray) -> Hashable:
    return (value.dtype.str, repr(value.item()) if value.dtype == object else value.tobytes())


def _merge_plan(
    signature: str, specs: Mapping[str, Any], arrays: Arrays
) -> tuple[Hashable, int] | None:
    """The batch key and row count of a request, or None when it cannot share a call."""
    parts: list[Hashable] = [signature]
    rows: int | None = None
    for name in sorted(arrays):
        value = arrays[name]
        if value.ndim == 0:
            parts.append((name, "scalar", _scalar_key(value)))
            continue
        shape = specs[name].shape
        if shape.rank is not None and shape.rank > 0 and shape[0] is not None:
            return None  # a fixed first dimension is not a batch dimension
        if rows is not None and value.shape[0] != rows:
            return None
        rows = int(value.shape[0])
        parts.append((name, "batch", value.dtype.str, tuple(value.shape[1:])))
    if not rows:
        return None
    return tuple(parts), rows


def _to_jsonable(value: np.ndarray) -> Any:
    if value.dtype == object or value.dtype.kind == "S":
        return np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v, otypes=[object]
        )(value).tolist()
    return value.tolist()


def _rows_to_columns(instances: list[Any]) -> Any:
    if all(isinstance(row, dict) for row in instances):
        keys = set(instances[0])
        if any(set(row) != keys for row in instances):
            raise _TFSError(400, "every instance must name the same inputs")
        return {key: [row[key] for row in instances] for key in instances[0]}
    if any(isinstance(row, dict) for row in instances):
        raise _TFSError(400, "instances must be all objects (named inputs) or all values")
    return instances


class TFServingPredict:
    """TensorFlow Serving's REST ``predict`` (columnar ``inputs`` and row ``instances``) in-process,
    on the SavedModel loaded as the model server loads it
    (:class:`tweetgen_build.packaging.SessionSavedModel`)."""

    def __init__(
        self,
        saved_model_dir: Path,
        model_name: str | None = None,
        *,
        batching: BatchingConfig | None = None,
        threads: ThreadPools | None = None,
    ) -> None:
        import tensorflow as tf
        from tweetgen_build.packaging import SessionSavedModel

        self._tf = tf
        pools = threads or ThreadPools()
        self.loaded = SessionSavedModel(
            saved_model_dir, intra_op_threads=pools.intra_op, inter_op_threads=pools.inter_op
        )
        self.model_name = model_name or saved_model_dir.parent.name
        self.model_version = saved_model_dir.name
        self.batching = batching
        self._batcher = _Batcher(self._call, batching) if batching else None

    @property
    def batch_stats(self) -> BatchStats | None:
        return self._batcher.stats if self._batcher else None

    def model_status(self) -> dict[str, Any]:
        """TFS's ``GET /v1/models/<name>`` answer."""
        return {
            "model_version_status": [
                {
                    "version": self.model_version,
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def handle(self, uri: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer a POST to a TFS REST URI (``.../v1/models/<name>[/versions/<v>]:<method>``)."""
        match = _TFS_PATH.match(urlsplit(uri).path)
        if match is None:
            return 404, {"error": f"Malformed request: POST {urlsplit(uri).path}"}
        name, version = match["name"], match["version"]
        if name != self.model_name or (
            version is not None and int(version) != int(self.model_version)
        ):
            wanted = f"Specific({name}, {version})" if version else f"Latest({name})"
            return 404, {"error": f"Servable not found for request: {wanted}"}
        method = match["method"] or "predict"
        if method != "predict":
            return 400, {"error": f"method {method!r} is not served locally: only predict is"}
        return self.predict(body)

    def predict(self, body: bytes | str) -> tuple[int, dict[str, Any]]:
        """Answer a TFS REST predict body: (HTTP status, JSON answer)."""
        tf = self._tf
        try:
            name, specs, arrays, columnar = self._parse(body)
            if self._batcher is not None:
                outputs = self._batcher.run(name, specs, arrays)
            else:
                outputs = self._call(name, arrays)
            if columnar:
                jsonable = {k: _to_jsonable(v) for k, v in outputs.items()}
                only = len(jsonable) == 1
                return 200, {"outputs": next(iter(jsonable.values())) if only else jsonable}
            return 200, {"predictions": _as_rows(outputs)}
        except _TFSError as exc:
            return exc.status, {"error": exc.message}
        except json.JSONDecodeError as exc:
            return 400, {"error": f"JSON Parse error: {exc}"}
        except (ValueError, TypeError, KeyError, AttributeError, tf.errors.OpError) as exc:
            return 400, {"error": error_line(exc)}

    def _parse(self, body: bytes | str) -> tuple[str, Mapping[str, Any], Arrays, bool]:
        request = json.loads(body)
        if not isinstance(request, dict):
            raise _TFSError(400, "JSON Value must be an object with 'instances' or 'inputs'")
        name = request.get("signature_name", "serving_default")
        if name not in self.loaded.signatures:
            raise _TFSError(400, f'Serving signature name: "{name}" not found in signature def')
        specs = self.loaded.signatures[name]
        columnar = "inputs" in request
        if columnar == ("instances" in request):
            raise _TFSError(400, "JSON Value must contain exactly one of 'instances' or 'inputs'")
        if columnar:
            values = request["inputs"]
        else:
            instances = request["instances"]
            if not isinstance(instances, list) or not instances:
                raise _TFSError(400, "'instances' must be a non-empty list")
            values = _rows_to_columns(instances)
        arrays = self._arrays(values, specs)
        strict = self.batching is not None and self.batching.strict_tfs
        if strict and any(value.ndim == 0 for value in arrays.values()):
            raise _TFSError(
                400, "Batching session Run() input tensors must have at least one dimension"
            )
        return name, specs, arrays, columnar

    def _arrays(self, values: Any, specs: Mapping[str, Any]) -> Arrays:
        if not isinstance(values, dict):
            if len(specs) != 1:
                raise _TFSError(
                    400, f"the signature has {len(specs)} inputs {sorted(specs)}: name them"
                )
            values = {next(iter(specs)): values}
        missing = sorted(set(specs) - set(values))
        if missing:
            raise _TFSError(400, f"Missing inputs: {missing}")
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise _TFSError(400, f"inputs {unknown} are not in the signature {sorted(specs)}")
        arrays: Arrays = {}
        for key, spec in specs.items():
            dtype = object if spec.dtype == self._tf.string else spec.dtype.as_numpy_dtype
            array = np.asarray(values[key], dtype=dtype)
            if not spec.shape.is_compatible_with(array.shape):
                raise _TFSError(
                    400,
                    f"input {key!r} has shape {list(array.shape)}, the signature wants"
                    f" {spec.shape}",
                )
            arrays[key] = array
        return arrays

    def _call(self, name: str, arrays: Arrays) -> Arrays:
        return self.loaded.run(name, arrays)


def _as_rows(outputs: Arrays) -> list[Any]:
    """TFS's row format: one value per row for one output, one object per row for several."""
    rows = {v.shape[0] if v.ndim else -1 for v in outputs.values()}
    if len(rows) != 1 or -1 in rows:
        raise _TFSError(
            400, "the outputs do not share a batch dimension: use the 'inputs' (columnar) form"
        )
    if len(outputs) == 1:
        only: list[Any] = _to_jsonable(next(iter(outputs.values())))
        return only
    columns = {k: _to_jsonable(v) for k, v in outputs.items()}
    return [{k: v[i] for k, v in columns.items()} for i in range(rows.pop())]


class _TFSRestServer:
    """TFS's REST port on 127.0.0.1, for handlers that POST to ``context.rest_uri`` themselves."""

    def __init__(self, tfs: TFServingPredict) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = tfs.handle(self.path, self.rfile.read(length))
                self._answer(status, payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == f"/v1/models/{tfs.model_name}":
                    self._answer(200, tfs.model_status())
                else:
                    self._answer(404, {"error": f"Servable not found: {self.path}"})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                LOG.debug("tfs rest: " + format, *args)

        self._server = LocalHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"tfs-rest-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _response(status: int, payload: dict[str, Any], url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(payload).encode()
    response.headers["Content-Type"] = "application/json"
    response.url = url
    response.encoding = "utf-8"
    return response


# --------------------------------------------------------------------------------------------
# One artifact, served as the container serves it


class ServedModel:
    """One unpacked artifact, served as the SageMaker TensorFlow Serving container serves it.

    ``rest_port``/``grpc_port`` only shape the ``context.rest_uri``/``grpc_port`` handed to a
    handler pair (their TFS calls are answered in-process); an artifact with a single
    ``handler`` gets a real TFS REST port on 127.0.0.1, since such handlers POST themselves.
    ``batching`` turns on dynamic batching of TFS predict calls (see :class:`BatchingConfig`);
    ``threads`` are the model server's pools (see :class:`ThreadPools`).
    Call :meth:`close` when done (it stops that port and forgets the artifact's modules).
    """

    def __init__(
        self,
        root: Path,
        rest_port: int = 8501,
        grpc_port: int = 9000,
        *,
        batching: BatchingConfig | None = None,
        threads: ThreadPools | None = None,
    ) -> None:
        self.root = root
        version_dir = find_saved_model(root)
        self.tfs = TFServingPredict(
            version_dir, _tfs_model_name(root, version_dir), batching=batching, threads=threads
        )
        self.grpc_port = str(grpc_port)
        self.imports: ArtifactImports | None = None
        self.handlers: ModuleType | None = None
        self._handler: Callable[..., Any] | None = None
        self._input_handler: Callable[..., Any] | None = None
        self._output_handler: Callable[..., Any] | None = None
        self._rest_server: _TFSRestServer | None = None
        self._rest_base = f"http://localhost:{rest_port}/v1/models/"
        self._closed = False
        code = root / "code"
        if (code / "inference.py").is_file():
            self._import_handlers(code)
        if self._handler is not None:
            self._rest_server = _TFSRestServer(self.tfs)
            self._rest_base = f"http://127.0.0.1:{self._rest_server.port}/v1/models/"

    def _import_handlers(self, code: Path) -> None:
        imports = ArtifactImports(code)
        try:
            module = imports.load_script(code / "inference.py", "inference")
        except Exception as exc:
            message = _explain_import_failure(code, exc, imports)
            imports.close()
            raise HandlerImportError(message) from exc
        # As in the container: handler wins, else both halves of the pair are required.
        if callable(getattr(module, "handler", None)):
            self._handler = module.handler
        elif callable(getattr(module, "input_handler", None)) and callable(
            getattr(module, "output_handler", None)
        ):
            self._input_handler = module.input_handler
            self._output_handler = module.output_handler
        else:
            imports.close()
            raise HandlerImportError(
                "code/inference.py defines neither handler(data, context) nor both"
                " input_handler(data, context) and output_handler(response, context)"
            )
        self.imports, self.handlers = imports, module

    @property
    def rest_uri(self) -> str:
        return f"{self._rest_base}{self.tfs.model_name}:predict"

    def _tfs_uri(self, attributes: Mapping[str, str]) -> str:
        uri = self._rest_base + attributes.get("tfs-model-name", self.tfs.model_name)
        if "tfs-model-version" in attributes:
            uri += "/versions/" + attributes["tfs-model-version"]
        return uri + ":" + attributes.get("tfs-method", "predict")

    def ping(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Stop the TFS REST port (if any) and forget the artifact's private modules."""
        if self._closed:
            return
        self._closed = True
        if self._rest_server is not None:
            self._rest_server.close()
        if self.imports is not None:
            self.imports.close()

    def invoke(
        self,
        body: bytes,
        content_type: str | None = DEFAULT_CONTENT_TYPE,
        accept: str | None = DEFAULT_ACCEPT,
        custom_attributes: str | None = None,
    ) -> Invocation:
        attributes = parse_tfs_attributes(custom_attributes)
        if self.handlers is None:
            return self._invoke_without_handlers(body, content_type, accept, attributes)
        context = Context(
            model_name=attributes.get("tfs-model-name"),
            model_version=attributes.get("tfs-model-version"),
            method=attributes.get("tfs-method"),
            rest_uri=self._tfs_uri(attributes),
            grpc_port=self.grpc_port,
            custom_attributes=custom_attributes,
            request_content_type=content_type or DEFAULT_CONTENT_TYPE,
            accept_header=accept or DEFAULT_ACCEPT,
            content_length=len(body),
        )
        try:
            if self._handler is not None:
                result, answer_type = self._handler(io.BytesIO(body), context)
            else:
                assert self._input_handler is not None and self._output_handler is not None
                request = self._input_handler(io.BytesIO(body), context)
                status, payload = self.tfs.handle(context.rest_uri, _as_bytes(request))
                result, answer_type = self._output_handler(
                    _response(status, payload, context.rest_uri), context
                )
            return Invocation(200, _as_bytes(result), answer_type or DEFAULT_CONTENT_TYPE)
        except Exception as exc:
            return Invocation(500, _error_body(str(exc)), "application/json")

    def _invoke_without_handlers(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        attributes: Mapping[str, str],
    ) -> Invocation:
        """What the container's nginx script does when the artifact has no ``inference.py``.

        JSON (``application/json``, ``jsonlines``, ``jsons``) passes through when it already is
        a TFS request, else becomes ``{"instances": ...}``; CSV rows become instances; any
        other content type is 415. TFS's status comes back as is.
        """
        media = (content_type or "").strip()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return Invocation(400, _error_body("request body is not UTF-8 text"), DEFAULT_ACCEPT)
        if media in JSON_CONTENT_TYPES:
            request = _json_to_tfs(text)
        elif media == "text/csv":
            request = _csv_to_tfs(text)
        else:
            message = f"Unsupported Media Type: {content_type or 'Unknown'}"
            return Invocation(415, _error_body(message), "application/json")
        status, payload = self.tfs.handle(self._tfs_uri(attributes), request.encode("utf-8"))
        answer_type = "application/json"
        if accept:
            accepted = accept.strip().replace(" ", "").split(",")
            if "application/json" in accepted or "application/jsonlines" in accepted:
                answer_type = accepted[0]
        return Invocation(status, json.dumps(payload).encode("utf-8"), answer_type)


def _json_to_tfs(text: str) -> str:
    if _TFS_JSON.search(text):
        return text
    if _JSON_LINES.search(text):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return '{"instances": [' + ",".join(lines) + "]}"
    if not re.match(r"^\s*\[\s*\[", text):
        text = "[" + text + "]"
    return '{"instances": ' + text + "}"


def _csv_to_tfs(text: str) -> str:
    rows = [row for row in csv.reader(io.StringIO(text.strip())) if row]
    numeric = bool(_NUMERIC_FIELD.match(text))

    def value(cell: str) -> Any:
        if numeric:
            with contextlib.suppress(ValueError):
                return json.loads(cell)
        return cell

    instances = [[value(c) for c in row] if len(row) > 1 else value(row[0]) for row in rows]
    return json.dumps({"instances": instances})


# --------------------------------------------------------------------------------------------
# Following a SageMaker control plane


class HostingError(Exception):
    """An InvokeEndpoint that SageMaker itself refuses (the caller sees ``code``)."""

    def __init__(self, message: str, code: str = "ValidationError", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class _LoadFailure(Exception):
    """Why an endpoint configuration cannot be served."""


@dataclass(frozen=True)
class ModelSource:
    """A SageMaker model's primary container, as the local host needs it."""

    model_name: str
    model_data_url: str
    environment: Mapping[str, str]


class LoadedModel:
    """A served artifact, shared by the configs that use it, retired once unused and idle."""

    def __init__(self, key: Hashable, source: ModelSource, served: ServedModel, sha256: str):
        self.key = key
        self.source = source
        self.served = served
        self.sha256 = sha256
        self.refs = 0  # prepared configs that use it (guarded by the hosting's lock)
        self._leases = 0
        self._retired = False
        self._lock = threading.Lock()

    def try_lease(self) -> bool:
        """Take a lease for one request; False once retired (route again)."""
        with self._lock:
            if self._retired:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            close = self._retired and self._leases == 0
        if close:
            self.served.close()

    def retire(self) -> None:
        """No new requests; close when the last in-flight one has finished."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            close = self._leases == 0
        if close:
            self.served.close()


@dataclass(frozen=True)
class PreparedVariant:
    name: str
    model: LoadedModel
    initial_weight: float


@dataclass(frozen=True)
class PreparedConfig:
    """Every model of one endpoint configuration, loaded and ready to take traffic."""

    name: str
    variants: Mapping[str, PreparedVariant]
    prepared_at: float


@dataclass(frozen=True)
class Deployment:
    """What one endpoint serves now; replaced as a whole, never changed in place."""

    endpoint_name: str
    config: PreparedConfig
    weights: Mapping[str, float]
    status: str
    arn: str = ""


@dataclass(frozen=True)
class EndpointView:
    """DescribeEndpoint, reduced to what routing needs."""

    name: str
    status: str
    config_name: str
    weights: Mapping[str, float | None]
    failure_reason: str | None = None
    arn: str = ""


@dataclass(frozen=True)
class InvokeResult:
    variant: str
    invocation: Invocation
    endpoint_arn: str = ""


def _view(description: Mapping[str, Any]) -> EndpointView:
    weights: dict[str, float | None] = {}
    for variant in description.get("ProductionVariants") or []:
        weight = variant.get("CurrentWeight", variant.get("DesiredWeight"))
        weights[variant["VariantName"]] = None if weight is None else float(weight)
    return EndpointView(
        name=description["EndpointName"],
        status=description.get("EndpointStatus", "InService"),
        config_name=description.get("EndpointConfigName", ""),
        weights=weights,
        failure_reason=description.get("FailureReason"),
        arn=description.get("EndpointArn", ""),
    )


def _parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise _LoadFailure(f"ModelDataUrl must be s3://bucket/key, got {url!r}")
    return parts.netloc, parts.path.lstrip("/")


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _client_error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


class LocalHosting:
    """The local SageMaker hosting service: every endpoint of a control plane, served.

    ``sagemaker_client`` and ``s3_client`` are boto3 clients (moto in-process or a moto server);
    ``cache_dir`` holds unpacked artifacts keyed by the S3 object's ETag, so re-use is free.
    :meth:`start` runs a watcher that polls the control plane every ``poll_interval`` seconds
    and follows CreateEndpoint, UpdateEndpoint, UpdateEndpointWeightsAndCapacities and
    DeleteEndpoint: a new configuration is loaded first, then swapped in atomically, then the
    old models are retired once their in-flight requests end, so no request fails in a switch.

    :meth:`prepare` loads every model of a configuration and returns None or a clear error, so
    it can be moto's endpoint deployer (``lambda endpoint, config: hosting.prepare(config)``).
    ``batching`` applies to every model whose container environment does not set
    ``SAGEMAKER_TFS_ENABLE_BATCHING`` (the environment wins). ``rng`` drives weighted routing.
    An endpoint that the control plane reports InService but whose models are still loading
    is waited for up to ``startup_wait_s`` (SageMaker would still say Creating). A config that
    failed to load is not retried by the watcher (its error shows in :meth:`status`, ``/ping``
    and every invocation); :meth:`prepare` retries it. While an endpoint is Updating, the
    variants in force keep serving, as in SageMaker; the switch happens once it is InService.
    """

    def __init__(
        self,
        sagemaker_client: Any,
        s3_client: Any,
        cache_dir: Path,
        *,
        poll_interval: float = 0.4,
        batching: BatchingConfig | None = None,
        rng: random.Random | None = None,
        startup_wait_s: float = 60.0,
        orphan_ttl_s: float = 120.0,
    ) -> None:
        self._sm = sagemaker_client
        self._s3 = s3_client
        self.cache_dir = Path(cache_dir)
        self.poll_interval = poll_interval
        self.batching = batching
        self.startup_wait_s = startup_wait_s
        self.orphan_ttl_s = orphan_ttl_s
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[Hashable, LoadedModel] = {}
        self._prepared: dict[str, PreparedConfig] = {}
        self._loading: dict[str, Future[str | None]] = {}
        self._failed: dict[str, str] = {}
        self._live: dict[str, Deployment] = {}
        self._views: dict[str, EndpointView] = {}
        self._synced = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hosting-load")
        self._closed = False
        self._last_watch_error = ""
        self._served_configs: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalHosting:
        """Read the control plane once, then keep following it on a watcher thread."""
        self.sync()
        self._watcher = threading.Thread(target=self._watch, name="hosting-watch", daemon=True)
        self._watcher.start()
        return self

    def close(self) -> None:
        """Stop watching, let loads finish, retire every model."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for future in self._loading.values():
                if not future.done():
                    future.set_result("the local hosting service was closed")
            self._loading.clear()
            models = list(self._models.values())
            self._models.clear()
            self._prepared.clear()
            self._live.clear()
            self._changed.notify_all()
        for model in models:
            model.retire()

    def __enter__(self) -> LocalHosting:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
                self._last_watch_error = ""
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_watch_error:
                    LOG.warning("reading the SageMaker control plane failed: %s", message)
                self._last_watch_error = message

    # -- following the control plane -------------------------------------------------------

    def sync(self) -> None:
        """One watcher pass: read every endpoint, load or switch what changed, drop the gone."""
        views = self._read_control_plane()
        with self._lock:
            self._views = views
            self._synced = True
            for view in views.values():
                self._reconcile(view)
            for name in [n for n in self._live if n not in views]:
                LOG.info("endpoint %s deleted: unloading", name)
                del self._live[name]
            self._release_unused()
            self._changed.notify_all()

    def _read_control_plane(self) -> dict[str, EndpointView]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self._sm.list_endpoints(**({"NextToken": token} if token else {}))
            names += [summary["EndpointName"] for summary in page.get("Endpoints", [])]
            token = page.get("NextToken")
            if not token:
                break
        views: dict[str, EndpointView] = {}
        for name in names:
            view = self._describe(name)
            if view is not None:
                views[name] = view
        return views

    def _describe(self, name: str) -> EndpointView | None:
        try:
            return _view(self._sm.describe_endpoint(EndpointName=name))
        except Exception as exc:
            if _client_error_code(exc) in ("ValidationException", "ValidationError"):
                return None
            raise

    def _reconcile(self, view: EndpointView) -> None:
        """Bring one endpoint's deployment in line with its view (lock held, no I/O)."""
        live = self._live.get(view.name)
        if view.status == "InService" and (live is None or live.config.name != view.config_name):
            prepared = self._prepared.get(view.config_name)
            if prepared is not None:
                self._switch(view, prepared)
            elif view.config_name not in self._failed:
                self._submit_load(view.config_name)
            return
        if live is None:
            return
        weights = (
            self._weights(live.config, view)
            if live.config.name == view.config_name
            else live.weights
        )
        if weights != live.weights or view.status != live.status:
            self._live[view.name] = Deployment(
                view.name, live.config, weights, view.status, view.arn
            )
            if weights != live.weights:
                LOG.info("endpoint %s: weights %s", view.name, dict(weights))

    @staticmethod
    def _weights(config: PreparedConfig, view: EndpointView) -> dict[str, float]:
        weights: dict[str, float] = {}
        for name, variant in config.variants.items():
            weight = view.weights.get(name)
            weights[name] = variant.initial_weight if weight is None else weight
        return weights

    def _switch(self, view: EndpointView, prepared: PreparedConfig) -> None:
        old = self._live.get(view.name)
        self._live[view.name] = Deployment(
            view.name, prepared, self._weights(prepared, view), view.status, view.arn
        )
        self._served_configs.add(prepared.name)
        LOG.info(
            "endpoint %s now serves %s (was %s)",
            view.name,
            prepared.name,
            old.config.name if old else "nothing",
        )
        self._changed.notify_all()

    def _release_unused(self) -> None:
        """Forget configs no endpoint serves: switched away from, or prepared and never used.

        A config prepared ahead of its switch (by moto's deployer) is kept for
        ``orphan_ttl_s``: long enough for the control plane to report it InService.
        """
        in_use = {deployment.config.name for deployment in self._live.values()}
        now = time.monotonic()
        for name, config in list(self._prepared.items()):
            if name in in_use:
                continue
            if name in self._served_configs or now - config.prepared_at > self.orphan_ttl_s:
                del self._prepared[name]
                self._served_configs.discard(name)
                self._release_models([v.model for v in config.variants.values()])

    def _release_models(self, models: Sequence[LoadedModel]) -> None:
        for model in models:
            model.refs -= 1
            if model.refs <= 0 and self._models.get(model.key) is model:
                del self._models[model.key]
                LOG.info("unloading %s (%s)", model.source.model_name, model.source.model_data_url)
                model.retire()

    # -- loading ----------------------------------------------------------------------------

    def prepare(self, endpoint_config_name: str) -> str | None:
        """Load (and keep) every model of a configuration; None when it can be served.

        Safe to call from any thread, at the same time as the watcher: one load per config.
        """
        with self._lock:
            if endpoint_config_name in self._prepared:
                return None
            self._failed.pop(endpoint_config_name, None)
            future, owner = self._begin_load(endpoint_config_name)
        if owner:
            self._run_load(endpoint_config_name, future)
        return future.result()

    def _begin_load(self, name: str) -> tuple[Future[str | None], bool]:
        future = self._loading.get(name)
        if future is not None:
            return future, False
        future = Future()
        self._loading[name] = future
        return future, True

    def _submit_load(self, name: str) -> None:
        future, owner = self._begin_load(name)
        if owner and not self._closed:
            self._executor.submit(self._run_load, name, future)

    def _run_load(self, name: str, future: Future[str | None]) -> None:
        error: str | None = None
        try:
            self._load_config(name)
        except _LoadFailure as exc:
            error = f"endpoint config {name}: {exc}"
        except Exception as exc:
            LOG.exception("loading endpoint config %s failed", name)
            error = f"endpoint config {name}: {type(exc).__name__}: {exc}"
        with self._lock:
            self._loading.pop(name, None)
            if error is None:
                for view in self._views.values():
                    self._reconcile(view)
                self._release_unused()
            else:
                LOG.warning("%s", error)
                self._failed[name] = error
            self._changed.notify_all()
        if not future.done():
            future.set_result(error)

    def _load_config(self, name: str) -> None:
        try:
            config = self._sm.describe_endpoint_config(EndpointConfigName=name)
        except Exception as exc:
            if not _client_error_code(exc):
                raise
            raise _LoadFailure(_client_error_message(exc)) from None
        variants_spec = config.get("ProductionVariants") or []
        if not variants_spec:
            raise _LoadFailure("no production variants")
        acquired: list[LoadedModel] = []
        variants: dict[str, PreparedVariant] = {}
        try:
            for spec in variants_spec:
                variant, model_name = spec["VariantName"], spec.get("ModelName", "")
                try:
                    model = self._acquire(self._model_source(model_name))
                except _LoadFailure as exc:
                    raise _LoadFailure(f"variant {variant} (model {model_name}): {exc}") from None
                acquired.append(model)
                weight = spec.get("InitialVariantWeight")
                variants[variant] = PreparedVariant(
                    variant, model, 1.0 if weight is None else float(weight)
                )
        except BaseException:
            with self._lock:
                self._release_models(acquired)
            raise
        with self._lock:
            self._prepared[name] = PreparedConfig(name, variants, time.monotonic())

    def _model_source(self, model_name: str) -> ModelSource:
        try:
            model = self._sm.describe_model(ModelName=model_name)
        except Exception as exc:
            if not _client_error_code(exc):
                raise
            raise _LoadFailure(f"model not found: {_client_error_message(exc)}") from None
        containers = model.get("Containers") or []
        container = model.get("PrimaryContainer") or (containers[0] if containers else None)
        if container is None:
            raise _LoadFailure("the model has no PrimaryContainer")
        if len(containers) > 1:
            raise _LoadFailure("inference pipelines (several containers) are not served locally")
        url = container.get("ModelDataUrl")
        if not url:
            raise _LoadFailure("the model's container has no ModelDataUrl (model.tar.gz)")
        return ModelSource(model_name, url, dict(container.get("Environment") or {}))

    def _acquire(self, source: ModelSource) -> LoadedModel:
        bucket, key = _parse_s3_url(source.model_data_url)
        try:
            etag = str(self._s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
        except Exception as exc:
            if not _client_error_code(exc):
                raise
            raise _LoadFailure(
                f"artifact {source.model_data_url} not found ({_client_error_message(exc)})"
            ) from None
        try:
            batching = BatchingConfig.from_environment(source.environment)
            threads = ThreadPools.from_environment(source.environment)
        except ValueError as exc:
            raise _LoadFailure(str(exc)) from None
        if "SAGEMAKER_TFS_ENABLE_BATCHING" not in source.environment:
            batching = self.batching
        model_key = (source.model_name, etag, batching)
        with self._lock:
            existing = self._models.get(model_key)
            if existing is not None:
                existing.refs += 1
                return existing
        root, sha256 = self._artifact_root(bucket, key, etag, source.model_data_url)
        try:
            served = ServedModel(root / "model", batching=batching, threads=threads)
        except HandlerImportError as exc:
            raise _LoadFailure(str(exc)) from None
        except Exception as exc:
            raise _LoadFailure(
                f"{source.model_data_url} is not loadable: {type(exc).__name__}: {exc}"
            ) from None
        model = LoadedModel(model_key, source, served, sha256)
        with self._lock:
            existing = self._models.get(model_key)
            if existing is not None:  # loaded meanwhile by another config: keep that one
                existing.refs += 1
                served.close()
                return existing
            model.refs = 1
            self._models[model_key] = model
        LOG.info("loaded %s (%s)", source.model_name, source.model_data_url)
        return model

    def _artifact_root(self, bucket: str, key: str, etag: str, url: str) -> tuple[Path, str]:
        """The unpacked artifact in the cache (downloaded and unpacked once per ETag)."""
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", etag) or hashlib.sha256(url.encode()).hexdigest()
        artifacts = self.cache_dir / "artifacts"
        dest = artifacts / safe
        info = dest / "artifact.json"
        if info.is_file():
            return dest, str(json.loads(info.read_text("utf-8"))["sha256"])
        artifacts.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{safe}-", dir=artifacts))
        try:
            archive = work / "model.tar.gz"
            sha256 = self._download(bucket, key, etag, archive, url)
            try:
                with tarfile.open(archive, mode="r:*") as tar:
                    tar.extractall(work / "model", filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise _LoadFailure(f"{url} is not a valid model.tar.gz: {exc}") from None
            archive.unlink()
            (work / "artifact.json").write_text(
                json.dumps({"url": url, "etag": etag, "sha256": sha256}), encoding="utf-8"
            )
            try:
                work.rename(dest)
            except OSError:
                if not info.is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dest, sha256

    def _download(self, bucket: str, key: str, etag: str, path: Path, url: str) -> str:
        digest = hashlib.sha256()
        response = self._s3.get_object(Bucket=bucket, Key=key)
        if str(response.get("ETag", etag)).strip('"') != etag:
            raise _LoadFailure(f"{url} changed while it was being fetched: try again")
        with open(path, "wb") as handle:
            for chunk in response["Body"].iter_chunks(1 << 20):
                digest.update(chunk)
                handle.write(chunk)
        return digest.hexdigest()

    # -- serving ----------------------------------------------------------------------------

    def invoke(
        self,
        endpoint_name: str,
        body: bytes,
        *,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> InvokeResult:
        """Route one InvokeEndpoint to a variant and let its container answer.

        Raises :class:`HostingError` where SageMaker refuses the call itself (unknown endpoint or
        variant, endpoint not in service); the container's own errors come back as an
        :class:`Invocation` with its status (the runtime turns them into ``ModelError``).
        """
        for _ in range(10):
            deployment = self._deployment_for(endpoint_name)
            variant = self._choose(deployment, target_variant)
            if variant.model.try_lease():
                break
        else:  # pragma: no cover - ten switches during one request
            raise HostingError(f"Endpoint {endpoint_name} is switching models: try again")
        try:
            invocation = variant.model.served.invoke(body, content_type, accept, custom_attributes)
        finally:
            variant.model.release()
        return InvokeResult(variant.name, invocation, deployment.arn)

    def _deployment_for(self, name: str) -> Deployment:
        deadline: float | None = None
        while True:
            live = self._live.get(name)
            if live is not None:
                if live.status in SERVING_STATUSES:
                    return live
                raise HostingError(f"Endpoint {name} is not in service (status {live.status}).")
            view = self._describe(name)
            if view is None:
                raise HostingError(f"Endpoint {name} not found.")
            if view.status != "InService":
                reason = f": {view.failure_reason}" if view.failure_reason else ""
                raise HostingError(
                    f"Endpoint {name} is not in service (status {view.status}){reason}."
                )
            with self._lock:
                error = self._failed.get(view.config_name)
                if error is not None:
                    raise HostingError(f"Endpoint {name} cannot be served locally: {error}")
                self._views[name] = view
                self._reconcile(view)
                if name in self._live:
                    continue
                now = time.monotonic()
                deadline = deadline or now + self.startup_wait_s
                if now >= deadline:
                    raise HostingError(
                        f"Endpoint {name} is still loading {view.config_name} after"
                        f" {self.startup_wait_s:.0f} s."
                    )
                self._changed.wait(min(deadline - now, 0.25))

    def _choose(self, deployment: Deployment, target_variant: str | None) -> PreparedVariant:
        variants = deployment.config.variants
        if target_variant is not None:
            chosen = variants.get(target_variant)
            if chosen is None:
                raise HostingError(
                    f"Variant {target_variant} not found for endpoint"
                    f" {deployment.endpoint_name}: it has {sorted(variants)}."
                )
            return chosen
        weighted = [(variants[n], w) for n, w in deployment.weights.items() if w > 0]
        total = sum(weight for _, weight in weighted)
        if total <= 0:
            raise HostingError(
                f"Endpoint {deployment.endpoint_name} has no variant with a weight above 0:"
                " name one with TargetVariant."
            )
        point = self._rng.random() * total
        for variant, weight in weighted:
            point -= weight
            if point < 0:
                return variant
        return weighted[-1][0]

    # -- health -----------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every endpoint in service serves its current configuration."""
        with self._lock:
            if not self._synced:
                return False
            for view in self._views.values():
                live = self._live.get(view.name)
                if view.status == "InService" and (
                    live is None or live.config.name != view.config_name
                ):
                    return False
            return True

    def status(self) -> dict[str, Any]:
        """Endpoints, what each serves (config, variants, weights, artifacts), load errors."""
        with self._lock:
            endpoints: dict[str, Any] = {}
            for name in sorted(set(self._views) | set(self._live)):
                view, live = self._views.get(name), self._live.get(name)
                entry: dict[str, Any] = {
                    "status": view.status if view else None,
                    "config": view.config_name if view else None,
                    "serving_config": live.config.name if live else None,
                }
                if live is not None:
                    entry["variants"] = {
                        v.name: {
                            "weight": live.weights[v.name],
                            "model": v.model.source.model_name,
                            "model_data_url": v.model.source.model_data_url,
                            "sha256": v.model.sha256,
                            "batching": _stats_dict(v.model.served.tfs.batch_stats),
                        }
                        for v in live.config.variants.values()
                    }
                endpoints[name] = entry
            return {
                "ready": self.ready(),
                "endpoints": endpoints,
                "loading": sorted(self._loading),
                "errors": dict(self._failed),
            }

    def deployment(self, endpoint_name: str) -> Deployment | None:
        """What an endpoint serves right now (None when nothing)."""
        return self._live.get(endpoint_name)


def _stats_dict(stats: BatchStats | None) -> dict[str, int] | None:
    if stats is None:
        return None
    return {
        "calls": stats.calls,
        "requests": stats.requests,
        "merged_requests": stats.merged_requests,
        "largest_batch_rows": stats.largest_batch_rows,
    }


__all__ = [
    "SERVING_STATUSES",
    "ArtifactImports",
    "BatchStats",
    "BatchingConfig",
    "Context",
    "Deployment",
    "HandlerImportError",
    "HostingError",
    "Invocation",
    "InvokeResult",
    "LoadedModel",
    "LocalHosting",
    "ServedModel",
    "TFServingPredict",
    "ThreadPools",
    "find_saved_model",
    "parse_tfs_attributes",
]
