"""`rpt patterns`: how often completions use each reasoning pattern (the paper's Section 4.5, Figure 6).

A pattern is a list of keywords (`pattern_keywords.KEYWORDS`, the paper's Table 9, or a user's
file). What is counted in each completion is, by default, the whole *response*, as the paper
counts (its thought and what follows it, `<think>` tags left out); with `counted="thought"`, only
the thought: the text before the last `</think>` (a completion without one counts whole). Per
pattern and model, two figures:

- `share`: the share of completions that contain the pattern's keywords at least once, the
  paper's measure;
- `per_1k_words`: keyword matches per 1,000 words counted (words: runs of non-whitespace, as
  `wc -w` counts them), so long and short completions weigh by their length (ours).

Models after the first are compared with it as the paper compares RPT-14B with its base model:
`change` is the relative difference of the shares (share / first model's share − 1, so +1.618 is
its "161.8 % greater use of hypothesis"); `change_per_1k_words` does the same for the rates.

Counting streams: a model is a few counters, whatever the number of records.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rpt_cli.errors import InputError
from rpt_cli.filter import SPLIT_NAMES, in_split
from rpt_cli.reward.extract import THINK_END, completion_text

THINK_START = "<think>"
BUILTIN = "builtin"
RESPONSE, THOUGHT = "response", "thought"
COUNTED = (RESPONSE, THOUGHT)  # what of a completion is counted: the paper's whole response, or the thought


# --------------------------------------------------------------------------------------------
# Keywords
# --------------------------------------------------------------------------------------------


def keyword_regex(keyword: str) -> str:
    """The regex of one keyword: literal, a space matching any whitespace run, an apostrophe
    either ' or ’, and a word boundary on each side that ends in a word character (so `wait`
    does not match inside `await`, while `first,` may be followed by anything)."""
    parts = []
    for char in keyword.strip():
        if char.isspace():
            if not parts or parts[-1] != r"\s+":
                parts.append(r"\s+")
        elif char in "'’":
            parts.append("['’]")
        else:
            parts.append(re.escape(char))
    body = "".join(parts)
    head = r"(?<!\w)" if re.match(r"\w", keyword.strip()) else ""
    tail = r"(?!\w)" if re.search(r"\w$", keyword.strip()) else ""
    return head + body + tail


@dataclass(frozen=True)
class KeywordSet:
    """Patterns and their keywords, compiled: one regex per pattern, longest keywords first so
    that at one place the longest phrase counts (`let me double-check` once, not also as
    `double-check`)."""

    keywords: dict[str, tuple[str, ...]]
    source: str = BUILTIN

    def __post_init__(self):
        compiled = {}
        for name, words in self.keywords.items():
            ordered = sorted(dict.fromkeys(w.strip() for w in words), key=len, reverse=True)
            compiled[name] = re.compile("|".join(keyword_regex(w) for w in ordered), re.IGNORECASE)
        object.__setattr__(self, "_compiled", compiled)

    @property
    def names(self) -> list[str]:
        return list(self.keywords)

    def count(self, text: str) -> dict[str, int]:
        """Non-overlapping keyword matches per pattern in `text`."""
        return {name: sum(1 for _ in regex.finditer(text)) for name, regex in self._compiled.items()}

    def as_mapping(self) -> dict[str, list[str]]:
        return {name: list(words) for name, words in self.keywords.items()}


def builtin_keywords() -> KeywordSet:
    from rpt_cli.pattern_keywords import KEYWORDS

    return KeywordSet({name: tuple(words) for name, words in KEYWORDS.items()})


def keywords_from_mapping(data, source: str) -> KeywordSet:
    """A KeywordSet from parsed JSON or YAML: an object of pattern name → non-empty list of
    non-empty strings. Anything else is an InputError naming the file."""
    if not isinstance(data, Mapping) or not data:
        raise InputError(source, None, 'expected an object of patterns, e.g. {"hypothesis": ["maybe", "perhaps"]}')
    out = {}
    for name, words in data.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(source, None, f"pattern name {name!r} must be a non-empty string")
        if not isinstance(words, list) or not words:
            raise InputError(source, None, f'pattern "{name}" must have a non-empty list of keywords')
        for word in words:
            if not isinstance(word, str) or not word.strip():
                raise InputError(source, None, f'pattern "{name}": keyword {word!r} must be a non-empty string')
        out[name] = tuple(words)
    return KeywordSet(out, source)


def load_keywords(path: str) -> KeywordSet:
    """A user's keyword file: JSON (`.json`) or YAML (anything else), shaped like
    `pattern_keywords.KEYWORDS`. A file that cannot be read or parsed, or has another shape,
    is an InputError: `FILE[:LINE]: reason`."""
    if not os.path.isfile(path):
        raise InputError(path, None, "no such file" if not os.path.exists(path) else "not a file")
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read the keyword file ({exc})") from None
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, exc.lineno, f"invalid JSON ({exc.msg})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            reason = getattr(exc, "problem", None) or "not YAML"
            raise InputError(path, mark.line + 1 if mark else None, f"invalid YAML ({reason})") from None
    return keywords_from_mapping(data, path)


# --------------------------------------------------------------------------------------------
# Thoughts and words
# --------------------------------------------------------------------------------------------


def thought_of(completion) -> tuple[str, bool]:
    """(the thought, whether `</think>` closed it): the text before the last `</think>`, with
    `<think>` tags removed; the whole completion when it has no `</think>`."""
    text = completion_text(completion)
    end = text.rfind(THINK_END)
    closed = end >= 0
    if closed:
        text = text[:end]
    return text.replace(THINK_START, " ").replace(THINK_END, " "), closed


def response_of(completion) -> str:
    """The whole response, as the paper counts it: the thought and what follows, tags left out."""
    return completion_text(completion).replace(THINK_START, " ").replace(THINK_END, " ")


def count_words(text: str) -> int:
    """Runs of non-whitespace, counted a megabyte at a time: `text.split()` of a whole long
    thought would hold a string per word (about 1 GB for a 96 MB thought)."""
    words, start, step = 0, 0, 1 << 20
    while start < len(text):
        cut = _WHITESPACE.search(text, min(len(text), start + step))  # a chunk ends between words
        end = cut.end() if cut else len(text)
        words += len(text[start:end].split())
        start = end
    return words


_WHITESPACE = re.compile(r"\s")

# The longest completion counted, in characters: far beyond any generation (a 32,768-token limit
# makes about 150,000), and bounding the time and memory one record takes (about a second); a
# longer one is refused as bad input (`--skip-bad` skips it) rather than counted for minutes.
MAX_COMPLETION_CHARS = 1_000_000


def bounded_completions(record: dict) -> None:
    """The record check of `rpt patterns`: a rollout or `--details` row (records.py), whose
    completions are each at most MAX_COMPLETION_CHARS long."""
    from rpt_cli.errors import RecordError
    from rpt_cli.records import completions_record

    completions_record(record)
    for index, completion in enumerate(record.get("completions") or ()):
        length = len(completion_text(completion))
        if length > MAX_COMPLETION_CHARS:
            raise RecordError(
                f'"completions[{index}]" holds {length:,} characters, more than rpt patterns counts '
                f"({MAX_COMPLETION_CHARS:,}, far beyond any generation length)"
            )


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counters of one model (or one split of it)."""

    records: int = 0
    completions: int = 0
    words: int = 0
    closed: int = 0
    matches: Counter = field(default_factory=Counter)  # pattern -> keyword matches
    using: Counter = field(default_factory=Counter)  # pattern -> completions with one match or more

    def add(self, counts: dict[str, int], words: int, closed: bool) -> None:
        self.completions += 1
        self.words += words
        self.closed += closed
        for name, n in counts.items():
            self.matches[name] += n
            self.using[name] += n > 0

    def as_dict(self, names: Iterable[str]) -> dict:
        patterns = {}
        for name in names:
            patterns[name] = {
                "completions": self.using[name],
                "share": round(self.using[name] / self.completions, 6) if self.completions else None,
                "count": self.matches[name],
                "per_1k_words": round(1000 * self.matches[name] / self.words, 6) if self.words else None,
            }
        return {
            "records": self.records,
            "completions": self.completions,
            "words": self.words,
            "thoughts_closed": self.closed,
            "patterns": patterns,
        }


