"""Documents built from several fields of a record: `rpt entropy --text-template "{problem}\\n\\n{solution}"`.

A template is text with `{field}` places, filled with the record's fields (strings, or numbers
written as JSON writes them); `{{` and `}}` are literal braces, and `\\n`, `\\t` and `\\\\` stand for
a newline, a tab and a backslash (a shell passes them on literally inside quotes). The built text
is what `rpt entropy` scores and writes under the text field, so the offsets it records index
exactly that text.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from rpt_cli.errors import RecordError, UsageError

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(template: str) -> str:
    """`\\n`, `\\t` and `\\\\` as the characters they name; any other backslash stays as it is."""
    out, i = [], 0
    while i < len(template):
        char = template[i]
        if char == "\\" and i + 1 < len(template) and template[i + 1] in _ESCAPES:
            out.append(_ESCAPES[template[i + 1]])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class TextTemplate:
    """A parsed template: literal pieces and the fields between them."""

    given: str
    pieces: tuple[tuple[str, str | None], ...]  # (literal text, field after it or None)

    @classmethod
    def parse(cls, given: str, option: str = "--text-template") -> TextTemplate:
        try:
            parsed = list(string.Formatter().parse(unescape(given)))
        except ValueError as exc:
            raise UsageError(f"{option} {given!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
        pieces = []
        for literal, name, spec, conversion in parsed:
            if name is not None:
                if not name or spec or conversion or any(c in name for c in ".[]"):
                    raise UsageError(
                        f"{option} {given!r}: {{{name}{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}} is not a field name; write {{field}}"
                    )
            pieces.append((literal, name))
        if not any(name for _, name in pieces):
            raise UsageError(f"{option} {given!r}: names no field; write e.g. '{{problem}}\\n\\n{{solution}}'")
        return cls(given, tuple(pieces))

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(name for _, name in self.pieces if name))

    def check(self, record: dict) -> None:
        """RecordError naming the first field the record lacks or cannot fill in. A null counts as
        missing: `datasets` gives null for a column a row lacks, so both inputs say the same."""
        for name in self.fields:
            if record.get(name) is None:
                raise RecordError(f'missing field "{name}" (used by --text-template)')
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise RecordError(
                    f'field "{name}" (used by --text-template) must be a string or a number, got {type(value).__name__}'
                )
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise RecordError(f'field "{name}" holds an unpaired surrogate (not valid UTF-8 text)') from None

    def fill(self, record: dict) -> str:
        out = []
        for literal, name in self.pieces:
            out.append(literal)
            if name:
                value = record[name]
                out.append(value if isinstance(value, str) else _number(value))
        return "".join(out)


def _number(value) -> str:
    import json

    return json.dumps(value)


def templated_document(template: TextTemplate, id_field: str = "id"):
    """A read_records validator for documents built with `template` (records.md §1)."""
    from rpt_cli.records import _check_id

    def validate(record: dict) -> None:
        template.check(record)
        _check_id(record, id_field)

    return validate


__all__ = ["TextTemplate", "templated_document", "unescape"]
