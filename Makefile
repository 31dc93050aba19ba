# vitzoo: two commands set everything up on a machine with nothing installed.
#   make demo   create .venv, install, run the main job (CPU, a few minutes, no download)
#   make test   create .venv, install, run the test suite (one pytest-xdist worker per core, at most 4;
#               the 15 slowest tests listed at the end)
#   make test-slow   the tests marked slow (torchrun, full-size models), one at a time
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test test-slow bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vitzoo demo --out $(DEMO_DIR)

# --dist loadscope: a module's tests stay on one worker, so its module-scoped fixtures (a training run, a
# generated dataset) are built once, not once per worker; --no-loadscope-reorder: modules are handed out
# in collection order, longest first (tests/conftest.py, RUN_FIRST)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadscope --no-loadscope-reorder --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=15

# make bench: 2 models, about a minute on 2 CPU cores; make bench FULL=1: the 7 models of the README (~15 min)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py $(if $(FULL),--full)

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