@dataclass
class ModelTally:
    name: str
    sources: list[str] = field(default_factory=list)
    total: Tally = field(default_factory=Tally)
    splits: dict[str, Tally] = field(default_factory=lambda: {name: Tally() for name in SPLIT_NAMES})
    has_splits: bool = False


def record_model(record: dict) -> str | None:
    """The model a record names: `rollout.model` (rpt rollout) or `model` (rpt eval --details).
    Details rows of `--mode gain` are RLP-style thoughts, not answers in the reasoning format: one
    details file of both modes gives two results, `MODEL` and `MODEL (gain)`, not one mixed."""
    meta = record.get("rollout")
    if isinstance(meta, dict) and isinstance(meta.get("model"), str):
        return meta["model"]
    value = record.get("model")
    if not isinstance(value, str):
        return None
    mode = record.get("mode")
    return f"{value} ({mode})" if isinstance(mode, str) and mode not in ("reasoning", "ntp") else value


def is_ntp_row(record: dict) -> bool:
    """A `rpt eval --details` row of ntp mode: a token, no completions to count."""
    return record.get("mode") == "ntp" and "completions" not in record


class PatternCounter:
    """Counts keyword matches per model (and per split) from records as they stream by."""

    def __init__(self, keywords: KeywordSet, counted: str = RESPONSE):
        if counted not in COUNTED:
            raise ValueError(f"counted={counted!r}: choose one of {', '.join(COUNTED)}")
        self.keywords = keywords
        self.counted = counted
        self.models: dict[str, ModelTally] = {}
        self.ntp_rows = 0

    def add(self, record: dict, *, name: str | None, source: str) -> None:
        """Count one record (records.md §4, or an `rpt eval --details` row); `name` overrides
        the model the record names; without either, the source file names it."""
        if is_ntp_row(record):
            self.ntp_rows += 1
            return
        model = name or record_model(record) or _file_label(source)
        tally = self.models.get(model)
        if tally is None:
            tally = self.models[model] = ModelTally(model)
        if source not in tally.sources:
            tally.sources.append(source)
        label = record.get("split")
        inside = [s for s in SPLIT_NAMES if label in (*SPLIT_NAMES, "none") and in_split(label, s)]
        tally.has_splits |= isinstance(label, str)
        tally.total.records += 1
        for split in inside:
            tally.splits[split].records += 1
        for completion in record["completions"]:
            thought, closed = thought_of(completion)
            text = thought if self.counted == THOUGHT else response_of(completion)
            counts = self.keywords.count(text)
            words = count_words(text)
            tally.total.add(counts, words, closed)
            for split in inside:
                tally.splits[split].add(counts, words, closed)

    def results(self) -> list[dict]:
        """One result per model, in the order they first appeared; each after the first also
        gives the relative difference of its shares against the first (`change`, the paper's
        comparison) and of its per-1,000-word rates (`change_per_1k_words`)."""
        names = self.keywords.names
        out = []
        base = None
        for tally in self.models.values():
            result = {"model": tally.name, "sources": tally.sources, **tally.total.as_dict(names)}
            result["splits"] = (
                {split: tally.splits[split].as_dict(names) for split in SPLIT_NAMES} if tally.has_splits else {}
            )
            if base is None:
                base = result
            else:
                result["baseline"] = base["model"]
                result["change"] = {name: _change(base, result, name, "share") for name in names}
                result["change_per_1k_words"] = {name: _change(base, result, name, "per_1k_words") for name in names}
            result["keywords"] = self.keywords.source
            result["counted"] = self.counted
            out.append(result)
        return out


