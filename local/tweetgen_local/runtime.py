"""The SageMaker Runtime ``InvokeEndpoint`` API over HTTP, answered by :class:`LocalHosting`.

boto3's ``sagemaker-runtime`` client works against it unchanged (``endpoint_url=`` or
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``). The wire format follows botocore's service model
(``sagemaker-runtime`` 2017-05-13, protocol ``rest-json``):

* request: ``POST /endpoints/{EndpointName}/invocations`` (the name URL-encoded), the body as
  is, ``Content-Type`` and ``Accept`` headers, ``X-Amzn-SageMaker-Custom-Attributes`` and
  ``X-Amzn-SageMaker-Target-Variant``; signatures are not checked.
* answer: 200 with the container's body and ``Content-Type``, and
  ``x-Amzn-Invoked-Production-Variant``. ``X-Amzn-SageMaker-Custom-Attributes`` comes back
  only when the container sets it, as in SageMaker; the TensorFlow Serving container never
  does (its handlers return a body and a content type only), so it never comes back here.
* errors: the code in ``x-amzn-ErrorType`` (``Code:namespace``, which botocore splits), the
  message in the JSON body. A container error is ``ModelError`` (424) with ``ErrorCode``,
  ``OriginalStatusCode``, ``OriginalMessage`` and ``LogStreamArn`` (botocore copies these
  modeled fields into the exception's ``response``); an unknown endpoint or variant, or an
  endpoint not in service, is ``ValidationError`` (400). Neither is retried by botocore.

``GET /ping`` answers 200 when every endpoint in service serves its current configuration,
else 503, with :meth:`LocalHosting.status` as the body.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import socket
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tweetgen_local.hosting import HostingError, LocalHosting
from tweetgen_local.http_server import LocalHTTPServer

LOG = logging.getLogger(__name__)

_INVOKE_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_ERROR_NAMESPACE = {
    "ModelError": "http://internal.amazon.com/coral/com.amazon.sagemaker/",
    "ValidationError": "http://internal.amazon.com/coral/com.amazon.coral.validate/",
}
DEFAULT_ACCOUNT = "123456789012"
IDLE_CONNECTION_TIMEOUT_S = 120.0


def model_error(
    endpoint_name: str, endpoint_arn: str, status: int, original: bytes, region: str
) -> dict[str, Any]:
    """SageMaker's ModelError body for a container answer with a non-2xx status."""
    parts = endpoint_arn.split(":")
    account = parts[4] if len(parts) > 5 and parts[4] else DEFAULT_ACCOUNT
    region = parts[3] if len(parts) > 5 and parts[3] else region
    text = original.decode("utf-8", "replace")
    kind = "client" if 400 <= status < 500 else "server"
    log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
    console = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logEventViewer:group={log_group}"
    )
    return {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL"
        if kind == "client"
        else "INTERNAL_FAILURE_FROM_MODEL",
        "LogStreamArn": f"arn:aws:logs:{region}:{account}:log-group:{log_group}",
        "Message": (
            f'Received {kind} error ({status}) from primary with message "{text}". See {console}'
            f" in account {account} for more information."
        ),
        "OriginalMessage": text,
        "OriginalStatusCode": status,
    }


class _Server(LocalHTTPServer):
    """Remembers open connections so that closing the server ends keep-alive ones too."""

    def __init__(self, address: tuple[str, int], runtime: RuntimeServer) -> None:
        self.runtime = runtime
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_TIMEOUT_S
    server: _Server

    def do_POST(self) -> None:
        body = self._read_body()
        match = _INVOKE_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._error(404, "UnknownOperationException", f"no operation at POST {self.path}")
            return
        runtime = self.server.runtime
        name = unquote(match["name"])
        if self.headers.get("X-Amzn-SageMaker-Target-Model"):
            self._error(400, "ValidationError", f"Endpoint {name} is not a multi-model endpoint.")
            return
        if self.headers.get("X-Amzn-SageMaker-Inference-Component"):
            self._error(400, "ValidationError", f"Endpoint {name} has no inference components.")
            return
        try:
            result = runtime.hosting.invoke(
                name,
                body,
                content_type=self.headers.get("Content-Type"),
                accept=self.headers.get("Accept"),
                custom_attributes=self.headers.get("X-Amzn-SageMaker-Custom-Attributes"),
                target_variant=self.headers.get("X-Amzn-SageMaker-Target-Variant"),
            )
        except HostingError as exc:
            self._error(exc.status, exc.code, exc.message)
            return
        except Exception as exc:
            LOG.exception("InvokeEndpoint %s failed", name)
            self._error(500, "InternalFailure", f"{type(exc).__name__}: {exc}")
            return
        invocation = result.invocation
        if not 200 <= invocation.status < 300:
            payload = model_error(
                name, result.endpoint_arn, invocation.status, invocation.body, runtime.region
            )
            self._error(424, "ModelError", payload["Message"], payload)
            return
        self._send(
            200,
            invocation.body,
            {
                "Content-Type": invocation.content_type,
                "x-Amzn-Invoked-Production-Variant": result.variant,
            },
        )

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/ping":
            self._error(404, "UnknownOperationException", f"no operation at GET {self.path}")
            return
        hosting = self.server.runtime.hosting
        status = hosting.status()
        body = json.dumps(status, default=str).encode("utf-8")
        self._send(200 if status["ready"] else 503, body, {"Content-Type": "application/json"})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _error(
        self, status: int, code: str, message: str, payload: Mapping[str, Any] | None = None
    ) -> None:
        body = dict(payload) if payload is not None else {"message": message}
        namespace = _ERROR_NAMESPACE.get(code)
        self._send(
            status,
            json.dumps(body).encode("utf-8"),
            {
                "Content-Type": "application/json",
                "x-amzn-ErrorType": f"{code}:{namespace}" if namespace else code,
            },
        )

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("runtime: " + format, *args)


class RuntimeServer:
    """The local SageMaker Runtime endpoint: an HTTP server on ``host``:``port`` (0 = free port).

    ``region`` only shapes the CloudWatch links inside ModelError messages when an endpoint's
    ARN does not name one. :meth:`close` stops serving, ends open connections and frees the port;
    it does not close the hosting service, which the caller owns.
    """

    def __init__(
        self,
        hosting: LocalHosting,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        region: str = "us-east-1",
    ) -> None:
        self.hosting = hosting
        self.region = region
        self._server = _Server((host, port), self)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RuntimeServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sagemaker-runtime-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> RuntimeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """Serve the endpoints of a running moto server (``python -m tweetgen_local.runtime``)."""
    import boto3

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--aws-endpoint-url", required=True, help="the moto server's URL")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--cache-dir", type=Path, default=Path(".tweetgen/local/models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    clients = {
        service: boto3.client(service, region_name=args.region, endpoint_url=args.aws_endpoint_url)
        for service in ("sagemaker", "s3")
    }
    with (
        LocalHosting(clients["sagemaker"], clients["s3"], args.cache_dir) as hosting,
        RuntimeServer(hosting, args.host, args.port, region=args.region) as server,
    ):
        print(f"SageMaker Runtime on {server.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
