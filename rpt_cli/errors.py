"""The errors of rpt, and what each means to a user: `console.cli_errors` turns them into one line
on standard error and an exit status. Core modules raise them naming fields and files; the
command line names its options."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: reported as `error: SOURCE:LINE: reason`, exit status 2."""

    def __init__(self, source: str, line: int | None, reason: str):
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class UsageError(Exception):
    """A bad option or setting, found before any work starts: exit status 2."""


class RuntimeFailure(Exception):
    """Something failed while running (not the user's input): exit status 1."""


class RecordError(ValueError):
    """Raised by a validator: the record at hand is malformed. The reader adds file and line."""


__all__ = ["InputError", "RecordError", "RuntimeFailure", "UsageError"]
