"""Prompt templates, `{context}` substitution, chat wrapping and left truncation (rpt_cli/prompts.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpt_cli.prompts import (
    BUILTIN_TEMPLATES,
    PromptBuilder,
    PromptConfig,
    PromptTemplate,
    TemplateError,
    context_token_starts,
    encode_prompt,
    list_templates,
    load_template,
)

# Template v0 as printed in the paper (shared/reference/paper-details.md), typed out here on purpose
# rather than imported: the test is the specification.
PAPER_V0 = (
    "Complete the given text under '### Context' by predicting the next token, and wrap it in '\\boxed{}'. "
    "Please reason step by step to find the most probable next token as the final answer, and enclose it "
    "in \\boxed{} (note: the token may begin with a space, e.g., \\boxed{ para} or \\boxed{ =}; do not use "
    "\\text{}).\n\n### Context\n{context}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def plain_tokenizer(tiny_model_dir):
    """The same tokenizer without a chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    return tok


# -- the templates ---------------------------------------------------------------------------------
def test_v0_is_the_papers_template_exactly():
    assert load_template("v0").text == PAPER_V0
    assert load_template("v0").render("x = 1") == PAPER_V0.replace("{context}", "x = 1")


def test_v5_is_v0_with_the_context_in_triple_backticks():
    assert load_template("v5").text == PAPER_V0.replace("{context}", "```\n{context}\n```")


def test_v6_lists_candidates_then_picks_one_with_the_context_in_backticks():
    text = load_template("v6").text
    assert text.endswith("### Context\n```\n{context}\n```")
    assert "candidate" in text and "most probable" in text
    assert text.index("candidate") < text.index("most probable")
    assert "\\boxed{ para}" in text  # the same note on leading spaces as v0


def test_list_templates_names_every_builtin_with_a_description():
    listed = list_templates()
    assert [t.name for t in listed] == ["v0", "v5", "v6", "fewshot", "direct", "thought"] == list(BUILTIN_TEMPLATES)
    assert all(t.description and "{context}" in t.text for t in listed)


def test_direct_is_the_context_alone_and_fewshot_opens_the_thought():
    assert load_template("direct").render("so $x =") == "so $x ="
    assert load_template("thought").render("so $x =") == "so $x =<think>"  # --objective rlp, eval --mode gain
    fewshot = load_template("fewshot").render("so $x =")
    assert fewshot.endswith("Text: so $x =\n<think>")
    # its worked examples answer the way the reward reads: a box after </think>, spaces kept
    assert fewshot.count("</think> \\boxed{ ") == 3


def test_braces_in_the_context_are_inserted_verbatim():
    context = "f(x) = {a, b} \\boxed{3} {context} {0} {} }{"
    rendered = load_template("v0").render(context)
    assert rendered.endswith("### Context\n" + context)
    assert rendered.count("{context}") == 1  # the one inside the context, not substituted again
    assert "\\boxed{ para}" in rendered


