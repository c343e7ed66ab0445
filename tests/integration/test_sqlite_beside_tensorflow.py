"""The local stack's SQLite in a process that imported TensorFlow first.

TensorFlow carries its own SQLite, built without the math functions, and once it is loaded its
symbols are the ones Python's sqlite3 module binds to: ``LN`` and ``FLOOR``, which the
aggregation's latency histogram calls, would be missing (the local stack's hosting and the
tests load TensorFlow and SQLite in one process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, sys
import tensorflow  # first: its SQLite is the one sqlite3 binds to
import sqlite3
raw = sqlite3.connect(":memory:")
try:
    raw.execute("SELECT LN(2)")
    native = True
except sqlite3.OperationalError:
    native = False
from sqlalchemy import text
from tweetgen.adapters.database import Database
db = Database.from_url(sys.argv[1])
with db.engine.connect() as connection:
    values = list(connection.execute(text("SELECT LN(1), FLOOR(2.7), LN(0), FLOOR(NULL)")).one())
print(json.dumps({"native": native, "values": values}))
"""


def test_sqlite_has_the_aggregations_math_functions_after_tensorflow(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, f"sqlite:///{tmp_path / 'tweetgen.db'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # What makes this test mean something: the raw connection lacks them here.
    assert result["native"] is False
    assert result["values"] == [0.0, 2, None, None]
