"""CloudFormation custom resources: always answer the pre-signed ResponseURL.

A custom resource that never answers holds a stack operation for an hour, so
:func:`custom_resource` wraps a handler and answers SUCCESS with what it returns, or FAILED
with the error as the reason, whatever happens. Delete requests reach the handler too; a
handler that has nothing to undo just returns.
"""

from __future__ import annotations

import functools
import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CustomResourceResult", "custom_resource", "respond"]

_log = logging.getLogger(__name__)
#: CloudFormation shows at most this much of a reason.
MAX_REASON = 1000

CustomResourceResult = tuple[str, Mapping[str, Any]]
Handler = Callable[[dict[str, Any], Any], CustomResourceResult]


def respond(
    event: Mapping[str, Any],
    status: str,
    *,
    reason: str = "",
    physical_id: str,
    data: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """PUT the answer to ``event["ResponseURL"]``; returns the answer sent."""
    answer = {
        "Status": status,
        "Reason": reason[:MAX_REASON] or status,
        "PhysicalResourceId": physical_id,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "NoEcho": False,
        "Data": dict(data or {}),
    }
    body = json.dumps(answer).encode("utf-8")
    request = urllib.request.Request(
        str(event["ResponseURL"]),
        data=body,
        method="PUT",
        # The pre-signed URL is signed for an empty content type.
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answered:
        answered.read()
    return answer


def custom_resource(handler: Handler) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Wrap ``handler(event, context) -> (physical_id, data)`` so it always answers."""

    @functools.wraps(handler)
    def wrapped(event: dict[str, Any], context: Any) -> dict[str, Any]:
        physical_id = str(event.get("PhysicalResourceId") or event.get("LogicalResourceId"))
        try:
            physical_id, data = handler(event, context)
        except Exception as exc:
            _log.exception("custom resource %s failed", event.get("LogicalResourceId"))
            return respond(
                event, "FAILED", reason=f"{type(exc).__name__}: {exc}", physical_id=physical_id
            )
        return respond(event, "SUCCESS", physical_id=physical_id, data=data)

    return wrapped
