# ceres-mail: `make plan` (offline plan of prod) and `make test` (everything the tests need, then every test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip says which package it collects, one line each: a cold install takes a minute or more and must not
# look stuck. (Once installed, the marker files below skip it.)
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_INSTALL := $(PIP) install --progress-bar off
STACK ?= prod
# Wheels of every pinned package, so tests can build a fresh clone's .venv with no network at all.
WHEELHOUSE := .cache/wheels

.PHONY: plan test test-engine test-e2e engine bench docs venv dev system-deps wheelhouse tools clean

plan: venv  ## the offline plan of the prod stack (STACK=staging for another)
	$(BIN)/mailctl plan --stack $(STACK)

test: dev system-deps wheelhouse tools engine  ## install what the tests need (system packages too, as root), run them all
	$(BIN)/python -m pytest

test-engine: dev system-deps engine  ## only the real-engine layer: the Pulumi CLI runs the program (tests/engine)
	$(BIN)/python -m pytest tests/engine

test-e2e: dev system-deps engine  ## only the end-to-end layer: `pulumi up` of the whole graph into the test internet (tests/e2e)
	$(BIN)/python -m pytest tests/e2e

# The Pulumi CLI, the real kubernetes provider and k3s, built from Go modules once per machine and kept
# outside the clone, keyed by version (tests/engine/build/common.sh says where).
engine: system-deps  ## build the real-engine test tools (cold: tens of minutes; warm: seconds)
	@tests/engine/build/all.sh

bench: venv  ## time `mailctl plan` against the bare import of the same SDKs
	$(BIN)/python bench/bench_plan.py

docs: venv  ## write Pulumi.yaml's config block and the README's config reference from the settings schema
	$(BIN)/mailctl config-reference --write

venv: $(VENV)/.runtime
dev: $(VENV)/.dev

# The interpreter is checked first (pyproject.toml's requires-python), so a wrong one leaves no .venv.
# Debian ships venv apart from python3 (python3-venv); as root, install it when venv creation fails.
$(BIN)/python:
	@$(PYTHON) tools/check_python.py
	@echo "make: creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing python3-venv"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }; \
	    $(PYTHON) -m venv $(VENV); \
	  else echo "make: $(PYTHON) -m venv failed; install python3-venv (apt-get install python3-venv)" >&2; exit 1; fi; }

$(VENV)/.runtime: $(BIN)/python requirements.txt pyproject.toml
	@echo "make: installing the pinned runtime (requirements.txt) and ceres-mail into $(VENV)"
	$(PIP_INSTALL) -r requirements.txt
	$(PIP_INSTALL) --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	@echo "make: installing the pinned test tools (requirements-dev.txt)"
	$(PIP_INSTALL) -r requirements-dev.txt
	@touch $@

system-deps:
	@.ci/system-deps

$(WHEELHOUSE)/.complete: requirements.txt pyproject.toml
	@echo "make: filling $(WHEELHOUSE) with the pinned wheels"
	$(PIP) download --progress-bar off --dest $(WHEELHOUSE) -r requirements.txt setuptools==80.9.0
	@touch $@
wheelhouse: dev $(WHEELHOUSE)/.complete

# actionlint judges the GitHub workflows; it is a Go program, built from its pinned module version.
ACTIONLINT := .cache/bin/actionlint
ACTIONLINT_VERSION := v1.7.12
$(ACTIONLINT):
	@command -v go >/dev/null || { echo "make: Go 1.22 or newer is needed to build actionlint for the tests" >&2; exit 1; }
	@echo "make: building actionlint $(ACTIONLINT_VERSION)"
	GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-mod=mod go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
tools: $(ACTIONLINT)

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info
