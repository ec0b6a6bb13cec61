"""One forward engine for the three places that run a loaded causal LM without generating:
`rpt entropy` (top-k entropy of every position), `rpt eval --mode ntp` (the argmax next token) and
the dense rewards (P(first token | context)).

What they share lives here, once: the pad id, the model's maximum positions, contexts tokenized
like documents (the tokenizer's special prefix such as BOS, then the text's own tokens, special
tokens' strings as plain text) and cut from the left, padded batches, and the split of the model
into its decoder and output head, so only the wanted positions' hidden states go through the head
(a whole sequence's vocabulary-sized logits are the largest tensor a forward pass makes).

torch is imported inside the methods that need it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rpt_cli import paper
from rpt_cli.tokens import DocTokenizer

# the paper's prompt limit, for models that do not say how many positions they have
DEFAULT_MAX_POSITIONS = paper.PROMPT_TOKENS
PROBE_TEXT = "Let $x$ be a real number such that x^2 = 4. Hence x = 2 or x = -2, and"


def model_max_positions(model) -> int | None:
    """The positions the model was built for (`max_position_embeddings` of its text config), or
    None when it does not say."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if value else None


def config_max_positions(source: str, *, trust_remote_code: bool = False) -> int | None:
    """`model_max_positions` from a model folder's configuration alone, before (or without) loading
    its weights: what a Ray driver needs to cut the same windows and contexts as its workers."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    value = getattr(config.get_text_config(), "max_position_embeddings", None)
    return int(value) if value else None


def pad_token_id(tokenizer) -> int:
    """The id padded positions get: never attended to, so any token will do; the tokenizer's pad
    token, else its end of sequence, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


class ForwardEngine:
    """A loaded causal LM (eval mode, on its device) as the forward-pass stages use it."""

    def __init__(self, model, tokenizer, device=None, *, max_positions: int | None = None):
        """`model` None: the tokenizer side only (contexts, batches on the CPU), with the model's
        `max_positions` given; what plans work that runs elsewhere."""
        self.model = model
        self.tokenizer = tokenizer
        if model is None:
            self.device, self.max_positions = device or "cpu", max_positions
        else:
            self.device = device if device is not None else next(model.parameters()).device
            self.max_positions = model_max_positions(model)
        self.doc_tokenizer = DocTokenizer(tokenizer)
        self.prefix: list[int] = list(self.doc_tokenizer.prefix)
        self.pad_id = pad_token_id(tokenizer)

    def context_limit(self, wanted: int | None) -> int:
        """Tokens a context may keep: `wanted` (default: the paper's 4096), at most the model's
        positions."""
        wanted = wanted or DEFAULT_MAX_POSITIONS
        return min(wanted, self.max_positions) if self.max_positions else wanted

    def context_ids(self, contexts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Each context tokenized like a document (special prefix, then its own tokens, special
        tokens' strings split into ordinary tokens) and cut from the left to `max_tokens`, keeping
        the prefix. An empty context with no prefix starts from the begin- or end-of-sequence token."""
        if not contexts:
            return []
        encoded = self.tokenizer(list(contexts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
        start = next(
            (i for i in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id) if i is not None), self.pad_id
        )
        out = []
        for ids in encoded:
            ids = self.prefix + list(ids)
            if not ids:
                ids = [start]
            if len(ids) > max_tokens:
                keep = max_tokens - len(self.prefix)
                ids = self.prefix + ids[len(ids) - keep :] if keep > 0 else ids[-max_tokens:]
            out.append(ids)
        return out

    def batch(self, rows: Sequence[Sequence[int]], *, left: bool = False):
        """(input_ids, attention_mask, position_ids) on the device for rows of token ids, padded on
        the right (every real position sees exactly its own prefix) or on the left (the last
        position of every row is its last token; explicit positions keep them right)."""
        import torch

        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            input_ids[r, span] = torch.tensor(list(row), dtype=torch.long)
            mask[r, span] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def decoder_and_head(self):
        """(decoder, output layer) of a model whose logits are its output layer applied to its
        decoder's last hidden states, else None. Whether the head alone gives the model's own
        answer (no post-processing in between) is for the caller to check on `probe_ids`."""
        decoder = getattr(self.model, "base_model", None)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if decoder is None or decoder is self.model or head is None:
            return None
        return decoder, head

    def probe_ids(self):
        """A short text as one batch row, for the checks `decoder_and_head` leaves to callers."""
        import torch

        ids = self.context_ids([PROBE_TEXT], self.context_limit(None))[0]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def logits_at(self, input_ids, mask, rows, columns, *, position_ids=None):
        """The model's own logits at positions (rows[i], columns[i]) of a batch, asking the model
        for those columns alone where it allows (`logits_to_keep`)."""
        import torch

        wanted = sorted(set(int(c) for c in columns))
        index = {c: i for i, c in enumerate(wanted)}
        extra = {"position_ids": position_ids} if position_ids is not None else {}
        try:
            logits = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                use_cache=False,
                logits_to_keep=torch.tensor(wanted, device=self.device),
                **extra,
            ).logits
            picked = torch.tensor([index[int(c)] for c in columns], dtype=torch.long, device=self.device)
        except TypeError:  # a model without logits_to_keep: all of them
            logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False, **extra).logits
            picked = torch.as_tensor(list(columns), dtype=torch.long, device=self.device)
        return logits[torch.as_tensor(list(rows), dtype=torch.long, device=self.device), picked]


__all__ = ["DEFAULT_MAX_POSITIONS", "ForwardEngine", "model_max_positions", "pad_token_id"]
