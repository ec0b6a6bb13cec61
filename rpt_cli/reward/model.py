"""The model-based pieces of the reward variants; torch and transformers are imported here only."""

from __future__ import annotations

from collections.abc import Sequence

from rpt_cli.errors import RecordError
from rpt_cli.reward.truth import _encodable

# --------------------------------------------------------------------------------------------
# Model-based pieces (torch and transformers imported here only)
# --------------------------------------------------------------------------------------------


class FirstTokens:
    """The first token of each prediction in a tokenizer's own tokenization of the prediction
    alone, as (token id, exact bytes), or None when there is none (no prediction, an unpaired
    surrogate, or bytes the tokenizer cannot account for)."""

    def __init__(self, tokenizer, *, cache_size: int = 65536):
        from rpt_cli.tokens import DocTokenizer

        self.tokenizer = tokenizer
        self.doc_tokenizer = DocTokenizer(tokenizer)
        self._cache: dict[str, tuple[int, bytes] | None] = {}
        self._cache_size = cache_size

    def __call__(self, predictions: Sequence[str | bytes | None]) -> list[tuple[int, bytes] | None]:
        # a direct answer's exact bytes are tokenized as their text; bytes that are only part of
        # a UTF-8 character have no tokenization of their own, so no first token
        predictions = [_text_or_none(p) if isinstance(p, bytes) else p for p in predictions]
        todo = sorted({p for p in predictions if p and p not in self._cache})
        if todo:
            if len(self._cache) + len(todo) > self._cache_size:
                self._cache.clear()
            for text in todo:
                self._cache[text] = None
            encodable = [t for t in todo if _encodable(t)]
            for text, first in zip(encodable, self._tokenize(encodable)):
                self._cache[text] = first
        return [self._cache.get(p) if p else None for p in predictions]

    def _tokenize(self, texts: list[str]) -> list[tuple[int, bytes] | None]:
        if not texts:
            return []
        try:
            docs = self.doc_tokenizer(texts)
        except RecordError:  # one odd text spoils a batch: retry one by one
            return [self._tokenize([t])[0] if len(texts) > 1 else None for t in texts]
        out = []
        for text, doc in zip(texts, docs):
            if not doc.ids or len(doc.offsets) < 2 or doc.dropped:
                out.append(None)
                continue
            data = text.encode("utf-8")
            out.append((doc.ids[0], data[doc.offsets[0] : doc.offsets[1]]))
        return out


def _text_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class FirstTokenProbability:
    """P(first token of the prediction | context) from a causal language model.

    Takes (model, tokenizer, device) so the training stage can pass the live policy. The context
    is tokenized like a document (the tokenizer's special prefix such as BOS, then its own tokens,
    cut from the left to `max_context_tokens`), each distinct context runs through the model once,
    `batch_size` contexts per forward pass (left padded, explicit positions), and the softmax of
    the last position is read at the prediction's first token id. The model's train/eval mode is
    left as it is; gradients are off.
    """

    def __init__(
        self,
        model,
        tokenizer,
        device=None,
        *,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        first_tokens: FirstTokens | None = None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        from rpt_cli.forward import ForwardEngine

        self.engine = ForwardEngine(model, tokenizer, device)
        self.model, self.tokenizer, self.device = model, tokenizer, self.engine.device
        self.batch_size = batch_size
        self.max_context_tokens = self.engine.context_limit(max_context_tokens)
        self.first_tokens = first_tokens or FirstTokens(tokenizer)

    def context_ids(self, context: str) -> list[int]:
        return self.engine.context_ids([context], self.max_context_tokens)[0]

    def __call__(self, pairs: Sequence[tuple[str, str | bytes | None]]) -> list[float]:
        firsts = self.first_tokens([prediction for _, prediction in pairs])
        wanted: dict[str, set[int]] = {}
        for (context, _), first in zip(pairs, firsts):
            if first is not None:
                wanted.setdefault(context, set()).add(first[0])
        table = self._probabilities(wanted)
        return [
            table[context].get(first[0], 0.0) if first is not None else 0.0
            for (context, _), first in zip(pairs, firsts)
        ]

    def _probabilities(self, wanted: dict[str, set[int]]) -> dict[str, dict[int, float]]:
        import torch

        encoded = sorted(((self.context_ids(c), c) for c in wanted), key=lambda item: len(item[0]))
        table: dict[str, dict[int, float]] = {}
        with torch.inference_mode():
            for start in range(0, len(encoded), self.batch_size):
                chunk = [item for item in encoded[start : start + self.batch_size] if item[0]]
                for _, context in encoded[start : start + self.batch_size]:
                    table[context] = {}
                if not chunk:
                    continue
                # left padded: every row's last position is its context's last token
                input_ids, mask, positions = self.engine.batch([ids for ids, _ in chunk], left=True)
                last = self.engine.logits_at(
                    input_ids, mask, range(len(chunk)), [input_ids.shape[1] - 1] * len(chunk), position_ids=positions
                )
                probs = last.float().softmax(-1).cpu()
                for row, (_, context) in enumerate(chunk):
                    table[context] = {
                        tid: float(probs[row, tid]) for tid in wanted[context] if 0 <= tid < probs.shape[-1]
                    }
        return table
