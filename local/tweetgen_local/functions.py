"""Run each function as a warm Lambda would: in its own long-lived worker process.

Functions must never share environment variables or module state, and a cold start must be a
real one, so every function gets a worker process (``python -c`` + this module's
:func:`worker_main`) started with exactly the environment the template gives it plus Lambda's
runtime variables, and with ``sys.path`` = code folder + layer folders + the standard library +
this virtual environment's site-packages (where the pinned libraries live).

Worker protocol (JSON lines): the parent writes requests to the worker's stdin; the worker
answers on a duplicate of its original stdout. The handler's own stdout and stderr both go to
the worker's stderr pipe, which the parent collects as the invocation's logs; before each
answer the worker writes a marker line (``\\x1eTWEETGEN-MARK:<token>``) to that pipe so logs
are cut exactly per invocation.

- parent → worker: ``{"op": "init", "handler", "sys_path", "environment_keys", "function_name",
  "function_version", "memory_size", "log_group_name", "log_stream_name"}`` once, then
  ``{"op": "invoke", "request_id", "event", "invoked_function_arn", "deadline_ms"}`` per call.
- worker → parent: ``{"op": "ready", "token"}`` or ``{"op": "init_error", "error", "token"}``
  (then it exits); per call ``{"op": "result", "request_id", "payload", "duration_ms",
  "max_memory_mb", "token"}`` or ``{"op": "error", "request_id", "error", ...}``.

A worker that does not answer within the function's timeout is killed (its whole process
group) and the call fails with ``Task timed out after N.NN seconds``; a worker that dies is
replaced on the next call, which is a cold start again.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import queue
import resource
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from tweetgen_local.template import FunctionSpec, ResolveContext, ResolvedFunction, Template

_log = logging.getLogger(__name__)
_LOCAL_DIR = Path(__file__).resolve().parents[1]
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from tweetgen_local.functions import worker_main; worker_main()"
)
_MARK = "\x1eTWEETGEN-MARK:"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
INIT_TIMEOUT_S = 10.0


class FunctionNotFound(LookupError):
    """No function of the template has that logical id, name or ARN."""


class UnsupportedRuntime(RuntimeError):
    """Only Python functions run in the local workers."""


@dataclass
class InvocationResult:
    """What one invocation gave, as Lambda reports it."""

    payload: Any
    error: dict[str, Any] | None
    cold_start: bool
    init_ms: float | None
    duration_ms: float
    logs: str
    request_id: str = ""
    function_name: str = ""
    logical_id: str = ""
    max_memory_mb: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def error_shape(
    error_type: str, message: str, request_id: str = "", stack: list[str] | None = None
) -> dict[str, Any]:
    """The error document Lambda returns for a failed invocation."""
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": list(stack or []),
    }


def runtime_sys_path(function: ResolvedFunction) -> list[str]:
    """Code folder, layer folders, the standard library, then this venv's site-packages."""
    paths = [str(p) for p in function.import_paths]
    bases = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if (
            real
            and any(real.startswith(base + os.sep) for base in bases)
            and "site-packages" not in real
            and "dist-packages" not in real
        ):
            paths.append(entry)
    scheme = sysconfig.get_paths()
    paths.extend(scheme[key] for key in ("purelib", "platlib"))
    return list(dict.fromkeys(paths))


def lambda_environment(
    function: ResolvedFunction,
    ctx: ResolveContext,
    extra_env: Mapping[str, str] | None = None,
    env_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """Exactly what a worker's ``os.environ`` holds (the log stream name is added per worker).

    Lambda's runtime variables first, then the template's variables (with ``sam local``-style
    overrides applied to variables the template declares), then ``extra_env`` (the local
    stack's ``AWS_ENDPOINT_URL*``).
    """
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{function.timeout:g}",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime or 'python'}",
        "AWS_REGION": ctx.region,
        "AWS_DEFAULT_REGION": ctx.region,
        # What `sam local` sets; Powertools' Tracer stays off under it (no X-Ray daemon here).
        "AWS_SAM_LOCAL": "true",
        "_HANDLER": function.handler,
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PATH": os.environ.get("PATH", os.defpath),
        **FAKE_CREDENTIALS,
    }
    variables = dict(function.environment)
    if env_overrides:
        for section in ("Parameters", function.logical_id, function.name):
            for name, value in (env_overrides.get(section) or {}).items():
                if name in variables:
                    variables[name] = _env_text(value)
    env.update(variables)
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    return env


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def endpoint_environment(endpoints: Mapping[str, Any]) -> dict[str, str]:
    """``AWS_ENDPOINT_URL*`` variables for a local stack described by its endpoints.json."""
    env: dict[str, str] = {}
    if endpoints.get("aws"):
        env["AWS_ENDPOINT_URL"] = str(endpoints["aws"])
    if endpoints.get("sagemaker_runtime"):
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = str(endpoints["sagemaker_runtime"])
    return env


