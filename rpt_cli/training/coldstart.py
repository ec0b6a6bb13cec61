"""`rpt train --objective coldstart`: teach a model the paper's answer format before RPT.

A base or small model does not think and then answer in `\\boxed{}` when asked (docs/evidence.md:
0–3 % of the built-in model's completions hold an answer), so GRPO in the boxed format gets a
reward of 0 everywhere and no gradient. The cold start turns each sample into one supervised
example in that format, made by the model itself, with no outside teacher:

    prompt      the sample's context in the chosen template (chat or not), built by the same
                `PromptBuilder` as `rpt rollout` and `rpt train`;
    completion  a short thought that names the model's own top candidates for the next token with
                their probabilities (templates v3 and v6: "list multiple potential tokens and
                select the most probable one"), then `</think>`, then `\\boxed{answer}`, then the
                end-of-sequence token.

The candidates are the model's next-token distribution after the context alone (the distribution
`rpt eval --mode ntp` takes its argmax of). The answer is the model's own first choice by default
(`--coldstart-answer own`), so the stage teaches the format, not the next tokens; `truth` boxes the
true next token instead (a STaR-style rationalisation) and names it in the thought with the
probability the model gives it. Every example is written to `coldstart.jsonl` in the run folder
with how it was made. Training is TRL's SFTTrainer with the loss on the completion only, on the
same data order, run folder, checkpoints and metrics as the other objectives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from rpt_cli.errors import InputError

OWN = "own"
SAMPLE = "sample"
TRUTH = "truth"
ANSWER_SOURCES = (OWN, SAMPLE, TRUTH)
EXAMPLES_FILE = "coldstart.jsonl"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Candidate:
    """One next token the model considers: its text and the probability the model gives it."""

    text: str
    probability: float


@dataclass(frozen=True)
class Example:
    """One supervised example and how it was made (a line of coldstart.jsonl)."""

    sample_id: str
    prompt_ids: list[int]
    completion: str
    completion_ids: list[int]
    answer: str
    answer_source: str
    candidates: list[Candidate]
    answer_correct: bool

    def record(self) -> dict:
        return {
            "id": self.sample_id,
            "completion": self.completion,
            "answer": self.answer,
            "answer_source": self.answer_source,
            "answer_correct": self.answer_correct,
            "candidates": [[c.text, round(c.probability, 6)] for c in self.candidates],
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.completion_ids),
        }

    def row(self) -> dict:
        """The pre-tokenized row SFTTrainer trains on: the loss reaches the completion only."""
        return {
            "input_ids": self.prompt_ids + self.completion_ids,
            "completion_mask": [0] * len(self.prompt_ids) + [1] * len(self.completion_ids),
        }


def quoted(text: str) -> str:
    """A candidate as the thought writes it: in double quotes, so a leading space shows."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def thought(candidates: Sequence[Candidate], answer: Candidate) -> str:
    """The thought of one example: the answer first, in quotes, where a prompt that ends with the
    context (`direct`, or v0 without chat) lets the model's own next-token distribution speak as
    it does in `--answer direct` (what it writes first is its guess, and the thought then only has
    to carry it to the box); then its probability, and the model's other candidates with theirs,
    most probable first."""
    others = [c for c in candidates if c != answer]
    also = "; also " + ", ".join(f"{quoted(c.text)} {c.probability:.0%}" for c in others) if others else ""
    return f"{quoted(answer.text)} {answer.probability:.0%}{also}"


def completion_text(candidates: Sequence[Candidate], answer: Candidate) -> str:
    return f"{thought(candidates, answer)}{THINK_CLOSE} \\boxed{{{answer.text}}}"