def _change(base: dict, result: dict, name: str, key: str) -> float | None:
    """now / before − 1 of one pattern's figure; None where the first model's is 0 or missing."""
    before = base["patterns"][name][key]
    now = result["patterns"][name][key]
    if before in (None, 0) or now is None:
        return None
    return round(now / before - 1, 6)


def _file_label(source: str) -> str:
    base = os.path.basename(source)
    return base.rsplit(".", 1)[0] if "." in base else base


# --------------------------------------------------------------------------------------------
# The plot
# --------------------------------------------------------------------------------------------


def plot_patterns(results: list[dict], names: list[str], path: str, *, title: str | None = None) -> None:
    """Figure 6-style grouped bars, one colour per model: the share of completions using each
    pattern (left, Figure 6's measure) and its keywords per 1,000 words (right); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rpt_cli.scaling import check_plot_path, save_png

    check_plot_path(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=150)
    try:
        width = 0.8 / max(1, len(results))
        positions = range(len(names))
        for index, result in enumerate(results):
            offset = (index - (len(results) - 1) / 2) * width
            for ax, key, scale in ((axes[0], "share", 100), (axes[1], "per_1k_words", 1)):
                values = [(result["patterns"][n][key] or 0) * scale for n in names]
                ax.bar([p + offset for p in positions], values, width, label=result["model"], color=f"C{index % 10}")
        for ax, label in (
            (axes[0], "Completions using the pattern (%)"),
            (axes[1], "Keywords per 1,000 words"),
        ):
            ax.set_xticks(list(positions))
            ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
            ax.set_ylabel(label, fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
        axes[0].set_ylim(0, 100)
        axes[1].legend(frameon=False, fontsize=8)
        fig.suptitle(title or "Reasoning patterns", fontsize=10)
        fig.tight_layout()
        save_png(fig, path)
    finally:
        plt.close(fig)


__all__ = [
    "COUNTED",
    "KeywordSet",
    "PatternCounter",
    "Tally",
    "bounded_completions",
    "builtin_keywords",
    "count_words",
    "keyword_regex",
    "keywords_from_mapping",
    "load_keywords",
    "plot_patterns",
    "record_model",
    "response_of",
    "thought_of",
]
