"""``tweetgen experiment status``: the figures of ``GET /experiment`` as a table (or JSON).

It reads the database of the local stack that runs (or ran) on ``--state-dir`` (its
``database.url``; ``DATABASE_URL`` wins when set) and, while that stack runs, the endpoint's
weights and model versions from its SageMaker; without a running stack, the weights last seen
by the experiment engine. The figures come from
:func:`tweetgen.services.experiment.experiment_status`, as the API's do.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tweetgen_local.stack import DEFAULT_STATE_DIR, ENDPOINT_NAME

__all__ = ["add_experiment_arguments", "format_status", "read_status"]


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment_command", required=True, metavar="COMMAND")
    status = sub.add_parser(
        "status",
        help="per-variant figures, P(best), sequential tests, sample ratio, last decision",
        description="the experiment's status, as GET /experiment reports it",
    )
    status.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the local stack's state dir (default .tweetgen/local)",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=status_command)


def _database_url(state_dir: Path) -> str:
    from tweetgen_build.errors import InputError

    from tweetgen_local.stack import DATABASE_URL_FILE, stack_database_url

    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        return configured
    if not (state_dir / DATABASE_URL_FILE).is_file() and not (state_dir / "tweetgen.db").is_file():
        raise InputError(
            f"no local stack database in {state_dir}: start one with `tweetgen local up "
            f"--state-dir {state_dir}` (or set DATABASE_URL)"
        )
    return stack_database_url(state_dir)


def _in_service(state_dir: Path) -> tuple[str, list[Any] | None]:
    """The endpoint's name and variants while the stack runs; None when it cannot be asked."""
    import boto3
    from tweetgen.adapters.sagemaker import EndpointVariants
    from tweetgen.services.serving import ServiceUnavailable

    from tweetgen_local.functions import FAKE_CREDENTIALS
    from tweetgen_local.stack import read_endpoints

    endpoints = read_endpoints(state_dir)
    name = str((endpoints or {}).get("endpoint_name") or ENDPOINT_NAME)
    if endpoints is None:
        return name, None
    client = boto3.client(
        "sagemaker",
        endpoint_url=str(endpoints["aws"]),
        region_name=str(endpoints.get("region") or "us-east-1"),
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        return name, list(EndpointVariants(client, name, ttl_s=0).current())
    except ServiceUnavailable:
        return name, []


def read_status(state_dir: Path) -> dict[str, Any]:
    """The status of the experiment of the local stack on ``state_dir``."""
    from tweetgen.adapters.database import Database
    from tweetgen.services.experiment import experiment_status

    database = Database.from_url(_database_url(state_dir))
    name, in_service = _in_service(state_dir)
    return experiment_status(database, name, in_service)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _variant_rows(variants: list[Mapping[str, Any]]) -> list[str]:
    header = [
        "variant",
        "in service",
        "version",
        "weight",
        "served",
        "errors",
        "feedback",
        "liked",
        "reward",
        "p50 ms",
        "p95 ms",
        "P(best)",
        "exp. loss",
    ]
    rows = [header]
    for row in variants:
        rows.append(
            [
                str(row["variant"]),
                "yes" if row["in_service"] else "no",
                str(row.get("model_version") or "-"),
                _percent(row.get("traffic_share")),
                str(row["served"]),
                str(row["errors"]),
                str(row["feedback"]),
                _percent(row.get("like_rate")),
                _number(row.get("mean_reward")),
                _number(row.get("latency_p50_ms"), 0),
                _number(row.get("latency_p95_ms"), 0),
                _percent(row.get("p_best")),
                _number(row.get("expected_loss"), 4),
            ]
        )
    return _table(rows)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def format_status(status: Mapping[str, Any]) -> str:
    """The status as the lines ``tweetgen experiment status`` prints."""
    lines = [
        f"experiment on endpoint {status['endpoint_name']}: policy {status.get('policy') or '-'};"
        f" figures as of {status.get('metrics_as_of') or 'never (no aggregation yet)'},"
        f" statistics as of {status.get('statistics_as_of') or 'never (no decision yet)'}",
        "",
    ]
    variants = list(status.get("variants") or [])
    lines += _variant_rows(variants) if variants else ["no variant has served yet"]
    sequential: Mapping[str, Mapping[str, Any]] = status.get("sequential") or {}
    if sequential:
        lines += ["", "sequential tests (always-valid p-value and confidence interval):"]
        for test in sequential.values():
            verdict = "significant" if test.get("significant") else "not significant"
            lines.append(
                f"  {test.get('difference_of')}: difference {_signed(test.get('difference'))},"
                f" p = {test.get('p_value', 1.0):.3g},"
                f" CI [{_signed(test.get('ci_low'))}, {_signed(test.get('ci_high'))}], {verdict}"
            )
    srm: Mapping[str, Any] | None = status.get("srm")
    if srm:
        statistic = srm.get("statistic")
        shown = "inf" if statistic is None else f"{statistic:.2f}"
        verdict = "MISMATCH: decisions frozen" if srm.get("flagged") else "ok"
        lines.append(
            f"sample ratio since the weights were set ({status.get('weights_since') or '-'}):"
            f" chi2 = {shown}, p = {srm.get('p_value', 1.0):.3g}"
            f" (threshold {srm.get('threshold')}): {verdict}"
        )
    for name, reasons in (status.get("guardrails") or {}).items():
        lines.append(f"guardrail: {name}: {'; '.join(reasons)}")
    last: Mapping[str, Any] | None = status.get("last_decision")
    lines.append("")
    if last is None:
        lines.append("last decision: none yet")
    else:
        weights = ", ".join(f"{k} {_percent(v)}" for k, v in sorted(last["weights"].items()))
        state = "applied" if last.get("applied") else "not applied"
        lines += [
            f"last decision {last['id']} at {last['created_at']} ({last['policy']}):"
            f" {state}; weights {weights}",
            f"  {last['reason']}",
            f"  {last.get('outcome') or ''}".rstrip(),
        ]
    return "\n".join(line for line in lines).rstrip() + "\n"


def status_command(args: argparse.Namespace) -> int:
    status = read_status(args.state_dir)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_status(status), end="")
    return 0
