"""Standard next-token prediction (`--mode ntp`): the model's most likely next token after each
context, scored by its bytes with Eq. 3."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from rpt_cli import paper
from rpt_cli.errors import SettingError
from rpt_cli.evaluate.samples import EvalSample, Outcome
from rpt_cli.forward import ForwardEngine
from rpt_cli.reward import prefix_match

DEFAULT_BATCH_TOKENS = 8192
DEFAULT_MAX_CONTEXT_TOKENS = paper.PROMPT_TOKENS  # capped by the model's own maximum
# --------------------------------------------------------------------------------------------
# ntp mode: the most likely next token, batched, sharing forward passes where exact
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One sequence of one forward pass, and the contexts whose next-token logits it yields:
    (sample index, context length in tokens). Logits at position p depend only on tokens ≤ p
    (causal attention), so a context whose token ids are a prefix of the row's gets exactly the
    logits its own pass would give, at position length - 1."""

    ids: list[int]
    members: list[tuple[int, int]] = field(default_factory=list)


def plan_rows(contexts_ids: Sequence[list[int]], doc_ids: Sequence | None = None, *, share: bool = True) -> list[Row]:
    """Forward-pass rows for the contexts, longest first. With `share`, a context whose ids are a
    prefix of a longer context of the same document (compared token by token, so a tokenization
    that differs at the seam, or a context cut from the left, gets its own row) rides along in
    that context's row instead of running on its own."""
    order = sorted(range(len(contexts_ids)), key=lambda i: -len(contexts_ids[i]))
    rows: list[Row] = []
    by_doc: dict = {}
    for i in order:
        ids = contexts_ids[i]
        doc = doc_ids[i] if doc_ids is not None else None
        candidates = by_doc.get(doc, []) if share and doc is not None else []
        for row in candidates:
            if row.ids[: len(ids)] == ids:
                row.members.append((i, len(ids)))
                break
        else:
            row = Row(list(ids), [(i, len(ids))])
            rows.append(row)
            if share and doc is not None:
                by_doc.setdefault(doc, []).append(row)
    return rows


