# Two commands do all set-up on a fresh machine:
#   make run   - create .venv, install, start the app
#   make test  - create/update .venv with the test extras, run the whole suite
PYTHON_BIN ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
# The local CPU wheel of torch; an unpinned torch would pull GBs of CUDA packages.
TORCH      ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: run test test-fast lint bench package clean

$(PY):
	@$(PYTHON_BIN) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON_BIN=python3.11)")'
	$(PYTHON_BIN) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

$(VENV)/.stamp-run: pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[test,train,eval]'
	touch $@ $(VENV)/.stamp-run

run: $(VENV)/.stamp-run
	$(VENV)/bin/memory-r1 $(ARGS)

TEST_ENV   := QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

test: lint
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: ruff, then every test that needs no real model (no GGUF, no training).
test-fast: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check -q .
	$(TEST_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check -q .
	$(VENV)/bin/mypy

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/retrieval.py

$(VENV)/.stamp-package: pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[package]'
	touch $@ $(VENV)/.stamp-run

# The desktop bundle (packaging/README.md): PyInstaller one-folder build + Linux tarball, then
# the smoke check (unpacked outside the tree, env -i, no network: a chat gets a reply) with
# start-up time and memory for the bundle and for the venv entry point `make run` starts.
package: $(VENV)/.stamp-package
	PY=$(abspath $(PY)) bash packaging/build.sh
	$(PY) packaging/smoke_check.py --venv

clean:
	rm -rf $(VENV) build dist *.egg-info
