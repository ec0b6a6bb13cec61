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


class SettingError(ValueError):
    """A bad setting found by core code, which names it by its field (`max_prompt_tokens`); the
    command line words it as the option (`--max-prompt-tokens`): `template` holds `{setting}`
    where the name goes. Exit status 2, like a UsageError."""

    def __init__(self, setting: str, template: str):
        self.setting, self.template = setting, template
        super().__init__(template.format(setting=setting))

    def worded(self, options: dict[str, str] | None = None) -> str:
        """The message with the option's name: `--` and the field's words, or `options[field]`."""
        option = (options or {}).get(self.setting) or "--" + self.setting.replace("_", "-")
        return self.template.format(setting=option)


__all__ = ["InputError", "RecordError", "RuntimeFailure", "SettingError", "UsageError"]
