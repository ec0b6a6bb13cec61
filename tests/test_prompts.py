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


# Table 10's v1-v6, typed out from the paper (shared/reference/paper-appendix.md) with its own
# placeholder {prompt_content}; v1 and v2 write "\\boxed{}" once with a doubled backslash, as printed.
NOTE = "(note: the token may begin with a space, e.g., \\boxed{ para} or \\boxed{ =}; do not use \\text{})"
PAPER_PRINTED = {
    "v1": "Complete the given text under ### Context by predicting the next token, and wrap it in \\\\boxed{}. "
    "Please reason step by step to find the most probable next token as the final prediction, and enclose it in "
    "\\boxed{} " + NOTE + ".\n\n### Context\n```{prompt_content}```.",
    "v2": "You are a helpful assistant, good at predicting the next token for a given context.\n\nNow, please "
    "complete the given text under ### Context by predicting the next token, and wrap it in \\\\boxed{}. Please "
    "reason step by step to find the most probable next token, and enclose it in \\boxed{} (note: the token may "
    "begin with a space, e.g., \\boxed{ para} or \\boxed{ +=}; do not use \\text{}).\n\n### Context\n"
    "```{prompt_content}```.",
    "v3": "Complete the given text under ### Context by predicting the next token, list multiple potential tokens "
    "and select the most probable one as the final answer. Wrap your final answer in \\boxed{} " + NOTE + ". "
    "### Context ```{prompt_content}```",
    "v4": "Complete the given text under ### Context by predicting the next token, and wrap it in \\boxed{}. Please "
    "reason step by step to find the most probable next token as the final answer, and enclose it in \\boxed{}. "
    "Some examples: ### Context \\n \\n ```...(some omitted)...Matching calculations with 1990 valid combinations "
    "indicates the minimum value of \\( b \\) that fits all pre-requisites and restrictions for triangle formation "
    "and symmetry generates the efficient outcome: \\n \\n \\[ \\n \\boxed{1991^2} \\n \\] \\n \\nIn``` The next "
    "token is \\boxed{ this} ### Context \\n \\n ```...Thus $2^{A}=\\left(2^{a}\\right)^{2}\\left(2^{3} \\right)=``` "
    "The next token is \\boxed{9} ### Context \\n \\n ```..., numerical exploration shows``` The next token is "
    "\\boxed{:\\n} Now, the context is: ### Context \\n \\n ```{prompt_content}```.",
    "v5": "Complete the given text under ### Context by predicting the next token, and wrap it in \\boxed{}. Please "
    "reason step by step to find the most probable next token as the final answer, and enclose it in \\boxed{} "
    + NOTE
    + ".\n\n### Context\n```{prompt_content}```.",
    "v6": "Complete the given text wrapped in ``` and ``` by predicting the next token, list multiple potential "
    "tokens and select the most probable one as the final prediction. Wrap your final prediction in \\boxed{} "
    + NOTE
    + ".\n\nThe context is: ```{prompt_content}```, now please predict the next token.",
}


@pytest.mark.parametrize("name", sorted(PAPER_PRINTED))
def test_v1_to_v6_are_the_papers_printed_templates(name):
    printed = PAPER_PRINTED[name]
    if name == "v4":  # the paper prints v4's line breaks as \n; they are line breaks
        printed = printed.replace("\\n", "\n")
    template = load_template(name)
    assert template.text == printed
    assert template.render("x = 1") == printed.replace("{prompt_content}", "x = 1")


def test_only_v1_and_v2_double_a_backslash_as_printed():
    doubled = {name for name in BUILTIN_TEMPLATES if "\\\\boxed" in load_template(name).text}
    assert doubled == {"v1", "v2"}
    assert all(load_template(name).text.count("\\\\boxed{}") == 1 for name in doubled)


def test_table_8_figures_are_attached_to_the_printed_templates_only():
    table_8 = {"v0": ("3.0", "8.5"), "v1": ("5.7", "11.0"), "v2": ("5.7", "16.0"), "v3": ("5.3", "11.0")}
    table_8 |= {"v4": ("4.0", "9.0"), "v5": ("4.4", "12.5"), "v6": ("6.0", "19.0")}
    for template in list_templates():
        if template.name in table_8:
            assert "Table 8" in template.description
            assert all(figure in template.description for figure in table_8[template.name])
        else:
            assert "Table 8" not in template.description


def test_our_variants_keep_their_wording_under_their_own_names():
    assert load_template("fenced").text == PAPER_V0.replace("{context}", "```\n{context}\n```")
    text = load_template("candidates").text
    assert text.endswith("### Context\n```\n{context}\n```")
    assert "candidate" in text and text.index("candidate") < text.index("most probable")
    assert "\\boxed{ para}" in text  # the same note on leading spaces as v0


def test_list_templates_names_every_builtin_with_a_description():
    listed = list_templates()
    names = ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "fenced", "candidates", "fewshot", "direct", "thought"]
    assert [t.name for t in listed] == names == list(BUILTIN_TEMPLATES)
    assert all(t.description and t.placeholder in t.text for t in listed)


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


def test_template_file_may_use_the_papers_placeholder(tmp_path):
    path = tmp_path / "paper.txt"
    path.write_text("Predict the next token.\n### Context\n```{prompt_content}```.\n", encoding="utf-8")
    assert (
        load_template(str(path)).render("a {context} b") == "Predict the next token.\n### Context\n```a {context} b```."
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (b"no placeholder here\n", "has no {context} or {prompt_content} placeholder"),
        (b"{context} and {prompt_content}", "has both {context} and {prompt_content}: use one of them"),
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
