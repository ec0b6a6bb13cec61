"""`rpt entropy`: per-position top-k entropy of a proxy model, with exact UTF-8 byte offsets.

For token i of a document, `entropy[i]` is the entropy (nats) of the proxy model's next-token
distribution restricted to its k most likely tokens and renormalized, when predicting token i from
tokens < i (paper, Section 3.3: k = 16). The top-k renormalized entropy needs only the k largest
logits, so the full-vocabulary softmax is never computed: the output head runs on the hidden states
of the positions that are scored, in chunks, followed by `topk`.

Documents are tokenized in chunks, cut into overlapping windows when longer than the model's
window, packed into batches by token count (longest first, right padding), and emitted in input
order, so memory depends on the chunk size and never on the corpus size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from rpt_cli import paper
from rpt_cli.errors import SettingError
from rpt_cli.forward import ForwardEngine
from rpt_cli.tokens import TokenizedDoc
from rpt_cli.topk import topk_by_blocks

DEFAULT_TOP_K = paper.ENTROPY_TOP_K
ENTROPY_DECIMALS = 5


# ---------------------------------------------------------------------------------------------
# Windows and batches
# ---------------------------------------------------------------------------------------------


@dataclass
class Segment:
    doc: int  # index of the document in the chunk
    start: int  # first token of the window (document token index)
    end: int  # one past the last token of the window
    score_from: int  # first token whose entropy this window provides

    def __len__(self) -> int:
        return self.end - self.start


def windows(n_tokens: int, body: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, score_from) windows of at most `body` tokens covering 0..n; every window after
    the first starts `overlap` tokens before the last one ended, so each scored position sees at
    least `overlap` tokens of real context (or all of it, near the start)."""
    if n_tokens <= body:
        return [(0, n_tokens, 0)]
    out, start, end = [(0, body, 0)], 0, body
    while end < n_tokens:
        start = end - overlap
        new_end = min(start + body, n_tokens)
        out.append((start, new_end, end))
        end = new_end
    return out


def pack_batches(segments: list[Segment], prefix_len: int, batch_tokens: int) -> list[list[Segment]]:
    """Greedy packing, longest first, so that rows × padded length stays within `batch_tokens`."""
    ordered = sorted(segments, key=len, reverse=True)
    batches: list[list[Segment]] = []
    for seg in ordered:
        if batches:
            batch = batches[-1]
            width = len(batch[0]) + prefix_len
            if (len(batch) + 1) * width <= batch_tokens:
                batch.append(seg)
                continue
        batches.append([seg])
    return batches


# ---------------------------------------------------------------------------------------------
# The scorer
# ---------------------------------------------------------------------------------------------


FLOAT32_ROWS = 256  # rows of full logits upcast at a time (bounds the float32 copy)


def topk_entropy(logits, k: int, transform: Callable | None = None):
    """Entropy (nats, float32) of the softmax over the k largest logits of each row. The top k
    are taken in float32, as the output-layer path takes its values (`head_topk_entropy`): half
    precision logits are upcast a block of rows at a time before the selection, so both paths
    select and compute in one precision."""
    import torch

    flat = logits.reshape(-1, logits.shape[-1])
    parts = [entropy_of_values(topk_by_blocks(rows.float(), k)[0], transform) for rows in flat.split(FLOAT32_ROWS)]
    out = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(logits.shape[:-1])


def entropy_of_values(values, transform: Callable | None = None):
    """Entropy (nats) of the softmax over each row of float32 logit values."""
    import torch

    if transform is not None:
        values = transform(values)
    logp = values - torch.logsumexp(values, dim=-1, keepdim=True)
    return -(logp.exp() * logp).sum(dim=-1)


def head_topk_entropy(head, hidden, k: int, transform: Callable | None = None):
    """Top-k entropy (float32) of `head(hidden)`, a linear output layer on hidden states.

    The output layer runs in the model's dtype to find each row's k largest logits; in a half
    precision model those k logits are then recomputed in float32 from the same hidden states
    and weight rows (k dot products a row), so the entropy carries no bfloat16 rounding of the
    logits themselves: a bfloat16 model's splits then differ from its float32 run's only by the
    model's own error in the hidden states."""
    import torch

    logits = head(hidden)
    if logits.dtype == torch.float32:
        return topk_entropy(logits, k, transform)
    index = topk_by_blocks(logits, k)[1]
    values = torch.einsum("rh,rkh->rk", hidden.float(), head.weight[index].float())
    if getattr(head, "bias", None) is not None:
        values = values + head.bias[index].float()
    return entropy_of_values(values, transform)


