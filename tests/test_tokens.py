"""Byte offsets of a document's own tokenization: exact, gap-free, for any Unicode text, on a
byte-level BPE tokenizer, a SentencePiece-style byte-fallback tokenizer and the built-in model's."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpt_cli.tokens import DocTokenizer
from tests.conftest import build_byte_fallback_tokenizer

TRICKY = [
    "",
    " ",
    "a",
    "😀",
    "  leading spaces",
    "tabs\tand\r\nCRLF\n",
    "日本語の数学",
    "👩‍👩‍👧 family",
    "café naïve",
    "\u0301combining first",
    "x" * 300,
    "mixed 数学 and math $x^2$ 😀\t",
]

texts = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "😀",
                "日本",
                " ",
                "\t",
                "\r\n",
                "é",
                "a",
                "$",
                "\\frac",
                "  ",
                "ß",
                "🇫🇷",
                "\U00040000",
                "\x04",
                "\x06",
                "/",
            ]
        ),
        max_size=30,
    ).map("".join),
)


@pytest.fixture(scope="module")
def byte_level(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def byte_fallback():
    return build_byte_fallback_tokenizer()


def check_offsets(tokenizer, text: str) -> None:
    doc_tokenizer = DocTokenizer(tokenizer)
    doc = doc_tokenizer([text])[0]
    data = text.encode("utf-8")
    assert doc.lead + doc.ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    whole_text_dropped = bool(data) and not doc.ids and doc.dropped == len(data)
    assert len(doc.offsets) == len(doc.ids) + 1 + whole_text_dropped
    assert doc.offsets[0] == 0 and doc.offsets[-1] == len(data)
    assert all(a < b for a, b in zip(doc.offsets, doc.offsets[1:]))
    # bytes no token of the vocabulary contains are dropped by the tokenizer itself
    missing = doc_tokenizer.missing or frozenset()
    assert doc.dropped == sum(byte in missing for byte in data)

    def seen(prefix: bytes) -> str:  # what the tokenizer can give back of a prefix of the text
        return bytes(x for x in prefix if x not in missing).decode("utf-8", errors="replace")

    # oracle: the tokenizer's own decoder. Decoding the first b tokens, wherever token b starts on
    # a character boundary, gives exactly the text up to our offset b (less the bytes it dropped).
    def first_space_dropped(s: str) -> str:  # SentencePiece decoders drop the text's opening space
        return s[1:] if s.startswith(" ") else s

    for b, offset in enumerate(doc.offsets):
        if offset == len(data) or (data[offset] & 0xC0) != 0x80:
            decoded = tokenizer.decode(doc.lead + doc.ids[:b])
            expected = seen(data[:offset])
            # a SentencePiece tokenizer reads a literal "▁" in the text as its own space marker
            readings = {expected, expected.replace("▁", " ")}
            assert decoded in readings | {first_space_dropped(r) for r in readings}


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_texts_byte_level(byte_level, text):
    check_offsets(byte_level, text)


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_texts_byte_fallback(byte_fallback, text):
    check_offsets(byte_fallback, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_text_byte_level(byte_level, text):
    check_offsets(byte_level, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_text_byte_fallback(byte_fallback, text):
    check_offsets(byte_fallback, text)


def test_a_character_split_across_tokens_is_split_exactly(byte_level):
    doc = DocTokenizer(byte_level)(["😀"])[0]
    assert len(doc.ids) > 1  # the tiny vocabulary has no emoji token: byte tokens
    assert doc.offsets[-1] == 4 and all(0 < o < 4 for o in doc.offsets[1:-1])


def test_special_prefix_is_found(byte_level, byte_fallback):
    assert DocTokenizer(byte_level).prefix == []  # adds nothing around a text
    from transformers import AutoTokenizer  # noqa: F401  (a tokenizer that adds BOS)

    byte_fallback.add_bos_token = True
    byte_fallback.update_post_processor()
    prefix = DocTokenizer(byte_fallback).prefix
    assert prefix == [byte_fallback.bos_token_id]


def test_bytes_the_vocabulary_lacks_stay_in_the_text(builtin_model_dir):
    """SmolLM2 has no token for the byte 0xf1 (first byte of U+40000..U+7FFFF) nor for some control
    bytes: its tokenizer drops them. The offsets still cover the text, the dropped bytes inside the
    span of the token that follows them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    doc_tokenizer = DocTokenizer(tokenizer)
    assert {0xF1, 0x04} <= doc_tokenizer.missing
    text = "a\U00040000b\x04"
    doc = doc_tokenizer([text])[0]
    data = text.encode("utf-8")
    assert doc.dropped == 2 and doc.offsets[-1] == len(data)
    spans = [data[a:b] for a, b in zip(doc.offsets, doc.offsets[1:])]
    assert b"".join(spans) == data
    assert any(span.startswith(b"\xf1") for span in spans)
    check_offsets(tokenizer, text)


def test_a_dropped_byte_between_bytes_that_merge(builtin_model_dir):
    """The tokenizer drops a byte before merging: "/\\x06/" is the single token "//", which spans
    the whole text with the dropped byte inside it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    doc_tokenizer = DocTokenizer(tokenizer)
    for text in ["/\x06/", "x = a/\x06/b", "\x06//\x06"]:
        doc = doc_tokenizer([text])[0]
        assert doc.dropped == text.count("\x06")
        assert doc.offsets[0] == 0 and doc.offsets[-1] == len(text.encode("utf-8"))
        check_offsets(tokenizer, text)
    assert doc_tokenizer(["/\x06/"])[0].offsets == [0, 3]


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_text_builtin_tokenizer(builtin_model_dir, text):
    from transformers import AutoTokenizer

    check_offsets(AutoTokenizer.from_pretrained(builtin_model_dir), text)
