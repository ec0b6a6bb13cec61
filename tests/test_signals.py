"""Ctrl-C and SIGTERM end a command cleanly (exit 130 or 143, one word on standard error, no
temporary file left), and a command started with SIGINT ignored keeps ignoring it: whatever the
shell, terminal or standard input the test suite itself was started with.

How a test sets up its child: the signals' dispositions and the signal mask are inherited across
fork and exec, so a child started plainly gets whatever the test run was started with. A shell's
background job (`make test &` in a script, CI runners) starts with SIGINT ignored, and Python then
installs no handler for it; a parent may also start it with SIGINT blocked (then it stays pending).
rpt keeps that choice (it installs no SIGINT handler of its own): a job started with SIGINT
ignored, as `nohup` and background jobs are, is meant to outlive a Ctrl-C at the terminal, and
Python honours that. So the tests do not depend on how they were started: each states the
disposition its child starts with, through a one-thread launcher that sets the disposition,
unblocks the signals and execs rpt (preexec_fn would fork the threaded pytest, which can
deadlock), and waits until the child is rpt, catching what it should catch, before it signals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.test_reliability import leftovers, scored_doc

# argv[1]: "default" (SIGINT at its default action, as a terminal's foreground job has it) or
# "ignore" (SIGINT ignored, as a background job or nohup has it); SIGTERM at its default action
LAUNCHER = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[1] == 'ignore' else signal.SIG_DFL); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
    "os.execv(sys.executable, [sys.executable, '-m', 'rpt_cli', *sys.argv[2:]])"
)


def signal_sets(pid: int) -> dict[str, set[int]]:
    """The signals a process catches (SigCgt), ignores (SigIgn) and blocks (SigBlk)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigCgt", "SigIgn", "SigBlk"):
            mask = int(value.strip(), 16)
            out[key] = {n for n in range(1, 65) if mask >> (n - 1) & 1}
    return out


def start_filter(sigint: str, out: Path) -> subprocess.Popen:
    """`rpt filter - -o out` with one document on its standard input (kept open, so it waits
    for more, holding its temporary file), started with SIGINT as `sigint` says."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, sigint, "filter", "-", "-o", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proc.stdin.write(orjson.dumps(scored_doc()) + b"\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not leftovers(out.parent) and time.monotonic() < deadline:  # rpt is writing its temporary file
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    assert leftovers(out.parent), "the run never started writing"
    return proc


def test_sigterm_and_sigint_leave_no_temporary_file(tmp_path):
    for sig, status, word in ((signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")):
        out = tmp_path / f"out-{sig.name}.jsonl"
        proc = start_filter("default", out)
        sets = signal_sets(proc.pid)
        assert {signal.SIGINT, signal.SIGTERM} <= sets["SigCgt"] and not {signal.SIGINT, signal.SIGTERM} & (
            sets["SigIgn"] | sets["SigBlk"]
        ), sets
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == status
        assert proc.stderr.read().decode().strip() == word
        proc.stdin.close()
        assert leftovers(tmp_path) == [] and not out.exists()


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(tmp_path):
    """nohup and a shell's background jobs ignore SIGINT on purpose: rpt does not take it back."""
    out = tmp_path / "out.jsonl"
    proc = start_filter("ignore", out)
    assert signal.SIGINT in signal_sets(proc.pid)["SigIgn"]
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    assert proc.poll() is None, "SIGINT ended a run that was started with it ignored"
    proc.stdin.close()  # the input ends: the run finishes as usual
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    assert leftovers(tmp_path) == [] and out.exists()