# --------------------------------------------------------------------------- parent side


class _LogCollector:
    """Reads a worker's stderr; hands out what came before each marker."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._cond = threading.Condition()
        self._chunks: list[str] = []
        self._marks: set[str] = set()
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="lambda-logs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            text = raw.decode("utf-8", "replace")
            at = text.find(_MARK)
            with self._cond:
                if at < 0:
                    self._chunks.append(text)
                else:
                    if at:
                        self._chunks.append(text[:at] + "\n")
                    self._marks.add(text[at + len(_MARK) :].strip())
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def take(self, token: str | None, timeout: float = 2.0) -> str:
        """Everything logged up to ``token``'s marker (or until EOF / ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while token is not None and token not in self._marks and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._marks.discard(token or "")
            text = "".join(self._chunks)
            self._chunks.clear()
            return text

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)


_TIMED_OUT = object()


class _Worker:
    """One execution environment: a worker process with its pipes and reader threads."""

    def __init__(
        self,
        function: ResolvedFunction,
        env: Mapping[str, str],
        sys_path: list[str],
        python: str,
        init_timeout: float,
    ) -> None:
        self.function = function
        self.log_stream_name = (
            time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{uuid.uuid4().hex}"
        )
        env = {**env, "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name}
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [python, "-c", _BOOTSTRAP, str(_LOCAL_DIR)],
            env=env,
            cwd=str(function.code_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self._stdin = self.process.stdin
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), name="lambda-proto", daemon=True
        )
        self._reader.start()
        self.logs = _LogCollector(self.process.stderr)
        self.init_error: dict[str, Any] | None = None
        self.init_logs = ""
        self.used = False
        sent = self._send(
            {
                "op": "init",
                "handler": function.handler,
                "sys_path": sys_path,
                "function_name": function.name,
                "function_version": "$LATEST",
                "memory_size": function.memory_size,
                "log_group_name": f"/aws/lambda/{function.name}",
                "log_stream_name": self.log_stream_name,
                "environment_keys": sorted(env),
            }
        )
        message = self._receive(init_timeout) if sent else None
        self.init_ms = (time.perf_counter() - started) * 1000
        if message is _TIMED_OUT:
            self.kill()
            self.init_error = error_shape(
                "Sandbox.Timedout", f"Task timed out after {init_timeout:.2f} seconds"
            )
        elif not isinstance(message, dict):
            self.init_error = self._exit_error("")
        elif message.get("op") != "ready":
            self.init_error = message.get("error") or error_shape("Runtime.Unknown", "init failed")
            self.kill()
        self.init_logs = self.logs.take(
            message.get("token") if isinstance(message, dict) else None, timeout=1.0
        )

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            try:
                self._messages.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self._messages.put(None)

    def _send(self, message: Mapping[str, Any]) -> bool:
        try:
            self._stdin.write(json.dumps(message).encode() + b"\n")
            self._stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def _receive(self, timeout: float) -> dict[str, Any] | object | None:
        try:
            return self._messages.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return _TIMED_OUT

    @property
    def alive(self) -> bool:
        return self.init_error is None and self.process.poll() is None

    def _exit_error(self, request_id: str) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        self.kill()
        status = (
            f"signal: {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
        )
        prefix = f"RequestId: {request_id} " if request_id else ""
        return error_shape(
            "Runtime.ExitError", f"{prefix}Error: Runtime exited with error: {status}", request_id
        )

    def invoke(
        self, event: Any, request_id: str, timeout: float
    ) -> tuple[Any, dict[str, Any] | None, float, float | None, str]:
        """Run one event; returns (payload, error, duration_ms, max_memory_mb, logs)."""
        self.used = True
        started = time.perf_counter()
        sent = self._send(
            {
                "op": "invoke",
                "request_id": request_id,
                "event": event,
                "invoked_function_arn": self.function.arn,
                "deadline_ms": (time.time() + timeout) * 1000,
            }
        )
        message = self._receive(timeout) if sent else None
        elapsed = (time.perf_counter() - started) * 1000
        if message is _TIMED_OUT:
            self.kill()
            logs = self.logs.take(None, timeout=0.5)
            error = error_shape(
                "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds", request_id
            )
            return None, error, elapsed, None, logs
        if not isinstance(message, dict):
            error = self._exit_error(request_id)
            return None, error, elapsed, None, self.logs.take(None, timeout=0.5)
        logs = self.logs.take(message.get("token"))
        duration = float(message.get("duration_ms", elapsed))
        memory = message.get("max_memory_mb")
        if message.get("op") == "result":
            return message.get("payload"), None, duration, memory, logs
        return None, message.get("error"), duration, memory, logs

    def close(self, grace: float = 1.0) -> None:
        """Let the worker end on EOF, then make sure its whole process group is gone."""
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self._stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.close()  # type: ignore[union-attr]
        self.logs.join(1.0)
        self._reader.join(1.0)


