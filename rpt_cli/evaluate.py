"""`rpt eval`: next-token accuracy per entropy split, in the paper's two modes (Table 1).

- `ntp` (standard next-token): the model's most likely next token after the context, no thinking.
  Its exact bytes (the tokenizer's own token bytes, also when they are part of a character) are
  scored with Eq. 3 by `reward.prefix_match`, the checker of the reward itself, so models with
  different tokenizers compare fairly: a guess is right when it is a prefix of the true
  continuation that ends on a true token boundary.
- `reasoning` (next-token reasoning): prompts from `prompts.PromptBuilder` and k completions per
  context from the generation layer, exactly as `rpt rollout` makes them (`rollout.rollout_chunks`),
  scored by the reward registry (`reward.get_reward_function`), as `rpt reward` scores them.

Splits are the paper's nested ones (`filter.split_label` / `filter.in_split`): a sample belongs to
every split whose entropy threshold its entropy exceeds. Each split gets n, accuracy and a 95 %
Wilson score interval.

A model may be a training run folder of `rpt train` (its final model, else its newest complete
checkpoint) or one checkpoint of a run: reports then carry the run, step and cumulative training
compute (from the run's metrics.jsonl) that `rpt scaling` fits against, and reasoning mode uses the
prompt settings the run was trained with unless told otherwise.

torch, transformers and the generation engines are imported inside the functions that use them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rpt_cli.answers import DEFAULT_ANSWER, DIRECT, check_answer, prompt_defaults
from rpt_cli.filter import SPLIT_NAMES, in_split, split_label
from rpt_cli.boundaries import check_identity_field
from rpt_cli.jsonl import ReadStats, RecordError, UsageError
from rpt_cli.reward import REWARD_FUNCTIONS, Group, Sample, make_sample, prefix_match, sample_of
from rpt_cli.rollout import sample_validator as context_validator

MODES = ("ntp", "reasoning")
SPLIT_CHOICES = (*SPLIT_NAMES, "all")
# 97.5th percentile of the standard normal: the z of a two-sided 95 % interval
Z95 = 1.959963984540054
DEFAULT_BATCH_TOKENS = 8192
DEFAULT_MAX_CONTEXT_TOKENS = 4096   # the paper's prompt limit; capped by the model's own maximum
INTERVAL = "wilson"

# What `rpt train` leaves in its output folder (rpt_cli/training/run.py, checkpoints.py).
RUN_CONFIG = "config.yaml"
RUN_METRICS = "metrics.jsonl"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------

def eval_sample_validator(record: dict) -> None:
    """A sample (records.md §3) as evaluation needs it: `context`, `target`, `boundaries`, and
    `entropy` (or, without it, a `split` label) to place it in the splits."""
    context_validator(record)
    for name in ("target", "boundaries"):
        if name not in record:
            raise RecordError(f'missing field "{name}" (is this the output of rpt filter?)')
    make_sample(record["target"], record["boundaries"], record["context"], need_context=True)
    entropy = record.get("entropy")
    if entropy is None:
        if record.get("split") not in (*SPLIT_NAMES, "none"):
            raise RecordError('missing field "entropy" (the splits are by entropy; is this the output of rpt filter?)')
    elif type(entropy) not in (int, float) or entropy != entropy:
        raise RecordError(f'field "entropy" must be a number, got {entropy!r}')
    check_identity_field(record)


@dataclass(frozen=True, eq=False)
class EvalSample:
    """One sample to evaluate: the record as read, its checked ground truth, and its split label."""

    record: dict
    truth: Sample
    label: str  # easy, medium, hard or none: the hardest split it belongs to
    line: int | None = None  # in the samples file, for errors

    @property
    def context(self) -> str:
        return self.record["context"]

    @property
    def doc_id(self):
        return self.record.get("doc_id")


def sample_label(record: dict) -> str:
    """Split label from the entropy with the paper's thresholds (as `rpt filter` labels), so a
    hand-edited or stale `split` field cannot disagree with the numbers; the label only when
    there is no entropy."""
    entropy = record.get("entropy")
    return split_label(entropy) if entropy is not None else record["split"]


def select_samples(records: Iterable[dict | tuple[int, dict]], split: str = "all",
                   limit: int | None = None) -> list[EvalSample]:
    """The samples of `split` (nested: `medium` holds the hard ones too), the first `limit` of
    them, from records or (line, record) pairs."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"--split {split}: choose one of {', '.join(SPLIT_CHOICES)}")
    selected: list[EvalSample] = []
    for item in records:
        if limit is not None and len(selected) >= limit:
            break
        line, record = item if isinstance(item, tuple) else (None, item)
        label = sample_label(record)
        if in_split(label, split):
            selected.append(EvalSample(record, sample_of(record, need_context=True), label, line))
    return selected


