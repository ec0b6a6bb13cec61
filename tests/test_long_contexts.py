"""Bounded work on huge inputs: a long context is cut from its tail before it is tokenized whole
(rpt_cli/prompts.py), with the same prompt as cutting the whole context's tokens would give."""

from __future__ import annotations

import time

import pytest

import rpt_cli.prompts as prompts
from rpt_cli.prompts import PromptBuilder, PromptConfig, PromptTemplate, context_token_starts
from tests.conftest import TOKENIZER_TEXT

SHORT = PromptTemplate("short", "Next token of:\n{context}")  # room for a context within 32 tokens


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def cut_whole(builder: PromptBuilder, context: str) -> tuple[str, list[int]]:
    """The specification: tokenize the whole context, keep its last tokens that fit with the
    template, re-measured with the template around them (as rpt cut before it bounded the work)."""
    limit = builder.config.max_prompt_tokens
    prompt = builder._assemble(context)
    ids = builder.encode(prompt)
    if len(ids) <= limit:
        return prompt, ids
    starts = context_token_starts(builder.tokenizer, context)
    keep = min(len(starts), limit - builder.overhead_tokens)
    while keep > 0:
        prompt = builder._assemble(context[starts[len(starts) - keep] :])
        ids = builder.encode(prompt)
        if len(ids) <= limit:
            return prompt, ids
        keep -= max(1, len(ids) - limit)
    prompt = builder._assemble("")
    return prompt, builder.encode(prompt)


@pytest.mark.parametrize("limit", [40, 64, 300])
@pytest.mark.parametrize("chat", [True, False])
def test_a_long_context_is_cut_as_its_whole_tokenization_would_cut_it(tokenizer, limit, chat):
    builder = PromptBuilder(tokenizer, PromptConfig(template=SHORT, max_prompt_tokens=limit, chat=chat))
    text = " ".join(TOKENIZER_TEXT)
    for length in (50, 700, 5_000, 40_000):  # below, near and far beyond the window
        for shift in range(0, 40, 7):  # windows' edges at different places in words
            context = (text * (length // len(text) + 2))[shift : shift + length]
            assert builder.build_with_ids(context) == cut_whole(builder, context), (length, shift)
    spaces = "x" + " " * 20_000 + "end"  # few tokens for many characters: the window widens
    assert builder.build_with_ids(spaces) == cut_whole(builder, spaces)


def test_a_ten_megabyte_context_costs_the_limit_not_the_context(tokenizer, monkeypatch):
    tokenized = []
    original = prompts.context_token_starts
    monkeypatch.setattr(
        prompts, "context_token_starts", lambda tok, text: tokenized.append(len(text)) or original(tok, text)
    )
    builder = PromptBuilder(tokenizer, PromptConfig(template=SHORT, max_prompt_tokens=32))
    context = (" ".join(TOKENIZER_TEXT) + "\n") * (10_000_000 // 300)
    started = time.perf_counter()
    prompt, ids = builder.build_with_ids(context)
    elapsed = time.perf_counter() - started
    assert len(ids) <= 32 and context[-8:] in prompt
    assert tokenized and max(tokenized) < 10_000  # before: the whole 10 MB
    assert elapsed < 5, elapsed  # before: 44 s and 4 GB on the audit's machine
