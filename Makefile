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
# pip runs quietly: one line per install; its output goes to this log (the latest install's),
# printed only when pip fails.
PIP_LOG    := $(VENV)/pip.log
TEST_EXTRAS := .[test,train,eval]
# llama-cpp-python is compiled from source; packaging/install_llama_cpp.sh builds it with
# portable CPU flags (x86-64-v3, not -march=native: a native build can crash on a VM that hides
# AMX from processes) into a wheel folder of its own, and installs it before the project.
LLAMA_CPP   = @bash packaging/install_llama_cpp.sh $(PY) $(PIP_LOG) || \
              { cat $(PIP_LOG); echo "building llama-cpp-python failed; the full log is $(PIP_LOG)"; exit 1; }
QUIET_PIP   = @echo "pip install $(1)"; $(PIP) install -q $(1) >$(PIP_LOG) 2>&1 || \
              { cat $(PIP_LOG); echo "pip install failed; the full log is $(PIP_LOG)"; exit 1; }
# `memory-r1 gui` (the default command) exits 2 when it cannot open a window here (no
# display, or Qt's X11 libraries missing) after saying why in one line: for `make run` of the
# app that is a clean exit. Another command (`make run ARGS="memory list"`) keeps its code:
# 2 is also argparse's usage error.
NO_DISPLAY_EXIT := 2
RUNS_GUI    = $(if $(filter-out gui,$(firstword $(filter-out -%,$(ARGS)))),,yes)

.PHONY: run test test-fast lint bench package clean

$(PY):
	@$(PYTHON_BIN) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON_BIN=python3.11)")'
	$(PYTHON_BIN) -m venv $(VENV)
	$(call QUIET_PIP,--upgrade pip wheel setuptools)

$(VENV)/.stamp-run: pyproject.toml packaging/install_llama_cpp.sh | $(PY)
	$(call QUIET_PIP,$(TORCH))
	$(LLAMA_CPP)
	$(call QUIET_PIP,-e .)
	touch $@

$(VENV)/.stamp-test: pyproject.toml packaging/install_llama_cpp.sh | $(PY)
	$(call QUIET_PIP,$(TORCH))
	$(LLAMA_CPP)
	$(call QUIET_PIP,-e '$(TEST_EXTRAS)')
	touch $@ $(VENV)/.stamp-run

run: $(VENV)/.stamp-run
ifeq ($(strip $(RUNS_GUI)),yes)
	@$(VENV)/bin/memory-r1 $(ARGS) || { code=$$?; [ $$code -eq $(NO_DISPLAY_EXIT) ] || exit $$code; }
else
	$(VENV)/bin/memory-r1 $(ARGS)
endif

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

$(VENV)/.stamp-package: pyproject.toml packaging/install_llama_cpp.sh | $(PY)
	$(call QUIET_PIP,$(TORCH))
	$(LLAMA_CPP)
	$(call QUIET_PIP,-e '.[package]')
	touch $@ $(VENV)/.stamp-run

# The desktop bundle (packaging/README.md): PyInstaller one-folder build + Linux tarball, then
# the smoke check (unpacked outside the tree, env -i, no network: a chat gets a reply) with
# start-up time and memory for the bundle and for the venv entry point `make run` starts.
package: $(VENV)/.stamp-package
	PY=$(abspath $(PY)) bash packaging/build.sh
	$(PY) packaging/smoke_check.py --venv

clean:
	rm -rf $(VENV) build dist *.egg-info
