"""One writer per run folder: the lock `rpt train` holds on its output folder for the run's life.

The lock is `fcntl.flock` on `.lock` in the run folder, which holds the writer's process id while
it runs. The kernel releases a flock when the process ends, however it ends (kill -9 included), so
a lock is never stale: a file without a live holder locks nothing. The file itself stays (removing
it would let a process that opened it just before lock a file no longer in the folder, beside a
second writer holding a new one).

A multi-process run (`accelerate launch`, `torchrun`) locks once, in its first process (rank 0):
the other processes of the same run never take it, so they do not refuse each other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rpt_cli.errors import UsageError

LOCK_FILE = ".lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "a process that is starting"


def _lock(path: Path, option: str) -> int:
    """An open descriptor of `path`, exclusively flocked, that is still the file at `path`."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the folder went with a writer that failed before writing anything
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"{option}: another rpt train ({_holder(path)}) is writing to this run folder; "
                "wait for it to end, or choose another folder"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # removed by a writer that failed before writing anything
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_folder_lock(folder: Path, option: str, *, take: bool = True) -> Iterator[None]:
    """Hold the lock of `folder` (created when missing) for the block; a second writer is refused
    with a UsageError naming the holder's pid. A block that fails leaves no lock file it created,
    and no folder it created if nothing else was written there.
    `take` False (the other processes of a multi-process run): nothing happens."""
    if not take:
        yield
        return
    folder = folder.resolve()  # -o at a symlink (dangling too): the link stays, its target is the folder
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    had_lock_file = path.exists()
    fd = _lock(path, option)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    failed = True
    try:
        yield
        failed = False
    finally:
        os.ftruncate(fd, 0)  # the pid means "running" only while the lock is held
        if failed:  # a refused or failed run leaves no lock file, nor a folder, it made itself
            if not had_lock_file:
                path.unlink(missing_ok=True)  # safe: a waiting locker checks it holds the file at `path`
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: what a run wrote stays
        os.close(fd)  # releases the lock


__all__ = ["LOCK_FILE", "run_folder_lock"]
