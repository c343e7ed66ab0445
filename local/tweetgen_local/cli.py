"""The ``tweetgen`` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tweetgen_build.cli import COMMANDS, PROG, run

# TensorFlow start-up chatter (CUDA probing on CPU machines) is noise to users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _default_data() -> list[Path]:
    return [Path(os.environ.get("TWEETGEN_DATA_DIR", "../shared/data/sentiment140"))]


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="tweets to train on (default: $TWEETGEN_DATA_DIR or ../shared/data/sentiment140)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(".tweetgen/demo"), help="where models are kept"
    )
    parser.add_argument("--max-tweets", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--retrain", action="store_true", help="ignore cached models")
    parser.add_argument(
        "--no-serve", action="store_true", help="end after the demo instead of serving"
    )
    parser.add_argument("-t", "--template", type=Path, default=Path("template.yaml"))
    parser.add_argument(
        "--rates",
        default="lstm=0.10,gpt2=0.30",
        help="the simulated users' hidden true like rate per variant (default lstm=0.10,gpt2=0.30)",
    )
    parser.add_argument("--users", type=int, default=600, help="simulated users at most")
    parser.add_argument(
        "--round-users", type=int, default=100, help="users between two aggregations"
    )


def _demo(args: argparse.Namespace) -> int:
    from tweetgen_build.errors import InputError

    from tweetgen_local.demo import DemoOptions, run_demo
    from tweetgen_local.simulate import parse_rates

    try:
        parse_rates(args.rates)
    except ValueError as exc:
        raise InputError(str(exc)) from None

    return run_demo(
        DemoOptions(
            data=args.data or _default_data(),
            out=args.out,
            max_tweets=args.max_tweets,
            epochs=args.epochs,
            preset=args.preset,
            vocab_size=args.vocab_size,
            seed=args.seed,
            retrain=args.retrain,
            template=args.template,
            rates=parse_rates(args.rates),
            users=args.users,
            round_users=args.round_users,
            serve=not args.no_serve,
        )
    )


def _add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1000, help="simulated users (default 1000)")
    parser.add_argument(
        "--rates",
        default="lstm=0.10,gpt2=0.12",
        help="each variant's hidden true like rate (default lstm=0.10,gpt2=0.12)",
    )
    parser.add_argument(
        "--policy",
        choices=("ab", "bandit"),
        default="ab",
        help="the decision policy (the template parameter DecisionPolicy; default ab)",
    )
    parser.add_argument("--seed", type=int, default=7, help="the simulated users' seed")
    parser.add_argument(
        "--round-users", type=int, default=100, help="users between two aggregations"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="a running local stack's folder (`tweetgen local up --state-dir DIR`); default:"
        " a fresh local stack in this process with --policy",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="DIR/<variant>/model.tar.gz for the in-process stack (default: the demo's cached"
        " tiny models, trained on --data the first time)",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="tweets for the demo's models (default: $TWEETGEN_DATA_DIR or"
        " ../shared/data/sentiment140)",
    )
    parser.add_argument("-t", "--template", type=Path, default=Path("template.yaml"))
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameters for the aggregate function (and the in-process stack), e.g."
        " ExperimentMinSamplesPerVariant=50",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")


def _simulate(args: argparse.Namespace) -> int:
    from tweetgen_build.errors import InputError

    from tweetgen_local.functions import _parse_overrides
    from tweetgen_local.simulate import SimulateOptions, SimulationError, parse_rates, simulate

    try:
        rates = parse_rates(args.rates)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    parameters = _parse_overrides(args.parameter_overrides)
    try:
        simulate(
            SimulateOptions(
                users=args.users,
                rates=rates,
                policy=args.policy,
                seed=args.seed,
                round_users=args.round_users,
                state_dir=args.state_dir,
                models=args.models,
                data=args.data or _default_data(),
                template=args.template,
                parameters=parameters,
                json_path=args.json,
            )
        )
    except SimulationError as exc:
        print(f"tweetgen simulate: {exc}", file=sys.stderr)
        return 1
    return 0


def _local_up(args: argparse.Namespace) -> int:
    from tweetgen_local.stack import StackOptions, local_up

    return local_up(
        StackOptions(
            state_dir=args.state_dir,
            template=args.template,
            region=args.region,
            aws_port=args.aws_port,
            runtime_port=args.runtime_port,
            api_port=args.api_port,
            web_port=args.web_port,
            database_url=args.database_url,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="tweetgen: train, serve and A/B-test tweet generators"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments, command) in COMMANDS.items():
        sp = sub.add_parser(name, help=summary, description=summary)
        add_arguments(sp)
        sp.set_defaults(handler=command)
    local = sub.add_parser("local", help="the docker-free local stack")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = local_sub.add_parser("up", help="run the local stack in the foreground until Ctrl-C")
    up.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".tweetgen/local"),
        help="where endpoints.json and the model cache live (default .tweetgen/local)",
    )
    up.add_argument("-t", "--template", type=Path, default=Path("template.yaml"))
    up.add_argument("--region", default="us-east-1")
    up.add_argument("--aws-port", type=int, default=0, help="moto's port (default: a free one)")
    up.add_argument("--runtime-port", type=int, default=0)
    up.add_argument("--api-port", type=int, default=0)
    up.add_argument(
        "--web-port",
        type=int,
        default=0,
        help="the port of the GraphQL API and the dashboard (default: a free one)",
    )
    up.add_argument(
        "--database-url",
        default=os.environ.get("TWEETGEN_DATABASE_URL"),
        help="the functions' database, e.g. mysql+pymysql://root@127.0.0.1:3306/test "
        "(default: $TWEETGEN_DATABASE_URL, else SQLite in the state dir)",
    )
    up.set_defaults(handler=_local_up)

    from tweetgen_local.functions import INVOKE_SUMMARY, add_invoke_arguments, run_invoke

    invoke = sub.add_parser("invoke", help=INVOKE_SUMMARY, description=INVOKE_SUMMARY)
    add_invoke_arguments(invoke)
    invoke.set_defaults(handler=run_invoke)

    from tweetgen_local.deploy import add_deploy_arguments, deploy_command

    deploy = sub.add_parser(
        "deploy-model",
        help="upload a model.tar.gz to the artifact bucket and follow its rollout",
        description="upload a model.tar.gz to the artifact bucket (local stack or AWS) and"
        " follow the rollout state by state; exit 0 only when the new version serves",
    )
    add_deploy_arguments(deploy)
    deploy.set_defaults(handler=deploy_command)

    from tweetgen_local.dashboard import REPORT_SUMMARY, add_report_arguments, report_command

    report = sub.add_parser("report", help=REPORT_SUMMARY, description=REPORT_SUMMARY)
    add_report_arguments(report)
    report.set_defaults(handler=report_command)

    simulate = sub.add_parser(
        "simulate",
        help="simulated users with known like rates through the real services",
        description="simulated users with hidden true like rates generate and give feedback"
        " through the REST API; after every round the aggregate function decides; reports the"
        " decision, when it came and the regret",
    )
    _add_simulate_arguments(simulate)
    simulate.set_defaults(handler=_simulate)

    demo = sub.add_parser("demo", help="the whole story on the local machine")
    _add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)

    from tweetgen_local.experiment_cli import add_experiment_arguments

    experiment = sub.add_parser(
        "experiment",
        help="the A/B experiment of the local stack",
        description="the A/B experiment of the local stack (its database and endpoint)",
    )
    add_experiment_arguments(experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
