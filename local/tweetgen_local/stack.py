"""``tweetgen local up``: the docker-free local stack in one foreground process.

moto runs in server mode inside this process (so the gap fillers patch the same backends the
server answers from), next to the local SageMaker hosting, the function workers and the
template-driven triggers. Every URL goes into ``STATE_DIR/endpoints.json``; a lock file
makes a second ``local up`` on the same state dir say that one is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tweetgen_local.functions import FAKE_CREDENTIALS

DEFAULT_STATE_DIR = Path(".tweetgen/local")
DEFAULT_REGION = "us-east-1"
ENDPOINT_NAME = "tweetgen"
SFN_UNSUPPORTED_INTEGRATION_LOGGER = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service"
    ".state_task_service_unsupported"
)


class AlreadyRunning(RuntimeError):
    """Another ``local up`` holds this state dir."""


@dataclass
class StateDir:
    """The state dir: its lock, its endpoints.json and the model cache."""

    path: Path
    _lock: IO[str] | None = field(default=None, repr=False)

    @property
    def endpoints_file(self) -> Path:
        return self.path / "endpoints.json"

    @property
    def lock_file(self) -> Path:
        return self.path / "local.lock"

    @property
    def cache_dir(self) -> Path:
        return self.path / "models"

    def acquire(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise AlreadyRunning(
                f"a local stack is already running on {self.path} (pid {owner});"
                f" its URLs are in {self.endpoints_file}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.endpoints_file.unlink()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def write_endpoints(self, endpoints: dict[str, Any]) -> None:
        tmp = self.endpoints_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(endpoints, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.endpoints_file)


def read_endpoints(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The URLs of the local stack running on ``state_dir``, or None when none runs."""
    state = StateDir(state_dir)
    if not state.endpoints_file.is_file():
        return None
    try:
        state.path.mkdir(parents=True, exist_ok=True)
        with open(state.lock_file, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None  # a stale file: nobody holds the lock
    except BlockingIOError:
        data: dict[str, Any] = json.loads(state.endpoints_file.read_text(encoding="utf-8"))
        return data


class MotoService:
    """moto's server, in this process, with Step Functions' real ASL interpreter switched on."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self.port = port or free_port(host)
        self._server = ThreadedMotoServer(ip_address=host, port=self.port, verbose=False)
        self.url = ""

    def start(self) -> str:
        from moto.core.config import default_user_config
        from moto.moto_api._internal.models import moto_api_backend

        # moto's server logs every request; the stack prints its own summary instead.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # The rollout's SageMaker tasks are "optimised integrations" moto's interpreter does not
        # know: it forwards them to its own SageMaker (what the stack relies on) with a warning
        # at every task of every rollout.
        logging.getLogger(SFN_UNSUPPORTED_INTEGRATION_LOGGER).setLevel(logging.ERROR)
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        default_user_config["lambda"] = {"use_docker": False}
        # The state-machine interpreter calls SageMaker and other services on this port.
        os.environ["MOTO_PORT"] = str(self.port)
        # moto's backends live in this process: a new stack starts from an empty account.
        moto_api_backend.reset()
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        from moto.moto_api._internal.models import moto_api_backend

        self._server.stop()
        moto_api_backend.reset()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_signal(stop: threading.Event, on_stop: Callable[[], None]) -> None:
    """Block until Ctrl-C / SIGTERM, then stop everything once."""

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        on_stop()


@dataclass
class StackOptions:
    state_dir: Path = DEFAULT_STATE_DIR
    template: Path | None = Path("template.yaml")
    region: str = DEFAULT_REGION
    host: str = "127.0.0.1"
    aws_port: int = 0
    runtime_port: int = 0
    api_port: int = 0
    #: The local web server's port (default: a free one): GraphQL at /graphql, the
    #: dashboard at /dashboard.
    web_port: int = 0
    parameter_overrides: dict[str, Any] = field(default_factory=dict)
    #: The functions' database; None: SQLite in the state dir.
    database_url: str | None = None


class LocalStack:
    """Everything ``tweetgen local up`` runs, started and stopped in order."""

    def __init__(self, options: StackOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.log = log
        self.state = StateDir(options.state_dir)
        self.endpoints: dict[str, Any] = {}
        self._stops: list[Callable[[], None]] = []
        self.hosting: Any = None
        self.runtime: Any = None
        self.pool: Any = None
        self.wiring: Any = None
        self.web: Any = None
        self.ctx: Any = None
        self.report: Any = None

    def start(self) -> dict[str, Any]:
        self.state.acquire()
        self._stops.append(self.state.release)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> dict[str, Any]:
        import boto3

        from tweetgen_local import moto_gaps
        from tweetgen_local.hosting import LocalHosting
        from tweetgen_local.runtime import RuntimeServer

        started = time.perf_counter()
        opts = self.options
        for key, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        moto = MotoService(opts.host, opts.aws_port)
        aws_url = moto.start()
        self._stops.append(moto.stop)
        moto_gaps.install()
        self._stops.append(moto_gaps.uninstall)
        self.log(f"local AWS (moto) at {aws_url}")

        session = boto3.session.Session(region_name=opts.region)
        template, ctx = self._provision(session, aws_url)

        self.hosting = LocalHosting(
            session.client("sagemaker", endpoint_url=aws_url),
            session.client("s3", endpoint_url=aws_url),
            self.state.cache_dir,
        )
        self.hosting.start()
        self._stops.append(self.hosting.close)
        moto_gaps.set_endpoint_deployer(lambda _endpoint, config: self.hosting.prepare(config))
        # Switch the moment the control plane does, not at the next poll.
        moto_gaps.set_endpoint_listener(lambda _endpoint: self.hosting.sync())
        runtime = RuntimeServer(self.hosting, opts.host, opts.runtime_port, region=opts.region)
        self.runtime = runtime
        runtime.start()
        self._stops.append(runtime.close)
        self.log(f"local SageMaker runtime at {runtime.url}")

        self.endpoints = {
            "aws": aws_url,
            "sagemaker_runtime": runtime.url,
            "api": None,
            "graphql": None,
            "dashboard": None,
            "region": opts.region,
            "artifact_bucket": None,
            "endpoint_name": ENDPOINT_NAME,
        }
        if template is not None:
            self._start_functions(template, ctx, session, aws_url)
        self.state.write_endpoints(self.endpoints)
        self.log(
            f"ready in {time.perf_counter() - started:.1f}s; URLs in {self.state.endpoints_file}"
        )
        return self.endpoints

    def _provision(self, session: Any, aws_url: str) -> tuple[Any, Any]:
        template_path = self.options.template
        if template_path is None or not template_path.is_file():
            self.log(f"no template at {template_path}: no functions or triggers to wire")
            return None, None
        from tweetgen_local.template import Template
        from tweetgen_local.wiring import AwsClients, provision

        template = Template.load(template_path, self.options.parameter_overrides)
        self.ctx = template.context(
            region=self.options.region, parameter_overrides=self.options.parameter_overrides
        )
        self.report = provision(
            template, self.ctx, AwsClients(session, aws_url, self.options.region)
        )
        self.log(self.report.summary())
        return template, self.ctx

    def _start_functions(self, template: Any, ctx: Any, session: Any, aws_url: str) -> None:
        from tweetgen_local import moto_gaps
        from tweetgen_local.custom_resources import run_custom_resources
        from tweetgen_local.functions import FunctionPool, endpoint_environment
        from tweetgen_local.wiring import LocalWiring

        database_url = self.options.database_url or default_database_url(self.state.path)
        self.endpoints["database"] = _masked(database_url)
        # For `tweetgen invoke` against this stack; the URL may hold a password.
        url_file = self.state.path / DATABASE_URL_FILE
        url_file.touch(mode=0o600)
        url_file.write_text(database_url, encoding="utf-8")
        environment = {**endpoint_environment(self.endpoints), "DATABASE_URL": database_url}
        self.pool = FunctionPool(template, ctx, extra_env=environment)
        self._stops.append(self.pool.close)
        # Before the functions go: no execution outlives the stack to act on the next one.
        stepfunctions = session.client("stepfunctions", endpoint_url=aws_url)
        self._stops.append(lambda: self._stop_executions(stepfunctions))
        run_custom_resources(template, ctx, self.pool, self.log)

        def invoke(function: str, payload: Any) -> Any:
            result = self.pool.invoke(function, payload)
            if result.error is not None:
                raise moto_gaps.LambdaFunctionError(
                    result.error.get("errorType", "Error"), result.error.get("errorMessage", "")
                )
            return result.payload

        moto_gaps.set_lambda_invoker(invoke)
        self.wiring = LocalWiring(
            template,
            self.pool,
            session=session,
            endpoint_url=aws_url,
            api_host=self.options.host,
            api_port=self.options.api_port,
        )
        self.wiring.report = self.report  # provisioned above; not twice
        self.wiring.start()
        self._stops.append(self.wiring.stop)
        self.endpoints["api"] = self.wiring.api_url
        bucket = ctx.resources.get("ArtifactBucket", {}).get("Ref")
        self.endpoints["artifact_bucket"] = bucket
        if self.wiring.api_url:
            self.log(f"REST API at {self.wiring.api_url}")
        self._start_web(template, ctx)

    def _stop_executions(self, stepfunctions: Any, timeout_s: float = 60.0) -> None:
        """Stop the state machines' running executions and wait until each has ended.

        moto's backends are shared by every stack this process runs, and an execution runs
        on its own thread: left running, a rollout of a stopped stack would go on to change
        the endpoint of the next one. Stopped, each ends after its current state, which the
        functions (still up) answer.
        """
        from tweetgen_local import moto_gaps

        stopped = 0
        for page in stepfunctions.get_paginator("list_state_machines").paginate():
            for machine in page["stateMachines"]:
                running = stepfunctions.get_paginator("list_executions").paginate(
                    stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"
                )
                for listed in running:
                    for execution in listed["executions"]:
                        stepfunctions.stop_execution(
                            executionArn=execution["executionArn"],
                            error="StackStopped",
                            cause="the local stack stopped",
                        )
                        stopped += 1
        if stopped:
            self.log(f"stopped {stopped} running execution(s)")
        if not moto_gaps.wait_for_executions(timeout_s):
            self.log(f"executions still running after {timeout_s:.0f}s")

    def _start_web(self, template: Any, ctx: Any) -> None:
        """The local web server: the template's GraphQL API at /graphql, the dashboard at
        /dashboard."""
        from tweetgen_local.dashboard import mount_dashboard
        from tweetgen_local.graphql_server import GRAPHQL_PATH, LocalWebServer, serve_graphql

        self.web = LocalWebServer(self.options.host, self.options.web_port)
        graphql = serve_graphql(
            self.web,
            template,
            ctx,
            self.pool.logical_id,
            lambda function, trigger, event: self.wiring.invoke(
                "graphql", trigger, function, event
            ),
        )
        database_url = self.options.database_url or default_database_url(self.state.path)
        dashboard = mount_dashboard(self.web, database_url, self.pool)
        url = self.web.start()
        self._stops.append(self.web.stop)
        if graphql is not None:
            self.endpoints["graphql"] = url + GRAPHQL_PATH
            self.log(f"GraphQL API at {url}{GRAPHQL_PATH}")
        self.endpoints["dashboard"] = url + dashboard
        self.log(f"dashboard at {url}{dashboard}")

    def stop(self) -> None:
        """Stop in reverse order; every piece is stopped even if one fails."""
        while self._stops:
            step = self._stops.pop()
            try:
                step()
            except Exception as exc:  # keep stopping the rest
                self.log(f"while stopping: {exc}")


DATABASE_URL_FILE = "database.url"


def default_database_url(state_dir: Path) -> str:
    """SQLite in the state dir: the local stack's database unless one is named."""
    return f"sqlite:///{(state_dir / 'tweetgen.db').resolve()}"


def stack_database_url(state_dir: Path) -> str:
    """The database of the stack that runs (or ran) on ``state_dir``."""
    try:
        return (state_dir / DATABASE_URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return default_database_url(state_dir)


def _masked(url: str) -> str:
    """The URL with any password hidden, for endpoints.json and logs."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def local_up(options: StackOptions, log: Callable[[str], None] = print) -> int:
    """Run the local stack in the foreground until Ctrl-C."""
    stack = LocalStack(options, log)
    try:
        endpoints = stack.start()
    except AlreadyRunning as exc:
        log(str(exc))
        return 0
    for key, value in endpoints.items():
        log(f"  {key:<18} {value}")
    log("press Ctrl-C to stop")
    wait_for_signal(threading.Event(), stack.stop)
    log("stopped")
    return 0
