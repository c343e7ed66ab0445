"""The rollout's own Step Functions executions through boto3: who is running, what happened."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tweetgen.adapters import aws
from tweetgen.services.rollout import QueuedExecution, RolloutStep

__all__ = ["RolloutExecutions", "state_machine_arn", "steps_from_history"]


def state_machine_arn(execution_arn: str) -> str:
    """``arn:...:execution:<machine>:<run>`` -> ``arn:...:stateMachine:<machine>``."""
    parts = execution_arn.split(":")
    if len(parts) < 8 or parts[5] != "execution":
        raise ValueError(f"{execution_arn!r} is not a Step Functions execution ARN")
    return ":".join([*parts[:5], "stateMachine", parts[6]])


def _state_name(event: dict[str, Any]) -> str | None:
    for key in ("stateEnteredEventDetails", "stateExitedEventDetails"):
        details = event.get(key)
        if details:
            return str(details.get("name"))
    return None


def steps_from_history(events: list[dict[str, Any]]) -> list[RolloutStep]:
    """One step per state passed, with its timing; a step is failed when its task failed."""
    steps: list[RolloutStep] = []
    open_steps: dict[str, int] = {}
    for event in events:
        kind = str(event.get("type", ""))
        when: datetime = event["timestamp"]
        name = _state_name(event)
        if kind.endswith("StateEntered") and name is not None:
            open_steps[name] = len(steps)
            steps.append(RolloutStep(name=name, type=kind[: -len("StateEntered")], entered_at=when))
        elif kind.endswith("StateExited") and name is not None and name in open_steps:
            index = open_steps.pop(name)
            steps[index] = steps[index].exited(when)
        elif kind in ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut") and steps:
            found = [v for k, v in event.items() if k.endswith("EventDetails") and v]
            details: dict[str, Any] = found[0] if found else {}
            steps[-1] = steps[-1].failed(str(details.get("error", kind)))
    return steps


class RolloutExecutions:
    """Executions of the rollout state machine, read with its own role's permissions."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> RolloutExecutions:
        return cls(aws.client("stepfunctions"))

    def running(self, execution_arn: str) -> list[QueuedExecution]:
        """Every RUNNING execution of the state machine that ``execution_arn`` belongs to."""
        machine = state_machine_arn(execution_arn)
        found: list[QueuedExecution] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"stateMachineArn": machine, "statusFilter": "RUNNING"}
            if token:
                kwargs["nextToken"] = token
            page = self._client.list_executions(**kwargs)
            found += [
                QueuedExecution(arn=str(e["executionArn"]), started_at=e["startDate"])
                for e in page.get("executions") or []
            ]
            token = page.get("nextToken")
            if not token:
                return found

    def steps(self, execution_arn: str) -> list[RolloutStep]:
        """The states the execution has passed so far."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            page = self._client.get_execution_history(**kwargs)
            events += page.get("events") or []
            token = page.get("nextToken")
            if not token:
                return steps_from_history(events)
