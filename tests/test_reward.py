"""The reward core: answer extraction, Eq. 3, the Appendix A variants, the TRL signature, records.

Model-based variants run on the real tiny Llama of `tiny_model_dir` (and, marked slow, on the
built-in SmolLM2-135M); their probabilities are checked against a softmax computed here directly.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rpt_cli.errors import RecordError
from rpt_cli.reward import (
    REWARD_FUNCTIONS,
    ConditionalDenseReward,
    DenseReward,
    FirstTokenProbability,
    FirstTokenReward,
    RewardStats,
    completion_text,
    extract_prediction,
    get_reward_function,
    make_sample,
    prefix_match,
    prefix_reward,
    score_rollouts,
)


def answer(box: str, thinking: str = "Let me think.", after: str = "") -> str:
    return f"<think>{thinking}</think> The next token is \\boxed{{{box}}}{after}"


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


class TestExtraction:
    def test_keeps_whitespace_exactly(self):
        assert extract_prediction(answer(" para")) == " para"
        assert extract_prediction(answer("para ")) == "para "
        assert extract_prediction(answer("\n\t x")) == "\n\t x"

    def test_several_boxes_last_wins(self):
        completion = "<think>hmm</think> maybe \\boxed{ 2}, no: \\boxed{ 3}, final \\boxed{ 4}."
        assert extract_prediction(completion) == " 4"

    def test_box_only_inside_thinking_is_no_prediction(self):
        completion = "<think>I guess \\boxed{ 3}</think> I am not sure."
        assert extract_prediction(completion) is None
        assert extract_prediction(completion, require_think=False) == " 3"

    def test_box_before_last_think_end_does_not_count(self):
        completion = "<think>a</think> \\boxed{ 1} <think>b</think> no box here"
        assert extract_prediction(completion) is None
        assert extract_prediction("<think>a</think>\\boxed{x}</think>\\boxed{y}") == "y"

    def test_no_think_end_is_no_prediction_unless_no_think(self):
        assert extract_prediction("The answer is \\boxed{ 3}") is None
        assert extract_prediction("The answer is \\boxed{ 3}", require_think=False) == " 3"
        assert extract_prediction("<think> unfinished \\boxed{ 3}") is None

    def test_text_after_box_is_ignored(self):
        assert extract_prediction(answer(" 3", after=". I am confident: 3 is {right.")) == " 3"
        # ... unless a `}` follows that no group opened before the box accounts for: then the box
        # runs to the last `}`, since `\\boxed{ 3}. sure: }` is how " 3}. sure: " would be written
        assert (
            extract_prediction(answer(" 3", after=". I am confident: 3 is } right {")) == " 3}. I am confident: 3 is "
        )

    def test_boxed_without_braces(self):
        assert extract_prediction("<think>x</think> \\boxed 3") is None
        assert extract_prediction("<think>x</think> \\boxed") is None
        assert extract_prediction("<think>x</think> \\boxed {3}") is None  # the brace must follow at once
        # the last \boxed decides: a malformed last one does not fall back to an earlier box
        assert extract_prediction("<think>x</think> \\boxed{ 3} and \\boxed 4") is None

    def test_empty_box(self):
        assert extract_prediction(answer("")) is None
        assert extract_prediction("<think>x</think> \\boxed{ 3} \\boxed{}") is None

    def test_nested_braces(self):
        assert extract_prediction(answer("\\frac{1}{2}")) == "\\frac{1}{2}"
        assert extract_prediction(answer("{{a}{b{c}}}")) == "{{a}{b{c}}}"

    def test_escaped_braces_do_not_nest(self):
        assert extract_prediction(answer("\\{")) == "\\{"
        assert extract_prediction(answer("\\}")) == "\\}"
        assert extract_prediction(answer("\\{ x \\}")) == "\\{ x \\}"
        # `\\` is an escaped backslash, so the brace after it is a real one and closes the box
        assert extract_prediction("<think>x</think>\\boxed{a\\\\} b.") == "a\\\\"
        # a `}` after that close which nothing opened is the box's end instead
        assert extract_prediction("<think>x</think>\\boxed{a\\\\}b}") == "a\\\\}b"

    def test_lone_backslash_answers(self):
        # an escaped closing brace that leaves the box open: the backslash is the answer
        assert extract_prediction("<think>x</think>\\boxed{a\\}") == "a\\"
        assert extract_prediction("<think>x</think> \\boxed{\\}") == "\\"
        assert extract_prediction("<think>x</think> \\boxed{ \\}") == " \\"
        assert prefix_match(extract_prediction("</think>\\boxed{ \\}"), " \\frac{1}{2}", [2, 6, 7]) == 1.0

    def test_unbalanced_braces(self):
        assert extract_prediction("<think>x</think> \\boxed{ 3") is None  # no closing brace at all
        # a next token need not be balanced LaTeX: the box runs to the last `}`
        assert extract_prediction("<think>x</think> \\boxed{{ 3}") == "{ 3"
        assert extract_prediction("<think>x</think> \\boxed{ 3}}}") == " 3}}"
        assert extract_prediction("<think>x</think> \\boxed{1}{2}") == "1}{2"
        assert extract_prediction("<think>x</think> \\boxed{}}") == "}"

    def test_deep_nesting(self):
        depth = 50_000
        inner = "{" * depth + "x" + "}" * depth
        assert extract_prediction(answer(inner)) == inner
        # one brace short: the nesting never closes, so the box runs to the last `}`
        assert extract_prediction(answer(inner)[:-1]) == inner[:-1]

    def test_box_nested_in_box_opens_last(self):
        assert extract_prediction("<think>x</think>\\boxed{a \\boxed{b} c}") == "b"

    def test_prediction_repeating_the_context(self):
        context = "Let $x$ be a real number such that $x^2 = 9$, so $x ="
        completion = answer(context)
        assert extract_prediction(completion) == context
        assert prefix_match(extract_prediction(completion), " 3$.", [2, 4]) == 0.0
        assert prefix_reward([completion, answer(context + " 3")], target=[" 3$."] * 2, boundaries=[[2, 4]] * 2) == [
            0.0,
            0.0,
        ]

    def test_surrogates_and_mixed_scripts(self):
        lone = "\ud800"
        assert extract_prediction(f"<think>{lone}</think>\\boxed{{ 日本{lone}}}") == f" 日本{lone}"
        assert extract_prediction(f"{lone}</think>\\boxed{{{lone}") is None
        assert extract_prediction(answer("αβγ日本語😀 mix")) == "αβγ日本語😀 mix"

    def test_never_raises_on_non_strings(self):
        for value in (None, 3, b"</think>\\boxed{x}", ["x"], {"content": "x"}):
            assert extract_prediction(value) is None  # type: ignore[arg-type]

    @pytest.mark.parametrize("shape", ["think", "open-braces", "close-braces", "boxes", "escapes", "no-box"])
    def test_one_megabyte_completion_is_fast(self, shape):
        mb = 1 << 20
        completion = {
            "think": "<think>" + "a" * mb + "</think> \\boxed{ 3}",
            "open-braces": "<think>x</think>\\boxed{" + "{" * mb,
            "close-braces": "<think>x</think>\\boxed{" + "}" * mb,
            "boxes": ("</think>\\boxed{" * (mb // 15)),
            "escapes": "<think>x</think>\\boxed{" + "\\{" * (mb // 2) + "}",
            "no-box": "</think>" * (mb // 8),
        }[shape]
        expected = {"think": " 3", "escapes": "\\{" * (mb // 2), "close-braces": "}" * (mb - 1)}.get(shape)
        started = time.perf_counter()
        assert extract_prediction(completion) == expected
        assert extract_prediction(completion, require_think=False) == expected
        # a quadratic scan of 1 MB would take hours; the linear one takes milliseconds to a few
        # tenths of a second, so a loose bound cannot flake on a busy machine yet catches it
        assert time.perf_counter() - started < 5.0

    def test_conversational_completions(self):
        assistant = [{"role": "assistant", "content": answer(" 3")}]
        assert completion_text(assistant) == answer(" 3")
        split = [{"role": "assistant", "reasoning_content": "hmm", "content": "\\boxed{ 3}"}]
        assert extract_prediction(completion_text(split)) == " 3"
        parts = [{"role": "assistant", "content": [{"type": "text", "text": answer(" 3")}]}]
        assert extract_prediction(completion_text(parts)) == " 3"
        # a tool's message cannot supply the answer
        tool = [
            {"role": "assistant", "content": "<think>x</think> calling"},
            {"role": "tool", "content": "\\boxed{ 3}"},
        ]
        assert extract_prediction(completion_text(tool)) is None
        assert completion_text(42) == ""


# ---------------------------------------------------------------------------------------------
# Eq. 3
# ---------------------------------------------------------------------------------------------


class TestPrefixMatch:
    # target " 3$. Hence" tokenized as " 3" | "$." | " " | "Hence": boundaries 2, 4, 5, 10
    TARGET, BOUNDARIES = " 3$. Hence", [2, 4, 5, 10]

    @pytest.mark.parametrize(
        "prediction, expected",
        [
            (" 3", 1.0),  # the next token
            (" 3$.", 1.0),  # two whole tokens
            (" 3$. Hence", 1.0),  # the whole known target
            ("3", 0.0),  # the leading space counts
            (" 3$", 0.0),  # ends inside the token "$."
            (" 3 ", 0.0),  # wrong bytes
            (" 3$. Hence the", 0.0),  # longer than the known target
            ("", 0.0),
            (None, 0.0),
            (" 3\ud800", 0.0),  # cannot be encoded
        ],
    )
    def test_rule(self, prediction, expected):
        assert prefix_match(prediction, self.TARGET, self.BOUNDARIES) == expected

    def test_multi_byte_characters(self):
        # "日本語" is 3 + 3 + 3 bytes; tokens "日本" | "語"
        assert prefix_match("日本", "日本語", [6, 9]) == 1.0
        assert prefix_match("日", "日本語", [6, 9]) == 0.0
        assert prefix_match("日本語", "日本語", [6, 9]) == 1.0

    def test_boundary_inside_a_character_is_unreachable_not_an_error(self):
        # byte-level BPE splits "😀" (4 bytes) into two tokens: boundaries 2 and 4 are both real
        sample = make_sample("😀x", [2, 4, 5])
        assert sample.boundary_set == {2, 4, 5}
        assert prefix_match("😀", "😀x", [2, 4, 5]) == 1.0
        assert prefix_match("😀x", "😀x", [2, 4, 5]) == 1.0
        assert prefix_match("😀", "😀x", [2, 5]) == 0.0  # the character ends inside a token


# independent oracle: Eq. 3 read literally, as "some boundary b cuts the target into exactly the
# prediction's bytes", without the implementation's length lookup and startswith
def eq3_oracle(prediction: str, target: str, boundaries: list[int]) -> float:
    try:
        predicted = prediction.encode("utf-8")
    except UnicodeEncodeError:
        return 0.0
    truth = target.encode("utf-8")
    return 1.0 if predicted and any(truth[:b] == predicted for b in boundaries) else 0.0


ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
TRICKY = st.sampled_from(
    [
        "</think>",
        "<think>",
        "\\boxed",
        "\\boxed{",
        "{",
        "}",
        "\\",
        "\\{",
        "\\}",
        " ",
        "a",
        "é",
        "日",
        "😀",
        "\ud800",
        "\udfff",
        "\n",
    ]
)
TRICKY_TEXT = st.lists(st.one_of(TRICKY, st.text(ANY_CHAR, max_size=3)), max_size=40).map("".join)


@st.composite
def sample_and_prediction(draw):
    target = draw(st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1, max_size=12))
    size = len(target.encode("utf-8"))
    boundaries = sorted(draw(st.sets(st.integers(1, size), min_size=1, max_size=size)))
    kind = draw(st.sampled_from(["char-prefix", "byte-cut", "random", "extended"]))
    if kind == "char-prefix":
        prediction = target[: draw(st.integers(0, len(target)))]
    elif kind == "byte-cut":
        cut = draw(st.sampled_from(boundaries))
        prediction = target.encode("utf-8")[:cut].decode("utf-8", errors="ignore")
    elif kind == "extended":
        prediction = target + draw(st.text(ANY_CHAR, min_size=1, max_size=3))
    else:
        prediction = draw(st.text(ANY_CHAR, max_size=12))
    return prediction, target, boundaries


class TestProperties:
    @given(st.one_of(st.text(ANY_CHAR), TRICKY_TEXT), st.booleans())
    @settings(max_examples=400, deadline=None)
    def test_extraction_never_raises(self, completion, require_think):
        result = extract_prediction(completion, require_think=require_think)
        assert result is None or (isinstance(result, str) and result and result in completion)

    @given(
        st.text(st.characters(exclude_characters="\\{}"), max_size=30),
        st.lists(st.sampled_from(["a", " ", "{", "}", "\\{", "\\}", "日", "\\frac"]), min_size=1, max_size=20),
        st.text(st.characters(exclude_characters="\\}"), max_size=20),
    )
    @settings(max_examples=300, deadline=None)
    def test_extracts_the_last_balanced_box(self, thinking, pieces, tail):
        # build a box content with balanced unescaped braces, then check it comes back verbatim
        content, depth = "", 0
        for piece in pieces:
            if piece == "}" and depth == 0:
                continue
            depth += piece == "{"
            depth -= piece == "}"
            content += piece
        content += "}" * depth
        # the answer is the last box after the last </think>: neither part may close the thinking again
        thinking, tail = thinking.replace("</think>", ""), tail.replace("</think>", "")
        completion = f"<think>{thinking}</think> ok \\boxed{{{content}}}{tail}"
        expected = content or None
        assert extract_prediction(completion) == expected
        assert extract_prediction(completion, require_think=False) == expected

    @given(
        st.lists(
            st.sampled_from(
                [
                    "a",
                    "x",
                    "2",
                    " ",
                    "=",
                    "$",
                    "^",
                    "_",
                    "(",
                    ")",
                    "{",
                    "}",
                    "\\",
                    "\\{",
                    "\\}",
                    "\\\\",
                    "\\frac",
                    "\\sqrt",
                    "é",
                    "日",
                    "😀",
                    "\n",
                ]
            ),
            min_size=1,
            max_size=24,
        ),
        st.data(),
    )
    @settings(max_examples=500, deadline=None)
    def test_any_true_prefix_in_a_box_scores_one(self, pieces, data):
        """For any target and any of its boundaries, `</think>\\boxed{<that prefix>}` scores 1,
        whatever the prefix holds: lone backslashes, unbalanced or escaped braces, LaTeX."""
        target = "".join(pieces)
        raw = target.encode("utf-8")
        starts = [i for i in range(1, len(raw) + 1) if i == len(raw) or (raw[i] & 0xC0) != 0x80]
        boundaries = sorted(data.draw(st.sets(st.sampled_from(starts), min_size=1)))
        prefix = raw[: data.draw(st.sampled_from(boundaries))].decode("utf-8")
        assume("\\boxed" not in prefix and "</think>" not in prefix)  # the markers the rule looks for
        for completion in (f"</think>\\boxed{{{prefix}}}", f"<think>maybe {{x}}</think> so \\boxed{{{prefix}}}"):
            assert extract_prediction(completion) == prefix
            assert prefix_reward([completion], target=[target], boundaries=[boundaries]) == [1.0]

    @given(sample_and_prediction())
    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_prefix_is_one_exactly_when_eq3_holds(self, case):
        prediction, target, boundaries = case
        expected = eq3_oracle(prediction, target, boundaries)
        assert prefix_match(prediction, target, boundaries) == expected
        completion = f"<think>x</think>\\boxed{{{prediction}}}"
        extracted = extract_prediction(completion)
        if extracted == prediction:  # predictions with braces or backslashes may not survive a box
            assert prefix_reward([completion], target=[target], boundaries=[boundaries]) == [expected]


# ---------------------------------------------------------------------------------------------
# Validation and the TRL signature
# ---------------------------------------------------------------------------------------------


class TestValidation:
    @pytest.mark.parametrize(
        "target, boundaries, message",
        [
            (3, [1], 'field "target" must be a string'),
            ("", [1], 'field "target" must not be empty'),
            ("ab\ud83d", [1], "unpaired surrogate"),
            ("abc", "1,2", 'field "boundaries" must be a list'),
            ("abc", [], 'field "boundaries" must not be empty'),
            ("abc", [1, 1], '"boundaries" must be strictly increasing, got 1 then 1'),
            ("abc", [2, 1], '"boundaries" must be strictly increasing, got 2 then 1'),
            ("abc", [0, 1], '"boundaries" must be positive byte lengths, got 0'),
            ("abc", [-1], '"boundaries" must be positive byte lengths, got -1'),
            ("abc", [1, 2.0], '"boundaries" must hold integers, got 2.0'),
            ("abc", [True], '"boundaries" must hold integers, got True'),
            ("abc", [1, 4], "boundary 4 exceeds the target, which is 3 UTF-8 bytes long"),
            ("日", [1, 4], "boundary 4 exceeds the target, which is 3 UTF-8 bytes long"),
        ],
    )
    def test_bad_samples(self, target, boundaries, message):
        with pytest.raises(RecordError, match=None) as info:
            make_sample(target, boundaries)
        assert message in str(info.value)

    def test_context_required_by_dense(self):
        with pytest.raises(RecordError, match='missing field "context"'):
            make_sample("a", [1], None, need_context=True)
        with pytest.raises(RecordError, match='"context" must be a string'):
            make_sample("a", [1], 5, need_context=True)

    def test_length_mismatch(self):
        with pytest.raises(RecordError, match='got 3 completions but 2 values of "boundaries"'):
            prefix_reward(["a", "b", "c"], target=["x"] * 3, boundaries=[[1], [1]])
        with pytest.raises(RecordError, match='got 1 completions but 2 values of "target"'):
            prefix_reward(["a"], target=["x", "y"], boundaries=[[1]])

    def test_missing_column(self):
        with pytest.raises(RecordError, match='missing column "boundaries"'):
            prefix_reward(["a"], target=["x"])
        with pytest.raises(ValueError, match='missing column "context"'):
            DenseReward(probability=object())(["a"], target=["x"], boundaries=[[1]])

    def test_bad_value_names_the_completion(self):
        with pytest.raises(RecordError, match=r"completion 2: \"boundaries\" must be strictly increasing"):
            prefix_reward(["a"] * 3, target=["xy"] * 3, boundaries=[[1, 2], [1, 2], [2, 1]])

    def test_trl_signature_ignores_extra_columns(self):
        completions = [answer(" 3"), answer(" 4"), "no answer", [{"role": "assistant", "content": answer(" 3$.")}]]
        rewards = prefix_reward(
            completions=completions,
            target=[" 3$."] * 4,
            boundaries=[[2, 4]] * 4,
            prompts=["p"] * 4,
            completion_ids=[[1]] * 4,
            trainer_state=object(),
            split=["hard"] * 4,
            log_extra=lambda *a: None,
            log_metric=lambda *a: None,
        )
        assert rewards == [1.0, 0.0, 0.0, 1.0]
        assert all(type(r) is float for r in rewards)
        assert prefix_reward.__name__ == "prefix_reward"

    def test_no_think_option(self):
        fn = get_reward_function("prefix", require_think=False)
        assert fn(["\\boxed{ 3}"], target=[" 3"], boundaries=[[2]]) == [1.0]
        assert prefix_reward(["\\boxed{ 3}"], target=[" 3"], boundaries=[[2]]) == [0.0]


class TestRegistry:
    def test_names(self):
        assert list(REWARD_FUNCTIONS) == ["prefix", "first-token", "dense", "conditional-dense"]

    def test_unknown_name_and_option(self):
        with pytest.raises(ValueError, match="unknown reward function 'exact': choose one of prefix, first-token"):
            get_reward_function("exact")
        with pytest.raises(ValueError, match="reward function 'prefix'"):
            get_reward_function("prefix", model="x")

    def test_model_variants_need_their_model(self):
        with pytest.raises(ValueError, match="needs the model's tokenizer"):
            get_reward_function("first-token")
        with pytest.raises(ValueError, match="needs a model and its tokenizer"):
            get_reward_function("dense")
        with pytest.raises(ValueError, match="correct='exact'"):
            get_reward_function("dense", probability=object(), correct="exact")


# ---------------------------------------------------------------------------------------------
# Records and metrics
# ---------------------------------------------------------------------------------------------


class TestRecords:
    def test_score_rollouts_adds_fields_and_keeps_the_rest(self):
        records = [
            {
                "id": "d@1",
                "target": " 3$.",
                "boundaries": [2, 4],
                "mine": {"k": 1},
                "completions": [answer(" 3"), answer(" 3$"), "<think>no</think>", answer(" 3$.")],
            },
            {"id": "d@2", "target": "x", "boundaries": [1], "completions": [answer("y"), answer("z")]},
        ]
        stats = RewardStats()
        out = list(score_rollouts(records, prefix_reward, stats=stats))
        assert out[0]["predictions"] == [" 3", " 3$", None, " 3$."]
        assert out[0]["rewards"] == [1.0, 0.0, 0.0, 1.0]
        assert out[0]["reward_fn"] == "prefix" and out[0]["mine"] == {"k": 1}
        assert "reward_options" not in out[0]
        assert out[1]["rewards"] == [0.0, 0.0]
        # 6 completions, 2 correct, 1 without prediction; group 1 solved, group 2 tied at 0
        assert (stats.groups, stats.completions) == (2, 6)
        assert stats.mean_reward == pytest.approx(2 / 6)
        assert stats.no_prediction_share == pytest.approx(1 / 6)
        assert stats.pass_at_g == 0.5 and stats.accuracy == pytest.approx(2 / 6)
        assert stats.tied_groups == 1 and stats.g_label == "pass@G"

    def test_score_record_and_options(self):
        fn = get_reward_function("prefix", require_think=False)
        record = fn.score_record({"target": "ab", "boundaries": [1, 2], "completions": ["\\boxed{a}"]})
        assert record["rewards"] == [1.0]
        assert record["reward_options"] == {"require_think": False}

    def test_bad_record(self):
        with pytest.raises(RecordError, match='missing field "completions"'):
            list(score_rollouts([{"target": "a", "boundaries": [1]}], prefix_reward))
        with pytest.raises(RecordError, match=r'"completions\[1\]" must be a string'):
            list(score_rollouts([{"target": "a", "boundaries": [1], "completions": ["x", 3]}], prefix_reward))
        with pytest.raises(RecordError, match='missing field "boundaries"'):
            list(score_rollouts([{"target": "a", "completions": ["x"]}], prefix_reward))


class TestDirectAnswers:
    """The direct answer format: the whole completion is the prediction, scored by the same rules."""

    COLUMNS = dict(target=[" 3$. Hence"] * 6, boundaries=[[2, 4, 5, 10]] * 6)

    def test_the_completion_is_the_prediction(self):
        fn = get_reward_function("prefix", answer="direct")
        completions = [" 3", " 3$.", "3", "", "</think> \\boxed{ 3}", " 3$. Hence"]
        assert [fn.extract(c) for c in completions] == [" 3", " 3$.", "3", None, "</think> \\boxed{ 3}", " 3$. Hence"]
        assert fn(completions, **self.COLUMNS) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        # the same completions in the boxed format: only a box after </think> counts
        assert prefix_reward(completions, **self.COLUMNS) == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    def test_options_say_the_format_and_unknown_formats_are_refused(self):
        record = get_reward_function("prefix", answer="direct").score_record(
            {"target": "ab", "boundaries": [1, 2], "completions": ["a"]}
        )
        assert record["rewards"] == [1.0] and record["reward_options"] == {"answer": "direct"}
        with pytest.raises(ValueError, match="answer='free'"):
            get_reward_function("prefix", answer="free")


def test_no_torch_on_the_main_path():
    code = (
        "import sys; from rpt_cli.reward import prefix_reward, get_reward_function; "
        "prefix_reward(['</think>\\\\boxed{a}'], target=['a'], boundaries=[[1]]); "
        "from typer.testing import CliRunner; from rpt_cli.cli import app; "
        "r = CliRunner().invoke(app, ['reward'], "
        'input=\'{"completions": ["x"], "target": "a", "boundaries": [1]}\\n\'); '
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'trl', 'datasets') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Model-based variants on a real (tiny) model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tokenizer


def direct_probability(model, tokenizer, context: str, prediction: str) -> float:
    """P(first token of prediction | context), one unpadded forward pass, no rpt code."""
    import torch

    ids = tokenizer(context)["input_ids"]
    first = tokenizer(prediction, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits.double(), -1)[first].item()


def doc_boundaries(tokenizer, target: str) -> list[int]:
    """Cumulative byte lengths of target's own tokens, as `rpt filter` would list them."""
    from rpt_cli.tokens import DocTokenizer

    return DocTokenizer(tokenizer)([target])[0].offsets[1:]


