"""The keywords `rpt patterns` counts, per reasoning pattern: the one place they are kept.

The six patterns are the paper's (Section 4.5, Figure 6): transition, reflection, breakdown,
hypothesis, divergent thinking and deduction; the paper reports that RPT-14B's next-token reasoning
uses more hypothesis (+161.8 %) and deduction (+26.2 %), and less breakdown, than its base model's
problem-solving traces, counting keywords per pattern. The keyword lists below are OURS: the paper's
own lists were not available to us (docs/patterns.md says so), so every word here is our choice,
made to be specific to its pattern (no "so", "then" or "or", which would swamp every count).

Keywords are literal phrases, matched case-insensitively on word boundaries; a space matches any
run of whitespace and an apostrophe matches ' or ’. `rpt patterns --keywords FILE` replaces the
whole list with a user's own (JSON or YAML, this same shape); `rpt patterns --list-keywords`
prints this one as JSON, a starting point for such a file.
"""

from __future__ import annotations

KEYWORDS: dict[str, list[str]] = {
    # switching to another line of attack
    "transition": [
        "alternatively",
        "on the other hand",
        "instead",
        "another approach",
        "another way",
        "a different approach",
        "let me try",
        "let's try",
        "switch to",
    ],
    # checking or questioning what was just thought
    "reflection": [
        "wait",
        "hmm",
        "let me check",
        "let me verify",
        "let me double-check",
        "double-check",
        "double check",
        "i made a mistake",
        "that's not right",
        "on second thought",
        "looking back",
        "reconsider",
        "re-examine",
    ],
    # cutting the problem into parts or steps
    "breakdown": [
        "step by step",
        "break down",
        "break it down",
        "break this down",
        "first,",
        "second,",
        "third,",
        "finally,",
        "step 1",
        "step 2",
        "step 3",
        "one by one",
        "let's start by",
        "let me start by",
        "sub-problem",
        "subproblem",
    ],
    # proposing a guess or an assumption to test
    "hypothesis": [
        "maybe",
        "perhaps",
        "suppose",
        "assume",
        "assuming",
        "what if",
        "could be",
        "might be",
        "possibly",
        "guess",
        "hypothesis",
        "hypothesize",
    ],
    # laying several possibilities side by side
    "divergent thinking": [
        "another possibility",
        "other possibilities",
        "possibilities",
        "options",
        "candidates",
        "could also",
        "either",
        "various",
        "different ways",
    ],
    # drawing conclusions from what is known
    "deduction": [
        "therefore",
        "thus",
        "hence",
        "it follows",
        "which means",
        "this means",
        "that means",
        "implies",
        "consequently",
        "as a result",
        "conclude",
        "must be",
    ],
}

__all__ = ["KEYWORDS"]
