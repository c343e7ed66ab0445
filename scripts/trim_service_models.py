"""Write the cut-down botocore service models that the layer carries (tweetgen/adapters/aws.py).

Each model keeps the operations of ``TRIMMED_OPERATIONS``, every shape they reach (inputs,
outputs, errors) and the service's metadata, without documentation, from the botocore that is
installed. Run after upgrading botocore::

    .venv/bin/python scripts/trim_service_models.py            # rewrite the models
    .venv/bin/python scripts/trim_service_models.py --check    # exit 1 when they are out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "layers" / "common"))

from tweetgen.adapters.aws import SERVICE_MODELS, TRIMMED_OPERATIONS  # noqa: E402

MODEL = "service-2.json"


def shape_references(shape: dict[str, Any]) -> list[str]:
    """The names of the shapes that one shape refers to."""
    refs = [member["shape"] for member in shape.get("members", {}).values()]
    return refs + [shape[key]["shape"] for key in ("member", "key", "value") if key in shape]


def operation_references(operation: dict[str, Any]) -> list[str]:
    refs = [operation[key]["shape"] for key in ("input", "output") if key in operation]
    return refs + [error["shape"] for error in operation.get("errors", [])]


def _undocumented(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "documentation"}


def _undocumented_shape(shape: dict[str, Any]) -> dict[str, Any]:
    """A shape without its documentation nor its members' (a member may be named anything)."""
    shape = _undocumented(shape)
    if "members" in shape:
        shape["members"] = {name: _undocumented(ref) for name, ref in shape["members"].items()}
    return shape


def trimmed_model(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """``model`` with only ``operations`` and the shapes they reach, documentation removed."""
    unknown = sorted(set(operations) - set(model["operations"]))
    if unknown:
        raise ValueError(f"not operations of this service: {', '.join(unknown)}")
    shapes = model["shapes"]
    kept: set[str] = set()
    pending = [
        ref for name in operations for ref in operation_references(model["operations"][name])
    ]
    while pending:
        name = pending.pop()
        if name not in kept:
            kept.add(name)
            pending.extend(shape_references(shapes[name]))
    return {
        **{k: v for k, v in model.items() if k not in ("documentation", "operations", "shapes")},
        "operations": {
            name: _undocumented(model["operations"][name]) for name in sorted(operations)
        },
        "shapes": {name: _undocumented_shape(shapes[name]) for name in sorted(kept)},
    }


def expected_files() -> dict[Path, bytes]:
    """Path under SERVICE_MODELS -> content, from the installed botocore."""
    from botocore.loaders import Loader

    loader = Loader()
    files = {}
    for service, operations in sorted(TRIMMED_OPERATIONS.items()):
        version = loader.determine_latest_version(service, "service-2")
        model = loader.load_service_model(service, "service-2", version)
        text = json.dumps(trimmed_model(model, operations), sort_keys=True, separators=(",", ":"))
        files[Path(service) / version / MODEL] = (text + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the models differ")
    args = parser.parse_args(argv)
    expected = expected_files()
    present = {p.relative_to(SERVICE_MODELS) for p in SERVICE_MODELS.rglob(MODEL)}
    stale = sorted(
        str(path)
        for path in present | set(expected)
        if path not in expected
        or path not in present
        or (SERVICE_MODELS / path).read_bytes() != expected[path]
    )
    if args.check:
        if stale:
            print(
                f"out of date: {', '.join(stale)}; run scripts/trim_service_models.py",
                file=sys.stderr,
            )
            return 1
        print("the service models match the installed botocore")
        return 0
    for path in present - set(expected):
        (SERVICE_MODELS / path).unlink()
    for path, content in expected.items():
        (SERVICE_MODELS / path).parent.mkdir(parents=True, exist_ok=True)
        (SERVICE_MODELS / path).write_bytes(content)
        print(f"wrote {SERVICE_MODELS / path} ({len(content):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