class CandidateScorer:
    """The model's own next-token candidates after each context: the distribution `rpt eval
    --mode ntp` takes its argmax of (contexts tokenized like documents, cut from the left).

    Only tokens that are whole text can be written in a thought and a box: special tokens and
    tokens that are part of a UTF-8 character are passed over (the next candidates move up)."""

    def __init__(self, model, tokenizer, *, max_context_tokens: int, count: int, batch_size: int = 16):
        from rpt_cli.forward import ForwardEngine

        self.engine = ForwardEngine(model, tokenizer)
        self.max_context_tokens = self.engine.context_limit(max_context_tokens)
        self.count = count
        self.batch_size = batch_size
        table = self.engine.doc_tokenizer.table
        special = set(tokenizer.all_special_ids)
        self.texts: dict[int, str] = {}
        self.ids: dict[bytes, int] = {}
        for token_id, data in enumerate(table or []):
            if data is None or token_id in special:
                continue
            try:
                self.texts[token_id] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # part of a character
            self.ids.setdefault(data, token_id)
        self.size = len(table or [])

    def candidates(self, contexts: Sequence[str]) -> list[tuple[list[Candidate], object]]:
        """Per context: (its `count` most probable writable tokens, the model's whole next-token
        distribution as a tensor, for `sampled` and `probability_of`)."""
        import torch

        out = []
        writable = torch.zeros(self.size, dtype=torch.bool)
        writable[list(self.texts)] = True
        for start in range(0, len(contexts), self.batch_size):
            chunk = contexts[start : start + self.batch_size]
            rows = self.engine.context_ids(chunk, self.max_context_tokens)
            input_ids, mask, positions = self.engine.batch(rows, left=True)
            last = input_ids.shape[1] - 1
            with torch.inference_mode():
                logits = self.engine.logits_at(
                    input_ids, mask, range(len(rows)), [last] * len(rows), position_ids=positions
                )
            probabilities = logits.float().softmax(-1).cpu()
            for row in probabilities:
                masked = torch.where(writable[: row.shape[0]], row[: self.size], torch.zeros(()))
                top = masked.topk(self.count)
                picked = [
                    Candidate(self.texts[int(i)], float(p))
                    for i, p in zip(top.indices.tolist(), top.values.tolist())
                    if int(i) in self.texts
                ]
                out.append((picked, row))
        return out

    def sampled(self, probabilities, seed: int) -> Candidate:
        """One writable token drawn from the model's next-token distribution, reproducibly."""
        import torch

        writable = torch.zeros(probabilities.shape[0], dtype=torch.bool)
        writable[[i for i in self.texts if i < probabilities.shape[0]]] = True
        weights = torch.where(writable, probabilities, torch.zeros(()))
        generator = torch.Generator().manual_seed(seed)
        token_id = int(torch.multinomial(weights, 1, generator=generator))
        return Candidate(self.texts[token_id], float(probabilities[token_id]))

    def probability_of(self, probabilities, data: bytes) -> float | None:
        """The probability of the token whose bytes are `data` (None when no token has them)."""
        token_id = self.ids.get(data)
        return None if token_id is None else float(probabilities[token_id])


def true_next_token(target: str, boundaries: Sequence[int]) -> bytes:
    """The bytes of the true next token: the target up to its first token boundary."""
    return target.encode("utf-8")[: boundaries[0]]


def build_examples(
    rows: Sequence[dict],
    lines: Sequence[int],
    path: str,
    *,
    scorer: CandidateScorer,
    builder,
    end_ids: Sequence[int],
    answer_source: str,
    seed: int = 0,
) -> list[Example]:
    """One example per sample (see the module's docstring). `rows` are the samples as read,
    `lines` their line numbers in `path` (for errors)."""
    from rpt_cli.reward import prefix_match

    tokenizer = builder.tokenizer
    examples = []
    scored = scorer.candidates([row["context"] for row in rows])
    for row, line, (candidates, probabilities) in zip(rows, lines, scored):
        if not candidates:
            raise InputError(path, line, "the model gives no writable next token after this context")
        answer = candidates[0]
        if answer_source == SAMPLE:
            drawn = scorer.sampled(probabilities, _seed(seed, row["id"]))
            answer = next((c for c in candidates if c.text == drawn.text), drawn)
        elif answer_source == TRUTH:
            if not row.get("boundaries"):
                raise InputError(
                    path, line, "--coldstart-answer truth needs the true next token: the sample has no token boundary"
                )
            data = true_next_token(row["target"], row["boundaries"])
            text = data.decode("utf-8", "ignore")
            probability = scorer.probability_of(probabilities, data)
            if not text or probability is None or text.encode("utf-8") != data:
                raise InputError(
                    path, line, "--coldstart-answer truth: the true next token is not whole text in the model's tokens"
                )
            answer = next((c for c in candidates if c.text == text), Candidate(text, probability))
        completion = completion_text(candidates, answer)
        prompt_ids = builder.build_with_ids(row["context"])[1]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + list(end_ids)
        correct = bool(prefix_match(answer.text.encode("utf-8"), row["target"], row["boundaries"]))
        examples.append(
            Example(
                str(row["id"]), prompt_ids, completion, completion_ids, answer.text, answer_source, candidates, correct
            )
        )
    return examples


