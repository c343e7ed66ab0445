"""The X-Ray tracer of every function, patching only the libraries that function calls.

Left to itself, Powertools' ``Tracer`` patches every library the X-Ray SDK knows and can import
(``patch_all``). The common layer carries SQLAlchemy and PyMySQL for the functions that write
to the database, so every other function would import them at cold start only to trace calls
it never makes: about a third of an API function's import time. Each function names what it
uses instead: AWS calls everywhere, and the MySQL driver's queries where a function reads or
writes the database (the driver, not SQLAlchemy: its X-Ray patch imports the ORM as well).
"""

from __future__ import annotations

from aws_lambda_powertools import Tracer

AWS = ("botocore",)
AWS_AND_DATABASE = (*AWS, "pymysql")


def new_tracer(*, database: bool = False) -> Tracer:
    """The function's tracer; ``database=True`` for functions that talk to the database."""
    return Tracer(patch_modules=AWS_AND_DATABASE if database else AWS)
