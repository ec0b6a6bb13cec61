"""`rpt eval` settings and the evaluation of one model in each mode, on the same samples."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rpt_cli import paper
from rpt_cli.answers import DEFAULT_ANSWER, check_answer, prompt_defaults
from rpt_cli.errors import UsageError
from rpt_cli.evaluate.ntp import (
    DEFAULT_BATCH_TOKENS,
    NextTokenPredictor,
    PredictorStats,
    evaluate_ntp,
)
from rpt_cli.evaluate.paired import sample_scores
from rpt_cli.evaluate.reasoning import evaluate_reasoning
from rpt_cli.evaluate.runs import ModelRef
from rpt_cli.evaluate.samples import (
    GAIN,
    INTERVAL,
    MODES,
    NTP,
    REASONING,
    SPLIT_CHOICES,
    EvalSample,
    Outcome,
    in_policy_tokens,
    split_report,
)
from rpt_cli.jsonl import ReadStats
from rpt_cli.reward import REWARD_FUNCTIONS

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
    num_completions: int = 1
    reward: str = "prefix"
    temperature: float = paper.TEMPERATURE
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int | None = None
    template: str | None = None
    chat: bool | None = None
    think_prefix: str | None = None
    max_prompt_tokens: int | None = None
    no_think: bool | None = None
    contexts_per_call: int = 32
    max_batch_sequences: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False

    def check(self) -> None:
        """Refuse bad settings before any model loads (UsageError, exit 2)."""
        if not self.modes:
            raise UsageError(f"--mode: give one or more of {', '.join(MODES)}")
        for mode in self.modes:
            if mode not in MODES:
                raise UsageError(f"--mode {mode}: choose one of {', '.join(MODES)}")
        if self.split not in SPLIT_CHOICES:
            raise UsageError(f"--split {self.split}: choose one of {', '.join(SPLIT_CHOICES)}")
        for name, value in (
            ("--limit", self.limit),
            ("--batch-tokens", self.batch_tokens),
            ("--max-context-tokens", self.max_context_tokens),
            ("--num-completions", self.num_completions),
            ("--max-new-tokens", self.max_new_tokens),
            ("--max-prompt-tokens", self.max_prompt_tokens),
            ("--contexts-per-call", self.contexts_per_call),
            ("--max-batch-sequences", self.max_batch_sequences),
            ("--tensor-parallel-size", self.tensor_parallel_size),
        ):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.reward not in REWARD_FUNCTIONS:
            raise UsageError(f"--reward {self.reward}: choose one of {', '.join(REWARD_FUNCTIONS)}")
        if self.answer is not None:
            check_answer(self.answer)
        from rpt_cli.generation.base import check_sampling

        check_sampling(self.temperature, self.top_p, self.top_k)
        if self.template is not None:
            from rpt_cli.prompts import TemplateError, load_template

            try:
                load_template(self.template)
            except TemplateError as exc:
                raise UsageError(str(exc)) from None

    def check_model(self, ref: ModelRef) -> None:
        """Refuse, before any work, a prompt template that a model's training run names but
        that cannot be loaded here."""
        if REASONING in self.modes:
            from rpt_cli.prompts import TemplateError, load_template
            from rpt_cli.training.objectives import RLP

            if ref.run_settings.get("objective") == RLP and self.template is None:
                # its prompts open a thought after the context; nothing asks for a boxed answer
                raise UsageError(
                    f"--model {ref.spec}: an --objective rlp run thinks, then continues the text, and was never "
                    "asked for a boxed answer: evaluate it with --mode gain or --mode ntp, or pass --template "
                    "(e.g. v0) to ask for one"
                )
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

        return {
            "answer": answer,
            "template": pick(self.template, "template", defaults["template"]),
            "chat": bool(pick(self.chat, "chat", defaults["chat"])),
            "think_prefix": self.think_prefix if self.think_prefix is not None else run.get("think_prefix"),
            "max_prompt_tokens": int(pick(self.max_prompt_tokens, "max_prompt_tokens", paper.PROMPT_TOKENS)),
            "no_think": bool(pick(self.no_think, "no_think", False)),
            "max_new_tokens": int(
                pick(
                    self.max_new_tokens, "max_new_tokens", run.get("max_completion_tokens", defaults["max_new_tokens"])
                )
            ),
        }

    def gain_settings(self, ref: ModelRef) -> dict:
        """Prompt settings of gain mode: the thoughts of `rpt train --objective rlp` (the `thought`
        template, no chat wrapping), with the limits given here, else the rlp run's, else the
        paper's prompt limit and the boxed format's thought length."""
        from rpt_cli.training.objectives import RLP, RLP_TEMPLATE

        run = ref.run_settings if ref.run_settings.get("objective") == RLP else {}

        def pick(given, key, default):
            value = given if given is not None else run.get(key)
            return int(value if value is not None else default)

        return {
            "template": RLP_TEMPLATE,
            "chat": False,
            "think_prefix": None,
            "max_prompt_tokens": pick(self.max_prompt_tokens, "max_prompt_tokens", paper.PROMPT_TOKENS),
            "max_new_tokens": pick(self.max_new_tokens, "max_new_tokens", paper.NEW_TOKENS),
        }

    def new_tokens(self, ref: ModelRef, mode: str) -> int:
        """The most new tokens one completion of `mode` (reasoning or gain) may have."""
        settings = self.gain_settings(ref) if mode == GAIN else self.prompt_settings(ref)
        return settings["max_new_tokens"]


@dataclass
class Progress:
    """Callbacks to show progress; all optional. `on_count(text, done, total)`: contexts done of
    the total of this model and mode."""

    on_start: Callable[[str], None] | None = None
    on_count: Callable[[str, int, int], None] | None = None
    on_note: Callable[[str], None] | None = None


def _report(
    ref: ModelRef,
    mode: str,
    samples: Sequence[EvalSample],
    outcomes: Sequence[Outcome],
    config: EvalConfig,
    source: str | None,
    seconds: float,
    settings: dict,
) -> dict:
    # the answer format of the sampled completions (reasoning mode); ntp reads no answer
    answer = config.prompt_settings(ref)["answer"] if mode == REASONING else None
    report = {**ref.as_fields(), "mode": mode, "answer": answer}
    report.update(split_report(samples, outcomes, config.split, mode=mode))
    report.update(
        {
            "paired": None,  # filled in against the first model by paired.add_paired
            "interval": INTERVAL,
            "split": config.split,
            "limit": config.limit,
            "seed": config.seed,
            "samples": source,
            "settings": settings,
            "seconds": round(seconds, 3),
        }
    )
    return report


def _detail_rows(ref: ModelRef, mode: str, samples: Sequence[EvalSample], details: Sequence[dict]) -> Iterator[dict]:
    for sample, detail in zip(samples, details):
        record = sample.record
        yield {
            "id": record.get("id"),
            "doc_id": record.get("doc_id"),
            "position": record.get("position"),
            "model": ref.name,
            "mode": mode,
            "split": sample.label,
            "entropy": record.get("entropy"),
            "context": record["context"],
            "target": record["target"],
            "boundaries": list(sample.truth.boundaries),
            **detail,
        }


def evaluate_model(
    ref: ModelRef,
    samples: Sequence[EvalSample],
    config: EvalConfig,
    *,
    source: str | None = None,
    on_details: Callable[[dict], None] | None = None,
    on_scores: Callable[[dict, dict], None] | None = None,
    progress: Progress | None = None,
    skipped: ReadStats | None = None,
    cluster=None,
) -> list[dict]:
    """Reports (records.md §6) of one model in each of `config.modes`, on the same samples (their
    boundaries in the model's tokens: `in_policy_tokens`); the per-sample details go to
    `on_details` as they are ready, and each report with its per-sample scores (paired.Scores) to
    `on_scores`, for paired comparisons between models. With `skipped` (--skip-bad), samples whose boundaries cannot
    be re-derived for this model are left out and recorded there. With `cluster` (a
    cluster.RayCluster), the model runs on its workers only (evaluate/on_ray.py); gain mode, which
    scores with the model in this process, is refused there."""
    from rpt_cli.generation import resolve_backend_name
    from rpt_cli.jsonl import source_name
    from rpt_cli.models import load_model, load_tokenizer

    progress = progress or Progress()
    if cluster is not None and GAIN in config.modes:
        raise UsageError("--mode gain scores thoughts with the model in this process: run it without --ray")
    reasoning = REASONING in config.modes
    samples_completions = reasoning or GAIN in config.modes
    backend_name = resolve_backend_name(config.backend) if samples_completions else None
    # ntp and gain score with the model itself; so do the dense rewards
    needs_loaded_model = cluster is None and (
        NTP in config.modes
        or GAIN in config.modes
        or backend_name == "hf"
        or (reasoning and config.reward in ("dense", "conditional-dense"))
    )
    model = tokenizer = device = None
    if needs_loaded_model and samples:
        if progress.on_start:
            progress.on_start(f"loading {ref.name}")
        model, tokenizer, device = load_model(
            ref.source, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
        )
    alignment = None
    if samples:
        policy_tokenizer = tokenizer or load_tokenizer(ref.source, trust_remote_code=config.trust_remote_code)
        samples, alignment = in_policy_tokens(samples, policy_tokenizer, ref, source_name(source), skipped=skipped)
        if progress.on_note:
            for note in alignment.notes():
                progress.on_note(f"{ref.name}: {note}")
    reports = []
    for mode in config.modes:
        started = time.perf_counter()
        if not samples:
            outcomes, details, settings = [], [], {}
        elif mode == NTP:
            outcomes, details, settings = _run_ntp(
                ref, samples, config, model, tokenizer or policy_tokenizer, device, progress, cluster
            )
        elif mode == GAIN:
            outcomes, details, settings = _run_gain(ref, samples, config, backend_name, model, tokenizer, progress)
        else:
            outcomes, details, settings = _run_reasoning(
                ref, samples, config, backend_name, model, tokenizer or policy_tokenizer, device, progress, cluster
            )
        seconds = time.perf_counter() - started
        reports.append(_report(ref, mode, samples, outcomes, config, source, seconds, settings))
        if alignment is not None:
            reports[-1]["tokenizer"] = alignment.as_fields()
        if on_scores is not None:
            on_scores(reports[-1], sample_scores(samples, outcomes, mode))
        if on_details is not None:
            for row in _detail_rows(ref, mode, samples, details):
                on_details(row)
    return reports


def _run_ntp(ref, samples, config, model, tokenizer, device, progress, cluster=None):
    if cluster is not None:
        from rpt_cli.evaluate.on_ray import NtpBatchWorker, RayNextTokenPredictor
        from rpt_cli.forward import config_max_positions

        worker = NtpBatchWorker(
            ref.source,
            device=config.device,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            batch_tokens=config.batch_tokens,
            max_context_tokens=config.max_context_tokens,
        )
        from rpt_cli.models import resolve

        # the model's folder (the built-in model and .gguf files: their converted folder)
        max_positions = config_max_positions(resolve(ref.source), trust_remote_code=config.trust_remote_code)
        predictor = RayNextTokenPredictor(cluster, worker, tokenizer, max_positions, share_passes=config.share_passes)
    else:
        predictor = NextTokenPredictor(
            model,
            tokenizer,
            device,
            batch_tokens=config.batch_tokens,
            max_context_tokens=config.max_context_tokens,
            share_passes=config.share_passes,
        )
    if progress.on_start:
        progress.on_start(f"{ref.name} (ntp)")

    def show(stats: PredictorStats) -> None:
        if progress.on_count:
            progress.on_count(
                f"{ref.name} (ntp): {stats.contexts:,}/{len(samples):,} contexts, "
                f"{stats.positions_per_second:,.0f} positions/s",
                stats.contexts,
                len(samples),
            )

    outcomes, details = evaluate_ntp(samples, predictor, on_batch=show)
    stats = predictor.stats
    settings = {
        "max_context_tokens": predictor.max_context_tokens,
        "batch_tokens": config.batch_tokens,
        "shared_passes": config.share_passes,
        "forward_rows": stats.rows,
        "positions_per_second": round(stats.positions_per_second, 2),
    }
    return outcomes, details, settings


def _run_reasoning(ref, samples, config, backend_name, model, tokenizer, device, progress, cluster=None):
    from contextlib import nullcontext

    from rpt_cli.generation import SamplingConfig
    from rpt_cli.generation.session import GenerationSession, PromptSettings, prompt_builder
    from rpt_cli.prompts import TemplateError, load_template
    from rpt_cli.reward import NEEDS_MODEL, NEEDS_TOKENIZER, get_reward_function

    prompt = config.prompt_settings(ref)
    try:
        template = load_template(prompt["template"])
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
    settings_of_prompt = PromptSettings(
        template=template,
        chat=prompt["chat"],
        think_prefix=prompt["think_prefix"],
        max_prompt_tokens=prompt["max_prompt_tokens"],
        answer=prompt["answer"],
    )
    sampling = SamplingConfig(
        max_new_tokens=prompt["max_new_tokens"],
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        seed=config.seed,
    )
    if cluster is not None:
        # the engines live in the workers; prompts, settings and scores need the tokenizer only
        if config.reward in NEEDS_MODEL:
            raise UsageError(f"--reward {config.reward} scores with the model in this process: run it without --ray")
        session = nullcontext()
        builder, engine_name, engine_tokenizer = prompt_builder(tokenizer, settings_of_prompt), backend_name, tokenizer
    else:
        engine = _open_engine(ref, config, backend_name, model, tokenizer, progress)
        session = GenerationSession(engine, settings_of_prompt, owns_engine=backend_name != "hf")
        builder, engine_name, engine_tokenizer = session.builder, engine.name, engine.tokenizer
    with session:
        options: dict = {"require_think": not prompt["no_think"], "answer": prompt["answer"]}
        if config.reward in NEEDS_TOKENIZER:
            options["tokenizer"] = engine_tokenizer
        if config.reward in NEEDS_MODEL:
            options.update(model=model, tokenizer=tokenizer, device=device)
        reward_fn = get_reward_function(config.reward, **options)
        settings = {
            "backend": engine_name,
            "answer": prompt["answer"],
            "fn": config.reward,
            "k": config.num_completions,
            "template": template.name,
            "chat": builder.chat,
            "think_prefix": prompt["think_prefix"],
            "no_think": prompt["no_think"],
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "max_new_tokens": prompt["max_new_tokens"],
            "max_prompt_tokens": prompt["max_prompt_tokens"],
        }
        if progress.on_start:
            progress.on_start(f"{ref.name} (reasoning)")

        def show(done: int) -> None:
            if progress.on_count:
                progress.on_count(f"{ref.name} (reasoning): {done:,}/{len(samples):,} contexts", done, len(samples))

        metadata = {"model": ref.name, **settings, "n": config.num_completions, "seed": config.seed}
        if cluster is not None:
            outcomes, details = _reasoning_on_ray(
                cluster, ref, samples, config, backend_name, settings_of_prompt, sampling, metadata, reward_fn, show
            )
        else:
            outcomes, details = evaluate_reasoning(
                samples,
                engine,
                builder,
                reward_fn,
                k=config.num_completions,
                sampling=sampling,
                chunk_contexts=config.contexts_per_call,
                metadata=metadata,
                on_chunk=show,
            )
    settings["truncated_share"] = sum(o.truncated for o in outcomes) / len(outcomes)
    return outcomes, details, settings


def _reasoning_on_ray(cluster, ref, samples, config, backend_name, prompt, sampling, metadata, reward_fn, show):
    from rpt_cli.evaluate.on_ray import reasoning_chunks_on_ray
    from rpt_cli.evaluate.reasoning import score_rollouts
    from rpt_cli.rollout import RolloutChunkWorker

    engine_options = dict(
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        seed=config.seed,
        max_batch_sequences=config.max_batch_sequences,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        enforce_eager=config.enforce_eager,
    )
    worker = RolloutChunkWorker(
        backend_name, ref.source, engine_options, prompt, config.num_completions, sampling, metadata
    )
    done = [0]

    def counted(stats) -> None:
        done[0] += stats.contexts
        show(done[0])

    chunks = reasoning_chunks_on_ray(cluster, samples, worker, config.contexts_per_call, on_stats=counted)
    return score_rollouts(chunks, reward_fn)


def _open_engine(ref, config, backend_name, model, tokenizer, progress):
    """The generation engine of reasoning and gain modes: hf over the model this evaluation loaded
    (and keeps), or a vLLM engine of its own."""
    if backend_name == "hf":
        from rpt_cli.generation.hf_backend import HFBackend

        return HFBackend(model, tokenizer, model_name=ref.name, max_batch_sequences=config.max_batch_sequences)
    from rpt_cli.generation import get_backend

    if progress.on_start:
        progress.on_start(f"starting vLLM for {ref.name}")
    return get_backend(
        backend_name,
        ref.source,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        seed=config.seed,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        enforce_eager=config.enforce_eager,
    )


def _run_gain(ref, samples, config, backend_name, model, tokenizer, progress):
    from rpt_cli.evaluate.gain import evaluate_gain
    from rpt_cli.generation import SamplingConfig
    from rpt_cli.generation.session import GenerationSession, PromptSettings
    from rpt_cli.prompts import load_template
    from rpt_cli.training.rlp import InformationGain

    prompt = config.gain_settings(ref)
    template = load_template(prompt["template"])
    engine = _open_engine(ref, config, backend_name, model, tokenizer, progress)
    settings_of_prompt = PromptSettings(
        template=template, chat=False, think_prefix=None, max_prompt_tokens=prompt["max_prompt_tokens"]
    )
    with GenerationSession(engine, settings_of_prompt, owns_engine=backend_name != "hf") as session:
        gain = InformationGain(tokenizer, session.builder, max_context_tokens=prompt["max_prompt_tokens"])
        sampling = SamplingConfig(
            max_new_tokens=prompt["max_new_tokens"],
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            seed=config.seed,
        )
        settings = {
            "backend": engine.name,
            "k": config.num_completions,
            "template": template.name,
            "chat": False,
            "baseline": "the model itself (no EMA teacher outside training)",
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "max_new_tokens": prompt["max_new_tokens"],
            "max_prompt_tokens": prompt["max_prompt_tokens"],
        }
        if progress.on_start:
            progress.on_start(f"{ref.name} (gain)")

        def show(done: int) -> None:
            if progress.on_count:
                progress.on_count(f"{ref.name} (gain): {done:,}/{len(samples):,} contexts", done, len(samples))

        metadata = {"model": ref.name, **settings, "n": config.num_completions, "seed": config.seed}
        outcomes, details = evaluate_gain(
            samples,
            engine,
            session.builder,
            gain,
            model,
            k=config.num_completions,
            sampling=sampling,
            chunk_contexts=config.contexts_per_call,
            metadata=metadata,
            on_chunk=show,
        )
    settings["truncated_share"] = sum(o.truncated for o in outcomes) / len(outcomes)
    return outcomes, details, settings
