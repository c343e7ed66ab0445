"""``sam build`` of template.yaml ships every function and the layer with compiled bytecode.

The Makefile's ``build-CommonLayer`` and ``build-%Function`` targets (the template's
``BuildMethod: makefile``) install the pinned wheels and compile every module, hash-based and
unchecked. Lambda's file system is read-only: a module shipped without bytecode is compiled again
at every cold start. The build needs the package index (pip) and the SAM CLI (``make sam-venv``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tweetgen_local.template import Template

from tests.conftest import REPO_ROOT, sam_cli

pytestmark = pytest.mark.long

TEMPLATE = REPO_ROOT / "template.yaml"
# Imported from the Lambda runtime, not from the deployment packages: botocore's optional CA
# bundle, which it replaces with its own where certifi is missing. boto3 ships with each
# function, beside the botocore that aws-xray-sdk brings.
RUNTIME_PROVIDED = {"certifi"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sam-build")
    done = subprocess.run(
        [
            sam_cli(),
            "build",
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(out),
            "--parallel",
        ],
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out


def _built_resources() -> set[str]:
    document = Template.load(TEMPLATE).document
    return {
        name
        for name, resource in document["Resources"].items()
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    }


def test_the_template_builds_every_function_and_the_layer_with_the_makefile() -> None:
    document = yaml.load(TEMPLATE.read_text(), Loader=yaml.BaseLoader)  # tags as plain values
    for name in _built_resources():
        metadata = document["Resources"][name].get("Metadata") or {}
        assert metadata.get("BuildMethod") == "makefile", name
        assert metadata.get("ContextPath") == ".", name


def test_every_module_ships_with_unchecked_bytecode_for_the_runtime(built: Path) -> None:
    assert {p.name for p in built.iterdir() if p.is_dir()} == _built_resources()
    sources = [p for p in built.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(sources) > 1000  # the functions, the layer and their libraries
    tag = sys.implementation.cache_tag
    for source in sources:
        cached = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        header = cached.read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER, cached
        # Flags 0b01: hash-based and unchecked (valid whatever times the zip keeps).
        assert int.from_bytes(header[4:8], "little") == 1, cached


_PROBE = """
import importlib, importlib.machinery, json, sys
function, layer, runtime = sys.argv[1:4]
sys.path[:0] = [function, layer]
sys.path.append(runtime)  # the Lambda runtime's libraries come last
compiled = []
source_to_code = importlib.machinery.SourceFileLoader.source_to_code
def counting(self, data, path, *args, **kwargs):
    compiled.append(path)
    return source_to_code(self, data, path, *args, **kwargs)
importlib.machinery.SourceFileLoader.source_to_code = counting
importlib.import_module("app")
import boto3  # the handlers make their clients on first use
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
print(json.dumps({"compiled": compiled, "files": files}))
"""


@pytest.mark.parametrize("function", ["GenerateFunction", "RecorderFunction", "GraphQLFunction"])
def test_a_built_handler_imports_from_its_packages_without_compiling(
    built: Path, function: str
) -> None:
    runtime = next(p for p in sys.path if p.endswith("site-packages"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))},
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-S",  # no site-packages but the runtime's
            "-c",
            _PROBE,
            str(built / function),
            str(built / "CommonLayer" / "python"),
            runtime,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["compiled"] == []
    outside = {
        name.split(".")[0]
        for name, path in result["files"].items()
        if path and path.startswith(runtime)
    }
    assert outside <= RUNTIME_PROVIDED, outside - RUNTIME_PROVIDED
    ours = [path for path in result["files"].values() if path and path.startswith(str(built))]
    assert any(path.endswith("tweetgen/__init__.py") for path in ours)
    for library in ("boto3", "botocore"):  # the matching pair, from the function's package
        assert result["files"][library].startswith(str(built / function)), library
