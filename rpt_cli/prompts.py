"""The prompts of next-token reasoning: the paper's templates (Table 10, as printed), chat wrapping and left truncation.

`PromptBuilder` is the one place that turns a sample's context into the prompt a policy model sees
(text and token ids); rollout, training and evaluation all use it, so the three see identical prompts.

Text is text: a context holding a special token's string (`<|im_end|>`, `<|endoftext|>`) is
encoded as ordinary tokens, never as that control token, so document text cannot forge chat turns
or end a prompt; only the chat template's own markers are special (`PromptBuilder.encode`).

Templates mark the context with the literal placeholder `{context}` (or the paper's
`{prompt_content}`). Substitution is a plain string replacement of that placeholder only:
templates quote LaTeX such as `\\boxed{}`, and contexts are math text full of braces, so
`str.format` (which interprets every brace) must never touch them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rpt_cli import paper
from rpt_cli.errors import SettingError

CONTEXT_PLACEHOLDER = "{context}"
# the paper's name for the same slot (Table 10); templates may use either, not both
PAPER_PLACEHOLDER = "{prompt_content}"
PLACEHOLDERS = (CONTEXT_PLACEHOLDER, PAPER_PLACEHOLDER)
DEFAULT_TEMPLATE = "v0"
DEFAULT_MAX_PROMPT_TOKENS = paper.PROMPT_TOKENS

_PAPER_INSTRUCTION = (
    "Complete the given text under '### Context' by predicting the next token, and wrap it in "
    "'\\boxed{}'. Please reason step by step to find the most probable next token as the final "
    "answer, and enclose it in \\boxed{} (note: the token may begin with a space, e.g., "
    "\\boxed{ para} or \\boxed{ =}; do not use \\text{})."
)

# The paper's Table 10, character for character (line breaks as the extraction reads them).
# Two oddities are the paper's and are kept: v1 and v2 write `\\boxed{}` with a doubled backslash
# once (and `\boxed{}` elsewhere), and v1, v2, v4, v5 and v6 close the context with "```." or
# "```, now ...", so text follows the context the model continues. v4 prints its line breaks as
# `\n`; they are line breaks here (its third example's answer, `\boxed{:\n}`, is a colon and a
# line break, which only that reading makes a token).
_NOTE = "(note: the token may begin with a space, e.g., \\boxed{ para} or \\boxed{ =}; do not use \\text{})"
_PRINTED_V1 = (
    "Complete the given text under ### Context by predicting the next token, and wrap it in \\\\boxed{}. "
    "Please reason step by step to find the most probable next token as the final prediction, and enclose it "
    f"in \\boxed{{}} {_NOTE}.\n\n### Context\n```{PAPER_PLACEHOLDER}```."
)
_PRINTED_V2 = (
    "You are a helpful assistant, good at predicting the next token for a given context.\n\n"
    "Now, please complete the given text under ### Context by predicting the next token, and wrap it in "
    "\\\\boxed{}. Please reason step by step to find the most probable next token, and enclose it in "
    "\\boxed{} (note: the token may begin with a space, e.g., \\boxed{ para} or \\boxed{ +=}; do not use "
    f"\\text{{}}).\n\n### Context\n```{PAPER_PLACEHOLDER}```."
)
_PRINTED_V3 = (
    "Complete the given text under ### Context by predicting the next token, list multiple potential tokens "
    "and select the most probable one as the final answer. Wrap your final answer in \\boxed{} "
    f"{_NOTE}. ### Context ```{PAPER_PLACEHOLDER}```"
)
_PRINTED_V4 = (
    "Complete the given text under ### Context by predicting the next token, and wrap it in \\boxed{}. "
    "Please reason step by step to find the most probable next token as the final answer, and enclose it in "
    "\\boxed{}. Some examples: ### Context \n \n ```...(some omitted)...Matching calculations with 1990 valid "
    "combinations indicates the minimum value of \\( b \\) that fits all pre-requisites and restrictions for "
    "triangle formation and symmetry generates the efficient outcome: \n \n \\[ \n \\boxed{1991^2} \n \\] \n \nIn"
    "``` The next token is \\boxed{ this} ### Context \n \n ```...Thus $2^{A}=\\left(2^{a}\\right)^{2}\\left(2^{3} "
    "\\right)=``` The next token is \\boxed{9} ### Context \n \n ```..., numerical exploration shows``` The next "
    f"token is \\boxed{{:\n}} Now, the context is: ### Context \n \n ```{PAPER_PLACEHOLDER}```."
)
_PRINTED_V5 = (
    "Complete the given text under ### Context by predicting the next token, and wrap it in \\boxed{}. "
    "Please reason step by step to find the most probable next token as the final answer, and enclose it in "
    f"\\boxed{{}} {_NOTE}.\n\n### Context\n```{PAPER_PLACEHOLDER}```."
)
_PRINTED_V6 = (
    "Complete the given text wrapped in ``` and ``` by predicting the next token, list multiple potential "
    "tokens and select the most probable one as the final prediction. Wrap your final prediction in \\boxed{} "
    f"{_NOTE}.\n\nThe context is: ```{PAPER_PLACEHOLDER}```, now please predict the next token."
)

# Ours: list candidate next tokens before choosing (written before the paper's v6 wording was at
# hand), with v0's instruction style and the context fenced on lines of its own.
_CANDIDATES_INSTRUCTION = (
    "Complete the given text under '### Context' by predicting the next token. First list several "
    "candidate next tokens that could plausibly follow the text, and reason step by step about how "
    "likely each one is. Then choose the single most probable candidate as the final answer and "
    "enclose it in \\boxed{} (note: the token may begin with a space, e.g., \\boxed{ para} or "
    "\\boxed{ =}; do not use \\text{})."
)

# Worked examples for models too small to follow v0's instruction (docs/evidence.md measures
# them): three short math texts, each with a brief thought and its next token in a box after
# </think>, then the context, with the thought opened for the model to continue. Ours; unlike
# the paper's few-shot v4, its examples are whole and answer after </think> as the reward reads.
_FEWSHOT = (
    "Each text below stops in the middle. Predict the next token of the text: think briefly, then "
    "write </think> and the next token in \\boxed{}. A token may begin with a space.\n\n"
    "Text: Let $f(x) = x^2 + 1$. Then $f(2) =\n"
    '<think> After "f(2) =" comes its value, 5, after a space. </think> \\boxed{ 5}\n\n'
    "Text: We expand the square and collect like\n"
    '<think> "collect like" is followed by the word "terms". </think> \\boxed{ terms}\n\n'
    "Text: By the triangle inequality, $|a + b| \\le |a| +\n"
    "<think> The right side continues with $|b|$, so the next token is a space and a bar. </think> \\boxed{ |}\n\n"
    f"Text: {CONTEXT_PLACEHOLDER}\n<think>"
)

# No newline follows the context in v0: whatever comes right after it would look like the start of
# the continuation the model is asked to predict.
BUILTIN_TEMPLATES: dict[str, str] = {
    "v0": f"{_PAPER_INSTRUCTION}\n\n### Context\n{CONTEXT_PLACEHOLDER}",
    "v1": _PRINTED_V1,
    "v2": _PRINTED_V2,
    "v3": _PRINTED_V3,
    "v4": _PRINTED_V4,
    "v5": _PRINTED_V5,
    "v6": _PRINTED_V6,
    "fenced": f"{_PAPER_INSTRUCTION}\n\n### Context\n```\n{CONTEXT_PLACEHOLDER}\n```",
    "candidates": f"{_CANDIDATES_INSTRUCTION}\n\n### Context\n```\n{CONTEXT_PLACEHOLDER}\n```",
    "fewshot": _FEWSHOT,
    # the direct answer format (answers.py): the context and nothing else, so the model's
    # continuation is its guess of the next token
    "direct": CONTEXT_PLACEHOLDER,
    # RLP's thoughts (rpt train --objective rlp, rpt eval --mode gain): the context, then the
    # thought opened; the thought closes with </think>, after which the next token is scored
    "thought": f"{CONTEXT_PLACEHOLDER}<think>",
}

# Table 8's Random@1 / Pass@8 (%) of the untrained R1-Distill-Qwen-14B: they belong to the
# printed wording only, never to our variants.
TEMPLATE_DESCRIPTIONS: dict[str, str] = {
    "v0": "the paper's template, used for all its main results (Table 8: Random@1 3.0, Pass@8 8.5)",
    "v1": "the paper's v1 as printed: context in triple backticks (Table 8: 5.7 / 11.0)",
    "v2": "the paper's v2 as printed: a system-style opening, context in triple backticks (Table 8: 5.7 / 16.0)",
    "v3": "the paper's v3 as printed: list potential tokens, select one; one line (Table 8: 5.3 / 11.0)",
    "v4": "the paper's v4 as printed: three few-shot examples, contexts elided as printed (Table 8: 4.0 / 9.0)",
    "v5": "the paper's v5 as printed: v0's instruction, context in triple backticks (Table 8: 4.4 / 12.5)",
    "v6": "the paper's v6 as printed: list potential tokens, select one; context in triple backticks "
    "(Table 8: 6.0 / 19.0, the best)",
    "fenced": "v0 with the context fenced in triple backticks on lines of its own (ours)",
    "candidates": "list candidate next tokens, reason about each, pick the most probable; context fenced (ours)",
    "fewshot": "three worked examples (a text, a brief thought, its next token in a box after </think>), then the "
    "context with the thought opened; for models too small to follow v0 (ours; use with --no-chat)",
    "direct": "the context itself, no instruction: the direct answer format (--answer direct), where the "
    "completion is the prediction (RPT without reasoning, an ablation)",
    "thought": "the context, then <think>: the thought of the information-gain objective (--objective rlp, "
    "eval --mode gain), closed by </think> before the next token is scored (ours)",
}


class TemplateError(ValueError):
    """A template that cannot be used: unknown name, unreadable file, or no context placeholder in it."""


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with one context slot, written `{context}` or, as the paper prints its templates,
    `{prompt_content}`. `name` is what rollout records carry as `template`: the built-in name, or
    the path of a user's template file."""

    name: str
    text: str
    description: str = ""

    def __post_init__(self) -> None:
        found = [p for p in PLACEHOLDERS if p in self.text]
        if not found:
            raise TemplateError(f"template {self.name} has no {CONTEXT_PLACEHOLDER} or {PAPER_PLACEHOLDER} placeholder")
        if len(found) > 1:
            raise TemplateError(
                f"template {self.name} has both {CONTEXT_PLACEHOLDER} and {PAPER_PLACEHOLDER}: use one of them"
            )

    @property
    def placeholder(self) -> str:
        return CONTEXT_PLACEHOLDER if CONTEXT_PLACEHOLDER in self.text else PAPER_PLACEHOLDER

    def render(self, context: str) -> str:
        # str.replace scans the template once, so braces in the context (even a literal
        # "{context}") are inserted verbatim and never substituted again
        return self.text.replace(self.placeholder, context)