def _seed(seed: int, sample_id) -> int:
    """A draw per sample that depends on the run's seed and the sample's id only (not on its
    place in the file), so a resumed run draws the same answers."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()[:8], "little")


def summary(examples: Sequence[Example]) -> str:
    """One line for the run's start: how many examples, how their answers were chosen."""
    count = len(examples)
    correct = sum(e.answer_correct for e in examples) / count if count else 0.0
    tokens = sum(len(e.completion_ids) for e in examples) / count if count else 0.0
    names = {
        OWN: "the model's own first choice",
        SAMPLE: "drawn from the model's own distribution",
        TRUTH: "the true next token",
    }
    source = names[examples[0].answer_source] if examples else "none"
    return (
        f"{count:,} examples; answers: {source} (correct on {correct:.1%} of the samples); "
        f"completions {tokens:.0f} tokens on average"
    )


__all__ = [
    "ANSWER_SOURCES",
    "EXAMPLES_FILE",
    "OWN",
    "SAMPLE",
    "TRUTH",
    "Candidate",
    "CandidateScorer",
    "Example",
    "build_examples",
    "completion_text",
    "summary",
    "thought",
]


def build_trainer(
    config,
    args,
    samples,
    tokenizer,
    builder,
    source: str,
    *,
    folder,
    order,
    log,
    resuming,
    end_ids,
    console,
    flops_start=0.0,
):
    """The cold-start trainer: the model loads once, makes its examples, then trains on them.

    On a new run the examples go to coldstart.jsonl; a resumed run makes them again and refuses to
    go on when they differ from the file (another model or other settings would train the rest
    of the run on other examples)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from rpt_cli.errors import UsageError
    from rpt_cli.jsonl import dumps
    from rpt_cli.training.checkpoints import write_atomic
    from rpt_cli.training.ntp import NTPTrainer

    dtype = torch.float32 if config.dtype == "auto" else getattr(torch, config.dtype)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=config.trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    scorer = CandidateScorer(
        model, tokenizer, max_context_tokens=config.max_prompt_tokens, count=config.coldstart_candidates
    )
    examples = build_examples(
        samples.rows,
        samples.lines,
        samples.path,
        scorer=scorer,
        builder=builder,
        end_ids=end_ids,
        answer_source=config.coldstart_answer,
        seed=config.seed,
    )
    text = b"".join(dumps(example.record()) for example in examples).decode("utf-8")
    path = folder / EXAMPLES_FILE
    if args.distributed_state.is_main_process:
        if not resuming or not path.exists():
            write_atomic(path, text)
        elif path.read_text(encoding="utf-8") != text:
            raise UsageError(
                f"--resume: the cold-start examples the model makes now differ from the run's ({path}): "
                "the model or the samples changed; resume with the run's model and samples, or start a new run"
            )
        console.print(f"train: coldstart: {summary(examples)}; written to {path}", markup=False)
    model.train()
    return NTPTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list([example.row() for example in examples]),
        processing_class=tokenizer,
        data_order=order,
        sample_ids=[row["id"] for row in samples.rows],
        run_log=log,
        flops_start=flops_start,
        save_total_limit=config.save_total_limit,
    )
