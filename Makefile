# rocm-nightly — the two commands a user needs are `make demo` and `make test`.
# Every target installs what it needs, idempotently (a second run reuses it).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE := .state

.PHONY: help venv services-up services-down services-status lint lock lock-check test unit demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "rocm-nightly needs Python >= 3.11 (found %s)" % sys.version.split()[0])'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==25.3
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

venv: $(STAMP)  ## create .venv from requirements.lock

services-up: $(STAMP)  ## start dockerd, the two registries, moto; build the base OS image once
	$(PY) include/scripts/services.py up

services-down: $(STAMP)  ## stop only what the project started
	$(PY) include/scripts/services.py down

services-status: $(STAMP)  ## say what runs and where
	$(PY) include/scripts/services.py status

lock: $(STAMP)  ## rewrite requirements.lock from the venv (after changing requirements.txt)
	$(PY) tools/lock.py write

lock-check: $(STAMP)  ## fail when requirements.txt and requirements.lock disagree
	$(PY) tools/lock.py check

lint: $(STAMP)  ## ruff (incl. banned module-level imports) and mypy --strict on the package
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: $(STAMP)  ## the tests that need no services
	$(VENV)/bin/pytest tests/unit tests/dags

test: lock-check lint services-up  ## the whole suite, against real local services
	$(VENV)/bin/pytest

demo: services-up  ## the main job on the embedded default (the demo config)
	$(PY) include/scripts/demo.py

bench: services-up  ## benchmarks; rewrites bench/RESULTS.md
	$(PY) bench/run_all.py

clean: services-down  ## stop services and remove the venv and the state folder
	rm -rf $(VENV) $(STATE)