def batch_rows(rows: Sequence[Row], batch_tokens: int) -> Iterator[list[Row]]:
    """Consecutive rows (longest first) whose padded size, rows × longest, fits `batch_tokens`
    (always at least one row)."""
    start = 0
    while start < len(rows):
        width = max(1, len(rows[start].ids))
        count = max(1, batch_tokens // width)
        yield list(rows[start : start + count])
        start += count


@dataclass(frozen=True)
class TokenPrediction:
    token_id: int
    data: bytes | None  # the token's exact bytes (maybe part of a character); None for a special token
    text: str | None  # those bytes as text; None for a special token or part of a character
    shared: bool  # the logits came from a longer context's forward pass


@dataclass
class PredictorStats:
    contexts: int = 0
    rows: int = 0  # forward-pass rows: fewer than contexts when passes are shared
    tokens: int = 0  # tokens run through the model (without padding)
    seconds: float = 0.0

    @property
    def positions_per_second(self) -> float:
        return self.contexts / self.seconds if self.seconds else 0.0


class NextTokenPlanner:
    """The model-free half of next-token prediction: contexts to token ids, forward-pass rows and
    batches, and each row's argmax tokens back to predictions in input order. NextTokenPredictor
    runs the batches with a loaded model; a Ray driver plans with this alone and lets its workers
    run them (evaluate/on_ray.py), so both pass the same batches.

    Contexts are tokenized on their own like documents (the tokenizer's special prefix such as
    BOS, then the context's tokens) and cut from the left to `max_context_tokens`, keeping the
    prefix.
    """

    def __init__(
        self,
        engine: ForwardEngine,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_context_tokens: int | None = None,
        share_passes: bool = True,
    ):
        if batch_tokens < 1:
            raise SettingError("batch_tokens", "{setting} must be at least 1")
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.batch_tokens = batch_tokens
        self.share_passes = share_passes
        self.prefix = self.engine.prefix
        self.token_bytes = self.engine.doc_tokenizer.table  # None when the pieces do not map to bytes
        self.max_context_tokens = self.engine.context_limit(max_context_tokens or DEFAULT_MAX_CONTEXT_TOKENS)
        if self.max_context_tokens <= len(self.prefix):
            raise SettingError(
                "max_context_tokens",
                f"{{setting}}={self.max_context_tokens} leaves no room for a context "
                f"after the tokenizer's {len(self.prefix)} special prefix token(s)",
            )
        self.pad_id = self.engine.pad_id
        self._special_ids = frozenset(self.tokenizer.all_special_ids)
        self.stats = PredictorStats()

    def predict_with(
        self,
        run: Callable[[list[list[Row]]], Iterator[list[list[int]]]],
        contexts: Sequence[str],
        doc_ids: Sequence | None = None,
        *,
        on_batch: Callable[[PredictorStats], None] | None = None,
    ) -> list[TokenPrediction]:
        """The most likely next token after each context, in input order, with `run` turning the
        planned batches into each row's members' argmax tokens, batch by batch, in order."""
        started = time.perf_counter()
        ids = self.context_ids(contexts)
        rows = plan_rows(ids, doc_ids, share=self.share_passes)
        batches = list(batch_rows(rows, self.batch_tokens))
        predictions: list[TokenPrediction | None] = [None] * len(contexts)
        for batch, best in zip(batches, run(batches)):
            for row, tokens in zip(batch, best):
                owner = row.members[0][0]  # the context the row was made for; the others ride along
                for (i, _), token in zip(row.members, tokens):
                    predictions[i] = TokenPrediction(token, *self.token_bytes_and_text(token), shared=i != owner)
            self.stats.rows += len(batch)
            self.stats.tokens += sum(len(row.ids) for row in batch)
            self.stats.contexts += sum(len(row.members) for row in batch)
            self.stats.seconds += time.perf_counter() - started
            started = time.perf_counter()
            if on_batch is not None:
                on_batch(self.stats)
        return predictions  # type: ignore[return-value]

    # -- tokens --------------------------------------------------------------------------------
    def context_ids(self, contexts: Sequence[str]) -> list[list[int]]:
        return self.engine.context_ids(contexts, self.max_context_tokens)

    def token_bytes_and_text(self, token_id: int) -> tuple[bytes | None, str | None]:
        """The token's exact bytes and those bytes as text. Bytes that are only part of a UTF-8
        character have no text but still score by Eq. 3, which compares bytes: the true next token
        can be part of a character too. Special tokens have neither."""
        if self.token_bytes is not None:
            data = self.token_bytes[token_id] if 0 <= token_id < len(self.token_bytes) else None
            if not data:
                return None, None
            try:
                return data, data.decode("utf-8")
            except UnicodeDecodeError:
                return data, None
        if token_id in self._special_ids:
            return None, None
        text = self.tokenizer.decode([token_id])  # tokenizers whose pieces do not map to bytes
        if not text or "\ufffd" in text:
            return None, None
        return text.encode("utf-8"), text


class NextTokenPredictor(NextTokenPlanner):
    """The argmax next token after each context, from batched forward passes of a loaded model.

    Rows are right padded, so every real position sees exactly its own prefix. Only the hidden
    states at the wanted positions go through the output layer: a whole sequence's
    vocabulary-sized logits are the largest tensor a forward pass makes and are not needed.
    """

    def __init__(
        self,
        model,
        tokenizer,
        device=None,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_context_tokens: int | None = None,
        share_passes: bool = True,
    ):
        engine = ForwardEngine(model, tokenizer, device)
        super().__init__(
            engine, batch_tokens=batch_tokens, max_context_tokens=max_context_tokens, share_passes=share_passes
        )
        self.model, self.device = model, engine.device
        self._split = self._decoder_and_head()

    # -- forward passes ------------------------------------------------------------------------
    def _decoder_and_head(self):
        """(decoder, output layer) when the model's logits are its output layer applied to its
        decoder's last hidden states, up to an order-preserving transform (scaling, soft-capping),
        so the argmax of the output layer at a few positions is the model's argmax. Checked once
        on a probe; any other architecture uses the model's own logits."""
        import torch

        split = self.engine.decoder_and_head()
        if split is None:
            return None
        decoder, head = split
        probe = self.engine.probe_ids()
        try:
            with torch.inference_mode():
                expected = self.model(input_ids=probe, use_cache=False).logits[0].argmax(-1)
                got = head(decoder(input_ids=probe, use_cache=False).last_hidden_state[0]).argmax(-1)
        except Exception:  # noqa: BLE001 - an unusual model: fall back to its own logits
            return None
        return split if torch.equal(expected, got) else None

    def argmax(self, rows: Sequence[Row]) -> list[list[int]]:
        """The argmax token of every member of every row of one batch."""
        import torch

        input_ids, mask, _ = self.engine.batch([row.ids for row in rows])
        row_index = [r for r, row in enumerate(rows) for _ in row.members]
        positions = [length - 1 for row in rows for _, length in row.members]
        with torch.inference_mode():
            if self._split is not None:
                decoder, head = self._split
                hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
                index = torch.tensor(row_index, device=self.device), torch.tensor(positions, device=self.device)
                best = head(hidden[index]).argmax(-1).tolist()
            else:
                best = self.engine.logits_at(input_ids, mask, row_index, positions).argmax(-1).tolist()
        out: list[list[int]] = []
        k = 0
        for row in rows:
            out.append(best[k : k + len(row.members)])
            k += len(row.members)
        return out

    def predict(
        self,
        contexts: Sequence[str],
        doc_ids: Sequence | None = None,
        *,
        on_batch: Callable[[PredictorStats], None] | None = None,
    ) -> list[TokenPrediction]:
        """The most likely next token after each context, in input order. `doc_ids` (one per
        context) names the documents whose contexts may share forward passes."""
        return self.predict_with(
            lambda batches: (self.argmax(batch) for batch in batches), contexts, doc_ids, on_batch=on_batch
        )


def evaluate_ntp(
    samples: Sequence[EvalSample],
    predictor: NextTokenPredictor,
    *,
    on_batch: Callable[[PredictorStats], None] | None = None,
) -> tuple[list[Outcome], list[dict]]:
    """Outcomes and per-sample details of standard next-token prediction."""
    predictions = predictor.predict([s.context for s in samples], [s.doc_id for s in samples], on_batch=on_batch)
    outcomes, details = [], []
    for sample, prediction in zip(samples, predictions):
        reward = prefix_match(prediction.data, sample.truth.target, sample.truth.boundaries)
        outcomes.append(
            Outcome(accuracy=reward, solved=reward == 1.0, reward=reward, no_prediction=float(prediction.data is None))
        )
        details.append(
            {
                "prediction": prediction.text,
                "token_id": prediction.token_id,
                "correct": reward == 1.0,
                "reward": reward,
                "shared_pass": prediction.shared,
            }
        )
    return outcomes, details
