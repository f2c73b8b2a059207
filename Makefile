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
# The hashed lock for $(PYTHON)'s version, e.g. requirements/lock-py311.txt (tools/lock.py writes them).
PYVER := $(or $(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null),unknown)
LOCK := requirements/lock-py$(PYVER).txt

.PHONY: help venv services-up services-down services-status cluster-up cluster-down cluster-status lint lock lock-check test unit faults demo ui ui-down bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

# Every distribution comes from the lock, each file checked against its sha256 (--require-hashes;
# --no-deps: the lock is the whole set, pip itself and setuptools included). rocm-nightly itself is
# a directory, which has no single file to hash: it is installed after, editable, with --no-deps
# (its dependencies came from the lock) and --no-build-isolation (the build backend is the locked
# setuptools in the venv, not one fetched unchecked).
$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@[ "$$($(PY) -c 'import sys; print("%d%d" % sys.version_info[:2])')" = "$(PYVER)" ] || { echo "$(VENV) has another Python than $(PYTHON) ($(LOCK)): remove $(VENV), or set PYTHON" >&2; exit 1; }
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

requirements/lock-py%.txt:
	@echo "no lock for Python $* ($(PYTHON)): the locked ones are $(notdir $(wildcard requirements/lock-py*.txt)); set PYTHON to a Python of one of those versions" >&2
	@exit 1

venv: $(STAMP)  ## create .venv from the hashed lock requirements/lock-py<version>.txt

services-up: $(STAMP)  ## start dockerd, the two registries, moto; build the base OS image once
	$(PY) include/scripts/services.py up

services-down: $(STAMP)  ## stop only what the project started (the UI of `make ui` too)
	$(PY) include/scripts/ui.py down
	$(PY) include/scripts/services.py down

services-status: $(STAMP)  ## say what runs and where
	$(PY) include/scripts/services.py status

cluster-up: services-up  ## a distributed Airflow here: Postgres, Redis, CeleryExecutor, 3 workers (2 ROCm build hosts)
	$(PY) include/scripts/cluster.py up

cluster-down: $(STAMP)  ## stop only what cluster-up started; data stays in .state/cluster
	$(PY) include/scripts/cluster.py down

cluster-status: $(STAMP)  ## say what of the cluster runs and where
	$(PY) include/scripts/cluster.py status

lock: $(STAMP)  ## regenerate the hashed locks requirements/*.txt with uv (after changing requirements*.txt or pyproject.toml)
	$(PY) tools/lock.py write

lock-check: $(STAMP)  ## fail when requirements*.txt or pyproject.toml changed without the locks (needs PyPI)
	$(PY) tools/lock.py check

lint: $(STAMP)  ## ruff (incl. banned module-level imports), mypy --strict on the package, import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(STAMP)  ## the tests that need no services
	$(VENV)/bin/pytest tests/unit tests/dags

faults: $(STAMP)  ## the fault matrix (tests/faults/): throwaway services of its own; root for tmpfs and dockerd
	$(VENV)/bin/pytest tests/faults

test: lock-check lint services-up  ## the whole suite, against real local services
	$(VENV)/bin/pytest

demo: services-up  ## the main job on the embedded default (the demo config)
	$(PY) include/scripts/demo.py

ui: services-up  ## the Airflow web UI on the demo's state: prints http://127.0.0.1:8080 and the login (ROCM_NIGHTLY_UI_PORT: another port)
	$(PY) include/scripts/ui.py up

ui-down: $(STAMP)  ## stop the UI of `make ui`
	$(PY) include/scripts/ui.py down

bench: services-up  ## benchmarks; rewrites bench/RESULTS.md and bench/results.json (`bench/run_all.py --only scale`: the vLLM-size one alone)
	$(PY) bench/run_all.py

clean: services-down  ## stop services and remove the venv and the state folder
	rm -rf $(VENV) $(STATE)