def _kill_workers(workers: set[_Worker]) -> None:
    for worker in list(workers):
        worker.kill()
    workers.clear()


@dataclass
class _Slot:
    """The execution environments of one function."""

    function: ResolvedFunction
    env: dict[str, str]
    sys_path: list[str]
    idle: list[_Worker] = field(default_factory=list)
    busy: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)


class FunctionPool:
    """The template's functions as warm Lambdas, one worker process per execution environment.

    ``ctx`` must hold whatever the functions' environment variables refer to (provision the
    stack first); each function is resolved when it is first invoked. ``extra_env`` is added
    to every function (the local stack's ``AWS_ENDPOINT_URL*``); ``env_overrides`` has
    ``sam local``'s ``--env-vars`` format. At most ``max_environments`` workers run per
    function: further concurrent calls wait for one to be free, as with reserved concurrency.
    """

    def __init__(
        self,
        template: Template,
        ctx: ResolveContext,
        extra_env: Mapping[str, str] | None = None,
        *,
        env_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        python: str | None = None,
        max_environments: int = 1,
        init_timeout: float = INIT_TIMEOUT_S,
    ) -> None:
        self.template = template
        self.ctx = ctx
        self.extra_env = dict(extra_env or {})
        self.env_overrides = dict(env_overrides or {})
        self.python = python or sys.executable
        self.max_environments = max(1, max_environments)
        self.init_timeout = init_timeout
        template.register_functions(ctx)
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._workers: set[_Worker] = set()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_workers, self._workers)

    def __enter__(self) -> FunctionPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def logical_id(self, ref: str) -> str:
        """The logical id for a logical id, a physical name or a (qualified) function ARN."""
        if ref in self.template.functions:
            return ref
        name = ref
        if ref.startswith("arn:"):
            parts = ref.split(":")
            if len(parts) >= 7 and parts[2] == "lambda" and parts[5] == "function":
                name = parts[6]
        for logical_id, spec in self.template.functions.items():
            if spec.physical_name(self.ctx) == name:
                return logical_id
        known = ", ".join(sorted(self.template.functions)) or "none"
        raise FunctionNotFound(f"no function {ref!r} in the template (functions: {known})")

    def spec(self, ref: str) -> FunctionSpec:
        return self.template.functions[self.logical_id(ref)]

    def resolved(self, ref: str) -> ResolvedFunction:
        return self._slot(ref).function

    def environment(self, ref: str) -> dict[str, str]:
        """The environment a worker of this function starts with (less its log stream name)."""
        return dict(self._slot(ref).env)

    def _slot(self, ref: str) -> _Slot:
        logical_id = self.logical_id(ref)
        with self._lock:
            slot = self._slots.get(logical_id)
            if slot is None:
                function = self.template.functions[logical_id].resolve(self.ctx)
                self._check_runtime(function)
                slot = _Slot(
                    function=function,
                    env=lambda_environment(function, self.ctx, self.extra_env, self.env_overrides),
                    sys_path=runtime_sys_path(function),
                )
                self._slots[logical_id] = slot
            return slot

    def _check_runtime(self, function: ResolvedFunction) -> None:
        runtime = str(function.runtime or "")
        if runtime and not runtime.startswith("python"):
            raise UnsupportedRuntime(
                f"{function.logical_id}: runtime {runtime} cannot run here (Python only)"
            )
        if self.python == sys.executable:
            here = f"python{sys.version_info.major}.{sys.version_info.minor}"
            if runtime and runtime != here:
                _log.warning(
                    "%s declares %s; it runs on this environment's %s",
                    function.logical_id,
                    runtime,
                    here,
                )

    def _acquire(self, slot: _Slot) -> _Worker | None:
        with slot.cond:
            while True:
                while slot.idle:
                    worker = slot.idle.pop()
                    if worker.alive:
                        slot.busy += 1
                        return worker
                    self._forget(worker)
                if slot.busy < self.max_environments:
                    slot.busy += 1
                    return None
                slot.cond.wait()

    def _release(self, slot: _Slot, worker: _Worker | None) -> None:
        with slot.cond:
            slot.busy -= 1
            if worker is not None and worker.alive and not self._closed:
                slot.idle.append(worker)
            elif worker is not None:
                self._forget(worker)
            slot.cond.notify()

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._workers.discard(worker)

    def _spawn(self, slot: _Slot) -> _Worker:
        # Lambda gives init 10 s, or the function's timeout when that is longer.
        init_timeout = max(self.init_timeout, slot.function.timeout)
        worker = _Worker(slot.function, slot.env, slot.sys_path, self.python, init_timeout)
        with self._lock:
            self._workers.add(worker)
            closed = self._closed
        if closed:
            self._forget(worker)
        return worker

    def invoke(self, ref: str, event: Any, *, timeout: float | None = None) -> InvocationResult:
        """Invoke one function synchronously (RequestResponse), as Lambda would."""
        if self._closed:
            raise RuntimeError("the function pool is closed")
        slot = self._slot(ref)
        function = slot.function
        limit = function.timeout if timeout is None else timeout
        request_id = str(uuid.uuid4())
        json.dumps(event)  # an event must be JSON, as it is on the wire
        worker = self._acquire(slot)
        try:
            cold = worker is None
            init_logs = ""
            init_ms: float | None = None
            if worker is None:
                worker = self._spawn(slot)
                init_logs, init_ms = worker.init_logs, worker.init_ms
                if worker.init_error is not None:
                    init_error = dict(worker.init_error, requestId=request_id)
                    logs = _lambda_logs(
                        init_logs, "", request_id, function, 0.0, None, init_ms, init_error
                    )
                    return InvocationResult(
                        payload=None,
                        error=init_error,
                        cold_start=True,
                        init_ms=init_ms,
                        duration_ms=0.0,
                        logs=logs,
                        request_id=request_id,
                        function_name=function.name,
                        logical_id=function.logical_id,
                    )
            payload, error, duration, memory, logs = worker.invoke(event, request_id, limit)
            return InvocationResult(
                payload=payload,
                error=error,
                cold_start=cold,
                init_ms=init_ms,
                duration_ms=duration,
                logs=_lambda_logs(
                    init_logs, logs, request_id, function, duration, memory, init_ms, error
                ),
                request_id=request_id,
                function_name=function.name,
                logical_id=function.logical_id,
                max_memory_mb=memory,
            )
        finally:
            self._release(slot, worker)

    def reset(self, ref: str | None = None) -> None:
        """End the idle workers (of one function, or all): the next call is a cold start."""
        logical_id = None if ref is None else self.logical_id(ref)
        with self._lock:
            slots = [slot for key, slot in self._slots.items() if logical_id in (None, key)]
        for slot in slots:
            with slot.cond:
                idle, slot.idle = slot.idle, []
            for worker in idle:
                self._forget(worker)

    def close(self) -> None:
        """End every worker process (no orphans); later invocations are refused."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.close(grace=0.5)
        for slot in self._slots.values():
            with slot.cond:
                slot.idle.clear()
                slot.cond.notify_all()


def _lambda_logs(
    init_logs: str,
    logs: str,
    request_id: str,
    function: ResolvedFunction,
    duration_ms: float,
    memory_mb: float | None,
    init_ms: float | None,
    error: Mapping[str, Any] | None,
) -> str:
    """The CloudWatch lines Lambda writes around an invocation."""
    lines = [init_logs] if init_logs else []
    lines.append(f"START RequestId: {request_id} Version: $LATEST\n")
    if logs:
        lines.append(logs if logs.endswith("\n") else logs + "\n")
    if error is not None and error.get("errorType") == "Sandbox.Timedout":
        lines.append(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')}Z {request_id} {error['errorMessage']}\n"
        )
    lines.append(f"END RequestId: {request_id}\n")
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {int(duration_ms) + 1} ms\tMemory Size: {function.memory_size} MB\t"
        f"Max Memory Used: {int(memory_mb or 0)} MB"
    )
    if init_ms is not None:
        report += f"\tInit Duration: {init_ms:.2f} ms"
    lines.append(report + "\n")
    return "".join(lines)


# --------------------------------------------------------------------------- worker side


class LambdaCognitoIdentity:
    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


class LambdaContext:
    """The context object of the Python runtime (the fields its ``LambdaContext`` has)."""

    def __init__(
        self,
        *,
        function_name: str,
        function_version: str,
        invoked_function_arn: str,
        memory_limit_in_mb: str,
        aws_request_id: str,
        log_group_name: str,
        log_stream_name: str,
        deadline_ms: float,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        # The Python runtime reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE: text, not a number.
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self.identity = LambdaCognitoIdentity()
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, message: str) -> None:
        sys.stdout.write(message)

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"function_name={self.function_name},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


class _Fault(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


def _json_default(value: Any) -> Any:
    """The Python runtime marshals Decimals (DynamoDB numbers) as numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _exception_error(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # drop the runtime's own frame
    return error_shape(type(exc).__name__, str(exc), request_id, traceback.format_list(frames))


def _load_handler(spec: str) -> Callable[[Any, Any], Any]:
    try:
        module_name, attribute = spec.rsplit(".", 1)
    except ValueError as exc:
        raise _Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {exc}") from None
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _Fault(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from None
    except SyntaxError as exc:
        raise _Fault(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        ) from None
    handler = getattr(module, attribute, None)
    if handler is None:
        raise _Fault(
            "Runtime.HandlerNotFound", f"Handler '{attribute}' missing on module '{module_name}'"
        )
    return handler


def _isolate_imports(sys_path: list[str]) -> None:
    """Only the function's folders, the stdlib and site-packages; no editable-install finders."""
    sys.path[:] = sys_path

    def foreign(item: object) -> bool:
        return str(getattr(item, "__module__", "") or "").startswith("__editable__")

    sys.meta_path[:] = [finder for finder in sys.meta_path if not foreign(finder)]
    sys.path_hooks[:] = [hook for hook in sys.path_hooks if not foreign(hook)]
    sys.path_importer_cache.clear()
    for name in list(sys.modules):
        if name == "tweetgen_local" or name.startswith("tweetgen_local."):
            del sys.modules[name]
    importlib.invalidate_caches()


def _watch_parent() -> None:
    """A worker whose parent died ends itself: no orphans even after a crash."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _trace_header() -> str:
    return (
        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
        f"Parent={uuid.uuid4().hex[:16]};Sampled=0"
    )


def worker_main() -> None:
    """The worker process: init once, then answer invocations until stdin closes."""
    proto_out = os.fdopen(os.dup(1), "wb")
    proto_in = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the handler's stdout is a log stream, not the protocol
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()

    def send(message: dict[str, Any], token: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(2, f"{_MARK}{token}\n".encode())
        try:
            line = json.dumps({**message, "token": token}, default=_json_default)
        except (TypeError, ValueError) as exc:
            request_id = str(message.get("request_id", ""))
            error = error_shape(
                "Runtime.MarshalError", f"Unable to marshal response: {exc}", request_id
            )
            kept = {k: message[k] for k in ("duration_ms", "max_memory_mb") if k in message}
            line = json.dumps(
                {"op": "error", "request_id": request_id, "error": error, "token": token, **kept}
            )
        proto_out.write(line.encode() + b"\n")
        proto_out.flush()

    init = json.loads(proto_in.readline() or "{}")
    request_filter = _RequestIdFilter()
    handler_stream = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler_stream.setFormatter(formatter)
    handler_stream.addFilter(request_filter)
    logging.getLogger().addHandler(handler_stream)

    _isolate_imports(list(init.get("sys_path") or []))
    # The interpreter may add variables at start-up (LC_CTYPE when it coerces the C locale).
    expected = set(init.get("environment_keys") or os.environ)
    for name in set(os.environ) - expected:
        del os.environ[name]
    try:
        handler = _load_handler(str(init.get("handler", "")))
    except _Fault as fault:
        print(f"[ERROR] {fault.error_type}: {fault}", flush=True)
        send({"op": "init_error", "error": error_shape(fault.error_type, str(fault))}, "init")
        os._exit(0)
    except Exception as exc:
        print(f"[ERROR] {type(exc).__name__}: {exc}", flush=True)
        send({"op": "init_error", "error": _exception_error(exc)}, "init")
        os._exit(0)
    send({"op": "ready"}, "init")

    for line in iter(proto_in.readline, b""):
        message = json.loads(line)
        if message.get("op") != "invoke":
            continue
        request_id = str(message["request_id"])
        request_filter.request_id = request_id
        os.environ["_X_AMZN_TRACE_ID"] = _trace_header()
        context = LambdaContext(
            function_name=str(init.get("function_name")),
            function_version=str(init.get("function_version", "$LATEST")),
            invoked_function_arn=str(message.get("invoked_function_arn")),
            memory_limit_in_mb=str(init.get("memory_size")),
            aws_request_id=request_id,
            log_group_name=str(init.get("log_group_name")),
            log_stream_name=str(init.get("log_stream_name")),
            deadline_ms=float(message["deadline_ms"]),
        )
        started = time.perf_counter()
        answer: dict[str, Any]
        try:
            payload = handler(message.get("event"), context)
            answer = {"op": "result", "request_id": request_id, "payload": payload}
        except Exception as exc:
            error = _exception_error(exc, request_id)
            print(
                f"[ERROR] {error['errorType']}: {error['errorMessage']}\n"
                + "Traceback (most recent call last):\n"
                + "".join(error["stackTrace"]),
                end="",
                flush=True,
            )
            answer = {"op": "error", "request_id": request_id, "error": error}
        answer["duration_ms"] = (time.perf_counter() - started) * 1000
        answer["max_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        send(answer, request_id)
    sys.stdout.flush()
    os._exit(0)


# --------------------------------------------------------------------------- tweetgen invoke

INVOKE_SUMMARY = "run one function of the template as `sam local invoke` would, without Docker"


def add_invoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="LOGICAL_ID", help="the function's logical id")
    parser.add_argument(
        "-e", "--event", default=None, help="JSON event file ('-' reads stdin; default: {})"
    )
    parser.add_argument(
        "-n",
        "--env-vars",
        type=Path,
        default=None,
        help='JSON overrides in sam\'s format: {"LogicalId": {"VAR": "value"}, "Parameters": {...}}',
    )
    parser.add_argument(
        "-t", "--template", type=Path, default=Path("template.yaml"), help="the SAM template"
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter values",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".tweetgen/local"),
        help="a running local stack's folder (its endpoints.json is used when it answers)",
    )
    parser.add_argument("--region", default=None, help="default: the local stack's or us-east-1")
    parser.add_argument("--stack-name", default=None, help="default: tweetgen")


def invoke_command(argv: list[str] | None = None) -> int:
    """``tweetgen invoke`` on its own: parse ``argv`` and run it."""
    import argparse

    from tweetgen_build.cli import PROG, run

    parser = argparse.ArgumentParser(prog=f"{PROG} invoke", description=INVOKE_SUMMARY)
    add_invoke_arguments(parser)
    return run(run_invoke, parser.parse_args(argv))


def _read_json(path: str | Path, what: str) -> Any:
    from tweetgen_build.errors import InputError

    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not JSON: {exc}") from None


def _parse_overrides(items: list[str]) -> dict[str, str]:
    from tweetgen_build.errors import InputError

    values: dict[str, str] = {}
    for item in items:
        if item.startswith("ParameterKey="):
            key_part, _, value_part = item.partition(",")
            values[key_part.split("=", 1)[1]] = value_part.split("=", 1)[1] if value_part else ""
            continue
        if "=" not in item:
            raise InputError(f"expected KEY=VALUE in --parameter-overrides, got {item!r}")
        key, value = item.split("=", 1)
        values[key] = value
    return values


def running_stack(state_dir: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """The local stack's endpoints.json when it exists and its AWS endpoint answers.

    A stack that is not running refuses the connection at once; ``timeout`` only bounds the
    wait for one that is busy (loading a model, say), which must not be taken for gone.
    """
    import urllib.error
    import urllib.request

    try:
        endpoints = json.loads((state_dir / "endpoints.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    url = endpoints.get("aws") if isinstance(endpoints, dict) else None
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"{str(url).rstrip('/')}/moto-api/", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return endpoints


def run_invoke(args: argparse.Namespace) -> int:
    """Invoke one function; payload on stdout, logs on stderr; 1 when the handler failed."""
    from tweetgen_build.errors import InputError

    from tweetgen_local.template import Template, TemplateError

    try:
        template = Template.load(args.template, _parse_overrides(args.parameter_overrides))
        event = {} if args.event is None else _read_json(args.event, "event")
        env_overrides = _read_json(args.env_vars, "--env-vars file") if args.env_vars else None
        endpoints = running_stack(args.state_dir)
        region = (
            args.region
            or (endpoints or {}).get("region")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        ctx = template.context(
            region=region,
            stack_name=args.stack_name or (endpoints or {}).get("stack_name") or "tweetgen",
        )
        if args.function not in template.functions and not any(
            spec.physical_name(ctx) == args.function for spec in template.functions.values()
        ):
            known = ", ".join(sorted(template.functions)) or "none"
            raise InputError(
                f"no function {args.function!r} in {args.template} (functions: {known})"
            )
        if env_overrides is not None and not isinstance(env_overrides, dict):
            raise InputError(f"--env-vars file {args.env_vars} must hold a JSON object")
        with (
            _aws_for_invoke(template, ctx, endpoints) as aws_env,
            FunctionPool(
                template,
                ctx,
                {**aws_env, "DATABASE_URL": _database_for_invoke(args.state_dir, endpoints)},
                env_overrides=env_overrides,
            ) as pool,
        ):
            result = pool.invoke(args.function, event)
    except TemplateError as exc:
        raise InputError(str(exc)) from None
    sys.stderr.write(result.logs)
    sys.stderr.flush()
    if result.error is not None:
        print(json.dumps(result.error))
        return 1
    print(json.dumps(result.payload))
    return 0


def _database_for_invoke(state_dir: Path, endpoints: Mapping[str, Any] | None) -> str:
    """The running stack's database; else SQLite in the state dir, migrated as a deploy would."""
    from tweetgen.adapters.database import Database

    from tweetgen_local.stack import default_database_url, stack_database_url

    if endpoints is not None:
        return stack_database_url(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    url = default_database_url(state_dir)
    Database.from_url(url).migrate()
    return url


@contextlib.contextmanager
def _aws_for_invoke(
    template: Template, ctx: ResolveContext, endpoints: Mapping[str, Any] | None
) -> Any:
    """Point the function at the running local stack, or at a moto server for this call.

    A worker process cannot see an in-process moto of ours, so without a local stack a
    ``ThreadedMotoServer`` on a free localhost port holds the template's resources for the
    duration of the call.
    """
    import boto3

    from tweetgen_local.wiring import AwsClients, provision

    def session() -> Any:
        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            region_name=ctx.region,
        )

    if endpoints is not None:
        provision(template, ctx, AwsClients(session(), str(endpoints["aws"])), create=False)
        yield endpoint_environment(endpoints)
        return
    from moto.server import ThreadedMotoServer

    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)  # stderr carries the function's logs, not moto's
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        provision(template, ctx, AwsClients(session(), url), create=True)
        yield {"AWS_ENDPOINT_URL": url}
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            server._server.server_close()  # type: ignore[union-attr]
        werkzeug_log.setLevel(level)
