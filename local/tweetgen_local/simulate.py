"""Simulated users with a hidden true preference, sent through the real REST API.

Each user asks ``POST /generations`` for a tweet (with a stable ``user_id``, so assignment is
sticky), then likes it with the true like rate of the variant that served it and posts that as
feedback. The tally keeps what each variant served and got, and the regret: the likes lost
against always serving the best variant.

``tweetgen simulate`` sends such users in rounds through a local stack (one it starts itself
with the chosen ``DecisionPolicy``, or one already running on ``--state-dir``). After each
round, once the recorder has stored the round's feedback, the aggregate function runs once,
and ``GET /experiment`` is read; the report says what was decided, after how many users, and
what the users lost on the way. ``benchmarks/experiment_simulation.py`` runs the same policies
on many more simulated users without the services.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Round",
    "Services",
    "SimulateOptions",
    "SimulationError",
    "SimulationReport",
    "Tally",
    "UserSimulation",
    "parse_rates",
    "run_rounds",
    "simulate",
]


class SimulationError(RuntimeError):
    """The API refused a simulated user's request; says which and why."""


def parse_rates(text: str) -> dict[str, float]:
    """``lstm=0.10,gpt2=0.12`` → ``{"lstm": 0.1, "gpt2": 0.12}``, with clear errors."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not name.strip() or not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"rates are VARIANT=P pairs with 0 <= P <= 1, e.g. lstm=0.10: {part!r}"
            )
        rates[name.strip()] = rate
    if not rates:
        raise ValueError("no rates given (e.g. --rates lstm=0.10,gpt2=0.12)")
    return rates


@dataclass
class Tally:
    """What the simulated users saw, per variant."""

    served: dict[str, int] = field(default_factory=dict)
    likes: dict[str, int] = field(default_factory=dict)
    regret: float = 0.0
    users: int = 0

    def add(self, variant: str, liked: bool, regret: float) -> None:
        self.served[variant] = self.served.get(variant, 0) + 1
        self.likes[variant] = self.likes.get(variant, 0) + int(liked)
        self.regret += regret
        self.users += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "served": dict(self.served),
            "likes": dict(self.likes),
            "regret": round(self.regret, 3),
        }


@dataclass
class UserSimulation:
    """Sends users ``sim-<seed>-<n>`` through the API at ``api_url``."""

    api_url: str
    rates: Mapping[str, float]
    seed: int = 7
    max_new_tokens: int = 8
    concurrency: int = 4
    tally: Tally = field(default_factory=Tally)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _user(self, number: int) -> tuple[str, bool, float]:
        import requests

        user_id = f"sim-{self.seed}-{number}"
        answer = requests.post(
            f"{self.api_url}/generations",
            json={"user_id": user_id, "max_new_tokens": self.max_new_tokens, "seed": number},
            timeout=120,
        )
        if answer.status_code != 201:
            raise SimulationError(
                f"{user_id}: POST /generations {answer.status_code} {answer.text}"
            )
        served = answer.json()
        variant = str(served["variant"])
        if variant not in self.rates:
            raise SimulationError(f"variant {variant!r} served but no true rate was given for it")
        # One random stream per user: the same users like the same things whatever the order.
        liked = random.Random(f"{self.seed}:{number}").random() < self.rates[variant]
        feedback = requests.post(
            f"{self.api_url}/generations/{served['generation_id']}/feedback",
            json={"reward": "like" if liked else "dislike", "user_id": user_id},
            headers={"Idempotency-Key": f"{user_id}:{served['generation_id']}"},
            timeout=120,
        )
        if feedback.status_code != 202:
            raise SimulationError(f"{user_id}: feedback {feedback.status_code} {feedback.text}")
        return variant, liked, max(self.rates.values()) - self.rates[variant]

    def run(self, users: int, progress: Callable[[Tally], None] | None = None) -> Tally:
        """Send ``users`` more users (numbered after the previous ones)."""
        start, self._next = self._next, self._next + users
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            for variant, liked, regret in pool.map(self._user, range(start, start + users)):
                with self._lock:
                    self.tally.add(variant, liked, regret)
        if progress is not None:
            progress(self.tally)
        return self.tally


# --------------------------------------------------------------------------- tweetgen simulate

#: The function that aggregates the counts and decides (the template's logical id).
AGGREGATE_FUNCTION = "AggregateFunction"
#: The function behind POST /generations (its VARIANTS_CACHE_SECONDS matters between rounds).
GENERATE_FUNCTION = "GenerateFunction"
#: The template parameter that chooses the decision policy.
POLICY_PARAMETER = "DecisionPolicy"
#: The aggregate function's schedule: a stack of our own gets one that does not fire during
#: a simulation (rounds end with an aggregation of their own).
SCHEDULE_PARAMETER = "AggregateSchedule"
QUIET_SCHEDULE = "rate(1 day)"
POLICIES = ("ab", "bandit")
#: An on-demand run of the aggregate function (a scheduled event's id would name its decision,
#: and a second event with the same id would do nothing).
AGGREGATE_EVENT: dict[str, Any] = {"source": "tweetgen.simulate", "detail": {}}
#: How long to keep asking when another run (the schedule's) holds the experiment.
AGGREGATE_BUSY_TIMEOUT_S = 60.0
RECORDER_TIMEOUT_S = 60.0


def experiment_status(api_url: str) -> dict[str, Any]:
    """``GET /experiment``, or a SimulationError that says what answered."""
    import requests

    answer = requests.get(f"{api_url}/experiment", timeout=60)
    if answer.status_code != 200:
        raise SimulationError(f"GET /experiment {answer.status_code} {answer.text}")
    status: dict[str, Any] = answer.json()
    return status


def recorded_feedback(database_url: str) -> int:
    """Feedback the recorder has stored (with its generation), over every variant."""
    from tweetgen.adapters.database import Database

    totals = Database.from_url(database_url).generations.variant_totals()
    return sum(total.feedback for total in totals.values())


def wait_for_feedback(
    count: Callable[[], int], expected: int, timeout: float = RECORDER_TIMEOUT_S
) -> None:
    """Wait until ``expected`` feedback is stored: the events queue has been drained."""
    deadline = time.monotonic() + timeout
    while True:
        found = count()
        if found >= expected:
            return
        if time.monotonic() > deadline:
            raise SimulationError(
                f"only {found} of {expected} feedback recorded after {timeout:.0f}s:"
                " is the recorder consuming the events queue?"
            )
        time.sleep(0.2)


def decision_of(payload: Any) -> dict[str, Any] | None:
    """The decision in an aggregation's answer (the answer itself, or its ``decision``)."""
    if not isinstance(payload, Mapping):
        return None
    inner = payload.get("decision")
    if isinstance(inner, Mapping):
        return dict(inner)
    return dict(payload) if "weights" in payload and "reason" in payload else None