def in_policy_tokens(samples: Sequence[EvalSample], tokenizer, ref: ModelRef, source: str, *,
                     skipped: ReadStats | None = None):
    """The samples with boundaries in the tokens of the model evaluated (boundaries.py): re-derived
    where they were made with another tokenizer. Returns (samples, Alignment); a sample that
    cannot be re-derived is an InputError, or with `skipped` (--skip-bad) left out and counted."""
    from rpt_cli.boundaries import PolicyTokenizer, align

    found, alignment = align([(s.line, s.record) for s in samples], PolicyTokenizer(tokenizer, ref.name, ref.spec), source,
                             stats=skipped)
    out = []
    for index, boundaries in zip(alignment.kept, found):
        sample = samples[index]
        if boundaries is not None:
            sample = replace(sample, truth=make_sample(sample.record["target"], list(boundaries),
                                                       sample.record["context"], need_context=True))
        out.append(sample)
    return out, alignment


def report_splits(split: str) -> tuple[str, ...]:
    """The splits a report lists: all three, or the chosen one and those nested inside it."""
    return SPLIT_NAMES if split == "all" else SPLIT_NAMES[SPLIT_NAMES.index(split):]


# --------------------------------------------------------------------------------------------
# Accuracy and intervals
# --------------------------------------------------------------------------------------------