def test_template_file_substitutes_only_the_context_placeholder(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Answer in \\boxed{}. {other} {0} {{x}}\n---\n{context}\n---{context}\n", encoding="utf-8")
    template = load_template(str(path))
    assert template.name == str(path)
    rendered = template.render("a {b} c")
    # one trailing newline of the file is dropped; every other character is kept
    assert rendered == "Answer in \\boxed{}. {other} {0} {{x}}\n---\na {b} c\n---a {b} c"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"no placeholder here\n", "has no {context} placeholder"),
        (b"\xff\xfe{context}", "not UTF-8 text"),
    ],
)
def test_bad_template_files_are_refused(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(TemplateError, match=message):
        load_template(str(path))


def test_unknown_template_and_directory_are_refused(tmp_path):
    with pytest.raises(TemplateError, match="neither a built-in template"):
        load_template(str(tmp_path / "missing.txt"))
    with pytest.raises(TemplateError, match="is a directory"):
        load_template(str(tmp_path))
    with pytest.raises(TemplateError):
        PromptTemplate("inline", "no slot")


# -- chat wrapping and the think prefix ------------------------------------------------------------
def test_chat_template_wraps_the_prompt_as_a_user_turn(tokenizer):
    rendered = PAPER_V0.replace("{context}", "Let $x$ be")
    prompt = PromptBuilder(tokenizer).build("Let $x$ be")
    assert prompt == f"<|im_start|>user\n{rendered}<|im_end|>\n<|im_start|>assistant\n"


def test_no_chat_gives_the_filled_template_alone(tokenizer):
    assert PromptBuilder(tokenizer, PromptConfig(chat=False)).build("Let $x$ be") == PAPER_V0.replace(
        "{context}", "Let $x$ be"
    )


def test_a_tokenizer_without_chat_template_gets_the_raw_text(plain_tokenizer):
    builder = PromptBuilder(plain_tokenizer, PromptConfig(chat=True))
    assert builder.chat is False
    assert builder.build("abc") == PAPER_V0.replace("{context}", "abc")


def test_think_prefix_opens_the_assistant_turn(tokenizer):
    prompt = PromptBuilder(tokenizer, PromptConfig(think_prefix="<think>\n")).build("Let $x$ be")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")
    raw = PromptBuilder(tokenizer, PromptConfig(chat=False, think_prefix="\n<think>\n")).build("Let $x$ be")
    assert raw == PAPER_V0.replace("{context}", "Let $x$ be") + "\n<think>\n"


def test_think_prefix_is_not_doubled_when_the_chat_template_opens_it(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = tok.chat_template.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
    prompt = PromptBuilder(tok, PromptConfig(think_prefix="<think>\n")).build("abc")
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert prompt.count("<think>") == 1


# -- left truncation -------------------------------------------------------------------------------
LONG_CONTEXT = ("Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. café 日本語 😀 \\frac{1}{2} " * 30).strip()


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("headroom", [1, 7, 60])
def test_long_contexts_are_cut_from_the_left_at_a_token_boundary(tokenizer, chat, headroom):
    builder = PromptBuilder(tokenizer, PromptConfig(chat=chat, max_prompt_tokens=10**6))
    limit = builder.overhead_tokens + headroom
    builder = PromptBuilder(tokenizer, PromptConfig(chat=chat, max_prompt_tokens=limit))
    prompt, length = builder.build_with_length(LONG_CONTEXT)
    assert length == len(encode_prompt(tokenizer, prompt)) <= limit
    kept = _context_in(prompt, tokenizer, chat)
    assert kept and LONG_CONTEXT.endswith(kept)
    cut = len(LONG_CONTEXT) - len(kept)
    assert cut in context_token_starts(tokenizer, LONG_CONTEXT)  # begins where a token of the context began
    # and the cut is as small as it can be: one more token of context would break the limit
    earlier = [s for s in context_token_starts(tokenizer, LONG_CONTEXT) if s < cut]
    if earlier:
        longer = builder._assemble(LONG_CONTEXT[earlier[-1] :])
        assert len(encode_prompt(tokenizer, longer)) > limit


def test_short_contexts_are_left_whole(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig(max_prompt_tokens=4096))
    prompt, length = builder.build_with_length(LONG_CONTEXT)
    assert LONG_CONTEXT in prompt and length < 4096


def test_a_limit_below_the_template_itself_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="leaves no room for a context"):
        PromptBuilder(tokenizer, PromptConfig(max_prompt_tokens=20))


def _context_in(prompt: str, tokenizer, chat: bool) -> str:
    head, _, tail = prompt.partition("### Context\n")
    return tail.removesuffix("<|im_end|>\n<|im_start|>assistant\n") if chat else tail


CONTEXT_TEXT = st.text(alphabet=st.sampled_from(list("ab xyz{}\\$=^_()12\n\té日😀")), min_size=0, max_size=200)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(context=CONTEXT_TEXT, headroom=st.integers(min_value=1, max_value=80))
def test_truncation_properties_hold_for_any_text(tokenizer, context, headroom):
    """Whatever the text: the prompt fits, the template is intact, and what remains of the context
    is a suffix of it starting at one of its token boundaries (all of it when it fits)."""
    overhead = len(encode_prompt(tokenizer, PAPER_V0.replace("{context}", "")))
    builder = PromptBuilder(tokenizer, PromptConfig(chat=False, max_prompt_tokens=overhead + headroom))
    prompt, length = builder.build_with_length(context)
    assert length <= overhead + headroom
    assert prompt.startswith(PAPER_V0.removesuffix("{context}"))
    kept = prompt[len(PAPER_V0.removesuffix("{context}")) :]
    assert context.endswith(kept)
    if kept != context:  # cut where a token began, or everything when not one character fits
        assert len(context) - len(kept) in [*context_token_starts(tokenizer, context), len(context)]
    if len(encode_prompt(tokenizer, PAPER_V0.replace("{context}", context))) <= overhead + headroom:
        assert kept == context
