"""A handler module's cold start without the cyclic garbage collector.

Importing a handler loads a few hundred modules (boto3, Powertools, pydantic, SQLAlchemy),
each one allocating classes, functions and dicts. With the collector on, those allocations
trigger dozens of collections that walk the growing heap of module objects and find next to
nothing to free: 5-15 % of every handler's import time (``benchmarks/api_functions.py``).

So every handler module turns the collector off before its imports and calls ``setup_done``
once its module-level objects exist::

    import gc

    gc.disable()  # until coldstart.setup_done() at the end of this module

    ... imports and module-level setup ...

    coldstart.setup_done()

``setup_done`` moves every object alive at that point into the collector's permanent
generation (``gc.freeze``), then turns the collector back on: later collections, during
invocations, no longer walk the modules' objects, so the first invocation does not pay for the
collections the imports skipped.
"""

from __future__ import annotations

import gc


def setup_done() -> None:
    """Freeze the objects the cold start made and turn the cyclic garbage collector back on."""
    gc.freeze()
    gc.enable()
