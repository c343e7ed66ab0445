"""No feedback is lost while the database is down: the local stack's real API, queue and
recorder in front of the real MariaDB, reached through a TCP proxy that the test cuts.

With the database unreachable, 1,000 feedback posts are all accepted (202); once it is back,
all 1,000 are in the database exactly once, and messages delivered twice still count once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import sqlalchemy
from sqlalchemy import Engine, make_url
from tweetgen.adapters.sqs import SqsEventQueue
from tweetgen.domain.events import FeedbackEvent
from tweetgen.domain.serving import GenerationIds
from tweetgen_local.stack import LocalStack, StackOptions

from tests.conftest import REPO_ROOT
from tests.integration.conftest import URLFactory

pytestmark = [pytest.mark.mysql, pytest.mark.long]

POSTS = 1000
REDELIVERED = 50
RETRY_S = 30  # the queue's visibility timeout: the template's minimum


class TcpProxy:
    """Forwards a local port to the database; ``down`` refuses and cuts every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def database(mysql_databases: URLFactory) -> str:
    return mysql_databases()


@pytest.fixture
def proxy(database: str) -> Iterator[TcpProxy]:
    url = make_url(database)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 3306))
    proxy.up()
    yield proxy
    proxy.down()


@pytest.fixture
def stack(tmp_path: Path, database: str, proxy: TcpProxy) -> Iterator[LocalStack]:
    through_proxy = make_url(database).set(host="127.0.0.1", port=proxy.port)
    stack = LocalStack(
        StackOptions(
            state_dir=tmp_path / "stack",
            template=REPO_ROOT / "template.yaml",
            database_url=through_proxy.render_as_string(hide_password=False),
            parameter_overrides={"EventsRetrySeconds": RETRY_S},
        ),
        log=lambda _: None,
    )
    stack.start()  # the schema migration runs through the proxy, as a deploy would
    yield stack
    stack.stop()


def count_feedback(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(sqlalchemy.text("SELECT COUNT(*) FROM feedback")).scalar_one()
        )


def test_feedback_posted_while_the_database_is_down_is_all_recorded_exactly_once(
    stack: LocalStack, proxy: TcpProxy, database: str
) -> None:
    endpoints = stack.endpoints
    session = boto3.session.Session(region_name=endpoints["region"])
    secrets = session.client("secretsmanager", endpoint_url=endpoints["aws"])
    secret = stack.ctx.resources["GenerationIdSecret"]["Ref"]
    ids = GenerationIds(secrets.get_secret_value(SecretId=secret)["SecretString"].encode())
    generations = [ids.issue("lstm" if i % 2 else "gpt2") for i in range(POSTS)]
    direct = sqlalchemy.create_engine(database)

    proxy.down()

    def post(generation_id: str) -> requests.Response:
        return requests.post(
            f"{endpoints['api']}/generations/{generation_id}/feedback",
            json={"reward": "like"},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, generations))
    assert [a.status_code for a in answers] == [202] * POSTS, {a.text for a in answers}
    accepted: list[dict[str, Any]] = [a.json() for a in answers]

    # The recorder is trying, and failing: nothing reached the database.
    time.sleep(3)
    assert count_feedback(direct) == 0

    # The same events once more, as SQS may deliver a message twice.
    queue_url = stack.ctx.resources["EventsQueue"]["Ref"]
    again = SqsEventQueue(session.client("sqs", endpoint_url=endpoints["aws"]), queue_url)
    again.send(
        [
            FeedbackEvent(
                feedback_id=a["feedback_id"],
                generation_id=a["generation_id"],
                reward=a["reward"],
                raw_value="like",
                created_at=datetime(2026, 11, 26, 10, tzinfo=UTC),
            )
            for a in accepted[:REDELIVERED]
        ]
    )

    proxy.up()
    deadline = time.monotonic() + 4 * RETRY_S + 60
    while count_feedback(direct) < POSTS:
        assert time.monotonic() < deadline, f"only {count_feedback(direct)} of {POSTS} recorded"
        time.sleep(1)
    time.sleep(3)  # anything still in flight would land now

    with direct.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT id, deliveries FROM feedback")).fetchall()
    assert len(rows) == POSTS
    assert {row[0] for row in rows} == {a["feedback_id"] for a in accepted}
    deliveries = {row[0]: int(row[1]) for row in rows}
    assert all(deliveries[a["feedback_id"]] >= 2 for a in accepted[:REDELIVERED])
    sqs = session.client("sqs", endpoint_url=endpoints["aws"])
    dead = stack.ctx.resources["EventsDeadLetterQueue"]["Ref"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    direct.dispose()
