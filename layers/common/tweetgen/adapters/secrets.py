"""Database credentials from AWS Secrets Manager, read through Powertools and cached.

An RDS-managed master secret holds only ``username`` and ``password``; a secret attached to a
cluster also holds ``host``, ``port`` and ``dbname``. Environment values fill in (and take
precedence over) the connection fields, so either kind works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SECRET_MAX_AGE_S", "DatabaseSecret", "read_database_secret", "read_signing_key"]

# Rotations reach new connections within this time; a denied login refetches at once.
SECRET_MAX_AGE_S = 300


@dataclass(frozen=True, slots=True)
class DatabaseSecret:
    """The fields of a database secret that a connection needs; the password never prints."""

    username: str
    password: str = field(repr=False)
    host: str | None = None
    port: int | None = None
    dbname: str | None = None

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any], source: str) -> DatabaseSecret:
        missing = [key for key in ("username", "password") if not value.get(key)]
        if missing:
            raise ValueError(
                f"database secret {source} lacks {', '.join(missing)}: it should be the JSON of "
                "an RDS database secret (username, password, optionally host, port, dbname)"
            )
        port = value.get("port")
        return cls(
            username=str(value["username"]),
            password=str(value["password"]),
            host=str(value["host"]) if value.get("host") else None,
            port=int(port) if port not in (None, "") else None,
            dbname=str(value["dbname"]) if value.get("dbname") else None,
        )


def read_database_secret(
    secret_id: str, *, max_age_s: int = SECRET_MAX_AGE_S, force_fetch: bool = False
) -> DatabaseSecret:
    """Read and parse the secret; Powertools keeps it for ``max_age_s`` across invocations."""
    # Imported here: only functions that use a secret pay for Powertools' boto3 import.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(
        secret_id, transform="json", max_age=max_age_s, force_fetch=force_fetch
    )
    if not isinstance(value, Mapping):
        raise ValueError(f"database secret {secret_id} is not a JSON object")
    return DatabaseSecret.from_mapping(value, secret_id)


def read_signing_key(secret_id: str, *, max_age_s: int = SECRET_MAX_AGE_S) -> bytes:
    """The key that signs generation ids: the secret's string (a generated password)."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(secret_id, max_age=max_age_s)
    if isinstance(value, bytes):
        key = value
    elif isinstance(value, str):
        key = value.encode("utf-8")
    else:
        raise ValueError(f"secret {secret_id} is not a string")
    if len(key) < 16:
        raise ValueError(f"secret {secret_id} is shorter than 16 bytes: too weak to sign ids")
    return key