@dataclass(frozen=True)
class Services:
    """What a simulation runs against: the REST API, the aggregate function, the database."""

    api_url: str
    #: Runs the aggregate function once and returns its answer.
    aggregate: Callable[[], Any]
    #: Feedback stored by the recorder so far.
    recorded_feedback: Callable[[], int]
    #: How long the generate function keeps the endpoint's weights (VARIANTS_CACHE_SECONDS).
    weights_cache_s: float = 10.0


@dataclass(frozen=True)
class Round:
    """The state after one round of users and the aggregation that followed."""

    users: int
    seconds: float
    #: Simulated users each variant has served so far.
    served: dict[str, int]
    #: From ``GET /experiment`` after the aggregation: the weights now (as shares), the like
    #: rates and P(best) as the aggregation saw them.
    weights: dict[str, float]
    like_rates: dict[str, float | None]
    p_best: dict[str, float | None]
    decision: dict[str, Any] | None

    @property
    def applied(self) -> bool:
        """Whether the aggregation changed the endpoint's weights."""
        decision = self.decision or {}
        return bool(decision.get("changed")) and bool(decision.get("applied", True))

    @property
    def winner(self) -> str | None:
        winner = (self.decision or {}).get("winner")
        return None if winner is None else str(winner)

    def line(self) -> str:
        parts = []
        for name, weight in self.weights.items():
            rate, best = self.like_rates.get(name), self.p_best.get(name)
            text = f"{name} weight {weight:.2f}, liked {'-' if rate is None else f'{rate:.1%}'}"
            parts.append(text + ("" if best is None else f", P(best) {best:.1%}"))
        text = f"{self.users:>6} users ({self.seconds:.1f}s): " + " | ".join(parts)
        return text + (" <- new weights applied" if self.applied else "")


