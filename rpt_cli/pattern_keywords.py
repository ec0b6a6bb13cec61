"""The keywords `rpt patterns` counts, per reasoning pattern: the one place they are kept.

The six patterns and their keywords are the paper's (Section 4.5, Figure 6; the keywords are its
Appendix E, Table 9), word for word. The paper reports that RPT-14B's next-token reasoning uses
more hypothesis (+161.8 %) and deduction (+26.2 %), and less breakdown, than its base model's
problem-solving responses: relative differences of the share of responses that contain a
pattern's keywords.

Keywords are literal phrases, matched case-insensitively on word boundaries; a space matches any
run of whitespace and an apostrophe matches ' or ’. `rpt patterns --keywords FILE` replaces the
whole list with a user's own (JSON or YAML, this same shape); `rpt patterns --list-keywords`
prints this one as JSON, a starting point for such a file.
"""

from __future__ import annotations

# Table 9, in its order and spelling ("etc." with its full stop; a keyword ending in punctuation
# needs that punctuation)
KEYWORDS: dict[str, list[str]] = {
    "transition": ["alternatively", "think differently"],
    "reflection": ["wait", "initial answer", "original answer", "looking back", "thought process"],
    "breakdown": ["break down", "break this down"],
    "hypothesis": ["probably", "something like"],
    "divergent thinking": [
        "etc.",
        "or something",
        "either",
        "sometimes it refers",
        "otherwise",
        "exploring",
        "options",
    ],
    "deduction": ["summarize", "conclusion", "conclude", "finally", "logically", "consequently"],
}

__all__ = ["KEYWORDS"]
