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

.PHONY: run test bench package clean

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

test: $(VENV)/.stamp-test
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/retrieval.py

clean:
	rm -rf $(VENV) build dist *.egg-info