def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `accuracy` observed over `n` trials.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 % or 100 %, which
    small, hard splits hit often. With k completions per context the proportion is the mean of the
    contexts' per-context accuracies over n contexts; a mean of values in [0, 1] varies no more
    than a proportion of n independent trials, so the interval is then conservative.
    """
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (accuracy + z2 / (2 * n)) / denominator
    half = z * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n + z2 / (4 * n * n)) / denominator
    # at 0 % (100 %) the bound is exactly 0 (1): say so rather than leave rounding residue
    low = 0.0 if accuracy <= 0 else max(0.0, centre - half)
    high = 1.0 if accuracy >= 1 else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Outcome:
    """How one model did on one sample. ntp: accuracy 0 or 1. reasoning: the share of the k
    completions that are correct (by the reward function's rule), `solved` when any is."""

    accuracy: float
    solved: bool
    reward: float = 0.0
    no_prediction: float = 0.0
    truncated: float = 0.0


def summarize(outcomes: Sequence[Outcome], *, reasoning: bool) -> dict:
    """One split's entry of the report: n, accuracy, ci95 (and pass@k figures in reasoning mode)."""
    n = len(outcomes)
    if n == 0:
        entry: dict = {"n": 0, "accuracy": None, "ci95": None}
        if reasoning:
            entry.update(pass_at_k=None, pass_at_k_ci95=None, mean_reward=None, no_prediction_share=None)
        return entry
    accuracy = sum(o.accuracy for o in outcomes) / n
    entry = {"n": n, "accuracy": accuracy, "ci95": list(wilson_interval(accuracy, n))}
    if reasoning:
        solved = sum(o.solved for o in outcomes) / n
        entry.update(pass_at_k=solved, pass_at_k_ci95=list(wilson_interval(solved, n)),
                     mean_reward=sum(o.reward for o in outcomes) / n,
                     no_prediction_share=sum(o.no_prediction for o in outcomes) / n)
    return entry


def split_report(samples: Sequence[EvalSample], outcomes: Sequence[Outcome], split: str, *,
                 reasoning: bool) -> dict:
    """The `n`, overall accuracy and per-split entries of a report (records.md §6)."""
    report = {"n": len(samples), **{k: v for k, v in summarize(outcomes, reasoning=reasoning).items() if k != "n"}}
    report["splits"] = {name: summarize([o for s, o in zip(samples, outcomes) if in_split(s.label, name)],
                                        reasoning=reasoning)
                        for name in report_splits(split)}
    return report


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
            if row.ids[:len(ids)] == ids:
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
        yield list(rows[start:start + count])
        start += count


@dataclass(frozen=True)
class TokenPrediction:
    token_id: int
    data: bytes | None  # the token's exact bytes (maybe part of a character); None for a special token
    text: str | None    # those bytes as text; None for a special token or part of a character
    shared: bool        # the logits came from a longer context's forward pass


@dataclass
class PredictorStats:
    contexts: int = 0
    rows: int = 0        # forward-pass rows: fewer than contexts when passes are shared
    tokens: int = 0      # tokens run through the model (without padding)
    seconds: float = 0.0

    @property
    def positions_per_second(self) -> float:
        return self.contexts / self.seconds if self.seconds else 0.0


def model_max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if value else None


class NextTokenPredictor:
    """The argmax next token after each context, from batched forward passes.

    Contexts are tokenized on their own like documents (the tokenizer's special prefix such as
    BOS, then the context's tokens) and cut from the left to `max_context_tokens`, keeping the
    prefix. Rows are right padded, so every real position sees exactly its own prefix. Only the
    hidden states at the wanted positions go through the output layer: a whole sequence's
    vocabulary-sized logits are the largest tensor a forward pass makes and are not needed.
    """

    def __init__(self, model, tokenizer, device=None, *, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_context_tokens: int | None = None, share_passes: bool = True):
        from rpt_cli.tokens import DocTokenizer

        if batch_tokens < 1:
            raise ValueError("batch_tokens must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.device = device if device is not None else next(model.parameters()).device
        self.batch_tokens = batch_tokens
        self.share_passes = share_passes
        doc_tokenizer = DocTokenizer(tokenizer)
        self.prefix = list(doc_tokenizer.prefix)
        self.token_bytes = doc_tokenizer.table  # None when the pieces do not map to bytes
        limit = model_max_positions(model)
        wanted = max_context_tokens or DEFAULT_MAX_CONTEXT_TOKENS
        self.max_context_tokens = min(wanted, limit) if limit else wanted
        if self.max_context_tokens <= len(self.prefix):
            raise ValueError(f"max_context_tokens={self.max_context_tokens} leaves no room for a context "
                             f"after the tokenizer's {len(self.prefix)} special prefix token(s)")
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self._special_ids = frozenset(tokenizer.all_special_ids)
        self.stats = PredictorStats()
        self._split = self._decoder_and_head()

    # -- tokens --------------------------------------------------------------------------------
    def context_ids(self, contexts: Sequence[str]) -> list[list[int]]:
        encoded = self.tokenizer(list(contexts), add_special_tokens=False,
                                 split_special_tokens=True)["input_ids"] if contexts else []
        out = []
        for ids in encoded:
            ids = self.prefix + list(ids)
            if not ids:  # no context and no BOS: start from whatever begins a text
                start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None \
                    else self.tokenizer.eos_token_id
                ids = [start] if start is not None else [self.pad_id]
            if len(ids) > self.max_context_tokens:
                ids = self.prefix + ids[len(ids) - (self.max_context_tokens - len(self.prefix)):]
            out.append(ids)
        return out

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

    # -- forward passes ------------------------------------------------------------------------
    def _decoder_and_head(self):
        """(decoder, output layer) when the model's logits are its output layer applied to its
        decoder's last hidden states, up to an order-preserving transform (scaling, soft-capping),
        so the argmax of the output layer at a few positions is the model's argmax. Checked once
        on a probe; any other architecture uses the model's own logits."""
        import torch

        decoder = getattr(self.model, "base_model", None)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if decoder is None or decoder is self.model or head is None:
            return None
        probe = self.context_ids(["Let $x$ be a real number such that x = 3. Hence"])[0]
        probe_ids = torch.tensor([probe], dtype=torch.long, device=self.device)
        try:
            with torch.inference_mode():
                expected = self.model(input_ids=probe_ids, use_cache=False).logits[0].argmax(-1)
                hidden = decoder(input_ids=probe_ids, use_cache=False).last_hidden_state
                got = head(hidden[0]).argmax(-1)
        except Exception:  # noqa: BLE001 - an unusual model: fall back to its own logits
            return None
        return (decoder, head) if torch.equal(expected, got) else None

    def _argmax(self, rows: Sequence[Row]) -> list[list[int]]:
        """The argmax token of every member of every row of one batch."""
        import torch

        width = max(len(row.ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, :len(row.ids)] = torch.tensor(row.ids, dtype=torch.long)
            mask[r, :len(row.ids)] = 1
        row_index = torch.tensor([r for r, row in enumerate(rows) for _ in row.members], dtype=torch.long)
        positions = torch.tensor([length - 1 for row in rows for _, length in row.members], dtype=torch.long)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            if self._split is not None:
                decoder, head = self._split
                hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
                logits = head(hidden[row_index.to(self.device), positions.to(self.device)])
                best = logits.argmax(-1).tolist()
            else:
                wanted = sorted(set(positions.tolist()))
                column = {p: c for c, p in enumerate(wanted)}
                try:
                    out = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False,
                                     logits_to_keep=torch.tensor(wanted, device=self.device))
                    logits = out.logits
                except TypeError:
                    logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
                    column = {p: p for p in wanted}
                cols = torch.tensor([column[p] for p in positions.tolist()], dtype=torch.long)
                best = logits[row_index.to(self.device), cols.to(self.device)].argmax(-1).tolist()
        out: list[list[int]] = []
        k = 0
        for row in rows:
            out.append(best[k:k + len(row.members)])
            k += len(row.members)
        return out

    def predict(self, contexts: Sequence[str], doc_ids: Sequence | None = None, *,
                on_batch: Callable[[PredictorStats], None] | None = None) -> list[TokenPrediction]:
        """The most likely next token after each context, in input order. `doc_ids` (one per
        context) names the documents whose contexts may share forward passes."""
        started = time.perf_counter()
        ids = self.context_ids(contexts)
        rows = plan_rows(ids, doc_ids, share=self.share_passes)
        predictions: list[TokenPrediction | None] = [None] * len(contexts)
        for batch in batch_rows(rows, self.batch_tokens):
            for row, tokens in zip(batch, self._argmax(batch)):
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


def evaluate_ntp(samples: Sequence[EvalSample], predictor: NextTokenPredictor, *,
                 on_batch: Callable[[PredictorStats], None] | None = None) -> tuple[list[Outcome], list[dict]]:
    """Outcomes and per-sample details of standard next-token prediction."""
    predictions = predictor.predict([s.context for s in samples], [s.doc_id for s in samples], on_batch=on_batch)
    outcomes, details = [], []
    for sample, prediction in zip(samples, predictions):
        reward = prefix_match(prediction.data, sample.truth.target, sample.truth.boundaries)
        outcomes.append(Outcome(accuracy=reward, solved=reward == 1.0, reward=reward,
                                no_prediction=float(prediction.data is None)))
        details.append({"prediction": prediction.text, "token_id": prediction.token_id, "correct": reward == 1.0,
                        "reward": reward, "shared_pass": prediction.shared})
    return outcomes, details


# --------------------------------------------------------------------------------------------
# reasoning mode: the rollout layer's prompts and generation, the reward registry's scores
# --------------------------------------------------------------------------------------------

def evaluate_reasoning(samples: Sequence[EvalSample], backend, builder, reward_fn, *, k: int, sampling,
                       chunk_contexts: int = 32, metadata: dict | None = None,
                       on_chunk: Callable[[int], None] | None = None) -> tuple[list[Outcome], list[dict]]:
    """Outcomes and per-sample details of next-token reasoning: k completions per context from
    `rollout_chunks` (the prompts and seeds of `rpt rollout`), each scored by `reward_fn`.
    Accuracy counts the completions the reward function deems correct (for `prefix`, reward 1)."""
    from rpt_cli.generation.base import FINISH_LENGTH
    from rpt_cli.rollout import RolloutStats, rollout_chunks

    stats = RolloutStats()
    outcomes, details = [], []
    records = ({**sample.record} for sample in samples)  # rollout adds fields: leave the inputs alone
    for chunk in rollout_chunks(records, backend, builder, n=k, sampling=sampling, chunk_contexts=chunk_contexts,
                                metadata=metadata, stats=stats):
        groups = [Group(sample_of(record, need_context=reward_fn.needs_context),
                        [reward_fn.extract(c) for c in record["completions"]]) for record in chunk]
        for record, group, scores in zip(chunk, groups, reward_fn.score_groups(groups)):
            count = len(scores.rewards)
            outcomes.append(Outcome(
                accuracy=sum(scores.correct) / count, solved=any(scores.correct),
                reward=sum(scores.rewards) / count,
                no_prediction=sum(p is None for p in group.predictions) / count,
                truncated=sum(r == FINISH_LENGTH for r in record["finish_reasons"]) / count))
            details.append({"prompt": record["prompt"], "completions": record["completions"],
                            "finish_reasons": record["finish_reasons"],
                            "completion_tokens": record["completion_tokens"], "predictions": group.predictions,
                            "rewards": scores.rewards, "correct": list(scores.correct),
                            "accuracy": outcomes[-1].accuracy, "solved": outcomes[-1].solved})
        if on_chunk is not None:
            on_chunk(stats.contexts)
    return outcomes, details


# --------------------------------------------------------------------------------------------
# Models, training runs and checkpoints
# --------------------------------------------------------------------------------------------

@dataclass
class ModelRef:
    """A `--model` value, with what is known about it when it comes from `rpt train`."""

    spec: str                     # as given
    source: str                   # what is loaded: a run folder becomes its final model
    name: str                     # the report's `model`
    run: Path | None = None       # the training run folder
    step: int | None = None       # training steps behind this checkpoint
    flops: float | None = None    # cumulative training compute at that step (metrics.jsonl)
    run_settings: dict = field(default_factory=dict)  # the run's config.yaml

    def as_fields(self) -> dict:
        return {"model": self.name, "model_path": str(Path(self.source).resolve()) if Path(self.source).exists()
                else None, "run": str(self.run.resolve()) if self.run else None, "step": self.step,
                "flops": self.flops}


def checkpoint_step(folder: Path) -> int | None:
    """The training step a checkpoint (or final model) of `rpt train` holds: from its completion
    marker, else from a `checkpoint-N` name."""
    from rpt_cli.training.checkpoints import completed_step

    step = completed_step(folder)
    if step is not None:
        return step
    match = _CHECKPOINT_NAME.match(folder.name)
    return int(match.group(1)) if match else None


def is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / RUN_CONFIG).is_file() and not (folder / "config.json").is_file()


def run_models(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint of a run, and of its final model when that
    holds a step no checkpoint does; by step."""
    from rpt_cli.training.checkpoints import FINAL, complete_checkpoints, completed_step

    found = dict(complete_checkpoints(run))
    final_step = completed_step(run / FINAL)
    if final_step is not None and final_step not in found:
        found[final_step] = run / FINAL
    return sorted(found.items())


def read_run_settings(run: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{run / RUN_CONFIG}: cannot read the run's settings ({exc})") from None
    return data if isinstance(data, dict) else {}


def read_flops(metrics: Path) -> dict[int, float]:
    """Cumulative training compute by step, from a metrics.jsonl of `rpt train` (`step`, `flops`).
    A torn last line (a run killed mid-write) is ignored; another bad line is an input error."""
    from rpt_cli.jsonl import read_log

    out: dict[int, float] = {}
    for _, record in read_log(str(metrics)):
        step, flops = record.get("step"), record.get("flops")
        if type(step) is int and type(flops) in (int, float):
            out[step] = float(flops)
    return out


def locate_model(spec: str) -> ModelRef:
    """What a `--model` value points at. A run folder of `rpt train` means its final model (else
    its newest complete checkpoint); a checkpoint of a run knows its step and compute."""
    from rpt_cli.models import display_name, resolve

    path = Path(spec).expanduser()
    if not path.is_dir():
        resolve(spec)  # a missing file or folder stops here, before any samples are read or models load
        return ModelRef(spec, spec, display_name(spec))
    run = None
    if is_run_folder(path):
        from rpt_cli.training.checkpoints import FINAL, completed_step

        models = run_models(path)
        if not models:
            raise UsageError(f"--model {spec}: the training run holds neither a final model nor a complete checkpoint yet")
        run = path
        path = path / FINAL if completed_step(path / FINAL) is not None else models[-1][1]
    elif is_run_folder(path.parent):
        run = path.parent
    if run is None:
        return ModelRef(spec, str(path), display_name(str(path)))
    step = checkpoint_step(path)
    flops = read_flops(run / RUN_METRICS).get(step) if step is not None and (run / RUN_METRICS).is_file() else None
    return ModelRef(spec, str(path), f"{run.resolve().name}/{path.name}", run=run, step=step, flops=flops,
                    run_settings=read_run_settings(run))


# --------------------------------------------------------------------------------------------
# One evaluation: settings, models, reports
# --------------------------------------------------------------------------------------------

@dataclass
class EvalConfig:
    """Every setting of `rpt eval`. Prompt settings left None come from the training run of the
    model being evaluated when there is one (config.yaml), else from rpt rollout's defaults."""

    modes: tuple[str, ...] = ("ntp",)
    split: str = "all"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    # ntp
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    max_context_tokens: int | None = None
    share_passes: bool = True
    # reasoning (sampled completions, in either answer format)
    answer: str | None = None
    backend: str = "auto"
    num_samples: int = 1
    fn: str = "prefix"
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int | None = None
    template: str | None = None
    chat: bool | None = None
    think_prefix: str | None = None
    max_prompt_tokens: int | None = None
    no_think: bool | None = None
    batch_size: int = 32
    max_batch_sequences: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False

    def check(self) -> None:
        """Refuse bad settings before any model loads (UsageError, exit 2)."""
        if not self.modes:
            raise UsageError("--mode: give ntp, reasoning or both")
        for mode in self.modes:
            if mode not in MODES:
                raise UsageError(f"--mode {mode}: choose ntp or reasoning")
        if self.split not in SPLIT_CHOICES:
            raise UsageError(f"--split {self.split}: choose one of {', '.join(SPLIT_CHOICES)}")
        for name, value in (("--limit", self.limit), ("--batch-tokens", self.batch_tokens),
                            ("--max-context-tokens", self.max_context_tokens), ("--num-samples", self.num_samples),
                            ("--max-new-tokens", self.max_new_tokens), ("--max-prompt-tokens", self.max_prompt_tokens),
                            ("--batch-size", self.batch_size), ("--max-batch-sequences", self.max_batch_sequences),
                            ("--tensor-parallel-size", self.tensor_parallel_size)):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.fn not in REWARD_FUNCTIONS:
            raise UsageError(f"--fn {self.fn}: choose one of {', '.join(REWARD_FUNCTIONS)}")
        if self.answer is not None:
            check_answer(self.answer)
        if self.temperature < 0:
            raise UsageError("--temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if self.top_k < 0:
            raise UsageError("--top-k must be 0 (off) or positive")
        if self.template is not None:
            from rpt_cli.prompts import TemplateError, load_template

            try:
                load_template(self.template)
            except TemplateError as exc:
                raise UsageError(str(exc)) from None

    def check_model(self, ref: ModelRef) -> None:
        """Refuse, before any work, a prompt template that a model's training run names but
        that cannot be loaded here."""
        if "reasoning" in self.modes:
            from rpt_cli.prompts import TemplateError, load_template

            try:
                load_template(self.prompt_settings(ref)["template"])
            except TemplateError as exc:
                raise UsageError(f"--model {ref.spec}: {exc}") from None

    def prompt_settings(self, ref: ModelRef) -> dict:
        """answer, template, chat, think_prefix, max_prompt_tokens, no_think and max_new_tokens for
        one model: given options first, then the model's training run, then the answer format's
        defaults. The run's prompt settings apply only when it was trained in the answer format
        evaluated here (a run trained in the direct format says nothing about boxed prompts)."""
        run_answer = ref.run_settings.get("answer") or DEFAULT_ANSWER
        answer = self.answer or run_answer
        run = ref.run_settings if answer == run_answer else {}
        defaults = prompt_defaults(answer)

        def pick(given, key, default):
            if given is not None:
                return given
            value = run.get(key)
            return value if value is not None else default
        return {"answer": answer, "template": pick(self.template, "template", defaults["template"]),
                "chat": bool(pick(self.chat, "chat", defaults["chat"])),
                "think_prefix": self.think_prefix if self.think_prefix is not None else run.get("think_prefix"),
                "max_prompt_tokens": int(pick(self.max_prompt_tokens, "max_prompt_tokens", 4096)),
                "no_think": bool(pick(self.no_think, "no_think", False)),
                "max_new_tokens": int(pick(self.max_new_tokens, "max_completion_tokens", defaults["max_new_tokens"]))}


@dataclass
class Progress:
    """Callbacks to show progress; all optional."""

    on_start: Callable[[str], None] | None = None
    on_count: Callable[[str], None] | None = None
    on_note: Callable[[str], None] | None = None


def _report(ref: ModelRef, mode: str, samples: Sequence[EvalSample], outcomes: Sequence[Outcome],
            config: EvalConfig, source: str | None, seconds: float, settings: dict) -> dict:
    # the answer format of the sampled completions (reasoning mode); ntp reads no answer
    answer = config.prompt_settings(ref)["answer"] if mode == "reasoning" else None
    report = {**ref.as_fields(), "mode": mode, "answer": answer}
    report.update(split_report(samples, outcomes, config.split, reasoning=mode == "reasoning"))
    report.update({"interval": INTERVAL, "split": config.split, "limit": config.limit, "seed": config.seed,
                   "samples": source, "settings": settings, "seconds": round(seconds, 3)})
    return report


def _detail_rows(ref: ModelRef, mode: str, samples: Sequence[EvalSample], details: Sequence[dict]) -> Iterator[dict]:
    for sample, detail in zip(samples, details):
        record = sample.record
        yield {"id": record.get("id"), "doc_id": record.get("doc_id"), "position": record.get("position"),
               "model": ref.name, "mode": mode, "split": sample.label, "entropy": record.get("entropy"),
               "context": record["context"], "target": record["target"], "boundaries": list(sample.truth.boundaries),
               **detail}


def evaluate_model(ref: ModelRef, samples: Sequence[EvalSample], config: EvalConfig, *, source: str | None = None,
                   on_details: Callable[[dict], None] | None = None, progress: Progress | None = None,
                   skipped: ReadStats | None = None) -> list[dict]:
    """Reports (records.md §6) of one model in each of `config.modes`, on the same samples (their
    boundaries in the model's tokens: `in_policy_tokens`); the per-sample details go to
    `on_details` as they are ready. With `skipped` (--skip-bad), samples whose boundaries cannot
    be re-derived for this model are left out and recorded there."""
    from rpt_cli.generation import resolve_backend_name
    from rpt_cli.jsonl import source_name
    from rpt_cli.models import load_model, load_tokenizer

    progress = progress or Progress()
    reasoning = "reasoning" in config.modes
    backend_name = resolve_backend_name(config.backend) if reasoning else None
    needs_loaded_model = "ntp" in config.modes or backend_name == "hf" or \
        (reasoning and config.fn in ("dense", "conditional-dense"))
    model = tokenizer = device = None
    if needs_loaded_model and samples:
        if progress.on_start:
            progress.on_start(f"loading {ref.name}")
        model, tokenizer, device = load_model(ref.source, device=config.device, dtype=config.dtype,
                                              trust_remote_code=config.trust_remote_code)
    alignment = None
    if samples:
        policy_tokenizer = tokenizer or load_tokenizer(ref.source, trust_remote_code=config.trust_remote_code)
        samples, alignment = in_policy_tokens(samples, policy_tokenizer, ref, source_name(source),
                                              skipped=skipped)
        if progress.on_note:
            for note in alignment.notes():
                progress.on_note(f"{ref.name}: {note}")
    reports = []
    for mode in config.modes:
        started = time.perf_counter()
        if not samples:
            outcomes, details, settings = [], [], {}
        elif mode == "ntp":
            outcomes, details, settings = _run_ntp(ref, samples, config, model, tokenizer, device, progress)
        else:
            outcomes, details, settings = _run_reasoning(ref, samples, config, backend_name, model, tokenizer,
                                                         device, progress)
        seconds = time.perf_counter() - started
        reports.append(_report(ref, mode, samples, outcomes, config, source, seconds, settings))
        if alignment is not None:
            reports[-1]["tokenizer"] = alignment.as_fields()
        if on_details is not None:
            for row in _detail_rows(ref, mode, samples, details):
                on_details(row)
    return reports


def _run_ntp(ref, samples, config, model, tokenizer, device, progress):
    try:
        predictor = NextTokenPredictor(model, tokenizer, device, batch_tokens=config.batch_tokens,
                                       max_context_tokens=config.max_context_tokens,
                                       share_passes=config.share_passes)
    except ValueError as exc:
        raise UsageError(str(exc).replace("max_context_tokens", "--max-context-tokens")) from None
    if progress.on_start:
        progress.on_start(f"{ref.name} (ntp)")

    def show(stats: PredictorStats) -> None:
        if progress.on_count:
            progress.on_count(f"{ref.name} (ntp): {stats.contexts:,}/{len(samples):,} contexts, "
                              f"{stats.positions_per_second:,.0f} positions/s")
    outcomes, details = evaluate_ntp(samples, predictor, on_batch=show)
    stats = predictor.stats
    settings = {"max_context_tokens": predictor.max_context_tokens, "batch_tokens": config.batch_tokens,
                "shared_passes": config.share_passes, "forward_rows": stats.rows,
                "positions_per_second": round(stats.positions_per_second, 2)}
    return outcomes, details, settings


def _run_reasoning(ref, samples, config, backend_name, model, tokenizer, device, progress):
    from rpt_cli.generation import SamplingConfig, get_backend
    from rpt_cli.prompts import PromptBuilder, PromptConfig, TemplateError, load_template
    from rpt_cli.reward import NEEDS_MODEL, NEEDS_TOKENIZER, get_reward_function

    prompt = config.prompt_settings(ref)
    try:
        template = load_template(prompt["template"])
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
    if backend_name == "hf":
        from rpt_cli.generation.hf_backend import HFBackend

        engine = HFBackend(model, tokenizer, model_name=ref.name, max_batch_sequences=config.max_batch_sequences)
    else:
        if progress.on_start:
            progress.on_start(f"starting vLLM for {ref.name}")
        engine = get_backend(backend_name, ref.source, dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                             seed=config.seed, tensor_parallel_size=config.tensor_parallel_size,
                             gpu_memory_utilization=config.gpu_memory_utilization,
                             max_model_len=config.max_model_len, enforce_eager=config.enforce_eager)
    try:
        length_limit = getattr(engine, "max_model_len", None)
        if length_limit is not None and prompt["max_prompt_tokens"] >= length_limit:
            raise UsageError(f"--max-prompt-tokens {prompt['max_prompt_tokens']} leaves no room for a completion "
                             f"within the model length {length_limit}; lower it or raise --max-model-len")
        try:
            builder = PromptBuilder(engine.tokenizer, PromptConfig(
                template=template, chat=prompt["chat"], think_prefix=prompt["think_prefix"],
                max_prompt_tokens=prompt["max_prompt_tokens"]))
        except ValueError as exc:
            raise UsageError(str(exc).replace("max_prompt_tokens", "--max-prompt-tokens")) from None
        options: dict = {"require_think": not prompt["no_think"], "answer": prompt["answer"]}
        if config.fn in NEEDS_TOKENIZER:
            options["tokenizer"] = engine.tokenizer
        if config.fn in NEEDS_MODEL:
            options.update(model=model, tokenizer=tokenizer, device=device)
        reward_fn = get_reward_function(config.fn, **options)
        sampling = SamplingConfig(max_new_tokens=prompt["max_new_tokens"], temperature=config.temperature,
                                  top_p=config.top_p, top_k=config.top_k, seed=config.seed)
        settings = {"backend": engine.name, "answer": prompt["answer"], "fn": config.fn, "k": config.num_samples,
                    "template": template.name,
                    "chat": builder.chat, "think_prefix": prompt["think_prefix"], "no_think": prompt["no_think"],
                    "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
                    "max_new_tokens": prompt["max_new_tokens"], "max_prompt_tokens": prompt["max_prompt_tokens"]}
        if progress.on_start:
            progress.on_start(f"{ref.name} (reasoning)")

        def show(done: int) -> None:
            if progress.on_count:
                progress.on_count(f"{ref.name} (reasoning): {done:,}/{len(samples):,} contexts")
        metadata = {"model": ref.name, **settings, "n": config.num_samples, "seed": config.seed}
        outcomes, details = evaluate_reasoning(samples, engine, builder, reward_fn, k=config.num_samples,
                                               sampling=sampling, chunk_contexts=config.batch_size,
                                               metadata=metadata, on_chunk=show)
    finally:
        if backend_name != "hf":
            engine.close()
    settings["truncated_share"] = sum(o.truncated for o in outcomes) / len(outcomes)
    return outcomes, details, settings



# --------------------------------------------------------------------------------------------
# The table for people (standard error)
# --------------------------------------------------------------------------------------------

def _percent_cell(entry: dict, *, k: int | None) -> str:
    if entry.get("accuracy") is None:
        return "-"
    low, high = entry["ci95"]
    cell = f"{100 * entry['accuracy']:.1f}\n[dim]{100 * low:.1f}–{100 * high:.1f}[/]"
    if k is not None and k > 1 and entry.get("pass_at_k") is not None:
        cell += f"\npass@{k} {100 * entry['pass_at_k']:.1f}"
    return cell


def mode_label(report: dict) -> str:
    """ntp, reasoning (the boxed format) or direct (sampled guesses without reasoning)."""
    if report["mode"] == "reasoning" and report.get("answer") == DIRECT:
        return DIRECT
    return report["mode"]


def report_table(reports: Sequence[dict]):
    """One rich table for all reports: a row per model and mode, a column per split (accuracy in
    %, its 95 % Wilson interval below it, and pass@k in reasoning mode with k > 1)."""
    from rich.markup import escape
    from rich.table import Table

    splits: list[str] = []
    for report in reports:
        splits += [name for name in report["splits"] if name not in splits]
    first = reports[0] if reports else {"splits": {}, "n": 0}
    table = Table(title="Next-token accuracy (%) per entropy split, 95 % Wilson interval", title_justify="left")
    table.add_column("model")
    table.add_column("mode")
    for name in splits:
        table.add_column(f"{name}\nn={first['splits'].get(name, {}).get('n', 0):,}", justify="right")
    table.add_column(f"all\nn={first['n']:,}", justify="right")
    for report in reports:
        k = report.get("settings", {}).get("k") if report["mode"] == "reasoning" else None
        mode = mode_label(report) + (f"\nk={k}" if k and k > 1 else "")
        cells = [_percent_cell(report["splits"].get(name, {}), k=k) for name in splits]
        table.add_row(escape(str(report["model"])), mode, *cells, _percent_cell(report, k=k))
    return table

__all__ = [
    "DEFAULT_BATCH_TOKENS", "EvalConfig", "EvalSample", "MODES", "ModelRef", "NextTokenPredictor", "Outcome",
    "Row", "SPLIT_CHOICES", "TokenPrediction", "batch_rows", "eval_sample_validator", "evaluate_model", "mode_label",
    "evaluate_ntp", "evaluate_reasoning", "locate_model", "plan_rows", "read_flops", "report_splits", "report_table",
    "run_models", "select_samples", "split_report", "summarize", "wilson_interval",
]