@dataclass
class SimulationReport:
    """What ``tweetgen simulate`` found: every round, when the decision came, the regret."""

    policy: str
    rates: dict[str, float]
    round_users: int
    seed: int
    tally: Tally
    rounds: list[Round] = field(default_factory=list)

    @property
    def first_change_at(self) -> int | None:
        """Users simulated when an aggregation first applied new weights."""
        return next((r.users for r in self.rounds if r.applied), None)

    @property
    def winner(self) -> tuple[str, int] | None:
        """The declared winner and the users simulated when it was declared."""
        return next(((r.winner, r.users) for r in self.rounds if r.winner), None)

    @property
    def last_decision(self) -> dict[str, Any] | None:
        return next((r.decision for r in reversed(self.rounds) if r.decision), None)

    @property
    def best(self) -> str:
        return max(self.rates, key=lambda name: self.rates[name])

    def as_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "policy": self.policy,
            "rates": dict(self.rates),
            "best": self.best,
            "round_users": self.round_users,
            "seed": self.seed,
            "simulation": self.tally.as_dict(),
            "first_change_at_users": self.first_change_at,
            "winner": None if winner is None else {"variant": winner[0], "at_users": winner[1]},
            "final_weights": self.rounds[-1].weights if self.rounds else {},
            "last_decision": self.last_decision,
            "rounds": [
                {
                    "users": r.users,
                    "seconds": round(r.seconds, 3),
                    "served": r.served,
                    "weights": r.weights,
                    "like_rates": r.like_rates,
                    "p_best": r.p_best,
                    "applied": r.applied,
                    "winner": r.winner,
                    "reason": (r.decision or {}).get("reason"),
                }
                for r in self.rounds
            ],
        }

    def summary(self) -> list[str]:
        best = self.best
        lines = [f"policy {self.policy}, {self.tally.users} users, true best {best}"]
        decision = self.last_decision
        if decision is not None:
            lines.append(f"last decision: {decision.get('reason', '')}")
        winner = self.winner
        if winner is not None:
            lines.append(f"winner {winner[0]} declared after {winner[1]:,} users")
        elif self.first_change_at is not None:
            lines.append(f"new weights first applied after {self.first_change_at:,} users")
        else:
            lines.append("the weights never changed")
        if self.rounds:
            final = ", ".join(f"{k} {v:.2f}" for k, v in self.rounds[-1].weights.items())
            lines.append(f"final weights: {final}")
        lines.append(
            "users: "
            + ", ".join(
                f"{name} {self.tally.served.get(name, 0)} served,"
                f" {self.tally.likes.get(name, 0)} liked"
                for name in self.rates
            )
        )
        even = sum(self.rates[best] - rate for rate in self.rates.values()) / len(self.rates)
        lines.append(
            f"regret: {self.tally.regret:.1f} likes lost against always serving {best}"
            f" (an even split loses {self.tally.users * even:.1f})"
        )
        return lines


