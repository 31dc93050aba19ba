# vitzoo: two commands set everything up on a machine with nothing installed.
#   make demo   create .venv, install, run the main job (CPU, a few minutes, no download)
#   make test   create .venv, install, run the test suite (< 10 min on 2 CPU cores)
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

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# make bench: 2 models, about a minute on 2 CPU cores; make bench FULL=1: the 7 models of the README (~15 min)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py $(if $(FULL),--full)

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