class TestFirstToken:
    TARGET = " 3$. Hence the answer"  # tiny tokenizer: " 3" | "$." | " " | "Hence" | " the" | " answer"

    def test_rule(self, tiny):
        _, tokenizer = tiny
        boundaries = doc_boundaries(tokenizer, self.TARGET)
        assert boundaries[0] == 2
        fn = get_reward_function("first-token", tokenizer=tokenizer)
        predictions = [" 3", " 3$.", " 3 wrong tail", " ", "3", " 4", None]
        completions = [answer(p) if p is not None else "<think>x</think>" for p in predictions]
        rewards = fn(completions, target=[self.TARGET] * 7, boundaries=[boundaries] * 7)
        # only the first token counts: " 3 wrong tail" starts with the token " 3"
        assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        assert prefix_reward(completions, target=[self.TARGET] * 7, boundaries=[boundaries] * 7) == [
            1.0,
            1.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ]

    def test_direct_answers(self, tiny):
        _, tokenizer = tiny
        boundaries = doc_boundaries(tokenizer, self.TARGET)
        fn = get_reward_function("first-token", tokenizer=tokenizer, answer="direct")
        rewards = fn([" 3", " 3 wrong tail", "3", ""], target=[self.TARGET] * 4, boundaries=[boundaries] * 4)
        assert rewards == [1.0, 1.0, 0.0, 0.0]

    def test_multi_byte_tokens(self, tiny):
        _, tokenizer = tiny
        target = "日本語 数学"  # 3-byte characters that byte-level BPE splits across tokens
        boundaries = doc_boundaries(tokenizer, target)
        assert any(b % 3 for b in boundaries), "expected a boundary inside a character"
        completions = [answer("日本"), answer("日本語"), answer("日"), answer("\ud800")]
        columns = dict(target=[target] * 4, boundaries=[boundaries] * 4)
        assert prefix_reward(completions, **columns) == [
            float(6 in boundaries),
            float(9 in boundaries),
            float(3 in boundaries),
            0.0,
        ]
        # first-token: the prediction's first token id must be the target's first token id
        first = tokenizer(target, add_special_tokens=False)["input_ids"][0]
        expected = [
            float(tokenizer(p, add_special_tokens=False)["input_ids"][0] == first) for p in ("日本", "日本語", "日")
        ] + [0.0]
        assert FirstTokenReward(tokenizer=tokenizer)(completions, **columns) == expected
        assert expected[:3] == [1.0, 1.0, 1.0]  # all start with the byte token of "日"


