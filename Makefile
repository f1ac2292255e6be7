# SPDX-License-Identifier: AGPL-3.0-or-later
# One entry point for developers and CI. Every target installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv quadlet system-deps testhost-build lint packages dist gpu-check-wheels spdx test test-fast demo clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Podman's real Quadlet generator (from Debian 13's podman .deb), cached per machine.
quadlet:
	@tools/fetch-quadlet.sh >/dev/null

# Host packages the integration tests need (debootstrap, systemd-nspawn, …); only as root.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then tools/install-system-deps.sh; else echo "not root: skipping system packages"; fi

lint: venv
	$(BIN)/ruff check ozwald tests bench contrib tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python tools/spdx-headers.py --check

# Write the SPDX licence header of every source file (the check runs in lint).
spdx: venv
	$(BIN)/python tools/spdx-headers.py --apply

# The Debian package and the RPM, each linted (lintian, rpmlint: no errors), into dist/.
packages: system-deps
	@if [ "$$(id -u)" = 0 ]; then tools/build-packages.sh all; else echo "not root: skipping the package build"; fi

# The wheel and the sdist, into dist/.
dist: venv
	rm -f dist/ozwald-*.whl dist/ozwald-*.tar.gz
	$(BIN)/python -m build --outdir dist .

# The wheels tools/gpu-check carries to a machine with a real NVIDIA GPU (Python 3.12), into build/gpu-check/wheels.
gpu-check-wheels: venv
	PYTHON=$(CURDIR)/$(BIN)/python tools/gpu-check --prepare

# The cached test-host root file system (about 90 s once per machine, then instant).
testhost-build: venv system-deps
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/python -m tests.testhost build; fi

test: venv quadlet system-deps lint testhost-build packages dist
	$(BIN)/pytest -q

# Unit tests only: no test host.
test-fast: venv quadlet system-deps dist
	$(BIN)/pytest -q -m "not testhost"

demo: venv quadlet system-deps testhost-build packages
	$(BIN)/python contrib/demo.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
