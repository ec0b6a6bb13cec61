"""Byte offsets of a document's own tokenization: exact, gap-free, for any Unicode text, on a
byte-level BPE tokenizer, a SentencePiece-style byte-fallback tokenizer and the built-in model's."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpt_cli.tokens import DocTokenizer
from tests.conftest import build_byte_fallback_tokenizer

TRICKY = ["", " ", "a", "😀", "  leading spaces", "tabs\tand\r\nCRLF\n", "日本語の数学", "👩‍👩‍👧 family",
          "café naïve", "\u0301combining first", "x" * 300, "mixed 数学 and math $x^2$ 😀\t"]

texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(["😀", "日本", " ", "\t", "\r\n", "é", "a", "$", "\\frac", "  ", "ß", "🇫🇷"]),
             max_size=30).map("".join),
)


@pytest.fixture(scope="module")
def byte_level(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def byte_fallback():
    return build_byte_fallback_tokenizer()


def check_offsets(tokenizer, text: str) -> None:
    doc = DocTokenizer(tokenizer)([text])[0]
    data = text.encode("utf-8")
    assert doc.lead + doc.ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(doc.offsets) == len(doc.ids) + 1
    assert doc.offsets[0] == 0 and doc.offsets[-1] == len(data)
    assert all(a < b for a, b in zip(doc.offsets, doc.offsets[1:]))
    # oracle: the tokenizer's own decoder. Decoding the first b tokens, wherever token b starts on
    # a character boundary, gives exactly the text up to our offset b.
    def first_space_dropped(s: str) -> str:  # SentencePiece decoders drop the text's opening space
        return s[1:] if s.startswith(" ") else s

    for b, offset in enumerate(doc.offsets):
        if offset == len(data) or (data[offset] & 0xC0) != 0x80:
            decoded = tokenizer.decode(doc.lead + doc.ids[:b])
            expected = data[:offset].decode("utf-8")
            assert decoded == expected or decoded == first_space_dropped(expected)


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


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_text_builtin_tokenizer(builtin_model_dir, text):
    from transformers import AutoTokenizer

    check_offsets(AutoTokenizer.from_pretrained(builtin_model_dir), text)
