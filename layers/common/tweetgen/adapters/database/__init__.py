"""The database adapter: one schema and one data-access layer for SQLite, MySQL/MariaDB and Aurora.

Usage::

    db = Database.from_environment()      # DATABASE_URL, or DATABASE_SECRET_ARN in AWS
    db.migrate()                          # deploy time, local stack start, tests
    db.feedback.record(feedback_id=..., generation_id=..., reward=1.0, raw_value="like")
    DatabaseRolloutRecorder(db.model_versions, db.rollouts)   # the rollout's record step
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import URL, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from ..secrets import read_database_secret
from .engine import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_QUERY_TIMEOUT_S,
    create_engine,
    dispose_engines,
    is_unreachable,
    normalise_url,
    shared_engine,
)
from .migrations import MIGRATIONS, Migration, MigrationLockTimeout, applied_versions, migrate
from .repositories import (
    ROLLOUT_STATUSES,
    Decision,
    DecisionRepository,
    Feedback,
    FeedbackRepository,
    Generation,
    GenerationFailure,
    GenerationFailureRepository,
    GenerationRepository,
    ModelVersion,
    ModelVersionRepository,
    Rollout,
    RolloutNotFoundError,
    RolloutRepository,
    RolloutStatus,
    VariantMetrics,
    VariantMetricsRepository,
    VariantTotals,
)
from .rollout_recorder import DatabaseRolloutRecorder

if TYPE_CHECKING:
    from .experiment import ExperimentStateRepository, MetricsRepository

__all__ = [
    "MIGRATIONS",
    "ROLLOUT_STATUSES",
    "Database",
    "DatabaseConfigError",
    "DatabaseRolloutRecorder",
    "Decision",
    "Feedback",
    "Generation",
    "GenerationFailure",
    "Migration",
    "MigrationLockTimeout",
    "ModelVersion",
    "Rollout",
    "RolloutNotFoundError",
    "RolloutStatus",
    "VariantMetrics",
    "VariantTotals",
    "applied_versions",
    "create_engine",
    "dispose_engines",
    "is_unreachable",
    "migrate",
    "normalise_url",
]

MYSQL_DEFAULT_PORT = 3306


class DatabaseConfigError(ValueError):
    """The environment does not say which database to use, or says it incompletely."""


class Database:
    """One database: its engine, its migrations and a repository per table family."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.model_versions = ModelVersionRepository(engine)
        self.rollouts = RolloutRepository(engine)
        self.generations = GenerationRepository(engine)
        self.feedback = FeedbackRepository(engine)
        self.decisions = DecisionRepository(engine)
        self.failures = GenerationFailureRepository(engine)
        self.variant_metrics = VariantMetricsRepository(engine)

    def reachable(self) -> bool:
        """Whether a connection opens and answers a ``SELECT 1``."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    # The experiment's repositories (and the statistics behind them) are imported on first use:
    # the recorder, the migration and the rollout functions never use them.
    @functools.cached_property
    def metrics(self) -> MetricsRepository:
        from .experiment import MetricsRepository

        return MetricsRepository(self.engine)

    @functools.cached_property
    def experiment(self) -> ExperimentStateRepository:
        from .experiment import ExperimentStateRepository

        return ExperimentStateRepository(self.engine)

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        query_timeout_s: float = DEFAULT_QUERY_TIMEOUT_S,
    ) -> Database:
        """``sqlite:///PATH`` or ``mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE``; the
        engine behind it is shared by every ``Database`` of the same URL in this process."""
        return cls(
            shared_engine(
                url,
                connect_timeout_s=connect_timeout_s,
                busy_timeout_s=busy_timeout_s,
                query_timeout_s=query_timeout_s,
            )
        )

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Database:
        """The database a function's environment names.

        ``DATABASE_URL`` wins when set (the local stack, tests). Otherwise ``DATABASE_SECRET_ARN``
        names a Secrets Manager secret with the credentials; ``DATABASE_HOST``, ``DATABASE_PORT``
        and ``DATABASE_NAME`` complete (or override) its connection fields.
        ``DATABASE_CONNECT_TIMEOUT`` (seconds) allows for an Aurora cluster that resumes slowly;
        ``DATABASE_QUERY_TIMEOUT`` (seconds) bounds the wait for each answer of MySQL, under the
        function's own timeout.
        """
        timeout = _seconds(env, "DATABASE_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT_S)
        query_timeout = _seconds(env, "DATABASE_QUERY_TIMEOUT", DEFAULT_QUERY_TIMEOUT_S)
        url = env.get("DATABASE_URL", "").strip()
        if url:
            return cls.from_url(url, connect_timeout_s=timeout, query_timeout_s=query_timeout)
        secret_id = env.get("DATABASE_SECRET_ARN", "").strip()
        if not secret_id:
            raise DatabaseConfigError(
                "no database configured: set DATABASE_URL (sqlite:///PATH or "
                "mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE) or DATABASE_SECRET_ARN"
            )
        secret = read_database_secret(secret_id)
        host = env.get("DATABASE_HOST") or secret.host
        name = env.get("DATABASE_NAME") or secret.dbname
        missing = [
            variable
            for variable, value in (("DATABASE_HOST", host), ("DATABASE_NAME", name))
            if not value
        ]
        if missing:
            raise DatabaseConfigError(
                f"database secret {secret_id} gives no host or database name: "
                f"set {' and '.join(missing)}"
            )
        port = int(env.get("DATABASE_PORT") or secret.port or MYSQL_DEFAULT_PORT)
        url_ = URL.create(
            "mysql+pymysql",
            username=secret.username,
            password=secret.password,
            host=host,
            port=port,
            database=name,
            query={"charset": "utf8mb4"},
        )

        def credentials(refresh: bool) -> tuple[str, str]:
            current = read_database_secret(secret_id, force_fetch=refresh)
            return current.username, current.password

        # Keyed without the password: after a rotation the same engine serves, with new logins.
        key = f"{url_.render_as_string(hide_password=True)}#secret={secret_id}"
        return cls(
            shared_engine(
                url_,
                connect_timeout_s=timeout,
                query_timeout_s=query_timeout,
                credentials=credentials,
                cache_key=key,
            )
        )

    @property
    def url(self) -> URL:
        """The engine's URL; its ``repr`` and ``str`` mask the password."""
        return self.engine.url

    def migrate(self) -> list[int]:
        """Apply the missing schema migrations; returns the versions applied."""
        return migrate(self.engine)

    def __repr__(self) -> str:
        return f"Database({self.engine.url!r})"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        raise DatabaseConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value