class TestDense:
    CONTEXTS = ["Let $x$ be a real number such that", "Hence", "Complete the given text under '### Context' by"]

    def test_probability_matches_direct_softmax(self, tiny):
        model, tokenizer = tiny
        probability = FirstTokenProbability(model, tokenizer, "cpu", batch_size=2)
        pairs = [(c, p) for c in self.CONTEXTS for p in (" the", " number", "$")]
        got = probability(pairs)
        for (context, prediction), value in zip(pairs, got):
            assert value == pytest.approx(direct_probability(model, tokenizer, context, prediction), rel=1e-4, abs=1e-7)
        assert 0.0 < min(got) and max(got) < 1.0

    def test_dense_and_conditional_dense(self, tiny):
        model, tokenizer = tiny
        target = " number such that"
        boundaries = doc_boundaries(tokenizer, target)
        context = "Let $x$ be a real"
        dense = get_reward_function("dense", model=model, tokenizer=tokenizer, device="cpu")
        group_solved = [answer(" number"), answer(" the"), "<think>x</think>"]
        group_unsolved = [answer(" the"), answer("$")]
        columns = dict(
            target=[target] * 5,
            boundaries=[boundaries] * 5,
            context=[context] * 3 + ["Hence"] * 2,
            prompts=["p"] * 5,
            trainer_state=None,
        )
        rewards = dense(group_solved + group_unsolved, **columns)
        p_the = direct_probability(model, tokenizer, context, " the")
        expected = [
            1.0,
            p_the,
            0.0,
            direct_probability(model, tokenizer, "Hence", " the"),
            direct_probability(model, tokenizer, "Hence", "$"),
        ]
        assert rewards == pytest.approx(expected, rel=1e-4, abs=1e-7)

        conditional = ConditionalDenseReward(probability=dense.probability, unsolved_reward=-0.1)
        rewards = conditional(group_solved + group_unsolved, **columns)
        assert rewards == pytest.approx([1.0, p_the, 0.0, -0.1, -0.1], rel=1e-4, abs=1e-7)

    def test_correct_by_prefix(self, tiny):
        model, tokenizer = tiny
        target = " number such that"
        boundaries = doc_boundaries(tokenizer, target)
        by_prefix = get_reward_function("dense", model=model, tokenizer=tokenizer, correct="prefix")
        by_token = get_reward_function("dense", probability=by_prefix.probability)
        completion = [answer(" number wrong")]  # right first token, wrong tail
        columns = dict(target=[target], boundaries=[boundaries], context=["Let $x$ be a real"])
        assert by_token(completion, **columns) == [1.0]
        assert by_prefix(completion, **columns)[0] == pytest.approx(
            direct_probability(model, tokenizer, "Let $x$ be a real", " number"), rel=1e-4
        )

    def test_records_batch_and_record_the_options(self, tiny):
        model, tokenizer = tiny
        fn = get_reward_function("conditional-dense", model=model, tokenizer=tokenizer, batch_size=3)
        boundaries = doc_boundaries(tokenizer, " the answer")
        records = [
            {
                "context": c,
                "target": " the answer",
                "boundaries": boundaries,
                "completions": [answer(" the"), answer(" number")],
            }
            for c in self.CONTEXTS * 15
        ]
        out = list(score_rollouts(records, fn))
        assert len(out) == 45 and all(r["rewards"][0] == 1.0 for r in out)
        assert all(r["reward_options"] == {"correct": "first-token", "unsolved_reward": 0.0} for r in out)
        for r in out[:3]:
            assert r["rewards"][1] == pytest.approx(
                direct_probability(model, tokenizer, r["context"], " number"), rel=1e-4
            )


