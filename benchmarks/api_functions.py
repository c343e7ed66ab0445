"""The serving functions' cold-start imports, deployment packages and recorder throughput.

- Import time of every Lambda handler module in a fresh process (what a cold start pays before
  the first event), against the 250 ms budget, and which heavy libraries it pulls in (no
  TensorFlow or numpy may reach an API function). The baseline is the floor every handler
  shares: importing Powertools' Logger, Tracer and Metrics alone.
- The same imports from the deployment packages as ``sam build`` makes them (the Makefile's
  ``build-CommonLayer`` and ``build-%Function``: pinned wheels, bytecode compiled), against the
  same packages without bytecode, which is how SAM's own Python builder ships them (it unpacks
  wheels and copies sources): on Lambda's read-only file system such a cold start compiles every
  module it imports. Imported with nothing but the packages and the runtime's libraries (last) on the path,
  and nothing written back.
- The same handler imports against their libraries alone: every module a handler's import
  loaded except the project's own (``tweetgen`` and the function's ``app``), imported in the
  same order in a fresh process. What is left of the handler's figure is what our code costs
  (its modules, the pydantic models and clients it builds at import); what the libraries take
  alone is a floor no change of ours lowers short of dropping a library.
- Each function's deployment package: its code folder plus the common layer and the layer's
  pinned requirements, as ``sam build`` would zip them (sizes of the installed files).
- Recorder throughput into MariaDB (events/s) at batch sizes 10 and 100: the recorder's batch
  write (one transaction per batch) against writing the same events one transaction each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from tweetgen_local.template import Template

from benchmarks.common import (
    DEFAULT_DATA,
    OUT_DIR,
    REPO_ROOT,
    BenchResult,
    Row,
    base_parser,
    finish,
    make_row,
    median,
    progress,
)

NAME = "api_functions"
LAYER = "CommonLayer"
SERVERLESS_CODE = ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
BUDGET_MS = 250.0
HEAVY = ("tensorflow", "numpy", "transformers", "tf_keras", "keras")
MYSQL_URL = os.environ.get("TWEETGEN_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

# Imports the handler module the way the Lambda runtime does and reports what it cost.
_PROBE = r"""
import importlib, json, os, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
started = time.perf_counter()
if sys.argv[3] == "-":
    from aws_lambda_powertools import Logger, Metrics, Tracer
    Logger(); Tracer(); Metrics()
else:
    importlib.import_module(sys.argv[3])  # "app", or a library measured alone
