"""Exact UTF-8 bytes of tokens: the bridge between a tokenizer's ids and the byte-level reward.

Offsets and boundaries are byte positions in the document's own tokenization (records.md §2, §3).
Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM) and SentencePiece with byte fallback map every token
to exact bytes; other tokenizers fall back to character offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rpt_cli.errors import RecordError


def _byte_level_alphabet() -> dict[str, int]:
    """The printable-character alphabet of byte-level BPE (GPT-2 and its descendants): bytes that
    are printable map to the same code point, the others to code points from 256 upwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    char_to_byte = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            char_to_byte[chr(256 + extra)] = b
            extra += 1
    return char_to_byte


def _decoder_kind(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return "unknown"
    text = repr(backend.decoder)
    if "ByteLevel" in text:
        return "byte-level"
    if "ByteFallback" in text or "Metaspace" in text or "▁" in text:
        return "sentencepiece"
    return "unknown"


def token_byte_table(tokenizer) -> list[bytes | None] | None:
    """bytes of every token id (None for special tokens), or None when the tokenizer's pieces
    cannot be mapped to bytes (then character offsets are used instead)."""
    kind = _decoder_kind(tokenizer)
    if kind == "unknown":
        return None
    vocab_size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    special_ids = set(tokenizer.all_special_ids)
    added = {tid: tok for tid, tok in tokenizer.added_tokens_decoder.items()}
    alphabet = _byte_level_alphabet() if kind == "byte-level" else None
    table: list[bytes | None] = []
    for tid, piece in enumerate(pieces):
        if (
            alphabet is None
            and piece is not None
            and len(piece) == 6
            and piece.startswith("<0x")
            and piece.endswith(">")
        ):
            table.append(bytes([int(piece[3:5], 16)]))  # byte fallback, even if marked special
        elif piece is None or tid in special_ids or (tid in added and added[tid].special):
            table.append(None)
        elif tid in added:  # a non-special added token stands for its literal text
            table.append(added[tid].content.encode("utf-8"))
        elif alphabet is not None:
            try:
                table.append(bytes(alphabet[ch] for ch in piece))
            except KeyError:
                table.append(piece.encode("utf-8"))
        else:
            table.append(piece.replace("▁", " ").encode("utf-8"))
    return table


def generated_bytes(table: list[bytes | None], ids) -> bytes:
    """The exact bytes of generated tokens `ids`: what the model wrote, byte for byte. Special
    tokens (an end-of-sequence token, ids past the tokenizer's vocabulary) stand for no bytes.
    Unlike `tokenizer.decode`, a SentencePiece word-initial "▁" keeps its space and a token that
    is part of a UTF-8 character keeps its bytes."""
    size = len(table)
    return b"".join(table[i] for i in ids if 0 <= i < size and table[i] is not None)


@dataclass
class TokenizedDoc:
    ids: list[int]  # the document's own tokens (no special tokens)
    offsets: list[int]  # n + 1 byte offsets into the UTF-8 text (see tokenize_exact for one exception)
    # tokens the tokenizer put before the text that stand for no byte of it: SentencePiece's
    # added prefix space when it is a token of its own ("▁" before a byte-fallback character).
    # They are context for the first token, like BOS, not tokens of the document.
    lead: list[int] = field(default_factory=list)
    # bytes of the text the tokenizer dropped because its vocabulary has no token for them (e.g.
    # SmolLM2 has no token for the byte 0xf1). They stay in the text, inside the next token's span.
    dropped: int = 0
    # the pre-tokenizer's word of each token (None for special tokens), when asked for and known:
    # tokens never cross a word, so a word's tokens do not depend on the text after it.
    words: list[int | None] | None = None


def _char_to_byte_offsets(text: str) -> list[int]:
    out, pos = [0], 0
    for ch in text:
        pos += len(ch.encode("utf-8"))
        out.append(pos)
    return out


def _offsets_from_chars(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Fallback for tokenizers whose pieces do not map to bytes: token i starts where its
    character span starts. Kept strictly increasing so every token covers at least one byte."""
    char_bytes = _char_to_byte_offsets(text)
    total = char_bytes[-1]
    offsets = [0]
    for start, _ in spans[1:]:
        offsets.append(min(max(char_bytes[start], offsets[-1] + 1), total))
    offsets.append(total)
    if any(b <= a for a, b in zip(offsets, offsets[1:])):
        raise RecordError("the tokenizer's offsets cannot be mapped to bytes for this text")
    return offsets


def missing_bytes(table: list[bytes | None] | None) -> frozenset[int] | None:
    """The byte values no token contains: a tokenizer drops them from any text."""
    if table is None:
        return None
    present = set()
    for piece in table:
        if piece:
            present.update(piece)
    return frozenset(set(range(256)) - present)


def _align_with_dropped_bytes(data: bytes, pieces: list[bytes], missing: frozenset[int]) -> list[int] | None:
    """Offsets of `pieces` in `data` when the tokenizer skipped bytes it has no token for. It skips
    them before merging, so the bytes around a skipped one can end up in one token ("/\\x06/" is the
    single token "//"). The pieces must concatenate to the text less those bytes; a skipped run
    between two tokens joins the token after it, a trailing run the last token, so the offsets
    still cover the text byte for byte. None when the pieces do not align that way."""
    if not pieces:
        return None
    kept = [pos for pos, byte in enumerate(data) if byte not in missing]  # where each seen byte is
    if b"".join(pieces) != bytes(data[pos] for pos in kept):
        return None
    offsets, seen = [0], 0
    for piece in pieces[:-1]:
        seen += len(piece)
        offsets.append(kept[seen - 1] + 1)  # right after the token's last seen byte
    offsets.append(len(data))
    return offsets


def tokenize_exact(
    text: str,
    ids: list[int],
    table: list[bytes | None] | None,
    spans: list[tuple[int, int]] | None,
    table_missing: frozenset[int] | None = None,
) -> TokenizedDoc:
    """Byte offsets of the tokens `ids` of `text`: exact when the token bytes concatenate back to
    the text (byte-level BPE, SentencePiece with byte fallback), else from character offsets."""
    data = text.encode("utf-8")
    lead: list[int] = []
    if table is not None:
        pieces = [table[i] if table[i] is not None else b"" for i in ids]
        joined = b"".join(pieces)
        if joined != data and pieces and joined == b" " + data and pieces[0].startswith(b" "):
            # SentencePiece added a prefix space ("▁") that is not in the text
            if pieces[0] == b" ":
                lead, ids, pieces = ids[:1], ids[1:], pieces[1:]
            else:
                pieces[0] = pieces[0][1:]
            joined = data
        if joined == data and all(pieces):
            offsets = [0]
            for piece in pieces:
                offsets.append(offsets[-1] + len(piece))
            return TokenizedDoc(list(ids), offsets, lead)
        if all(pieces) and table_missing is not None:
            aligned = _align_with_dropped_bytes(data, pieces, table_missing)
            if aligned is not None:
                return TokenizedDoc(list(ids), aligned, lead, len(data) - len(joined))
    if not ids:
        if data and table_missing is not None and all(byte in table_missing for byte in data):
            # the tokenizer drops the whole text: one span the model never sees, so the offsets
            # still cover the text (the only case with no token for a span)
            return TokenizedDoc([], [0, len(data)], lead, len(data))
        return TokenizedDoc([], [0])
    if spans is None:
        raise RecordError("cannot compute byte offsets: the tokenizer gives neither token bytes nor offsets")
    return TokenizedDoc(list(ids), _offsets_from_chars(text, spans))


class DocTokenizer:
    """Tokenize documents into their own tokens plus the special prefix (e.g. BOS) the tokenizer
    puts in front, with exact byte offsets."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.table = token_byte_table(tokenizer)
        self.missing = missing_bytes(self.table)
        self.prefix = self._special_prefix()

    def _special_prefix(self) -> list[int]:
        probe = "a"
        with_special = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        plain = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        for start in range(len(with_special) - len(plain) + 1):
            if with_special[start : start + len(plain)] == plain:
                return list(with_special[:start])
        return []

    def __call__(self, texts: list[str], *, words: bool = False) -> list[TokenizedDoc]:
        """The documents' tokens and byte offsets; with `words`, each token's pre-tokenizer word
        too (fast tokenizers only; left None otherwise)."""
        is_fast = bool(getattr(self.tokenizer, "is_fast", False))
        need_spans = self.table is None or not is_fast
        # text is text: a special token's string in a document is ordinary tokens, not the control token
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=is_fast, split_special_tokens=True)
        docs = []
        for k, text in enumerate(texts):
            ids = list(enc["input_ids"][k])
            spans = enc["offset_mapping"][k] if "offset_mapping" in enc else None
            try:
                doc = tokenize_exact(text, ids, self.table, spans, self.missing)
            except RecordError:
                if need_spans:
                    raise
                doc = tokenize_exact(text, ids, None, spans)
            if words and is_fast and len(ids) == len(doc.lead) + len(doc.ids):
                doc.words = list(enc.word_ids(k))[len(doc.lead) :]
            docs.append(doc)
        return docs