@pytest.mark.slow
def test_dense_on_the_builtin_model(builtin_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    model = AutoModelForCausalLM.from_pretrained(builtin_model_dir, dtype="float32").eval()
    fn = get_reward_function("dense", model=model, tokenizer=tokenizer, device="cpu")
    context = "The capital of France is"
    rewards = fn(
        [answer(" Paris"), answer(" London"), answer(" Paris")],
        target=[" Paris."] * 3,
        boundaries=[[6, 7]] * 3,
        context=[context] * 3,
    )
    assert rewards[0] == 1.0 and rewards[2] == 1.0
    assert rewards[1] == pytest.approx(direct_probability(model, tokenizer, context, " London"), rel=1e-3)
    paris = FirstTokenProbability(model, tokenizer)([(context, " Paris"), (context, " London")])
    assert paris[0] > paris[1]  # the context is really read


def test_training_scores_the_bytes_of_trls_completion_ids():
    """TRL hands a reward function `batch_decode`d texts, which drop the space of a SentencePiece
    word-initial token and turn part of a character into U+FFFD; with the policy's tokenizer the
    reward scores the bytes of `completion_ids` instead (rpt train's reward does: build_reward)."""
    from rpt_cli.training.config import TrainConfig
    from rpt_cli.training.run import build_reward
    from tests.conftest import build_byte_fallback_tokenizer

    tokenizer = build_byte_fallback_tokenizer()
    be, first_byte, eos = (tokenizer.convert_tokens_to_ids(t) for t in ("▁be", "<0xE6>", "</s>"))
    ids = [[be, eos], [first_byte, eos], [first_byte]]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)  # what TRL passes
    assert texts[0] == "be"
    columns = {"target": [" be 1", "日本", "日本"], "boundaries": [[3, 5], [1, 2, 3, 6], [3, 6]]}
    reward_fn, _ = build_reward(TrainConfig(answer="direct"), tokenizer)
    assert reward_fn(texts, completion_ids=ids, **columns) == [1.0, 1.0, 0.0]  # 0xE6 is no token of the last
    plain = get_reward_function("prefix", answer="direct")  # without the tokenizer: TRL's texts
    assert plain(texts, completion_ids=ids, **columns) == [0.0, 0.0, 0.0]
