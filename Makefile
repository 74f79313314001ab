# Sluice: the two commands are `make run` and `make test` (as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RUN_ARGS ?= --events
PYTEST_ARGS ?=

.PHONY: setup host venv run lint test unit bench clean

setup: host venv

host:
	@bash packaging/setup-host.sh

# The venv sees Debian's python3-bpfcc (bcc is not on PyPI).
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

run: setup
	$(VENV)/bin/sluice run $(RUN_ARGS)

# lint, import order, format and types (config in pyproject.toml); `make test` runs it first
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest tests -ra $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
