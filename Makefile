# Every target creates or updates the virtual environment it needs by itself.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ../shared/data/sentiment140
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: help venv demo test lint format typecheck unit integration e2e bench lock clean

help:
	@echo "make demo   - train both tiny models on the shared tweets and show what they generate"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make bench  - run every benchmark and write benchmarks/RESULTS.md"
	@echo "make lint | format | typecheck | unit | integration | e2e | lock | clean"

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tweetgen demo --data $(DATA) $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

e2e: $(STAMP)
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run --data $(DATA)

# Re-resolve the pinned dependency set (run after changing pyproject.toml on purpose).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet "pip==25.3" && .venv-lock/bin/pip install --quiet '.[dev]'
	.venv-lock/bin/pip freeze --exclude tweetgen | grep -v '^-e' > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .tweetgen
