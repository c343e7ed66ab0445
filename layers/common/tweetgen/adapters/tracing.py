"""The X-Ray tracer of every function, patching only the libraries that function calls.

Left to itself, Powertools' ``Tracer`` patches every library the X-Ray SDK knows and can import
(``patch_all``). The common layer carries SQLAlchemy and PyMySQL for the functions that write
to the database, so every other function would import them at cold start only to trace calls
it never makes: about a third of an API function's import time. Each function traces its AWS
calls from the start, and the MySQL driver's queries from the moment the database adapter makes
an engine that uses it (the driver, not SQLAlchemy: its X-Ray patch imports the ORM as well).
So a function imports the driver only when it reaches the database, before its first
connection, and a SQLite database (the local stack) patches nothing.
"""

from __future__ import annotations

from aws_lambda_powertools import Tracer

AWS = ("botocore",)
# The database drivers whose queries are traced (the X-Ray SDK patches these by name).
DATABASE_DRIVERS = ("pymysql",)


def new_tracer() -> Tracer:
    """The function's tracer, patching the AWS SDK."""
    return Tracer(patch_modules=AWS)


def trace_database_driver(driver: str) -> None:
    """Trace ``driver``'s queries from now on, where this process traces at all.

    A no-op for drivers the X-Ray SDK cannot patch, and wherever Powertools' tracer is
    disabled (outside Lambda, in ``sam local``, with ``POWERTOOLS_TRACE_DISABLED``). Patching
    twice does nothing more.
    """
    if driver in DATABASE_DRIVERS:
        Tracer(auto_patch=False).patch([driver])