def _in_service(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [row for row in status.get("variants", []) if row.get("in_service")]


def _optional(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return None if value is None else float(value)


def _weights_after(
    decision: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """The traffic shares in force after an aggregation: its decision's weights when they
    are (applied, or the ones already in force), else what ``GET /experiment`` reports (the
    API keeps the endpoint's weights for a few seconds, so it may not show new ones yet)."""
    reported = {str(r["variant"]): float(r.get("traffic_share") or 0.0) for r in rows}
    if decision is None:
        return reported
    weights = decision.get("weights")
    in_force = not decision.get("changed") or bool(decision.get("applied"))
    if not (isinstance(weights, Mapping) and weights and in_force):
        return reported
    total = sum(float(w) for w in weights.values()) or 1.0
    return {str(name): float(w) / total for name, w in weights.items()}


def run_rounds(
    simulation: UserSimulation,
    services: Services,
    *,
    users: int,
    round_users: int,
    policy: str,
    log: Callable[[str], None] = print,
    recorder_timeout: float = RECORDER_TIMEOUT_S,
) -> SimulationReport:
    """Users in rounds of ``round_users``. After each round, once the recorder has stored its
    feedback, the aggregate function runs once and ``GET /experiment`` is read; when new
    weights were applied, the next round waits until the generate function sees them."""
    if users < 1 or round_users < 1:
        raise ValueError(f"users and round users must be positive, got {users} and {round_users}")
    already = services.recorded_feedback()
    report = SimulationReport(
        policy=policy,
        rates=dict(simulation.rates),
        round_users=round_users,
        seed=simulation.seed,
        tally=simulation.tally,
    )
    while simulation.tally.users < users:
        started = time.perf_counter()
        simulation.run(min(round_users, users - simulation.tally.users))
        wait_for_feedback(
            services.recorded_feedback, already + simulation.tally.users, recorder_timeout
        )
        decision = decision_of(services.aggregate())
        rows = _in_service(experiment_status(services.api_url))
        done = Round(
            users=simulation.tally.users,
            seconds=time.perf_counter() - started,
            served=dict(simulation.tally.served),
            weights=_weights_after(decision, rows),
            like_rates={str(r["variant"]): _optional(r, "like_rate") for r in rows},
            p_best={str(r["variant"]): _optional(r, "p_best") for r in rows},
            decision=decision,
        )
        report.rounds.append(done)
        log("   " + done.line())
        if done.applied and simulation.tally.users < users:
            time.sleep(services.weights_cache_s + 0.5)
    return report


# --------------------------------------------------------------------------- the command


@dataclass
class SimulateOptions:
    """``tweetgen simulate``'s options (see ``add_simulate_arguments``)."""

    users: int
    rates: dict[str, float]
    policy: str = "ab"
    seed: int = 7
    round_users: int = 100
    #: A running local stack's folder; None: start one in this process.
    state_dir: Path | None = None
    #: ``DIR/<variant>/model.tar.gz`` for every variant; None: the demo's cached tiny models.
    models: Path | None = None
    data: list[Path] = field(default_factory=list)
    template: Path = Path("template.yaml")
    #: More template parameters (the experiment's settings, e.g. ExperimentMinSamplesPerVariant).
    parameters: dict[str, str] = field(default_factory=dict)
    json_path: Path | None = None

    def parameter_overrides(self, *, quiet_schedule: bool = False) -> dict[str, str]:
        """The template parameters: ``parameters`` with the policy; with ``quiet_schedule``
        (a stack of our own) the aggregate function's schedule does not fire during the run,
        unless ``parameters`` sets it: one aggregation closes each round."""
        quiet = {SCHEDULE_PARAMETER: QUIET_SCHEDULE} if quiet_schedule else {}
        return {**quiet, **self.parameters, POLICY_PARAMETER: self.policy}


def _check_template(template_path: Path, parameters: Mapping[str, str]) -> bool:
    """The template must have the decision policy parameter and the aggregate function, and
    take ``parameters``; True when it has the aggregate function's schedule parameter."""
    from tweetgen_build.errors import InputError

    from tweetgen_local.template import Template, TemplateError

    try:
        template = Template.load(template_path)
    except (OSError, TemplateError) as exc:
        raise InputError(f"cannot read the template {template_path}: {exc}") from None
    missing = [
        what
        for what, present in (
            (f"the parameter {POLICY_PARAMETER}", POLICY_PARAMETER in template.parameters),
            (f"the function {AGGREGATE_FUNCTION}", AGGREGATE_FUNCTION in template.functions),
        )
        if not present
    ]
    if missing:
        raise InputError(
            f"{template_path} lacks {' and '.join(missing)}: the experiment cannot be"
            " aggregated and decided"
        )
    try:
        template.parameter_values(parameters)
    except TemplateError as exc:
        raise InputError(f"--parameter-overrides: {exc}") from None
    return SCHEDULE_PARAMETER in template.parameters


def services_for(api_url: str, pool: Any, database_url: str) -> Services:
    """The services of a stack whose functions run in ``pool`` (a ``FunctionPool``)."""

    def aggregate() -> Any:
        deadline = time.monotonic() + AGGREGATE_BUSY_TIMEOUT_S
        while True:
            result = pool.invoke(AGGREGATE_FUNCTION, AGGREGATE_EVENT)
            if result.error is not None:
                raise SimulationError(
                    f"{AGGREGATE_FUNCTION} failed: {result.error.get('errorType', 'Error')}:"
                    f" {result.error.get('errorMessage', '')}"
                )
            answer = result.payload
            # Neither an aggregation nor a decision: another run held the experiment.
            busy = isinstance(answer, Mapping) and answer.get("aggregation") is None
            if not busy or answer.get("decision") is not None:
                return answer
            if time.monotonic() > deadline:
                raise SimulationError(
                    f"{AGGREGATE_FUNCTION} did not run for {AGGREGATE_BUSY_TIMEOUT_S:.0f}s:"
                    f" {answer.get('outcome')}"
                )
            time.sleep(0.5)

    cache = pool.environment(GENERATE_FUNCTION).get("VARIANTS_CACHE_SECONDS") or "10"
    return Services(
        api_url=api_url,
        aggregate=aggregate,
        recorded_feedback=lambda: recorded_feedback(database_url),
        weights_cache_s=float(cache),
    )


def model_artifacts(options: SimulateOptions, log: Callable[[str], None]) -> dict[str, Path]:
    """Each variant's ``model.tar.gz``: from ``--models``, else the demo's cached tiny models
    (trained on the shared tweets the first time, a few minutes)."""
    from tweetgen_build.errors import InputError

    if options.models is not None:
        found = {name: options.models / name / "model.tar.gz" for name in options.rates}
        missing = [str(path) for path in found.values() if not path.is_file()]
        if missing:
            raise InputError(
                f"--models {options.models} lacks {', '.join(missing)}"
                " (expected DIR/<variant>/model.tar.gz for every variant of --rates)"
            )
        return found
    from tweetgen_local.demo import DemoOptions, train_models

    log("== models: the demo's tiny models (cached after their first training)")
    trained = train_models(DemoOptions(data=options.data))
    unknown = sorted(set(options.rates) - set(trained))
    if unknown:
        raise InputError(
            f"--rates names {', '.join(unknown)}, but the models are {', '.join(sorted(trained))}"
        )
    return {name: trained[name] for name in options.rates}


def _check_variants(api_url: str, rates: Mapping[str, float]) -> None:
    in_service = sorted(str(row["variant"]) for row in _in_service(experiment_status(api_url)))
    if not in_service:
        raise SimulationError(
            "no variant is in service: roll the models out first (tweetgen deploy-model)"
        )
    unrated = [name for name in in_service if name not in rates]
    if unrated:
        raise SimulationError(
            f"{', '.join(unrated)} in service but --rates gives no true rate for it"
            f" (in service: {', '.join(in_service)})"
        )


def _simulate_in_process(
    options: SimulateOptions, log: Callable[[str], None], *, quiet_schedule: bool
) -> SimulationReport:
    import tempfile

    from tweetgen_local.deploy import deploy_model, find_target
    from tweetgen_local.stack import LocalStack, StackOptions, stack_database_url

    artifacts = model_artifacts(options, log)
    with tempfile.TemporaryDirectory(prefix="tweetgen-simulate-") as tmp:
        state_dir = Path(tmp) / "stack"
        log(f"== local stack with {POLICY_PARAMETER}={options.policy} ({state_dir})")
        stack = LocalStack(
            StackOptions(
                state_dir=state_dir,
                template=options.template,
                parameter_overrides=options.parameter_overrides(quiet_schedule=quiet_schedule),
            ),
            log=lambda line: log(f"   {line}"),
        )
        stack.start()
        try:
            target = find_target(state_dir)
            for variant, archive in artifacts.items():
                log(f"== rollout of {variant}: {archive}")
                status = deploy_model(
                    archive,
                    variant=variant,
                    version=None,
                    target=target,
                    wait=True,
                    out=lambda line: log(f"   {line}"),
                )
                if status != 0:
                    raise SimulationError(f"the rollout of {variant} failed (see above)")
            services = services_for(
                str(stack.endpoints["api"]), stack.pool, stack_database_url(state_dir)
            )
            return _simulate_against(services, options, log)
        finally:
            stack.stop()


def _simulate_on_running_stack(
    options: SimulateOptions, state_dir: Path, log: Callable[[str], None]
) -> SimulationReport:
    from tweetgen_build.errors import InputError

    from tweetgen_local.functions import (
        FunctionPool,
        _aws_for_invoke,
        _database_for_invoke,
        running_stack,
    )
    from tweetgen_local.template import Template

    endpoints = running_stack(state_dir)
    if endpoints is None or not endpoints.get("api"):
        raise InputError(
            f"no local stack answers on {state_dir} (start one with"
            f" `tweetgen local up --state-dir {state_dir}`)"
        )
    # The aggregate function runs here, as `tweetgen invoke` runs it: on the stack's AWS
    # endpoint and database, with this command's policy.
    template = Template.load(options.template, options.parameter_overrides())
    ctx = template.context(
        region=str(endpoints.get("region") or "us-east-1"),
        stack_name=str(endpoints.get("stack_name") or "tweetgen"),
    )
    log(f"== local stack on {state_dir}: {endpoints['api']}")
    decided_with = experiment_status(str(endpoints["api"])).get("policy")
    if decided_with and decided_with != options.policy:
        log(
            f"   note: this stack last decided with the {decided_with} policy; its own schedule"
            f" keeps deciding with it between this command's {options.policy} aggregations"
        )
    database_url = _database_for_invoke(state_dir, endpoints)
    with (
        _aws_for_invoke(template, ctx, endpoints) as aws_env,
        FunctionPool(template, ctx, {**aws_env, "DATABASE_URL": database_url}) as pool,
    ):
        return _simulate_against(
            services_for(str(endpoints["api"]), pool, database_url), options, log
        )


def _simulate_against(
    services: Services, options: SimulateOptions, log: Callable[[str], None]
) -> SimulationReport:
    _check_variants(services.api_url, options.rates)
    hidden = ", ".join(f"{name} {rate:.0%}" for name, rate in options.rates.items())
    log(
        f"== {options.users} simulated users in rounds of {options.round_users}, true like"
        f" rates {hidden}, policy {options.policy}; an aggregation after every round"
    )
    simulation = UserSimulation(services.api_url, options.rates, seed=options.seed)
    return run_rounds(
        simulation,
        services,
        users=options.users,
        round_users=options.round_users,
        policy=options.policy,
        log=log,
    )


def simulate(options: SimulateOptions, log: Callable[[str], None] = print) -> SimulationReport:
    """Run ``tweetgen simulate``: on the running stack of ``state_dir``, else in-process."""
    from tweetgen_build.errors import InputError

    if options.policy not in POLICIES:
        raise InputError(f"--policy must be one of {', '.join(POLICIES)}, got {options.policy!r}")
    if options.users < 1 or options.round_users < 1:
        raise InputError(
            f"--users and --round-users must be positive, got {options.users} and"
            f" {options.round_users}"
        )
    if len(options.rates) < 2:
        raise InputError("--rates needs at least two variants to compare")
    has_schedule = _check_template(options.template, options.parameter_overrides())
    if options.state_dir is not None:
        report = _simulate_on_running_stack(options, options.state_dir, log)
    else:
        report = _simulate_in_process(options, log, quiet_schedule=has_schedule)
    log("\n== result")
    for line in report.summary():
        log("   " + line)
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        log(f"   report: {options.json_path}")
    return report
