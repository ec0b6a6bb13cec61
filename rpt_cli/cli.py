"""The `rpt` command line: one thin command per stage. Each parses its options, calls the stage's
core, and leaves exit statuses to `console.cli_errors`. Heavy libraries are imported inside the
commands that need them so `rpt --help`, `rpt filter` and `rpt reward` start quickly."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Optional

import typer

from rpt_cli.console import cli_errors, handle_sigterm, stderr
from rpt_cli.jsonl import STDIO, ReadStats, RecordWriter, UsageError, read_records
from rpt_cli.models import BUILTIN_NAME

app = typer.Typer(
    name="rpt",
    help="Reinforcement Pre-Training (arXiv 2506.08007) as JSON Lines stages.\n\n"
         "Every command reads JSONL (a file, or standard input) and writes JSONL to standard output "
         "or -o FILE, so stages run alone or piped:\n\n"
         "  rpt entropy corpus.jsonl | rpt filter --min 1.0 > samples.jsonl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

# Options shared by several commands: same names, same help, everywhere.
InputArg = Annotated[str, typer.Argument(metavar="INPUT", show_default=False,
                                         help="JSONL input file; '-' or nothing reads standard input.")]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", metavar="FILE",
    help="Write to FILE instead of standard output (atomically: no partial file on failure).")]
ModelOpt = Annotated[str, typer.Option(
    "--model", "-m",
    help=f"'{BUILTIN_NAME}' (built in), a Hugging Face folder (e.g. an rpt train checkpoint), "
         "a .gguf file, or a hub id.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (a GPU when one is visible), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(
    help="auto (bfloat16 on a GPU, float32 on a CPU), float32, bfloat16 or float16.")]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Skip malformed records (counted on standard error) instead of stopping.")]
SkipBadScoredOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Skip malformed records, and samples whose boundaries cannot be re-derived in the model's "
                       "tokens, (counted on standard error) instead of stopping.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow model code from the hub to run (off unless asked).")]
TextFieldOpt = Annotated[str, typer.Option(help="Field that holds the document text.")]
IdFieldOpt = Annotated[str, typer.Option(help="Field that holds the document id (default: the line number).")]
ANSWER_HELP = ("Answer format: boxed (the paper's: think, then the guess in \\boxed{}) or direct (the prompt is "
               "the context alone and the completion is the guess: RPT without reasoning, an ablation).")
AnswerOpt = Annotated[Optional[str], typer.Option(
    "--answer", metavar="boxed|direct", show_default=False,
    help=ANSWER_HELP + " Default: what the rollouts say (rollout.answer), else boxed.")]


def main() -> None:
    handle_sigterm()
    stdout_before = _stdout_identity()
    try:
        app()
    except SystemExit as exit:
        # Rich ends help output with 1 when standard output's reader went away (`rpt filter
        # --help | head -1`), after pointing stdout at /dev/null; the reader had all it wanted,
        # which is success, as for data (console.cli_errors)
        if exit.code == 1 and stdout_before != _stdout_identity() == _devnull_identity():
            raise SystemExit(0) from None
        raise


def _stdout_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_dev, st.st_ino


def _devnull_identity() -> tuple[int, int]:
    st = os.stat(os.devnull)
    return st.st_dev, st.st_ino


def check_input(path: str) -> None:
    """Refuse, before any work, an input file that cannot be read, and waiting forever on a
    terminal when no input was given."""
    if path == STDIO:
        if sys.stdin.isatty():
            raise UsageError("no input: give a JSONL file, or pipe records into standard input")
        return
    from rpt_cli.jsonl import InputError

    # checked without opening: opening a FIFO would take its data from the run that reads it
    if not os.path.exists(path):
        raise InputError(path, None, "no such file")
    if os.path.isdir(path):
        raise InputError(path, None, "is a directory, not a JSONL file")
    if not os.access(path, os.R_OK):
        raise InputError(path, None, "permission denied")


SEED_LIMIT = 2**32  # numpy, which transformers seeds too, takes seeds below 2**32


def check_numbers(params: dict) -> None:
    """Refuse, before any work, numbers no setting means: NaN or infinity in any option, and seeds
    outside 0 … 2**32 − 1."""
    import math

    for name, value in params.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{option} {value}: must be a finite number")
        if name == "seed" and isinstance(value, int) and not 0 <= value < SEED_LIMIT:
            raise UsageError(f"{option} {value}: must be between 0 and {SEED_LIMIT - 1}")


# bytes one sampled token may take while a chunk's completions are held: its id in the engine's
# output, its text, and the Python objects around them (a generous figure: the check is a cap
# against runaway settings such as -n 1000000, not a prediction)
BYTES_PER_HELD_TOKEN = 16


def check_memory(contexts: int, completions: int, tokens: int, *, names: str, override: bool) -> None:
    """Refuse settings whose completions of one chunk (contexts × completions × tokens) could not
    fit in half of this machine's memory, before the model loads; `override` (--no-memory-check)
    lets them through."""
    if override:
        return
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    need = contexts * completions * tokens * BYTES_PER_HELD_TOKEN
    if need > memory / 2:
        raise UsageError(f"{names} = {contexts:,} × {completions:,} × {tokens:,} tokens could take about "
                         f"{need / 2**30:,.0f} GiB of memory at once, more than half of this machine's "
                         f"{memory / 2**30:,.0f} GiB; lower them, or pass --no-memory-check")


NoMemoryCheckOpt = Annotated[bool, typer.Option(
    "--no-memory-check", help="Skip the check that one chunk's completions (contexts × completions × max new tokens) "
                              "fit in half of this machine's memory.")]


def check_outputs(inputs: str | list[str] | None, *outputs: tuple[str, str | None]) -> None:
    """Refuse, before any work, an output that cannot be written, that is an input, or that
    another output of the command also writes (outputs.py); (option, path) pairs, path None for
    standard output."""
    from rpt_cli.outputs import check_outputs as check

    check(outputs, inputs if isinstance(inputs, list) else [inputs])


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard {value}: expected i/n, e.g. 3/8") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {value}: i must be between 1 and n")
    return i, n


def prevalidate(path: str, validate, shard) -> None:
    """Read a whole input file once before loading a model, so a bad line 9,000 stops the run
    before minutes of model work (standard input cannot be read twice and is checked as read)."""
    if path == STDIO or not os.path.isfile(path):
        return
    for _ in read_records(path, validate, shard=shard):
        pass


@app.command(epilog="Example:  rpt entropy examples/data/corpus.jsonl | rpt filter --min 1.0 > samples.jsonl")
def entropy(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    model: ModelOpt = BUILTIN_NAME,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    top_k: Annotated[int, typer.Option("--top-k", help="Entropy over the k most likely next tokens, renormalized (paper: 16).")] = 16,
    text_field: TextFieldOpt = "text",
    id_field: IdFieldOpt = "id",
    dataset: Annotated[Optional[str], typer.Option(
        help="Read the corpus through `datasets` instead: a parquet/JSON/CSV file or a hub name.")] = None,
    dataset_split: Annotated[str, typer.Option(help="Split of --dataset.")] = "train",
    dataset_config: Annotated[Optional[str], typer.Option(help="Configuration name of --dataset.")] = None,
    window: Annotated[int, typer.Option(help="Tokens per forward pass at most (capped by the model's maximum).")] = 4096,
    overlap: Annotated[Optional[int], typer.Option(
        help="Context tokens carried into the next window of a long document (default: a quarter of the window).")] = None,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per batch (rows × longest row).")] = 8192,
    shard: Annotated[Optional[str], typer.Option(
        metavar="I/N", help="Score only the I-th of N disjoint slices of the input (1-based), e.g. 3/8.")] = None,
    skip_bad: SkipBadOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Score every position of a corpus with a proxy model's top-k entropy.

    Adds [bold]offsets[/] (UTF-8 byte offsets of the model's tokens), [bold]entropy[/] (nats, null
    where the model had no context), [bold]entropy_model[/], [bold]entropy_top_k[/] and [bold]tokenizer[/] (name and fingerprint of the tokenizer the offsets come from) to each document.
    """
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.entropy import EntropyScorer, corpus_validator
        from rpt_cli.jsonl import read_dataset
        from rpt_cli.models import display_name, load_model

        shard_slice = parse_shard(shard)
        if top_k < 1:
            raise UsageError("--top-k must be at least 1")
        if batch_tokens < 1 or window < 2:
            raise UsageError("--batch-tokens must be positive and --window at least 2")
        validate = corpus_validator(text_field, id_field)
        stats = ReadStats()
        if dataset is not None:
            if input != STDIO:
                raise UsageError("give either an INPUT file or --dataset, not both")
            records = read_dataset(dataset, validate, split=dataset_split, config=dataset_config,
                                   skip_bad=skip_bad, stats=stats, shard=shard_slice)
        else:
            check_input(input)
        check_outputs(dataset or input, ("-o", output))
        if dataset is None:
            if not skip_bad:
                prevalidate(input, validate, shard_slice)
            records = read_records(input, validate, skip_bad=skip_bad, stats=stats,
                                   shard=shard_slice, with_lines=True)

        def with_ids():
            for lineno, doc in records:
                if doc.get(id_field) is None:
                    doc[id_field] = lineno
                yield doc

        lm, tokenizer, resolved_device = load_model(model, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        try:
            scorer = EntropyScorer(lm, tokenizer, device=resolved_device, top_k=top_k, window=window,
                                   overlap=overlap, batch_tokens=batch_tokens)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not scorer.uses_head and lm.base_model is not lm:
            stderr.print("entropy: note: the model's logits are not its output layer on its hidden states (an "
                         "unknown post-processing); scoring from its full logits (slower)")
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=stderr,
                      transient=True, disable=not stderr.is_terminal) as progress, RecordWriter(output) as out:
            task = progress.add_task("entropy: starting")

            def show(s):
                progress.update(task, description=f"entropy: {s.documents:,} documents, "
                                                  f"{s.tokens:,} tokens, {s.tokens_per_second:,.0f} tokens/s")
            out.write_all(scorer.score(with_ids(), text_field, model_name=display_name(model),
                                       on_chunk=show))
        s = scorer.stats
        stderr.print(f"entropy: {s.documents:,} documents, {s.tokens:,} tokens in {s.seconds:.1f} s "
                     f"({s.tokens_per_second:,.0f} tokens/s, {resolved_device})")
        if s.dropped_bytes:
            stderr.print(f"warning: {s.dropped_documents:,} document(s) hold {s.dropped_bytes:,} byte(s) the "
                         f"tokenizer has no token for: they stay in the text, inside the span of the "
                         f"token after them, but the model does not see them")
        stats.report(stderr)