elapsed = time.perf_counter() - started
print(json.dumps({"ms": elapsed * 1000, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _function_dirs() -> list[Path]:
    return sorted(p.parent for p in (REPO_ROOT / "functions").glob("*/app.py"))


def _environment(code_dir: Path | None) -> dict[str, str]:
    """What the Lambda runtime sets before it imports a handler, tracing active as deployed
    (with the template's ``Globals`` variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_"))}
    name = code_dir.name if code_dir else "powertools"
    return {
        **env,
        **Template.load(REPO_ROOT / "template.yaml").global_environment(),
        "AWS_LAMBDA_FUNCTION_NAME": f"tweetgen-{name}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "LAMBDA_TASK_ROOT": str(code_dir or REPO_ROOT),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "tweetgen",
        "POWERTOOLS_METRICS_NAMESPACE": "tweetgen",
        "EVENTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/events",
        "ENDPOINT_NAME": "tweetgen",
        "VARIANTS": "lstm,gpt2",
    }


def _probe(code_dir: Path | None, module: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(code_dir or REPO_ROOT),
            str(REPO_ROOT / "layers" / "common"),
            module,
        ],
        capture_output=True,
        text=True,
        env=_environment(code_dir),
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def import_ms(code_dir: Path | None, repeats: int) -> tuple[float, list[str]]:
    """Median import time of ``app`` from ``code_dir`` (None: Powertools alone) in fresh processes."""
    times, modules = [], []
    for _ in range(repeats):
        answer = _probe(code_dir, "app" if code_dir else "-")
        times.append(float(answer["ms"]))
        modules = list(answer["modules"])
    return median(times), [m for m in HEAVY if m in modules]


# Libraries some handlers cannot do without, imported alone: what a handler's figure is made of.
LIBRARIES = {
    "boto3": "boto3",
    "SQLAlchemy": "sqlalchemy",
    "Powertools REST resolver with validation": "aws_lambda_powertools.event_handler.openapi.params",
}


def library_ms(module: str, repeats: int) -> float:
    return median([float(_probe(None, module)["ms"]) for _ in range(repeats)])


def _installed_size(distribution: str) -> int:
    from importlib.metadata import distribution as find

    dist = find(distribution)
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file() and "__pycache__" not in path.parts:
            total += path.stat().st_size
    return total


def build_packages(out: Path) -> dict[str, Path]:
    """Every function and the common layer built as ``sam build`` builds them.

    Returns {function's code folder name, or ``LAYER``: built folder}.

    Like SAM's makefile builder: the code folder copied to a scratch folder, then
    ``make build-<LogicalId>`` there with ``ARTIFACTS_DIR``. Needs python3.11 and the package
    index (the targets run pip).
    """
    import yaml

    document = yaml.load((REPO_ROOT / "template.yaml").read_text(), Loader=yaml.BaseLoader)
    shutil.rmtree(out, ignore_errors=True)
    built: dict[str, Path] = {}
    for logical_id, resource in document["Resources"].items():
        properties = resource.get("Properties") or {}
        uri = properties.get("CodeUri") or properties.get("ContentUri")
        if resource["Type"] not in SERVERLESS_CODE or not isinstance(uri, str):
            continue
        scratch = out / "scratch" / logical_id
        shutil.copytree(REPO_ROOT / uri, scratch, ignore=shutil.ignore_patterns("__pycache__"))
        progress(NAME, f"building {logical_id} (make build-{logical_id})")
        subprocess.run(
            [
                "make",
                "--silent",
                "--makefile",
                str(REPO_ROOT / "Makefile"),
                f"build-{logical_id}",
                f"ARTIFACTS_DIR={out / 'compiled' / logical_id}",
            ],
            cwd=scratch,
            check=True,
            capture_output=True,
            text=True,
        )
        key = LAYER if logical_id == LAYER else Path(uri).name
        built[key] = out / "compiled" / logical_id
    return built


def without_bytecode(built: dict[str, Path], out: Path) -> dict[str, Path]:
    """The same packages with every ``__pycache__`` left out."""
    source: dict[str, Path] = {}
    for key, folder in built.items():
        source[key] = out / "source" / folder.name
        shutil.rmtree(source[key], ignore_errors=True)
        shutil.copytree(folder, source[key], ignore=shutil.ignore_patterns("__pycache__"))
    return source


# Imports a handler from its deployment package and the layer's, as Lambda lays them out
# (/var/task, /opt/python), the runtime's libraries last (/var/runtime: only certifi, which
# botocore uses where it finds it, comes from there); -S keeps every other library out.
# Given a list of module names instead (argv[4], JSON), it imports those in that order and no
# handler: the libraries a handler loaded, replayed without a line of ours (the handler's
# first act, turning off the garbage collector until its import is done, included).
_DEPLOYED_PROBE = r"""
import gc, importlib, json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
sys.path.append(sys.argv[3])
replay = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
before = set(sys.modules)
started = time.perf_counter()
if replay is None:
    importlib.import_module("app")
else:
    gc.disable()
    failed = []
    for name in replay:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name)
elapsed = time.perf_counter() - started
loaded = [name for name in sys.modules if name not in before]
print(json.dumps({"ms": elapsed * 1000, "loaded": loaded, "failed": failed if replay else []}))
"""


class Imported(NamedTuple):
    ms: float
    loaded: list[str]  # the modules the import loaded, in load order
    failed: list[str]  # the replayed modules that could not be imported on their own


class DeployedImports(NamedTuple):
    compiled_ms: float  # the handler from its sam build packages
    source_ms: float  # the same packages without bytecode
    libraries_ms: float  # its libraries alone
    unreplayed: list[str]  # modules of its libraries that the replay could not import alone


def deployed_import(
    function_dir: Path, layer_dir: Path, code_dir: Path, replay: list[str] | None = None
) -> Imported:
    """Importing the handler from its packages, or the modules ``replay`` names instead."""
    import sysconfig

    done = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            _DEPLOYED_PROBE,
            str(function_dir),
            str(layer_dir / "python"),
            sysconfig.get_paths()["purelib"],
            *([json.dumps(replay)] if replay is not None else []),
        ],
        capture_output=True,
        text=True,
        env={**_environment(code_dir), "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return Imported(float(answer["ms"]), list(answer["loaded"]), list(answer["failed"]))


def libraries_of(loaded: list[str], code_dir: Path) -> list[str]:
    """The modules of ``loaded`` that are not the project's: neither the common layer's
    ``tweetgen`` nor any module of the function's code folder (its ``app``)."""
    own = {"tweetgen"} | {p.stem for p in code_dir.glob("*.py")}
    return [name for name in loaded if name.partition(".")[0] not in own]


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def deployed_imports(
    repeats: int, compiled: dict[str, Path], out: Path
) -> dict[str, DeployedImports]:
    """Each function's imports from its packages, without bytecode, and of its libraries alone.

    The libraries alone: the third-party and standard modules that importing the handler
    loaded, imported in the same order in a fresh process with no code of ours (so the
    handler's figure less this one is what our modules and their module-level work cost).
    The three imports of each round run in random order.
    """
    import random

    source = without_bytecode(compiled, out)
    functions = [name for name in compiled if name != LAYER]
    code_dirs = {name: REPO_ROOT / "functions" / name for name in functions}
    libraries = {
        name: libraries_of(
            deployed_import(compiled[name], compiled[LAYER], code_dirs[name]).loaded,
            code_dirs[name],
        )
        for name in functions
    }
    times: dict[tuple[str, str], list[float]] = {}
    unreplayed: dict[str, list[str]] = {}
    rng = random.Random(7)
    for round_number in range(repeats):
        progress(NAME, f"imports from the deployment packages, round {round_number + 1}/{repeats}")
        turns = [(f, kind) for f in functions for kind in ("compiled", "source", "libraries")]
        rng.shuffle(turns)
        for name, kind in turns:
            packages = source if kind == "source" else compiled
            replay = libraries[name] if kind == "libraries" else None
            imported = deployed_import(packages[name], packages[LAYER], code_dirs[name], replay)
            times.setdefault((name, kind), []).append(imported.ms)
            if replay is not None:
                unreplayed[name] = imported.failed
    names = sorted({name for name, _ in times})
    return {
        n: DeployedImports(
            median(times[(n, "compiled")]),
            median(times[(n, "source")]),
            median(times[(n, "libraries")]),
            unreplayed.get(n, []),
        )
        for n in names
    }


def _requirements(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(line.split("==")[0].split("[")[0])
    return names


def _dependencies(names: list[str]) -> set[str]:
    """The distributions ``names`` need, transitively."""
    from importlib.metadata import PackageNotFoundError, requires
    from re import split

    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for requirement in needs:
            if "extra ==" in requirement and "tracer" not in requirement:
                continue
            pending.append(split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return seen


def package_mb(code_dir: Path) -> float:
    """Code + layer + their requirements' installed files (uncompressed), in MB."""
    code = sum(p.stat().st_size for p in code_dir.rglob("*") if p.is_file())
    layer_dir = REPO_ROOT / "layers" / "common"
    layer = sum(
        p.stat().st_size
        for p in (layer_dir / "tweetgen").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    names = _requirements(code_dir / "requirements.txt") + _requirements(
        layer_dir / "requirements.txt"
    )
    libraries = sum(_installed_size(name) for name in sorted(_dependencies(names)))
    return (code + layer + libraries) / 1e6


def _events(count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    for i in range(count):
        generation_id = uuid.uuid4().hex
        events.append(
            {
                "type": "generation",
                "generation_id": generation_id,
                "user_id": f"user-{i}",
                "variant": "lstm" if i % 2 else "gpt2",
                "model_version": "v1",
                "prompt": "good morning",
                "text": "to everyone who is up early",
                "parameters": {"max_new_tokens": 16},
                "latency_ms": 40.0,
                "created_at": now.isoformat(),
            }
        )
        events.append(
            {
                "type": "feedback",
                "feedback_id": uuid.uuid4().hex,
                "generation_id": generation_id,
                "reward": 1.0,
                "raw_value": "like",
                "created_at": now.isoformat(),
            }
        )
    return events


def recorder_throughput(batch: int, total: int) -> tuple[float, float]:
    """Events/s into a fresh MariaDB database: batch writes, and one transaction per event."""
    import sqlalchemy
    from tweetgen.adapters.database import Database, dispose_engines, normalise_url
    from tweetgen.services.recording import parse_event, record_event, record_events

    admin_url = normalise_url(MYSQL_URL)
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"tweetgen_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
    try:
        db = Database.from_url(admin_url.set(database=name))
        db.migrate()
        events = [parse_event(json.dumps(e)) for e in _events(total // 2)]
        started = time.perf_counter()
        for start in range(0, len(events) // 2, batch):
            record_events(events[start : start + batch], db.generations, db.feedback)
        batched = (len(events) // 2) / (time.perf_counter() - started)
        started = time.perf_counter()
        for event in events[len(events) // 2 :]:
            record_event(event, db.generations, db.feedback)
        single = (len(events) - len(events) // 2) / (time.perf_counter() - started)
        return batched, single
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


def _import_row(
    function: str, where: str, ms: float, baseline: float, baseline_name: str, notes: list[str]
) -> Row:
    """A handler's import figure against the budget; a note when it is over."""
    if ms > BUDGET_MS:
        notes.append(
            f"{function}, handler import {where}: {ms:.0f} ms, over the {BUDGET_MS:.0f} ms budget"
        )
    return make_row(
        NAME,
        f"{function}: handler import {where} (budget {BUDGET_MS:.0f} ms)",
        ms,
        "ms",
        baseline,
        baseline_name,
        higher_is_better=False,
    )


def run(quick: bool = False, data: Path = DEFAULT_DATA, seed: int = 7) -> BenchResult:
    started = time.perf_counter()
    repeats = 3 if quick else 7
    rows: list[Row] = []
    notes: list[str] = []
    details: dict[str, Any] = {}
    floor, _ = import_ms(None, repeats)
    details["powertools_ms"] = floor
    for code_dir in _function_dirs():
        progress(NAME, f"importing {code_dir.name}")
        ms, heavy = import_ms(code_dir, repeats)
        details[f"{code_dir.name}_import_ms"] = ms
        details[f"{code_dir.name}_heavy"] = heavy
        rows.append(
            _import_row(
                code_dir.name,
                "in a fresh process",
                ms,
                floor,
                "Powertools Logger+Tracer+Metrics alone, default Tracer (patches every library it finds)",
                notes,
            )
        )
        if heavy:
            notes.append(f"{code_dir.name} imports {', '.join(heavy)}")
        details[f"{code_dir.name}_package_mb"] = package_mb(code_dir)
    packages_dir = OUT_DIR / "lambda-packages"
    try:
        built = build_packages(packages_dir)
        deployed = deployed_imports(repeats, built, packages_dir)
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = getattr(exc, "stderr", None) or exc
        notes.append(f"deployment packages not built, so not measured: {str(reason)[-300:]}")
        built, deployed = {}, {}
    for name, (with_bytecode, without, libraries, unreplayed) in deployed.items():
        if unreplayed:  # imported by another module as it loads (genericpath by os, say)
            details[f"{name}_unreplayed"] = unreplayed
        details[f"{name}_deployed_import_ms"] = with_bytecode
        details[f"{name}_deployed_without_bytecode_ms"] = without
        details[f"{name}_deployed_libraries_ms"] = libraries
        rows.append(
            _import_row(
                name,
                "from its sam build packages",
                with_bytecode,
                without,
                "the same packages without bytecode (SAM's Python builder)",
                notes,
            )
        )
        rows.append(
            make_row(
                NAME,
                f"{name}: handler import from its sam build packages, against its libraries alone",
                with_bytecode,
                "ms",
                libraries,
                "the modules it loads but ours, imported alone in the same order",
                higher_is_better=False,
            )
        )
        if libraries > BUDGET_MS * 0.9:
            notes.append(
                f"{name}: the libraries its handler loads take {libraries:.0f} ms alone, "
                f"{libraries / BUDGET_MS:.0%} of the {BUDGET_MS:.0f} ms budget before any code"
                " of ours"
            )
    unreplayed = sorted({m for d in deployed.values() for m in d.unreplayed})
    if unreplayed:
        notes.append(
            "modules the libraries-alone replay could not import on their own (their cost is"
            f" left out of the floors): {', '.join(unreplayed)}"
        )
    notes.append(
        "the same fresh process importing one library alone: "
        + ", ".join(f"{label} {library_ms(m, repeats):.0f} ms" for label, m in LIBRARIES.items())
    )
    if built:  # what sam build makes: the function's package and the layer, bytecode included
        for name, folder in built.items():
            details[f"{name}_built_mb"] = folder_mb(folder)
        notes.append(
            "deployment packages as sam build makes them (the function's, then the common"
            " layer's, uncompressed MB, bytecode included): "
            + ", ".join(f"{n} {details[f'{n}_built_mb']:.1f}" for n in built if n != LAYER)
            + f"; {LAYER} {details[f'{LAYER}_built_mb']:.1f}"
        )
    else:
        notes.append(
            "deployment packages (code + common layer + pinned requirements, uncompressed MB): "
            + ", ".join(f"{d.name} {details[f'{d.name}_package_mb']:.1f}" for d in _function_dirs())
        )
    total = 2000 if quick else 10000
    for batch in (10, 100):
        progress(NAME, f"recorder into MariaDB, batch {batch}")
        try:
            batched, single = recorder_throughput(batch, total)
        except Exception as exc:  # no MariaDB here: say so rather than fail the whole report
            notes.append(f"recorder throughput not measured: {type(exc).__name__}: {exc}")
            break
        rows.append(
            make_row(
                NAME,
                f"recorder into MariaDB, batch {batch}, events/s",
                batched,
                "events/s",
                single,
                "one transaction per event",
                higher_is_better=True,
            )
        )
    return {
        "name": NAME,
        "title": "Serving functions: cold-start imports, packages, recorder throughput",
        "rows": rows,
        "notes": notes,
        "details": details,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    finish(run(args.quick, args.data, args.seed), args.json)


if __name__ == "__main__":
    main()
