"""The HTTP server under every service of the local stack that answers over HTTP itself.

``ThreadingHTTPServer`` prints a traceback to stderr whenever a request's thread fails, and that
includes a client that goes away mid-request (a closed browser tab, a timed-out SDK call, a
reset connection). That is not an error of the stack: it is logged at debug level instead. Any
other failure is printed as before.
"""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer
from typing import Any

_log = logging.getLogger(__name__)


class LocalHTTPServer(ThreadingHTTPServer):
    """A thread per request (none of them keeps the process alive), quiet about clients that
    leave."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # reset, broken pipe, aborted
            _log.debug("client %s went away: %s", client_address, error)
            return
        super().handle_error(request, client_address)
