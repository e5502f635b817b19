# ceres-mail: `make plan` (offline plan of prod) and `make test` (everything the tests need, then every test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip says which package it collects, one line each: a cold install takes a minute or more and must not
# look stuck. (Once installed, the marker files below skip it.) pip byte-compiles what it installs: about
# half of an install's time, but where PYTHONDONTWRITEBYTECODE is set (CI machines, containers) nothing
# else would, and every process would compile the SDKs' generated modules again.
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_INSTALL := $(PIP) install --progress-bar off
STACK ?= prod
# The machine cache (tests/machine_cache.py says what it holds): everything the tests build or download
# (the engine, Keycloak, the test image, the apt cache, wheels, actionlint), outside the clone and keyed by
# its inputs, so a fresh clone on the same machine starts warm. `make clean` keeps it; `make clean-cache`
# removes it. Exported, so every tool and test resolves the same root.
export CERES_MAIL_CACHE := $(or $(CERES_MAIL_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ceres-mail)
include tests/tool-versions.mk
# Wheels of every pinned package, so tests can build a fresh clone's .venv with no network at all; keyed
# by the pins and pyproject.toml (evaluated only where used). Once filled, .venv installs from it too,
# offline and in seconds.
WHEELHOUSE = $(CERES_MAIL_CACHE)/wheels/$(shell $(PYTHON) tests/machine_cache.py wheel-key)
FROM_WHEELHOUSE = $(if $(wildcard $(WHEELHOUSE)/.complete),--no-index --find-links $(WHEELHOUSE))
# TEST_WORKERS=N: pytest's workers (tools/run_tests.py's default when unset); 0 runs in one process.
TEST_WORKERS ?=
# more arguments for pytest, e.g. TEST_ARGS=tests/test_mail_host.py (a path runs only what it names)
TEST_ARGS ?=
# when this make began, for the time report's "before pytest" phase
MAKE_STARTED := $(shell date +%s)

.PHONY: plan test test-fast test-engine test-e2e engine bench docs venv dev system-deps wheelhouse tools clean clean-cache

plan: venv  ## the offline plan of the prod stack (STACK=staging for another)
	$(BIN)/mailctl plan --stack $(STACK)

# The engine is not a prerequisite: on a cold machine tools/run_tests.py builds it in the background while
# the layers that do not need it run (its tests wait for the build's lock), then prints the time per layer
# and per world.
test: dev system-deps wheelhouse tools  ## install what the tests need (system packages too, as root), run them all
	$(BIN)/python tools/run_tests.py $(if $(TEST_WORKERS),--workers $(TEST_WORKERS)) --started $(MAKE_STARTED) $(TEST_ARGS)

test-fast: dev wheelhouse tools  ## the edit loop: the offline and builder layers only (no root, no booted host, no engine)
	$(BIN)/python tools/run_tests.py --fast --started $(MAKE_STARTED)

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

docs: venv  ## write Pulumi.yaml's config block, the README's config reference (settings schema) and synopsis (mailctl's parser)
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
	$(PIP_INSTALL) $(FROM_WHEELHOUSE) -r requirements.txt
	$(PIP_INSTALL) $(FROM_WHEELHOUSE) --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	@echo "make: installing the pinned test tools (requirements-dev.txt)"
	$(PIP_INSTALL) $(FROM_WHEELHOUSE) -r requirements-dev.txt
	@touch $@

system-deps:
	@.ci/system-deps

# Filled once per key under a lock (two runs on one machine fill it once); .complete is written last.
wheelhouse: dev  ## the pinned wheels in the machine cache, for the offline fresh-clone test
	@dest="$(WHEELHOUSE)"; mkdir -p "$$dest"; exec 9>"$$dest.lock"; flock 9; \
	if [ ! -f "$$dest/.complete" ]; then \
	  echo "make: filling $$dest with the pinned wheels"; \
	  $(PIP) wheel --progress-bar off --wheel-dir "$$dest" -r requirements.txt -r requirements-dev.txt setuptools==80.9.0 \
	    && touch "$$dest/.complete"; \
	fi

# actionlint judges the GitHub workflows; it is a Go program, built from its pinned module version
# (tests/tool-versions.mk) into the machine cache, under a lock.
ACTIONLINT_DIR = $(CERES_MAIL_CACHE)/bin/actionlint-$(ACTIONLINT_VERSION)
tools:  ## actionlint, built once per machine
	@command -v go >/dev/null || { echo "make: Go 1.22 or newer is needed to build actionlint for the tests" >&2; exit 1; }
	@mkdir -p "$(ACTIONLINT_DIR)"; exec 9>"$(ACTIONLINT_DIR).lock"; flock 9; \
	if [ ! -x "$(ACTIONLINT_DIR)/actionlint" ]; then \
	  echo "make: building actionlint $(ACTIONLINT_VERSION)"; \
	  for try in 1 2 3; do \
	    GOBIN="$(ACTIONLINT_DIR)" GOFLAGS=-mod=mod go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION) && break; \
	    [ $$try = 3 ] && exit 1; echo "make: building actionlint failed (try $$try of 3), trying again"; sleep 15; \
	  done; \
	fi

clean:  ## remove the clone's .venv and build leftovers (the machine cache stays: see clean-cache)
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info

clean-cache:  ## remove the machine cache: the next `make test` is cold (the engine builds again, tens of minutes)
	@case "$(CERES_MAIL_CACHE)" in ""|/) echo "make: refusing to remove '$(CERES_MAIL_CACHE)'" >&2; exit 1;; esac; \
	echo "rm -rf $(CERES_MAIL_CACHE)"; rm -rf "$(CERES_MAIL_CACHE)"