def _logit_transform(config) -> Callable | None:
    """Monotone post-processing some architectures apply to logits; applied to the top-k values
    (monotone maps keep the same top k)."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divide = getattr(config, "logits_scaling", None)
    steps = []
    if scale not in (None, 1, 1.0):
        steps.append(lambda v: v * scale)
    if divide not in (None, 1, 1.0):
        steps.append(lambda v: v / divide)
    if cap:
        import torch

        steps.append(lambda v: torch.tanh(v / cap) * cap)
    if not steps:
        return None

    def apply(v):
        for step in steps:
            v = step(v)
        return v

    return apply


@dataclass
class ScoreStats:
    documents: int = 0
    tokens: int = 0
    seconds: float = 0.0
    dropped_bytes: int = 0  # bytes the tokenizer has no token for: kept in the text, unseen
    dropped_documents: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def chunk_tokens_for(batch_tokens: int, window: int) -> int:
    """Tokens a chunk of documents holds, about: 16 batches. The chunks are the unit of work of one
    process and of a Ray worker alike (`document_chunks`), so both score the same batches."""
    return 16 * max(batch_tokens, window)


def document_chunks(docs: Iterable[dict], text_field: str, chunk_tokens: int) -> Iterator[list[dict]]:
    """The documents in consecutive chunks of about `chunk_tokens` tokens (4 bytes a token) or
    4,096 documents, whichever comes first: scored together, then written."""
    chunk: list[dict] = []
    chunk_bytes = 0
    limit = 4 * chunk_tokens
    for doc in docs:
        chunk.append(doc)
        chunk_bytes += len(doc[text_field])
        if chunk_bytes >= limit or len(chunk) >= 4096:
            yield chunk
            chunk, chunk_bytes = [], 0
    if chunk:
        yield chunk


class WindowedScorer:
    """What every entropy engine shares: documents tokenized by the model's DocTokenizer, cut into
    the same windows, packed into the same batches, and the entropies put back at the same token
    positions. An engine provides `_row_entropies`: the entropies of given positions of rows of
    token ids."""

    name = "hf"

    def _set_windows(self, window: int, overlap: int | None, batch_tokens: int, chunk_tokens: int | None) -> None:
        self.window = window
        body = self.window - len(self.prefix)
        self.overlap = overlap if overlap is not None else body // 4
        if body < 2 or not 0 <= self.overlap < body:
            raise SettingError("overlap", f"{{setting}} must be between 0 and the window minus one ({body - 1})")
        self.body = body
        self.batch_tokens = max(batch_tokens, self.window)
        self.chunk_tokens = chunk_tokens or chunk_tokens_for(batch_tokens, self.window)
        self.stats = ScoreStats()

    def _check_top_k(self, top_k: int, vocab: int) -> None:
        if not 1 <= top_k <= vocab:
            raise SettingError("entropy_top_k", f"{{setting}} must be between 1 and the vocabulary size ({vocab})")
        self.top_k = top_k

    def _row_entropies(self, rows: list[list[int]], spans: list[tuple[int, int]]) -> list[float]:
        """For each row of token ids and its (first, last), the top-k entropies of the next-token
        distributions at row positions first … last - 1 (position j predicts token j + 1), all rows
        concatenated."""
        raise NotImplementedError

    def _batches(self, segments: list[Segment]) -> list[list[Segment]]:
        return pack_batches(segments, len(self.prefix), self.batch_tokens)

    def close(self) -> None:
        """Free an engine that holds more than a model (vLLM's processes); the hf one holds none."""

    def _run_batch(self, batch: list[Segment], docs: list[TokenizedDoc], results: list[list]):
        rows = [
            self.prefix + (docs[seg.doc].lead if seg.start == 0 else []) + docs[seg.doc].ids[seg.start : seg.end]
            for seg in batch
        ]
        spans, context = [], []  # context: tokens before the window's first document token, per row
        for seg, tokens in zip(batch, rows):
            p = len(tokens) - len(seg)
            context.append(p)
            # position j of a row predicts its token j + 1
            spans.append((max(0, p + seg.score_from - seg.start - 1), p + seg.end - seg.start - 1))
        values = self._row_entropies(rows, spans)
        cursor = 0
        for seg, p in zip(batch, context):
            first_token = seg.score_from if (p > 0 or seg.score_from > seg.start) else seg.start + 1
            count = seg.end - first_token
            target = results[seg.doc]
            for j, value in enumerate(values[cursor : cursor + count]):
                target[first_token + j] = round(value, ENTROPY_DECIMALS)
            cursor += count

    def score_texts(self, texts: list[str]) -> list[tuple[list[int], list[float | None]]]:
        """(offsets, entropy) for each text, in order."""
        started = time.perf_counter()
        docs = self.doc_tokenizer(texts)
        # one entry per span of the offsets: a text the tokenizer drops whole is one unscored span
        results: list[list[float | None]] = [[None] * (len(d.offsets) - 1) for d in docs]
        segments = [
            Segment(k, s, e, f)
            for k, d in enumerate(docs)
            for s, e, f in windows(len(d.ids), self.body, self.overlap)
            if e > s
        ]
        for batch in self._batches(segments):
            self._run_batch(batch, docs, results)
        self.stats.documents += len(texts)
        self.stats.tokens += sum(len(d.ids) for d in docs)
        self.stats.dropped_bytes += sum(d.dropped for d in docs)
        self.stats.dropped_documents += sum(d.dropped > 0 for d in docs)
        self.stats.seconds += time.perf_counter() - started
        return [(d.offsets, r) for d, r in zip(docs, results)]

    def score(
        self,
        docs: Iterable[dict],
        text_field: str = "text",
        *,
        model_name: str = "",
        on_chunk: Callable[[ScoreStats], None] | None = None,
    ) -> Iterator[dict]:
        """Add offsets, entropy, entropy_model, entropy_top_k and tokenizer (the identity of the
        tokenizer the offsets come from, boundaries.py) to each document, in input order."""
        for chunk in document_chunks(docs, text_field, self.chunk_tokens):
            yield from self.score_chunk(chunk, text_field, model_name)
            if on_chunk:
                on_chunk(self.stats)

    def score_chunk(self, chunk: list[dict], text_field: str, model_name: str) -> list[dict]:
        """One chunk of `document_chunks`, scored together; the documents, with their fields added."""
        from rpt_cli.boundaries import identity_of

        cached = getattr(self, "_made_with", None)
        if cached is None or cached[0] != model_name:  # the fingerprint hashes the vocabulary: once
            cached = self._made_with = (model_name, identity_of(self.doc_tokenizer.tokenizer, model_name).as_field())
        made_with = cached[1]
        scored = self.score_texts([doc[text_field] for doc in chunk])
        for doc, (offsets, entropy) in zip(chunk, scored):
            doc["offsets"] = offsets
            doc["entropy"] = entropy
            doc["entropy_model"] = model_name
            doc["entropy_top_k"] = self.top_k
            doc["tokenizer"] = dict(made_with)
        return chunk


class EntropyScorer(WindowedScorer):
    """Scores documents with one loaded causal LM."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        device: str,
        top_k: int = DEFAULT_TOP_K,
        window: int | None = None,
        overlap: int | None = None,
        batch_tokens: int = 8192,
        chunk_tokens: int | None = None,
    ):
        self.engine = ForwardEngine(model, tokenizer, device)
        self.model, self.device = model, self.engine.device
        self.doc_tokenizer = self.engine.doc_tokenizer
        self.prefix = self.engine.prefix
        vocab = model.get_output_embeddings().weight.shape[0]
        self._check_top_k(top_k, vocab)
        self._set_windows(self.engine.context_limit(window), overlap, batch_tokens, chunk_tokens)
        self.pad_id = self.engine.pad_id
        self.device_name = str(self.device)  # where it runs, for the summary line
        self.transform = _logit_transform(model.config)
        # rows of the output head per chunk: bounds the logits buffer to about 256 MB
        elem = model.get_output_embeddings().weight.element_size()
        self.head_rows = max(64, (1 << 28) // (vocab * max(elem, 2)))
        # the output head on the scored positions only, where it gives the model's own entropies
        self.uses_head = self.engine.decoder_and_head() is not None and self._head_matches_logits()

    def _entropy_rows(self, hidden):
        import torch

        head = self.model.get_output_embeddings()
        out = []
        for i in range(0, hidden.shape[0], self.head_rows):
            out.append(head_topk_entropy(head, hidden[i : i + self.head_rows], self.top_k, self.transform))
        return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)

    # entropies of the head path and of the model's own logits on the probe, both in the model's
    # dtype, may differ this much (nats): summation order, and a known transform applied to
    # float32 values here but to half precision logits in the model; an unknown one changes them
    # far more
    HEAD_CHECK_TOLERANCE = {"float32": 1e-4, "half": 1e-2}

    def _head_matches_logits(self) -> bool:
        """Whether the output layer on the decoder's hidden states, with the logit post-processing
        this module knows (`_logit_transform`), gives the model's own top-k entropies. Checked
        once on a probe text, as rpt eval checks its argmax; a model whose forward post-processes
        its logits in another way is scored from its full logits instead (slower, but right)."""
        import torch

        ids = self.engine.probe_ids()
        try:
            with torch.inference_mode():
                expected = topk_entropy(self.model(input_ids=ids, use_cache=False).logits[0], self.top_k)
                hidden = self.model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0]
                head = self.model.get_output_embeddings()
                got = topk_entropy(head(hidden), self.top_k, self.transform)  # same precision as expected
        except Exception:  # noqa: BLE001 - an unusual model: its own logits are the safe way
            return False
        dtype = self.model.get_output_embeddings().weight.dtype
        tolerance = self.HEAD_CHECK_TOLERANCE["float32" if dtype == torch.float32 else "half"]
        return bool((expected - got).abs().max() <= tolerance)

    def _row_entropies(self, rows: list[list[int]], spans: list[tuple[int, int]]) -> list[float]:
        import torch

        ids, attention, _ = self.engine.batch(rows)
        wanted = torch.zeros(ids.shape, dtype=torch.bool)
        for row, (first, last) in enumerate(spans):
            wanted[row, first:last] = True
        with torch.inference_mode():
            wanted = wanted.to(self.device)
            if not self.uses_head:  # the model's own (post-processed) logits
                logits = self.model(input_ids=ids, attention_mask=attention).logits[wanted]
                return topk_entropy(logits, self.top_k, None).cpu().tolist()
            hidden = self.model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
            return self._entropy_rows(hidden[wanted]).cpu().tolist()


# ---------------------------------------------------------------------------------------------
# Engines, in one process or in the workers of a Ray cluster
# ---------------------------------------------------------------------------------------------

ENTROPY_BACKENDS = ("hf", "vllm")
HEAD_NOTE = (
    "the model's logits are not its output layer on its hidden states (an unknown post-processing); "
    "scoring from its full logits (slower)"
)


@dataclass(frozen=True)
class EntropyEngine:
    """Everything that builds a scorer: a process scores with `open()`, and so does each worker of
    a Ray cluster, from this same (picklable) description."""

    model: str
    backend: str = "hf"
    device: str = "auto"
    dtype: str = "auto"
    top_k: int = DEFAULT_TOP_K
    window: int | None = None
    overlap: int | None = None
    batch_tokens: int = 8192
    trust_remote_code: bool = False
    # vllm only
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False

    def open(self) -> tuple[WindowedScorer, list[str]]:
        """(scorer, notes to show the user once)."""
        if self.backend == "vllm":
            from rpt_cli.entropy_vllm import VLLMEntropyScorer

            return (
                VLLMEntropyScorer(
                    self.model,
                    top_k=self.top_k,
                    window=self.window,
                    overlap=self.overlap,
                    batch_tokens=self.batch_tokens,
                    dtype=self.dtype,
                    tensor_parallel_size=self.tensor_parallel_size,
                    gpu_memory_utilization=self.gpu_memory_utilization,
                    enforce_eager=self.enforce_eager,
                    trust_remote_code=self.trust_remote_code,
                ),
                [],
            )
        from rpt_cli.models import load_model

        lm, tokenizer, device = load_model(
            self.model, device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code
        )
        scorer = EntropyScorer(
            lm,
            tokenizer,
            device=device,
            top_k=self.top_k,
            window=self.window,
            overlap=self.overlap,
            batch_tokens=self.batch_tokens,
        )
        notes = [HEAD_NOTE] if not scorer.uses_head and lm.base_model is not lm else []
        return scorer, notes

    def chunk_tokens(self) -> int:
        """The chunk size the scorer `open()` builds will use, known before any model loads (from
        the model's configuration), so a Ray driver cuts the same chunks as one process."""
        from rpt_cli.forward import DEFAULT_MAX_POSITIONS, config_max_positions
        from rpt_cli.models import resolve

        max_positions = config_max_positions(resolve(self.model), trust_remote_code=self.trust_remote_code)
        window = self.window or DEFAULT_MAX_POSITIONS
        return chunk_tokens_for(self.batch_tokens, min(window, max_positions) if max_positions else window)


@dataclass(frozen=True)
class EntropyChunkWorker:
    """The unit processor of a Ray worker (cluster.UnitWorker): builds the scorer once, then scores
    chunks of `document_chunks`; each result is (documents, the chunk's ScoreStats, notes)."""

    engine: EntropyEngine
    text_field: str = "text"
    model_name: str = ""

    def __call__(self) -> Callable[[list[dict]], tuple[list[dict], ScoreStats, list[str]]]:
        scorer, notes = self.engine.open()

        def process(chunk: list[dict]):
            scorer.stats = ScoreStats()
            docs = scorer.score_chunk(chunk, self.text_field, self.model_name)
            return docs, scorer.stats, notes

        return process