def list_templates() -> list[PromptTemplate]:
    return [PromptTemplate(name, text, TEMPLATE_DESCRIPTIONS[name]) for name, text in BUILTIN_TEMPLATES.items()]


def load_template(spec: str | PromptTemplate) -> PromptTemplate:
    """A built-in template by name (`v0` … `v6`, `fewshot`, ...) or a UTF-8 template file.

    One trailing newline of a file is dropped: editors add it, and left in place it would put a
    line break between the context and the continuation the model must predict.
    """
    if isinstance(spec, PromptTemplate):
        return spec
    if spec in BUILTIN_TEMPLATES:
        return PromptTemplate(spec, BUILTIN_TEMPLATES[spec], TEMPLATE_DESCRIPTIONS[spec])
    path = Path(spec).expanduser()
    if not path.exists():
        raise TemplateError(
            f"template {spec}: neither a built-in template ({', '.join(BUILTIN_TEMPLATES)}) nor an existing file"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise TemplateError(f"template {spec}: is a directory, not a template file") from None
    except PermissionError:
        raise TemplateError(f"template {spec}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"template {spec}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise TemplateError(f"template {spec}: cannot read ({exc.strerror})") from None
    text = text.removesuffix("\n").removesuffix("\r")
    return PromptTemplate(str(spec), text, "from a file")


@dataclass(frozen=True)
class PromptConfig:
    """How a context becomes a prompt; the same settings serve rollout, training and evaluation.

    - `template`: a built-in name, a template file (see `load_template`) or a `PromptTemplate`.
    - `chat`: wrap the filled template as a user message with the tokenizer's chat template and
      open the assistant turn; ignored when the tokenizer has no chat template.
    - `think_prefix`: text that opens the assistant's answer, e.g. "<think>\\n" for models trained
      to think first (skipped when the chat template already ends with it).
    - `max_prompt_tokens`: the whole prompt's length limit (paper: 4,096); a longer context is cut
      from the left at one of its own token boundaries.
    """

    template: str | PromptTemplate = DEFAULT_TEMPLATE
    chat: bool = True
    think_prefix: str | None = None
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _adds_special_tokens(tokenizer, prompt: str) -> bool:
    # a chat template writes its own begin-of-sequence token into the text
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompt.startswith(bos))


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The token ids of a prompt text taken as written: every special token's string in it is
    that special token. For prompts a `PromptBuilder` made, use its `encode`, which keeps special
    strings inside the context plain text.

    Special tokens (BOS) are added only when the text does not already start with the
    begin-of-sequence token."""
    return tokenizer(prompt, add_special_tokens=_adds_special_tokens(tokenizer, prompt))["input_ids"]


def plain_token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as plain text: special tokens' strings are split into ordinary tokens."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens (e.g. BOS, some tokenizers' EOS) the tokenizer puts before and after a
    text when asked to add special tokens."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], []


# stands for the context while the prompt's frame (template, chat markup) is laid out
_CONTEXT_SLOT = "\ue000rpt-context-slot\ue000"


class PromptBuilder:
    """Builds prompts for one tokenizer and one `PromptConfig`; the template and the fixed parts
    of the prompt are prepared once, so building a prompt per sample stays cheap."""

    def __init__(self, tokenizer, config: PromptConfig | None = None):
        self.tokenizer = tokenizer
        self.config = config or PromptConfig()
        self.template = load_template(self.config.template)
        if self.config.max_prompt_tokens < 1:
            raise SettingError("max_prompt_tokens", "{setting} must be at least 1")
        self.chat = self.config.chat and has_chat_template(tokenizer)
        # the prompt around the context: where its special markers may be
        head, slot, tail = self._assemble(_CONTEXT_SLOT).partition(_CONTEXT_SLOT)
        self._frame = (head, tail) if slot and _CONTEXT_SLOT not in tail else None
        self._affixes = special_affixes(tokenizer)
        # tokens the prompt takes besides the context (instructions, chat markup, think prefix)
        self.overhead_tokens = len(self.encode(self._assemble("")))
        if self.overhead_tokens >= self.config.max_prompt_tokens:
            raise SettingError(
                "max_prompt_tokens",
                f"the template {self.template.name} alone takes {self.overhead_tokens} tokens, which leaves no room "
                f"for a context within {{setting}}={self.config.max_prompt_tokens}",
            )

    def _assemble(self, context: str) -> str:
        text = self.template.render(context)
        if self.chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        prefix = self.config.think_prefix
        if prefix and not text.rstrip().endswith(prefix.strip()):
            text += prefix
        return text

    def build(self, context: str) -> str:
        """The prompt for `context`, cut from the left if the whole prompt would exceed the limit."""
        return self.build_with_length(context)[0]

    def encode(self, prompt: str) -> list[int]:
        """The token ids a backend feeds the model for a prompt built here: the special markers
        of the template and the chat template are their tokens; the context is plain text, so
        special tokens' strings in it (`<|im_end|>` in a web page) are split into ordinary tokens.
        Text runs between markers are tokenized whole, as the tokenizer itself does, so a context
        free of such strings encodes exactly as `encode_prompt` encodes the prompt."""
        context_span = self._context_span(prompt)
        markers = []  # (start, end, id) of the special tokens outside the context
        special = self.tokenizer.added_tokens_decoder
        for token_id, start, end in self._special_spans(prompt):
            token = special.get(token_id)
            if token is None or not token.special:
                continue
            if context_span is not None and start < context_span[1] and end > context_span[0]:
                continue  # inside the context: plain text
            markers.append((_stripped_start(prompt, start, token), _stripped_end(prompt, end, token), token_id))
        ids, position = [], 0
        for start, end, token_id in markers:
            ids += plain_token_ids(self.tokenizer, prompt[position:start])
            ids.append(token_id)
            position = end
        ids += plain_token_ids(self.tokenizer, prompt[position:])
        if _adds_special_tokens(self.tokenizer, prompt):
            before, after = self._affixes
            ids = before + ids + after
        return ids

    def _special_spans(self, prompt: str) -> list[tuple[int, int, int]]:
        """(id, start, end) of the added tokens the tokenizer finds in the prompt: from its own
        offsets (fast tokenizers), else by finding their strings, longest first."""
        if getattr(self.tokenizer, "is_fast", False):
            encoded = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
            return [(i, a, b) for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
        return special_spans_by_text(self.tokenizer, prompt)

    def _context_span(self, prompt: str) -> tuple[int, int] | None:
        """Where the context lies in a prompt built here (None for a prompt made elsewhere, whose
        special strings are then taken as written)."""
        if self._frame is None:
            return None
        head, tail = self._frame
        if len(prompt) < len(head) + len(tail) or not prompt.startswith(head) or not prompt.endswith(tail):
            return None
        return len(head), len(prompt) - len(tail)

    def build_with_length(self, context: str) -> tuple[str, int]:
        """(prompt, its length in tokens as `encode` counts them)."""
        prompt, ids = self.build_with_ids(context)
        return prompt, len(ids)

    def build_with_ids(self, context: str) -> tuple[str, list[int]]:
        """(prompt, its token ids as `encode` makes them), cut from the left if too long."""
        limit = self.config.max_prompt_tokens
        starts = _tail_token_starts(self.tokenizer, context, limit) if len(context) > limit * _CHARS_PER_TOKEN else None
        if starts is None or starts[0] == 0:  # short enough to tokenize whole
            prompt = self._assemble(context)
            ids = self.encode(prompt)
            if len(ids) <= limit:
                return prompt, ids
        # Tokens can merge across the seam between template and context, so the context's own
        # token count is only an estimate of its share of the prompt: cut, measure, cut further.
        starts = starts or context_token_starts(self.tokenizer, context)
        keep = min(len(starts), limit - self.overhead_tokens)
        while keep > 0:
            prompt = self._assemble(context[starts[len(starts) - keep] :])
            ids = self.encode(prompt)
            if len(ids) <= limit:
                return prompt, ids
            keep -= max(1, len(ids) - limit)
        prompt = self._assemble("")
        return prompt, self.encode(prompt)


def context_token_starts(tokenizer, context: str) -> list[int]:
    """Character offsets where the context's tokens start, ascending and distinct.

    Byte-level tokenizers may split one character over several tokens; those tokens share the
    character's offset, and a cut can only fall before the whole character, so they count once.
    """
    encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    starts: list[int] = []
    for start, end in encoded["offset_mapping"]:
        if end <= start and start != 0:  # zero-width pieces carry no text to cut before
            continue
        if not starts or start > starts[-1]:
            starts.append(start)
    return starts or [0]


# A long context's tail is tokenized first, this many characters per token of the limit, so that a
# 10 MB context cut to 32 tokens costs 32 tokens' work, not 10 MB's; the window widens while it
# holds too few tokens. Its first tokens may differ from the whole context's (a word cut in two at
# the window's edge), so that many are dropped: tokenizers split text into words first, and a
# cut's effect does not reach further.
_CHARS_PER_TOKEN = 16
_SEAM_TOKENS = 8


def _tail_token_starts(tokenizer, context: str, wanted: int) -> list[int]:
    """`context_token_starts` for the last `wanted` (or more) tokens of the context, from its
    tail only; all of them (starting at 0) when the window grows to the whole context."""
    width = (wanted + _SEAM_TOKENS) * _CHARS_PER_TOKEN
    while True:
        begin = max(0, len(context) - width)
        starts = context_token_starts(tokenizer, context[begin:])
        if begin == 0:
            return starts
        starts = [begin + start for start in starts[_SEAM_TOKENS:]]
        if len(starts) > wanted:
            return starts
        width *= 4


def special_spans_by_text(tokenizer, text: str) -> list[tuple[int, int, int]]:
    """(id, start, end) of every special token's string in `text`, longest first where they
    overlap: where a tokenizer gives no offsets, this is where it would match them."""
    by_text = {token.content: i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    if not by_text:
        return []
    pattern = re.compile("|".join(re.escape(t) for t in sorted(by_text, key=len, reverse=True)))
    return [(by_text[m.group(0)], m.start(), m.end()) for m in pattern.finditer(text)]


def _stripped_start(text: str, start: int, token) -> int:
    """Where a special token's match begins once its `lstrip` has taken the whitespace before it."""
    if getattr(token, "lstrip", False):
        while start > 0 and text[start - 1].isspace():
            start -= 1
    return start


def _stripped_end(text: str, end: int, token) -> int:
    if getattr(token, "rstrip", False):
        while end < len(text) and text[end].isspace():
            end += 1
    return end