@app.command(name="filter", epilog="Example:  rpt entropy corpus.jsonl | rpt filter --split medium --per-doc 8 > samples.jsonl")
def filter_(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    min: Annotated[Optional[float], typer.Option("--min", help="Keep positions whose entropy exceeds X.", metavar="X")] = None,
    max: Annotated[Optional[float], typer.Option("--max", help="Keep positions whose entropy is at most X.", metavar="X")] = None,
    split: Annotated[Optional[str], typer.Option(
        help="Keep one of the paper's nested splits: easy (> 0.5), medium (> 1.0), hard (> 1.5).")] = None,
    min_context_tokens: Annotated[int, typer.Option(
        help="Skip positions with fewer context tokens (the start of a document looks artificially uncertain).")] = 16,
    target_tokens: Annotated[int, typer.Option(
        help="Ground-truth tokens carried in target and boundaries (more when the last one ends inside a character). "
             "A prediction longer than the target can never score: Eq. 3 needs its end among the boundaries.")] = 8,
    max_context_tokens: Annotated[Optional[int], typer.Option(
        help="Cut the context from the left, at a token boundary, to at most this many tokens.")] = None,
    per_doc: Annotated[Optional[int], typer.Option(help="Keep at most N positions per document, at random.", metavar="N")] = None,
    fraction: Annotated[Optional[float], typer.Option(help="Keep each position with probability F.", metavar="F")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --per-doc and --fraction (recorded as filter_seed).")] = 0,
    keep_fields: Annotated[Optional[list[str]], typer.Option(
        "--keep-fields", metavar="NAME",
        help="Copy this document field into each of its samples even when it is over 64 KiB (repeat for several); "
             "larger fields are otherwise left out of documents with more than one sample, with a note.")] = None,
    text_field: TextFieldOpt = "text",
    id_field: IdFieldOpt = "id",
    skip_bad: SkipBadOpt = False,
) -> None:
    """Select positions of scored documents and write them as samples (context, target, boundaries, split)."""
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.filter import FilterOptions, FilterStats, filter_documents, scored_doc_validator
        from rpt_cli.jsonl import source_name

        opts = FilterOptions(min_entropy=min, max_entropy=max, split=split,
                             min_context_tokens=min_context_tokens, target_tokens=target_tokens,
                             max_context_tokens=max_context_tokens, per_doc=per_doc, fraction=fraction,
                             seed=seed, text_field=text_field, id_field=id_field, keep_fields=tuple(keep_fields or ()))
        try:
            opts.check()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        check_input(input)
        check_outputs(input, ("-o", output))
        read_stats, stats = ReadStats(), FilterStats()
        started = time.perf_counter()
        docs = read_records(input, scored_doc_validator(text_field, id_field), skip_bad=skip_bad,
                            stats=read_stats, with_lines=True)
        with RecordWriter(output) as out:
            out.write_all(filter_documents(docs, opts, stats, source=source_name(input)))
        seconds = time.perf_counter() - started
        per_split = ", ".join(f"{name} {stats.samples[name]:,}" for name in ("easy", "medium", "hard", "none")
                              if stats.samples[name] or name != "none")
        stderr.print(f"filter: {stats.documents:,} documents, {stats.positions:,} positions -> "
                     f"{sum(stats.samples.values()):,} samples ({per_split}) in {seconds:.1f} s")
        if stats.mid_character:
            stderr.print(f"filter: skipped {stats.mid_character:,} positions that start inside a UTF-8 character")
        for name, documents in stats.uncopied_fields.items():
            stderr.print(f"filter: note: field {name!r} is over 64 KiB in {documents:,} document(s) and was not copied "
                         f"into each of their samples (it would repeat once per sample); --keep-fields {name} copies it",
                         markup=False)
        read_stats.report(stderr)


@app.command(epilog="Examples:  rpt rollout samples.jsonl | rpt reward | jq -c .rewards\n\n"
                    "rpt reward rollouts.jsonl --fn dense --model smollm2-135m -o scored.jsonl")
def reward(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    fn: Annotated[str, typer.Option(
        "--fn", help="Reward function: prefix (Eq. 3), first-token, dense or conditional-dense (paper, Appendix A).")] = "prefix",
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m",
        help=f"Needed by first-token (its tokenizer) and the dense variants (its probabilities): '{BUILTIN_NAME}', "
             "a Hugging Face folder, a .gguf file or a hub id.")] = None,
    answer: AnswerOpt = None,
    no_think: Annotated[bool, typer.Option(
        "--no-think", help="For answers without thinking: take the last \\boxed{} anywhere, not only after </think>.")] = False,
    correct: Annotated[str, typer.Option(
        help="dense variants: what counts as correct (reward 1): first-token (the paper's definition) or prefix (Eq. 3).")] = "first-token",
    unsolved_reward: Annotated[float, typer.Option(
        help="conditional-dense: the reward of every completion in a group without a correct one.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="dense variants: contexts per forward pass.")] = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    skip_bad: SkipBadScoredOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Score rollouts: extract each completion's answer and reward it against the ground truth.

    Adds [bold]predictions[/] (the text in the last \\boxed{} after </think>, or in the direct answer format the whole completion; null when none), [bold]rewards[/] and [bold]reward_fn[/] to each rollout.

    A summary (mean reward, share without a prediction, pass@G) goes to standard error.
    """
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.answers import check_answer
        from rpt_cli.jsonl import source_name
        from rpt_cli.reward import (CORRECTNESS_RULES, NEEDS_MODEL, NEEDS_TOKENIZER, REWARD_FUNCTIONS,
                                    RewardStats, answer_checked, get_reward_function, rollout_validator,
                                    score_rollouts)

        if fn not in REWARD_FUNCTIONS:
            raise UsageError(f"--fn {fn}: choose one of {', '.join(REWARD_FUNCTIONS)}")
        if answer is not None:
            check_answer(answer)
        if correct not in CORRECTNESS_RULES:
            raise UsageError(f"--correct {correct}: choose one of {', '.join(CORRECTNESS_RULES)}")
        if batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        uses_model = fn in NEEDS_MODEL or fn in NEEDS_TOKENIZER
        if uses_model and model is None:
            raise UsageError(f"--fn {fn} needs --model (the policy whose tokenizer"
                             f"{' and probabilities' if fn in NEEDS_MODEL else ''} it uses), e.g. --model {BUILTIN_NAME}")
        if model is not None and not uses_model:
            stderr.print(f"reward: note: --fn {fn} does not use --model; ignoring it")
        check_input(input)
        check_outputs(input, ("-o", output))
        validate = rollout_validator(REWARD_FUNCTIONS[fn])
        options: dict = {"require_think": not no_think}
        notes: dict = {}
        if uses_model:
            from rpt_cli.models import display_name, load_model, load_tokenizer

            if not skip_bad:
                prevalidate(input, validate, None)  # before minutes of model loading
            notes["model"] = display_name(model)
            if fn in NEEDS_TOKENIZER:
                options["tokenizer"] = load_tokenizer(model, trust_remote_code=trust_remote_code)
            else:
                lm, tokenizer, resolved_device = load_model(model, device=device, dtype=dtype,
                                                            trust_remote_code=trust_remote_code)
                options.update(model=lm, tokenizer=tokenizer, device=resolved_device, correct=correct,
                               batch_size=batch_size)
                if fn == "conditional-dense":
                    options["unsolved_reward"] = unsolved_reward
        reward_fn = get_reward_function(fn, **options)
        read_stats, stats = ReadStats(), RewardStats()
        started = time.perf_counter()
        numbered = read_records(input, validate, skip_bad=skip_bad, stats=read_stats, with_lines=True)
        alignment = None
        if uses_model:  # judge the model's own tokens: boundaries made with another tokenizer are re-derived
            from rpt_cli.boundaries import Alignment, PolicyTokenizer, aligned_records

            policy = PolicyTokenizer(options["tokenizer"], notes["model"], model)
            alignment = Alignment(policy.identity)
            numbered = aligned_records(numbered, policy, source_name(input), alignment=alignment,
                                       stats=read_stats if skip_bad else None)
        records = answer_checked(numbered, reward_fn, given=answer, source=source_name(input))
        with RecordWriter(output) as out:
            out.write_all(score_rollouts(records, reward_fn, stats=stats, notes=notes))
        for note in alignment.notes() if alignment else ():
            stderr.print(f"reward: note: {note}", markup=False)
        seconds = time.perf_counter() - started
        stderr.print(f"reward ({fn}, {reward_fn.answer} answers): {stats.groups:,} records, {stats.completions:,} completions: "
                     f"mean reward {stats.mean_reward:.4f}, no prediction {stats.no_prediction_share:.1%}, "
                     f"{stats.g_label} {stats.pass_at_g:.1%}, accuracy {stats.accuracy:.1%}, "
                     f"{stats.tied_groups:,} groups with all rewards equal, in {seconds:.1f} s")
        read_stats.report(stderr)


ROLLOUT_EXAMPLE = ("rpt rollout samples.jsonl -n 8 --max-new-tokens 1024 -o rollouts.jsonl --resume\n\n"
                   "  rpt filter scored.jsonl --min 1.0 | rpt rollout -n 4 --max-new-tokens 256 | rpt reward > scored.jsonl")


@app.command(epilog=f"Examples:  {ROLLOUT_EXAMPLE}")
def rollout(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    model: ModelOpt = BUILTIN_NAME,
    num_rollouts: Annotated[int, typer.Option("--num-rollouts", "-n", help="Completions sampled per context (G; paper: 8).")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (paper: 0.8; 0 is greedy).")] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling: keep the smallest set of tokens with this much probability (1.0: off).")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample only among the K most likely tokens (0: off).", metavar="K")] = 0,
    answer: Annotated[str, typer.Option(
        "--answer", metavar="boxed|direct", help=ANSWER_HELP + " Recorded in rollout.answer.")] = "boxed",
    max_new_tokens: Annotated[Optional[int], typer.Option(
        help="Longest completion in tokens (default: 8192 as in the paper; 1 with --answer direct); longer ones end "
             "with finish reason 'length'.", show_default=False)] = None,
    max_prompt_tokens: Annotated[int, typer.Option(help="Longest prompt in tokens (paper: 4096); longer contexts are cut from the left at a token boundary.")] = 4096,
    template: Annotated[Optional[str], typer.Option(
        help="Prompt template: v0 (the paper's, the default), v5, v6, fewshot, direct (the default with --answer "
             "direct), or a text file with a {context} placeholder.", show_default=False)] = None,
    list_templates: Annotated[bool, typer.Option("--list-templates", help="Print the built-in templates in full and exit.")] = False,
    chat: Annotated[Optional[bool], typer.Option(
        "--chat/--no-chat", help="Wrap the prompt in the model's chat template, when it has one (default: chat; "
                                 "no chat with --answer direct).", show_default=False)] = None,
    think_prefix: Annotated[Optional[str], typer.Option(
        help="Text that opens the model's answer, e.g. '<think>' plus a newline for thinking models (none by default).")] = None,
    backend: Annotated[str, typer.Option(help="auto (vllm when installed and a CUDA GPU is visible, else hf), hf or vllm.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Contexts per chunk: sampled in one backend call, then written and flushed.")] = 32,
    max_batch_sequences: Annotated[Optional[int], typer.Option(
        help="hf: sequences per generate call at most (default: as many as a quarter of memory holds).")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs to split the model over.")] = 1,
    gpu_memory_utilization: Annotated[float, typer.Option(help="vllm: share of GPU memory for weights and KV cache.")] = 0.9,
    max_model_len: Annotated[Optional[int], typer.Option(help="vllm: longest prompt + completion (default: the model's).")] = None,
    enforce_eager: Annotated[bool, typer.Option("--enforce-eager", help="vllm: skip graph capture and compilation (starts faster, samples slower).")] = False,
    no_memory_check: NoMemoryCheckOpt = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampling (recorded in rollout.seed): same seed, same completions.")] = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="With -o: keep the records already in FILE, skip their ids, append the rest chunk by chunk.")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N samples (smoke runs).", metavar="N")] = None,
    skip_bad: SkipBadOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Sample G chains of thought per context: the rollouts of next-token reasoning.

    Adds [bold]prompt[/], [bold]prompt_tokens[/], [bold]completions[/], [bold]finish_reasons[/]
    (stop or length), [bold]completion_tokens[/] and [bold]rollout[/] (model, template, sampling
    settings, seed, backend) to each sample, in input order.
    """
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.prompts import TemplateError, load_template

        if list_templates:
            from rpt_cli.prompts import list_templates as builtin_templates

            for item in builtin_templates():
                sys.stdout.write(f"== {item.name}: {item.description}\n{item.text}\n\n")
            return
        from rpt_cli.answers import check_answer, prompt_defaults

        defaults = prompt_defaults(check_answer(answer))
        template = defaults["template"] if template is None else template
        chat = defaults["chat"] if chat is None else chat
        max_new_tokens = defaults["max_new_tokens"] if max_new_tokens is None else max_new_tokens
        for name, value in (("--num-rollouts", num_rollouts), ("--batch-size", batch_size),
                            ("--max-new-tokens", max_new_tokens), ("--max-prompt-tokens", max_prompt_tokens),
                            ("--limit", limit), ("--max-batch-sequences", max_batch_sequences),
                            ("--tensor-parallel-size", tensor_parallel_size)):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1")
        if temperature < 0:
            raise UsageError("--temperature must not be negative")
        if not 0 < top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if top_k < 0:
            raise UsageError("--top-k must be 0 (off) or positive")
        check_memory(batch_size, num_rollouts, max_new_tokens, names="--batch-size × -n × --max-new-tokens",
                     override=no_memory_check)
        try:
            prompt_template = load_template(template)
        except TemplateError as exc:
            raise UsageError(str(exc)) from None
        from rpt_cli.generation.base import SamplingConfig
        from rpt_cli.jsonl import source_name
        from rpt_cli.resume import id_key, open_chunk_output
        from rpt_cli.rollout import RolloutStats, numbered_samples, rollout_chunks, sample_validator

        sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  top_k=top_k, seed=seed)
        check_input(input)
        check_outputs(input, ("-o", output))
        source = source_name(input)

        def samples(stats: ReadStats | None = None):
            return numbered_samples(read_records(input, sample_validator, skip_bad=skip_bad, stats=stats,
                                                 with_lines=True), source=source, unique=True, limit=limit)

        if not skip_bad and input != STDIO and os.path.isfile(input):
            for _ in samples():  # a bad line stops the run before the model loads
                pass
        read_stats, stats = ReadStats(), RolloutStats()
        with open_chunk_output(output, resume=resume) as out:
            if resume:
                # what can be compared before the model loads; the rest once it has
                out.check_settings({"answer": answer, "template": prompt_template.name, "think_prefix": think_prefix,
                                    "n": num_rollouts, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                                    "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens,
                                    "seed": seed})
                if out.dropped_partial:
                    stderr.print(f"rollout: dropped an incomplete last line of {output} (an interrupted write)")
                stderr.print(f"rollout: resuming: {len(out.done):,} samples already in {output}")
            from rpt_cli.generation import get_backend
            from rpt_cli.prompts import PromptBuilder, PromptConfig

            engine = get_backend(backend, model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                 seed=seed, max_batch_sequences=max_batch_sequences,
                                 tensor_parallel_size=tensor_parallel_size,
                                 gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                 enforce_eager=enforce_eager)
            try:
                length_limit = getattr(engine, "max_model_len", None)
                if length_limit is not None and max_prompt_tokens >= length_limit:
                    raise UsageError(f"--max-prompt-tokens {max_prompt_tokens} leaves no room for a completion "
                                     f"within the model length {length_limit}; lower it or raise --max-model-len")
                try:
                    builder = PromptBuilder(engine.tokenizer, PromptConfig(
                        template=prompt_template, chat=chat, think_prefix=think_prefix,
                        max_prompt_tokens=max_prompt_tokens))
                except ValueError as exc:
                    raise UsageError(str(exc).replace("max_prompt_tokens", "--max-prompt-tokens")) from None
                metadata = {"model": engine.model_name, "backend": engine.name, "answer": answer,
                            "template": prompt_template.name,
                            "chat": builder.chat, "think_prefix": think_prefix, "n": num_rollouts,
                            "temperature": temperature, "top_p": top_p, "top_k": top_k,
                            "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens, "seed": seed}
                if resume:
                    out.check_settings(metadata)
                done = out.done if resume else None
                from rich.progress import Progress, SpinnerColumn, TextColumn

                with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=stderr,
                              transient=True, disable=not stderr.is_terminal) as progress:
                    task = progress.add_task("rollout: loading done, sampling the first chunk")
                    for records in rollout_chunks(samples(read_stats), engine, builder, n=num_rollouts, sampling=sampling,
                                                  chunk_contexts=batch_size, metadata=metadata, stats=stats,
                                                  is_done=(lambda sample: id_key(sample["id"]) in done) if resume else None):
                        out.write_chunk(records)
                        progress.update(task, description=f"rollout: {stats.contexts:,} contexts, "
                                                          f"{stats.new_tokens:,} new tokens, "
                                                          f"{stats.tokens_per_second:,.0f} tokens/s")
            finally:
                engine.close()
        stderr.print(f"rollout: {stats.contexts:,} contexts x {num_rollouts} = {stats.completions:,} completions, "
                     f"{stats.new_tokens:,} new tokens in {stats.generate_seconds:.1f} s "
                     f"({stats.tokens_per_second:,.0f} tokens/s, {engine.name}); "
                     f"{stats.truncated:,} cut at --max-new-tokens")
        if stats.skipped_done:
            stderr.print(f"rollout: skipped {stats.skipped_done:,} samples already in {output}")
        read_stats.report(stderr)


from rpt_cli.training.config import DEFAULTS as TD  # noqa: E402 - the defaults the train options' help quotes

TRAIN_EXAMPLES = (
    "rpt train samples.jsonl --config examples/configs/cpu-demo.yaml -o runs/demo\n\n"
    "  rpt train samples.jsonl -o runs/rpt1 --resume\n\n"
    "  rpt train samples.jsonl --config examples/configs/paper.yaml --model ./R1-Distill-Qwen-14B --vllm colocate -o runs/14b\n\n"
    "  accelerate launch --config_file examples/configs/zero3.yaml -m rpt_cli train samples.jsonl "
    "--config examples/configs/paper.yaml -o runs/14b")


def _opt(*names: str, help: str, **kwargs):
    return typer.Option(*names, help=help, show_default=False, **kwargs)


@app.command(epilog=f"Examples:  {TRAIN_EXAMPLES}")
def train(
    samples: Annotated[Optional[str], typer.Argument(
        metavar="SAMPLES", show_default=False, help="Samples file (the output of rpt filter).")] = None,
    output: Annotated[Optional[str], _opt("--output", "-o", metavar="FOLDER", help=(
        "Run folder: checkpoints, final/, config.yaml, metrics.jsonl, batches.jsonl."))] = None,
    config: Annotated[Optional[str], _opt("--config", metavar="FILE.yaml", help=(
        "Settings file with the options' names as keys (e.g. examples/configs/paper.yaml); "
        "options given here override it."))] = None,
    resume: Annotated[bool, _opt("--resume", help=(
        "Continue the run in -o from its newest complete checkpoint (same data order, optimizer state); "
        "starts it when there is none."))] = False,
    model: Annotated[Optional[str], _opt("--model", "-m", help=(
        f"Policy to train: '{BUILTIN_NAME}' (built in, the default), a Hugging Face folder, a .gguf file or a hub id."))] = None,
    answer: Annotated[Optional[str], _opt("--answer", metavar="boxed|direct", help=(
        ANSWER_HELP + f" Direct changes the defaults of --template, --chat and --max-completion-tokens "
                      f"(default: {TD.answer})."))] = None,
    template: Annotated[Optional[str], _opt("--template", help=(
        f"Prompt template as in rpt rollout: v0 (the paper's), v5, v6, fewshot, direct or a file "
        f"(default: {TD.template}; direct with --answer direct)."))] = None,
    chat: Annotated[Optional[bool], _opt("--chat/--no-chat", help=(
        "Wrap the prompt in the model's chat template when it has one (default: chat; no chat with --answer "
        "direct)."))] = None,
    think_prefix: Annotated[Optional[str], _opt("--think-prefix", help=(
        "Text that opens the model's answer, e.g. '<think>' plus a newline (none by default)."))] = None,
    max_prompt_tokens: Annotated[Optional[int], _opt("--max-prompt-tokens", help=(
        f"Longest prompt; longer contexts are cut from the left (default: {TD.max_prompt_tokens}, the paper's)."))] = None,
    reward: Annotated[Optional[str], _opt("--reward", help=(
        "Reward function from the rpt reward registry: prefix (Eq. 3), first-token, dense or conditional-dense "
        f"(default: {TD.reward})."))] = None,
    no_think: Annotated[Optional[bool], _opt("--no-think/--think", help=(
        "Take the last \\boxed{} anywhere, not only after </think> (default: think)."))] = None,
    correct: Annotated[Optional[str], _opt("--correct", help=(
        f"dense variants: what counts as correct: first-token or prefix (default: {TD.correct})."))] = None,
    unsolved_reward: Annotated[Optional[float], _opt("--unsolved-reward", help=(
        f"conditional-dense: reward of every completion of a group without a correct one (default: {TD.unsolved_reward})."))] = None,
    num_generations: Annotated[Optional[int], _opt("--num-generations", "-G", help=(
        f"Completions per context, G (default: {TD.num_generations}, the paper's)."))] = None,
    contexts_per_step: Annotated[Optional[int], _opt("--contexts-per-step", help=(
        f"Contexts per optimizer step, over all processes (default: {TD.contexts_per_step}, the paper's batch size)."))] = None,
    micro_batch_size: Annotated[Optional[int], _opt("--micro-batch-size", help=(
        "Completions per forward/backward pass on each device; the rest is gradient accumulation (default: G)."))] = None,
    max_steps: Annotated[Optional[int], _opt("--max-steps", help=(
        f"Optimizer steps (default: {TD.max_steps}, the paper's)."))] = None,
    learning_rate: Annotated[Optional[float], _opt("--learning-rate", "--lr", help=(
        f"Peak learning rate (default: {TD.learning_rate:g}, the paper's)."))] = None,
    lr_scheduler: Annotated[Optional[str], _opt("--lr-scheduler", help=(
        f"Learning-rate schedule (transformers' names: constant, linear, cosine, ...) (default: {TD.lr_scheduler})."))] = None,
    warmup_steps: Annotated[Optional[int], _opt("--warmup-steps", help=(
        f"Steps of linear warm-up (default: {TD.warmup_steps})."))] = None,
    weight_decay: Annotated[Optional[float], _opt("--weight-decay", help=(
        f"AdamW weight decay (default: {TD.weight_decay}, the paper's)."))] = None,
    adam_beta1: Annotated[Optional[float], _opt("--adam-beta1", help=f"Adam beta1 (default: {TD.adam_beta1}, the paper's).")] = None,
    adam_beta2: Annotated[Optional[float], _opt("--adam-beta2", help=f"Adam beta2 (default: {TD.adam_beta2}, the paper's).")] = None,
    max_grad_norm: Annotated[Optional[float], _opt("--max-grad-norm", help=(
        f"Gradient clipping by norm; 0 switches it off (default: {TD.max_grad_norm})."))] = None,
    beta: Annotated[Optional[float], _opt("--beta", help=(
        f"KL coefficient; 0 loads no reference model (default: {TD.beta}, the paper's)."))] = None,
    epsilon: Annotated[Optional[float], _opt("--epsilon", help=(
        f"PPO clip ratio (default: {TD.epsilon}, the paper's)."))] = None,
    loss_type: Annotated[Optional[str], _opt("--loss-type", help=(
        f"TRL loss: grpo (the paper's), dr_grpo, dapo, bnpo, cispo, sapo (default: {TD.loss_type})."))] = None,
    scale_rewards: Annotated[Optional[str], _opt("--scale-rewards", help=(
        f"Advantage scaling: group (GRPO), batch or none (default: {TD.scale_rewards})."))] = None,
    temperature: Annotated[Optional[float], _opt("--temperature", help=(
        f"Sampling temperature (default: {TD.temperature}, the paper's)."))] = None,
    top_p: Annotated[Optional[float], _opt("--top-p", help=f"Nucleus sampling (1.0: off) (default: {TD.top_p}).")] = None,
    top_k: Annotated[Optional[int], _opt("--top-k", help=f"Top-k sampling (0: off) (default: {TD.top_k}).")] = None,
    max_completion_tokens: Annotated[Optional[int], _opt("--max-completion-tokens", help=(
        f"Longest completion; longer ones are cut and counted as truncated (default: {TD.max_completion_tokens}, "
        "the paper's; 1 with --answer direct)."))] = None,
    dynamic_sampling_from_step: Annotated[Optional[int], _opt("--dynamic-sampling-from-step", help=(
        "From this step on, replace groups whose G rewards are all equal with fresh contexts; 0: never "
        f"(default: {TD.dynamic_sampling_from_step}, the paper's)."))] = None,
    dynamic_sampling_max_rounds: Annotated[Optional[int], _opt("--dynamic-sampling-max-rounds", help=(
        f"Refill rounds per step at most before training on what there is (default: {TD.dynamic_sampling_max_rounds})."))] = None,
    vllm: Annotated[Optional[str], _opt("--vllm", help=(
        "Generate with vLLM: colocate (on the training GPUs) or server (trl vllm-serve elsewhere); "
        "default: transformers generate."))] = None,
    vllm_server_host: Annotated[Optional[str], _opt("--vllm-server-host", help=(
        f"--vllm server: host of trl vllm-serve (default: {TD.vllm_server_host})."))] = None,
    vllm_server_port: Annotated[Optional[int], _opt("--vllm-server-port", help=(
        f"--vllm server: port of trl vllm-serve (default: {TD.vllm_server_port})."))] = None,
    vllm_gpu_memory_utilization: Annotated[Optional[float], _opt("--vllm-gpu-memory-utilization", help=(
        f"--vllm colocate: share of GPU memory for vLLM (default: {TD.vllm_gpu_memory_utilization})."))] = None,
    vllm_tensor_parallel_size: Annotated[Optional[int], _opt("--vllm-tensor-parallel-size", help=(
        f"--vllm colocate: GPUs each vLLM engine spans (default: {TD.vllm_tensor_parallel_size})."))] = None,
    save_steps: Annotated[Optional[int], _opt("--save-steps", help=(
        f"Write a checkpoint every N steps (default: {TD.save_steps})."), metavar="N")] = None,
    save_total_limit: Annotated[Optional[int], _opt("--save-total-limit", help=(
        "Keep only the newest N complete checkpoints (default: all)."), metavar="N")] = None,
    seed: Annotated[Optional[int], _opt("--seed", help=(
        f"Seed of the data order, dynamic-sampling draws and sampling (default: {TD.seed})."))] = None,
    dtype: Annotated[Optional[str], _opt("--dtype", help=(
        "Parameter dtype: auto (float32, with bfloat16 autocast on a GPU), float32 or bfloat16 (default: auto)."))] = None,
    gradient_checkpointing: Annotated[Optional[bool], _opt("--gradient-checkpointing/--no-gradient-checkpointing", help=(
        "Recompute activations in the backward pass: less memory, about 20% slower (default: on, as in TRL)."))] = None,
    report_to: Annotated[Optional[str], _opt("--report-to", help=(
        "Also log to tensorboard or wandb (when installed) (default: none)."))] = None,
    trust_remote_code: Annotated[Optional[bool], _opt("--trust-remote-code", help=(
        "Allow model code from the hub to run (off unless asked)."))] = None,
    skip_bad: Annotated[Optional[bool], _opt("--skip-bad", help=(
        "Skip malformed samples, and samples whose boundaries cannot be re-derived in the policy's tokens, "
        "(counted on standard error) instead of stopping."))] = None,
) -> None:
    """Reinforcement pre-training: GRPO on TRL with the RPT reward, from samples to a trained model.

    Defaults are the paper's (Table 5): G=8, 256 contexts per step, learning rate 1e-6, KL 0, clip 0.2, weight decay 0.01, prompts up to 4,096 and completions up to 8,192 tokens, 1,000 steps, dynamic sampling from step 500. Prompts come from the same code as rpt rollout and rewards from the same registry as rpt reward.

    Progress goes to standard error, one line per step; the path of the final model goes to standard output.
    """
    options = {key: value for key, value in locals().items() if key not in ("config", "resume")}
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.training.config import resolve_config
        from rpt_cli.training.run import end_processes, train as run_training

        settings = resolve_config(options, config)
        final = run_training(settings, resume=resume, console=stderr)
        end_processes()
        if os.environ.get("RANK", "0") == "0":
            sys.stdout.write(f"{final}\n")


EVAL_EXAMPLES = (
    "rpt entropy examples/data/val.jsonl | rpt filter --min 0.5 --per-doc 8 > val_samples.jsonl\n\n"
    "  rpt eval val_samples.jsonl --model smollm2-135m --model runs/demo --mode ntp\n\n"
    "  rpt eval val_samples.jsonl --model runs/demo/checkpoint-100 --mode reasoning -n 8 --max-new-tokens 512 "
    "--details per_sample.jsonl\n\n"
    "  rpt eval val_samples.jsonl -m smollm2-135m -m runs/demo --mode ntp --mode reasoning --split hard | jq -c .splits")


@app.command(name="eval", epilog=f"Examples:  {EVAL_EXAMPLES}")
def eval_(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m",
        help=f"'{BUILTIN_NAME}' (built in, the default), a Hugging Face folder, a .gguf file, a hub id, an rpt train "
             "checkpoint or run folder (its final model). Repeat to evaluate several models on the same samples.")] = None,
    mode: Annotated[Optional[list[str]], typer.Option(
        "--mode", help="ntp (standard next-token: the most likely next token, no thinking) or reasoning (sampled "
                       "completions in the --answer format: think, then answer in \\boxed{}; or, with --answer "
                       "direct, the sampled continuation itself); repeat for both. Default: ntp.")] = None,
    split: Annotated[str, typer.Option(
        help="Evaluate one of the paper's nested splits, easy (entropy > 0.5), medium (> 1.0) or hard (> 1.5), or all samples.")] = "all",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N samples of the split (smoke runs).", metavar="N")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the reasoning-mode sampling (recorded in the report).")] = 0,
    details: Annotated[Optional[str], typer.Option(
        "--details", metavar="FILE",
        help="Also write one line per sample, model and mode: predictions, rewards, correctness (and completions).")] = None,
    batch_tokens: Annotated[int, typer.Option(help="ntp: padded tokens per forward pass (rows × longest row).")] = 8192,
    max_context_tokens: Annotated[Optional[int], typer.Option(
        help="ntp: cut contexts from the left to this many tokens (default: 4096, capped by the model's maximum).")] = None,
    no_share: Annotated[bool, typer.Option(
        "--no-share", help="ntp: give every context its own forward pass, even where a longer context of the same "
                           "document could provide its logits exactly (same results, slower).")] = False,
    num_samples: Annotated[int, typer.Option(
        "--num-samples", "-n", help="reasoning: completions per context, k; accuracy is their mean, pass@k the share "
                                    "of contexts with a correct one.")] = 1,
    answer: Annotated[Optional[str], typer.Option(
        "--answer", metavar="boxed|direct", show_default=False,
        help="reasoning: " + ANSWER_HELP + " Default: the training run's, else boxed.")] = None,
    fn: Annotated[str, typer.Option(
        "--fn", help="reasoning: reward function that decides correctness: prefix (Eq. 3), first-token, dense or "
                     "conditional-dense.")] = "prefix",
    temperature: Annotated[float, typer.Option(help="reasoning: sampling temperature (paper: 0.8; 0 is greedy).")] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p", help="reasoning: nucleus sampling (1.0: off).")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="reasoning: sample among the K most likely tokens (0: off).", metavar="K")] = 0,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        help="reasoning: longest completion in tokens (default: the training run's, else 8192 as in the paper; "
             "1 with --answer direct).")] = None,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(
        help="reasoning: longest prompt in tokens; longer contexts are cut from the left (default: the run's, else 4096).")] = None,
    template: Annotated[Optional[str], typer.Option(
        help="reasoning: prompt template v0, v5, v6, fewshot, direct or a file, as in rpt rollout (default: the run's, "
             "else v0; direct with --answer direct).")] = None,
    chat: Annotated[Optional[bool], typer.Option(
        "--chat/--no-chat", help="reasoning: wrap the prompt in the model's chat template (default: the run's, else "
                                 "chat; no chat with --answer direct).", show_default=False)] = None,
    think_prefix: Annotated[Optional[str], typer.Option(
        help="reasoning: text that opens the model's answer, e.g. '<think>' plus a newline (default: the run's, else none).")] = None,
    no_think: Annotated[Optional[bool], typer.Option(
        "--no-think/--think", help="reasoning: take the last \\boxed{} anywhere, not only after </think> "
                                   "(default: the run's, else --think).", show_default=False)] = None,
    backend: Annotated[str, typer.Option(help="reasoning: auto (vllm when installed and a CUDA GPU is visible, else hf), hf or vllm.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="reasoning: contexts per generation call.")] = 32,
    max_batch_sequences: Annotated[Optional[int], typer.Option(
        help="reasoning, hf: sequences per generate call at most (default: as many as a quarter of memory holds).")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="reasoning, vllm: GPUs to split the model over.")] = 1,
    gpu_memory_utilization: Annotated[float, typer.Option(help="reasoning, vllm: share of GPU memory for weights and KV cache.")] = 0.9,
    max_model_len: Annotated[Optional[int], typer.Option(help="reasoning, vllm: longest prompt + completion (default: the model's).")] = None,
    enforce_eager: Annotated[bool, typer.Option("--enforce-eager", help="reasoning, vllm: skip graph capture (starts faster, samples slower).")] = False,
    no_memory_check: NoMemoryCheckOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    skip_bad: SkipBadScoredOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Next-token accuracy per entropy split (the paper's Table 1), in standard and reasoning modes.

    Reads samples (the output of rpt filter) and writes one report per model and mode to standard output: [bold]model[/], [bold]mode[/], [bold]n[/], and per split ([bold]splits[/]: easy, medium, hard, nested) n, accuracy and a 95 % Wilson interval [bold]ci95[/]. One table of all of them goes to standard error.

    ntp scores the model's most likely next token with Eq. 3 (as rpt reward does); reasoning samples k chains of thought with rpt rollout's prompts and scores them with the reward registry.
    """
    with cli_errors():
        check_numbers(locals())
        from contextlib import nullcontext

        from rich.progress import Progress as Bar
        from rich.progress import SpinnerColumn, TextColumn

        from rpt_cli.evaluate import (EvalConfig, Progress, eval_sample_validator, evaluate_model, locate_model,
                                      mode_label, report_table, select_samples)
        from rpt_cli.jsonl import source_name
        from rpt_cli.rollout import numbered_samples

        config = EvalConfig(
            modes=tuple(dict.fromkeys(mode or ["ntp"])), split=split, limit=limit, seed=seed, device=device,
            dtype=dtype, trust_remote_code=trust_remote_code, batch_tokens=batch_tokens,
            max_context_tokens=max_context_tokens, share_passes=not no_share, backend=backend,
            num_samples=num_samples, answer=answer, fn=fn, temperature=temperature, top_p=top_p, top_k=top_k,
            max_new_tokens=max_new_tokens, template=template, chat=chat, think_prefix=think_prefix,
            max_prompt_tokens=max_prompt_tokens, no_think=no_think, batch_size=batch_size,
            max_batch_sequences=max_batch_sequences, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, enforce_eager=enforce_eager)
        config.check()
        check_input(input)
        check_outputs(input, ("-o", output), *([("--details", details)] if details else []))
        refs = [locate_model(spec) for spec in (model or [BUILTIN_NAME])]
        for ref in refs:
            config.check_model(ref)
            if "reasoning" in config.modes:
                check_memory(config.batch_size, config.num_samples, config.prompt_settings(ref)["max_new_tokens"],
                             names="--batch-size × -n × --max-new-tokens", override=no_memory_check)
        source = source_name(input)
        read_stats = ReadStats()
        records = numbered_samples(read_records(input, eval_sample_validator, skip_bad=skip_bad, stats=read_stats,
                                                with_lines=True), source=source, unique=True, with_lines=True)
        samples = select_samples(records, split, limit)  # all read and checked before any model loads
        if not samples:
            stderr.print(f"eval: no samples{'' if split == 'all' else f' in split {split}'}: nothing to evaluate")
        reports: list[dict] = []
        with (RecordWriter(details) if details else nullcontext()) as detail_out, \
                Bar(SpinnerColumn(), TextColumn("{task.description}"), console=stderr, transient=True,
                    disable=not stderr.is_terminal) as bar:
            task = bar.add_task("eval: reading")
            show = Progress(on_start=lambda text: bar.update(task, description=f"eval: {text}"),
                            on_count=lambda text: bar.update(task, description=f"eval: {text}"),
                            on_note=lambda text: stderr.print(f"eval: note: {text}", markup=False))
            for ref in refs:
                reports += evaluate_model(ref, samples, config, source=None if input == STDIO else input,
                                          on_details=detail_out.write if detail_out else None, progress=show,
                                          skipped=read_stats if skip_bad else None)
        with RecordWriter(output) as out:
            out.write_all(reports)
        stderr.print(report_table(reports))
        for report in reports:
            settings = report.get("settings", {})
            if report["mode"] == "ntp" and settings:
                stderr.print(f"eval: {report['model']} (ntp): {report['n']:,} contexts in {settings['forward_rows']:,} "
                             f"forward rows, {settings['positions_per_second']:,.1f} positions/s")
            elif report["mode"] == "reasoning" and settings and report.get("answer") == "direct":
                stderr.print(f"eval: {report['model']} (direct, {settings['backend']}): {settings['max_new_tokens']} "
                             f"new token(s) per guess, {report['no_prediction_share']:.0%} empty (the model ended at once)")
            elif report["mode"] == "reasoning" and settings:
                stderr.print(f"eval: {report['model']} ({mode_label(report)}, {settings['backend']}): "
                             f"{settings['truncated_share']:.0%} of completions cut at --max-new-tokens, "
                             f"{report['no_prediction_share']:.0%} without an answer")
        read_stats.report(stderr)


SCALING_EXAMPLES = (
    "rpt scaling runs/rpt1 --samples val_samples.jsonl -o scaling.png\n\n"
    "  rpt eval val_samples.jsonl -m runs/rpt1/checkpoint-100 -m runs/rpt1/checkpoint-200 -m runs/rpt1/final "
    "| rpt scaling -o scaling.png\n\n"
    "  rpt scaling reports.jsonl --metrics runs/rpt1/metrics.jsonl --mode reasoning --split hard")


@app.command(epilog=f"Examples:  {SCALING_EXAMPLES}")
def scaling(
    input: Annotated[str, typer.Argument(
        metavar="RUN|REPORTS", show_default=False,
        help="An rpt train run folder (its checkpoints are evaluated here), or reports of rpt eval (JSONL; "
             "'-' or nothing reads standard input).")] = STDIO,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE.png",
        help="Write the plot (PNG in the style of the paper's Figure 5) to FILE; without it, no plot.")] = None,
    metrics: Annotated[Optional[str], typer.Option(
        metavar="FILE", help="Take each report's compute from this metrics.jsonl of rpt train, by the report's step "
                             "(default: the flops the report carries).")] = None,
    mode: Annotated[Optional[str], typer.Option(
        help="Fit the reports of this mode, ntp or reasoning (needed when the reports hold both); with a run "
             "folder, the mode to evaluate in (default: ntp).")] = None,
    split: Annotated[str, typer.Option(help="Fit one split, easy, medium or hard, or all of them.")] = "all",
    title: Annotated[Optional[str], typer.Option(help="Title of the plot.")] = None,
    samples: Annotated[Optional[str], typer.Option(
        metavar="FILE", help="Run folder: the samples to evaluate on, e.g. held-out ones (default: the run's "
                             "training samples, from its config.yaml).")] = None,
    reports: Annotated[Optional[str], typer.Option(
        "--reports", metavar="FILE",
        help="Run folder: also write the checkpoints' evaluation reports here (JSONL; rpt scaling reads them back).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Run folder: evaluate only the first N samples.", metavar="N")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Run folder, reasoning: completions per context.")] = 1,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        help="Run folder, reasoning: longest completion (default: the run's).")] = None,
    temperature: Annotated[float, typer.Option(help="Run folder, reasoning: sampling temperature.")] = 0.8,
    fn: Annotated[str, typer.Option("--fn", help="Run folder, reasoning: reward function that decides correctness.")] = "prefix",
    backend: Annotated[str, typer.Option(help="Run folder, reasoning: auto, hf or vllm.")] = "auto",
    seed: Annotated[int, typer.Option(help="Run folder, reasoning: seed of the sampling.")] = 0,
    batch_tokens: Annotated[int, typer.Option(help="Run folder, ntp: padded tokens per forward pass.")] = 8192,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fit accuracy against training compute, P(C) = A / C^α + P* per split (the paper's Eq. 5).

    Writes the points and the fits ([bold]A[/], [bold]alpha[/], [bold]p_star[/], [bold]r2[/]) as one JSON object to standard output, a table to standard error, and with -o a plot in the style of Figure 5. Fewer than three points, non-positive compute or a fit that fails stop with a one-line error (exit 2).
    """
    with cli_errors():
        check_numbers(locals())
        from pathlib import Path

        from rpt_cli.jsonl import dumps, source_name
        from rpt_cli.scaling import (check_plot_path, fit_splits, plot_scaling, points_from_reports, report_validator,
                                     scaling_result, splits_to_fit)

        if mode is not None and mode not in ("ntp", "reasoning"):
            raise UsageError(f"--mode {mode}: choose ntp or reasoning")
        if output is not None:
            check_plot_path(output)
        check_outputs([input, metrics, samples], *([("-o", output)] if output is not None else []),
                      *([("--reports", reports)] if reports is not None else []))
        flops_by_step = None
        if metrics is not None:
            from rpt_cli.evaluate import read_flops

            if not Path(metrics).is_file():
                raise UsageError(f"--metrics {metrics}: no such file")
            flops_by_step = read_flops(Path(metrics))
        run = Path(input) if input != STDIO and Path(input).is_dir() else None
        if run is not None:
            numbered = list(enumerate(_evaluate_run(
                run, samples=samples, reports_path=reports, mode=mode or "ntp", split=split, limit=limit,
                num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, fn=fn,
                backend=backend, seed=seed, batch_tokens=batch_tokens, device=device, dtype=dtype,
                trust_remote_code=trust_remote_code), start=1))
            source = str(run)
        else:
            check_input(input)
            source = source_name(input)
            numbered = list(read_records(input, report_validator, with_lines=True))
        fit_mode, answer, points = points_from_reports(numbered, source, mode=mode, flops_by_step=flops_by_step,
                                               metrics_name=metrics or "metrics.jsonl")
        fits = fit_splits(points, splits_to_fit(points, split))
        if output is not None:
            plot_scaling(points, fits, output, mode=fit_mode, answer=answer, title=title)
        sys.stdout.buffer.write(dumps(scaling_result(fit_mode, points, fits, output, answer)))
        sys.stdout.flush()
        from rich.table import Table

        table = Table(title=f"P(C) = A / C^α + P* ({fit_mode}, {len(points)} checkpoints)", title_justify="left")
        for name in ("split", "A", "α", "P*", "R²", "points"):
            table.add_column(name, justify="left" if name == "split" else "right")
        for name, fit in fits.items():
            flag = " (at a bound: " + ", ".join(fit.at_bound) + ")" if fit.at_bound else ""
            table.add_row(name + flag, f"{fit.A:.4g}", f"{fit.alpha:.4f}", f"{fit.p_star:.4f}", f"{fit.r2:.4f}",
                          str(fit.points))
        stderr.print(table)
        if output is None:
            stderr.print("scaling: no plot written (pass -o FILE.png for one)")
        else:
            stderr.print(f"scaling: plot written to {output}")


@app.command(epilog="Examples:  rpt curves runs/demo -o reward.png\n\n"
                    "  rpt curves runs/direct runs/boxed --window 10 -o compare.png | jq -c '[.run, .reward_start, .reward_end]'")
def curves(
    runs: Annotated[list[str], typer.Argument(
        metavar="RUN...", show_default=False,
        help="rpt train run folders (their metrics.jsonl) or metrics.jsonl files; several are drawn together.")],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE.png", help="Write the plot (reward against step) to FILE; without it, no plot.")] = None,
    window: Annotated[int, typer.Option(
        help="Steps in the running mean drawn through the points, and in the start and end means of the summary.")] = 5,
    title: Annotated[Optional[str], typer.Option(help="Title of the plot.")] = None,
) -> None:
    """The mean reward per training step of one or more runs: a table, a summary and a plot.

    Writes one JSON line per run to standard output ([bold]run[/], [bold]steps[/], [bold]reward_start[/] and [bold]reward_end[/] (the mean of the first and last --window steps), [bold]reward_change[/], and [bold]reward[/]: [step, mean] pairs), a table to standard error, and with -o a PNG. Reads the logs only, so it works while a run trains.
    """
    with cli_errors():
        check_numbers(locals())
        from rich.table import Table

        from rpt_cli.curves import plot_curves, read_curve, summary, table_rows
        from rpt_cli.jsonl import dumps

        if window < 1:
            raise UsageError("--window must be at least 1")
        if output is not None:
            from rpt_cli.scaling import check_plot_path

            check_plot_path(output)
            check_outputs([os.path.join(spec, "metrics.jsonl") if os.path.isdir(spec) else spec for spec in runs],
                          ("-o", output))
        read = [read_curve(spec) for spec in runs]
        for curve in read:
            result = summary(curve, window)
            sys.stdout.buffer.write(dumps(result))
            table = Table(title=f"{curve.name}: {result['steps']} steps; mean reward of the first {result['window']} "
                                f"{_fmt(result['reward_start'])}, of the last {result['window']} {_fmt(result['reward_end'])}",
                          title_justify="left")
            for name in ("step", "reward", f"mean of {window}", "no-var", "no-pred"):
                table.add_column(name, justify="right")
            for row in table_rows(curve, window):
                table.add_row(*row)
            stderr.print(table)
        sys.stdout.flush()
        if output is not None:
            plot_curves(read, output, window=window, title=title)
            stderr.print(f"curves: plot written to {output}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _note_once(text: str, noted: set[str]) -> None:
    """Print a note about the samples for the first checkpoint only: the notes of the others say
    the same of another checkpoint (same tokenizer)."""
    key = text.split(": ", 2)[-1].split(" the policy")[0]
    if key not in noted:
        noted.add(key)
        stderr.print(text, markup=False)


def _evaluate_run(run, *, samples, reports_path, mode, split, limit, num_samples, max_new_tokens, temperature, fn,
                  backend, seed, batch_tokens, device, dtype, trust_remote_code) -> list[dict]:
    """rpt scaling on a run folder: its checkpoints' reports, with progress on standard error."""
    from rich.progress import Progress as Bar
    from rich.progress import SpinnerColumn, TextColumn

    from rpt_cli.evaluate import EvalConfig, Progress, eval_sample_validator, select_samples
    from rpt_cli.rollout import numbered_samples
    from rpt_cli.scaling import evaluate_run, run_samples_path

    samples, own = run_samples_path(run, samples)
    config = EvalConfig(modes=(mode,), split=split, limit=limit, seed=seed, device=device, dtype=dtype,
                        trust_remote_code=trust_remote_code, batch_tokens=batch_tokens, backend=backend,
                        num_samples=num_samples, fn=fn, temperature=temperature, max_new_tokens=max_new_tokens)
    config.check()
    chosen = select_samples(numbered_samples(read_records(samples, eval_sample_validator, with_lines=True),
                                             source=samples, unique=True, with_lines=True), split, limit)
    if not chosen:
        raise UsageError(f"{samples}: no samples{'' if split == 'all' else f' in split {split}'} to evaluate")
    if own:
        stderr.print(f"scaling: evaluating on the run's training samples {samples} (--samples FILE for held-out ones)")
    noted: set[str] = set()  # a note about the samples, once, not once per checkpoint
    with Bar(SpinnerColumn(), TextColumn("{task.description}"), console=stderr, transient=True,
              disable=not stderr.is_terminal) as bar:
        task = bar.add_task("scaling: starting")
        show = Progress(on_start=lambda text: bar.update(task, description=f"scaling: {text}"),
                        on_count=lambda text: bar.update(task, description=f"scaling: {text}"),
                        on_note=lambda text: _note_once(f"scaling: note: {text}", noted))
        reports = evaluate_run(run, chosen, config, source=samples, progress=show)
    if reports_path is not None:
        with RecordWriter(reports_path) as writer:
            writer.write_all(reports)
    return reports

__all__ = ["app", "main"]
